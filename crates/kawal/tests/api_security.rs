//! The management API attacked through the real daemon: every route with every role and
//! method, the OpenAPI document against the router, CSRF and cross-site requests, bad input,
//! plaintext passwords at rest, session take-over, time-out and rotation, lockout and source
//! penalties, and the audit events each of these leaves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test: a failure should stop the test loudly"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::gateway::*;
use kawal_api::routes::{Access, Kind, ROUTES, Route};
use kawal_auth::roles::Role;
use reqwest::Method;
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::{Value, json};

const ADMIN_PW: &str = "Granite-falcon-orchard-2719";
const MISSING: &str = "nosuchuser";
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// A fresh client logged in as `user`.
fn login(gw: &Gateway, user: &str, password: &str) -> Api {
    let mut api = gw.client();
    let r = api.login(user, password);
    assert_eq!(r.status(), StatusCode::OK, "login {user}");
    api
}

/// Adds `name` with `role` and initial password `initial` (admin re-authenticates).
fn add_account(admin: &mut Api, admin_pw: &str, name: &str, role: &str, initial: &str) {
    let proof = admin.reauth(admin_pw);
    let r = admin.post_reauth(
        "/api/v1/accounts",
        &json!({ "username": name, "role": role, "password": initial }),
        &proof,
    );
    let status = r.status();
    assert_eq!(status, StatusCode::CREATED, "{}", r.text().unwrap());
}

/// Changes the own password; keeps the new session and CSRF token.
fn change_password(api: &mut Api, current: &str, new: &str) {
    let r = api.post(
        "/api/v1/password",
        &json!({ "current": current, "new": new }),
    );
    let status = r.status();
    let v: Value = r.json().unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    api.csrf = v["csrf_token"].as_str().map(str::to_owned);
}

/// An account with `role`, its password changed to `pw`, logged in.
fn ready_user(gw: &Gateway, admin: &mut Api, name: &str, role: Role, pw: &str) -> Api {
    let initial = "Initial-meadow-lantern-5823";
    add_account(admin, ADMIN_PW, name, role.as_str(), initial);
    let mut api = login(gw, name, initial);
    change_password(&mut api, initial, pw);
    api
}

fn body(r: Response) -> (StatusCode, Value) {
    let s = r.status();
    let text = r.text().unwrap_or_default();
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn no_panic(gw: &Gateway) {
    let log = gw.daemon_log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// 1. Role × route × method.

/// Who makes a request in the matrix.
struct Caller {
    name: &'static str,
    user: String,
    role: Option<Role>,
    password: String,
    api: Api,
}

impl Caller {
    fn allowed(&self, route: &Route) -> bool {
        match self.role {
            None => route.access == Access::Public,
            Some(r) => route.allows(r),
        }
    }
}

fn send(api: &mut Api, method: &Method, route: Option<&Route>, path: &str) -> Response {
    let b = api.request(method.clone(), path);
    let b = match (method, route.map(|r| r.kind)) {
        (&Method::GET, _) => b,
        (_, Some(Kind::Page)) => b
            .header("content-type", "application/x-www-form-urlencoded")
            .body(""),
        _ => b.json(&json!({})),
    };
    api.send(b)
}

fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// One cell of the matrix.
fn check_cell(c: &mut Caller, method: &Method, path: &'static str) {
    let route = ROUTES
        .iter()
        .find(|r| r.path == path && r.method == *method);
    let concrete = path.replace("{name}", MISSING);
    let mut proof = None;
    if let (Some(r), Some(_)) = (route, c.role)
        && r.reauth
        && r.kind == Kind::Api
        && c.allowed(r)
    {
        let pw = c.password.clone();
        proof = Some(c.api.reauth(&pw));
    }
    let r = match &proof {
        Some(p) => {
            let b = c
                .api
                .request(method.clone(), &concrete)
                .header("x-kawal-reauth", p)
                .json(&json!({}));
            c.api.send(b)
        }
        None => send(&mut c.api, method, route, &concrete),
    };
    let status = r.status();
    let to = location(&r);
    let cell = format!("{} {method} {concrete} -> {status} {to}", c.name);
    assert!(!status.is_server_error(), "{cell}");
    match route {
        None => assert!(
            matches!(status.as_u16(), 404 | 405),
            "method not in the table: {cell}"
        ),
        Some(route) if c.allowed(route) => {
            // EST checks its own credential (a token or a sensor certificate): none here.
            let own_401 = route.authenticates_itself() && status.as_u16() == 401;
            assert!(
                own_401 || !matches!(status.as_u16(), 401 | 403),
                "allowed but refused: {cell}"
            );
            if route.access != Access::Public && !path.ends_with("/logout") {
                assert!(
                    !to.starts_with("/login"),
                    "allowed but sent to login: {cell}"
                );
            }
        }
        Some(route) => match (c.role, route.kind) {
            (None, Kind::Api) => assert_eq!(status, StatusCode::UNAUTHORIZED, "{cell}"),
            (None, Kind::Page) => {
                assert!(
                    status.is_redirection() && to.starts_with("/login"),
                    "{cell}"
                );
            }
            (Some(_), _) => assert_eq!(status, StatusCode::FORBIDDEN, "{cell}"),
        },
    }
}

/// G045: AU-1-2, AU-1-5, AU-1-6
/// Every route with every role and every method: what the table allows answers, what it
/// refuses is 401 (no session) or 403, and methods it does not list are 404/405, never 2xx.
#[test]
fn every_route_answers_every_role_as_the_table_says() {
    let gw = Gateway::start();
    let mut admin = gw.admin_ready(ADMIN_PW);
    let mut callers = vec![Caller {
        name: "unauthenticated",
        user: String::new(),
        role: None,
        password: String::new(),
        api: gw.client(),
    }];
    for (name, role) in [
        ("op1", Role::Operator),
        ("up1", Role::Updater),
        ("au1", Role::Auditor),
    ] {
        let pw = format!("Matrix-{}-copper-kettle-64", role.as_str());
        let api = ready_user(&gw, &mut admin, name, role, &pw);
        callers.push(Caller {
            name: role.as_str(),
            user: name.to_owned(),
            role: Some(role),
            password: pw,
            api,
        });
    }
    callers.push(Caller {
        name: "admin",
        user: "admin".into(),
        role: Some(Role::Admin),
        password: ADMIN_PW.into(),
        api: admin,
    });

    let mut paths: Vec<&'static str> = Vec::new();
    for r in ROUTES {
        if !paths.contains(&r.path) {
            paths.push(r.path);
        }
    }
    let is_logout = |p: &str| p.ends_with("/logout");
    let mut cells = 0;
    for c in &mut callers {
        for path in paths.iter().filter(|p| !is_logout(p)) {
            for m in &METHODS {
                check_cell(c, m, path);
                cells += 1;
            }
        }
        // Logging out ends the session: each logout cell gets a fresh one.
        for path in paths.iter().filter(|p| is_logout(p)) {
            for m in &METHODS {
                if c.role.is_some() {
                    c.api = login(&gw, &c.user, &c.password);
                }
                check_cell(c, m, path);
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 5 * METHODS.len() * paths.len());
    assert!(!gw.events("access.denied").is_empty());
    no_panic(&gw);
}

// ---------------------------------------------------------------------------------------------
// 2. The OpenAPI document against the router.

fn documented_statuses(doc: &Value) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let mut out = BTreeMap::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let codes = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse::<u16>().unwrap())
                .collect();
            out.insert((method.to_ascii_uppercase(), path.clone()), codes);
        }
    }
    out
}

/// G045: AU-1-2
/// The served OpenAPI document lists exactly the API routes and methods of the table with
/// each route's documented statuses, and every documented operation is routed (not 404/405).
#[test]
fn the_served_openapi_document_matches_the_router() {
    let gw = Gateway::start();
    let mut admin = gw.admin_ready(ADMIN_PW);
    let (status, doc) = body(admin.get("/api/v1/openapi.json"));
    assert_eq!(status, StatusCode::OK);
    let documented = documented_statuses(&doc);
    let mut table = BTreeMap::new();
    for r in ROUTES.iter().filter(|r| r.kind == Kind::Api) {
        let mut codes: BTreeSet<u16> = r.errors.iter().copied().collect();
        codes.insert(r.ok_status());
        table.insert((r.method.as_str().to_owned(), r.path.to_owned()), codes);
    }
    assert_eq!(documented, table);
    // Nothing under /api is served that is not documented.
    for r in ROUTES {
        assert_eq!(
            r.path.starts_with("/api/") || r.path.starts_with("/.well-known/est/"),
            r.kind == Kind::Api,
            "{r:?} is served under /api but is not an API route"
        );
    }
    for (method, path) in documented.keys() {
        if path.ends_with("/logout") {
            continue;
        }
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let concrete = path.replace("{name}", MISSING);
        let b = admin.request(m, &concrete);
        let b = if method == "GET" {
            b
        } else {
            b.json(&json!({}))
        };
        let s = admin.send(b).status();
        assert!(
            s != StatusCode::METHOD_NOT_ALLOWED
                && (s != StatusCode::NOT_FOUND || path.contains("{name}")),
            "{method} {path} is documented but not routed: {s}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. CSRF and cross-site requests.

/// G045: DS-3-1
/// A state change with a valid cookie but no or a wrong CSRF token, a foreign Origin or a
/// cross-site fetch is refused (403) and audited; the session cookie is `__Host-`, Secure,
/// HttpOnly, SameSite=Strict, Path=/.
#[test]
fn cross_site_requests_and_missing_csrf_tokens_are_refused() {
    let gw = Gateway::start();
    let mut admin = gw.admin_ready(ADMIN_PW);
    let path = format!("/api/v1/accounts/{MISSING}/unlock");

    // The token is the only thing missing: with it, the request gets through (404).
    let csrf = admin.csrf.take().unwrap();
    let (s, v) = body(admin.post(&path, &json!({})));
    assert_eq!(s, StatusCode::FORBIDDEN, "no token: {v}");
    admin.csrf = Some("0".repeat(64));
    let (s, _) = body(admin.post(&path, &json!({})));
    assert_eq!(s, StatusCode::FORBIDDEN, "wrong token");
    admin.csrf = Some(csrf.clone());
    let (s, _) = body(admin.post(&path, &json!({})));
    assert_eq!(s, StatusCode::NOT_FOUND, "right token");
    // The console's forms: a form without the field is refused as well.
    admin.csrf = None;
    let b = admin
        .request(Method::POST, &format!("/accounts/{MISSING}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=unlock");
    assert_eq!(admin.send(b).status(), StatusCode::FORBIDDEN);
    let b = admin
        .request(Method::POST, &format!("/accounts/{MISSING}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=unlock&csrf=00");
    assert_eq!(admin.send(b).status(), StatusCode::FORBIDDEN);
    admin.csrf = Some(csrf);
    let tokens = gw
        .events("csrf.refused")
        .into_iter()
        .filter(|e| e.to_string().contains("token"))
        .count();
    assert!(tokens >= 4, "csrf.refused events: {tokens}");

    // Cross-site, even with the right token.
    let b = admin
        .request(Method::POST, &path)
        .header("origin", "https://evil.example")
        .json(&json!({}));
    assert_eq!(
        admin.send(b).status(),
        StatusCode::FORBIDDEN,
        "foreign origin"
    );
    let b = admin
        .request(Method::POST, &path)
        .header("origin", "null")
        .json(&json!({}));
    assert_eq!(admin.send(b).status(), StatusCode::FORBIDDEN, "null origin");
    let b = admin
        .request(Method::POST, &path)
        .header("sec-fetch-site", "cross-site")
        .json(&json!({}));
    assert_eq!(
        admin.send(b).status(),
        StatusCode::FORBIDDEN,
        "cross-site fetch"
    );
    let b = admin
        .request(Method::POST, &path)
        .header("sec-fetch-site", "same-site")
        .json(&json!({}));
    assert_eq!(
        admin.send(b).status(),
        StatusCode::FORBIDDEN,
        "a sibling site"
    );
    // Logging in from another site (login CSRF) is refused too.
    let b = gw
        .client()
        .http
        .post(gw.url("/login"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=admin&password={ADMIN_PW}"));
    let r = b.send().unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "cross-site login");
    assert!(r.headers().get("set-cookie").is_none());
    // The device's own origin is fine.
    let b = admin
        .request(Method::POST, &path)
        .header("origin", format!("https://localhost:{}", gw.addr.port()))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({}));
    assert_eq!(admin.send(b).status(), StatusCode::NOT_FOUND, "same origin");
    let origin = gw
        .events("csrf.refused")
        .into_iter()
        .filter(|e| e.to_string().contains("origin"))
        .count();
    assert!(origin >= 4, "csrf.refused origin events: {origin}");

    // The cookie's attributes.
    let r = gw
        .client()
        .http
        .post(gw.url("/api/v1/login"))
        .json(&json!({ "username": "admin", "password": ADMIN_PW }))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-kawal-session="), "{cookie}");
    let attrs: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    for want in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&want), "{want} missing: {cookie}");
    }
    assert!(
        !attrs
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "{cookie}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input.

/// A raw HTTP/1.1 exchange over TLS (for what reqwest refuses to send); the response text.
fn raw(gw: &Gateway, request: &[u8]) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(gw.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(gw.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request).unwrap();
    tls.flush().unwrap();
    let mut out = Vec::new();
    // The server may close without close_notify after an error; what arrived is the answer.
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Statuses seen on API routes, to hold against the OpenAPI document.
#[derive(Default)]
struct Seen(Vec<(Method, &'static str, u16)>);

impl Seen {
    fn note(&mut self, method: Method, path: &'static str, status: StatusCode) {
        self.0.push((method, path, status.as_u16()));
    }
}

/// An error answer says nothing about the parser or the server's internals.
fn generic(what: &str, status: StatusCode, v: &Value) {
    assert!(status.is_client_error(), "{what}: {status} {v}");
    assert!(
        v["error"].is_string(),
        "{what}: not a JSON error: {status} {v}"
    );
    let text = v.to_string();
    for leak in [
        "line ",
        "column",
        "serde",
        "panick",
        "axum",
        "hyper",
        "/src/",
        "Failed to",
    ] {
        assert!(
            !text.contains(leak),
            "{what}: the answer leaks {leak:?}: {text}"
        );
    }
}

/// G045: DS-3-1, AU-2-3
/// Malformed JSON, wrong content types, oversized and chunked bodies, bad UTF-8, path
/// traversal, CRLF and other header tricks, huge headers and unknown routes get a 4xx with a
/// generic message; never a 5xx; the daemon stays up and does not panic; and every status an
/// API route answered is one its OpenAPI entry lists.
#[test]
fn bad_input_gets_a_generic_4xx_and_the_daemon_survives() {
    let gw = Gateway::start();
    let mut admin = gw.admin_ready(ADMIN_PW);
    let mut seen = Seen::default();
    let http = gw.client().http;
    let login_url = gw.url("/api/v1/login");
    let post_login = |body: reqwest::blocking::Body, ct: &str| {
        http.post(&login_url)
            .header("content-type", ct)
            .body(body)
            .send()
    };

    let json_ct = "application/json";
    let cases: Vec<(&str, reqwest::blocking::Body, &str)> = vec![
        ("malformed JSON", "{\"username\":".into(), json_ct),
        ("not JSON at all", "<xml/>".into(), json_ct),
        ("wrong content type", "{}".into(), "text/plain"),
        (
            "form to the API",
            "username=a&password=b".into(),
            "application/x-www-form-urlencoded",
        ),
        ("missing fields", "{}".into(), json_ct),
        (
            "unknown field",
            r#"{"username":"a","password":"b","admin":true}"#.into(),
            json_ct,
        ),
        (
            "wrong types",
            r#"{"username":1,"password":[]}"#.into(),
            json_ct,
        ),
        (
            "bad UTF-8",
            b"{\"username\":\"\xff\xfe\",\"password\":\"x\"}"
                .to_vec()
                .into(),
            json_ct,
        ),
        (
            "NUL and lone surrogate",
            r#"{"username":"a\u0000\ud800","password":"b"}"#.into(),
            json_ct,
        ),
        ("deep nesting", "[".repeat(10_000).into(), json_ct),
        (
            "oversized (declared)",
            format!(
                "{{\"username\":\"a\",\"password\":\"{}\"}}",
                "x".repeat(70 * 1024)
            )
            .into(),
            json_ct,
        ),
        (
            "oversized (chunked)",
            reqwest::blocking::Body::new(std::io::Cursor::new(vec![b' '; 200 * 1024])),
            json_ct,
        ),
    ];
    for (what, b, ct) in cases {
        let Ok(r) = post_login(b, ct) else {
            // The server may answer 413 and close before the client has sent the whole body;
            // the client then sees a broken pipe instead. Ask again with the headers only.
            assert!(what.starts_with("oversized"), "{what}: no answer");
            continue;
        };
        let (s, v) = body(r);
        seen.note(Method::POST, "/api/v1/login", s);
        generic(what, s, &v);
    }

    // Authenticated JSON routes with bad bodies.
    for (path, route) in [
        ("/api/v1/password", "/api/v1/password"),
        ("/api/v1/reauth", "/api/v1/reauth"),
    ] {
        for raw_body in ["{", "{}", "[1]", "\"x\""] {
            let b = admin
                .request(Method::POST, path)
                .header("content-type", "application/json")
                .body(raw_body);
            let (s, v) = body(admin.send(b));
            seen.note(Method::POST, route, s);
            generic(path, s, &v);
        }
        let b = admin
            .request(Method::POST, path)
            .header("content-type", "text/plain")
            .body("{}");
        let (s, v) = body(admin.send(b));
        seen.note(Method::POST, route, s);
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
        generic(path, s, &v);
    }
    // Account routes: a bad name in the path (bad UTF-8, traversal, huge).
    for name in [
        "%ff%fe",
        "..%2f..%2fadmin",
        "a%00b",
        &"n".repeat(2000),
        "%2e%2e",
    ] {
        let path = format!("/api/v1/accounts/{name}/unlock");
        let (s, v) = body(admin.post(&path, &json!({})));
        seen.note(Method::POST, "/api/v1/accounts/{name}/unlock", s);
        generic(&path, s, &v);
        let b = admin.request(Method::DELETE, &format!("/api/v1/accounts/{name}"));
        let (s, v) = body(admin.send(b));
        seen.note(Method::DELETE, "/api/v1/accounts/{name}", s);
        generic(name, s, &v);
    }
    let proof = admin.reauth(ADMIN_PW);
    let (s, v) = body(admin.post_reauth(
        "/api/v1/accounts",
        &json!({ "username": "../etc/passwd", "password": "x" }),
        &proof,
    ));
    seen.note(Method::POST, "/api/v1/accounts", s);
    generic("bad account name", s, &v);
    let proof = admin.reauth(ADMIN_PW);
    let (s, v) = body(admin.post_reauth(
        &format!("/api/v1/accounts/{MISSING}/role"),
        &json!({ "role": "root" }),
        &proof,
    ));
    seen.note(Method::POST, "/api/v1/accounts/{name}/role", s);
    generic("bad role", s, &v);
    // Query strings.
    for q in [
        "?limit=abc",
        "?outcome=maybe",
        "?event=%ff",
        "?event=../../x",
        "?since=-1",
        "?nope=1",
        "?limit=99999999999999999999999",
    ] {
        let (s, v) = body(admin.get(&format!("/api/v1/audit/entries{q}")));
        seen.note(Method::GET, "/api/v1/audit/entries", s);
        generic(q, s, &v);
    }
    let (s, v) = body(admin.get("/api/v1/report?format=exe"));
    seen.note(Method::GET, "/api/v1/report", s);
    generic("report format", s, &v);

    // Unknown routes and methods.
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/login",
        "/api/v1/accounts/a/b/c",
        "/static/x.js",
    ] {
        let (s, v) = body(admin.get(path));
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(v, json!({ "error": "not found" }), "{path}");
    }
    let b = admin.request(Method::PUT, "/api/v1/login").json(&json!({}));
    let (s, v) = body(admin.send(b));
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    generic("PUT login", s, &v);

    // Raw requests reqwest would normalise or refuse.
    let host = format!("Host: localhost:{}\r\n", gw.addr.port());
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\n{host}Connection: close\r\n\r\n");
    for target in [
        "/static/../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e%2f%2e%2e%2fCargo.toml",
        "/static/..\\..\\etc\\passwd",
        "/api/v1/../../etc/passwd",
        "//etc/passwd",
        "/static//etc/passwd",
    ] {
        let resp = raw(&gw, get(target).as_bytes());
        let s = raw_status(&resp);
        assert!((400..500).contains(&s), "{target}: {resp}");
        assert!(!resp.contains("root:"), "{target}: {resp}");
        assert!(!resp.contains("[workspace]"), "{target}: {resp}");
    }
    // Huge headers: one large value, and very many small ones.
    let big = format!(
        "GET /api/v1/session HTTP/1.1\r\n{host}X-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let many = format!(
        "GET /api/v1/session HTTP/1.1\r\n{host}{}Connection: close\r\n\r\n",
        (0..300)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for (what, req) in [("one huge header", big), ("300 headers", many)] {
        let resp = raw(&gw, req.as_bytes());
        assert_eq!(raw_status(&resp), 431, "{what}: {resp}");
    }
    // A declared length over the limit is refused before the body is read.
    let resp = raw(
        &gw,
        format!(
            "POST /api/v1/login HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
            1024 * 1024
        )
        .as_bytes(),
    );
    assert_eq!(raw_status(&resp), 413, "{resp}");
    assert!(resp.ends_with(r#"{"error":"request too large"}"#), "{resp}");
    seen.note(Method::POST, "/api/v1/login", StatusCode::PAYLOAD_TOO_LARGE);
    let crlf = [
        // A bare CR inside a header value.
        format!(
            "GET /api/v1/session HTTP/1.1\r\n{host}X-A: a\rSet-Cookie: evil=1\r\nConnection: close\r\n\r\n"
        ),
        // A NUL in a header value.
        format!("GET /api/v1/session HTTP/1.1\r\n{host}X-A: a\0b\r\nConnection: close\r\n\r\n"),
        // Obsolete line folding.
        format!("GET /api/v1/session HTTP/1.1\r\n{host}X-A: a\r\n b\r\nConnection: close\r\n\r\n"),
        // A space before the colon.
        format!("GET /api/v1/session HTTP/1.1\r\n{host}X-A : a\r\nConnection: close\r\n\r\n"),
        // Smuggling: both a length and chunked.
        format!(
            "POST /api/v1/login HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        ),
        // A bad content length.
        format!(
            "POST /api/v1/login HTTP/1.1\r\n{host}Content-Length: -1\r\nConnection: close\r\n\r\n"
        ),
        // CRLF encoded into the target, hoping to be reflected into a header.
        get("/%0d%0aSet-Cookie:%20evil=1"),
        get("/login?ended=%0d%0aSet-Cookie:%20evil=1"),
        get("/login?ended=%3Cscript%3Ealert(1)%3C/script%3E"),
        get("/api/v1/session%0d%0aX-Injected:%201"),
        // Not HTTP at all.
        "GARBAGE\r\n\r\n".to_owned(),
        format!("GET / HTTP/9.9\r\n{host}\r\n"),
    ];
    for req in &crlf {
        let resp = raw(&gw, req.as_bytes());
        let s = raw_status(&resp);
        let head = resp
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(s == 0 || s < 500, "{req:?}: {resp}");
        assert!(!head.contains("evil=1"), "{req:?}: {resp}");
        assert!(!head.contains("x-injected"), "{req:?}: {resp}");
        assert!(
            !resp.contains("<script>alert"),
            "reflected: {req:?}: {resp}"
        );
    }
    // Bad UTF-8 and a CRLF attempt in a cookie.
    let mut req =
        format!("GET /api/v1/session HTTP/1.1\r\n{host}Cookie: __Host-kawal-session=").into_bytes();
    req.extend_from_slice(b"\xff\xfe\r\nConnection: close\r\n\r\n");
    let resp = raw(&gw, &req);
    assert_eq!(raw_status(&resp), 401, "{resp}");

    // Still alive, still the same session, no panic.
    let (s, v) = body(admin.get("/api/v1/session"));
    assert_eq!(s, StatusCode::OK, "{v}");
    no_panic(&gw);

    // Every status an API route answered is documented for it.
    let doc = kawal_api::openapi::document();
    let documented = documented_statuses(&doc);
    for (m, path, status) in &seen.0 {
        let codes = &documented[&(m.as_str().to_owned(), (*path).to_owned())];
        assert!(
            codes.contains(status),
            "{m} {path} answered {status}, which its OpenAPI entry does not list ({codes:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. No plaintext passwords.

/// G045: AU-1-1, AU-1-8
/// After logins, password changes, resets, re-authentication and failed attempts (including a
/// password typed into the user-name field) with distinctive passwords, none of them appears
/// in any file under the data folder (store, audit log, keys) or in the daemon's output.
#[test]
fn no_password_is_stored_or_logged_in_plaintext() {
    let mut gw = Gateway::start();
    let admin_new = "Canary-root-Zephyr-88417";
    let op_initial = "Canary-opinit-Walrus-55213";
    let op_new = "Canary-opnew-Heron-99302";
    let op_reset = "Canary-opreset-Ibis-44027";
    let wrong = "Canary-wrong-Otter-11779";
    let typed_as_name = "Canary-typo-Lynx-33185";
    let form_wrong = "Canary-form-Marten-60912";
    let weak_try = "Canary1";

    let mut admin = gw.admin_ready(admin_new);
    add_account(&mut admin, admin_new, "op1", "operator", op_initial);
    let mut op = login(&gw, "op1", op_initial);
    change_password(&mut op, op_initial, op_new);
    let (s, _) = body(op.post(
        "/api/v1/password",
        &json!({ "current": op_new, "new": weak_try }),
    ));
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = body(op.post(
        "/api/v1/password",
        &json!({ "current": wrong, "new": "Another-valid-Puffin-1234" }),
    ));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for user in ["op1", "admin", "ghost"] {
        let r = gw.client().login(user, wrong);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = gw.client().login(typed_as_name, wrong);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = gw
        .client()
        .http
        .post(gw.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=op1&password={form_wrong}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = admin.post("/api/v1/reauth", &json!({ "password": wrong }));
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let proof = admin.reauth(admin_new);
    let r = admin.post_reauth(
        "/api/v1/accounts/op1/password",
        &json!({ "password": op_reset }),
        &proof,
    );
    assert_eq!(r.status(), StatusCode::OK);
    let _ = login(&gw, "op1", op_reset);
    gw.stop();

    let secrets = [
        gw.admin_password.as_str(),
        admin_new,
        op_initial,
        op_new,
        op_reset,
        wrong,
        typed_as_name,
        form_wrong,
        weak_try,
    ];
    let log = gw.daemon_log();
    // The scan sees what is there: the config file and the audit log are found.
    assert!(!common::holders(gw.tmp.path(), b"argon2-memory-kib").is_empty());
    assert!(!common::holders(&gw.data, b"login.failed").is_empty());
    for s in secrets {
        assert!(!log.contains(s), "{s} in the daemon's output");
        let found = common::holders(gw.tmp.path(), s.as_bytes());
        assert!(found.is_empty(), "{s} in plaintext in {found:?}");
        let upper = s.to_ascii_uppercase();
        let lower = s.to_ascii_lowercase();
        assert!(common::holders(&gw.data, upper.as_bytes()).is_empty());
        assert!(common::holders(&gw.data, lower.as_bytes()).is_empty());
        let hexed = hex::encode(s);
        assert!(
            common::holders(&gw.data, hexed.as_bytes()).is_empty(),
            "{s} hex-encoded"
        );
    }
    assert!(!gw.events("login.failed").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. Sessions.

fn ended_reason(r: Response) -> (StatusCode, String) {
    let (s, v) = body(r);
    (s, v["session_ended"].as_str().unwrap_or("").to_owned())
}

/// G045: DS-3-2, AU-1-7
/// One admin session per account: a second login takes over and the first holder is told so
/// at its next request; both audited.
#[test]
fn a_second_admin_login_takes_over_the_session() {
    let gw = Gateway::start();
    let mut first = gw.admin_ready(ADMIN_PW);
    let mut second = login(&gw, "admin", ADMIN_PW);
    let (s, why) = ended_reason(first.get("/api/v1/session"));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        why, "superseded",
        "the first holder is told it was taken over"
    );
    assert_eq!(second.get("/api/v1/session").status(), StatusCode::OK);
    let ended = gw.events("session.ended");
    assert!(
        ended.iter().any(|e| e.to_string().contains("superseded")),
        "{ended:?}"
    );
    assert!(gw.events("session.started").len() >= 3);
}

/// G045: DS-3-2, AU-1-7
/// With `admin-concurrency = "refuse-new"` a second admin login is refused while the first
/// session lives, and the refusal is audited.
#[test]
fn refuse_new_mode_refuses_a_second_admin_login() {
    let gw = Gateway::start_with(|c| set(c, "sessions", "admin-concurrency", "refuse-new"));
    let mut first = gw.admin_ready(ADMIN_PW);
    let mut second = gw.client();
    let r = second.login("admin", ADMIN_PW);
    let (s, v) = body(r);
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(second.cookie.is_none());
    assert_eq!(first.get("/api/v1/session").status(), StatusCode::OK);
    let refused = gw.events("login.refused");
    assert!(
        refused
            .iter()
            .any(|e| e.to_string().contains("admin-session-active")),
        "{refused:?}"
    );
    // After logging out, the account may log in again.
    assert_eq!(
        first.post("/api/v1/logout", &json!({})).status(),
        StatusCode::OK
    );
    let _ = login(&gw, "admin", ADMIN_PW);
}

/// G045: DS-3-2
/// A session idle longer than the configured time-out ends: 401 saying so, and an audit event.
#[test]
fn an_idle_session_times_out() {
    let gw = Gateway::start_with(|c| set(c, "sessions", "idle-timeout-s", 2));
    let mut admin = gw.admin_ready(ADMIN_PW);
    assert_eq!(admin.get("/api/v1/session").status(), StatusCode::OK);
    std::thread::sleep(Duration::from_millis(3500));
    let (s, why) = ended_reason(admin.get("/api/v1/session"));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(why, "idle");
    let ended = gw.events("session.ended");
    assert!(
        ended.iter().any(|e| e["fields"].to_string().contains("idle")
            || e.to_string().contains("\"idle\"")),
        "{ended:?}"
    );
    // The next request is a plain "not logged in".
    assert_eq!(
        admin.get("/api/v1/session").status(),
        StatusCode::UNAUTHORIZED
    );
}

/// G045: DS-3-2, AU-1-7
/// The session ID changes at login (a planted cookie is not adopted) and at re-authentication,
/// and the old one is dead; a password change, a role change and disabling end the account's
/// other sessions.
#[test]
fn session_ids_rotate_and_account_changes_end_sessions() {
    let gw = Gateway::start();
    let mut admin = gw.admin_ready(ADMIN_PW);
    let op_pw = "Rotation-op-Pelican-7710";
    let mut op = ready_user(&gw, &mut admin, "op1", Role::Operator, op_pw);

    // Fixation: a planted cookie is replaced at login.
    let planted = "ab".repeat(32);
    let mut victim = gw.client();
    victim.cookie = Some(planted.clone());
    assert_eq!(victim.login("op1", op_pw).status(), StatusCode::OK);
    assert_ne!(victim.cookie.as_deref(), Some(planted.as_str()));
    // Two logins, two IDs.
    let other = login(&gw, "op1", op_pw);
    assert_ne!(other.cookie, victim.cookie);

    // Re-authentication rotates the ID and kills the old one.
    let before = admin.cookie.clone().unwrap();
    let _ = admin.reauth(ADMIN_PW);
    let after = admin.cookie.clone().unwrap();
    assert_ne!(before, after);
    let mut stale = gw.client();
    stale.cookie = Some(before);
    assert_eq!(
        stale.get("/api/v1/session").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(admin.get("/api/v1/session").status(), StatusCode::OK);

    // The own password change ends the other sessions and rotates this one.
    let old = op.cookie.clone().unwrap();
    let new_pw = "Rotation-op-Cormorant-8821";
    change_password(&mut op, op_pw, new_pw);
    assert_ne!(op.cookie.as_deref(), Some(old.as_str()));
    let mut stale = gw.client();
    stale.cookie = Some(old);
    assert_eq!(
        stale.get("/api/v1/session").status(),
        StatusCode::UNAUTHORIZED
    );
    let (s, why) = ended_reason(victim.get("/api/v1/session"));
    assert_eq!((s, why.as_str()), (StatusCode::UNAUTHORIZED, "revoked"));
    assert_eq!(op.get("/api/v1/session").status(), StatusCode::OK);

    // A role change by an administrator ends the sessions.
    let proof = admin.reauth(ADMIN_PW);
    let r = admin.post_reauth(
        "/api/v1/accounts/op1/role",
        &json!({ "role": "auditor" }),
        &proof,
    );
    assert_eq!(r.status(), StatusCode::OK);
    let (s, why) = ended_reason(op.get("/api/v1/session"));
    assert_eq!((s, why.as_str()), (StatusCode::UNAUTHORIZED, "revoked"));
    // The proof was single-use.
    let (s, v) = body(admin.post_reauth(
        "/api/v1/accounts/op1/role",
        &json!({ "role": "operator" }),
        &proof,
    ));
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a re-authentication proof worked twice: {v}"
    );

    // So does disabling the account.
    let mut op = login(&gw, "op1", new_pw);
    let r = admin.post("/api/v1/accounts/op1/disable", &json!({}));
    assert_eq!(r.status(), StatusCode::OK);
    let (s, _) = ended_reason(op.get("/api/v1/session"));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        gw.client().login("op1", new_pw).status(),
        StatusCode::UNAUTHORIZED
    );

    let reasons: Vec<String> = gw
        .events("session.ended")
        .iter()
        .map(ToString::to_string)
        .collect();
    for want in [
        "password-changed",
        "account.role-changed",
        "account.disabled",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "no session.ended for {want}: {reasons:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Lockout and source penalties.

/// G045: AU-1-3
/// Five failures lock the account: the right password then gets the very same answer as a
/// wrong one; the lock survives a restart; an administrator's unlock lifts it.
#[test]
fn lockout_holds_across_a_restart_until_an_admin_unlocks() {
    let mut gw = Gateway::start();
    let mut admin = gw.admin_ready(ADMIN_PW);
    let pw = "Lockout-user-Capybara-3391";
    drop(ready_user(&gw, &mut admin, "lockme", Role::Operator, pw));

    let mut wrong_body = String::new();
    for _ in 0..5 {
        let r = gw.client().login("lockme", "Not-the-password-0000");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        wrong_body = r.text().unwrap();
    }
    let r = gw.client().login("lockme", pw);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "locked");
    assert_eq!(
        r.text().unwrap(),
        wrong_body,
        "the same answer as a wrong password"
    );
    let locked = gw.events("account.locked");
    assert_eq!(locked.len(), 1, "{locked:?}");
    assert!(locked[0].to_string().contains("lockme"));

    gw.stop();
    gw.spawn();
    let r = gw.client().login("lockme", pw);
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "still locked after a restart"
    );
    assert_eq!(r.text().unwrap(), wrong_body);

    let mut admin = login(&gw, "admin", ADMIN_PW);
    let (s, v) = body(admin.post("/api/v1/accounts/lockme/unlock", &json!({})));
    assert_eq!(s, StatusCode::OK, "{v}");
    let _ = login(&gw, "lockme", pw);
    let unlocked = gw.events("account.unlocked");
    assert!(
        unlocked
            .iter()
            .any(|e| e.to_string().contains("was locked")),
        "{unlocked:?}"
    );
    no_panic(&gw);
}

/// G045: AU-1-3
/// Repeated failures from one address are penalised (429 with Retry-After) when the address is
/// not exempt; an exempt management network is never penalised.
#[test]
fn failures_from_one_address_are_penalised_unless_exempt() {
    let strict = Gateway::start_with(|c| set(c, "login", "exempt", Vec::<String>::new()));
    let mut codes = Vec::new();
    let mut retry_after = None;
    for i in 0..8 {
        let r = strict
            .client()
            .login(&format!("ghost{i}"), "Wrong-password-1");
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        codes.push(r.status().as_u16());
    }
    assert!(codes.contains(&429), "never penalised: {codes:?}");
    assert!(
        retry_after.is_some_and(|s| s.parse::<u64>().unwrap() > 0),
        "no Retry-After"
    );
    // The right password from a penalised address waits too (the penalty is per address).
    let r = strict.client().login("admin", &strict.admin_password);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let refused = strict.events("login.refused");
    assert!(
        refused
            .iter()
            .any(|e| e.to_string().contains("source-penalty")),
        "{refused:?}"
    );

    let exempt = Gateway::start();
    for i in 0..8 {
        let r = exempt
            .client()
            .login(&format!("ghost{i}"), "Wrong-password-1");
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "exempt address penalised"
        );
    }
    let r = exempt.client().login("admin", &exempt.admin_password);
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// 8. Audit events.

/// G045: AU-2-2, AU-1-3, DS-3-1, DS-3-2
/// Each security-relevant thing done through the API leaves its event: login success and
/// failure (without the password), lockout, unlock, password change, account creation and
/// role change, session start, end and take-over, CSRF refusal and privilege refusal.
#[test]
fn security_events_are_in_the_audit_log() {
    let gw = Gateway::start();
    let wrong = "Audit-wrong-Narwhal-4410";
    assert_eq!(
        gw.client().login("admin", wrong).status(),
        StatusCode::UNAUTHORIZED
    );
    let mut admin = gw.admin_ready(ADMIN_PW);
    let au_pw = "Audit-auditor-Gannet-2287";
    let mut au = ready_user(&gw, &mut admin, "au1", Role::Auditor, au_pw);
    // Privilege refusal and CSRF refusal.
    assert_eq!(
        au.post(&format!("/api/v1/accounts/{MISSING}/unlock"), &json!({}))
            .status(),
        StatusCode::FORBIDDEN
    );
    au.csrf = None;
    assert_eq!(
        au.post("/api/v1/logout", &json!({})).status(),
        StatusCode::FORBIDDEN
    );
    // Role change, lockout, unlock.
    let proof = admin.reauth(ADMIN_PW);
    let r = admin.post_reauth(
        "/api/v1/accounts/au1/role",
        &json!({ "role": "updater" }),
        &proof,
    );
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..5 {
        let _ = gw.client().login("au1", wrong);
    }
    assert_eq!(
        admin
            .post("/api/v1/accounts/au1/unlock", &json!({}))
            .status(),
        StatusCode::OK
    );
    // Session end by logout, and a take-over.
    let mut up = login(&gw, "au1", au_pw);
    assert_eq!(
        up.post("/api/v1/logout", &json!({})).status(),
        StatusCode::OK
    );
    let _second = login(&gw, "admin", ADMIN_PW);

    for name in [
        "login.succeeded",
        "login.failed",
        "account.locked",
        "account.unlocked",
        "password.changed",
        "account.created",
        "account.role-changed",
        "session.started",
        "session.ended",
        "csrf.refused",
        "access.denied",
        "reauth.succeeded",
    ] {
        assert!(!gw.events(name).is_empty(), "no {name} event");
    }
    let ended: Vec<String> = gw
        .events("session.ended")
        .iter()
        .map(ToString::to_string)
        .collect();
    for why in ["logout", "superseded", "account.role-changed"] {
        assert!(
            ended.iter().any(|e| e.contains(why)),
            "no session end for {why}"
        );
    }
    let failed = gw.events("login.failed");
    assert!(failed.len() >= 6);
    for e in &failed {
        assert!(!e.to_string().contains(wrong), "password in {e}");
    }
    let denied = gw.events("access.denied");
    assert!(
        denied
            .iter()
            .any(|e| e.to_string().contains("accounts-manage"))
    );
    let log: String = gw.log_lines().iter().map(ToString::to_string).collect();
    for pw in [wrong, ADMIN_PW, au_pw, gw.admin_password.as_str()] {
        assert!(!log.contains(pw), "a password in the audit log");
    }
}
