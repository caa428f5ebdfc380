//! Accounts and authentication: the password rules, roles, lockout and sessions as plain
//! functions and state machines, and the account directory that keeps accounts and login
//! tallies in the encrypted store.
//!
//! - [`policy`]: the password rules of G045 AU-1-8 in the manner of NIST SP 800-63B.
//! - [`roles`]: roles and the privileges they grant (AU-1-5, AU-1-6).
//! - [`accounts`]: the account directory over the store: add, remove, roles, passwords and
//!   their history, privileged accounts kept apart (AU-1-1, AU-1-2, AU-1-5, AU-1-6, AU-2-1).
//! - [`lockout`]: the per-account lockout state machine of AU-1-3.
//! - [`login`]: password checks with one Argon2id run and one answer for every failure
//!   (AU-1-3, AU-2-3).
//! - [`penalty`]: per-source-address penalties for failed logins (AU-1-3).
//! - [`session`]: session IDs, time-outs and one admin session at a time (DS-3-1, DS-3-2, AU-1-7).
//!
//! Nothing here touches the network: the HTTPS API wires these to clients. The store I/O is in
//! [`accounts`] only.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod lockout;
pub mod login;
pub mod penalty;
pub mod policy;
pub mod roles;
pub mod session;
