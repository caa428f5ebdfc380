//! Accounts and authentication policy, as plain functions and state machines (no I/O):
//!
//! - [`policy`]: the password rules of G045 AU-1-8 in the manner of NIST SP 800-63B.
//! - [`lockout`]: the per-account lockout state machine of AU-1-3.
//! - [`session`]: session IDs, time-outs and one admin session at a time (DS-3-1, DS-3-2, AU-1-7).
//!
//! The HTTPS API and the store wire these to the network and to disk.
#![forbid(unsafe_code)]

pub mod lockout;
pub mod policy;
pub mod session;
