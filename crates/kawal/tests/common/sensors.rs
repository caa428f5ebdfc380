//! Sensors for daemon tests: enrolment through the API and `kawal sensor est-enroll`, and the
//! real Mosquitto clients (`mosquitto_pub`, `mosquitto_sub`) and `openssl` as third parties.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::d;
use super::gateway::{Api, Gateway};

/// A sensor's files: key, certificate, and the gateway's CA to verify the server.
pub struct SensorFiles {
    pub name: String,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
    /// The gateway's (device) CA, to verify the MQTT server.
    pub gateway_ca: PathBuf,
}

/// The gateway's CA as a file in the test folder.
pub fn gateway_ca_file(gw: &Gateway) -> PathBuf {
    let p = gw.tmp.path().join("gateway-ca.pem");
    if !p.exists() {
        std::fs::write(&p, &gw.ca_pem).unwrap();
    }
    p
}

/// Enrols `name` through the API; returns the one-time token.
pub fn enroll(api: &mut Api, name: &str, role: Option<&str>) -> String {
    let mut body = json!({ "name": name });
    if let Some(r) = role {
        body["role"] = json!(r);
    }
    let r = api.post("/api/v1/sensors", &body);
    let status = r.status();
    let text = r.text().unwrap();
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Runs `kawal sensor est-enroll` with `token` on stdin; returns (exit code, output).
pub fn est_enroll_raw(gw: &Gateway, name: &str, token: &str, out: &Path) -> (i32, String) {
    let ca = gateway_ca_file(gw);
    let mut child = super::kawal()
        .args([
            "sensor",
            "est-enroll",
            "--url",
            &format!("https://localhost:{}", gw.addr.port()),
            "--ca",
            d(&ca),
            "--name",
            name,
            "--token-stdin",
            "--out",
            d(out),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Enrols `name` end to end (API token, then EST from "the sensor"); returns its files.
pub fn sensor(gw: &Gateway, api: &mut Api, name: &str, role: Option<&str>) -> SensorFiles {
    let token = enroll(api, name, role);
    let dir = gw.tmp.path().join(format!("sensor-{name}"));
    let (code, out) = est_enroll_raw(gw, name, &token, &dir);
    assert_eq!(code, 0, "est-enroll failed: {out}");
    SensorFiles {
        name: name.to_owned(),
        key: dir.join("sensor.key.pem"),
        cert: dir.join("sensor.crt.pem"),
        gateway_ca: gateway_ca_file(gw),
        dir,
    }
}

/// `mosquitto_pub` against the gateway with `files` (client id = the sensor name unless
/// `id` says otherwise); returns the process output.
pub fn mosquitto_pub(
    gw: &Gateway,
    files: &SensorFiles,
    id: Option<&str>,
    topic: &str,
    message: &str,
) -> Output {
    Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &gw.mqtt.port().to_string(),
            "--cafile",
            d(&files.gateway_ca),
            "--cert",
            d(&files.cert),
            "--key",
            d(&files.key),
            "-i",
            id.unwrap_or(&files.name),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            message,
        ])
        .output()
        .unwrap()
}

/// A `mosquitto_sub` that stays connected (killed on drop).
pub struct Sub {
    pub child: Child,
    out: PathBuf,
}

impl Sub {
    /// Subscribes to `filter` as `files`, writing `topic payload` lines to a file.
    pub fn start(gw: &Gateway, files: &SensorFiles, filter: &str) -> Self {
        let out = files.dir.join(format!("sub-{}.txt", std::process::id()));
        let f = std::fs::File::create(&out).unwrap();
        let child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "localhost",
                "-p",
                &gw.mqtt.port().to_string(),
                "--cafile",
                d(&files.gateway_ca),
                "--cert",
                d(&files.cert),
                "--key",
                d(&files.key),
                "-i",
                &files.name,
                "-q",
                "1",
                "-v",
                "-t",
                filter,
            ])
            .stdout(Stdio::from(f))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child, out }
    }

    /// What it received so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `pred` holds for the lines received, or `secs` pass.
    pub fn wait_for(&self, secs: u64, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if pred(&self.lines()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pred(&self.lines())
    }

    /// Whether the process has exited (the gateway closed its connection and it gave up).
    pub fn exited_within(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until an audit event `name` matching `pred` is in the log.
pub fn wait_event(gw: &Gateway, name: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if gw.events(name).iter().any(&pred) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `openssl` with `args`; returns the output.
pub fn openssl(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().unwrap()
}

/// A self-signed P-256 certificate and key for `cn` in `dir` (a sensor nobody enrolled).
pub fn self_signed(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let san = format!("subjectAltName=URI:urn:kawal:sensor:{cn}");
    self_signed_with(
        dir,
        cn,
        (format!("{cn}.crt.pem"), format!("{cn}.key.pem")),
        &[&san, "extendedKeyUsage=clientAuth"],
    )
}

/// A self-signed P-256 certificate for `cn` with the extensions `addext`, written to `files`
/// (certificate, key) in `dir`.
fn self_signed_with(
    dir: &Path,
    cn: &str,
    (cert, key): (String, String),
    addext: &[&str],
) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join(cert), dir.join(key));
    let subject = format!("/CN={cn}");
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        d(&key),
        "-out",
        d(&cert),
        "-subj",
        &subject,
        "-days",
        "2",
    ];
    for e in addext {
        args.extend(["-addext", e]);
    }
    ok(&openssl(&args));
    (cert, key)
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "openssl: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A throw-away P-256 CA named `cn` in `dir`: (certificate, key).
pub fn test_ca(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    self_signed_with(
        dir,
        cn,
        (format!("{cn}.ca.crt"), format!("{cn}.ca.key")),
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=keyCertSign,cRLSign",
        ],
    )
}

/// A P-256 key and a certificate for `cn` that the CA `(ca, ca_key)` issues with the
/// extensions `ext` (openssl extfile lines), in `dir`: (certificate, key).
pub fn issue(dir: &Path, (ca, ca_key): (&Path, &Path), cn: &str, ext: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join(format!("{cn}.key.pem"));
    let csr = dir.join(format!("{cn}.csr.pem"));
    let cert = dir.join(format!("{cn}.crt.pem"));
    let extfile = dir.join(format!("{cn}.ext"));
    std::fs::write(&extfile, ext).unwrap();
    ok(&openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        d(&key),
        "-out",
        d(&csr),
        "-subj",
        &format!("/CN={cn}"),
    ]));
    ok(&openssl(&[
        "x509",
        "-req",
        "-in",
        d(&csr),
        "-CA",
        d(ca),
        "-CAkey",
        d(ca_key),
        "-CAcreateserial",
        "-out",
        d(&cert),
        "-days",
        "2",
        "-extfile",
        d(&extfile),
    ]));
    (cert, key)
}

/// A rogue CA and a sensor certificate it issued for `cn`, in `dir`.
pub fn other_ca_sensor(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (ca, ca_key) = test_ca(dir, "rogue-ca");
    issue(
        dir,
        (&ca, &ca_key),
        cn,
        &format!("subjectAltName=URI:urn:kawal:sensor:{cn}\nextendedKeyUsage=clientAuth\n"),
    )
}
