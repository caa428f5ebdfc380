//! A minimal W3C WebDriver client for the console tests: starts Debian's `chromedriver` on a
//! free loopback port, drives headless `chromium` through one session, and kills both (the
//! whole process group) when dropped. Plain HTTP to the driver over reqwest + serde_json.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    reason = "test helpers: a failure should stop the test loudly"
)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};

/// The W3C key naming an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running chromedriver with one browser session.
pub struct Browser {
    http: Client,
    session: String,
    driver: Child,
    test: String,
    step: std::cell::Cell<u32>,
}

/// An element of the current page.
pub struct Element<'a> {
    b: &'a Browser,
    id: String,
}

/// Finds `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The program named by `env`, else the first of `names` on `PATH`; a clear failure if none.
fn find_bin(env: &str, names: &[&str]) -> PathBuf {
    let found = match std::env::var_os(env) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => names.iter().find_map(|n| which(n)),
    };
    found.unwrap_or_else(|| {
        panic!(
            "{} not found ({env} or PATH): the console browser tests need Debian's chromium and \
             chromium-driver (scripts/test.sh installs them: apt-get install chromium \
             chromium-driver); set KAWAL_SKIP_BROWSER=1 to skip these tests",
            names[0]
        )
    })
}

/// Where screenshots go: `target/browser-screenshots/`.
pub fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("browser-screenshots")
}

/// Starts a browser for the test `test`, or returns `None` (with a notice) when
/// `KAWAL_SKIP_BROWSER=1`. Missing chromium or chromedriver is a failure: `scripts/test.sh`
/// installs them.
pub fn launch(test: &str) -> Option<Browser> {
    if std::env::var("KAWAL_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        // A notice on stderr (the house lint keeps eprintln! out, tests included).
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: KAWAL_SKIP_BROWSER=1 (browser tests not run)"
        );
        return None;
    }
    let driver_bin = find_bin("KAWAL_CHROMEDRIVER", &["chromedriver"]);
    let chromium = find_bin("KAWAL_CHROMIUM", &["chromium", "chromium-browser"]);

    let port = super::common::free_port();
    // Its own process group, so Drop can end chromedriver and every chromium it started.
    let driver = Command::new(&driver_bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut b = Browser {
        http,
        session: format!("http://127.0.0.1:{port}"),
        driver,
        test: test.to_owned(),
        step: std::cell::Cell::new(0),
    };

    // Ready within a bounded time.
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = b
            .http
            .get(format!("{}/status", b.session))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|v| v["value"]["ready"] == true);
        if ready {
            break;
        }
        if let Ok(Some(s)) = b.driver.try_wait() {
            panic!("chromedriver exited with {s}");
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The device's certificate comes from its own dev CA, which this throw-away browser
    // profile does not trust: `acceptInsecureCerts` lets the session load it. The API tests
    // pin the dev CA instead (common/gateway.rs); here the browser is only the user agent.
    let caps = json!({
        "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "pageLoadStrategy": "normal",
            "timeouts": { "implicit": 0, "pageLoad": 20_000, "script": 10_000 },
            "goog:chromeOptions": {
                "binary": chromium.to_str().unwrap(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--password-store=basic",
                    "--window-size=1280,900",
                ],
            },
        }},
    });
    let r = b
        .http
        .post(format!("{}/session", b.session))
        .json(&caps)
        .send()
        .unwrap_or_else(|e| panic!("chromedriver: new session: {e}"));
    let v: Value = r.json().unwrap();
    let id = v["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("chromedriver refused a session: {v}"))
        .to_owned();
    b.session = format!("{}/session/{id}", b.session);
    Some(b)
}

impl Browser {
    /// One WebDriver command; the `value`, or the driver's error as `Err`.
    fn cmd(
        &self,
        method: &reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(body);
        } else if *method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let r = req
            .send()
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let ok = r.status().is_success();
        let v: Value = r.json().unwrap_or(Value::Null);
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if ok { Ok(value) } else { Err(value) }
    }

    fn get(&self, path: &str) -> Value {
        self.cmd(&reqwest::Method::GET, path, None)
            .unwrap_or_else(|e| panic!("webdriver GET {path}: {e}"))
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        self.cmd(&reqwest::Method::POST, path, Some(body))
            .unwrap_or_else(|e| panic!("webdriver POST {path}: {e}"))
    }

    /// Loads `url` and waits for the page.
    pub fn goto(&self, url: &str) {
        self.post("/url", &json!({ "url": url }));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.get("/url").as_str().unwrap_or_default().to_owned()
    }

    /// The current URL's path and query.
    pub fn path(&self) -> String {
        let u = self.url();
        let after_scheme = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
        after_scheme
            .find('/')
            .map_or_else(|| "/".to_owned(), |i| after_scheme[i..].to_owned())
    }

    /// The page's HTML.
    pub fn source(&self) -> String {
        self.get("/source").as_str().unwrap_or_default().to_owned()
    }

    /// The page title.
    pub fn title(&self) -> String {
        self.get("/title").as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching `css`, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.cmd(
            &reqwest::Method::POST,
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(str::to_owned))
        .map(|id| Element { b: self, id })
    }

    /// Every element matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        self.post(
            "/elements",
            &json!({ "using": "css selector", "value": css }),
        )
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v[ELEMENT].as_str().map(str::to_owned))
        .map(|id| Element { b: self, id })
        .collect()
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it.
    pub fn find(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.cmd(
                &reqwest::Method::POST,
                "/element",
                Some(&json!({ "using": "css selector", "value": css })),
            );
            let err = match found {
                Ok(v) => match v[ELEMENT].as_str() {
                    Some(id) => {
                        return Element {
                            b: self,
                            id: id.to_owned(),
                        };
                    }
                    None => json!({ "message": v.to_string() }),
                },
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "no element {css:?} on {} within {WAIT:?}: {}\npage: {}",
                self.url(),
                err["message"],
                self.source().chars().take(2000).collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to [`WAIT`] until the path (with query) satisfies `ok`; returns it.
    pub fn wait_path(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let p = self.path();
            if ok(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "expected to reach {what}, still at {p}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Submits a form with its button and waits up to [`WAIT`] until a new document has
    /// replaced this one, so what the test reads next is the answer, not the old page.
    pub fn submit(&self, button: &Element<'_>) {
        self.exec("window.__kawalOld = true; return null;", &[]);
        button.click();
        let deadline = Instant::now() + WAIT;
        loop {
            // Mid-navigation the driver may answer with an error: not loaded yet.
            let script = json!({ "script": "return window.__kawalOld === undefined && document.readyState === 'complete';", "args": [] });
            let fresh = self
                .cmd(&reqwest::Method::POST, "/execute/sync", Some(&script))
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if fresh {
                return;
            }
            assert!(Instant::now() < deadline, "no new page within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `script` (a function body) in the page; returns its result.
    pub fn exec(&self, script: &str, args: &[Value]) -> Value {
        self.post("/execute/sync", &json!({ "script": script, "args": args }))
    }

    /// Presses the primary pointer button on `el` and keeps it down.
    pub fn press(&self, el: &Element<'_>) {
        let mut origin = serde_json::Map::new();
        origin.insert(ELEMENT.to_owned(), Value::String(el.id.clone()));
        self.post(
            "/actions",
            &json!({ "actions": [{
                "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" },
                "actions": [
                    { "type": "pointerMove", "origin": origin, "x": 0, "y": 0 },
                    { "type": "pointerDown", "button": 0 },
                ],
            }]}),
        );
    }

    /// Releases the primary pointer button.
    pub fn release(&self) {
        self.post(
            "/actions",
            &json!({ "actions": [{
                "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" },
                "actions": [{ "type": "pointerUp", "button": 0 }],
            }]}),
        );
    }

    /// Saves a screenshot as `target/browser-screenshots/<test>-<nn>-<step>.png`.
    pub fn shot(&self, step: &str) -> PathBuf {
        self.step.set(self.step.get() + 1);
        let b64 = self.get("/screenshot");
        let png = base64_decode(b64.as_str().unwrap_or_default());
        let dir = shots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{:02}-{step}.png", self.test, self.step.get()));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Element<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// Its visible text.
    pub fn text(&self) -> String {
        self.b
            .get(&self.path("/text"))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// An HTML attribute.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.b
            .get(&self.path(&format!("/attribute/{name}")))
            .as_str()
            .map(str::to_owned)
    }

    /// A DOM property.
    pub fn prop(&self, name: &str) -> Value {
        self.b.get(&self.path(&format!("/property/{name}")))
    }

    /// Whether it is displayed.
    pub fn displayed(&self) -> bool {
        self.b.get(&self.path("/displayed")) == true
    }

    /// Types `text` into it.
    pub fn send_keys(&self, text: &str) -> &Self {
        self.b.post(&self.path("/value"), &json!({ "text": text }));
        self
    }

    /// Clears it.
    pub fn clear(&self) -> &Self {
        self.b.post(&self.path("/clear"), &json!({}));
        self
    }

    /// Clicks it (the driver waits for a navigation it starts).
    pub fn click(&self) {
        self.b.post(&self.path("/click"), &json!({}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Close the browser politely (short timeout), then end the whole process group:
        // chromedriver and any chromium it left behind. Only processes this test started.
        let _ = self
            .http
            .delete(&self.session)
            .timeout(Duration::from_secs(5))
            .send();
        let pgid = self.driver.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (with or without padding) to bytes.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = ((acc << 6) | v) & 0xff_ffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits).to_le_bytes()[0]);
        }
    }
    out
}
