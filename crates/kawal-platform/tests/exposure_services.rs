//! Unnecessary network services are found, named, traced to their owner and switched off
//! (G045 PL-3-1), on a fake `/proc` and a scratch root.

#[path = "exposure_fixture.rs"]
mod fixture;

use fixture::{ESTABLISHED, Tree};
use kawal_platform::exposure::owners::Owner;
use kawal_platform::exposure::procnet::Proto;
use kawal_platform::exposure::services::Verdict;
use kawal_platform::exposure::{
    ActionKind, Assessment, Control, Finding, FindingKind, Fix, Outcome, Policy,
    RecordingUnitControl, Rule, Severity, UnitCall, assess, enforce,
};

fn pl31(a: &Assessment) -> Vec<&Finding> {
    a.findings_for(Control::Pl31).collect()
}

#[allow(clippy::panic, reason = "test helper")]
fn finding<'a>(a: &'a Assessment, subject: &str) -> &'a Finding {
    a.findings
        .iter()
        .find(|f| f.subject == subject)
        .unwrap_or_else(|| panic!("no finding for {subject}: {:#?}", a.findings))
}

fn enforcing() -> Policy {
    Policy {
        enforce: true,
        ..Policy::default()
    }
}

/// G045: PL-3-1
#[test]
fn telnetd_on_23_is_a_high_finding_naming_its_owner_and_unit() {
    let t = Tree::new();
    t.tcp_listen("0.0.0.0:23", 1001).process(
        42,
        "telnetd",
        Some("inetutils-telnetd.service"),
        &[1001],
    );
    let a = assess(&t.root, &Policy::default());
    assert!(a.errors.is_empty(), "{:?}", a.errors);

    let f = finding(&a, "tcp 0.0.0.0:23");
    assert_eq!(
        (f.control, f.kind, f.severity),
        (Control::Pl31, FindingKind::InsecureService, Severity::High)
    );
    assert!(f.detail.starts_with("Telnet"), "{}", f.detail);
    assert!(
        f.detail
            .contains("telnetd (pid 42, inetutils-telnetd.service)"),
        "{}",
        f.detail
    );
    match &f.fix {
        Some(Fix::StopAndMask { units }) => {
            assert_eq!(units[0].as_str(), "inetutils-telnetd.service");
        }
        other => panic!("{other:?}"),
    }

    let l = &a.listeners[0];
    assert_eq!(
        (l.proto, l.port, l.verdict),
        (Proto::Tcp, 23, Verdict::Finding)
    );
    let p = &l.owner.processes()[0];
    assert_eq!(
        (p.pid, p.comm.as_str(), p.cmdline.as_str()),
        (42, "telnetd", "/usr/sbin/telnetd -d")
    );
    assert_eq!(
        p.unit.as_ref().unwrap().as_str(),
        "inetutils-telnetd.service"
    );
}

/// G045: PL-3-1
#[test]
fn the_api_and_mqtts_ports_are_allowed_on_ipv4_and_ipv6() {
    let t = Tree::new();
    t.tcp_listen("0.0.0.0:8443", 1)
        .tcp_listen("[::]:8883", 2)
        .process(7, "kawal", Some("kawal.service"), &[1, 2]);
    let a = assess(&t.root, &Policy::default());
    assert!(pl31(&a).is_empty(), "{:#?}", a.findings);
    assert_eq!(a.listeners.len(), 2);
    assert!(a.listeners.iter().all(|l| l.verdict == Verdict::Allowed));
    assert!(
        a.evidence
            .iter()
            .any(|e| e == "tcp [::]:8883 allowed by policy (tcp/8883)"),
        "{:?}",
        a.evidence
    );
}

/// G045: PL-3-1
#[test]
fn ipv6_listeners_are_parsed_and_judged() {
    let t = Tree::new();
    t.tcp_listen("[::]:2323", 10)
        .tcp_listen("[2001:db8::7]:21", 11)
        .socket(Proto::Tcp, "[2001:db8::7]:40000", ESTABLISHED, 12)
        .process(50, "backdoor", Some("backdoor.service"), &[10]);
    let a = assess(&t.root, &Policy::default());
    assert_eq!(
        a.listeners.len(),
        2,
        "the established connection is not a listener"
    );
    let f = finding(&a, "tcp [::]:2323");
    assert_eq!(
        (f.kind, f.severity),
        (FindingKind::UnexpectedListener, Severity::Medium)
    );
    let ftp = finding(&a, "tcp [2001:db8::7]:21");
    assert_eq!(ftp.kind, FindingKind::InsecureService);
    assert!(ftp.detail.starts_with("FTP"));
}

/// G045: PL-3-1
#[test]
fn snmp_tftp_and_ssdp_over_udp_are_named() {
    let t = Tree::new();
    t.udp_bound("0.0.0.0:161", 20)
        .udp_bound("[::]:1900", 21)
        .udp_bound("0.0.0.0:69", 22)
        .process(60, "snmpd", Some("snmpd.service"), &[20]);
    let a = assess(&t.root, &Policy::default());
    let snmp = finding(&a, "udp 0.0.0.0:161");
    assert_eq!(
        (snmp.kind, snmp.severity),
        (FindingKind::InsecureService, Severity::High)
    );
    assert!(
        snmp.detail.starts_with("SNMP") && snmp.detail.contains("snmpd (pid 60, snmpd.service)")
    );
    assert!(finding(&a, "udp [::]:1900").detail.starts_with("UPnP/SSDP"));
    assert!(finding(&a, "udp 0.0.0.0:69").detail.starts_with("TFTP"));
}

/// G045: PL-3-1
#[test]
fn loopback_listeners_are_low_and_can_be_allowed() {
    let t = Tree::new();
    t.tcp_listen("127.0.0.1:1883", 30)
        .tcp_listen("[::1]:9000", 31)
        .process(70, "mosquitto", Some("mosquitto.service"), &[30]);
    let a = assess(&t.root, &Policy::default());
    let mqtt = finding(&a, "tcp 127.0.0.1:1883");
    assert_eq!(
        (mqtt.kind, mqtt.severity),
        (FindingKind::LoopbackListener, Severity::Low)
    );
    assert!(
        mqtt.detail
            .starts_with("plain MQTT (no TLS), loopback only"),
        "{}",
        mqtt.detail
    );
    assert!(
        mqtt.fix.is_none(),
        "enforce leaves loopback listeners alone"
    );
    assert_eq!(
        finding(&a, "tcp [::1]:9000").kind,
        FindingKind::LoopbackListener
    );

    let allow = Policy {
        loopback_listeners: Rule::Allow,
        ..Policy::default()
    };
    let a = assess(&t.root, &allow);
    assert!(pl31(&a).is_empty(), "{:#?}", a.findings);
    assert!(
        a.listeners
            .iter()
            .all(|l| l.verdict == Verdict::AllowedLoopback)
    );
}

/// G045: PL-3-1
#[test]
fn a_malformed_socket_table_is_an_error_for_that_line_not_a_panic() {
    let t = Tree::new();
    t.tcp_listen("0.0.0.0:23", 1);
    let good = t.read("/proc/net/tcp");
    for bad in [
        "   1: 00000000:0017 00000000:0000 0A",
        "   1: 00000000:00ZZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5 1",
        "   1: 00000000:0017 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 -5 1",
        "\u{0}\u{ff}",
    ] {
        t.file("/proc/net/tcp", &format!("{good}{bad}\n"));
        let a = assess(&t.root, &Policy::default());
        assert_eq!(a.errors.len(), 1, "{bad:?}: {:?}", a.errors);
        assert!(
            a.errors[0].starts_with("/proc/net/tcp line 3: "),
            "{}",
            a.errors[0]
        );
        assert!(!a.passed());
    }
    // Each table stands on its own: a bad one does not hide the others' listeners.
    t.file("/proc/net/udp6", "not a header\n");
    t.udp_bound("0.0.0.0:161", 2);
    let a = assess(&t.root, &Policy::default());
    assert_eq!(a.errors.len(), 2, "{:?}", a.errors);
    assert!(
        a.errors[1].starts_with("/proc/net/udp6 line 1: missing"),
        "{:?}",
        a.errors
    );
    assert_eq!(
        finding(&a, "udp 0.0.0.0:161").kind,
        FindingKind::InsecureService
    );
}

/// G045: PL-3-1
#[test]
fn a_socket_held_only_by_an_unreadable_process_has_an_unknown_owner() {
    let t = Tree::new();
    t.tcp_listen("0.0.0.0:2323", 40)
        .tcp_listen("0.0.0.0:23", 41)
        .unreadable_process(80, "hidden")
        .process(42, "telnetd", Some("inetutils-telnetd.service"), &[41]);
    let a = assess(&t.root, &Policy::default());
    assert!(a.errors.is_empty(), "{:?}", a.errors);
    let l = a.listeners.iter().find(|l| l.port == 2323).unwrap();
    match &l.owner {
        Owner::Unknown { reason } => assert!(reason.starts_with("owner unknown"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let f = finding(&a, "tcp 0.0.0.0:2323");
    assert!(f.detail.contains("owner unknown"), "{}", f.detail);
    assert!(f.fix.is_none() && f.manual.is_some());
    // The readable process is still traced.
    assert_eq!(
        a.listeners
            .iter()
            .find(|l| l.port == 23)
            .unwrap()
            .owner
            .processes()[0]
            .pid,
        42
    );
}

/// G045: PL-3-1
#[test]
fn enforce_masks_and_stops_the_offending_units_but_never_kawals_own() {
    let t = Tree::new();
    t.tcp_listen("0.0.0.0:23", 1)
        .udp_bound("0.0.0.0:161", 2)
        .tcp_listen("0.0.0.0:9443", 3)
        .udp_bound("0.0.0.0:68", 4)
        .process(42, "telnetd", Some("inetutils-telnetd.service"), &[1])
        .process(43, "snmpd", Some("snmpd.service"), &[2])
        .process(44, "kawal", Some("kawal.service"), &[3])
        .process(
            45,
            "systemd-network",
            Some("systemd-networkd.service"),
            &[4],
        );
    let units = RecordingUnitControl::default();
    let actions = enforce(&t.root, &enforcing(), &units);

    for unit in ["inetutils-telnetd.service", "snmpd.service"] {
        assert_eq!(
            t.link_target(&format!("/etc/systemd/system/{unit}"))
                .as_deref(),
            Some("/dev/null")
        );
    }
    assert_eq!(
        units.calls()[0],
        UnitCall::DaemonReload,
        "masks take effect before stops"
    );
    assert_eq!(
        units.stopped(),
        ["inetutils-telnetd.service", "snmpd.service"]
    );
    for never in ["kawal.service", "systemd-networkd.service"] {
        assert!(
            !t.exists(&format!("/etc/systemd/system/{never}")),
            "{never} masked"
        );
        assert!(
            !units.stopped().iter().any(|u| u == never),
            "{never} stopped"
        );
        let skipped: Vec<_> = actions.iter().filter(|a| a.target == never).collect();
        assert_eq!(skipped.len(), 2, "{never}: {actions:#?}");
        assert!(
            skipped
                .iter()
                .all(|a| matches!(a.outcome, Outcome::Skipped { .. }))
        );
    }
    let stop = actions
        .iter()
        .find(|a| a.kind == ActionKind::StopUnit && a.target == "snmpd.service")
        .unwrap();
    assert_eq!(
        (stop.control, &stop.outcome),
        (Control::Pl31, &Outcome::Done)
    );

    // A second run changes nothing on disk and reports so.
    let again = RecordingUnitControl::default();
    let actions = enforce(&t.root, &enforcing(), &again);
    let masks: Vec<_> = actions
        .iter()
        .filter(|a| a.kind == ActionKind::MaskUnit)
        .collect();
    assert!(
        masks.iter().all(|a| a.outcome != Outcome::Done),
        "{masks:#?}"
    );
    assert!(!again.calls().contains(&UnitCall::DaemonReload));
}

/// G045: PL-3-1
#[test]
fn enforce_does_nothing_unless_the_policy_says_so() {
    let t = Tree::new();
    t.tcp_listen("0.0.0.0:23", 1)
        .process(42, "telnetd", Some("inetutils-telnetd.service"), &[1]);
    let units = RecordingUnitControl::default();
    assert!(enforce(&t.root, &Policy::default(), &units).is_empty());
    assert!(units.calls().is_empty());
    assert!(!t.exists("/etc/systemd/system/inetutils-telnetd.service"));
}

/// G045: PL-3-1
#[test]
fn enforce_does_not_replace_a_unit_file_and_then_does_not_stop_it() {
    let t = Tree::new();
    t.tcp_listen("0.0.0.0:21", 1)
        .process(42, "vsftpd", Some("vsftpd.service"), &[1])
        .file(
            "/etc/systemd/system/vsftpd.service",
            "[Service]\nExecStart=/usr/sbin/vsftpd\n",
        );
    let units = RecordingUnitControl::default();
    let actions = enforce(&t.root, &enforcing(), &units);
    let mask = actions
        .iter()
        .find(|a| a.kind == ActionKind::MaskUnit)
        .unwrap();
    assert!(
        matches!(&mask.outcome, Outcome::Failed { reason } if reason.contains("not replaced")),
        "{mask:?}"
    );
    assert!(units.stopped().is_empty());
    assert!(
        t.read("/etc/systemd/system/vsftpd.service")
            .starts_with("[Service]")
    );
}

/// G045: PL-3-1
#[test]
fn the_assessment_serialises_for_the_api() {
    let t = Tree::new();
    t.tcp_listen("0.0.0.0:23", 1)
        .process(42, "telnetd", Some("inetutils-telnetd.service"), &[1]);
    let a = assess(&t.root, &Policy::default());
    let json = serde_json::to_value(&a).unwrap();
    let f = &json["findings"][0];
    assert_eq!(f["control"], "PL-3-1");
    assert_eq!(f["kind"], "insecure-service");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["fix"]["kind"], "stop-and-mask");
    assert_eq!(json["listeners"][0]["owner"]["owner"], "known");
    assert_eq!(
        json["listeners"][0]["owner"]["processes"][0]["unit"],
        "inetutils-telnetd.service"
    );
    let back: Assessment = serde_json::from_value(json).unwrap();
    assert_eq!(back, a);
}
