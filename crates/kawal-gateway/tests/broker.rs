//! The sensor broker end to end on loopback: mutual TLS with a test CA, the identity from the
//! certificate, per-device topic lanes, clone detection, revocation, malformed input, limits,
//! and interoperability with Mosquitto's command-line clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::disallowed_macros,
    reason = "tests: a failure should stop the test loudly; a skipped interop test says why"
)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use kawal_gateway::limits::{Rate, Settings};
use kawal_gateway::server::{TlsMaterial, identity_from_cert};
use kawal_gateway::{Refusal, UplinkRefusal};
use mqtt_proto::v3::{Connect, ConnectReturnCode, LastWill, Packet, Publish, SubscribeReturnCode};
use mqtt_proto::{Pid, QoS, QosPid, TopicName};
use support::{Ca, Client, Fixture, WAIT, connector, wait_until};

async fn fixture() -> Fixture {
    Fixture::start(Settings::default()).await
}

/// G045: DS-1-1, DS-1-2, AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_publishes_qos1_and_gets_puback_once_the_uplink_has_it() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    c.publish("kawal/s1/up/temp", b"21.5", Some(7)).await;
    match c.recv().await.unwrap() {
        Packet::Puback(pid) => assert_eq!(pid.value(), 7),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let got = fx.uplink.messages();
    assert_eq!(got.len(), 1, "acknowledged before the uplink had it");
    assert_eq!(got[0].uid, "s1");
    assert_eq!(got[0].topic, "kawal/s1/up/temp");
    assert_eq!(got[0].payload, Bytes::from_static(b"21.5"));
    assert_eq!(got[0].qos, 1);
    // PINGREQ is answered.
    c.send(&Packet::Pingreq).await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Packet::Pingresp);
    c.send(&Packet::Disconnect).await.unwrap();
    fx.wait_audit("mqtt.connected", "\"s1\"").await;
    fx.wait_audit("mqtt.disconnected", "client-disconnect")
        .await;
    wait_until("seen recorded", || {
        fx.directory.seen.lock().unwrap().contains(&"s1".to_owned())
    })
    .await;
    let stats = fx.server.stats();
    assert_eq!(stats.messages_in, 1);
    fx.stop().await;
}

/// G045: AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_other_than_the_certificate_uid_is_refused() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let (mut c, code) = Client::connect(fx.addr(), &fx.connector(&s1), "s2")
        .await
        .unwrap();
    assert_eq!(code, ConnectReturnCode::IdentifierRejected);
    assert!(c.is_closed().await);
    fx.wait_audit("mqtt.refused", "client-id-mismatch").await;
    assert_eq!(fx.server.stats().refused["client-id-mismatch"], 1);
    fx.stop().await;
}

/// G045: AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_unknown_sensors_are_refused_with_the_registry_reason() {
    let fx = fixture().await;
    fx.directory.set("s2", Err(Refusal::Revoked));
    let s2 = fx.ca.sensor("s2");
    let (_c, code) = Client::connect(fx.addr(), &fx.connector(&s2), "s2")
        .await
        .unwrap();
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    fx.wait_audit("mqtt.refused", "revoked").await;

    let x = fx.ca.sensor("stranger");
    let (_c, code) = Client::connect(fx.addr(), &fx.connector(&x), "stranger")
        .await
        .unwrap();
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    fx.wait_audit("mqtt.refused", "not-enrolled").await;
    fx.stop().await;
}

/// G045: DS-2-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_outside_the_lane_is_denied_logged_and_disconnected() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    c.publish("kawal/s2/up/temp", b"spoofed", Some(1)).await;
    assert!(c.is_closed().await, "a denied publish ends the connection");
    let e = fx.wait_audit("mqtt.denied", "kawal/s2/up/temp").await;
    assert!(e.2.contains("publish") && e.2.contains("\"s1\""), "{e:?}");
    assert!(fx.uplink.messages().is_empty());
    assert_eq!(fx.server.stats().denied, 1);
    fx.stop().await;
}

/// G045: DS-2-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_to_everything_is_refused_not_narrowed() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    let codes = c
        .subscribe(&["#", "kawal/+/down/#", "kawal/s1/down/#"])
        .await;
    assert_eq!(
        codes,
        [
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::MaxLevel1
        ]
    );
    fx.wait_audit("mqtt.denied", "\"#\"").await;
    // The session goes on, and gets what its lane carries only.
    let s2 = fx.ca.sensor("s2");
    let mut other = Client::connected(fx.addr(), &fx.connector(&s2), "s2").await;
    other.publish("kawal/s2/up/t", b"not for s1", None).await;
    assert_eq!(
        fx.server
            .broker()
            .publish_local("kawal/s1/down/cmd", &Bytes::from_static(b"reboot"), 1)
            .unwrap(),
        1
    );
    let p = c.next_publish().await;
    assert_eq!(&*p.topic_name, "kawal/s1/down/cmd");
    assert_eq!(p.payload, Bytes::from_static(b"reboot"));
    fx.stop().await;
}

/// G045: DS-2-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_gets_the_sensors_telemetry_and_wills() {
    let fx = fixture().await;
    let r1 = fx.ca.sensor("r1");
    let mut reader = Client::connected(fx.addr(), &fx.connector(&r1), "r1").await;
    assert_eq!(
        reader.subscribe(&["kawal/+/up/#"]).await,
        [SubscribeReturnCode::MaxLevel1]
    );
    // A reader may not publish.
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    c.publish("kawal/s1/up/temp", b"22", Some(3)).await;
    assert!(matches!(c.recv().await.unwrap(), Packet::Puback(_)));
    let p = reader.next_publish().await;
    assert_eq!(
        (&*p.topic_name, &p.payload[..]),
        ("kawal/s1/up/temp", &b"22"[..])
    );
    assert_eq!(p.qos_pid.qos(), QoS::Level1);
    assert!(!p.retain);

    // The will of a sensor that vanishes reaches the reader too.
    let s2 = fx.ca.sensor("s2");
    let mut w = Client::tls(fx.addr(), &fx.connector(&s2)).await.unwrap();
    let mut connect = Connect::new("s2".into(), 30);
    connect.last_will = Some(LastWill::new(
        QoS::Level0,
        TopicName::try_from("kawal/s2/up/status").unwrap(),
        Bytes::from_static(b"offline"),
    ));
    w.send(&Packet::Connect(connect)).await.unwrap();
    assert!(matches!(w.recv().await.unwrap(), Packet::Connack(_)));
    drop(w);
    let p = reader.next_publish().await;
    assert_eq!(
        (&*p.topic_name, &p.payload[..]),
        ("kawal/s2/up/status", &b"offline"[..])
    );
    wait_until("the will reached the uplink", || {
        fx.uplink
            .messages()
            .iter()
            .any(|m| m.topic == "kawal/s2/up/status")
    })
    .await;
    fx.stop().await;
}

/// G045: AU-1-10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_connections_with_one_certificate_are_both_dropped() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let tls = fx.connector(&s1);
    let mut first = Client::connected(fx.addr(), &tls, "s1").await;
    let (mut second, code) = Client::connect(fx.addr(), &tls, "s1").await.unwrap();
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    assert!(second.is_closed().await);
    assert!(
        first.is_closed().await,
        "the first connection is dropped too"
    );
    let e = fx.wait_audit("mqtt.clone-detected", "\"s1\"").await;
    assert_eq!(e.1, "denied");
    fx.wait_audit("mqtt.disconnected", "clone-detected").await;
    assert_eq!(fx.server.stats().clones, 1);

    // Once both are gone, the sensor may connect again.
    wait_until("s1 gone", || !fx.server.broker().is_live("s1")).await;
    let mut again = Client::connected(fx.addr(), &tls, "s1").await;
    again.publish("kawal/s1/up/t", b"back", Some(2)).await;
    assert!(matches!(again.recv().await.unwrap(), Packet::Puback(_)));
    fx.stop().await;
}

/// G045: AU-1-10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_takes_the_session_over() {
    let fx = fixture().await;
    let old = fx.ca.sensor("s1");
    let new = fx.ca.sensor("s1");
    let mut first = Client::connected(fx.addr(), &fx.connector(&old), "s1").await;
    let mut second = Client::connected(fx.addr(), &fx.connector(&new), "s1").await;
    assert!(first.is_closed().await);
    fx.wait_audit("mqtt.session-taken-over", "\"s1\"").await;
    second.publish("kawal/s1/up/t", b"x", Some(1)).await;
    assert!(matches!(second.recv().await.unwrap(), Packet::Puback(_)));
    assert_eq!(fx.server.stats().clones, 0);
    fx.stop().await;
}

/// G045: AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_uid_drops_the_live_connection_at_once() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    wait_until("s1 live", || fx.server.broker().is_live("s1")).await;
    assert!(fx.server.disconnect_uid("s1", "revoked"));
    assert!(c.is_closed().await);
    fx.wait_audit("mqtt.disconnected", "revoked").await;
    assert!(
        !fx.server.disconnect_uid("s1", "revoked"),
        "nothing live any more"
    );
    fx.stop().await;
}

/// Connects with `tls` and reports whether MQTT got through (CONNACK accepted).
async fn gets_through(fx: &Fixture, tls: &tokio_rustls::TlsConnector, id: &str) -> bool {
    match Client::connect(fx.addr(), tls, id).await {
        Ok((_, code)) => code == ConnectReturnCode::Accepted,
        Err(_) => false,
    }
}

/// G045: DS-1-2, AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_in_the_handshake() {
    let fx = fixture().await;
    assert!(!gets_through(&fx, &connector(&fx.ca, None), "s1").await);
    fx.wait_audit("mqtt.refused", "no-certificate").await;
    fx.stop().await;
}

/// G045: AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let fx = fixture().await;
    let rogue = Ca::new("rogue CA");
    let fake = rogue.sensor("s1");
    assert!(!gets_through(&fx, &connector(&fx.ca, Some(&fake)), "s1").await);
    fx.wait_audit("mqtt.refused", "unknown-ca").await;
    assert!(fx.uplink.messages().is_empty());
    fx.stop().await;
}

/// G045: AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_roots_apply_to_the_next_handshake() {
    let fx = fixture().await;
    let ca2 = Ca::new("next sensor CA");
    let on_new = ca2.sensor("s2");
    let on_old = fx.ca.sensor("s1");
    assert!(!gets_through(&fx, &connector(&fx.ca, Some(&on_new)), "s2").await);
    fx.server
        .reload_tls(&TlsMaterial {
            chain: vec![fx.server_leaf.cert.clone()],
            key: fx.server_leaf.key(),
            sensor_roots: vec![ca2.cert.clone()],
            external_roots: Vec::new(),
            crls: Vec::new(),
            clock_floor: None,
        })
        .unwrap();
    assert!(gets_through(&fx, &connector(&fx.ca, Some(&on_new)), "s2").await);
    assert!(!gets_through(&fx, &connector(&fx.ca, Some(&on_old)), "s1").await);
    fx.stop().await;
}

/// G045: AU-1-9
/// Sensor certificates are checked at the clock floor while the clock reads earlier (a
/// gateway booted without a real-time clock): a certificate not yet valid by the clock but
/// valid at the floor is admitted, one that expired before the floor is refused, and the
/// floor's use is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_behind_the_floor_checks_sensor_certificates_at_the_floor() {
    use kawal_gateway::clock::ClockFloor;
    use std::sync::Arc;
    let fx = fixture().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Whole years ahead of the clock, so the dates stay in the future whenever this runs.
    let year = i32::try_from(1970 + now / 31_556_952).unwrap();
    let ahead = fx
        .ca
        .sensor_valid("s1", (year + 2, 1, 1), (year + 10, 1, 1));
    let gone = fx.ca.sensor_valid("s2", (year - 1, 1, 1), (year + 3, 1, 1));
    assert!(!gets_through(&fx, &fx.connector(&ahead), "s1").await);
    fx.wait_audit("mqtt.refused", "not-yet-valid").await;
    assert!(gets_through(&fx, &fx.connector(&gone), "s2").await);

    // The device has lived past the start of year + 4 (its log says so); the clock says now.
    let floor = Arc::new(ClockFloor::new(
        i64::try_from(now).unwrap() + 4 * 366 * 86_400,
    ));
    fx.server
        .reload_tls(&TlsMaterial {
            chain: vec![fx.server_leaf.cert.clone()],
            key: fx.server_leaf.key(),
            sensor_roots: vec![fx.ca.cert.clone()],
            external_roots: Vec::new(),
            crls: Vec::new(),
            clock_floor: Some(Arc::clone(&floor)),
        })
        .unwrap();
    assert!(gets_through(&fx, &fx.connector(&ahead), "s1").await);
    assert!(!gets_through(&fx, &fx.connector(&gone), "s2").await);
    fx.wait_audit("mqtt.refused", "expired").await;
    assert!(floor.applied() >= 2, "{}", floor.applied());
    fx.stop().await;
}

/// G045: PL-1-1 (threat ST-D-10: input validation)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_close_only_their_own_connection() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let s2 = fx.ca.sensor("s2");
    let tls1 = fx.connector(&s1);
    let mut healthy = Client::connected(fx.addr(), &fx.connector(&s2), "s2").await;

    let cases: [(&[u8], &str); 3] = [
        (&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], "length-too-long"),
        (&[0x30, 0x03, 0x00, 0x00, b'x'], "zero-length topic name"),
        (&[0x20, 0x02, 0x00, 0x00], "unexpected-packet"),
    ];
    for (bytes, needle) in cases {
        wait_until("s1 gone", || !fx.server.broker().is_live("s1")).await;
        let mut bad = Client::connected(fx.addr(), &tls1, "s1").await;
        bad.send_raw(bytes).await.unwrap();
        assert!(bad.is_closed().await, "{needle}");
        fx.wait_audit("mqtt.malformed", needle).await;
    }
    // PUBLISH before CONNECT.
    let mut early = Client::tls(fx.addr(), &tls1).await.unwrap();
    early.publish("kawal/s1/up/t", b"early", None).await;
    assert!(early.is_closed().await);
    fx.wait_audit("mqtt.refused", "before CONNECT").await;

    // The other sensor was never disturbed.
    healthy
        .publish("kawal/s2/up/t", b"still here", Some(9))
        .await;
    assert!(matches!(healthy.recv().await.unwrap(), Packet::Puback(_)));
    assert_eq!(fx.uplink.messages().len(), 1);
    assert!(fx.server.stats().malformed >= 4);
    fx.stop().await;
}

/// G045: PL-1-1 (threat ST-D-10: input validation)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_is_refused_cleanly() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    let p = Publish::new(
        QosPid::Level2(Pid::try_from(5).unwrap()),
        TopicName::try_from("kawal/s1/up/t").unwrap(),
        Bytes::from_static(b"x"),
    );
    c.send(&Packet::Publish(p)).await.unwrap();
    assert!(c.is_closed().await);
    fx.wait_audit("mqtt.refused", "qos2").await;
    assert!(fx.uplink.messages().is_empty());
    fx.stop().await;
}

/// G045: PL-1-1 (threat ST-D-10: input validation)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_packet_is_refused_from_its_header() {
    let fx = Fixture::start(Settings {
        max_packet_bytes: 1024,
        ..Settings::default()
    })
    .await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    // Claims 2 MiB and sends none of it.
    c.send_raw(&[0x30, 0x80, 0x80, 0x80, 0x01]).await.unwrap();
    assert!(c.is_closed().await);
    fx.wait_audit("mqtt.malformed", "too-large").await;
    fx.stop().await;
}

/// Nothing that is not stored is acknowledged.
/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_puback_when_the_uplink_refuses() {
    let fx = fixture().await;
    *fx.uplink.refuse.lock().unwrap() = Some(UplinkRefusal::Full);
    let s1 = fx.ca.sensor("s1");
    let tls = fx.connector(&s1);
    let mut c = Client::connected(fx.addr(), &tls, "s1").await;
    c.publish("kawal/s1/up/t", b"x", Some(4)).await;
    loop {
        match c.recv().await {
            Ok(Packet::Puback(_)) => panic!("acknowledged a message the uplink refused"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    fx.wait_audit("mqtt.uplink-refused", "full").await;
    fx.wait_audit("mqtt.disconnected", "uplink-full").await;
    *fx.uplink.refuse.lock().unwrap() = None;
    wait_until("s1 gone", || !fx.server.broker().is_live("s1")).await;
    let mut c = Client::connected(fx.addr(), &tls, "s1").await;
    c.publish("kawal/s1/up/t", b"x", Some(4)).await;
    assert!(matches!(c.recv().await.unwrap(), Packet::Puback(_)));
    fx.stop().await;
}

/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
/// The rate limit is on what a sensor sends: a reader acknowledging deliveries at 20 times its
/// own message rate is neither throttled nor disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_deliveries_does_not_count_against_the_rate() {
    let fx = Fixture::start(Settings {
        messages: Rate { per_s: 5, burst: 5 },
        throttle_grace: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let r1 = fx.ca.sensor("r1");
    let mut reader = Client::connected(fx.addr(), &fx.connector(&r1), "r1").await;
    reader.subscribe(&["kawal/+/up/#"]).await;
    for i in 0..100u32 {
        let n = fx
            .server
            .broker()
            .publish_local("kawal/s9/up/t", &Bytes::from(i.to_string()), 1)
            .unwrap();
        assert_eq!(n, 1);
    }
    for i in 0..100u32 {
        let p = reader.next_publish().await;
        assert_eq!(p.payload, Bytes::from(i.to_string()));
    }
    assert_eq!(fx.server.stats().rate_limited, 0);
    fx.stop().await;
}

/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_over_its_rate_is_throttled_then_disconnected() {
    let fx = Fixture::start(Settings {
        messages: Rate { per_s: 5, burst: 5 },
        throttle_grace: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    let p = Packet::Publish(Publish::new(
        QosPid::Level0,
        TopicName::try_from("kawal/s1/up/t").unwrap(),
        Bytes::from_static(b"flood"),
    ));
    let wire = kawal_gateway::frame::encode(&p).unwrap();
    for _ in 0..50 {
        if c.send_raw(&wire).await.is_err() {
            break;
        }
    }
    assert!(c.is_closed().await);
    fx.wait_audit("mqtt.rate-limited", "\"s1\"").await;
    let n = fx.uplink.messages().len();
    assert!((5..50).contains(&n), "{n} messages passed");
    fx.stop().await;
}

/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_source_are_capped() {
    let fx = Fixture::start(Settings {
        max_per_source: 2,
        ..Settings::default()
    })
    .await;
    let r1 = fx.ca.sensor("r1");
    let s1 = fx.ca.sensor("s1");
    let _a = Client::connected(fx.addr(), &fx.connector(&r1), "r1").await;
    let _b = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    let s2 = fx.ca.sensor("s2");
    assert!(!gets_through(&fx, &fx.connector(&s2), "s2").await);
    fx.wait_audit("mqtt.refused", "too-many-connections").await;
    fx.stop().await;
}

/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_connect_timeout() {
    let fx = Fixture::start(Settings {
        connect_timeout: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::tls(fx.addr(), &fx.connector(&s1)).await.unwrap();
    assert!(c.is_closed().await);
    fx.wait_audit("mqtt.refused", "timeout").await;
    fx.stop().await;
}

/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_failures_are_summarised_under_a_flood() {
    let fx = Fixture::start(Settings {
        audit_refusals_per_source: 2,
        audit_window: Duration::from_millis(500),
        ..Settings::default()
    })
    .await;
    let anonymous = connector(&fx.ca, None);
    for _ in 0..8 {
        assert!(!gets_through(&fx, &anonymous, "s1").await);
    }
    let e = fx
        .wait_audit("mqtt.events-suppressed", "mqtt.refused/no-certificate")
        .await;
    assert!(e.2.contains("count"), "{e:?}");
    let individual = fx
        .audit_events("mqtt.refused")
        .iter()
        .filter(|e| e.0 == "mqtt.refused")
        .count();
    assert_eq!(
        individual, 2,
        "only the first refusals are written one by one"
    );
    fx.stop().await;
}

/// G045: AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_on_the_crl_is_refused_in_the_handshake() {
    let fx = fixture().await;
    let revoked = fx.ca.sensor_with_serial("s1", Some(&[0x51, 0x01]));
    let good = fx.ca.sensor_with_serial("s2", Some(&[0x51, 0x02]));
    fx.server
        .reload_tls(&TlsMaterial {
            chain: vec![fx.server_leaf.cert.clone()],
            key: fx.server_leaf.key(),
            sensor_roots: vec![fx.ca.cert.clone()],
            external_roots: Vec::new(),
            crls: vec![fx.ca.crl(&[&[0x51, 0x01]])],
            clock_floor: None,
        })
        .unwrap();
    assert!(!gets_through(&fx, &fx.connector(&revoked), "s1").await);
    fx.wait_audit("mqtt.refused", "revoked").await;
    assert!(gets_through(&fx, &fx.connector(&good), "s2").await);
    fx.stop().await;
}

/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_times_out() {
    let fx = Fixture::start(Settings {
        handshake_timeout: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed");
    fx.wait_audit("mqtt.refused", "tls handshake").await;
    fx.stop().await;
}

/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_is_enforced_and_bounded() {
    let fx = Fixture::start(Settings {
        keep_alive_max: 1,
        ..Settings::default()
    })
    .await;
    let s1 = fx.ca.sensor("s1");
    let tls = fx.connector(&s1);
    // Asking for more than the maximum is refused (3.1.1 cannot lower it).
    let (mut c, code) = Client::connect(fx.addr(), &tls, "s1").await.unwrap();
    assert_eq!(code, ConnectReturnCode::IdentifierRejected);
    assert!(c.is_closed().await);
    fx.wait_audit("mqtt.refused", "keep-alive-too-long").await;
    // Asking for none gets the maximum: silent for 1.5 s, the connection is closed.
    let mut c = Client::tls(fx.addr(), &tls).await.unwrap();
    c.send(&Packet::Connect(Connect::new("s1".into(), 0)))
        .await
        .unwrap();
    assert!(matches!(c.recv().await.unwrap(), Packet::Connack(_)));
    let started = std::time::Instant::now();
    assert!(c.is_closed().await);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    fx.wait_audit("mqtt.disconnected", "keep-alive-timeout")
        .await;
    fx.stop().await;
}

/// G045: PL-1-1 (threat ST-D-10: input validation)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_gets_unacceptable_protocol_version() {
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::tls(fx.addr(), &fx.connector(&s1)).await.unwrap();
    let mut v5 = vec![0x10, 0x0f, 0x00, 0x04];
    v5.extend_from_slice(b"MQTT");
    v5.extend_from_slice(&[0x05, 0x02, 0x00, 0x1e, 0x00, 0x00, 0x02, b's', b'1']);
    c.send_raw(&v5).await.unwrap();
    match c.recv().await.unwrap() {
        Packet::Connack(a) => assert_eq!(a.code, ConnectReturnCode::UnacceptableProtocolVersion),
        other => panic!("{other:?}"),
    }
    fx.wait_audit("mqtt.refused", "protocol").await;
    fx.stop().await;
}

/// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_dropped() {
    let fx = Fixture::start(Settings {
        max_packet_bytes: 4096,
        max_queued_bytes: 8192,
        inflight: 2,
        ..Settings::default()
    })
    .await;
    let r1 = fx.ca.sensor("r1");
    let mut reader = Client::connected(fx.addr(), &fx.connector(&r1), "r1").await;
    assert_eq!(
        reader.subscribe(&["kawal/+/up/#"]).await,
        [SubscribeReturnCode::MaxLevel1]
    );
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    // The reader never acknowledges: two in flight, the rest held against its budget.
    for pid in 1..=20u16 {
        c.publish("kawal/s1/up/bulk", &[0x55; 1000], Some(pid))
            .await;
    }
    fx.wait_audit("mqtt.slow-reader", "\"r1\"").await;
    assert!(reader.is_closed().await);
    // The publisher is unaffected.
    for _ in 1..=20 {
        assert!(matches!(c.recv().await.unwrap(), Packet::Puback(_)));
    }
    assert_eq!(fx.server.stats().slow_readers, 1);
    fx.stop().await;
}

/// Mosquitto's subscriber gets a retained message through the gateway as a reader.
/// G045: DS-1-1, DS-2-1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_reads_a_retained_message() {
    if std::process::Command::new("mosquitto_sub")
        .arg("--help")
        .output()
        .is_err()
    {
        println!("SKIPPED: mosquitto_sub is not installed");
        return;
    }
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let mut c = Client::connected(fx.addr(), &fx.connector(&s1), "s1").await;
    let mut p = Publish::new(
        QosPid::Level1(Pid::try_from(1).unwrap()),
        TopicName::try_from("kawal/s1/up/state").unwrap(),
        Bytes::from_static(b"retained-ok"),
    );
    p.retain = true;
    c.send(&Packet::Publish(p)).await.unwrap();
    assert!(matches!(c.recv().await.unwrap(), Packet::Puback(_)));

    let r1 = fx.ca.sensor("r1");
    let dir = fx.dir.path();
    std::fs::write(dir.join("ca.pem"), &fx.ca.cert_pem).unwrap();
    std::fs::write(dir.join("r1.pem"), &r1.cert_pem).unwrap();
    std::fs::write(dir.join("r1.key"), &r1.key_pem).unwrap();
    let child = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &fx.addr().port().to_string()])
        .arg("--cafile")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join("r1.pem"))
        .arg("--key")
        .arg(dir.join("r1.key"))
        .args([
            "-i",
            "r1",
            "-q",
            "1",
            "-t",
            "kawal/+/up/#",
            "-C",
            "1",
            "-W",
            "15",
            "-v",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kawal/s1/up/state retained-ok"),
        "stdout {stdout:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    fx.stop().await;
}

/// G045: AU-3-2
#[test]
fn identity_comes_from_the_sensor_uri_or_the_cn() {
    let ca = Ca::new("id CA");
    let leaf = ca.sensor_with_serial("KWL-S-0001", Some(&[0x0a, 0xbc, 0x01]));
    let id = identity_from_cert(&leaf.cert).unwrap();
    assert_eq!(id.uid, "KWL-S-0001");
    assert_eq!(id.serial, "abc01", "lowercase hex without leading zeros");
    let cn = ca.cn_only("legacy-7");
    assert_eq!(identity_from_cert(&cn.cert).unwrap().uid, "legacy-7");
    let bad = ca.cn_only("kawal/#");
    assert!(identity_from_cert(&bad.cert).is_err());
}

/// Mosquitto's own client publishes through the gateway with its certificate.
/// G045: DS-1-1, DS-1-2, AU-3-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_interoperates() {
    if std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        println!("SKIPPED: mosquitto_pub is not installed");
        return;
    }
    let fx = fixture().await;
    let s1 = fx.ca.sensor("s1");
    let dir = fx.dir.path();
    std::fs::write(dir.join("ca.pem"), &fx.ca.cert_pem).unwrap();
    std::fs::write(dir.join("s1.pem"), &s1.cert_pem).unwrap();
    std::fs::write(dir.join("s1.key"), &s1.key_pem).unwrap();
    let mut child = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &fx.addr().port().to_string()])
        .arg("--cafile")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join("s1.pem"))
        .arg("--key")
        .arg(dir.join("s1.key"))
        .args([
            "-i",
            "s1",
            "-q",
            "1",
            "-t",
            "kawal/s1/up/interop",
            "-m",
            "from mosquitto",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosquitto_pub did not finish");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = fx.uplink.messages();
    assert!(
        got.iter().any(|m| m.topic == "kawal/s1/up/interop"
            && m.payload == "from mosquitto"
            && m.qos == 1),
        "{got:?}"
    );
    fx.stop().await;
}
