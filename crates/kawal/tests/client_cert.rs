//! Automation authenticates with a client certificate mapped to an account (PL-3-2): a real
//! CA and client certificates made by `openssl` (the shared test-PKI helpers), presented to the running daemon by rustls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::gateway::*;
use common::sensors::{issue, test_ca};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;

const ADMIN_PW: &str = "Bukit-Gasing-Lantern-58";

/// A client key and certificate for `name` that the CA `ca` issues (clientAuth); returns the
/// certificate's path and the key and certificate as one PEM, as clients present them.
fn client(dir: &Path, name: &str, ca: &(PathBuf, PathBuf)) -> (PathBuf, String) {
    let (cert, key) = issue(
        dir,
        (&ca.0, &ca.1),
        &format!("{name}-robot"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(&key).unwrap(),
        std::fs::read_to_string(&cert).unwrap()
    );
    (cert, pem)
}

fn fingerprint(cert_file: &Path) -> String {
    let out = Command::new("openssl")
        .args([
            "x509",
            "-in",
            common::d(cert_file),
            "-noout",
            "-fingerprint",
            "-sha256",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase()
}

fn with_identity(gw: &Gateway, identity_pem: &str) -> Client {
    let ca = reqwest::Certificate::from_pem(gw.ca_pem.as_bytes()).unwrap();
    Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(identity_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// G045: PL-3-2, AU-1-2
#[test]
fn a_mapped_client_certificate_acts_as_its_account_and_nothing_else_does() {
    let certs = tempfile::tempdir().unwrap();
    let robot_ca = test_ca(certs.path(), "robot automation CA");
    let stray_ca = test_ca(certs.path(), "stray automation CA");
    let (robot_cert, robot) = client(certs.path(), "robot", &robot_ca);
    let (_, stray) = client(certs.path(), "stray", &stray_ca);
    // A second certificate from the trusted CA, but not mapped to any account.
    let (_, unmapped) = client(certs.path(), "unmapped", &robot_ca);
    let fp = fingerprint(&robot_cert);
    let ca_file = robot_ca.0;
    let mut gw = Gateway::start_with(|cfg| {
        set(cfg, "api", "client-ca-file", ca_file.to_str().unwrap());
        let mut map = toml::Table::new();
        map.insert(fp.clone(), toml::Value::String("admin".into()));
        set(cfg, "api", "client-certs", toml::Value::Table(map));
    });
    let _admin = gw.admin_ready(ADMIN_PW);

    // The mapped certificate is the admin account: no cookie, no password.
    let robot = with_identity(&gw, &robot);
    let r = robot.get(gw.url("/api/v1/session")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let who: Value = r.json().unwrap();
    assert_eq!(who["user"], "admin", "{who}");
    assert_eq!(who["role"], "admin", "{who}");
    let r = robot.get(gw.url("/api/v1/accounts")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A certificate from the same CA that no account claims gets nothing.
    let r = with_identity(&gw, &unmapped)
        .get(gw.url("/api/v1/accounts"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A certificate from another CA does not get through the handshake.
    let r = with_identity(&gw, &stray)
        .get(gw.url("/api/v1/accounts"))
        .send();
    assert!(r.is_err() || r.unwrap().status() == StatusCode::UNAUTHORIZED);
    // No certificate: the ordinary login rules.
    let r = gw.client().get("/api/v1/accounts");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    gw.stop();
}
