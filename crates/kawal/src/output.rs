//! The one place that writes to stdout and stderr directly (clippy bans prints elsewhere).
#![allow(clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

/// A line for the user on stdout.
pub fn line(text: &str) {
    println!("{text}");
}

/// A line on stderr (errors, prompts).
pub fn err(text: &str) {
    eprintln!("{text}");
}

/// Text on stdout without a newline (a report body), flushed.
pub fn raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
