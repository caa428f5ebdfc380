//! The sensors' TLS stream (`kawal_gateway::tls`, rustls' unbuffered API) against a rustls
//! client on loopback: data both ways in every size, the peer's certificate, close_notify and
//! a bare TCP close, a key update, refused handshakes with their alert, an oversized
//! handshake, records that arrive a few bytes at a time, and that an idle connection holds
//! no buffer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    reason = "tests: a failure should stop the test loudly; test patterns are bytes mod 251"
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kawal_gateway::server::{TlsMaterial, server_config};
use kawal_gateway::tls::{self, TlsStream};
use rustls::ServerConfig;
use support::{Ca, Leaf, connector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream as ClientStream;

const WAIT: Duration = Duration::from_secs(10);

struct Pki {
    ca: Ca,
    sensor: Leaf,
    config: Arc<ServerConfig>,
}

fn pki() -> Pki {
    let ca = Ca::new("tls stream test CA");
    let server = ca.server();
    let material = TlsMaterial {
        chain: vec![server.cert.clone()],
        key: server.key(),
        sensor_roots: vec![ca.cert.clone()],
        external_roots: Vec::new(),
        crls: vec![ca.crl(&[])],
        clock_floor: None,
    };
    let config = server_config(&material).unwrap();
    let sensor = ca.sensor("s-1");
    Pki { ca, sensor, config }
}

/// A listener on loopback whose first connection is accepted with `config`.
async fn serve_one(
    config: Arc<ServerConfig>,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<std::io::Result<TlsStream>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tls::accept(tcp, config).await
    });
    (addr, task)
}

/// A handshake on loopback: the client, presenting `leaf` if any, over `wrap(tcp)`, against
/// the server side; what each side came to (the client's side first).
async fn handshake<IO>(
    p: &Pki,
    leaf: Option<&Leaf>,
    wrap: impl FnOnce(TcpStream) -> IO,
) -> (
    std::io::Result<ClientStream<IO>>,
    std::io::Result<TlsStream>,
)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (addr, server) = serve_one(Arc::clone(&p.config)).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let client = connector(&p.ca, leaf)
        .connect("127.0.0.1".try_into().unwrap(), wrap(tcp))
        .await;
    let server = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    (client, server)
}

async fn connected(p: &Pki) -> (TlsStream, ClientStream<TcpStream>) {
    let (client, server) = handshake(p, Some(&p.sensor), |tcp| tcp).await;
    (server.unwrap(), client.unwrap())
}

/// Reads until `n` bytes have come (bounded by [`WAIT`]).
async fn read_n<R: AsyncReadExt + Unpin>(r: &mut R, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    tokio::time::timeout(WAIT, r.read_exact(&mut got))
        .await
        .expect("data in time")
        .expect("data");
    got
}

/// Asserts that the stream ends cleanly (bounded by [`WAIT`]) with nothing more to read.
async fn assert_at_the_end<R: AsyncReadExt + Unpin>(r: &mut R) {
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut rest))
        .await
        .expect("the end in time")
        .expect("a clean end");
    assert!(rest.is_empty(), "{} bytes after the end", rest.len());
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i % 251) as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Lets the server's reader find the socket empty (so it parks and sheds its buffers).
async fn park(server: &mut TlsStream) {
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(50), server.read(&mut b))
            .await
            .is_err(),
        "nothing should be readable"
    );
}

/// G045: DS-1-1, PL-3-1 (threat ST-G-1: memory per idle connection)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_of_every_size_crosses_both_ways_and_an_idle_stream_holds_no_buffer() {
    let p = pki();
    let (mut server, mut client) = connected(&p).await;
    assert_eq!(
        server.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let leaf = server.peer_certificates().unwrap().first().unwrap().clone();
    assert_eq!(leaf, p.sensor.cert);

    for n in [1, 100, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 300 * 1024] {
        // Client to server, in one write.
        let up = pattern(n, 1);
        client.write_all(&up).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(read_n(&mut server, n).await, up, "{n} bytes up");

        // Server to client, in many small writes and some large ones, then one flush.
        let down = pattern(n, 2);
        let writer = async {
            for chunk in down.chunks(1 + n / 7) {
                server.write_all(chunk).await.unwrap();
            }
            server.flush().await.unwrap();
        };
        let (_, got) = tokio::join!(writer, read_n(&mut client, n));
        assert_eq!(got, down, "{n} bytes down");
    }
    park(&mut server).await;
    assert_eq!(
        server.buffered_capacity(),
        0,
        "an idle stream holds no buffer"
    );

    // Still usable after shedding everything.
    client.write_all(b"after idle").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(read_n(&mut server, 10).await, b"after idle");
}

/// G045: DS-1-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_notify_reads_as_the_end_and_a_bare_tcp_close_as_an_error() {
    let p = pki();
    let (mut server, mut client) = connected(&p).await;
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_n(&mut server, 10).await, b"last words");
    assert_at_the_end(&mut server).await;
    // The server may still answer, then closes with its own close_notify.
    server.write_all(b"bye").await.unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(read_n(&mut client, 3).await, b"bye");
    assert_at_the_end(&mut client).await;

    let (mut server, client) = connected(&p).await;
    let (tcp, _) = client.into_inner();
    drop(tcp);
    let mut b = [0u8; 8];
    let e = tokio::time::timeout(WAIT, server.read(&mut b))
        .await
        .unwrap()
        .unwrap_err();
    // (A reset if the kernel still held unread bytes for the client, such as its ticket.)
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{e:?}"
    );
}

/// G045: DS-1-1 (long-lived sensor connections refresh their keys)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_update_from_the_sensor_is_followed_both_ways() {
    let p = pki();
    let (mut server, mut client) = connected(&p).await;
    for round in 0..3u8 {
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let up = pattern(5000, round);
        client.write_all(&up).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(read_n(&mut server, up.len()).await, up);
        let down = pattern(7000, round + 10);
        server.write_all(&down).await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(read_n(&mut client, down.len()).await, down);
    }
}

/// G045: DS-1-1, AU-3-2 (no certificate, no session; the sensor is told why)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_without_a_client_certificate_fails_with_the_tls_reason_and_an_alert() {
    let p = pki();
    let (client, server) = handshake(&p, None, |tcp| tcp).await;
    let e = server.err().expect("refused");
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .expect("a rustls error");
    assert_eq!(*inner, rustls::Error::NoCertificatesPresented);
    // TLS 1.3: the client learns it when it next reads, from the alert.
    let mut client = client.expect("the client finishes its side first");
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(WAIT, client.read(&mut b))
        .await
        .unwrap();
    let msg = read.expect_err("alert").to_string();
    assert!(msg.contains("CertificateRequired"), "{msg}");

    // A certificate from another CA: refused in the handshake, the client told.
    let other = Ca::new("another CA").sensor("s-1");
    let (client, server) = handshake(&p, Some(&other), |tcp| tcp).await;
    let mut client = client.unwrap();
    let e = server.err().expect("refused");
    assert!(matches!(
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    ));
    let msg = tokio::time::timeout(WAIT, client.read(&mut b))
        .await
        .unwrap()
        .expect_err("alert")
        .to_string();
    assert!(msg.contains("UnknownCA"), "{msg}");
}

/// A handshake message that never ends is not buffered without end.
/// G045: PL-1-1, PL-3-1 (threats ST-D-10 and ST-G-1)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_handshake_message_is_refused_within_bounded_memory() {
    let p = pki();
    let (addr, server) = serve_one(Arc::clone(&p.config)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // A handshake record opening a ClientHello that claims 16 MiB, then more records of it.
    let mut first = vec![22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff];
    first.resize(5 + 0x4000, 0);
    let sender = tokio::spawn(async move {
        let _ = tcp.write_all(&first).await;
        let mut more = vec![22, 3, 1, 0x40, 0x00];
        more.resize(5 + 0x4000, 0x41);
        for _ in 0..64 {
            if tcp.write_all(&more).await.is_err() {
                return true;
            }
        }
        false
    });
    let r = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert!(r.is_err(), "an endless handshake must fail");
    let _ = tokio::time::timeout(WAIT, sender).await;
}

/// Garbage instead of a ClientHello: an error, never a panic.
/// G045: PL-1-1 (threat ST-D-10: input validation)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_the_handshake_is_an_error() {
    let p = pki();
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[22, 3, 3, 0, 0][..],
        &[23, 3, 3, 0, 5, 1, 2, 3, 4, 5][..],
        &[21, 3, 3, 0, 2, 2, 40][..],
    ] {
        let (addr, server) = serve_one(Arc::clone(&p.config)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        let r = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
        assert!(r.is_err(), "{garbage:?}");
    }
}

/// A client socket that sends at most a few bytes per write, and each write as its own TCP
/// segment: the server sees every record, handshake and application data alike, in pieces.
struct Trickle {
    tcp: TcpStream,
    step: usize,
}

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Trickle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.step = self.step % 7 + 1;
        let n = data.len().min(self.step);
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, &data[..n])
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Records that arrive a few bytes at a time (a slow or fragmenting network) are put back
/// together: the handshake completes and every byte arrives in order.
/// G045: DS-1-1, PL-1-1 (threat ST-D-10: input validation)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_arrive_a_few_bytes_at_a_time_are_put_back_together() {
    let p = pki();
    let (client, server) = handshake(&p, Some(&p.sensor), |tcp| Trickle { tcp, step: 0 }).await;
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    let up = pattern(40_000, 3);
    let (w, got) = tokio::join!(
        async {
            client.write_all(&up).await.unwrap();
            client.flush().await.unwrap();
        },
        read_n(&mut server, up.len())
    );
    let () = w;
    assert_eq!(got, up);
    let down = pattern(20_000, 4);
    server.write_all(&down).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(read_n(&mut client, down.len()).await, down);
}
