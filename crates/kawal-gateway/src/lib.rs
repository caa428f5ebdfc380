//! kawal gateway: sensors over MQTT with mutual TLS (G045 AU-3-2, DS-1-1, DS-1-2, DS-2-1;
//! threats ST-G-1, ST-G-3, ST-D-10, ST-D-28).
//!
//! - [`server`] accepts sensors on 8883: TLS with a required client certificate, the identity
//!   taken from that certificate only, then [`conn`] runs one MQTT session per connection.
//! - [`frame`] cuts and decodes packets with a size cap checked before buffering (ADR 0004);
//!   [`topic`] holds the topic rules, [`acl`] the per-device information-flow rules and
//!   [`limits`] the connection, rate and size limits, [`payload`] the optional per-topic
//!   payload rules (size, JSON).
//! - [`broker`] is the session table and router: clone detection, subscriptions, retained
//!   messages, wills, dropping a revoked sensor at once.
//! - [`queue`] keeps what sensors published, sealed in the store, until the upstream has it;
//!   [`bridge`] carries it upstream over mutual TLS and brings commands back down.
//! - [`client`] is the reference sensor client (`kawal sim`, the tests) and the rule that
//!   makes a replayed command useless.
#![forbid(unsafe_code)]

pub mod acl;
pub mod bridge;
pub mod broker;
pub mod client;
pub mod clock;
pub mod conn;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod payload;
pub mod queue;
pub mod server;
pub mod tls;
pub mod topic;

use bytes::Bytes;

/// A sensor as proven by its verified client certificate: the UID from the certificate's
/// `urn:kawal:sensor:<uid>` URI (or its CN when it has none) and the serial number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The sensor's UID; the MQTT client id must equal it.
    pub uid: String,
    /// The certificate's serial number, lowercase hex without leading zeros.
    pub serial: String,
}

/// Why the registry turns a presented certificate away (the client only ever hears a generic
/// refusal; the reason goes to the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No sensor of that UID is enrolled.
    NotEnrolled,
    /// The certificate was revoked.
    Revoked,
    /// A newer certificate was issued to the sensor; this one no longer counts.
    Superseded,
    /// The sensor is enrolled but its enrolment is not finished or is disabled.
    Inactive,
}

impl Refusal {
    /// The reason as written in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotEnrolled => "not-enrolled",
            Self::Revoked => "revoked",
            Self::Superseded => "superseded",
            Self::Inactive => "inactive",
        }
    }
}

/// What the broker asks of the sensor registry (kawal-pki's, wired in by the daemon).
pub trait Directory: Send + Sync + 'static {
    /// Whether `id` is the sensor's current, unrevoked certificate; `Ok(role)` names the ACL
    /// role the sensor was enrolled with (e.g. `sensor`, `reader`).
    fn admit(&self, id: &Identity) -> Result<String, Refusal>;
    /// Records that the sensor connected (best effort; errors are logged, not fatal).
    fn seen(&self, uid: &str);
}

/// One message a sensor published, on its way upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sensor that published it.
    pub uid: String,
    /// The topic it was published on (already checked against the ACL).
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
}

/// Why the uplink did not take a message (the publisher gets no PUBACK and is disconnected
/// with the reason logged, so it resends later: nothing acknowledged is lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UplinkRefusal {
    /// The queue is at its byte limit and the policy is to refuse new messages.
    #[error("the upstream queue is full")]
    Full,
    /// The store could not write the message.
    #[error("the upstream queue could not store the message")]
    Store,
}

/// Where the broker hands what sensors publish (the [`queue`], wired in by the daemon).
pub trait Uplink: Send + Sync + 'static {
    /// Takes a message. For QoS 1 the answer arrives only once the message is durable in the
    /// store, and the broker sends the PUBACK only then; for QoS 0 the answer may be ignored.
    fn submit(&self, msg: Message) -> tokio::sync::oneshot::Receiver<Result<(), UplinkRefusal>>;
}
