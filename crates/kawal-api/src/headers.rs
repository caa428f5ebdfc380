//! Security headers on every response: HSTS, a strict CSP with no inline script, no framing,
//! nosniff, and no caching of anything but the static assets.
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use http::header::{self, HeaderName};

/// The console's Content-Security-Policy: only its own scripts, styles and images; no inline
/// script or style, no framing, forms post only to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const FIXED: [(&str, &str); 8] = [
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    // same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on our own
    // form posts, which the guard must refuse as cross-site. Other sites still get nothing.
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), usb=(), serial=()",
    ),
];

/// Adds the headers. Static assets may be cached for an hour; everything else, authenticated
/// or not, is `no-store`.
pub async fn secure(req: Request, next: Next) -> Response {
    let is_static = req.uri().path().starts_with("/static/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in FIXED {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let cache = if is_static {
        "public, max-age=3600"
    } else {
        "no-store"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if !is_static {
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    res
}
