//! The route table: the single source of truth for what the API and console serve and who may
//! use it (G045 AU-1-2, AU-1-5, AU-1-6). The router is built from it, the guard enforces it, the
//! OpenAPI document and the role × route matrix in `docs/` are generated from it, and a test
//! walks it with every role.
use std::sync::Arc;

use axum::Router;
use axum::routing::{MethodRouter, delete, get, post};
use http::Method;
use kawal_auth::roles::{Privilege, Role};

use crate::state::AppState;
use crate::{api, console, platform, sensors, update};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, unauthenticated (login, static assets).
    Public,
    /// Any authenticated account, even one that must still change its password (change
    /// password, log out, who am I).
    Account,
    /// Accounts whose role grants this privilege, once the password is changed.
    Needs(Privilege),
}

/// What a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON API: errors are JSON, state changes need the `X-CSRF-Token` header.
    Api,
    /// Console page: errors redirect to the login or password page, forms carry `csrf`.
    Page,
}

/// One route.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path pattern (axum syntax, `{name}` for a parameter).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Sensitive: needs a fresh re-authentication (API: a single-use proof in
    /// `X-Kawal-Reauth`; console: the password typed into the form).
    pub reauth: bool,
    /// API or page.
    pub kind: Kind,
    /// One line for the OpenAPI document and the matrix.
    pub summary: &'static str,
    /// Statuses it can answer besides 200, for the OpenAPI document.
    pub errors: &'static [u16],
    /// The handler.
    pub handler: fn() -> MethodRouter<Arc<AppState>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

impl Route {
    /// Whether `role` may call it (after the password is changed).
    pub fn allows(&self, role: Role) -> bool {
        match self.access {
            Public | Account => true,
            Needs(p) => role.allows(p),
        }
    }

    /// The success status: 201 for the routes that create an account or a sensor, else 200.
    pub fn ok_status(&self) -> u16 {
        if self.method == Method::POST
            && matches!(self.path, "/api/v1/accounts" | "/api/v1/sensors")
        {
            201
        } else {
            200
        }
    }

    /// Whether its handler authenticates the caller itself (EST: a one-time token or the
    /// sensor's certificate), so the guard lets everyone through and the handler may answer
    /// 401.
    pub fn authenticates_itself(&self) -> bool {
        self.path.starts_with("/.well-known/est/simple")
    }

    /// Whether it changes state (and so needs CSRF protection).
    pub fn changes_state(&self) -> bool {
        !matches!(self.method, Method::GET | Method::HEAD)
    }

    /// The privilege column of the matrix.
    pub fn needs(&self) -> &'static str {
        match self.access {
            Public => "public",
            Account => "any account",
            Needs(p) => p.as_str(),
        }
    }
}

use Access::{Account, Needs, Public};
use Kind::{Api, Page};
use Privilege::*;

/// Login and re-authentication: a bad body (400, 413, 415, 422) as well as the one refusal.
const AUTH_ERRORS: &[u16] = &[400, 401, 403, 413, 415, 422, 429, 503];
/// The own password change checks the current password, so it can also be penalised or busy.
const PASSWORD_ERRORS: &[u16] = &[400, 401, 403, 404, 413, 415, 422, 429, 500, 503];
const READ_ERRORS: &[u16] = &[400, 401, 403, 500];
const WRITE_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 413, 415, 422, 500];
/// Sensor routes: as writes, plus 503 when the gateway is not running.
const SENSOR_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 413, 415, 422, 500, 503];
/// The integrity check on demand: 409 while another runs (or the device cannot check).
const VERIFY_ERRORS: &[u16] = &[401, 403, 409, 500];
/// Updates: refused (422), not configured, another operation or a trial in progress (409), the
/// repository unreachable (503).
const UPDATE_ERRORS: &[u16] = &[401, 403, 409, 422, 500, 503];
/// EST: a refused token or certificate is 401.
const EST_ERRORS: &[u16] = &[400, 401, 404, 409, 413, 500, 503];

macro_rules! route {
    ($m:ident $path:literal, $access:expr, $kind:expr, $reauth:expr, $errors:expr, $summary:literal, $h:expr) => {
        Route {
            method: Method::$m,
            path: $path,
            access: $access,
            reauth: $reauth,
            kind: $kind,
            summary: $summary,
            errors: $errors,
            handler: $h,
        }
    };
}

/// Every route.
pub static ROUTES: &[Route] = &[
    // API: session.
    route!(POST "/api/v1/login", Public, Api, false, AUTH_ERRORS, "Log in with user name and password; sets the session cookie", || post(api::login)),
    route!(POST "/api/v1/logout", Account, Api, false, READ_ERRORS, "End this session", || post(api::logout)),
    route!(GET "/api/v1/session", Account, Api, false, READ_ERRORS, "This session: account, role, privileges, CSRF token", || get(api::whoami)),
    route!(POST "/api/v1/password", Account, Api, false, PASSWORD_ERRORS, "Change the own password (the current one is checked)", || post(api::change_password)),
    route!(POST "/api/v1/reauth", Account, Api, false, AUTH_ERRORS, "Re-authenticate: a single-use proof for a sensitive action; the session ID changes", || post(api::reauth)),
    route!(GET "/api/v1/roles", Account, Api, false, READ_ERRORS, "Roles and the privileges they grant", || get(api::roles)),
    route!(GET "/api/v1/openapi.json", Account, Api, false, READ_ERRORS, "This document", || get(api::openapi)),
    // API: accounts.
    route!(GET "/api/v1/accounts", Needs(AccountsRead), Api, false, READ_ERRORS, "List accounts", || get(api::list_accounts)),
    route!(POST "/api/v1/accounts", Needs(AccountsManage), Api, true, WRITE_ERRORS, "Add an account (the least role unless one is given)", || post(api::add_account)),
    route!(DELETE "/api/v1/accounts/{name}", Needs(AccountsManage), Api, true, WRITE_ERRORS, "Remove an account", || delete(api::remove_account)),
    route!(POST "/api/v1/accounts/{name}/role", Needs(AccountsManage), Api, true, WRITE_ERRORS, "Change an account's role", || post(api::set_role)),
    route!(POST "/api/v1/accounts/{name}/password", Needs(AccountsManage), Api, true, WRITE_ERRORS, "Set a new initial password (the account must change it at next login)", || post(api::reset_password)),
    route!(POST "/api/v1/accounts/{name}/disable", Needs(AccountsManage), Api, false, WRITE_ERRORS, "Disable an account and end its sessions", || post(api::disable)),
    route!(POST "/api/v1/accounts/{name}/enable", Needs(AccountsManage), Api, false, WRITE_ERRORS, "Enable an account", || post(api::enable)),
    route!(POST "/api/v1/accounts/{name}/unlock", Needs(AccountsManage), Api, false, WRITE_ERRORS, "Clear an account's lockout", || post(api::unlock)),
    // API: device.
    route!(GET "/api/v1/health", Needs(HealthRead), Api, false, READ_ERRORS, "Self-test, clock, store and audit log state", || get(api::health)),
    route!(GET "/api/v1/audit/entries", Needs(LogRead), Api, false, READ_ERRORS, "Audit log entries (filters: event, since, outcome, limit)", || get(api::audit_entries)),
    route!(GET "/api/v1/audit/verify", Needs(LogRead), Api, false, READ_ERRORS, "Verify the audit log's chain and signatures", || get(api::audit_verify)),
    route!(GET "/api/v1/report", Needs(ReportRead), Api, false, READ_ERRORS, "The G045 compliance report (format: json, html, markdown)", || get(api::report)),
    route!(GET "/api/v1/platform", Needs(ReportRead), Api, false, READ_ERRORS, "Platform state in full: integrity, services and interfaces findings, tamper, log forwarding", || get(platform::show)),
    route!(POST "/api/v1/integrity/verify", Needs(ConfigManage), Api, false, VERIFY_ERRORS, "Check the installed files against the integrity manifest now (one check at a time; 409 while one runs)", || post(platform::verify)),
    route!(GET "/api/v1/update", Needs(HealthRead), Api, false, UPDATE_ERRORS, "Updates: installed version, slots, trial in progress, history", || get(update::status)),
    route!(POST "/api/v1/update/check", Needs(UpdatesApply), Api, false, UPDATE_ERRORS, "Fetch and verify the repository's signed metadata; say whether a newer bundle is offered", || post(update::check)),
    route!(POST "/api/v1/update/apply", Needs(UpdatesApply), Api, true, UPDATE_ERRORS, "Verify, download and install the offered bundle into the inactive slot and restart into it on trial", || post(update::apply)),
    route!(POST "/api/v1/update/rollback", Needs(UpdatesApply), Api, true, UPDATE_ERRORS, "Go back to the previous slot", || post(update::rollback)),
    // API: sensors.
    route!(GET "/api/v1/sensors", Needs(DevicesRead), Api, false, READ_ERRORS, "List sensors: role, state, certificate serial and expiry, last seen", || get(sensors::list)),
    route!(POST "/api/v1/sensors", Needs(DevicesManage), Api, false, SENSOR_ERRORS, "Enrol a sensor: a one-time token for EST simpleenroll, shown once", || post(sensors::enroll)),
    route!(POST "/api/v1/sensors/import", Needs(DevicesManage), Api, false, SENSOR_ERRORS, "Import a sensor certificate issued by the configured external CA (the sensor is active with it)", || post(sensors::import)),
    route!(GET "/api/v1/sensors/ca", Public, Api, false, SENSOR_ERRORS, "The sensor CA certificate (PEM)", || get(sensors::ca)),
    route!(GET "/api/v1/sensors/crl", Public, Api, false, SENSOR_ERRORS, "The sensor certificate revocation list (PEM)", || get(sensors::crl)),
    route!(GET "/api/v1/sensors/{name}", Needs(DevicesRead), Api, false, SENSOR_ERRORS, "One sensor and its certificate history", || get(sensors::show)),
    route!(POST "/api/v1/sensors/{name}/revoke", Needs(DevicesManage), Api, false, SENSOR_ERRORS, "Revoke a sensor's certificate: live connections dropped, new ones refused", || post(sensors::revoke)),
    route!(POST "/api/v1/sensors/{name}/renew", Needs(DevicesManage), Api, false, SENSOR_ERRORS, "A new one-time token so the sensor can enrol again with a new key", || post(sensors::renew)),
    route!(POST "/api/v1/sensors/{name}/csr", Needs(DevicesManage), Api, false, SENSOR_ERRORS, "Sign a CSR for an enrolled sensor (its previous certificate is revoked)", || post(sensors::sign_csr)),
    route!(GET "/api/v1/gateway", Needs(TelemetryRead), Api, false, SENSOR_ERRORS, "The gateway's live state: connections, queue, upstream bridge, recent telemetry", || get(sensors::gateway)),
    route!(GET "/.well-known/est/cacerts", Public, Api, false, SENSOR_ERRORS, "EST (RFC 7030) cacerts: the sensor CA as PKCS#7", || get(sensors::est_cacerts)),
    route!(POST "/.well-known/est/simpleenroll", Public, Api, false, EST_ERRORS, "EST simpleenroll: a certificate for a CSR, authenticated by a one-time token", || post(sensors::est_simpleenroll)),
    route!(POST "/.well-known/est/simplereenroll", Public, Api, false, EST_ERRORS, "EST simplereenroll: a new certificate, authenticated by the sensor's current certificate", || post(sensors::est_simplereenroll)),
    route!(GET "/", Public, Page, false, &[], "Home: the dashboard or the login page", || get(console::home)),
    route!(GET "/login", Public, Page, false, &[], "Login page", || get(console::login_page)),
    route!(POST "/login", Public, Page, false, &[401, 429, 503], "Log in", || post(console::login)),
    route!(POST "/logout", Account, Page, false, &[], "Log out", || post(console::logout)),
    route!(GET "/password", Account, Page, false, &[], "Change password page", || get(console::password_page)),
    route!(POST "/password", Account, Page, false, &[400], "Change password", || post(console::change_password)),
    route!(GET "/dashboard", Needs(HealthRead), Page, false, &[], "Dashboard", || get(console::dashboard)),
    route!(GET "/accounts", Needs(AccountsRead), Page, false, &[], "Accounts and roles", || get(console::accounts)),
    route!(POST "/accounts", Needs(AccountsManage), Page, true, &[400, 409], "Add an account", || post(console::add_account)),
    route!(POST "/accounts/{name}", Needs(AccountsManage), Page, true, &[400, 404, 409], "Change an account (role, disable, enable, unlock, password, remove)", || post(console::change_account)),
    route!(GET "/sensors", Needs(DevicesRead), Page, false, &[500], "Sensors: state, certificate serial and expiry, last seen; the gateway's live state", || get(console::sensors::sensors_page)),
    route!(POST "/sensors", Needs(DevicesManage), Page, false, &[400, 409, 500, 503], "Enrol a sensor: the one-time token is shown once, on the answer page", || post(console::sensors::enrol)),
    route!(POST "/sensors/{name}", Needs(DevicesManage), Page, false, &[400, 404, 409, 500, 503], "Change a sensor (revoke, confirmed; renew: a new one-time token)", || post(console::sensors::change)),
    route!(GET "/platform", Needs(ReportRead), Page, false, &[500], "Platform: integrity, services and interfaces findings, tamper, log forwarding", || get(console::platform::page)),
    route!(POST "/platform/verify", Needs(ConfigManage), Page, false, &[409, 500], "Verify integrity now", || post(console::platform::verify)),
    route!(GET "/update", Needs(HealthRead), Page, false, &[500, 503], "Updates: installed version, slots, trial, history; check, apply and roll back", || get(console::update::update_page)),
    route!(POST "/update/check", Needs(UpdatesApply), Page, false, &[409, 422, 500, 503], "Check for a newer signed update", || post(console::update::check)),
    route!(POST "/update/apply", Needs(UpdatesApply), Page, true, &[400, 403, 409, 422, 500, 503], "Apply the offered update (password in the form)", || post(console::update::apply)),
    route!(POST "/update/rollback", Needs(UpdatesApply), Page, true, &[400, 403, 409, 422, 500, 503], "Roll back to the previous slot (password in the form)", || post(console::update::rollback)),
    route!(GET "/audit", Needs(LogRead), Page, false, &[], "Audit log viewer", || get(console::audit)),
    route!(GET "/report", Needs(ReportRead), Page, false, &[], "G045 report", || get(console::report)),
    route!(GET "/static/console.css", Public, Page, false, &[], "Style sheet", || get(console::css)),
    route!(GET "/static/console.js", Public, Page, false, &[], "Script (show-password toggle)", || get(console::js)),
];

/// Builds the router from the table: each route gets the guard that enforces its row.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        let guarded = (route.handler)().route_layer(axum::middleware::from_fn_with_state(
            (Arc::clone(&state), route),
            crate::guard::guard,
        ));
        router = router.route(route.path, guarded);
    }
    router
        .fallback(crate::reply::not_found)
        .method_not_allowed_fallback(crate::reply::method_not_allowed)
        .layer(axum::middleware::from_fn(crate::headers::secure))
        .with_state(state)
}

/// The role × route matrix as Markdown (written to `docs/access-matrix.md` by a test, which
/// also fails when the checked-in copy is stale).
pub fn matrix_markdown() -> String {
    let mut out = String::from(
        "# Access matrix\n\nGenerated from the route table (`crates/kawal-api/src/routes.rs`) by \
         `KAWAL_BLESS=1 cargo test -p kawal-api --test route_matrix` (which fails when this copy \
         is stale); `crates/kawal/tests/api_security.rs` checks every cell against the running \
         daemon. `yes` = allowed, `-` = refused (403, or a redirect to the login page \
         for pages). Unauthenticated callers reach only the public routes. Every role must \
         change its pre-installed password first: until then only the routes marked `any \
         account` answer. `reauth` routes also need a fresh re-authentication.\n\n",
    );
    out.push_str("| Method | Path | Needs | Reauth | unauthenticated |");
    for r in Role::ALL {
        out.push_str(&format!(" {} |", r.as_str()));
    }
    out.push_str("\n|---|---|---|---|---|");
    for _ in Role::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for route in ROUTES {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |",
            route.method,
            route.path,
            route.needs(),
            if route.reauth { "yes" } else { "" },
            if route.access == Public { "yes" } else { "-" }
        ));
        for r in Role::ALL {
            out.push_str(if route.allows(r) { " yes |" } else { " - |" });
        }
        out.push('\n');
    }
    out.push_str("\n## Roles\n\n");
    for r in Role::ALL {
        let grants: Vec<&str> = r.grants().iter().map(|p| p.as_str()).collect();
        out.push_str(&format!(
            "- **{}**: {} — {}\n",
            r.as_str(),
            r.describe(),
            grants.join(", ")
        ));
    }
    out
}
