//! `kawal sim`: enrols N sensors through the API and EST, connects them over mutual TLS and
//! publishes at a fixed total rate; reports messages/s and latency percentiles. It is the
//! load generator of the benchmarks and a quick way to see live devices in the console.
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kawal_gateway::client::{Client, ClientSettings};
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use serde_json::Value;

use super::{Api, body};
use crate::error::{CliError, Context, Exit, Result};
use crate::output;

/// Options of `kawal sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Sensors to enrol and run.
    #[arg(long, default_value_t = 3)]
    pub sensors: usize,
    /// Messages per second, all sensors together.
    #[arg(long, default_value_t = 10)]
    pub rate: u32,
    /// Seconds to run (0 = until Ctrl-C).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Payload bytes per message (at least 32).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Publish at QoS 0 instead of 1.
    #[arg(long)]
    pub qos0: bool,
    /// The gateway's MQTT address (default: the API host, port 8883).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Name prefix of the simulated sensors.
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Also run a `reader` sensor subscribed to all telemetry, to measure end-to-end latency.
    #[arg(long)]
    pub reader: bool,
}

/// A sensor ready to connect.
struct Ready {
    name: String,
    tls: Arc<rustls::ClientConfig>,
}

/// A rustls client configuration for a sensor: its key and certificate, trusting `ca_pem`.
pub fn sensor_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>> {
    sensor_tls_with(
        ca_pem,
        cert_pem,
        key_pem,
        rustls::crypto::aws_lc_rs::default_provider(),
    )
}

/// Like [`sensor_tls`], with `provider`'s suites and key exchange groups (a benchmark that
/// must offer what the other side can do).
pub fn sensor_tls_with(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    provider: rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.or_exit(Exit::DataErr, "gateway CA")?;
        roots.add(c).or_exit(Exit::DataErr, "gateway CA")?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .or_exit(Exit::DataErr, "sensor certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| CliError::new(Exit::DataErr, "sensor key unreadable"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .or_exit(Exit::Failure, "TLS")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| CliError::new(Exit::DataErr, format!("sensor certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// Enrols `name` (or gets a new token if it exists) and runs EST for it.
fn enrol(api: &mut Api, name: &str, role: Option<&str>) -> Result<Ready> {
    #[derive(Serialize)]
    struct B<'a> {
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<&'a str>,
    }
    let v = match api.call(
        Method::POST,
        "/api/v1/sensors",
        Some(&body(&B { name, role })?),
        None,
    ) {
        Ok(v) => v,
        Err(e) if e.exit == Exit::NoPerm && e.message.contains("(409)") => api.call(
            Method::POST,
            &format!("/api/v1/sensors/{name}/renew"),
            None,
            None,
        )?,
        Err(e) => return Err(e),
    };
    let token = zeroize::Zeroizing::new(
        v.get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| CliError::new(Exit::Failure, "the answer holds no token"))?
            .to_owned(),
    );
    let url = api.session.url.clone();
    let ca = api.session.ca_pem.clone();
    let e = crate::est::enroll(&url, &ca, name, &token)?;
    Ok(Ready {
        name: name.to_owned(),
        tls: sensor_tls(&ca, &e.cert_pem, &e.key_pem)?,
    })
}

fn mqtt_addr(url: &str, explicit: Option<&str>) -> Result<(SocketAddr, String)> {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned());
    let text = explicit.map_or_else(|| format!("{host}:8883"), str::to_owned);
    let addr = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| CliError::new(Exit::Config, format!("--mqtt: cannot resolve '{text}'")))?;
    let name = text.rsplit_once(':').map_or(host, |(h, _)| {
        h.trim_start_matches('[').trim_end_matches(']').to_owned()
    });
    Ok((addr, name))
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a sample of a few million at most"
    )]
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// `kawal sim`.
pub fn sim(args: &SimArgs, file: &std::path::Path) -> Result<()> {
    if args.sensors == 0 || args.sensors > 10_000 || args.rate == 0 || args.size < 32 {
        return Err(CliError::new(
            Exit::DataErr,
            "--sensors 1..=10000, --rate at least 1, --size at least 32",
        ));
    }
    let mut api = Api::open(file)?;
    let (addr, server_name) = mqtt_addr(&api.session.url, args.mqtt.as_deref())?;
    let mut ready = Vec::with_capacity(args.sensors);
    for i in 0..args.sensors {
        ready.push(enrol(&mut api, &format!("{}-{i}", args.prefix), None)?);
    }
    let reader = if args.reader {
        Some(enrol(
            &mut api,
            &format!("{}-reader", args.prefix),
            Some("reader"),
        )?)
    } else {
        None
    };
    output::line(&format!(
        "{} sensors enrolled (keys made here, certificates by EST); publishing {} msg/s at QoS {} to {addr}",
        ready.len(),
        args.rate,
        if args.qos0 { 0 } else { 1 }
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .or_exit(Exit::Failure, "runtime")?;
    let summary = rt.block_on(run(args, addr, server_name, ready, reader))?;
    output::line(&summary);
    Ok(())
}

async fn run(
    args: &SimArgs,
    addr: SocketAddr,
    server_name: String,
    ready: Vec<Ready>,
    reader: Option<Ready>,
) -> Result<String> {
    let settings = |r: &Ready| ClientSettings {
        addr,
        server_name: server_name.clone(),
        tls: Arc::clone(&r.tls),
        client_id: r.name.clone(),
        keep_alive: 30,
    };
    let e2e = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let epoch = Instant::now();
    if let Some(r) = &reader {
        let c = Client::connect(&settings(r))
            .await
            .map_err(|e| CliError::new(Exit::Failure, format!("reader: {e}")))?;
        c.subscribe("kawal/+/up/#")
            .await
            .map_err(|e| CliError::new(Exit::Failure, format!("reader subscribe: {e}")))?;
        let e2e = Arc::clone(&e2e);
        tokio::spawn(async move {
            let mut rx = c.incoming.lock().await;
            while let Some(m) = rx.recv().await {
                if let Some(sent) = m.payload.get(..16).and_then(|b| {
                    std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                }) {
                    let now = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if let Ok(mut v) = e2e.lock() {
                        v.push(Duration::from_micros(now.saturating_sub(sent)));
                    }
                }
            }
        });
    }
    let mut clients = Vec::new();
    for r in &ready {
        let c = Client::connect(&settings(r))
            .await
            .map_err(|e| CliError::new(Exit::Failure, format!("{}: {e}", r.name)))?;
        clients.push((r.name.clone(), Arc::new(c)));
    }
    let per_sensor = f64::from(args.rate) / clients.len() as f64;
    let deadline = (args.duration > 0).then(|| Instant::now() + Duration::from_secs(args.duration));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (name, c) in clients {
        let size = args.size;
        let qos1 = !args.qos0;
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut lat = Vec::new();
            let mut sent = 0u64;
            let interval = Duration::from_secs_f64(1.0 / per_sensor);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let topic = format!("kawal/{name}/up/telemetry");
            loop {
                tick.tick().await;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let t = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut p = format!("{t:<16}{{\"seq\":{sent}}}").into_bytes();
                p.resize(size, b' ');
                let at = Instant::now();
                match c.publish(&topic, Bytes::from(p), qos1).await {
                    Ok(Some(ack)) => acks.push((at, ack)),
                    Ok(None) => {}
                    Err(_) => break,
                }
                sent += 1;
                // Collect finished acknowledgements without blocking the pace.
                acks.retain_mut(|(at, rx)| match rx.try_recv() {
                    Ok(()) => {
                        lat.push(at.elapsed());
                        false
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => true,
                    Err(_) => false,
                });
            }
            let mut acked = lat.len() as u64;
            for (at, rx) in acks {
                if tokio::time::timeout(Duration::from_secs(10), rx)
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    lat.push(at.elapsed());
                    acked += 1;
                }
            }
            (sent, acked, lat)
        }));
    }
    let mut sent = 0;
    let mut acked = 0;
    let mut lat = Vec::new();
    for t in tasks {
        if let Ok((s, a, l)) = t.await {
            sent += s;
            acked += a;
            lat.extend(l);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut e2e = e2e.lock().map(|v| v.clone()).unwrap_or_default();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    #[allow(clippy::cast_precision_loss, reason = "message counts")]
    let mut text = format!(
        "sent {sent} in {secs:.1} s = {:.0} msg/s; acknowledged {acked}",
        sent as f64 / secs
    );
    if !args.qos0 {
        text.push_str(&format!(
            "; PUBACK latency p50 {} p99 {}",
            ms(quantile(&mut lat, 0.5)),
            ms(quantile(&mut lat, 0.99))
        ));
    }
    if reader.is_some() {
        text.push_str(&format!(
            "; end-to-end ({} received) p50 {} p99 {}",
            e2e.len(),
            ms(quantile(&mut e2e, 0.5)),
            ms(quantile(&mut e2e, 0.99))
        ));
    }
    Ok(text)
}
