//! `kawal demo --upstream`: the product in one command, forwarding its simulated sensors'
//! telemetry to a real Mosquitto over mutual TLS (G045 DS-1-2, threat ST-G-3).
//!
//! The demo binds its fixed ports (8443, 8883) on 127.0.0.1; this is the only test that does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests"
)]

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sensors::{issue, test_ca};
use common::{d, free_port};

/// Kills a child process when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

/// G045: DS-1-2
/// The demo with `--upstream` writes the upstream into its configuration and its three
/// simulated sensors' telemetry reaches a Mosquitto that admits only the demo device's
/// certificate, under `kawal/gw/<device uid>/<sensor>/up/...`.
#[test]
fn the_demo_forwards_its_sensors_to_an_upstream_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("upstream-pki");
    let (ca, ca_key) = test_ca(&pki, "upstream test CA");
    let (server_cert, server_key) = issue(
        &pki,
        (&ca, &ca_key),
        "broker",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    let (sub_cert, sub_key) = issue(
        &pki,
        (&ca, &ca_key),
        "subscriber",
        "extendedKeyUsage=clientAuth\n",
    );
    let port = free_port();
    let demo_dir = tmp.path().join("demo");
    let demo_out = tmp.path().join("demo.out");
    let demo = Reaped(
        common::kawal()
            .args([
                "demo",
                "--dir",
                d(&demo_dir),
                "--upstream",
                &format!("127.0.0.1:{port}"),
                "--upstream-ca",
                d(&ca),
                "--upstream-server-name",
                "localhost",
            ])
            .stdout(Stdio::from(std::fs::File::create(&demo_out).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dev_ca = demo_dir.join("data/pki/dev-ca.crt.pem");
    // The demo provisions the device, then writes its configuration (atomically): wait for both.
    let config_path = demo_dir.join("kawal.toml");
    assert!(
        wait(30, || dev_ca.exists() && config_path.exists()),
        "the demo made no device: {}",
        std::fs::read_to_string(&demo_out).unwrap_or_default()
    );
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains("[upstream]"), "{config}");
    assert!(config.contains(&format!("127.0.0.1:{port}")), "{config}");

    // The upstream admits the demo device (its dev CA) and the subscriber (the test CA).
    let clients = tmp.path().join("clients-ca.pem");
    std::fs::write(
        &clients,
        format!(
            "{}{}",
            std::fs::read_to_string(&ca).unwrap(),
            std::fs::read_to_string(&dev_ca).unwrap()
        ),
    )
    .unwrap();
    let conf = tmp.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nallow_anonymous false\nlistener {port} 127.0.0.1\ncafile {}\n\
             certfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
            d(&clients),
            d(&server_cert),
            d(&server_key)
        ),
    )
    .unwrap();
    let _broker = Reaped(
        Command::new("mosquitto")
            .args(["-c", d(&conf)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto) is needed"),
    );
    assert!(
        wait(10, || std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()),
        "mosquitto did not listen"
    );
    let mut sub = Reaped(
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "--cafile",
                d(&ca),
            ])
            .args(["--cert", d(&sub_cert), "--key", d(&sub_key)])
            .args(["-v", "-t", "kawal/gw/#", "-C", "3", "-W", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Three messages forwarded (the bridge retries with back-off until the broker is up).
    let status = {
        let deadline = Instant::now() + Duration::from_secs(70);
        loop {
            if let Ok(Some(s)) = sub.0.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut got = String::new();
    if let Some(mut out) = sub.0.stdout.take() {
        let _ = out.read_to_string(&mut got);
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "no telemetry upstream ({status:?}): {got}\ndemo: {}",
        std::fs::read_to_string(&demo_out).unwrap_or_default()
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 3, "{got}");
    for l in lines {
        let topic = l.split_whitespace().next().unwrap();
        let parts: Vec<&str> = topic.split('/').collect();
        assert!(
            parts.len() >= 6 && parts[..2] == ["kawal", "gw"] && parts[4] == "up",
            "{topic}"
        );
    }
    drop(demo);
}
