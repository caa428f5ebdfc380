//! kawal platform.
#![forbid(unsafe_code)]
