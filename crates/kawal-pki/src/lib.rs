//! kawal pki.
#![forbid(unsafe_code)]
