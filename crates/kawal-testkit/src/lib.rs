//! Helpers shared by the test suites of several kawal crates (a dev-dependency only; never in
//! what ships).
#![forbid(unsafe_code)]
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure should stop the test loudly"
)]

pub mod rsyslog;

/// Stops `child` the way a service manager would: SIGTERM, so it can save its state and close,
/// then SIGKILL if it has not exited within `wait`; reaps it either way.
pub fn stop_gracefully(child: &mut std::process::Child, wait: std::time::Duration) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + wait;
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.wait();
}

/// A free loopback TCP port for a server the test starts, taken below the kernel's
/// ephemeral range: a port from `bind(0)` comes from that range, and once released any
/// outgoing connection of a test running alongside may take it as its local port before the
/// server binds it ("address already in use"). Ports are spread by process and counter, and
/// one is handed out at most once per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (start, span) = (10_000u32, low.saturating_sub(10_000).max(1000));
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(start + seed.wrapping_add(n.wrapping_mul(7919)) % span)
            .expect("below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}
