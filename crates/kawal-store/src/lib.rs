//! kawal store.
#![forbid(unsafe_code)]
