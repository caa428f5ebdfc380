//! MQTT framing: cutting one packet off a byte stream with a size cap, and encoding what the
//! broker sends (ADR 0004; G045 ST-D-10, ST-G-1).
//!
//! The fixed header (packet type byte and remaining length, at most four bytes) is parsed
//! here; a remaining length that needs a fifth byte is an error, and a frame larger than the
//! cap is refused *before* anything beyond the header is read or allocated. Only a complete
//! frame goes to `mqtt_proto::v3::Packet::decode`, and the decoded packet must account for
//! every byte of the frame (its re-encoded length must equal the frame's), so trailing junk
//! after the fields is refused too.
//!
//! On top of the codec, [`decode_frame`] refuses what the codec lets through but kawal does
//! not accept (ADR 0004): a zero-length topic name in PUBLISH or in a will, and U+0000 in the
//! client identifier or the user name.

use bytes::Bytes;
use mqtt_proto::VarBytes;
use mqtt_proto::v3::{Packet, Suback, SubscribeReturnCode};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest remaining-length field, in bytes (MQTT 3.1.1 §2.2.3).
pub const MAX_LENGTH_BYTES: usize = 4;

/// Why a packet could not be read or decoded. Every variant but [`FrameError::Closed`] and
/// [`FrameError::Io`] is caused by the peer's bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the stream at a packet boundary (not an error of the peer).
    #[error("connection closed")]
    Closed,
    /// The stream ended inside a packet.
    #[error("connection closed inside a packet")]
    Truncated,
    /// The remaining length has a continuation bit on its fourth byte.
    #[error("remaining length longer than four bytes")]
    LengthTooLong,
    /// The frame is larger than the cap; nothing of its body was read.
    #[error("packet of {len} bytes is over the limit of {cap} bytes")]
    TooLarge {
        /// Header plus remaining length, in bytes.
        len: usize,
        /// The cap.
        cap: usize,
    },
    /// The packet's fields need more bytes than its remaining length gives.
    #[error("packet fields run past the end of the packet")]
    ShortBody,
    /// The packet's fields do not use exactly the bytes its header declares.
    #[error("packet declares {declared} bytes but its fields take {used}")]
    Inconsistent {
        /// The frame's length from its header.
        declared: usize,
        /// The length of the decoded packet, re-encoded.
        used: usize,
    },
    /// The codec refused the packet.
    #[error("invalid packet: {0}")]
    Codec(mqtt_proto::Error),
    /// The codec accepted the packet but kawal does not (see the module documentation).
    #[error("invalid packet: {0}")]
    Refused(&'static str),
    /// Reading from the stream failed.
    #[error("read failed: {0}")]
    Io(#[source] std::io::Error),
}

impl FrameError {
    /// A short name for the audit log (`reason` of `mqtt.malformed`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Truncated => "truncated",
            Self::LengthTooLong => "length-too-long",
            Self::TooLarge { .. } => "too-large",
            Self::ShortBody => "short-body",
            Self::Inconsistent { .. } => "inconsistent-length",
            Self::Codec(_) => "codec",
            Self::Refused(_) => "refused",
            Self::Io(_) => "io",
        }
    }

    /// Whether the peer's bytes caused this (as opposed to a closed or failed stream).
    pub fn is_malformed(&self) -> bool {
        !matches!(self, Self::Closed | Self::Truncated | Self::Io(_))
    }
}

/// Parses a fixed header at the start of `buf`: `(header length, remaining length)`, or
/// `None` when `buf` ends before the header does.
///
/// # Errors
/// [`FrameError::LengthTooLong`] when the fourth length byte has its continuation bit set.
pub fn parse_header(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut value = 0usize;
    for i in 0..MAX_LENGTH_BYTES {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, value)));
        }
    }
    Err(FrameError::LengthTooLong)
}

/// Decodes the first packet of `buf` if it is complete: `(packet, bytes used)`, or `None`
/// when more bytes are needed. A frame over `cap` bytes is refused as soon as its header is
/// complete, whatever follows.
///
/// # Errors
/// [`FrameError`] for a malformed or oversized packet.
pub fn decode_frame(buf: &[u8], cap: usize) -> Result<Option<(Packet, usize)>, FrameError> {
    let Some((header_len, remaining)) = parse_header(buf)? else {
        return Ok(None);
    };
    let len = header_len.saturating_add(remaining);
    if len > cap {
        return Err(FrameError::TooLarge { len, cap });
    }
    let Some(frame) = buf.get(..len) else {
        return Ok(None);
    };
    Ok(Some((decode_complete(frame)?, len)))
}

/// Decodes one complete frame (header included).
fn decode_complete(frame: &[u8]) -> Result<Packet, FrameError> {
    let packet = match Packet::decode(frame) {
        Ok(Some(p)) => p,
        Ok(None) => return Err(FrameError::ShortBody),
        Err(e) => return Err(FrameError::Codec(e)),
    };
    let used = packet.encode_len().map_err(FrameError::Codec)?;
    if used != frame.len() {
        return Err(FrameError::Inconsistent {
            declared: frame.len(),
            used,
        });
    }
    check_fields(&packet)?;
    Ok(packet)
}

/// The rules kawal adds to the codec's.
fn check_fields(packet: &Packet) -> Result<(), FrameError> {
    match packet {
        Packet::Publish(p) if p.topic_name.is_empty() => {
            Err(FrameError::Refused("zero-length topic name"))
        }
        Packet::Connect(c) => {
            if c.client_id.contains('\0') {
                return Err(FrameError::Refused("U+0000 in the client identifier"));
            }
            if c.username.as_deref().is_some_and(|u| u.contains('\0')) {
                return Err(FrameError::Refused("U+0000 in the user name"));
            }
            if c.last_will
                .as_ref()
                .is_some_and(|w| w.topic_name.is_empty())
            {
                return Err(FrameError::Refused("zero-length will topic"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads one packet from `r`, refusing a frame over `cap` bytes before reading its body.
/// Returns the packet and its size on the wire.
///
/// Not cancel-safe: a packet partly read when the future is dropped is lost, so callers only
/// cancel it to end the connection.
///
/// # Errors
/// [`FrameError::Closed`] at a clean end of stream; otherwise see [`FrameError`].
pub async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    cap: usize,
) -> Result<(Packet, usize), FrameError> {
    let mut head = [0u8; 1 + MAX_LENGTH_BYTES];
    match r.read(&mut head[..1]).await {
        Ok(0) => return Err(FrameError::Closed),
        Ok(_) => {}
        Err(e) => return Err(FrameError::Io(e)),
    }
    let mut have = 1;
    let (header_len, remaining) = loop {
        if let Some(h) = parse_header(&head[..have])? {
            break h;
        }
        // parse_header fails once all four length bytes are in, so `have` stays below 5.
        let Some(slot) = head.get_mut(have..=have) else {
            return Err(FrameError::LengthTooLong);
        };
        read_exact(r, slot).await?;
        have += 1;
    };
    let len = header_len.saturating_add(remaining);
    if len > cap {
        return Err(FrameError::TooLarge { len, cap });
    }
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&head[..header_len]);
    frame.resize(len, 0);
    if let Some(body) = frame.get_mut(header_len..) {
        read_exact(r, body).await?;
    }
    Ok((decode_complete(&frame)?, len))
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// Encodes `packet` for the wire.
///
/// # Errors
/// [`FrameError::Codec`] if the packet cannot be encoded (a field over 65,535 bytes, or a
/// packet over the protocol's 256 MiB).
pub fn encode(packet: &Packet) -> Result<Bytes, FrameError> {
    if let Packet::Suback(s) = packet {
        return encode_suback(s);
    }
    Ok(match packet.encode().map_err(FrameError::Codec)? {
        VarBytes::Dynamic(v) => Bytes::from(v),
        VarBytes::Fixed2(a) => Bytes::copy_from_slice(&a),
        VarBytes::Fixed4(a) => Bytes::copy_from_slice(&a),
    })
}

/// SUBACK, encoded here: `mqtt-proto` 0.4.0 writes the failure code as 0x03 (the enum's
/// discriminant) instead of 0x80, which clients reject.
fn encode_suback(s: &Suback) -> Result<Bytes, FrameError> {
    let remaining = 2 + s.topics.len();
    let mut out = Vec::with_capacity(remaining + 5);
    out.push(0x90);
    push_var_int(&mut out, remaining)?;
    out.extend_from_slice(&s.pid.value().to_be_bytes());
    out.extend(s.topics.iter().map(|c| match c {
        SubscribeReturnCode::MaxLevel0 => 0x00,
        SubscribeReturnCode::MaxLevel1 => 0x01,
        SubscribeReturnCode::MaxLevel2 => 0x02,
        SubscribeReturnCode::Failure => 0x80,
    }));
    Ok(Bytes::from(out))
}

/// Appends a remaining length (at most four bytes).
fn push_var_int(out: &mut Vec<u8>, mut value: usize) -> Result<(), FrameError> {
    if value >= 1 << 28 {
        return Err(FrameError::Codec(mqtt_proto::Error::InvalidVarByteInt));
    }
    loop {
        let mut b = u8::try_from(value & 0x7f)
            .map_err(|_| FrameError::Codec(mqtt_proto::Error::InvalidVarByteInt))?;
        value >>= 7;
        if value > 0 {
            b |= 0x80;
        }
        out.push(b);
        if value == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mqtt_proto::v3::{Connack, Connect, ConnectReturnCode, Publish};
    use mqtt_proto::{Pid, QosPid, TopicName};

    use super::*;

    const CAP: usize = 64 * 1024;

    fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
        let p = Publish::new(
            QosPid::Level1(Pid::try_from(7).unwrap()),
            TopicName::try_from(topic).unwrap(),
            Bytes::copy_from_slice(payload),
        );
        encode(&Packet::Publish(p)).unwrap().to_vec()
    }

    #[test]
    fn round_trips_a_publish_and_reports_its_length() {
        let mut wire = publish("kawal/s1/up/t", b"21.5");
        let n = wire.len();
        wire.extend_from_slice(&[0xC0, 0x00]); // a PINGREQ behind it
        let (p, used) = decode_frame(&wire, CAP).unwrap().unwrap();
        assert_eq!(used, n);
        assert!(matches!(p, Packet::Publish(ref x) if &*x.topic_name == "kawal/s1/up/t"));
        let (p, used) = decode_frame(&wire[n..], CAP).unwrap().unwrap();
        assert_eq!((p, used), (Packet::Pingreq, 2));
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        let wire = publish("a/b", b"xyz");
        for cut in 0..wire.len() {
            assert!(decode_frame(&wire[..cut], CAP).unwrap().is_none(), "{cut}");
        }
    }

    /// G045: PL-1-1 (threat ST-D-10: input validation)
    #[test]
    fn refuses_a_five_byte_remaining_length() {
        let wire = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert!(matches!(
            decode_frame(&wire, CAP),
            Err(FrameError::LengthTooLong)
        ));
    }

    /// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
    #[test]
    fn refuses_an_oversized_frame_from_its_header_alone() {
        // Claims 1 MiB; only the header is present.
        let wire = [0x30, 0x80, 0x80, 0x40];
        assert!(matches!(
            decode_frame(&wire, CAP),
            Err(FrameError::TooLarge {
                len: 1_048_580,
                cap: CAP
            })
        ));
    }

    /// G045: PL-1-1 (threat ST-D-10: input validation)
    #[test]
    fn refuses_a_zero_length_topic() {
        // PUBLISH QoS 0, topic length 0, payload "x".
        let wire = [0x30, 0x03, 0x00, 0x00, b'x'];
        let err = decode_frame(&wire, CAP).unwrap_err();
        assert!(matches!(err, FrameError::Refused(_)), "{err}");
        assert!(err.is_malformed());
    }

    /// G045: PL-1-1 (threat ST-D-10: input validation)
    #[test]
    fn refuses_trailing_bytes_and_short_bodies() {
        // PINGREQ claiming one byte of body.
        assert!(matches!(
            decode_frame(&[0xC0, 0x01, 0x00], CAP),
            Err(FrameError::Inconsistent { .. })
        ));
        // PUBACK with one byte where two are needed.
        assert!(matches!(
            decode_frame(&[0x40, 0x01, 0x00], CAP),
            Err(FrameError::ShortBody)
        ));
        // Bad fixed-header flags (PUBREL must have 0b0010).
        assert!(matches!(
            decode_frame(&[0x60, 0x02, 0x00, 0x01], CAP),
            Err(FrameError::Codec(_))
        ));
    }

    #[test]
    fn decodes_a_client_sent_connack_for_the_session_to_refuse() {
        let wire = encode(&Packet::Connack(Connack::new(
            false,
            ConnectReturnCode::Accepted,
        )))
        .unwrap();
        let (p, _) = decode_frame(&wire, CAP).unwrap().unwrap();
        assert!(matches!(p, Packet::Connack(_)));
    }

    #[test]
    fn suback_failure_is_0x80_and_round_trips() {
        let s = Suback::new(
            Pid::try_from(9).unwrap(),
            vec![SubscribeReturnCode::Failure, SubscribeReturnCode::MaxLevel1],
        );
        let wire = encode(&Packet::Suback(s.clone())).unwrap();
        assert_eq!(&wire[..], &[0x90, 0x04, 0x00, 0x09, 0x80, 0x01]);
        let (p, _) = decode_frame(&wire, CAP).unwrap().unwrap();
        assert_eq!(p, Packet::Suback(s));
        let mut long = Vec::new();
        push_var_int(&mut long, 321).unwrap();
        assert_eq!(long, [0xC1, 0x02]);
    }

    #[test]
    fn refuses_nul_in_client_id() {
        let c = Connect::new(Arc::from("a\0b"), 30);
        let wire = encode(&Packet::Connect(c)).unwrap();
        assert!(matches!(
            decode_frame(&wire, CAP),
            Err(FrameError::Refused(_))
        ));
    }

    /// What the fuzz target `mqtt_decode` checks, on one input.
    fn check_stream(data: &[u8]) {
        let mut rest = data;
        while let Ok(Some((packet, used))) = decode_frame(rest, CAP) {
            assert!(used >= 2 && used <= rest.len());
            let again = encode(&packet).unwrap();
            let (p2, n2) = decode_frame(&again, CAP).unwrap().unwrap();
            assert_eq!((p2, n2), (packet, again.len()));
            rest = &rest[used..];
        }
    }

    /// The seeds of `fuzz/corpus/mqtt_decode/` (known crash patterns of MQTT brokers).
    const CONNECT: &[u8] = &[
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x1e, 0x00, 0x02, b's',
        b'1',
    ];

    fn seeds() -> Vec<Vec<u8>> {
        let with_connect = |tail: &[u8]| [CONNECT, tail].concat();
        vec![
            vec![0x30, 0x03, 0x00, 0x00, b'x'],
            with_connect(&[0x32, 0x05, 0x00, 0x00, 0x00, 0x01, b'x']),
            with_connect(&[0x20, 0x02, 0x00, 0x00]),
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
            vec![
                0x30, 0x0a, 0x00, 0x05, b'a', b'/', b'b', b'/', b'c', b'h', b'i', 0xc0, 0x00,
            ],
            vec![0x30, 0x80, 0x80, 0x80, 0x01],
            with_connect(&[0xc0, 0x00, 0xe0, 0x00]),
            vec![0x90, 0x03, 0x00, 0x01, 0x80],
        ]
    }

    /// G045: PL-1-1 (threat ST-D-10: input validation)
    #[test]
    fn known_crash_patterns_and_their_mutations_never_panic() {
        let seeds = seeds();
        for s in &seeds {
            check_stream(s);
        }
        // A deterministic mutation run (xorshift): flip, insert and cut bytes of the seeds.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..40_000usize {
            let mut data = seeds[round % seeds.len()].clone();
            for _ in 0..(next() % 4 + 1) {
                let at = usize::try_from(next()).unwrap() % (data.len() + 1);
                let byte = next().to_le_bytes()[0];
                match next() % 3 {
                    0 if at < data.len() => data[at] = byte,
                    1 => data.insert(at, byte),
                    _ => data.truncate(at.max(1)),
                }
            }
            check_stream(&data);
        }
    }

    #[tokio::test]
    async fn reads_from_a_stream_and_stops_at_the_cap() {
        let mut wire = publish("a/b", b"hello");
        wire.extend_from_slice(&publish("a/b", &[0u8; 300]));
        let mut r: &[u8] = &wire;
        let (p, _) = read_packet(&mut r, 100).await.unwrap();
        assert!(matches!(p, Packet::Publish(_)));
        let err = read_packet(&mut r, 100).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        // The body was not consumed.
        assert!(r.len() > 300);

        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_packet(&mut empty, 100).await,
            Err(FrameError::Closed)
        ));
        let mut cut: &[u8] = &[0x30, 0x05, 0x00];
        assert!(matches!(
            read_packet(&mut cut, 100).await,
            Err(FrameError::Truncated)
        ));
        let mut five: &[u8] = &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(matches!(
            read_packet(&mut five, 1 << 30).await,
            Err(FrameError::LengthTooLong)
        ));
    }
}
