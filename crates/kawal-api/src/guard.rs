//! The guard in front of every route: cross-site checks, authentication (session cookie or
//! client certificate), CSRF, the forced password change, the route's privilege, and
//! re-authentication — in that order, each refusal audited. Routes are built from
//! [`crate::routes::ROUTES`], so no route exists without a row here (fail closed).
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, header};
use kawal_audit::{Event, Outcome};

use crate::reply::{self, Refusal};
use crate::routes::{Access, Kind, Route};
use crate::server::ConnInfo;
use crate::state::{AppState, Principal, Via, lock};

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const COOKIE: &str = "__Host-kawal-session";
/// The header carrying the CSRF token on API calls.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The header carrying a re-authentication proof.
pub const REAUTH_HEADER: &str = "x-kawal-reauth";
/// Largest form body the guard reads to find the CSRF field.
const FORM_LIMIT: usize = 64 * 1024;

/// The source address of a request.
pub(crate) fn peer(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnInfo>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.peer.ip())
}

/// The session token from the cookie header, if any.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A cross-site state change: an `Origin` that is not this host, or a browser saying the
/// request came from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    // Only our own pages (same-origin) or the user typing the address (none) pass; a sibling
    // site (same-site) is as foreign as any other.
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"))
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // "null" (sandboxed frames, some redirects) and a missing Host are never our origin.
    origin
        .to_str()
        .map_or(true, |o| host.is_empty() || o != format!("https://{host}"))
}

/// Enforces `route`'s row of the table, then runs the handler with the [`Principal`].
pub async fn guard(
    State((state, route)): State<(Arc<AppState>, &'static Route)>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = peer(&req);
    let refuse = |r: Refusal| reply::refusal(route.kind, r);
    let event = |name: &str, actor: &str, outcome| {
        Event::new(name, actor, outcome)
            .with("method", route.method.as_str())
            .with("route", route.path)
            .with("source", ip.to_string())
    };

    if route.changes_state() && cross_site(req.headers()) {
        state
            .record_limited(
                ip,
                "csrf.refused/origin",
                None,
                event("csrf.refused", "unknown", Outcome::Denied).with("check", "origin"),
            )
            .await;
        return refuse(Refusal::Forbidden);
    }

    let principal = match identify(&state, &req, ip, route) {
        Ok(p) if route.access == Access::Public => {
            // Public routes (login, assets) only learn who is calling; nothing to enforce.
            req.extensions_mut().insert(p);
            return next.run(req).await;
        }
        Ok(p) => p,
        Err(ended) => {
            // Idle and lifetime ends are noticed here, at the holder's next request.
            if let Some(reason @ ("idle" | "lifetime")) = ended {
                state
                    .record(
                        Event::new("session.ended", "kawal-api", Outcome::Info)
                            .with("reason", reason)
                            .with("source", ip.to_string()),
                    )
                    .await;
            }
            if route.access == Access::Public {
                return next.run(req).await;
            }
            return refuse(Refusal::Unauthenticated(ended));
        }
    };

    if let Via::Session { token, csrf } = &principal.via {
        if route.changes_state() {
            let (presented, rebuilt) = match csrf_presented(req, route.kind).await {
                Ok(v) => v,
                Err(r) => return refuse(r),
            };
            req = rebuilt;
            let ok = presented
                .as_deref()
                .is_some_and(|p| kawal_crypto::ct_eq(p.as_bytes(), csrf.as_bytes()));
            if !ok {
                state
                    .record(
                        event("csrf.refused", &principal.user, Outcome::Denied)
                            .with("check", "token"),
                    )
                    .await;
                return refuse(Refusal::Forbidden);
            }
        }
        let _ = token;
    }

    if principal.must_change && route.access != Access::Account && route.access != Access::Public {
        return refuse(Refusal::MustChangePassword);
    }
    if !route.allows(principal.role) {
        state
            .record(
                event("access.denied", &principal.user, Outcome::Denied)
                    .with("role", principal.role.as_str())
                    .with("needs", route.needs()),
            )
            .await;
        return refuse(Refusal::Forbidden);
    }
    if route.reauth && route.kind == Kind::Api {
        let proof = req
            .headers()
            .get(REAUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !take_proof(&state, proof.as_deref(), &principal.user) {
            state
                .record(
                    event("reauth.required", &principal.user, Outcome::Denied)
                        .with("presented", proof.is_some()),
                )
                .await;
            return refuse(Refusal::ReauthRequired);
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Who is calling: a verified client certificate mapped to an account, else a live session.
/// `Err(Some(why))` when the presented session has ended (the caller is told why).
fn identify(
    state: &AppState,
    req: &Request,
    ip: IpAddr,
    route: &Route,
) -> Result<Principal, Option<&'static str>> {
    let by_cert = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.client_cert_der.as_ref())
        .map(|der| hex::encode(kawal_crypto::sha256(der)))
        .and_then(|fp| {
            let user = state.settings.client_cert_accounts.get(&fp)?.clone();
            Some((user, fp))
        });
    let (user, via) = if let Some((user, fingerprint)) = by_cert {
        (user, Via::ClientCert { fingerprint })
    } else {
        let token = session_cookie(req.headers()).ok_or(None)?;
        let policy = state.settings.session;
        let touched =
            lock(&state.sessions).touch(&token, state.mono(), &state.session_key, &policy);
        match touched {
            Ok(s) => {
                let csrf = state.csrf_for(&token);
                (s.user, Via::Session { token, csrf })
            }
            Err(why) => {
                return Err(why.map(reply::ended_reason));
            }
        }
    };
    let account = match state.directory.get(&user) {
        Ok(Some(a)) if !a.disabled => a,
        _ => {
            lock(&state.sessions).revoke_user(&user, state.mono());
            return Err(Some("revoked"));
        }
    };
    let expired = state.directory.password_expired(&account, AppState::wall());
    let _ = route;
    Ok(Principal {
        user,
        role: account.role,
        must_change: account.must_change || expired,
        via,
        peer: ip,
    })
}

/// The CSRF token a state-changing request presents: the header for API calls, the `csrf`
/// field for console forms (the form body is read, bounded, and put back for the handler).
async fn csrf_presented(req: Request, kind: Kind) -> Result<(Option<String>, Request), Refusal> {
    if let Some(v) = req.headers().get(CSRF_HEADER) {
        let v = v.to_str().ok().map(str::to_owned);
        return Ok((v, req));
    }
    if kind == Kind::Api {
        return Ok((None, req));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| Refusal::TooLarge)?;
    let token = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    Ok((token, Request::from_parts(parts, Body::from(bytes))))
}

/// Consumes a re-authentication proof of `user`, if valid.
fn take_proof(state: &AppState, proof: Option<&str>, user: &str) -> bool {
    let Some(proof) = proof else { return false };
    let digest = state.digest(proof);
    let now = state.mono();
    let mut proofs = lock(&state.proofs);
    proofs.retain(|_, p| p.expires > now);
    match proofs.remove(&digest) {
        Some(p) => p.user == user,
        None => false,
    }
}
