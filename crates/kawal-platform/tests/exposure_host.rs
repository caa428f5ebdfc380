//! The exposure assessment runs on this machine's real `/proc` and `/sys` (read-only) and
//! traces a listener the test opens to the test process (G045 PL-3-1).

use std::net::TcpListener;

use kawal_platform::SysRoot;
use kawal_platform::exposure::owners::Owner;
use kawal_platform::exposure::procnet::Proto;
use kawal_platform::exposure::{Control, FindingKind, Policy, assess};

/// G045: PL-3-1
#[test]
fn assess_on_the_host_finds_the_tests_own_loopback_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let a = assess(&SysRoot::host(), &Policy::default());
    assert!(
        !a.errors.iter().any(|e| e.starts_with("/proc/net/")),
        "the real socket tables parse: {:?}",
        a.errors
    );
    let l = a
        .listeners
        .iter()
        .find(|l| l.proto == Proto::Tcp && l.port == port && l.addr.to_string() == "127.0.0.1")
        .unwrap_or_else(|| panic!("port {port} not among {:#?}", a.listeners));
    match &l.owner {
        Owner::Known { processes } => assert!(
            processes.iter().any(|p| p.pid == std::process::id()),
            "owner {processes:?} is not this process ({})",
            std::process::id()
        ),
        Owner::Unknown { reason } => panic!("owner unknown: {reason}"),
    }
    let subject = format!("tcp 127.0.0.1:{port}");
    let f = a
        .findings_for(Control::Pl31)
        .find(|f| f.subject == subject)
        .unwrap_or_else(|| panic!("no finding for {subject}"));
    assert_eq!(f.kind, FindingKind::LoopbackListener);
    assert!(f.fix.is_none(), "enforce would leave it alone");
    serde_json::to_string(&a).unwrap();
    drop(listener);
}
