//! A real `kawal run` daemon for API tests: provisioned in a temp folder from a config the test
//! can change, reached over HTTPS with the device's dev CA pinned.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::Value;

use super::{d, free_port, kawal, run};

/// A running daemon.
pub struct Gateway {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    /// The sensors' MQTT listener.
    pub mqtt: SocketAddr,
    pub admin_password: String,
    pub ca_pem: String,
    child: Option<Child>,
    /// The child is `kawal boot --supervise` in its own process group (the daemon under it).
    group: bool,
}

/// The base configuration: loopback ports, cheap Argon2id (tests log in thousands of times;
/// the cost is spelled out as insecure, as a real deployment would have to), and the
/// loopback network exempt from source penalties unless a test says otherwise.
pub fn base_config(data: &Path) -> toml::Table {
    let text = format!(
        "data-dir = {:?}\n\
         [listen]\napi = \"127.0.0.1:{}\"\nmqtt = \"127.0.0.1:{}\"\n\
         [passwords]\nargon2-memory-kib = 1024\nargon2-passes = 1\nallow-weak-hashing = true\n\
         [login]\nexempt = [\"127.0.0.0/8\"]\n",
        d(data),
        free_port(),
        free_port()
    );
    text.parse().unwrap()
}

/// Sets `section.key = value` in a config table.
pub fn set(cfg: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    let t = cfg
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap();
    t.insert(key.to_owned(), value.into());
}

impl Gateway {
    /// Provisions and starts a daemon with the base configuration.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// As [`Gateway::start`], after `change` edits the configuration.
    pub fn start_with(change: impl FnOnce(&mut toml::Table)) -> Self {
        let mut gw = Self::provision_with(change);
        gw.spawn();
        gw
    }

    /// Provisions a device with the base configuration edited by `change`, without starting it.
    pub fn provision_with(change: impl FnOnce(&mut toml::Table)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut cfg = base_config(&data);
        change(&mut cfg);
        let config = tmp.path().join("kawal.toml");
        std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
        let r = run(&[
            "init",
            "--config",
            d(&config),
            "--dev",
            "--uid",
            "test-gw-01",
        ]);
        assert_eq!(r.code, 0, "init failed: {}", r.all());
        let admin_password = super::admin_password(&r.stdout);
        let ca_pem = std::fs::read_to_string(data.join("pki/dev-ca.crt.pem")).unwrap();
        let api = cfg["listen"]["api"].as_str().unwrap().parse().unwrap();
        let mqtt = cfg["listen"]["mqtt"].as_str().unwrap().parse().unwrap();
        Self {
            tmp,
            data,
            config,
            addr: api,
            mqtt,
            admin_password,
            ca_pem,
            child: None,
            group: false,
        }
    }

    /// Starts the daemon through `kawal boot --supervise` (the update launcher, in a process
    /// group of its own so that stopping it stops the daemon under it) and waits until it
    /// answers.
    pub fn spawn_boot(&mut self) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.tmp.path().join("daemon.log")).unwrap();
        let child = kawal()
            .args(["boot", "--supervise", "--config", d(&self.config)])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.group = true;
        self.wait_listening();
    }

    /// Waits until the API accepts connections (the daemon may be restarting).
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("daemon exited with {status}: {}", self.daemon_log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not listen: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the supervisor's whole process group (see [`Gateway::spawn_boot`]).
    fn signal_group(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = std::process::Command::new("kill")
                .args([signal, "--", &format!("-{}", c.id())])
                .status();
        }
    }

    /// Starts (or restarts) the daemon process and waits until it answers.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// As [`Gateway::spawn`], with extra environment variables for the daemon.
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.tmp.path().join("daemon.log")).unwrap();
        let child = kawal()
            .args(["run", "--config", d(&self.config)])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.group = false;
        self.wait_listening();
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the daemon wrote to stderr.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("daemon.log")).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL (a power cut, as far as the process can tell).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `secs` for the daemon to exit on its own; its exit code if it did.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(s)) = c.try_wait()
            {
                self.child = None;
                return s.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the daemon with SIGTERM; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        if self.group {
            self.signal_group("-TERM");
        }
        let mut child = self.child.take()?;
        // SAFETY-free: kill(1) is the portable way to send SIGTERM from a test.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The HTTPS base URL.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// A client that trusts only this device's dev CA.
    pub fn client(&self) -> Api {
        Api::new(self)
    }

    /// Logs in as admin and replaces the pre-installed password with `new`.
    pub fn admin_ready(&self, new: &str) -> Api {
        let mut api = self.client();
        let r = api.login("admin", &self.admin_password);
        assert_eq!(r.status(), StatusCode::OK);
        let r = api.post(
            "/api/v1/password",
            &serde_json::json!({ "current": self.admin_password, "new": new }),
        );
        let status = r.status();
        let body = r.text().unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "{body}");
        // The session ID and with it the CSRF token change with the password.
        let v: Value = serde_json::from_str(&body).unwrap();
        api.csrf = v["csrf_token"].as_str().map(str::to_owned);
        api
    }

    /// Every audit log entry as JSON (read from the files).
    pub fn log_lines(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut segs: Vec<_> = std::fs::read_dir(self.data.join("audit"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        for s in segs {
            let text = std::fs::read_to_string(s).unwrap();
            // The daemon may be writing while a test polls: a last line without its newline
            // is not complete yet, and is read at the next poll.
            let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
            for line in complete.lines() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
        out
    }

    /// Events named `name` in the log.
    pub fn events(&self, name: &str) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.group {
            self.signal_group("-KILL");
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An API client with its own session (cookie and CSRF token).
pub struct Api {
    pub http: Client,
    base: String,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

/// A client trusting only `ca_pem`, optionally bound to a local source address.
pub fn http_client(ca_pem: &str, local: Option<std::net::IpAddr>) -> Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let mut b = Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ip) = local {
        b = b.local_address(ip);
    }
    b.build().unwrap()
}

impl Api {
    pub fn new(gw: &Gateway) -> Self {
        Self {
            http: http_client(&gw.ca_pem, None),
            base: gw.url(""),
            cookie: None,
            csrf: None,
        }
    }

    pub fn with_client(gw: &Gateway, http: Client) -> Self {
        Self {
            http,
            base: gw.url(""),
            cookie: None,
            csrf: None,
        }
    }

    fn keep(&mut self, r: &Response) {
        for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            if k == "__Host-kawal-session" {
                self.cookie = if val.is_empty() {
                    None
                } else {
                    Some(val.to_owned())
                };
            }
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut b = self.http.request(method, format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            b = b.header("cookie", format!("__Host-kawal-session={c}"));
        }
        if let Some(t) = &self.csrf {
            b = b.header("x-csrf-token", t);
        }
        b
    }

    /// Sends a prepared request, keeping any new session cookie.
    pub fn send(&mut self, b: reqwest::blocking::RequestBuilder) -> Response {
        let r = b.send().unwrap();
        self.keep(&r);
        r
    }

    pub fn get(&mut self, path: &str) -> Response {
        let b = self.req(reqwest::Method::GET, path);
        self.send(b)
    }

    pub fn post(&mut self, path: &str, body: &Value) -> Response {
        let b = self.req(reqwest::Method::POST, path).json(body);
        self.send(b)
    }

    pub fn request(
        &mut self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        self.req(method, path)
    }

    /// Logs in; on success keeps the cookie and CSRF token. Returns the response with its
    /// body already read into JSON by the caller if needed.
    pub fn login(&mut self, user: &str, password: &str) -> Response {
        let r = self
            .http
            .post(format!("{}/api/v1/login", self.base))
            .json(&serde_json::json!({ "username": user, "password": password }))
            .send()
            .unwrap();
        self.keep(&r);
        if r.status() == StatusCode::OK {
            // The CSRF token comes from the session view.
            let who = self.get("/api/v1/session");
            let v: Value = who.json().unwrap();
            self.csrf = v["csrf_token"].as_str().map(str::to_owned);
        }
        r
    }

    /// As [`Api::login`], for a daemon that may be restarting: `None` when the connection
    /// fails instead of a panic.
    pub fn try_login(&mut self, user: &str, password: &str) -> Option<StatusCode> {
        let r = self
            .http
            .post(format!("{}/api/v1/login", self.base))
            .json(&serde_json::json!({ "username": user, "password": password }))
            .send()
            .ok()?;
        self.keep(&r);
        let status = r.status();
        if status == StatusCode::OK {
            let v: Value = self.try_get("/api/v1/session")?.json().ok()?;
            self.csrf = v["csrf_token"].as_str().map(str::to_owned);
        }
        Some(status)
    }

    /// A GET that answers `None` when the connection fails (the daemon is restarting).
    pub fn try_get(&mut self, path: &str) -> Option<Response> {
        let r = self.req(reqwest::Method::GET, path).send().ok()?;
        self.keep(&r);
        Some(r)
    }

    /// Re-authenticates and returns the single-use proof (the session ID changes).
    pub fn reauth(&mut self, password: &str) -> String {
        let r = self.post(
            "/api/v1/reauth",
            &serde_json::json!({ "password": password }),
        );
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().unwrap();
        self.csrf = v["csrf_token"].as_str().map(str::to_owned);
        v["proof"].as_str().unwrap().to_owned()
    }

    /// POST with a re-authentication proof.
    pub fn post_reauth(&mut self, path: &str, body: &Value, proof: &str) -> Response {
        let b = self
            .req(reqwest::Method::POST, path)
            .header("x-kawal-reauth", proof)
            .json(body);
        self.send(b)
    }
}
