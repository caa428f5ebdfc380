//! The exposure policy: which listeners are allowed and which interfaces must be off.
//!
//! Every value that reaches a path, a sysfs write or `systemctl` is a validated newtype, so a
//! policy that deserialised is a valid one. Every switch defaults to the safe side.
//!
//! ```toml
//! enforce = false
//! allowed-listeners = ["tcp/8443", "tcp/8883", "udp/[::1]:323"]
//! loopback-listeners = "forbid"
//! own-unit = "kawal.service"
//! protected-units = ["systemd-networkd.service", "NetworkManager.service"]
//!
//! [physical]
//! serial-login = "forbid"
//! serial-console = "forbid"
//! usb-auto-authorise = "forbid"
//! usb-storage = "forbid"
//! usb-gadget = "forbid"
//! automount = "forbid"
//! debugfs = "forbid"
//! debug-ports = "forbid"
//! allowed-interfaces = ["eth0"]
//! allowed-usb-devices = ["0403:6001"]
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::procnet::Proto;
use super::units::UnitName;
use super::{Error, Result};

/// Whether something is allowed. The default is the safe one, [`Rule::Forbid`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Report it as a finding, and switch it off on enforce where kawal can.
    #[default]
    Forbid,
    /// Unsafe unless the device needs it: not reported.
    Allow,
}

impl Rule {
    /// Whether this rule forbids.
    pub fn forbids(self) -> bool {
        self == Self::Forbid
    }
}

/// The exposure policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Policy {
    /// Apply the fixes kawal can make ([`enforce`](super::enforce)); default `false`, report
    /// only.
    pub enforce: bool,
    /// Listeners the device needs; default `tcp/8443` (management API) and `tcp/8883` (MQTT
    /// over TLS).
    pub allowed_listeners: Vec<ListenerSpec>,
    /// Whether listeners bound to loopback only are allowed; default `forbid` (reported, with
    /// low severity, and never stopped by enforce).
    pub loopback_listeners: Rule,
    /// kawal's own unit, which enforce never stops or masks; default `kawal.service`.
    pub own_unit: UnitName,
    /// Units enforce never stops or masks even when they listen where they should not (their
    /// findings are still reported); default the network managers, without which the device
    /// would lose its network.
    pub protected_units: Vec<UnitName>,
    /// External and internal interfaces.
    pub physical: PhysicalPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            enforce: false,
            allowed_listeners: vec![
                ListenerSpec::port(Proto::Tcp, 8443),
                ListenerSpec::port(Proto::Tcp, 8883),
            ],
            loopback_listeners: Rule::Forbid,
            own_unit: unit("kawal.service"),
            protected_units: [
                "systemd-networkd.service",
                "NetworkManager.service",
                "dhcpcd.service",
                "wpa_supplicant.service",
            ]
            .into_iter()
            .map(unit)
            .collect(),
            physical: PhysicalPolicy::default(),
        }
    }
}

/// A unit name known to be valid at compile time.
fn unit(name: &str) -> UnitName {
    UnitName::parse(name).unwrap_or_else(|_| unreachable_unit())
}

#[expect(
    clippy::panic,
    reason = "only reached if a constant unit name above is invalid: a bug caught by tests"
)]
fn unreachable_unit() -> UnitName {
    panic!("invalid built-in unit name")
}

/// The policy for physical interfaces (PH-1-1, PH-1-2). Every switch defaults to `forbid`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PhysicalPolicy {
    /// Login prompts on serial lines (getty units, `/etc/inittab`).
    pub serial_login: Rule,
    /// The kernel console on a serial line (`console=ttyS0` on the kernel command line).
    pub serial_console: Rule,
    /// USB buses that authorise new devices automatically (`authorized_default` not 0).
    pub usb_auto_authorise: Rule,
    /// USB mass storage (`usb_storage`, `uas`) loaded or loadable.
    pub usb_storage: Rule,
    /// USB gadget modules (`g_serial`, `g_ether`, `libcomposite`, `usb_f_*`, ...) loaded.
    pub usb_gadget: Rule,
    /// Automatic mounting of removable media (udisks2, autofs, `.automount` units).
    pub automount: Rule,
    /// debugfs mounted.
    pub debugfs: Rule,
    /// JTAG/SWD nodes enabled in the device tree.
    pub debug_ports: Rule,
    /// Network interfaces that may be up, besides loopback; default none.
    pub allowed_interfaces: Vec<IfName>,
    /// USB devices that may be attached and authorised; default none (root hubs are always
    /// allowed: they are the host controllers).
    pub allowed_usb_devices: Vec<UsbId>,
}

/// An allowed listener: `proto/port` (any local address) or `proto/ADDR:port`
/// (`tcp/127.0.0.1:9000`, `udp/[::1]:323`), with `proto` `tcp` or `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ListenerSpec {
    /// The protocol.
    pub proto: Proto,
    /// The local address, or any.
    pub addr: Option<IpAddr>,
    /// The port.
    pub port: u16,
}

impl ListenerSpec {
    /// A listener on `port` at any local address.
    pub fn port(proto: Proto, port: u16) -> Self {
        Self {
            proto,
            addr: None,
            port,
        }
    }

    /// Parses `proto/port` or `proto/ADDR:port`.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidPolicy {
            what: "listener",
            value: s.to_owned(),
            reason,
        };
        let (proto, rest) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected proto/port or proto/address:port"))?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(invalid("protocol must be tcp or udp")),
        };
        let (addr, port) = if rest.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty() {
            (
                None,
                rest.parse::<u16>()
                    .map_err(|_| invalid("port out of range"))?,
            )
        } else {
            let sa: SocketAddr = rest
                .parse()
                .map_err(|_| invalid("expected a port, IPv4:port or [IPv6]:port"))?;
            (Some(sa.ip()), sa.port())
        };
        if port == 0 {
            return Err(invalid("port 0"));
        }
        Ok(Self { proto, addr, port })
    }

    /// Whether a socket matches this spec. IPv4-mapped IPv6 addresses match their IPv4 form.
    pub fn matches(&self, proto: Proto, addr: IpAddr, port: u16) -> bool {
        self.proto == proto
            && self.port == port
            && self
                .addr
                .is_none_or(|a| a.to_canonical() == addr.to_canonical())
    }
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            None => write!(f, "{}/{}", self.proto, self.port),
            Some(addr) => write!(f, "{}/{}", self.proto, SocketAddr::new(addr, self.port)),
        }
    }
}

impl TryFrom<String> for ListenerSpec {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<ListenerSpec> for String {
    fn from(l: ListenerSpec) -> Self {
        l.to_string()
    }
}

/// A USB device identity, `vendor:product` as four lowercase hex digits each (`0403:6001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UsbId {
    /// `idVendor`.
    pub vendor: u16,
    /// `idProduct`.
    pub product: u16,
}

impl UsbId {
    /// Parses `vvvv:pppp` (hex, either case).
    pub fn parse(s: &str) -> Result<Self> {
        let hex4 = |h: &str| {
            (h.len() == 4 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u16::from_str_radix(h, 16).ok())
                .flatten()
        };
        let parsed = s
            .split_once(':')
            .and_then(|(v, p)| Some((hex4(v)?, hex4(p)?)));
        match parsed {
            Some((vendor, product)) => Ok(Self { vendor, product }),
            None => Err(Error::InvalidPolicy {
                what: "USB device",
                value: s.to_owned(),
                reason: "expected vendor:product, four hex digits each",
            }),
        }
    }
}

impl fmt::Display for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.product)
    }
}

impl TryFrom<String> for UsbId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<UsbId> for String {
    fn from(u: UsbId) -> Self {
        u.to_string()
    }
}

/// A network interface name: 1..=15 characters, no `/`, whitespace or `:`, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    /// Validates `s` as an interface name.
    pub fn parse(s: &str) -> Result<Self> {
        let ok = (1..=15).contains(&s.len())
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::InvalidPolicy {
                what: "interface name",
                value: s.to_owned(),
                reason: "1 to 15 printable characters, no '/' or ':', not '.' or '..'",
            })
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<IfName> for String {
    fn from(i: IfName) -> Self {
        i.0
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// G045: PL-3-1
    #[test]
    fn default_policy_allows_only_the_api_and_mqtts() {
        let p = Policy::default();
        let allowed: Vec<String> = p
            .allowed_listeners
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["tcp/8443", "tcp/8883"]);
        assert!(!p.enforce);
        assert_eq!(p.own_unit.as_str(), "kawal.service");
        assert!(p.physical.serial_login.forbids() && p.physical.usb_storage.forbids());
    }

    /// G045: PL-3-1
    #[test]
    fn listener_specs_parse_strictly() {
        let any = ListenerSpec::parse("tcp/8443").unwrap();
        assert!(any.matches(Proto::Tcp, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443));
        assert!(!any.matches(Proto::Udp, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443));
        let lo = ListenerSpec::parse("udp/127.0.0.1:323").unwrap();
        assert!(lo.matches(Proto::Udp, "::ffff:127.0.0.1".parse().unwrap(), 323));
        assert!(!lo.matches(Proto::Udp, "0.0.0.0".parse().unwrap(), 323));
        assert_eq!(
            ListenerSpec::parse("udp/[::1]:323").unwrap().to_string(),
            "udp/[::1]:323"
        );
        for bad in [
            "8443",
            "sctp/1",
            "tcp/",
            "tcp/0",
            "tcp/70000",
            "tcp/+80",
            "tcp/::1:80",
        ] {
            assert!(ListenerSpec::parse(bad).is_err(), "{bad}");
        }
    }

    /// G045: PH-1-1
    #[test]
    fn usb_ids_and_interface_names_are_validated() {
        assert_eq!(UsbId::parse("0403:6001").unwrap().to_string(), "0403:6001");
        assert_eq!(UsbId::parse("1D6B:0002").unwrap().to_string(), "1d6b:0002");
        for bad in ["0403", "403:6001", "0403:60011", "04+3:6001", "zzzz:0000"] {
            assert!(UsbId::parse(bad).is_err(), "{bad}");
        }
        assert!(IfName::parse("eth0").is_ok());
        for bad in ["", "..", "a/b", "eth0:1", "sixteen-chars-xx", "a b"] {
            assert!(IfName::parse(bad).is_err(), "{bad}");
        }
    }

    /// G045: PH-1-1
    #[test]
    fn policy_reads_from_kebab_case_toml_and_rejects_unknown_fields() {
        let p: Policy = toml::from_str(
            r#"
            enforce = true
            allowed-listeners = ["tcp/8443", "udp/[::1]:323"]
            loopback-listeners = "allow"
            [physical]
            usb-storage = "allow"
            allowed-interfaces = ["eth0"]
            allowed-usb-devices = ["0403:6001"]
            "#,
        )
        .unwrap();
        assert!(p.enforce);
        assert_eq!(p.loopback_listeners, Rule::Allow);
        assert_eq!(p.physical.usb_storage, Rule::Allow);
        assert_eq!(p.physical.serial_login, Rule::Forbid);
        assert_eq!(p.physical.allowed_interfaces[0].as_str(), "eth0");
        assert_eq!(p.own_unit.as_str(), "kawal.service");

        assert!(toml::from_str::<Policy>("enforced = true").is_err());
        assert!(toml::from_str::<Policy>("[physical]\nserial = \"allow\"").is_err());
        assert!(toml::from_str::<Policy>("allowed-listeners = [\"tcp/x\"]").is_err());
        assert!(toml::from_str::<Policy>("own-unit = \"../x.service\"").is_err());
    }
}
