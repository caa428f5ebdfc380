//! Unnecessary external interfaces (G045 PH-1-1) and internal ones (PH-1-2) are found, and
//! switched off where the kernel allows, on a fake `/proc`, `/sys` and `/etc`.

#[path = "exposure_fixture.rs"]
mod fixture;

use fixture::Tree;
use kawal_platform::exposure::{
    ActionKind, Assessment, Control, Finding, FindingKind, Outcome, PhysicalPolicy, Policy,
    RecordingUnitControl, Rule, Severity, UsbId, assess, enforce,
};

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

fn of_kind(a: &Assessment, kind: FindingKind) -> Vec<&Finding> {
    a.findings.iter().filter(|f| f.kind == kind).collect()
}

fn enforcing(physical: PhysicalPolicy) -> Policy {
    Policy {
        enforce: true,
        physical,
        ..Policy::default()
    }
}

/// G045: PH-1-2
#[test]
fn an_enabled_serial_getty_is_found_and_masked_on_enforce() {
    let t = Tree::new();
    t.symlink(
        "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
        "/lib/systemd/system/serial-getty@.service",
    )
    .symlink(
        "/etc/systemd/system/multi-user.target.wants/serial-getty@ttyAMA0.service",
        "/lib/systemd/system/serial-getty@.service",
    )
    .symlink(
        "/etc/systemd/system/getty.target.wants/getty@tty1.service",
        "/lib/systemd/system/getty@.service",
    );
    let a = assess(&t.root, &Policy::default());
    let logins = of_kind(&a, FindingKind::SerialLogin);
    let ttys: Vec<&str> = logins.iter().map(|f| f.subject.as_str()).collect();
    assert_eq!(ttys, ["ttyAMA0", "ttyS0"], "tty1 is not a serial line");
    assert!(
        logins
            .iter()
            .all(|f| f.control == Control::Ph12 && f.severity == Severity::High)
    );

    let units = RecordingUnitControl::default();
    let actions = enforce(&t.root, &enforcing(PhysicalPolicy::default()), &units);
    for tty in ["ttyS0", "ttyAMA0"] {
        let unit = format!("serial-getty@{tty}.service");
        assert_eq!(
            t.link_target(&format!("/etc/systemd/system/{unit}"))
                .as_deref(),
            Some("/dev/null")
        );
        assert!(units.stopped().contains(&unit), "{unit} not stopped");
    }
    assert!(
        actions
            .iter()
            .any(|a| a.kind == ActionKind::MaskUnit && a.control == Control::Ph12)
    );
    let after = assess(&t.root, &Policy::default());
    assert!(
        of_kind(&after, FindingKind::SerialLogin).is_empty(),
        "{:#?}",
        after.findings
    );
    assert!(
        after
            .evidence
            .iter()
            .any(|e| e.contains("serial-getty@ttyS0.service enabled") && e.ends_with("but masked"))
    );
}

/// G045: PH-1-2
#[test]
fn a_serial_kernel_console_needs_the_boot_loader_and_its_login_is_masked() {
    let t = Tree::new();
    t.file(
        "/proc/cmdline",
        "root=/dev/mmcblk0p2 rootwait console=ttyS0,115200n8 console=tty1\n",
    );
    let a = assess(&t.root, &Policy::default());
    let console = of_kind(&a, FindingKind::SerialConsole);
    assert_eq!(console.len(), 1);
    assert_eq!(console[0].subject, "ttyS0");
    assert!(console[0].fix.is_none());
    assert!(
        console[0]
            .manual
            .as_deref()
            .unwrap()
            .contains("boot loader"),
        "{:?}",
        console[0].manual
    );
    let login = of_kind(&a, FindingKind::SerialLogin);
    assert_eq!(login.len(), 1);
    assert!(
        login[0].detail.contains("getty generator"),
        "{}",
        login[0].detail
    );

    let units = RecordingUnitControl::default();
    enforce(&t.root, &enforcing(PhysicalPolicy::default()), &units);
    assert_eq!(units.stopped(), ["serial-getty@ttyS0.service"]);
    let after = assess(&t.root, &Policy::default());
    assert!(of_kind(&after, FindingKind::SerialLogin).is_empty());
    assert_eq!(
        of_kind(&after, FindingKind::SerialConsole).len(),
        1,
        "only the boot loader can remove it"
    );
}

/// G045: PH-1-2
#[test]
fn inittab_gettys_are_findings_for_the_operator() {
    let t = Tree::new();
    t.file(
        "/etc/inittab",
        "::sysinit:/etc/init.d/rcS\nttyS0::respawn:/sbin/getty -L ttyS0 115200 vt100\n",
    );
    let a = assess(&t.root, &Policy::default());
    let login = of_kind(&a, FindingKind::SerialLogin);
    assert_eq!(login.len(), 1);
    assert!(login[0].fix.is_none());
    assert_eq!(
        login[0].manual.as_deref(),
        Some("remove or comment out line 2 of /etc/inittab")
    );
}

/// G045: PH-1-1
#[test]
fn usb_auto_authorisation_is_switched_off_and_only_listed_devices_stay_authorised() {
    let t = Tree::new();
    t.usb_bus("usb1", "1")
        .usb_bus("usb2", "0")
        .usb_device("1-1", "0403:6001", false, "FT232R USB UART")
        .usb_device("1-2", "0781:5567", true, "Cruzer Blade")
        .usb_device("1-2.1", "046d:c077", true, "USB Optical Mouse");
    let physical = PhysicalPolicy {
        allowed_usb_devices: vec![UsbId::parse("0403:6001").unwrap()],
        ..PhysicalPolicy::default()
    };
    let policy = Policy {
        physical: physical.clone(),
        ..Policy::default()
    };
    let a = assess(&t.root, &policy);
    let auto = of_kind(&a, FindingKind::UsbAutoAuthorise);
    assert_eq!(auto.len(), 1);
    assert_eq!(
        (auto[0].subject.as_str(), auto[0].control),
        ("usb1", Control::Ph11)
    );
    let unlisted: Vec<&str> = of_kind(&a, FindingKind::UsbDeviceNotListed)
        .iter()
        .map(|f| f.subject.as_str())
        .collect();
    assert_eq!(unlisted, ["1-2", "1-2.1"]);

    let actions = enforce(
        &t.root,
        &enforcing(physical),
        &RecordingUnitControl::default(),
    );
    assert_eq!(t.read("/sys/bus/usb/devices/usb1/authorized_default"), "0");
    assert_eq!(t.read("/sys/bus/usb/devices/1-1/authorized"), "1");
    assert_eq!(t.read("/sys/bus/usb/devices/1-2/authorized"), "0");
    assert_eq!(t.read("/sys/bus/usb/devices/1-2.1/authorized"), "0");
    let usb2 = actions
        .iter()
        .find(|a| a.target.ends_with("usb2/authorized_default"))
        .unwrap();
    assert_eq!(usb2.outcome, Outcome::Unchanged);
    let deauth: Vec<&str> = actions
        .iter()
        .filter(|a| a.kind == ActionKind::DeauthoriseDevice)
        .map(|a| a.target.as_str())
        .collect();
    assert_eq!(
        deauth,
        [
            "/sys/bus/usb/devices/1-2.1/authorized",
            "/sys/bus/usb/devices/1-2/authorized"
        ],
        "devices behind a hub go first"
    );
    let after = assess(&t.root, &policy);
    assert!(of_kind(&after, FindingKind::UsbAutoAuthorise).is_empty());
    assert!(of_kind(&after, FindingKind::UsbDeviceNotListed).is_empty());
}

/// G045: PH-1-1
#[test]
fn loaded_usb_storage_is_found_and_blacklisted_on_enforce() {
    let t = Tree::new();
    t.file(
        "/proc/modules",
        "usb_storage 81920 1 uas, Live 0x0000000000000000\nuas 32768 0 - Live 0x0000000000000000\next4 999424 2 - Live 0x0\n",
    )
    .file("/etc/modprobe.d/local.conf", "blacklist uas\n");
    let a = assess(&t.root, &Policy::default());
    let storage = of_kind(&a, FindingKind::UsbStorage);
    assert_eq!(storage.len(), 2, "{storage:#?}");
    assert!(
        storage
            .iter()
            .all(|f| f.severity == Severity::Medium && f.manual.is_some())
    );

    let actions = enforce(
        &t.root,
        &enforcing(PhysicalPolicy::default()),
        &RecordingUnitControl::default(),
    );
    let write = actions
        .iter()
        .find(|a| a.kind == ActionKind::WriteBlacklist)
        .unwrap();
    assert_eq!(
        (write.target.as_str(), &write.outcome),
        ("/etc/modprobe.d/kawal.conf", &Outcome::Done)
    );
    let conf = t.read("/etc/modprobe.d/kawal.conf");
    for line in [
        "blacklist usb_storage",
        "install usb_storage /bin/false",
        "install uas /bin/false",
        "install libcomposite /bin/false",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "missing {line:?} in\n{conf}"
        );
    }

    // Still loaded until unloaded or rebooted; but no longer loadable once it is gone.
    t.file("/proc/modules", "ext4 999424 2 - Live 0x0\n");
    let after = assess(&t.root, &Policy::default());
    assert!(
        of_kind(&after, FindingKind::UsbStorage).is_empty(),
        "{:#?}",
        after.findings
    );
}

/// G045: PH-1-1
#[test]
fn unloaded_but_unblocked_usb_storage_is_a_low_finding() {
    let t = Tree::new();
    t.file("/proc/modules", "ext4 999424 2 - Live 0x0\n");
    let a = assess(&t.root, &Policy::default());
    let storage = of_kind(&a, FindingKind::UsbStorage);
    assert_eq!(storage.len(), 2);
    assert!(storage.iter().all(|f| f.severity == Severity::Low));
    let allow = Policy {
        physical: PhysicalPolicy {
            usb_storage: Rule::Allow,
            ..PhysicalPolicy::default()
        },
        ..Policy::default()
    };
    assert!(of_kind(&assess(&t.root, &allow), FindingKind::UsbStorage).is_empty());
}

/// G045: PH-1-1
#[test]
fn gadget_modules_and_configfs_gadgets_are_found() {
    let t = Tree::new();
    t.file(
        "/proc/modules",
        "usb_f_acm 16384 1 - Live 0x0\nlibcomposite 65536 1 usb_f_acm, Live 0x0\n",
    )
    .dir("/sys/kernel/config/usb_gadget/g1");
    let a = assess(&t.root, &Policy::default());
    let gadget = of_kind(&a, FindingKind::UsbGadget);
    assert_eq!(gadget.len(), 1);
    assert!(
        gadget[0].detail.contains("usb_f_acm, libcomposite") && gadget[0].detail.contains("[g1]")
    );
}

/// G045: PH-1-1
#[test]
fn an_interface_up_that_the_policy_does_not_name_is_a_finding() {
    let t = Tree::new();
    t.interface("lo", IFF_UP | IFF_LOOPBACK, "unknown", false)
        .interface("eth0", 0x1003, "up", true)
        .interface("eth1", 0x1003, "up", true)
        .interface("wlan0", 0x1002, "down", true)
        .interface("tun0", 0x1091, "unknown", false);
    let physical = PhysicalPolicy {
        allowed_interfaces: vec![kawal_platform::exposure::IfName::parse("eth0").unwrap()],
        ..PhysicalPolicy::default()
    };
    let a = assess(
        &t.root,
        &Policy {
            physical,
            ..Policy::default()
        },
    );
    let found: Vec<(&str, Severity)> = of_kind(&a, FindingKind::NetworkInterface)
        .iter()
        .map(|f| (f.subject.as_str(), f.severity))
        .collect();
    assert_eq!(found, [("eth1", Severity::Medium), ("tun0", Severity::Low)]);

    t.file("/sys/class/net/eth2/flags", "up\n");
    let a = assess(&t.root, &Policy::default());
    assert!(
        a.errors
            .iter()
            .any(|e| e.contains("/sys/class/net/eth2/flags")),
        "{:?}",
        a.errors
    );
}

/// G045: PH-1-1
#[test]
fn automount_services_are_found_and_masked_on_enforce() {
    let t = Tree::new();
    t.file("/usr/lib/systemd/system/udisks2.service", "[Service]\n")
        .symlink(
            "/etc/systemd/system/graphical.target.wants/udisks2.service",
            "/usr/lib/systemd/system/udisks2.service",
        )
        .file(
            "/etc/fstab",
            "/dev/mmcblk1p1 /media/sd vfat noauto,x-systemd.automount 0 0\n",
        );
    let a = assess(&t.root, &Policy::default());
    let subjects: Vec<&str> = of_kind(&a, FindingKind::Automount)
        .iter()
        .map(|f| f.subject.as_str())
        .collect();
    assert_eq!(subjects, ["/media/sd", "udisks2.service"]);

    let units = RecordingUnitControl::default();
    enforce(&t.root, &enforcing(PhysicalPolicy::default()), &units);
    assert_eq!(
        t.link_target("/etc/systemd/system/udisks2.service")
            .as_deref(),
        Some("/dev/null")
    );
    assert_eq!(units.stopped(), ["udisks2.service"]);
    let left: Vec<String> = of_kind(&assess(&t.root, &Policy::default()), FindingKind::Automount)
        .iter()
        .map(|f| f.subject.clone())
        .collect();
    assert_eq!(left, ["/media/sd"], "fstab is the operator's");
}

/// G045: PH-1-2
#[test]
fn debugfs_and_enabled_jtag_nodes_are_found_and_fuses_need_manual_evidence() {
    let t = Tree::new();
    t.file(
        "/proc/mounts",
        "sysfs /sys sysfs rw 0 0\ndebugfs /sys/kernel/debug debugfs rw,relatime 0 0\n",
    )
    .file("/proc/device-tree/soc/jtag@10000/status", "okay\0")
    .file("/proc/device-tree/soc/swd@20000/status", "disabled\0")
    .dir("/proc/device-tree/soc/jtag-mux@30000")
    .file("/proc/device-tree/soc/serial@40000/status", "okay\0");
    let a = assess(&t.root, &Policy::default());
    let ports: Vec<&str> = of_kind(&a, FindingKind::DebugPort)
        .iter()
        .map(|f| f.subject.as_str())
        .collect();
    assert_eq!(
        ports,
        ["/soc/jtag-mux@30000", "/soc/jtag@10000"],
        "absent status means enabled"
    );
    assert_eq!(of_kind(&a, FindingKind::Debugfs).len(), 1);
    assert!(
        a.manual
            .iter()
            .any(|m| m.control == Control::Ph12 && m.what.contains("fuses"))
    );

    let units = RecordingUnitControl::default();
    enforce(&t.root, &enforcing(PhysicalPolicy::default()), &units);
    assert_eq!(
        t.link_target("/etc/systemd/system/sys-kernel-debug.mount")
            .as_deref(),
        Some("/dev/null")
    );
    assert_eq!(units.stopped(), ["sys-kernel-debug.mount"]);
}

/// G045: PH-1-2
#[test]
fn without_a_device_tree_debug_ports_need_manual_evidence() {
    let t = Tree::new();
    let a = assess(&t.root, &Policy::default());
    assert!(of_kind(&a, FindingKind::DebugPort).is_empty());
    assert!(
        a.manual
            .iter()
            .any(|m| m.what.starts_with("no device tree is visible")),
        "{:#?}",
        a.manual
    );
}
