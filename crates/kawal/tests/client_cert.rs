//! Automation authenticates with a client certificate mapped to an account (PL-3-2): a real
//! CA and client certificate made by `openssl`, presented to the running daemon by rustls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::gateway::*;
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;

const ADMIN_PW: &str = "Bukit-Gasing-Lantern-58";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed by scripts/test.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and one client certificate it issued, under `dir` with `name` as prefix; returns the
/// client's key and certificate as one PEM.
fn issue(dir: &Path, name: &str) -> String {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} automation CA"),
        ],
    );
    client(dir, name, name)
}

/// A client key and certificate `name` issued by the CA `ca` (made by [`issue`]); returns the
/// key and certificate as one PEM, as clients present them.
fn client(dir: &Path, name: &str, ca: &str) -> String {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}-robot"),
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let cert = std::fs::read_to_string(dir.join(format!("{name}.pem"))).unwrap();
    let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap();
    format!("{key}{cert}")
}

fn fingerprint(dir: &Path, cert_file: &str) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "x509",
            "-in",
            cert_file,
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
    let robot = issue(certs.path(), "robot");
    let stray = issue(certs.path(), "stray");
    // A second certificate from the trusted CA, but not mapped to any account.
    let unmapped = client(certs.path(), "unmapped", "robot");
    let fp = fingerprint(certs.path(), "robot.pem");
    let ca_file = certs.path().join("robot-ca.pem");
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
