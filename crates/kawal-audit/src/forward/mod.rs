//! Forwarding of the audit log to a remote collector over syslog on mutual TLS (G045 PL-4-2:
//! logs kept at a remote location, protected against loss and unauthorised change).
//!
//! # What goes over the wire
//! Every entry of the local log, checkpoints included, in seq order, as one RFC 5424 message
//! in an RFC 5425 octet-counting frame (`MSG-LEN SP MSG`) over TLS (kawal's TLS policy,
//! [`kawal_crypto::tls`]). The collector is verified against a pinned CA and a server name;
//! the device presents its client certificate. Each message carries the entry's seq, hash and
//! `prev` as structured data, in the manner of RFC 5848, and the entry's canonical JSON as
//! MSG ([`syslog`]), so the collector's copy can be checked against the chain and the
//! checkpoint signatures that travel with it ([`remote`]).
//!
//! # Delivery rule: no gap, a declared overlap
//! Plain syslog over TLS has no application acknowledgement, so delivery is confirmed by
//! closing the connection gracefully:
//!
//! 1. The forwarder keeps a durable cursor ([`CursorFileStore`]): the seq (and hash) of the
//!    last entry **known delivered**. It is replaced atomically: new file, fsync, rename,
//!    fsync of the folder.
//! 2. It sends the entries after the cursor, read from the local log (which is complete; see
//!    [`crate::sink`]), on one connection.
//! 3. At the latest [`ForwardConfig::confirm_interval`] after the first unconfirmed entry was
//!    sent, or after [`ForwardConfig::confirm_max_entries`] unconfirmed entries, it closes
//!    the connection gracefully: TLS `close_notify`, TCP shutdown of its write side, then it
//!    reads until the collector's EOF. The collector reads the stream in order and closes
//!    only once it has read up to our FIN (rsyslog does), so its EOF means it has read every
//!    frame sent: only then is the cursor advanced to the last entry sent. A new connection
//!    follows at once; TLS session resumption keeps it cheap where the collector supports it.
//! 4. If sending or the close fails (reset, time-out, the collector went away, or closed
//!    before our close), nothing sent on that connection counts as delivered: after a
//!    back-off with jitter the forwarder reconnects and resends from cursor + 1. A restart of
//!    kawal does the same from the cursor file.
//!
//! Hence no entry is ever skipped, and the **declared overlap** is: after each broken
//! connection or restart, at most the entries sent since the last confirmation arrive twice,
//! never more than [`ForwardConfig::confirm_max_entries`]. The verifier deduplicates them by
//! seq and flags any two copies of one seq that differ.
//!
//! Limits of the rule, stated so operators can configure the collector accordingly:
//! "delivered" means read by the collector's network input; the collector's own queue and
//! disk must then keep it (rsyslog: a disk-assisted queue, or a graceful stop, which drains
//! its in-memory queue). Oversized messages are truncated by rsyslog, so set its
//! `maxMessageSize` to at least [`syslog::MAX_MESSAGE_LEN`]. A collector that closes on its
//! own while our last frames are still in flight could look like a confirmation; the
//! forwarder checks for such a close just before it confirms, and collectors should not use
//! idle time-outs shorter than the confirm interval.
//!
//! # Backlog
//! The backlog is the local log after the cursor: nothing is held in memory or dropped.
//! [`ForwardStatus::backlog_alarm`] turns [`BacklogAlarm::High`] at 80 % of
//! [`ForwardConfig::max_backlog_entries`]; the caller raises the alarm.
//!
//! # Collector (rsyslog)
//! ```text
//! global(maxMessageSize="2m"
//!        DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="ca.pem"
//!        DefaultNetstreamDriverCertFile="collector.pem" DefaultNetstreamDriverKeyFile="collector.key")
//! module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
//!        StreamDriver.AuthMode="x509/name" PermittedPeer=["device-uid"])
//! template(name="kawal-raw" type="string" string="%rawmsg%\n")
//! input(type="imtcp" port="6514" ruleset="kawal")
//! ruleset(name="kawal") { action(type="omfile" file="/var/log/kawal/devices.log" template="kawal-raw") }
//! ```
//! The file then holds one raw message per line, as [`verify_remote`] reads it.

mod config;
mod conn;
mod cursor;
mod error;
mod follow;
mod forwarder;
pub mod remote;
pub mod syslog;
mod tls;

pub use self::config::ForwardConfig;
pub use self::cursor::{Cursor, CursorFileStore};
pub use self::error::ForwardError;
pub use self::forwarder::{BacklogAlarm, ForwardStatus, ForwardWaker, Forwarder};
pub use self::remote::{
    BadLine, LocalComparison, RemoteCopy, RemoteError, RemoteReport, RemoteVerification,
    read_remote, verify_remote,
};
pub use self::tls::ClientIdentity;
