//! Network services (G045 PL-3-1): every listening socket is allowed by the policy, or a
//! finding. Well-known insecure services are named and rated high; other unexpected listeners
//! medium; listeners bound to loopback only low (or allowed, by policy), and enforce leaves
//! them alone: they cannot be reached from the network, and a local resolver or broker may be
//! part of the device's own function.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::owners::{self, Owner};
use super::procnet::{self, Proto};
use super::{Assessment, Control, Finding, FindingKind, Fix, Policy, Severity};
use crate::SysRoot;

/// Well-known insecure services: protocol, port, name. Cleartext logins, unauthenticated file
/// transfer, discovery and management protocols that G045 PL-3-1 names, and plain-text
/// variants of what kawal offers over TLS.
pub const INSECURE: [(Proto, u16, &str); 14] = [
    (Proto::Tcp, 20, "FTP data (cleartext file transfer)"),
    (Proto::Tcp, 21, "FTP (cleartext file transfer and login)"),
    (Proto::Tcp, 23, "Telnet (cleartext remote login)"),
    (Proto::Udp, 69, "TFTP (unauthenticated file transfer)"),
    (Proto::Tcp, 80, "plain HTTP (no TLS)"),
    (Proto::Udp, 161, "SNMP (community-string management)"),
    (Proto::Udp, 162, "SNMP trap"),
    (Proto::Tcp, 512, "rexec (cleartext remote execution)"),
    (Proto::Tcp, 513, "rlogin (cleartext remote login)"),
    (Proto::Tcp, 514, "rsh (cleartext remote shell)"),
    (Proto::Tcp, 1883, "plain MQTT (no TLS)"),
    (Proto::Udp, 1900, "UPnP/SSDP (device discovery)"),
    (Proto::Tcp, 8080, "plain HTTP (no TLS)"),
    (Proto::Udp, 5353, "mDNS (device discovery)"),
];

/// How a listener was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Named in `allowed-listeners`.
    Allowed,
    /// Bound to loopback only, and loopback listeners are allowed.
    AllowedLoopback,
    /// Reported as a finding.
    Finding,
}

/// A listening socket, its owner and how it was judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Listener {
    /// The protocol.
    pub proto: Proto,
    /// The local address.
    pub addr: IpAddr,
    /// The local port.
    pub port: u16,
    /// The owning user ID.
    pub uid: u32,
    /// The socket inode.
    pub inode: u64,
    /// Who holds it.
    pub owner: Owner,
    /// The well-known insecure service on this port, if any.
    pub service: Option<String>,
    /// How it was judged.
    pub verdict: Verdict,
}

impl Listener {
    /// `"tcp 0.0.0.0:23"`, `"udp [::]:161"`.
    pub fn subject(&self) -> String {
        format!("{} {}", self.proto, SocketAddr::new(self.addr, self.port))
    }

    /// Whether it accepts traffic from loopback only.
    pub fn loopback_only(&self) -> bool {
        self.addr.to_canonical().is_loopback()
    }
}

/// The insecure service name for a protocol and port.
pub fn insecure_service(proto: Proto, port: u16) -> Option<&'static str> {
    INSECURE
        .iter()
        .find(|(p, n, _)| *p == proto && *n == port)
        .map(|(_, _, name)| *name)
}

/// Reads the listeners under `root` and adds them, and their findings, to `a`.
pub(super) fn assess(root: &SysRoot, policy: &Policy, a: &mut Assessment) {
    let (sockets, errors) = procnet::read_all(root);
    for e in errors {
        a.error(e);
    }
    let inodes: BTreeSet<u64> = sockets.iter().map(|s| s.inode).collect();
    let scan = match owners::scan(root, &inodes) {
        Ok(scan) => scan,
        Err(e) => {
            a.error(e);
            owners::Scan::default()
        }
    };
    if !scan.unreadable.is_empty() {
        a.evidence(format!(
            "descriptors of {} process(es) were not readable; their sockets have no known owner",
            scan.unreadable.len()
        ));
    }
    let own_pid = std::process::id();
    for s in sockets {
        let mut l = Listener {
            proto: s.proto,
            addr: s.addr,
            port: s.port,
            uid: s.uid,
            inode: s.inode,
            owner: scan.owner(s.inode),
            service: insecure_service(s.proto, s.port).map(str::to_owned),
            verdict: Verdict::Finding,
        };
        if let Some(spec) = policy
            .allowed_listeners
            .iter()
            .find(|spec| spec.matches(s.proto, s.addr, s.port))
        {
            l.verdict = Verdict::Allowed;
            let mut line = format!("{} allowed by policy ({spec})", l.subject());
            if let Some(service) = &l.service {
                line.push_str(&format!(", although it is {service}"));
            }
            a.evidence(line);
        } else if l.loopback_only() && !policy.loopback_listeners.forbids() {
            l.verdict = Verdict::AllowedLoopback;
            a.evidence(format!("{} loopback only, allowed by policy", l.subject()));
        } else {
            a.finding(finding(&l, own_pid));
        }
        a.listeners.push(l);
    }
}

fn finding(l: &Listener, own_pid: u32) -> Finding {
    let owner = describe_owner(&l.owner);
    let (kind, severity, what) = match (&l.service, l.loopback_only()) {
        (service, true) => (
            FindingKind::LoopbackListener,
            Severity::Low,
            match service {
                Some(s) => format!("{s}, loopback only"),
                None => "unexpected listener, loopback only".to_owned(),
            },
        ),
        (Some(s), false) => (FindingKind::InsecureService, Severity::High, s.clone()),
        (None, false) => (
            FindingKind::UnexpectedListener,
            Severity::Medium,
            "unexpected listener".to_owned(),
        ),
    };
    let units = l.owner.units();
    let ours = l.owner.processes().iter().any(|p| p.pid == own_pid);
    let (fix, manual) = if kind == FindingKind::LoopbackListener {
        (
            None,
            Some("stop the service, or set loopback-listeners = \"allow\"".to_owned()),
        )
    } else if ours {
        (
            None,
            Some("kawal itself listens here: add it to allowed-listeners or change kawal's configuration".to_owned()),
        )
    } else if units.is_empty() {
        let how = match &l.owner {
            Owner::Unknown { .. } => {
                "identify the owner (assess as root) and disable it".to_owned()
            }
            Owner::Known { processes } if processes.iter().any(|p| p.pid == 1) => {
                "socket-activated by systemd: disable and mask the .socket unit".to_owned()
            }
            Owner::Known { .. } => {
                "not in a system unit: disable it where it is started".to_owned()
            }
        };
        (None, Some(how))
    } else {
        (Some(Fix::StopAndMask { units }), None)
    };
    Finding {
        control: Control::Pl31,
        kind,
        severity,
        subject: l.subject(),
        detail: format!("{what}; {owner}"),
        fix,
        manual,
    }
}

fn describe_owner(owner: &Owner) -> String {
    match owner {
        Owner::Unknown { reason } => reason.clone(),
        Owner::Known { processes } => {
            let list: Vec<String> = processes
                .iter()
                .map(|p| match &p.unit {
                    Some(u) => format!("{} (pid {}, {u})", p.comm, p.pid),
                    None => format!("{} (pid {})", p.comm, p.pid),
                })
                .collect();
            format!("held by {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PL-3-1
    #[test]
    fn the_insecure_services_g045_names_are_known() {
        assert!(
            insecure_service(Proto::Tcp, 23)
                .unwrap()
                .starts_with("Telnet")
        );
        assert!(insecure_service(Proto::Tcp, 21).unwrap().starts_with("FTP"));
        assert!(
            insecure_service(Proto::Udp, 1900)
                .unwrap()
                .starts_with("UPnP")
        );
        assert!(
            insecure_service(Proto::Udp, 161)
                .unwrap()
                .starts_with("SNMP")
        );
        assert!(
            insecure_service(Proto::Udp, 69)
                .unwrap()
                .starts_with("TFTP")
        );
        // syslog over UDP shares 514 with rsh; only TCP 514 is rsh.
        assert_eq!(insecure_service(Proto::Udp, 514), None);
        assert_eq!(insecure_service(Proto::Tcp, 8443), None);
    }
}
