//! Verdicts on the controls the management API brings: accounts, roles, passwords, login
//! limits, sessions and remote management. The evidence is the settings in force, the
//! accounts and lockouts in the store, the daemon's own record of what it serves, the route
//! table compiled into this binary and the events in the log.
use std::collections::BTreeMap;

use kawal_api::routes::{Access, ROUTES};
use kawal_auth::accounts::Account;
use kawal_auth::roles::Role;
use kawal_auth::session::AdminConcurrency;
use kawal_compliance::{Finding, Verdict};

use super::FindingExt;
use crate::config::ValidConfig;
use crate::serve::ApiRecord;

/// What the access controls are judged on.
#[derive(Debug)]
pub struct AccessFacts {
    /// Where the settings came from.
    pub source: String,
    /// The settings.
    pub config: ValidConfig,
    /// The daemon's record of what it served at its last start.
    pub api: Option<ApiRecord>,
    /// Accounts locked out now.
    pub locked: Vec<String>,
}

/// Public routes a device needs: the login form and API, the home page that sends to it, and
/// the console's static files. Anything else public is a finding.
const EXPECTED_PUBLIC: &[&str] = &[
    "POST /api/v1/login",
    "GET /",
    "GET /login",
    "POST /login",
    "GET /static/console.css",
    "GET /static/console.js",
    // Sensors: the CA and CRL are public by nature, and EST enrolment authenticates in its
    // handler (a one-time token, or the sensor's current certificate).
    "GET /api/v1/sensors/ca",
    "GET /api/v1/sensors/crl",
    "GET /.well-known/est/cacerts",
    "POST /.well-known/est/simpleenroll",
    "POST /.well-known/est/simplereenroll",
];

/// The account-management functions AU-1-5 asks for, as routes.
const MANAGEMENT: &[(&str, &str, &str)] = &[
    ("add", "POST", "/api/v1/accounts"),
    ("remove", "DELETE", "/api/v1/accounts/{name}"),
    ("assign role", "POST", "/api/v1/accounts/{name}/role"),
    ("disable", "POST", "/api/v1/accounts/{name}/disable"),
    ("enable", "POST", "/api/v1/accounts/{name}/enable"),
    ("unlock", "POST", "/api/v1/accounts/{name}/unlock"),
    ("reset password", "POST", "/api/v1/accounts/{name}/password"),
];

fn count(events: &BTreeMap<String, u64>, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n}: {}", events.get(*n).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn has_route(method: &str, path: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.method.as_str() == method && r.path == path)
}

fn public_routes() -> Vec<String> {
    ROUTES
        .iter()
        .filter(|r| matches!(r.access, Access::Public))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn names(accounts: &[&Account]) -> String {
    if accounts.is_empty() {
        return "none".into();
    }
    accounts
        .iter()
        .map(|a| a.username.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn duration(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 && s >= 3600 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The findings for AU-1-1, -2, -3, -5, -6, -7, -8, AU-2-2, -3, DS-3-1, -2 and PL-3-2, in
/// catalogue order.
pub fn findings(
    accounts: &[Account],
    events: &BTreeMap<String, u64>,
    rng_proven: Option<bool>,
    a: &AccessFacts,
) -> Vec<Finding> {
    let auth = &a.config.auth;
    let settings = ("settings", a.source.clone());
    let admins: Vec<&Account> = accounts.iter().filter(|x| x.role == Role::Admin).collect();
    let initial: Vec<&Account> = accounts.iter().filter(|x| x.must_change).collect();
    let mut out = Vec::new();

    out.push(
        Finding::new("AU-1-1", if auth.history >= 1 { Verdict::Met } else { Verdict::NotMet })
            .evidence(settings.0, settings.1.clone())
            .evidence("first login", "an initial password (pre-installed or set by an admin) opens only 'change password' and 'log out' until it is changed")
            .evidence("new password", format!("must differ from the initial one and from the last {} (Argon2id verifiers kept, never the passwords)", auth.history))
            .evidence("maximum age", auth.max_age.map_or_else(|| "none".to_owned(), duration))
            .evidence("accounts still on an initial password", names(&initial))
            .evidence("events", count(events, &["password.changed", "password.change-refused", "password.reset"]))
            .reason_if(auth.history == 0, "password history is off (passwords.history = 0): a user can change back to the previous password"),
    );

    let public = public_routes();
    let unexpected: Vec<&String> = public
        .iter()
        .filter(|r| !EXPECTED_PUBLIC.contains(&r.as_str()))
        .collect();
    let ordinary = accounts.len() - admins.len();
    out.push(
        Finding::new("AU-1-2", if unexpected.is_empty() { Verdict::Met } else { Verdict::NotMet })
            .evidence("routes", format!("{} in this binary's route table; every one declares who may call it", ROUTES.len()))
            .evidence("reachable without logging in", public.join(", "))
            .evidence("everything else", "needs a session (cookie set at login) or a client certificate mapped to an account, then the route's privilege")
            .evidence("privileged accounts", format!("{} admin account(s) kept in their own table, apart from {ordinary} ordinary account(s)", admins.len()))
            .evidence("events", count(events, &["login.succeeded", "access.denied", "csrf.refused"]))
            .reason_if(!unexpected.is_empty(), &format!("routes open without authentication beyond the login: {}", unexpected.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))),
    );

    let lock = &auth.lockout;
    let loose = lock.threshold > 10 || lock.daily_cap > 1000;
    let exempt: Vec<String> = auth
        .penalty
        .exempt
        .iter()
        .map(ToString::to_string)
        .collect();
    out.push(
        Finding::new("AU-1-3", if loose { Verdict::NotMet } else { Verdict::Met })
            .evidence(settings.0, settings.1.clone())
            .evidence("account lockout", format!("{} consecutive failures within {} lock the account for {}, doubling on repeat up to {}; at most {} failures per account per 24 h; the tally is kept in the store and survives a restart", lock.threshold, duration(lock.window), duration(lock.base_lock), duration(lock.max_lock), lock.daily_cap))
            .evidence("per source address", format!("after {} free failures each failure adds {} s before that address may try again, up to {}", auth.penalty.free_failures, auth.penalty.per_failure, duration(auth.penalty.max_penalty)))
            .evidence("exempt from source penalties", if exempt.is_empty() { "none".to_owned() } else { format!("{} (account lockout still applies)", exempt.join(", ")) })
            .evidence("password checks", format!("Argon2id on {} worker(s) with a queue of {}; excess attempts are refused at once", auth.verify_workers.max(1), auth.verify_queue))
            .evidence("locked now", if a.locked.is_empty() { "none".to_owned() } else { a.locked.join(", ") })
            .evidence("recovery", "a locked admin is unlocked at the device with 'kawal recover unlock' (README)")
            .evidence("events", count(events, &["login.failed", "login.refused", "account.locked", "account.unlocked", "api.events-suppressed/count"]))
            .evidence("flood control", "refusals a source can cause at will (penalised or busy logins, cross-site requests, wrong enrolment tokens) are written one by one for the first 10 per source a minute; the rest are counted into one api.events-suppressed summary (api.events-suppressed/count above)")
            .reason_if(loose, "the lockout is configured too loosely to limit guessing (threshold above 10 or more than 1,000 failures a day)"),
    );

    let missing: Vec<&str> = MANAGEMENT
        .iter()
        .filter(|(_, m, p)| !has_route(m, p))
        .map(|(what, ..)| *what)
        .collect();
    let roles = Role::ALL
        .iter()
        .map(|r| {
            let privs: Vec<&str> = r.grants().iter().map(|p| p.as_str()).collect();
            format!("{r} ({})", privs.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let listed = accounts
        .iter()
        .map(|x| {
            format!(
                "{} ({}{})",
                x.username,
                x.role,
                if x.disabled { ", disabled" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    out.push(
        Finding::new(
            "AU-1-5",
            if missing.is_empty() && !admins.is_empty() {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        )
        .evidence(
            "functions",
            MANAGEMENT
                .iter()
                .map(|(w, ..)| *w)
                .collect::<Vec<_>>()
                .join(", "),
        )
        .evidence("roles and privileges", roles)
        .evidence("accounts", listed)
        .evidence(
            "access matrix",
            "docs/access-matrix.md, generated from the route table and checked by a test",
        )
        .evidence(
            "events",
            count(
                events,
                &[
                    "account.created",
                    "account.removed",
                    "account.role-changed",
                    "account.disabled",
                    "account.enabled",
                ],
            ),
        )
        .reason_if(
            !missing.is_empty(),
            &format!("missing functions: {}", missing.join(", ")),
        )
        .reason_if(admins.is_empty(), "no admin account can manage the others"),
    );

    let least = Role::least();
    let least_read_only = least.grants().iter().all(|p| p.is_read_only());
    out.push(
        Finding::new("AU-1-6", if least_read_only { Verdict::Met } else { Verdict::NotMet })
            .evidence("new accounts", format!("get the role '{least}' ({}) unless an admin chooses another", least.describe()))
            .evidence("roles", "each role grants only the privileges its job needs; every route names the one privilege it requires")
            .evidence("admins", format!("{} of {} account(s); the last admin cannot be removed or demoted", admins.len(), accounts.len()))
            .reason_if(!least_read_only, "the least role can change state"),
    );

    out.push(
        Finding::new("AU-1-7", Verdict::Met)
            .evidence("admin sessions", match auth.session.admin_concurrency {
                AdminConcurrency::EndPrevious => "one per admin account: a new login ends the previous session, whose holder is told why on the next request",
                AdminConcurrency::RefuseNew => "one per admin account: a new login is refused while the previous session lives",
            })
            .evidence("events", count(events, &["session.started", "session.ended", "login.refused"])),
    );

    let p = &auth.policy;
    let weak = p.min_length < 8 || p.min_score < 2;
    out.push(
        Finding::new("AU-1-8", if weak { Verdict::NotMet } else { Verdict::Met })
            .evidence(settings.0, settings.1.clone())
            .evidence("length", format!("{} to {} characters, any Unicode", p.min_length, p.max_length))
            .evidence("refused", format!("runs of more than {} equal characters, sequences longer than {} (letters, digits, keyboard rows), the user name, the device UID, {} common passwords, a strength score below {} of 4", p.max_repeat, p.max_sequence, kawal_auth::policy::common_list_len(), p.min_score))
            .evidence("on refusal", "the rule broken is named; the password is never echoed")
            .reason_if(weak, "the password rules are configured below a safe floor (fewer than 8 characters or a strength score below 2)"),
    );

    out.push(
        Finding::new("AU-2-2", Verdict::Met)
            .evidence("console", "password fields are masked (type=password); an optional toggle shows the password only while it is held")
            .evidence("CLI", "passwords are read from the terminal without echo or from standard input, never from the command line")
            .evidence("API", "passwords travel only in request bodies over TLS, never in a URL, a log or an error"),
    );

    out.push(
        Finding::new("AU-2-3", Verdict::Met)
            .evidence("one answer", "unknown user, wrong password, locked and disabled accounts all get the same status, body and timing; unknown users go through a dummy Argon2id verification")
            .evidence("the log", "records the real cause for the owner, without the password")
            .evidence("events", count(events, &["login.failed", "login.refused"])),
    );

    let s = &auth.session;
    let idle_ok = s.idle_timeout <= 1800;
    out.push(
        Finding::new(
            "DS-3-1",
            if idle_ok {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        )
        .evidence(settings.0, settings.1.clone())
        .evidence(
            "idle time-out",
            format!(
                "{} on the monotonic clock, then the user must log in again",
                duration(s.idle_timeout)
            ),
        )
        .evidence("absolute lifetime", duration(s.absolute_lifetime))
        .evidence(
            "also ended by",
            "logout, password change, role change, account disable or removal",
        )
        .evidence(
            "events",
            count(events, &["session.started", "session.ended"]),
        )
        .reason_if(!idle_ok, "the idle time-out is longer than 30 minutes"),
    );

    let rng = match rng_proven {
        Some(true) => Verdict::Met,
        _ => Verdict::NotMet,
    };
    out.push(
        Finding::new("DS-3-2", rng)
            .evidence("session IDs", "256 bits from the operating system's CSPRNG, kept server-side only as an HMAC-SHA256 under the session key")
            .evidence("renewed", "a new ID at login, at re-authentication and at a privilege change; the old one is destroyed")
            .evidence("cookie", "__Host-kawal-session; Secure; HttpOnly; SameSite=Strict; Path=/")
            .evidence("random source", match rng_proven {
                Some(true) => "the power-up RNG health check passed",
                Some(false) => "the power-up RNG health check FAILED",
                None => "no power-up self-test on record",
            })
            .reason_if(rng_proven != Some(true), "the random source is not proven by a passing power-up self-test"),
    );

    out.push(match &a.api {
        Some(r) => Finding::new("PL-3-2", Verdict::Met)
            .evidence("served since", format!("{} on {}", r.started_at, r.listen))
            .evidence("protocol", format!("HTTPS only ({}); no plain-HTTP listener", r.tls_versions.join(", ")))
            .evidence("cipher suites", r.tls_suites.join(", "))
            .evidence("key exchange", r.tls_groups.join(", "))
            .evidence("automation", if r.client_certs { format!("client certificates accepted, {} mapped to accounts", r.client_cert_accounts) } else { "client certificates off; scripts log in like people".to_owned() })
            .evidence("hardening", "security headers (HSTS, strict CSP, frame-ancestors none, nosniff, no-store), size limits, time-outs, a connection cap, CSRF tokens, origin checks"),
        None => Finding::new("PL-3-2", Verdict::Manual)
            .evidence("policy in this binary", kawal_api::tls::describe().protocol_versions.join(", "))
            .reason("the daemon has not served on this device yet: start 'kawal run' and report again to read what it serves"),
    });
    out
}
