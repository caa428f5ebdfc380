//! The console's Sensors page through the real router, guard and templates, with a fake
//! [`SensorBackend`] in `AppState.sensors` that records every call: the list with its expiry
//! markers and the gateway's state, enrolment and renewal showing the one-time token once and
//! never in a URL, revocation only when confirmed, names refused before the backend is asked,
//! backend errors as plain sentences, and who may see the page. The real daemon behind the
//! page is exercised by `crates/kawal/tests/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test loudly"
)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode, header};
use kawal_api::sensors::{SensorBackend, SensorError};
use kawal_api::{AppState, Backend, DeviceFacts, Settings};
use kawal_audit::{AuditLog, AuditOptions, FileAnchorStore, SystemClock};
use kawal_auth::accounts::{Directory, DirectoryConfig};
use kawal_auth::login::Authenticator;
use kawal_auth::penalty::{PenaltyPolicy, SourcePenalties};
use kawal_auth::roles::Role;
use kawal_crypto::keys::{AuditSigning, KeyHierarchy, KeyVersion, Session};
use kawal_crypto::password::Argon2Params;
use kawal_crypto::root::RootSecret;
use kawal_crypto::secret::SecretString;
use kawal_store::{Sharing, Store};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const UID: &str = "KWL-TEST-0001";
const DAY: i64 = 86_400;
const TOKEN: &str = "kst_0123456789abcdef0123456789abcdef";

/// A password the policy accepts for `user` (not containing the name).
fn pw(user: &str) -> String {
    let n = user.len() * 7 + usize::from(user.as_bytes()[0] % 10);
    format!("copper heron {n} walks past quiet amber lanterns")
}

/// The sensor backend the daemon would provide, answering from fixed data.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    fail: Mutex<Option<SensorError>>,
    no_token: Mutex<bool>,
}

impl Fake {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn note(&self, call: String) -> Result<(), SensorError> {
        self.calls.lock().unwrap().push(call);
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn fail_with(&self, e: Option<SensorError>) {
        *self.fail.lock().unwrap() = e;
    }
    fn token(&self) -> Value {
        if *self.no_token.lock().unwrap() {
            json!({ "expires_at": now() + DAY })
        } else {
            json!({ "token": TOKEN, "expires_at": now() + DAY })
        }
    }
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

impl SensorBackend for Fake {
    fn list(&self) -> Result<Value, SensorError> {
        let n = now();
        Ok(json!({ "sensors": [
            { "uid": "boiler-1", "role": "sensor", "state": "active", "serial": "5a0f33",
              "not_after": n + 200 * DAY, "last_seen": n - 30 },
            { "uid": "boiler-2", "role": "sensor", "state": "active", "serial": "5a0f34",
              "not_after": n + 20 * DAY },
            { "uid": "boiler-3", "role": "sensor", "state": "active", "serial": "5a0f35",
              "not_after": n + 3 * DAY },
            { "uid": "boiler-4", "role": "sensor", "state": "active", "serial": "5a0f36",
              "not_after": n - DAY },
            { "uid": "reader-1", "role": "reader", "state": "pending" },
        ]}))
    }
    fn show(&self, name: &str) -> Result<Value, SensorError> {
        self.note(format!("show {name}"))?;
        Ok(json!({}))
    }
    fn enroll(&self, name: &str, role: Option<&str>, actor: &str) -> Result<Value, SensorError> {
        self.note(format!("enroll {name} {} {actor}", role.unwrap_or("-")))?;
        Ok(self.token())
    }
    fn revoke(&self, name: &str, actor: &str) -> Result<Value, SensorError> {
        self.note(format!("revoke {name} {actor}"))?;
        Ok(json!({ "serial": "5a0f33" }))
    }
    fn renew(&self, name: &str, actor: &str) -> Result<Value, SensorError> {
        self.note(format!("renew {name} {actor}"))?;
        Ok(self.token())
    }
    fn sign_csr(&self, name: &str, _csr: &str, actor: &str) -> Result<Value, SensorError> {
        self.note(format!("sign {name} {actor}"))?;
        Ok(json!({}))
    }
    fn ca_pem(&self) -> Result<String, SensorError> {
        Ok(String::new())
    }
    fn crl_pem(&self) -> Result<String, SensorError> {
        Ok(String::new())
    }
    fn est_enroll(&self, _: &str, _: &[u8], _: IpAddr) -> Result<Vec<u8>, SensorError> {
        Err(SensorError::Refused)
    }
    fn est_reenroll(&self, _: &[u8], _: &[u8], _: IpAddr) -> Result<Vec<u8>, SensorError> {
        Err(SensorError::Refused)
    }
    fn est_cacerts(&self) -> Result<Vec<u8>, SensorError> {
        Ok(Vec::new())
    }
    fn pkcs7(&self, der: &[u8]) -> Vec<u8> {
        der.to_vec()
    }
    fn gateway(&self) -> Value {
        json!({
            "connections": 2,
            "queue": { "used": 17, "capacity": 1000 },
            "bridge": { "state": "connected", "upstream": "mqtts://upstream.example:8883" },
            "recent": [
                { "uid": "boiler-1", "topic": "kawal/boiler-1/up/temp", "size": 12,
                  "at": now(), "payload": "dG9wLXNlY3JldC1wYXlsb2Fk" },
            ],
        })
    }
}

/// Health and report for the dashboard; not under test here.
struct Device;

impl Backend for Device {
    fn health(&self) -> Value {
        json!({})
    }
    fn report(&self) -> Result<kawal_compliance::Report, String> {
        Err("not in this test".into())
    }
    fn verify_log(&self) -> Result<Result<String, String>, String> {
        Ok(Ok("intact".into()))
    }
    fn platform(&self) -> Value {
        json!({})
    }
    fn verify_integrity(&self, _actor: &str) -> Result<Value, kawal_api::platform::VerifyError> {
        Err(kawal_api::platform::VerifyError::Refused(
            "not in this test".into(),
        ))
    }
}

/// A logged-in browser: its cookie and the CSRF token its forms carry.
struct Browser {
    cookie: String,
    csrf: String,
}

/// An answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

struct Console {
    _tmp: tempfile::TempDir,
    router: Router,
    fake: Arc<Fake>,
    rt: tokio::runtime::Runtime,
}

impl Console {
    /// A console over a real store, directory and audit log; with the fake gateway if
    /// `gateway`. Accounts: `admin`, `op1` (operator), `au1` (auditor), passwords changed.
    fn start(gateway: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let keys = Arc::new(KeyHierarchy::new(RootSecret::generate().unwrap()));
        let store = Arc::new(
            Store::create(
                &tmp.path().join("store.redb"),
                Arc::clone(&keys),
                Sharing::Exclusive,
            )
            .unwrap(),
        );
        let directory = Arc::new(Directory::new(
            store,
            DirectoryConfig {
                argon2: Argon2Params::TEST,
                ..DirectoryConfig::new(UID)
            },
        ));
        let t0 = u64::try_from(now()).unwrap();
        for (user, role) in [
            ("admin", Role::Admin),
            ("op1", Role::Operator),
            ("au1", Role::Auditor),
        ] {
            let initial = SecretString::new(format!("tamarind dunes {}", pw(user)));
            directory.add(user, Some(role), &initial, t0).unwrap();
            directory
                .change_password(user, &SecretString::new(pw(user)), t0)
                .unwrap();
        }
        let kv = KeyVersion::new(1).unwrap();
        let audit = AuditLog::open(
            tmp.path(),
            UID,
            Arc::new(keys.signing::<AuditSigning>(&kv).unwrap()),
            Arc::new(FileAnchorStore::new(tmp.path().join("anchor.json"))),
            Arc::new(SystemClock::new()),
            AuditOptions::default(),
        )
        .unwrap();
        let settings = Settings {
            verify_workers: 2,
            ..Settings::default()
        };
        let state = Arc::new(AppState::new(
            Arc::clone(&directory),
            Arc::new(Authenticator::new(directory).unwrap()),
            keys.mac::<Session>(&kv).unwrap(),
            SourcePenalties::new(PenaltyPolicy::default()),
            Arc::new(audit),
            Arc::new(Device),
            settings,
            DeviceFacts {
                uid: UID.into(),
                product: "kawal test".into(),
                dev: false,
                data_dir: tmp.path().to_path_buf(),
            },
        ));
        let fake = Arc::new(Fake::default());
        if gateway {
            let backend: Arc<dyn SensorBackend> = fake.clone();
            assert!(state.sensors.set(backend).is_ok());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Self {
            _tmp: tmp,
            router: kawal_api::router(state),
            fake,
            rt,
        }
    }

    fn send(&self, req: Request<Body>) -> Answer {
        self.rt.block_on(async {
            let res = self.router.clone().oneshot(req).await.unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            Answer {
                status,
                headers,
                body: String::from_utf8(bytes.to_vec()).unwrap(),
            }
        })
    }

    fn log_in(&self, user: &str) -> Browser {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/login")
            .header(header::HOST, "gw.test:8443")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({ "username": user, "password": pw(user) }).to_string(),
            ))
            .unwrap();
        let a = self.send(req);
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let cookie = a.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let v: Value = serde_json::from_str(&a.body).unwrap();
        Browser {
            cookie,
            csrf: v["csrf_token"].as_str().unwrap().to_owned(),
        }
    }

    fn get(&self, b: &Browser, path: &str) -> Answer {
        self.send(
            Request::builder()
                .uri(path)
                .header(header::HOST, "gw.test:8443")
                .header(header::COOKIE, &b.cookie)
                .body(Body::empty())
                .unwrap(),
        )
    }

    /// Posts a form as the console's own page would (with the CSRF field).
    fn post(&self, b: &Browser, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("csrf", &b.csrf);
        for (k, v) in fields {
            form.append_pair(k, v);
        }
        self.post_raw(b, path, form.finish())
    }

    fn post_raw(&self, b: &Browser, path: &str, body: String) -> Answer {
        self.send(
            Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::HOST, "gw.test:8443")
                .header(header::ORIGIN, "https://gw.test:8443")
                .header("sec-fetch-site", "same-origin")
                .header(header::COOKIE, &b.cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
    }
}

/// Every URL the page names (links, forms, scripts, styles).
fn urls(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "action=\"", "src=\""] {
        for rest in html.split(attr).skip(1) {
            out.push(rest.split('"').next().unwrap().to_owned());
        }
    }
    out
}

fn no_store(a: &Answer) {
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    assert!(a.headers.get(header::LOCATION).is_none());
}

/// G045: AU-1-10, DS-2-1
/// The page lists every sensor with role, state, serial, expiry (marked at 30 days, 7 days
/// and past the end, in words as well as colour), last seen, `-` for what is missing; and the
/// gateway's live state with the recent telemetry, never a payload.
#[test]
fn the_page_lists_certificates_with_expiry_markers_and_the_gateway_state() {
    let c = Console::start(true);
    let op = c.log_in("op1");
    let a = c.get(&op, "/sensors");
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    no_store(&a);
    // The rest of the sensor's table row, after its name.
    let row = |uid: &str| {
        let after = a.body.split(&format!("<td>{uid}</td>")).nth(1).unwrap();
        after.split("</tr>").next().unwrap().to_owned()
    };
    let r1 = row("boiler-1");
    assert!(r1.contains("5a0f33") && r1.contains("active"), "{r1}");
    assert!(
        !r1.contains("class=\"expiry"),
        "no marker far from expiry: {r1}"
    );
    assert!(r1.contains(" UTC</td>"), "last seen shown: {r1}");
    assert!(row("boiler-2").contains("<span class=\"expiry warn-30d\">20 days left</span>"));
    assert!(row("boiler-3").contains("<span class=\"expiry warn-7d\">3 days left</span>"));
    assert!(row("boiler-4").contains("<span class=\"expiry expired\">expired</span>"));
    let r5 = row("reader-1");
    assert!(r5.contains("<td class=\"serial\">-</td>"), "{r5}");
    assert!(r5.contains("reader") && r5.contains("pending"), "{r5}");
    // The operator may act: renew and a confirmed revoke per sensor, and the enrol form.
    assert!(a.body.contains("action=\"/sensors/boiler-1\""));
    assert!(a.body.contains("name=\"confirm\" value=\"yes\" required"));
    assert!(
        a.body
            .contains("I understand the sensor is disconnected now")
    );
    assert!(a.body.contains("id=\"enrol-form\""));
    assert!(a.body.contains("<option value=\"reader\">reader</option>"));
    assert!(a.body.contains("href=\"/sensors\" aria-current=\"page\""));
    assert!(a.body.contains("id=\"sensors-refresh\""));
    // The gateway's live state.
    assert!(
        a.body
            .contains("<th scope=\"row\">connections</th><td>2</td>")
    );
    assert!(
        a.body
            .contains("<th scope=\"row\">capacity</th><td>1000</td>")
    );
    assert!(a.body.contains("mqtts://upstream.example:8883"));
    assert!(
        a.body
            .contains("<td class=\"topic\">kawal/boiler-1/up/temp</td><td>12 B</td>")
    );
    assert!(
        !a.body.contains("dG9wLXNlY3JldC1wYXlsb2Fk"),
        "a payload is shown"
    );
    assert!(!a.body.contains("<script>") && !a.body.contains(" style="));
    assert!(c.fake.calls().is_empty(), "reading changes nothing");
}

/// G045: AU-1-9, AU-1-10
/// Enrolling shows the one-time token once, on the answer page itself (no redirect, no URL
/// holds it, not cached), with the EST instructions; the backend is asked as the operator;
/// the next page load does not show it again.
#[test]
fn enrolling_shows_the_token_once_and_never_in_a_url() {
    let c = Console::start(true);
    let op = c.log_in("op1");
    let a = c.post(&op, "/sensors", &[("name", "boiler-7"), ("role", "reader")]);
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    no_store(&a);
    assert_eq!(c.fake.calls(), ["enroll boiler-7 reader op1"]);
    assert_eq!(a.body.matches(TOKEN).count(), 1, "{}", a.body);
    assert!(a.body.contains(&format!(
        "<code class=\"token\" id=\"sensor-token\">{TOKEN}</code>"
    )));
    assert!(urls(&a.body).iter().all(|u| !u.contains(TOKEN)));
    assert!(a.body.contains("shown <strong>once</strong>"));
    assert!(
        a.body
            .contains("kawal sensor est-enroll --url https://gw.test:8443 --ca gateway-ca.pem")
    );
    assert!(a.body.contains("--name boiler-7 --token-stdin"));
    assert!(
        a.body
            .contains("https://gw.test:8443/.well-known/est/simpleenroll")
    );
    let again = c.get(&op, "/sensors");
    assert!(!again.body.contains(TOKEN));
    assert!(!again.body.contains("id=\"sensor-issued\""));

    // An answer without a token is an internal error, not an empty token.
    *c.fake.no_token.lock().unwrap() = true;
    let a = c.post(&op, "/sensors", &[("name", "boiler-8"), ("role", "sensor")]);
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!a.body.contains("id=\"sensor-token\""));
}

/// G045: AU-1-10
/// Names that break the API's rule, in the form or the path, are refused with the rule
/// before the backend is asked, and shown back escaped.
#[test]
fn bad_sensor_names_are_refused_before_the_backend_is_asked() {
    let c = Console::start(true);
    let op = c.log_in("op1");
    let long = "x".repeat(65);
    for name in ["", "-lead", &long, "a b", "a/b", "<script>x</script>", "é"] {
        let a = c.post(&op, "/sensors", &[("name", name), ("role", "sensor")]);
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name:?}");
        assert!(a.body.contains("does not start with"), "{name:?}");
        assert!(!a.body.contains("<script>x"), "reflected unescaped");
    }
    for path in [
        "/sensors/-lead",
        "/sensors/a%20b",
        "/sensors/%3Cb%3E",
        "/sensors/a%2Fb",
    ] {
        let a = c.post(&op, path, &[("action", "renew")]);
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(a.body.contains("does not start with"), "{path}");
    }
    let a = c.post(&op, "/sensors", &[("name", "ok-name"), ("role", "x y")]);
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = c.post(&op, "/sensors", &[("role", "sensor")]);
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = c.post(&op, "/sensors/boiler-1", &[("action", "explode")]);
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(c.fake.calls().is_empty(), "{:?}", c.fake.calls());
}

/// G045: AU-1-10
/// Revoking needs the confirmation box (no script); once confirmed the backend revokes as the
/// operator and the browser is sent back to the list. Renewing shows a new one-time token.
#[test]
fn revoking_needs_the_confirmation_and_renewing_shows_a_new_token() {
    let c = Console::start(true);
    let op = c.log_in("op1");
    let a = c.post(&op, "/sensors/boiler-1", &[("action", "revoke")]);
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("Nothing was revoked"), "{}", a.body);
    let a = c.post(
        &op,
        "/sensors/boiler-1",
        &[("action", "revoke"), ("confirm", "on")],
    );
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(c.fake.calls().is_empty());

    let a = c.post(
        &op,
        "/sensors/boiler-1",
        &[("action", "revoke"), ("confirm", "yes")],
    );
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.headers[header::LOCATION], "/sensors?done=revoke");
    assert_eq!(c.fake.calls(), ["revoke boiler-1 op1"]);
    let a = c.get(&op, "/sensors?done=revoke");
    assert!(a.body.contains("live connections were dropped"));

    let a = c.post(&op, "/sensors/boiler-2", &[("action", "renew")]);
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    no_store(&a);
    assert!(a.body.contains("Sensor boiler-2 renewed"));
    assert_eq!(a.body.matches(TOKEN).count(), 1);
    assert_eq!(
        c.fake.calls(),
        ["revoke boiler-1 op1", "renew boiler-2 op1"]
    );
}

/// G045: AU-1-10
/// Backend errors are plain sentences with a fitting status: the backend's reason where it is
/// meant for people, a fixed sentence for internal errors (no detail, no debug output).
#[test]
fn backend_errors_become_plain_messages() {
    let c = Console::start(true);
    let op = c.log_in("op1");
    let cases = [
        (
            SensorError::NotFound,
            StatusCode::NOT_FOUND,
            "No such sensor.",
        ),
        (
            SensorError::Conflict("the sensor is already revoked".into()),
            StatusCode::CONFLICT,
            "Not possible now: the sensor is already revoked",
        ),
        (
            SensorError::Invalid("unknown role <x>".into()),
            StatusCode::BAD_REQUEST,
            "Not accepted: unknown role &#60;x&#62;",
        ),
        (
            SensorError::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            "The gateway could not complete this (internal error).",
        ),
    ];
    for (e, status, text) in cases {
        c.fake.fail_with(Some(e.clone()));
        for a in [
            c.post(&op, "/sensors", &[("name", "boiler-9"), ("role", "sensor")]),
            c.post(&op, "/sensors/boiler-9", &[("action", "renew")]),
            c.post(
                &op,
                "/sensors/boiler-9",
                &[("action", "revoke"), ("confirm", "yes")],
            ),
        ] {
            assert_eq!(a.status, status, "{e:?}");
            assert!(a.body.contains(text), "{e:?}: {}", a.body);
            assert!(a.body.contains("id=\"sensor-errors\""));
            assert!(!a.body.contains("Internal") && !a.body.contains("SensorError"));
            assert!(!a.body.contains(TOKEN));
        }
    }
    // A refused enrolment keeps the typed name for another try.
    assert!(
        c.post(&op, "/sensors", &[("name", "boiler-9"), ("role", "sensor")])
            .body
            .contains("value=\"boiler-9\"")
    );
}

/// G045: AU-1-10
/// Without the gateway the page says so plainly (and still answers); changes get 503.
#[test]
fn without_the_gateway_the_page_says_it_is_not_running() {
    let c = Console::start(false);
    let op = c.log_in("op1");
    let a = c.get(&op, "/sensors");
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("id=\"gateway-not-running\""));
    assert!(!a.body.contains("id=\"sensor-table\""));
    assert!(!a.body.contains("id=\"gateway-state\""));
    for (path, fields) in [
        ("/sensors", &[("name", "boiler-1"), ("role", "sensor")][..]),
        ("/sensors/boiler-1", &[("action", "renew")][..]),
        (
            "/sensors/boiler-1",
            &[("action", "revoke"), ("confirm", "yes")][..],
        ),
    ] {
        let a = c.post(&op, path, fields);
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(a.body.contains("The gateway is not running"), "{path}");
    }
}

/// G045: AU-1-5, AU-1-10
/// The page and the nav link are for roles with devices-read; the changes need
/// devices-manage and the form's CSRF token (the guard refuses before the handler runs).
#[test]
fn only_roles_with_device_privileges_see_or_change_sensors() {
    let c = Console::start(true);
    let au = c.log_in("au1");
    let a = c.get(&au, "/audit");
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        !a.body.contains("href=\"/sensors\""),
        "auditor nav offers Sensors"
    );
    assert_eq!(c.get(&au, "/sensors").status, StatusCode::FORBIDDEN);
    let a = c.post(&au, "/sensors", &[("name", "boiler-1"), ("role", "sensor")]);
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = c.post(&au, "/sensors/boiler-1", &[("action", "renew")]);
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    let admin = c.log_in("admin");
    let a = c.get(&admin, "/accounts");
    assert!(a.body.contains("<a href=\"/sensors\">Sensors</a>"));
    let a = c.get(&admin, "/sensors");
    assert_eq!(a.status, StatusCode::OK);

    let op = c.log_in("op1");
    let a = c.post_raw(&op, "/sensors/boiler-1", "action=renew".into());
    assert_eq!(a.status, StatusCode::FORBIDDEN, "no CSRF field");
    let a = c.post_raw(
        &op,
        "/sensors/boiler-1",
        format!("csrf={}&action=renew", "0".repeat(64)),
    );
    assert_eq!(a.status, StatusCode::FORBIDDEN, "wrong CSRF field");
    assert!(c.fake.calls().is_empty());
}
