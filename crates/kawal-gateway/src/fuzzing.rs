//! A driver for one real MQTT session, shared by the session fuzz target
//! (`fuzz/fuzz_targets/mqtt_session.rs`) and its stable twin (`tests/session_fuzz.rs`)
//! (G045 PL-1-1; threat ST-D-10). Built only with the `fuzzing` feature, which is off by
//! default: nothing here is part of the gateway's interface.
//!
//! [`Script::generate`] turns any source of choices ([`Source`]: the fuzzer's input through
//! `arbitrary`, or a seeded PRNG) into client steps no well-behaved sensor sends: PUBLISH
//! before CONNECT, two CONNECTs, PUBACK for unknown ids, SUBSCRIBE with odd filters,
//! client-sent CONNACK/SUBACK/PINGRESP, DISCONNECT followed by more bytes, malformed frames
//! and random bytes between packets, commands from upstream, a server shutdown.
//! [`Harness::run`] plays a script against [`conn::run`] over an in-memory duplex stream
//! (the session is generic over its stream; TLS is not needed), with a registry that admits
//! one sensor ([`UID`], role `sensor`) and an uplink that answers by the payload's first byte
//! ([`REFUSE_FULL`], [`REFUSE_STORE`], [`DROP_ANSWER`]; anything else is stored), and checks:
//!
//! - the session task does not panic (callers also install a panic hook for the tasks the
//!   session spawns: libFuzzer's aborts, the stable test's counts);
//! - the session ends within [`SESSION_BOUND`] once the client stops sending;
//! - every message that reaches the uplink is the admitted sensor's own, on its lane
//!   (`kawal/<uid>/up/#`), and a sensor that was not admitted gets nothing to the uplink;
//! - the k-th PUBACK the session sent answers the k-th QoS 1 message the uplink took, which
//!   the uplink answered Ok, and carries the packet id of a QoS 1 PUBLISH with that topic and
//!   payload in the bytes the client sent;
//! - what the server sends decodes; CONNACK comes first and once, and nothing follows a
//!   refusal.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kawal_audit::{Anchor, AnchorStore, AuditLog, AuditOptions, SystemClock};
use kawal_crypto::keys::{AuditSigning, KeyHierarchy, KeyVersion};
use kawal_crypto::root::RootSecret;
use mqtt_proto::v3::{
    Connack, Connect, ConnectReturnCode, LastWill, Packet, Publish, Suback, Subscribe,
    SubscribeReturnCode, Unsubscribe,
};
use mqtt_proto::{Pid, Protocol, QoS, QosPid, TopicFilter, TopicName};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

use crate::acl::{Acl, AclConfig};
use crate::broker::Broker;
use crate::frame::{self, FrameError};
use crate::limits::{Rate, Settings};
use crate::topic::{self, TopicRules};
use crate::{Directory, Identity, Message, Refusal, Uplink, UplinkRefusal, conn};

/// The one sensor the registry admits (role `sensor`).
pub const UID: &str = "s1";
/// A sensor the registry does not know.
pub const STRANGER: &str = "s9";
/// A payload starting with this byte is refused by the uplink as full.
pub const REFUSE_FULL: u8 = 0xF1;
/// A payload starting with this byte is refused by the uplink as not stored.
pub const REFUSE_STORE: u8 = 0xF2;
/// For a payload starting with this byte the uplink drops its answer.
pub const DROP_ANSWER: u8 = 0xF3;
/// How long a session may take to end once the client stopped sending.
pub const SESSION_BOUND: Duration = Duration::from_secs(5);
/// How long a [`Step::Pause`] lets the session run.
pub const PAUSE: Duration = Duration::from_micros(100);
/// Steps in a script at most.
pub const MAX_STEPS: usize = 48;
/// The settings the sessions run with: small limits, so that scripts reach them.
pub fn settings() -> Settings {
    Settings {
        max_packet_bytes: 4096,
        topic: TopicRules {
            max_len: 96,
            max_depth: 8,
        },
        max_subscriptions: 4,
        inflight: 4,
        max_queued_bytes: 8192,
        connect_timeout: Duration::from_secs(2),
        messages: Rate {
            per_s: 2000,
            burst: 40,
        },
        bytes: Rate {
            per_s: 64 * 1024,
            burst: 16 * 1024,
        },
        throttle_grace: Duration::from_millis(10),
        keep_alive_max: 60,
        max_retained: 4,
        max_retained_bytes: 1024,
        ..Settings::default()
    }
}

/// Where a script's choices come from.
pub trait Source {
    /// A number below `n` (`n` ≥ 1); 0 once the source is exhausted.
    fn below(&mut self, n: u32) -> u32;
    /// Whether to draw another step.
    fn more(&mut self) -> bool;
    /// A whole packet by the source's own means (the fuzzer: mqtt-proto's `Arbitrary`), or
    /// `None` to leave it to [`Script::generate`].
    fn packet(&mut self) -> Option<Packet> {
        None
    }
    /// Up to `max` bytes.
    fn bytes(&mut self, max: u32) -> Vec<u8> {
        let n = self.below(max.saturating_add(1));
        (0..n).map(|_| self.byte()).collect()
    }
    /// One byte.
    fn byte(&mut self) -> u8 {
        u8::try_from(self.below(256)).unwrap_or(0)
    }
    /// One of `items` (which must not be empty).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        let i = self.below(n.max(1)) as usize;
        &items[i.min(items.len().saturating_sub(1))]
    }
}

/// One thing the client does.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send a packet, as the crate's encoder encodes it (skipped if it does not encode).
    Packet(Packet),
    /// Send these bytes as they are.
    Raw(Vec<u8>),
    /// A command from upstream ([`Broker::publish_local`]) with a payload of `len` bytes.
    Command {
        /// Its topic.
        topic: String,
        /// 0 or 1.
        qos: u8,
        /// Payload length.
        len: usize,
    },
    /// Let the session run for [`PAUSE`].
    Pause,
    /// The server shuts down.
    Shutdown,
}

/// A session to play: the identity the "certificate" proved, and the client's steps.
#[derive(Debug, Clone)]
pub struct Script {
    /// The UID from the certificate ([`UID`] or [`STRANGER`]).
    pub uid: String,
    /// What the client does.
    pub steps: Vec<Step>,
}

/// Topic names; the first [`OWN_TOPICS`] are on the sensor's lane.
const TOPICS: &[&str] = &[
    "kawal/s1/up/t",
    "kawal/s1/up",
    "kawal/s1/up/",
    "kawal/s1/up/a/b/c",
    "kawal/s1/up/a/b/c/d/e/f",
    "kawal/s1/upx",
    "kawal/s1/up/ü",
    "kawal/s2/up/t",
    "kawal/s1/down/cmd",
    "kawal/S1/up/t",
    "kawal//up/t",
    "/kawal/s1/up/t",
    "$SYS/broker",
    "kawal/s9/up/t",
    "s1",
    "",
];

const OWN_TOPICS: usize = 5;

const FILTERS: &[&str] = &[
    "#",
    "+",
    "+/+/+/+",
    "kawal/s1/down/#",
    "kawal/s1/down/+",
    "kawal/s1/down",
    "kawal/s1/down/cmd",
    "kawal/+/down/#",
    "kawal/s1/up/#",
    "kawal/s2/down/#",
    "$SYS/#",
    "kawal/s1/+/#",
    "kawal/s1/down/a/b/c/d/e/f",
];

/// Filters and topic names the codec's types refuse: sent as raw bytes.
const BAD_STRINGS: &[&[u8]] = &[
    b"kawal/s1/up/#",
    b"kawal/s1/up/+",
    b"kawal/s1/down/#/x",
    b"kawal/s1/down/a+",
    b"kawal/s1/up/\0",
    b"\xff\xfe",
    b"kawal/s1/up/\xc3",
];

/// Frames that are malformed one way or another.
const MALFORMED: &[&[u8]] = &[
    // Five-byte remaining length.
    &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
    // A claim far over the cap, with no body.
    &[0x30, 0xff, 0xff, 0xff, 0x7f],
    // PUBREL with the wrong flags.
    &[0x60, 0x02, 0x00, 0x01],
    // SUBSCRIBE with the wrong flags and no topics.
    &[0x80, 0x02, 0x00, 0x01],
    // SUBSCRIBE without topics.
    &[0x82, 0x02, 0x00, 0x01],
    // Reserved packet types.
    &[0x00, 0x00],
    &[0xf0, 0x00],
    // PINGREQ and DISCONNECT with a body.
    &[0xc0, 0x01, 0x00],
    &[0xe0, 0x01, 0x00],
    // PUBLISH with QoS 3.
    &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
    // PUBACK with packet id 0.
    &[0x40, 0x02, 0x00, 0x00],
    // PUBLISH QoS 1 with packet id 0 on the sensor's lane.
    &[
        0x32, 0x11, 0x00, 0x0d, b'k', b'a', b'w', b'a', b'l', b'/', b's', b'1', b'/', b'u', b'p',
        b'/', b't', 0x00, 0x00,
    ],
    // PUBLISH whose topic length runs past the packet.
    &[0x30, 0x03, 0x00, 0x09, b'k'],
    // CONNECT with protocol level 5 and an MQTT 3.1.1 body.
    &[
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x1e, 0x00, 0x02, b's',
        b'1',
    ],
    // CONNECT with an unknown protocol name.
    &[
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'X', b'X', 0x04, 0x02, 0x00, 0x1e, 0x00, 0x02, b's',
        b'1',
    ],
    // CONNECT with the reserved flag set.
    &[
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x1e, 0x00, 0x02, b's',
        b'1',
    ],
];

impl Script {
    /// A script from `src`: at most [`MAX_STEPS`] steps, mostly starting with a valid
    /// CONNECT so that the states after it are reached too.
    pub fn generate(src: &mut impl Source) -> Self {
        let uid = if src.below(16) == 0 { STRANGER } else { UID };
        let mut g = Gen {
            src,
            uid,
            tag: 0,
            next_pid: 0,
        };
        let mut steps = Vec::new();
        if g.src.below(4) != 0 {
            let mut c = Connect::new(uid.into(), 30);
            c.clean_session = g.src.below(2) == 0;
            steps.push(Step::Packet(Packet::Connect(c)));
        }
        while steps.len() < MAX_STEPS && g.src.more() {
            g.step(&mut steps);
        }
        Self {
            uid: uid.to_owned(),
            steps,
        }
    }
}

struct Gen<'a, S: Source> {
    src: &'a mut S,
    uid: &'static str,
    tag: u32,
    next_pid: u16,
}

impl<S: Source> Gen<'_, S> {
    fn pid(&mut self) -> Pid {
        let v = if self.src.below(4) == 0 {
            u16::try_from(self.src.below(65_535) + 1).unwrap_or(1)
        } else {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            self.next_pid
        };
        Pid::try_from(v).unwrap_or_default()
    }

    fn qos(&mut self) -> QoS {
        match self.src.below(16) {
            0..=5 => QoS::Level0,
            6..=14 => QoS::Level1,
            _ => QoS::Level2,
        }
    }

    /// Mostly the sensor's own lane, so that sessions last; sometimes anything else.
    fn topic(&mut self) -> Vec<u8> {
        match self.src.below(16) {
            0 => self.src.bytes(24),
            1 => format!("kawal/{}/up/{}", self.uid, "x/".repeat(10)).into_bytes(),
            2 => format!("kawal/{}/up/{}", self.uid, "y".repeat(100)).into_bytes(),
            3 => (*self.src.pick(BAD_STRINGS)).to_vec(),
            4..=6 => self.src.pick(TOPICS).as_bytes().to_vec(),
            _ => self.src.pick(&TOPICS[..OWN_TOPICS]).as_bytes().to_vec(),
        }
    }

    /// The uplink's answer byte, a tag unique in the script, and a few random bytes.
    fn payload(&mut self) -> Vec<u8> {
        let answer = match self.src.below(24) {
            0 => REFUSE_FULL,
            1 => REFUSE_STORE,
            2 => DROP_ANSWER,
            _ => b'v',
        };
        self.tag += 1;
        let mut p = vec![answer];
        p.extend_from_slice(&self.tag.to_be_bytes());
        let extra = if self.src.below(16) == 0 { 2000 } else { 12 };
        p.extend(self.src.bytes(extra));
        p
    }

    fn publish(&mut self, steps: &mut Vec<Step>) {
        let topic = self.topic();
        let payload = self.payload();
        let qos = self.qos();
        let pid = self.pid();
        let retain = self.src.below(4) == 0;
        let dup = self.src.below(8) == 0;
        let as_str = std::str::from_utf8(&topic).ok();
        match as_str.and_then(|t| TopicName::try_from(t).ok()) {
            Some(name) => {
                let qos_pid = match qos {
                    QoS::Level0 => QosPid::Level0,
                    QoS::Level1 => QosPid::Level1(pid),
                    QoS::Level2 => QosPid::Level2(pid),
                };
                let mut p = Publish::new(qos_pid, name, Bytes::from(payload));
                p.retain = retain;
                p.dup = dup;
                steps.push(Step::Packet(Packet::Publish(p)));
            }
            None => steps.push(Step::Raw(raw_publish(&topic, qos, pid.value(), &payload))),
        }
    }

    fn connect(&mut self) -> Packet {
        let id = match self.src.below(10) {
            0 => "s2".to_owned(),
            1 => String::new(),
            2 => "s1\0".to_owned(),
            3 => "x".repeat(200),
            _ => self.uid.to_owned(),
        };
        let keep_alive = *self.src.pick(&[0u16, 1, 30, 60, 61, u16::MAX]);
        let mut c = Connect::new(id.into(), keep_alive);
        c.protocol = *self
            .src
            .pick(&[Protocol::V311, Protocol::V311, Protocol::V310]);
        c.clean_session = self.src.below(2) == 0;
        if self.src.below(2) == 0 {
            let topic = match self.src.below(5) {
                0 => "kawal/s2/up/status",
                1 => "kawal/s1/down/x",
                _ => "kawal/s1/up/status",
            };
            let qos = self.qos();
            let payload = self.payload();
            if let Ok(t) = TopicName::try_from(topic) {
                let mut w = LastWill::new(qos, t, Bytes::from(payload));
                w.retain = self.src.below(2) == 0;
                c.last_will = Some(w);
            }
        }
        if self.src.below(4) == 0 {
            c.username = Some("admin".into());
            c.password = Some(Bytes::from(self.src.bytes(8)));
        }
        Packet::Connect(c)
    }

    fn subscribe(&mut self, steps: &mut Vec<Step>) {
        let pid = self.pid();
        let n = self.src.below(5) + 1;
        if self.src.below(4) == 0 {
            // One filter the codec's types refuse, as raw bytes.
            let bad = *self.src.pick(BAD_STRINGS);
            steps.push(Step::Raw(raw_subscribe(pid.value(), bad)));
            return;
        }
        let mut topics = Vec::new();
        for _ in 0..n {
            let f = self.src.pick(FILTERS);
            if let Ok(f) = TopicFilter::try_from(*f) {
                let q = self.qos();
                topics.push((f, q));
            }
        }
        steps.push(Step::Packet(Packet::Subscribe(Subscribe::new(pid, topics))));
    }

    fn server_packet(&mut self) -> Packet {
        let pid = self.pid();
        match self.src.below(7) {
            0 => Packet::Connack(Connack::new(false, ConnectReturnCode::Accepted)),
            1 => Packet::Suback(Suback::new(pid, vec![SubscribeReturnCode::MaxLevel1])),
            2 => Packet::Pingresp,
            3 => Packet::Unsuback(pid),
            4 => Packet::Pubrec(pid),
            5 => Packet::Pubrel(pid),
            _ => Packet::Pubcomp(pid),
        }
    }

    fn step(&mut self, steps: &mut Vec<Step>) {
        match self.src.below(24) {
            0..=6 => {
                self.publish(steps);
                // Often a pause, so that PUBACKs go out before a later step ends the session.
                if self.src.below(2) == 0 {
                    steps.push(Step::Pause);
                }
            }
            7 => {
                let c = self.connect();
                steps.push(Step::Packet(c));
            }
            8 | 9 => {
                // PUBACK for ids mostly in the range the server uses.
                let v = u16::try_from(self.src.below(12) + 1).unwrap_or(1);
                let pid = if self.src.below(4) == 0 {
                    self.pid()
                } else {
                    Pid::try_from(v).unwrap_or_default()
                };
                steps.push(Step::Packet(Packet::Puback(pid)));
            }
            10 => self.subscribe(steps),
            11 => {
                let pid = self.pid();
                let f = self.src.pick(FILTERS);
                let topics = TopicFilter::try_from(*f).into_iter().collect();
                steps.push(Step::Packet(Packet::Unsubscribe(Unsubscribe::new(
                    pid, topics,
                ))));
            }
            12 => steps.push(Step::Packet(Packet::Pingreq)),
            13 => steps.push(Step::Packet(Packet::Disconnect)),
            14 => {
                let p = self.server_packet();
                steps.push(Step::Packet(p));
            }
            15 => {
                let b = self.src.bytes(32);
                steps.push(Step::Raw(b));
            }
            16 => {
                let m = *self.src.pick(MALFORMED);
                steps.push(Step::Raw(m.to_vec()));
            }
            17 | 18 => {
                let topic = match self.src.below(4) {
                    0 => "kawal/s2/down/x",
                    1 => "kawal/s1/down/a/b",
                    _ => "kawal/s1/down/cmd",
                };
                let len = if self.src.below(4) == 0 { 1500 } else { 8 };
                steps.push(Step::Command {
                    topic: topic.to_owned(),
                    qos: u8::try_from(self.src.below(2)).unwrap_or(0),
                    len,
                });
            }
            19 => steps.push(Step::Pause),
            20 => match self.src.packet() {
                Some(p) => steps.push(Step::Packet(p)),
                None => self.publish(steps),
            },
            21 => {
                // A valid PUBLISH cut in two, with a pause in the middle.
                let mut tmp = Vec::new();
                self.publish(&mut tmp);
                for s in tmp {
                    if let Some(bytes) = encode_step(&s) {
                        let cut = (self.src.below(8) as usize).min(bytes.len());
                        steps.push(Step::Raw(bytes[..cut].to_vec()));
                        steps.push(Step::Pause);
                        steps.push(Step::Raw(bytes[cut..].to_vec()));
                    }
                }
            }
            22 => {
                // DISCONNECT and then more.
                steps.push(Step::Packet(Packet::Disconnect));
                self.publish(steps);
            }
            _ => {
                if self.src.below(8) == 0 {
                    steps.push(Step::Shutdown);
                } else {
                    self.publish(steps);
                }
            }
        }
    }
}

fn remaining_length(buf: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = u8::try_from(n % 128).unwrap_or(0);
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(body: &mut BytesMut, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    body.put_u16(len);
    body.put_slice(&s[..usize::from(len)]);
}

/// A PUBLISH with whatever topic bytes, encoded by hand.
fn raw_publish(topic: &[u8], qos: QoS, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = BytesMut::new();
    put_str(&mut body, topic);
    if qos != QoS::Level0 {
        body.put_u16(pid);
    }
    body.put_slice(payload);
    let mut out = BytesMut::new();
    out.put_u8(0x30 | ((qos as u8) << 1));
    remaining_length(&mut out, body.len());
    out.put_slice(&body);
    out.to_vec()
}

/// A SUBSCRIBE with one filter of whatever bytes, encoded by hand.
fn raw_subscribe(pid: u16, filter: &[u8]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(pid);
    put_str(&mut body, filter);
    body.put_u8(1);
    let mut out = BytesMut::new();
    out.put_u8(0x82);
    remaining_length(&mut out, body.len());
    out.put_slice(&body);
    out.to_vec()
}

fn encode_step(step: &Step) -> Option<Vec<u8>> {
    match step {
        Step::Packet(p) => frame::encode(p).ok().map(|b| b.to_vec()),
        Step::Raw(b) => Some(b.clone()),
        _ => None,
    }
}

/// Why a harness could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The audit signing key could not be made.
    #[error("audit key: {0}")]
    Crypto(#[from] kawal_crypto::Error),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(#[from] kawal_audit::Error),
    /// The default ACL did not build.
    #[error("the default ACL does not build")]
    Acl,
    /// The runtime could not be started.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// An invariant the session broke (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The session task panicked or was cancelled.
    #[error("the session panicked")]
    Panicked,
    /// The session stopped reading while the client was sending.
    #[error("the session stopped reading while the client sent")]
    StoppedReading,
    /// The session did not end within [`SESSION_BOUND`] after the client stopped sending.
    #[error("the session did not end within {SESSION_BOUND:?}")]
    DidNotEnd,
    /// What the server sent does not decode.
    #[error("the server sent bytes that do not decode: {0}")]
    ServerMalformed(String),
    /// The first packet from the server was not CONNACK, or there were two.
    #[error("the server sent {0} where only the first packet may be CONNACK")]
    ConnackOrder(String),
    /// The server sent more after refusing the connection.
    #[error("the server sent {0} after refusing the connection")]
    AfterRefusal(String),
    /// A message that is not the admitted sensor's own, on its lane, reached the uplink.
    #[error("a message of {uid:?} on {topic:?} reached the uplink")]
    OutsideLane {
        /// Whose the message was.
        uid: String,
        /// Its topic.
        topic: String,
    },
    /// A PUBACK without a QoS 1 message the uplink answered Ok.
    #[error("PUBACK {pid} #{index} answers no message the uplink stored")]
    UnbackedPuback {
        /// Its packet id.
        pid: u16,
        /// Its position among the PUBACKs.
        index: usize,
    },
    /// A PUBACK whose packet id is not that of the message it answers.
    #[error("PUBACK {pid} #{index} has the wrong packet id for {topic:?}")]
    WrongPid {
        /// Its packet id.
        pid: u16,
        /// Its position among the PUBACKs.
        index: usize,
        /// The topic of the message it answers.
        topic: String,
    },
}

/// What a run saw, for coverage counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// The CONNACK's code (0 accepted), if one came.
    pub connack: Option<u8>,
    /// PUBACKs from the server.
    pub pubacks: usize,
    /// Packets from the server in all.
    pub server_packets: usize,
    /// Messages the uplink stored.
    pub stored: usize,
    /// QoS 1 messages the uplink stored.
    pub stored_qos1: usize,
    /// Messages the uplink refused or dropped the answer of.
    pub refused: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Refused,
}

/// The uplink: answers by the payload's first byte and remembers what it got.
#[derive(Default)]
struct ScriptedUplink {
    got: Mutex<Vec<(Message, Answer)>>,
}

impl ScriptedUplink {
    fn take(&self) -> Vec<(Message, Answer)> {
        std::mem::take(&mut *self.got.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Uplink for ScriptedUplink {
    fn submit(&self, msg: Message) -> oneshot::Receiver<Result<(), UplinkRefusal>> {
        let (tx, rx) = oneshot::channel();
        let answer = match msg.payload.first() {
            Some(&REFUSE_FULL) => Some(Err(UplinkRefusal::Full)),
            Some(&REFUSE_STORE) => Some(Err(UplinkRefusal::Store)),
            Some(&DROP_ANSWER) => None,
            _ => Some(Ok(())),
        };
        let kept = if matches!(answer, Some(Ok(()))) {
            Answer::Ok
        } else {
            Answer::Refused
        };
        self.got
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((msg, kept));
        if let Some(a) = answer {
            let _ = tx.send(a);
        }
        rx
    }
}

/// The registry: admits [`UID`] as a `sensor`, nobody else.
struct OneSensor;

impl Directory for OneSensor {
    fn admit(&self, id: &Identity) -> Result<String, Refusal> {
        if id.uid == UID {
            Ok("sensor".to_owned())
        } else {
            Err(Refusal::NotEnrolled)
        }
    }

    fn seen(&self, _uid: &str) {}
}

#[derive(Default)]
struct MemoryAnchor(Mutex<Option<Anchor>>);

impl AnchorStore for MemoryAnchor {
    fn load(&self) -> kawal_audit::Result<Option<Anchor>> {
        Ok(*self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
    fn save(&self, anchor: &Anchor) -> kawal_audit::Result<()> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(*anchor);
        Ok(())
    }
}

/// A broker with the fake registry and uplink, and a runtime to play scripts on. One script
/// at a time; sessions share the broker (as they do in the daemon).
pub struct Harness {
    rt: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    uplink: Arc<ScriptedUplink>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness whose audit log lives in `dir`.
    ///
    /// # Errors
    /// [`SetupError`] when the key, the log, the ACL or the runtime cannot be made.
    pub fn new(dir: &Path) -> Result<Self, SetupError> {
        let keys = KeyHierarchy::new(RootSecret::generate()?);
        let signer = keys.signing::<AuditSigning>(&KeyVersion::new(1)?)?;
        let audit = Arc::new(AuditLog::open(
            dir,
            "KWL-FUZZ",
            Arc::new(signer),
            Arc::new(MemoryAnchor::default()),
            Arc::new(SystemClock::new()),
            AuditOptions::default(),
        )?);
        let settings = settings();
        let acl = Acl::new(&AclConfig::default(), &settings.topic).map_err(|_| SetupError::Acl)?;
        let uplink = Arc::new(ScriptedUplink::default());
        let broker = Broker::new(
            settings,
            acl,
            Arc::new(OneSensor),
            Arc::clone(&uplink) as Arc<dyn Uplink>,
            audit,
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(Self { rt, broker, uplink })
    }

    /// Plays `script` against one session and checks the invariants.
    ///
    /// # Errors
    /// The first [`Violation`] found.
    pub fn run(&self, script: &Script) -> Result<Report, Violation> {
        drop(self.uplink.take());
        self.rt.block_on(self.play(script))
    }

    async fn play(&self, script: &Script) -> Result<Report, Violation> {
        let identity = Identity {
            uid: script.uid.clone(),
            serial: "1f".to_owned(),
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 40_000));
        let (client, server) = tokio::io::duplex(16 * 1024);
        let (stop_tx, stop_rx) = watch::channel(false);
        let session = tokio::spawn(conn::run(
            server,
            identity,
            peer,
            Arc::clone(&self.broker),
            stop_rx,
        ));
        let abort = session.abort_handle();
        let (mut rd, mut wr) = tokio::io::split(client);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match frame::read_packet(&mut rd, 1 << 20).await {
                    Ok((p, _)) => got.push(p),
                    Err(FrameError::Closed | FrameError::Io(_)) => return Ok(got),
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        let fed = tokio::time::timeout(
            SESSION_BOUND,
            feed(&mut wr, &script.steps, &self.broker, &stop_tx),
        )
        .await;
        let _ = wr.shutdown().await;
        drop(wr);
        let sent = match fed {
            Ok(sent) => sent,
            Err(_) => {
                abort.abort();
                return Err(Violation::StoppedReading);
            }
        };
        match tokio::time::timeout(SESSION_BOUND, session).await {
            Err(_) => {
                let _ = stop_tx.send(true);
                abort.abort();
                return Err(Violation::DidNotEnd);
            }
            Ok(Err(_)) => return Err(Violation::Panicked),
            Ok(Ok(())) => {}
        }
        let packets = match tokio::time::timeout(SESSION_BOUND, reader).await {
            Ok(Ok(Ok(p))) => p,
            Ok(Ok(Err(e))) => return Err(Violation::ServerMalformed(e)),
            Ok(Err(_)) => return Err(Violation::Panicked),
            Err(_) => return Err(Violation::DidNotEnd),
        };
        check(script, &sent, &packets, &self.uplink.take(), &self.broker)
    }
}

/// Plays the steps; returns the bytes the client sent (the server saw a prefix of them).
async fn feed<W: AsyncWrite + Unpin>(
    wr: &mut W,
    steps: &[Step],
    broker: &Broker,
    stop: &watch::Sender<bool>,
) -> Vec<u8> {
    let mut sent = Vec::new();
    let mut open = true;
    for step in steps {
        match step {
            // The client runs on the thread that blocks on the runtime, not on a worker: a
            // short blocking sleep lets the session's tasks run meanwhile, more finely than
            // the runtime's millisecond timer would.
            Step::Pause => std::thread::sleep(PAUSE),
            Step::Shutdown => {
                let _ = stop.send(true);
            }
            Step::Command { topic, qos, len } => {
                let _ = broker.publish_local(topic, &Bytes::from(vec![b'c'; *len]), *qos);
            }
            Step::Packet(_) | Step::Raw(_) => {
                let Some(bytes) = encode_step(step) else {
                    continue;
                };
                if open {
                    sent.extend_from_slice(&bytes);
                    open = wr.write_all(&bytes).await.is_ok();
                }
                tokio::task::yield_now().await;
            }
        }
    }
    // Give the uplink's answers time to become PUBACKs before the client hangs up.
    std::thread::sleep(PAUSE * 4);
    sent
}

fn describe(p: &Packet) -> String {
    format!("{:?}", p.get_type())
}

fn check(
    script: &Script,
    sent: &[u8],
    packets: &[Packet],
    uplink: &[(Message, Answer)],
    broker: &Broker,
) -> Result<Report, Violation> {
    let mut report = Report {
        server_packets: packets.len(),
        ..Report::default()
    };
    // CONNACK first and once; nothing after a refusal.
    for (i, p) in packets.iter().enumerate() {
        match (i, p) {
            (0, Packet::Connack(c)) => report.connack = Some(c.code as u8),
            (_, Packet::Connack(_)) => return Err(Violation::ConnackOrder(format!("#{i}"))),
            (0, other) => return Err(Violation::ConnackOrder(describe(other))),
            (_, other) if report.connack != Some(0) => {
                return Err(Violation::AfterRefusal(describe(other)));
            }
            _ => {}
        }
    }
    // Only the admitted sensor's own lane reaches the uplink.
    let lane = format!("kawal/{UID}/up/#");
    for (m, answer) in uplink {
        let own = script.uid == UID
            && m.uid == UID
            && broker.settings().topic.check_name(&m.topic).is_ok();
        if !own || !topic::matches(&lane, &m.topic) {
            return Err(Violation::OutsideLane {
                uid: m.uid.clone(),
                topic: m.topic.clone(),
            });
        }
        match answer {
            Answer::Ok => {
                report.stored += 1;
                report.stored_qos1 += usize::from(m.qos == 1);
            }
            Answer::Refused => report.refused += 1,
        }
    }
    // The QoS 1 PUBLISHes in what the client sent: (topic, payload) -> packet ids.
    let cap = broker.settings().max_packet_bytes;
    let mut pids: BTreeMap<(String, Bytes), BTreeSet<u16>> = BTreeMap::new();
    let mut rest = sent;
    while let Ok(Some((p, used))) = frame::decode_frame(rest, cap) {
        if let Packet::Publish(p) = p
            && let Some(pid) = p.qos_pid.pid()
        {
            pids.entry((p.topic_name.to_string(), p.payload))
                .or_default()
                .insert(pid.value());
        }
        rest = &rest[used.min(rest.len())..];
    }
    // The k-th PUBACK answers the k-th QoS 1 message the uplink got, which it stored.
    let qos1: Vec<&(Message, Answer)> = uplink.iter().filter(|(m, _)| m.qos == 1).collect();
    let acks = packets.iter().filter_map(|p| match p {
        Packet::Puback(pid) => Some(pid.value()),
        _ => None,
    });
    for (index, pid) in acks.enumerate() {
        report.pubacks += 1;
        let Some((m, Answer::Ok)) = qos1.get(index) else {
            return Err(Violation::UnbackedPuback { pid, index });
        };
        let known = pids
            .get(&(m.topic.clone(), m.payload.clone()))
            .is_some_and(|s| s.contains(&pid));
        if !known {
            return Err(Violation::WrongPid {
                pid,
                index,
                topic: m.topic.clone(),
            });
        }
    }
    Ok(report)
}
