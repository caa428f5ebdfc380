//! The HTTPS management API and web console (G045 AU-1-2, AU-1-5..7, AU-2-2, AU-2-3, DS-3-1,
//! DS-3-2, PL-1-4, PL-2-1, PL-3-1, PL-3-2).
//!
//! - [`tls`]: the rustls server configuration (TLS 1.3, TLS 1.2 with ECDHE + AEAD only).
//! - [`server`]: the accept loop: connection cap, handshake and header time-outs, size limits.
//! - [`routes`]: the route table, the single source of truth for who may call what.
//! - [`guard`]: authentication, CSRF, forced password change, privilege, re-authentication.
//! - [`api`] and [`console`]: the JSON API and the server-rendered console.
//! - [`flow`]: login, password change and re-authentication shared by both.
//! - [`sensors`]: the operator's sensor routes and the EST enrolment subset.
//! - [`platform`]: integrity, services and interfaces, tamper and log forwarding; the
//!   integrity check on demand.
//! - [`update`]: signed updates: state, check, apply and rollback.
//! - [`pool`]: the bounded Argon2id worker pool.
#![forbid(unsafe_code)]

pub mod api;
pub mod console;
pub mod flow;
pub mod guard;
pub mod headers;
pub mod openapi;
pub mod platform;
pub mod pool;
pub mod reply;
pub mod routes;
pub mod sensors;
pub mod server;
pub mod state;
pub mod tls;
pub mod update;

pub use routes::{ROUTES, router};
pub use state::{AppState, Backend, DeviceFacts, Principal, Settings};
