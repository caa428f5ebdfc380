//! `kawal sensor …`: the operator's sensor commands, as clients of the API (G045 AU-1-9,
//! AU-1-10), and `kawal sensor est-enroll`, the sensor's own side of enrolment.
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::{Api, body, clean};
use crate::error::{CliError, Context, Exit, Result};
use crate::output;

/// A `kawal sensor` action.
#[derive(Debug, clap::Subcommand)]
pub enum SensorAction {
    /// Enrol a sensor: prints a one-time token for EST simpleenroll (shown once).
    Enroll {
        /// The sensor's name, which becomes its UID ([A-Za-z0-9._:-], 1-64).
        name: String,
        /// Its topic role (default `sensor`: publish under kawal/<uid>/up/#, read kawal/<uid>/down/#).
        #[arg(long)]
        role: Option<String>,
    },
    /// List sensors: state, certificate serial and expiry, last seen.
    List,
    /// One sensor and its certificate history.
    Show {
        /// Sensor name.
        name: String,
    },
    /// Revoke a sensor's certificate: its live connection is dropped, new ones refused.
    Revoke {
        /// Sensor name.
        name: String,
    },
    /// A new one-time token so the sensor can enrol again with a new key.
    Renew {
        /// Sensor name.
        name: String,
    },
    /// Sign a CSR file for an enrolled sensor (its previous certificate is revoked).
    Sign {
        /// Sensor name.
        name: String,
        /// The PKCS#10 request, PEM.
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import a sensor certificate issued by the configured external CA (e.g. the
    /// manufacturer's): the sensor, new or existing, is active with exactly that certificate.
    Import {
        /// The sensor's certificate, PEM.
        #[arg(long)]
        cert: PathBuf,
        /// Its topic role, for a new sensor (default `sensor`).
        #[arg(long)]
        role: Option<String>,
    },
}

fn check_sensor_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CliError::new(
            Exit::DataErr,
            "a sensor name is 1-64 characters of [A-Za-z0-9._:-], not starting with '-'",
        ))
    }
}

fn field(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => clean(s),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => clean(&other.to_string()),
    }
}

/// Runs a `kawal sensor` action over the session in `file`.
pub fn sensor(action: SensorAction, file: &Path) -> Result<()> {
    let mut api = Api::open(file)?;
    match action {
        SensorAction::Enroll { name, role } => {
            check_sensor_name(&name)?;
            #[derive(Serialize)]
            struct B<'a> {
                name: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                role: Option<&'a str>,
            }
            let v = api.call(
                Method::POST,
                "/api/v1/sensors",
                Some(&body(&B {
                    name: &name,
                    role: role.as_deref(),
                })?),
                None,
            )?;
            print_token(&api, &name, &v);
        }
        SensorAction::Renew { name } => {
            check_sensor_name(&name)?;
            let v = api.call(
                Method::POST,
                &format!("/api/v1/sensors/{name}/renew"),
                None,
                None,
            )?;
            print_token(&api, &name, &v);
        }
        SensorAction::List => {
            let v = api.call(Method::GET, "/api/v1/sensors", None, None)?;
            let empty = Vec::new();
            let list = v.get("sensors").and_then(Value::as_array).unwrap_or(&empty);
            output::line(&format!(
                "{:<24} {:<8} {:<9} {:<34} {:<21} {}",
                "NAME", "ROLE", "STATE", "SERIAL", "EXPIRES", "LAST SEEN"
            ));
            for s in list {
                output::line(&format!(
                    "{:<24} {:<8} {:<9} {:<34} {:<21} {}",
                    field(s, "uid"),
                    field(s, "role"),
                    field(s, "state"),
                    field(s, "serial"),
                    field(s, "not_after"),
                    field(s, "last_seen"),
                ));
            }
        }
        SensorAction::Show { name } => {
            check_sensor_name(&name)?;
            let v = api.call(Method::GET, &format!("/api/v1/sensors/{name}"), None, None)?;
            let text = serde_json::to_string_pretty(&v).or_exit(Exit::Failure, "answer")?;
            output::line(&clean_multiline(&text));
        }
        SensorAction::Revoke { name } => {
            check_sensor_name(&name)?;
            let v = api.call(
                Method::POST,
                &format!("/api/v1/sensors/{name}/revoke"),
                None,
                None,
            )?;
            output::line(&format!(
                "{name}: certificate {} revoked; live connections dropped",
                field(&v, "serial")
            ));
        }
        SensorAction::Sign { name, csr, out } => {
            check_sensor_name(&name)?;
            let csr_pem = read_small(&csr)?;
            #[derive(Serialize)]
            struct B<'a> {
                csr_pem: &'a str,
            }
            let v = api.call(
                Method::POST,
                &format!("/api/v1/sensors/{name}/csr"),
                Some(&body(&B { csr_pem: &csr_pem })?),
                None,
            )?;
            let cert = v
                .get("cert_pem")
                .and_then(Value::as_str)
                .ok_or_else(|| CliError::new(Exit::Failure, "the answer holds no certificate"))?;
            match out {
                Some(p) => {
                    crate::device::write_atomic(&p, cert.as_bytes(), 0o644)?;
                    output::line(&format!(
                        "{name}: certificate {} written to {}",
                        field(&v, "serial"),
                        p.display()
                    ));
                }
                None => output::line(cert.trim_end()),
            }
        }
        SensorAction::Import { cert, role } => {
            let cert_pem = read_small(&cert)?;
            #[derive(Serialize)]
            struct B<'a> {
                cert_pem: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                role: Option<&'a str>,
            }
            let v = api.call(
                Method::POST,
                "/api/v1/sensors/import",
                Some(&body(&B {
                    cert_pem: &cert_pem,
                    role: role.as_deref(),
                })?),
                None,
            )?;
            output::line(&format!(
                "{}: imported certificate {} (role {}, valid until {})",
                field(&v, "uid"),
                field(&v, "serial"),
                field(&v, "role"),
                field(&v, "not_after")
            ));
        }
    }
    Ok(())
}

fn clean_multiline(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

fn read_small(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::new(Exit::NoInput, format!("{}: {e}", path.display())))?;
    if meta.len() > kawal_api::sensors::CSR_LIMIT as u64 {
        return Err(CliError::new(
            Exit::DataErr,
            format!("{}: larger than a CSR can be", path.display()),
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| CliError::new(Exit::NoInput, format!("{}: {e}", path.display())))
}

fn print_token(api: &Api, name: &str, v: &Value) {
    output::line(&format!(
        "sensor {name}: one-time enrolment token (shown once, expires {}):",
        field(v, "expires_at")
    ));
    output::line(&zeroize::Zeroizing::new(field(v, "token")));
    output::line(&format!(
        "on the sensor: kawal sensor est-enroll --url {} --ca <gateway CA> --name {name} --token-stdin --out <folder>",
        api.session.url
    ));
    output::line(&format!(
        "(any EST client works: POST {}/.well-known/est/simpleenroll with the token as a Bearer or Basic password)",
        api.session.url
    ));
}

/// `kawal sensor est-enroll`: on the sensor, make a key, enrol with the token, write the files.
pub fn est_enroll(url: &str, ca: &Path, name: &str, token: &str, out: &Path) -> Result<()> {
    check_sensor_name(name)?;
    let url = super::check_url(url)?;
    let ca_pem = read_small_ca(ca)?;
    let enrolled = crate::est::enroll(&url, &ca_pem, name, token)?;
    crate::est::write(out, &enrolled)?;
    output::line(&format!(
        "sensor {name} enrolled: key and certificate in {} (the key was made here and never sent)",
        out.display()
    ));
    Ok(())
}

/// `kawal sensor est-reenroll`: on the sensor, renew with the current key and certificate in
/// `dir` (a new key is made; the files are replaced only once the new certificate is in).
pub fn est_reenroll(url: &str, ca: &Path, name: &str, dir: &Path) -> Result<()> {
    check_sensor_name(name)?;
    let url = super::check_url(url)?;
    let ca_pem = read_small_ca(ca)?;
    let key = super::read_limited(&dir.join("sensor.key.pem"), "sensor key")?;
    let cert = read_small_ca(&dir.join("sensor.crt.pem"))?;
    let key = String::from_utf8(key.to_vec())
        .map_err(|_| CliError::new(Exit::DataErr, "the sensor key is not PEM text"))?;
    let key = zeroize::Zeroizing::new(key);
    let renewed = crate::est::reenroll(&url, &ca_pem, name, &key, &cert)?;
    crate::est::write(dir, &renewed)?;
    output::line(&format!(
        "sensor {name} re-enrolled: new key and certificate in {} (the previous certificate no longer counts)",
        dir.display()
    ));
    Ok(())
}

fn read_small_ca(path: &Path) -> Result<String> {
    let bytes = super::read_limited(path, "CA file")?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| CliError::new(Exit::DataErr, "the CA file is not PEM text"))
}
