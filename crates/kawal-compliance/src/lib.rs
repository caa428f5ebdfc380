//! kawal compliance.
#![forbid(unsafe_code)]
