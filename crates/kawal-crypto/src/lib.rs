//! kawal crypto.
#![forbid(unsafe_code)]
