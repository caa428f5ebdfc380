//! Per-topic payload rules end to end on loopback (G045 PL-1-1, threat ST-D-10): a payload
//! that breaks the first matching rule (too large, not JSON, not a JSON object) is refused
//! like an ACL denial: no PUBACK, the connection closed, `mqtt.denied` with
//! `reason = "payload"` naming the rule and what failed but never the payload; a good one is
//! acknowledged and reaches the uplink.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test loudly"
)]

mod support;

use bytes::Bytes;
use kawal_gateway::limits::Settings;
use kawal_gateway::payload::{JsonCheck, PayloadRule};
use mqtt_proto::v3::{Connect, ConnectReturnCode, LastWill, Packet};
use mqtt_proto::{QoS, TopicName};
use support::{Client, Fixture, wait_until};

/// Telemetry must be a JSON object of at most 256 bytes; anything else a sensor sends up at
/// most 64 bytes. The narrow rule comes first: the first matching rule wins.
fn rules() -> Vec<PayloadRule> {
    vec![
        PayloadRule {
            topic: "kawal/{uid}/up/telemetry".into(),
            max_bytes: Some(256),
            json: JsonCheck::Object,
        },
        PayloadRule {
            topic: "kawal/+/up/#".into(),
            max_bytes: Some(64),
            json: JsonCheck::Off,
        },
    ]
}

async fn fixture() -> Fixture {
    Fixture::start(Settings {
        payload: rules(),
        ..Settings::default()
    })
    .await
}

/// Reads until the gateway closes the connection; panics on a PUBACK on the way.
async fn closed_without_puback(c: &mut Client) {
    loop {
        match c.recv().await {
            Ok(Packet::Puback(pid)) => panic!("refused publish acknowledged: {pid:?}"),
            Ok(_) => {}
            Err(kawal_gateway::frame::FrameError::Io(e))
                if e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the connection stayed open")
            }
            Err(_) => return,
        }
    }
}

/// No audit event carries `needle` (a payload).
fn audit_never_mentions(fx: &Fixture, needle: &str) {
    for e in fx.audit_events("mqtt") {
        assert!(!e.2.contains(needle), "payload in the audit log: {e:?}");
    }
}

/// G045: PL-1-1
/// threat ST-D-10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_payload_is_acknowledged_and_non_json_is_refused_and_logged() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    c.publish("kawal/s1/up/telemetry", br#"{"t": 21.5}"#, Some(1))
        .await;
    match c.recv().await.unwrap() {
        Packet::Puback(pid) => assert_eq!(pid.value(), 1),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // 100 bytes: above the broad rule's 64, but the telemetry rule decides.
    let long = format!(r#"{{"t": 21.5, "pad": "{}"}}"#, "x".repeat(72));
    c.publish("kawal/s1/up/telemetry", long.as_bytes(), Some(2))
        .await;
    match c.recv().await.unwrap() {
        Packet::Puback(pid) => assert_eq!(pid.value(), 2),
        other => panic!("expected PUBACK, got {other:?}"),
    }

    c.publish("kawal/s1/up/telemetry", b"SECRET-READING 21.5", Some(3))
        .await;
    closed_without_puback(&mut c).await;
    let e = fx.wait_audit("mqtt.denied", "\"payload\"").await;
    assert_eq!(e.1, "denied", "{e:?}");
    for needle in [
        "kawal/{uid}/up/telemetry",
        "kawal/s1/up/telemetry",
        "\"json\"",
        "\"publish\"",
        "\"s1\"",
    ] {
        assert!(e.2.contains(needle), "{needle} missing from {e:?}");
    }
    fx.wait_audit("mqtt.disconnected", "payload-refused").await;
    audit_never_mentions(&fx, "SECRET-READING");

    let up = fx.uplink.messages();
    assert_eq!(up.len(), 2, "only the good payloads reach the uplink");
    assert_eq!(up[0].payload, Bytes::from_static(br#"{"t": 21.5}"#));
    assert_eq!(up[1].payload, Bytes::from(long));
    let stats = fx.server.stats();
    assert_eq!(stats.payload_refused, 1);
    assert_eq!(stats.messages_in, 2);
    assert_eq!(stats.denied, 0, "a payload refusal is not an ACL denial");
    fx.stop().await;
}

/// G045: PL-1-1
/// threat ST-D-10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_refused_and_logged_with_the_rule() {
    let fx = fixture().await;
    let s2 = fx.ca.sensor("s2");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s2), "s2").await;
    c.publish("kawal/s2/up/raw", &[b'k'; 64], Some(1)).await;
    assert!(matches!(c.recv().await.unwrap(), Packet::Puback(_)));
    // QoS 0 has no PUBACK to withhold, but the connection still ends.
    c.publish(
        "kawal/s2/up/raw",
        b"OVERSIZED-SECRET".repeat(5).as_slice(),
        None,
    )
    .await;
    closed_without_puback(&mut c).await;
    let e = fx.wait_audit("mqtt.denied", "\"size\"").await;
    for needle in ["\"payload\"", "kawal/+/up/#", "kawal/s2/up/raw", "80 bytes"] {
        assert!(e.2.contains(needle), "{needle} missing from {e:?}");
    }
    audit_never_mentions(&fx, "OVERSIZED-SECRET");
    let up = fx.uplink.messages();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].payload.len(), 64);
    assert_eq!(fx.server.stats().payload_refused, 1);
    fx.stop().await;
}

/// G045: PL-1-1
/// threat ST-D-10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_that_breaks_a_rule_is_refused_at_connect() {
    let fx = fixture().await;
    let connect_with_will = |payload: &'static [u8]| {
        let mut connect = Connect::new("s1".into(), 30);
        connect.last_will = Some(LastWill::new(
            QoS::Level1,
            TopicName::try_from("kawal/s1/up/telemetry").unwrap(),
            Bytes::from_static(payload),
        ));
        Packet::Connect(connect)
    };
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::tls(fx.addr(), &fx.connector(&s1)).await.unwrap();
    c.send(&connect_with_will(b"[\"offline\"]")).await.unwrap();
    match c.recv().await.unwrap() {
        Packet::Connack(a) => assert_eq!(a.code, ConnectReturnCode::NotAuthorized),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert!(c.is_closed().await);
    let e = fx.wait_audit("mqtt.denied", "\"payload\"").await;
    assert!(
        e.2.contains("\"will\"") && e.2.contains("\"json\""),
        "{e:?}"
    );
    fx.wait_audit("mqtt.refused", "will-payload").await;
    assert_eq!(fx.server.stats().refused["will-payload"], 1);
    assert_eq!(fx.server.stats().payload_refused, 1);

    // A will that keeps the rule is accepted, and published when the sensor vanishes.
    let mut c = Client::tls(fx.addr(), &fx.connector(&s1)).await.unwrap();
    c.send(&connect_with_will(br#"{"status": "offline"}"#))
        .await
        .unwrap();
    match c.recv().await.unwrap() {
        Packet::Connack(a) => assert_eq!(a.code, ConnectReturnCode::Accepted),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    drop(c);
    wait_until("the will reached the uplink", || {
        fx.uplink
            .messages()
            .iter()
            .any(|m| m.payload == Bytes::from_static(br#"{"status": "offline"}"#))
    })
    .await;
    fx.stop().await;
}
