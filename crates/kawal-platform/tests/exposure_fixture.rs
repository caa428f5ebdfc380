//! A fake machine for the exposure tests: `/proc/net` tables, processes with descriptors and
//! cgroups, sysfs attributes and `/etc` files, in a temporary directory.
//!
//! Included by the `exposure_*` tests with `#[path]`; cargo also builds it alone, as a test
//! crate with no tests.
#![allow(
    dead_code,
    reason = "each test crate uses a different part of the fixture"
)]
#![allow(
    clippy::unwrap_used,
    reason = "a fixture that cannot be built fails the test"
)]
#![allow(clippy::new_without_default, reason = "a fixture, not an API")]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use kawal_platform::SysRoot;
use kawal_platform::exposure::procnet::Proto;

const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
/// `TCP_LISTEN`.
pub const LISTEN: u8 = 0x0A;
/// `TCP_CLOSE`: unconnected UDP.
pub const UNCONNECTED: u8 = 0x07;
/// `TCP_ESTABLISHED`.
pub const ESTABLISHED: u8 = 0x01;

/// A fake root.
pub struct Tree {
    _dir: tempfile::TempDir,
    /// The root to assess.
    pub root: SysRoot,
    tables: RefCell<BTreeMap<&'static str, Vec<String>>>,
}

impl Tree {
    /// An empty machine whose four socket tables exist and are empty.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = Self {
            root: SysRoot(dir.path().to_path_buf()),
            _dir: dir,
            tables: RefCell::new(BTreeMap::new()),
        };
        for table in [
            "/proc/net/tcp",
            "/proc/net/tcp6",
            "/proc/net/udp",
            "/proc/net/udp6",
        ] {
            tree.file(table, HEADER);
        }
        tree
    }

    /// Writes `content` to `abs` under the root, creating directories.
    pub fn file(&self, abs: &str, content: &str) -> &Self {
        let path = self.root.path(abs);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }

    /// Creates the symlink `abs -> target` under the root.
    pub fn symlink(&self, abs: &str, target: &str) -> &Self {
        let path = self.root.path(abs);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
        self
    }

    /// Creates the directory `abs` under the root.
    pub fn dir(&self, abs: &str) -> &Self {
        std::fs::create_dir_all(self.root.path(abs)).unwrap();
        self
    }

    /// Reads `abs` under the root.
    pub fn read(&self, abs: &str) -> String {
        std::fs::read_to_string(self.root.path(abs)).unwrap()
    }

    /// Where `abs` links to, if it is a link.
    pub fn link_target(&self, abs: &str) -> Option<String> {
        std::fs::read_link(self.root.path(abs))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    /// Adds a socket in `state` at `local` (with `inode`) to the right table.
    pub fn socket(&self, proto: Proto, local: &str, state: u8, inode: u64) -> &Self {
        let local: SocketAddr = local.parse().unwrap();
        let table = match (proto, local.is_ipv4()) {
            (Proto::Tcp, true) => "/proc/net/tcp",
            (Proto::Tcp, false) => "/proc/net/tcp6",
            (Proto::Udp, true) => "/proc/net/udp",
            (Proto::Udp, false) => "/proc/net/udp6",
        };
        let zero = SocketAddr::new(
            if local.is_ipv4() {
                "0.0.0.0".parse().unwrap()
            } else {
                "::".parse().unwrap()
            },
            0,
        );
        let mut tables = self.tables.borrow_mut();
        let rows = tables.entry(table).or_default();
        rows.push(format!(
            "{:4}: {} {} {state:02X} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0",
            rows.len(),
            encode(local),
            encode(zero),
        ));
        let text = format!("{HEADER}{}\n", rows.join("\n"));
        drop(tables);
        self.file(table, &text)
    }

    /// A TCP listener.
    pub fn tcp_listen(&self, local: &str, inode: u64) -> &Self {
        self.socket(Proto::Tcp, local, LISTEN, inode)
    }

    /// A bound, unconnected UDP socket.
    pub fn udp_bound(&self, local: &str, inode: u64) -> &Self {
        self.socket(Proto::Udp, local, UNCONNECTED, inode)
    }

    /// A process holding `sockets`, running in system unit `unit` when given.
    pub fn process(&self, pid: u32, comm: &str, unit: Option<&str>, sockets: &[u64]) -> &Self {
        let base = format!("/proc/{pid}");
        self.file(&format!("{base}/comm"), &format!("{comm}\n"));
        self.file(
            &format!("{base}/cmdline"),
            &format!("/usr/sbin/{comm}\0-d\0"),
        );
        let cgroup = match unit {
            Some(u) => format!("0::/system.slice/{u}\n"),
            None => "0::/user.slice/user-1000.slice/session-1.scope\n".to_owned(),
        };
        self.file(&format!("{base}/cgroup"), &cgroup);
        self.dir(&format!("{base}/fd"));
        self.symlink(&format!("{base}/fd/0"), "/dev/null");
        for (i, inode) in sockets.iter().enumerate() {
            self.symlink(
                &format!("{base}/fd/{}", i + 3),
                &format!("socket:[{inode}]"),
            );
        }
        self
    }

    /// A process whose descriptors cannot be read: its `fd` is not a readable directory (a
    /// mode-000 file, so this holds for root as well).
    pub fn unreadable_process(&self, pid: u32, comm: &str) -> &Self {
        let base = format!("/proc/{pid}");
        self.file(&format!("{base}/comm"), &format!("{comm}\n"));
        self.file(&format!("{base}/fd"), "");
        let fd = self.root.path(&format!("{base}/fd"));
        std::fs::set_permissions(&fd, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        self
    }

    /// A USB root hub with `authorized_default`.
    pub fn usb_bus(&self, name: &str, authorized_default: &str) -> &Self {
        self.file(
            &format!("/sys/bus/usb/devices/{name}/authorized_default"),
            &format!("{authorized_default}\n"),
        )
    }

    /// An attached USB device.
    pub fn usb_device(&self, name: &str, id: &str, authorized: bool, product: &str) -> &Self {
        let (vendor, prod) = id.split_once(':').unwrap();
        let base = format!("/sys/bus/usb/devices/{name}");
        self.file(&format!("{base}/idVendor"), &format!("{vendor}\n"));
        self.file(&format!("{base}/idProduct"), &format!("{prod}\n"));
        self.file(
            &format!("{base}/authorized"),
            if authorized { "1\n" } else { "0\n" },
        );
        self.file(&format!("{base}/product"), &format!("{product}\n"));
        self
    }

    /// A network interface with `flags`, `operstate` and, when `physical`, a `device` link.
    pub fn interface(&self, name: &str, flags: u32, operstate: &str, physical: bool) -> &Self {
        let base = format!("/sys/class/net/{name}");
        self.file(&format!("{base}/flags"), &format!("0x{flags:x}\n"));
        self.file(&format!("{base}/operstate"), &format!("{operstate}\n"));
        if physical {
            self.dir(&format!("{base}/device"));
        }
        self
    }

    /// Whether `abs` exists under the root.
    pub fn exists(&self, abs: &str) -> bool {
        Path::new(&self.root.path(abs)).exists()
    }
}

/// `ADDR:PORT` as the kernel prints it: native-endian 32-bit words of the network-order
/// address, then the port.
fn encode(sa: SocketAddr) -> String {
    let addr = match sa.ip() {
        IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{addr}:{:04X}", sa.port())
}
