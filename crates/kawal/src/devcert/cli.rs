//! `kawal cert …`: the operator's side of the device certificate, offline (the running
//! daemon puts what they write in force, see [`super::Watch`]).
use std::path::Path;

use kawal_api::tls::TlsIdentity;
use kawal_audit::{Event, Outcome};
use kawal_pki::{ExpiryState, IdentityKey, expiry_state};

use super::{DEVICE, LeafFacts, MAX_FILE, Refusal, check, days_left, device_spki, now_s, rfc3339};
use crate::device::{self, Device, tables};
use crate::error::{CliError, Context, Exit, Result};
use crate::{config, output, serve};

/// Opens the device of the configuration at `config_path`.
pub(super) fn open(config_path: &Path) -> Result<Device> {
    let cfg = config::load(config_path)?;
    let pass = device::read_passphrase(cfg.passphrase_file.as_deref())?;
    Device::open(&cfg.data_dir, pass.as_ref())
}

/// Reads a certificate file of bounded size.
fn read_cert_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| CliError::new(Exit::NoInput, format!("{}: {e}", path.display())))?;
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::new(Exit::DataErr, format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_FILE {
        return Err(CliError::new(
            Exit::DataErr,
            format!("{}: larger than {MAX_FILE} bytes", path.display()),
        ));
    }
    Ok(text)
}

/// What the operator is told after a new certificate was written.
fn installed_lines(f: &LeafFacts, now: i64) {
    output::line(&format!(
        "device certificate {} (serial {}) installed, valid until {} ({} days)",
        f.subject,
        f.serial,
        rfc3339(f.not_after),
        days_left(f.not_after, now)
    ));
    output::line(
        "a running daemon puts it in force on the API and MQTT listeners within a minute (at once on SIGHUP); otherwise it is used at the next start",
    );
    let state = expiry_state(f.not_after, now);
    if state != ExpiryState::Ok {
        output::line(&format!(
            "warning: this certificate is already close to its end ({})",
            state.as_str()
        ));
    }
}

/// `kawal cert install --config FILE --cert NEW.pem`: checks the new certificate (leaf first,
/// then its chain) against the device key and its validity, and writes it as
/// `pki/device.crt.pem` atomically. A refusal is an audit event and leaves the file unchanged.
pub fn install(config_path: &Path, cert_path: &Path) -> Result<()> {
    let dev = open(config_path)?;
    let pem = read_cert_file(cert_path)?;
    let spki = device_spki(&dev)?;
    let now = now_s();
    let checked = check(&pem, &spki, now).and_then(|f| {
        // What the daemon will do with it: TLS must accept the chain with the device key.
        let key = serve::device_key(&dev).map_err(|e| Refusal::Unusable(e.message))?;
        kawal_api::tls::server_config(
            &TlsIdentity {
                cert_chain_pem: pem.clone(),
                key_pkcs8_der: key,
            },
            None,
        )
        .map_err(|e| Refusal::Unusable(e.to_string()))?;
        Ok(f)
    });
    let log = dev.audit_log(device::ANCHOR_EVERY)?;
    let result = match checked {
        Err(r) => {
            device::record(
                &log,
                Event::new("certificate.refused", "kawal-cert", Outcome::Denied)
                    .with("certificate", DEVICE)
                    .with("via", "kawal cert install")
                    .with("reason", r.reason())
                    .with("detail", r.to_string())
                    .with(
                        "content_sha256",
                        hex::encode(kawal_crypto::sha256(pem.as_bytes())),
                    ),
            )?;
            Err(CliError::new(
                Exit::DataErr,
                format!("refused: {r}; the installed certificate is unchanged"),
            ))
        }
        Ok(f) => {
            device::write_atomic(
                &dev.layout.pki().join("device.crt.pem"),
                pem.as_bytes(),
                0o644,
            )?;
            device::record(
                &log,
                Event::new("certificate.installed", "kawal-cert", Outcome::Success)
                    .with("certificate", DEVICE)
                    .with("via", "kawal cert install")
                    .with("serial", f.serial.as_str())
                    .with("not_after", rfc3339(f.not_after))
                    .with("sha256", f.sha256.as_str()),
            )?;
            installed_lines(&f, now);
            Ok(())
        }
    };
    log.close().or_exit(Exit::Io, "audit log")?;
    result
}

/// `kawal cert reissue-dev --config FILE [--days N]`: on a dev device, a new device certificate
/// for the same key from the dev CA made at provisioning (what peers trust does not change),
/// written as `pki/device.crt.pem`. Refused on a production device.
pub fn reissue_dev(config_path: &Path, days: u32) -> Result<()> {
    let dev = open(config_path)?;
    if !dev.info.dev {
        return Err(CliError::new(
            Exit::NoPerm,
            "not a dev device: have the device's CA issue a new certificate and install it with `kawal cert install`",
        ));
    }
    let ca_key = dev
        .store
        .get(tables::IDENTITY, "dev-ca")
        .or_exit(Exit::DataErr, "store")?
        .ok_or_else(|| CliError::new(Exit::DataErr, "the dev CA key is missing"))?;
    let ca_key = IdentityKey::from_pkcs8_der(&ca_key)
        .map_err(|e| CliError::new(Exit::DataErr, format!("dev CA key: {e}")))?;
    let ca_pem = read_cert_file(&dev.layout.pki().join("dev-ca.crt.pem"))?;
    let key = serve::device_key(&dev)?;
    let device_key = IdentityKey::from_pkcs8_der(&key)
        .map_err(|e| CliError::new(Exit::DataErr, format!("device key: {e}")))?;
    let pem = kawal_pki::reissue_dev(&device_key, &ca_key, &ca_pem, &dev.info.uid, days)
        .map_err(|e| CliError::new(Exit::Failure, format!("dev certificate: {e}")))?;
    let now = now_s();
    let f = check(&pem, &device_key.public_key_der(), now)
        .map_err(|r| CliError::new(Exit::Failure, format!("the new certificate: {r}")))?;
    device::write_atomic(
        &dev.layout.pki().join("device.crt.pem"),
        pem.as_bytes(),
        0o644,
    )?;
    let log = dev.audit_log(device::ANCHOR_EVERY)?;
    device::record(
        &log,
        Event::new("certificate.installed", "kawal-cert", Outcome::Success)
            .with("certificate", DEVICE)
            .with("via", "kawal cert reissue-dev")
            .with("serial", f.serial.as_str())
            .with("not_after", rfc3339(f.not_after))
            .with("sha256", f.sha256.as_str()),
    )?;
    log.close().or_exit(Exit::Io, "audit log")?;
    installed_lines(&f, now);
    Ok(())
}

/// `kawal cert csr --config FILE [--out PATH]`: a certificate request for the device key, for
/// the CA that renews the device certificate by hand (the key never leaves the store; only
/// the request is written, to `PATH` or standard output).
pub fn csr(config_path: &Path, out: Option<&Path>) -> Result<()> {
    let dev = open(config_path)?;
    let key = serve::device_key(&dev)?;
    let key = IdentityKey::from_pkcs8_der(&key)
        .map_err(|e| CliError::new(Exit::DataErr, format!("device key: {e}")))?;
    let pem = kawal_pki::device_csr_pem(&key, &dev.info.uid)
        .map_err(|e| CliError::new(Exit::Failure, format!("CSR: {e}")))?;
    match out {
        Some(path) => {
            device::write_atomic(path, pem.as_bytes(), 0o644)?;
            output::line(&format!(
                "certificate request for {} written to {}",
                dev.info.uid,
                path.display()
            ));
        }
        None => output::raw(&pem),
    }
    Ok(())
}
