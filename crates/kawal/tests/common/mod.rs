//! Helpers for tests that run the real `kawal` binary.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

pub mod gateway;
pub mod integrity;
pub mod mosquitto;
pub mod rsyslog;
pub mod sensors;
pub mod update;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The result of one run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn kawal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kawal"));
    c.env_remove("KAWAL_PASSPHRASE")
        .env_remove("KAWAL_SELFTEST_INJECT")
        .env("KAWAL_LOG", "debug");
    c
}

pub fn run(args: &[&str]) -> Run {
    run_cmd(kawal().args(args))
}

pub fn run_cmd(c: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Provisions a dev device in a fresh temp folder; returns (tempdir, data dir, admin password).
pub fn provisioned() -> (tempfile::TempDir, PathBuf, String) {
    let (t, d, pw, _) = provisioned_with_output();
    (t, d, pw)
}

/// As [`provisioned`], with everything `init` printed.
pub fn provisioned_with_output() -> (tempfile::TempDir, PathBuf, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let r = run(&[
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--dev",
        "--uid",
        "test-device-01",
    ]);
    assert_eq!(r.code, 0, "init failed: {}", r.all());
    let pw = admin_password(&r.stdout);
    let out = r.all();
    (tmp, data, pw, out)
}

/// The one-time admin password `kawal init` prints.
pub fn admin_password(init_stdout: &str) -> String {
    init_stdout
        .lines()
        .find_map(|l| l.split("change at first login): ").nth(1))
        .expect("password line")
        .trim()
        .to_owned()
}

pub fn d(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file's bytes under `dir`, with paths.
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` that contain `needle`.
pub fn holders(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|(_, b)| contains(b, needle))
        .map(|(p, _)| p)
        .collect()
}

pub use kawal_testkit::free_port;

/// Writes a config for `data` with free ports; returns its path.
pub fn config_for(dir: &Path, data: &Path) -> PathBuf {
    let path = dir.join("kawal.toml");
    std::fs::write(
        &path,
        format!(
            "data-dir = {:?}\n[listen]\napi = \"127.0.0.1:{}\"\nmqtt = \"127.0.0.1:{}\"\n",
            d(data),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    path
}

/// Runs `kawal ARGS --session-file SESSION --password-stdin` with `input` on stdin.
pub fn cli(session: &Path, args: &[&str], input: &str) -> Run {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = kawal()
        .args(args)
        .arg("--session-file")
        .arg(session)
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child may exit before reading everything (a refusal); that is not a test failure.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
