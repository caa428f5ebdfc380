//! The kawal binary.
#![forbid(unsafe_code)]
fn main() {}
