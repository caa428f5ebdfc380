//! The reference sensor client: MQTT 3.1.1 over mutual TLS, QoS 0 and 1 with pipelined
//! publishes, subscriptions, and the command rule of [`command`] (a replayed or expired
//! command is refused). `kawal sim` and the tests drive the gateway with it.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mqtt_proto::v3::{Connect, Packet, Publish, Subscribe};
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Largest packet the client accepts from the gateway.
const MAX_PACKET: usize = 1024 * 1024;

/// Why the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP or TLS failed (including the gateway refusing the certificate).
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway refused CONNECT with this return code.
    #[error("CONNECT refused: {0}")]
    Refused(String),
    /// A name, topic or packet could not be encoded or decoded.
    #[error("MQTT encoding: {0}")]
    Protocol(String),
    /// The connection closed.
    #[error("connection closed")]
    Closed,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The gateway's MQTT address.
    pub addr: SocketAddr,
    /// The name the gateway's certificate must carry.
    pub server_name: String,
    /// TLS with the sensor's certificate and the gateway's CA.
    pub tls: Arc<rustls::ClientConfig>,
    /// The client id (the sensor's UID).
    pub client_id: String,
    /// Keep-alive seconds.
    pub keep_alive: u16,
}

/// A message that arrived on a subscription.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
}

type Pending = Arc<Mutex<HashMap<u16, oneshot::Sender<()>>>>;

/// A connected sensor.
#[derive(Debug)]
pub struct Client {
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_pid: Mutex<u16>,
    /// Messages from subscriptions.
    pub incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    closed: Arc<tokio::sync::Notify>,
}

fn proto<E: std::fmt::Debug>(e: E) -> ClientError {
    ClientError::Protocol(format!("{e:?}"))
}

/// Reads one packet (fixed header, remaining length of at most 4 bytes, capped body).
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<Packet, ClientError> {
    let first = r.read_u8().await.map_err(|_| ClientError::Closed)?;
    let mut len: usize = 0;
    let mut header = vec![first];
    for i in 0..4 {
        let b = r.read_u8().await.map_err(|_| ClientError::Closed)?;
        header.push(b);
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(ClientError::Protocol(
                "remaining length over 4 bytes".into(),
            ));
        }
    }
    if len > MAX_PACKET {
        return Err(ClientError::Protocol("packet too large".into()));
    }
    let mut buf = header;
    let start = buf.len();
    buf.resize(start + len, 0);
    r.read_exact(&mut buf[start..])
        .await
        .map_err(|_| ClientError::Closed)?;
    Packet::decode(&buf)
        .map_err(proto)?
        .ok_or_else(|| ClientError::Protocol("incomplete packet".into()))
}

fn encode(p: &Packet) -> Result<Vec<u8>, ClientError> {
    Ok(p.encode().map_err(proto)?.as_ref().to_vec())
}

impl Client {
    /// Connects: TCP, TLS with the sensor's certificate, CONNECT, CONNACK.
    pub async fn connect(s: &ClientSettings) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(s.addr),
        )
        .await
        .map_err(|_| ClientError::Timeout)??;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(s.server_name.clone()).map_err(proto)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&s.tls));
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout)??;
        let client_id: mqtt_proto::ClientId = Arc::from(s.client_id.as_str());
        let connect = Packet::Connect(Connect::new(client_id, s.keep_alive));
        tls.write_all(&encode(&connect)?).await?;
        let ack = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut tls))
            .await
            .map_err(|_| ClientError::Timeout)??;
        match ack {
            Packet::Connack(c) if c.code == mqtt_proto::v3::ConnectReturnCode::Accepted => {}
            Packet::Connack(c) => return Err(ClientError::Refused(format!("{:?}", c.code))),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected CONNACK, got {:?}",
                    other.get_type()
                )));
            }
        }
        let (mut rd, mut wr) = tokio::io::split(tls);
        let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
        let (in_tx, in_rx) = mpsc::channel::<Incoming>(1024);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
                // Flush only when nothing else is waiting: pipelined publishes share records.
                if out_rx.is_empty() && wr.flush().await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let reader_pending = Arc::clone(&pending);
        let reader_out = out.clone();
        let reader_closed = Arc::clone(&closed);
        tokio::spawn(async move {
            while let Ok(p) = read_packet(&mut rd).await {
                match p {
                    Packet::Puback(pid) | Packet::Suback(mqtt_proto::v3::Suback { pid, .. }) => {
                        let waiter = reader_pending
                            .lock()
                            .ok()
                            .and_then(|mut m| m.remove(&pid.value()));
                        if let Some(w) = waiter {
                            let _ = w.send(());
                        }
                    }
                    Packet::Publish(p) => {
                        if let QosPid::Level1(pid) = p.qos_pid
                            && let Ok(b) = encode(&Packet::Puback(pid))
                        {
                            let _ = reader_out.send(b).await;
                        }
                        let _ = in_tx
                            .send(Incoming {
                                topic: p.topic_name.to_string(),
                                payload: p.payload,
                            })
                            .await;
                    }
                    _ => {}
                }
            }
            // Wake every waiter: their senders drop with the map.
            if let Ok(mut m) = reader_pending.lock() {
                m.clear();
            }
            reader_closed.notify_waiters();
        });
        let keep_alive = s.keep_alive;
        if keep_alive > 0 {
            // A weak sender: the pings must not keep the connection open once the client is
            // gone (the writer ends, and the socket closes, when the last strong sender drops).
            let ping_out = out.downgrade();
            tokio::spawn(async move {
                let every = Duration::from_secs(u64::from(keep_alive) / 2 + 1);
                loop {
                    tokio::time::sleep(every).await;
                    let (Ok(b), Some(tx)) = (encode(&Packet::Pingreq), ping_out.upgrade()) else {
                        break;
                    };
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            out,
            pending,
            next_pid: Mutex::new(0),
            incoming: tokio::sync::Mutex::new(in_rx),
            closed,
        })
    }

    fn pid(&self) -> Result<(Pid, oneshot::Receiver<()>), ClientError> {
        let mut next = self.next_pid.lock().map_err(|_| ClientError::Closed)?;
        let mut pending = self.pending.lock().map_err(|_| ClientError::Closed)?;
        for _ in 0..u16::MAX {
            *next = next.wrapping_add(1).max(1);
            if let std::collections::hash_map::Entry::Vacant(slot) = pending.entry(*next) {
                let (tx, rx) = oneshot::channel();
                slot.insert(tx);
                return Ok((Pid::try_from(*next).map_err(proto)?, rx));
            }
        }
        Err(ClientError::Protocol("no free packet id".into()))
    }

    /// Publishes; for QoS 1 the receiver resolves on the PUBACK (an error if the connection
    /// closed first: the message may not have been accepted).
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos1: bool,
    ) -> Result<Option<oneshot::Receiver<()>>, ClientError> {
        let name = TopicName::try_from(topic).map_err(proto)?;
        let (qos_pid, ack) = if qos1 {
            let (pid, rx) = self.pid()?;
            (QosPid::Level1(pid), Some(rx))
        } else {
            (QosPid::Level0, None)
        };
        let bytes = encode(&Packet::Publish(Publish::new(qos_pid, name, payload)))?;
        self.out
            .send(bytes)
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(ack)
    }

    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK.
    pub async fn subscribe(&self, filter: &str) -> Result<(), ClientError> {
        let f = TopicFilter::try_from(filter).map_err(proto)?;
        let (pid, rx) = self.pid()?;
        let bytes = encode(&Packet::Subscribe(Subscribe::new(
            pid,
            vec![(f, QoS::Level1)],
        )))?;
        self.out
            .send(bytes)
            .await
            .map_err(|_| ClientError::Closed)?;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)
    }

    /// Sends DISCONNECT and closes.
    pub async fn disconnect(self) {
        if let Ok(b) = encode(&Packet::Disconnect) {
            let _ = self.out.send(b).await;
        }
    }

    /// Resolves when the gateway closed the connection.
    pub async fn closed(&self) {
        self.closed.notified().await;
    }
}

/// The rule for commands sent down to sensors (threat ST-D-28, replay): the gateway wraps each
/// command as `{"seq": n, "exp": unix_seconds, "payload": "<base64>"}` with `seq` strictly
/// increasing per gateway; a sensor accepts a command only if `seq` is above the last one it
/// accepted and `exp` has not passed. Third-party sensors must apply the same rule.
pub mod command {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Serialize};

    /// A command as it travels down.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
    pub struct Envelope {
        /// Strictly increasing per gateway.
        pub seq: u64,
        /// Unix seconds after which the command must not run.
        pub exp: u64,
        /// The command, base64.
        pub payload: String,
    }

    /// Why a sensor refused a command.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Refused {
        /// Not an envelope.
        Malformed,
        /// `seq` not above the last accepted one: a replay.
        Replayed,
        /// Past `exp`.
        Expired,
    }

    /// The sensor's side: keeps the last accepted sequence number.
    #[derive(Debug, Default)]
    pub struct Receiver {
        last: u64,
    }

    impl Receiver {
        /// Accepts or refuses one command received at `now` (Unix seconds).
        pub fn accept(&mut self, bytes: &[u8], now: u64) -> Result<Vec<u8>, Refused> {
            let e: Envelope = serde_json::from_slice(bytes).map_err(|_| Refused::Malformed)?;
            if e.seq <= self.last {
                return Err(Refused::Replayed);
            }
            if now > e.exp {
                return Err(Refused::Expired);
            }
            let payload = B64.decode(&e.payload).map_err(|_| Refused::Malformed)?;
            self.last = e.seq;
            Ok(payload)
        }
    }

    /// The gateway's side: stamps commands with increasing sequence numbers (Unix
    /// microseconds, kept increasing within the process, so a restart does not reuse them
    /// while the clock is sane).
    #[derive(Debug, Default)]
    pub struct Stamper {
        last: std::sync::Mutex<u64>,
    }

    impl Stamper {
        /// Wraps `payload` to expire `ttl_s` seconds after `now_micros`.
        pub fn stamp(&self, payload: &[u8], now_micros: u64, ttl_s: u64) -> Vec<u8> {
            let seq = match self.last.lock() {
                Ok(mut last) => {
                    *last = (*last + 1).max(now_micros);
                    *last
                }
                Err(_) => now_micros,
            };
            let e = Envelope {
                seq,
                exp: now_micros / 1_000_000 + ttl_s,
                payload: B64.encode(payload),
            };
            serde_json::to_vec(&e).unwrap_or_default()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// G045: DS-1-2
        /// A command is taken once, in order, before it expires (threat ST-D-28, replay).
        #[test]
        fn replayed_and_expired_commands_are_refused() {
            let g = Stamper::default();
            let mut s = Receiver::default();
            let now = 1_800_000_000_000_000;
            let a = g.stamp(b"open", now, 60);
            let b = g.stamp(b"close", now, 60);
            assert_eq!(s.accept(&a, now / 1_000_000), Ok(b"open".to_vec()));
            assert_eq!(s.accept(&a, now / 1_000_000), Err(Refused::Replayed));
            assert_eq!(s.accept(&b, now / 1_000_000 + 61), Err(Refused::Expired));
            assert_eq!(s.accept(&b, now / 1_000_000), Ok(b"close".to_vec()));
            assert_eq!(s.accept(b"{}", now), Err(Refused::Malformed));
        }
    }
}
