//! kawal audit.
#![forbid(unsafe_code)]
