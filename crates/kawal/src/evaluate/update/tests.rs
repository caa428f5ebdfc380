//! The update verdicts on fake and real slots, roots and route tables.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
use kawal_update::bundle::{BundleBuilder, PAYLOAD_DIR};
use kawal_update::slots::{Committed, Trial};

use super::*;

fn settings(dir: &Path) -> UpdateSettings {
    UpdateSettings {
        source: UpdateSource::Dir(dir.join("published")),
        product: "kawal-gateway".into(),
        hardware: "board-x1".into(),
        root: dir.join("update/root.json"),
        datastore: dir.join("update/tuf"),
        slots: dir.join("slots"),
        health_checks: Vec::new(),
    }
}

fn state(slot: Slot, version: &str) -> BootState {
    BootState::new(
        Committed {
            slot,
            version: version.into(),
            security_version: 1,
        },
        1_700_000_000,
    )
}

fn verified(slot: Slot, version: &str) -> SlotCheck {
    SlotCheck {
        slot,
        path: format!("/var/lib/kawal/slots/{}", slot.dir_name()).into(),
        contents: SlotContents::Verified {
            version: version.into(),
            files: 1,
            bytes: 4096,
        },
    }
}

fn good_root() -> RootFacts {
    let role = |name: &str| {
        (
            name.to_owned(),
            Some(RoleFacts {
                role: name.to_owned(),
                threshold: 1,
                keyids: 1,
                key_types: vec!["ecdsa".into()],
            }),
        )
    };
    RootFacts {
        version: 1,
        expires: "2030-01-01T00:00:00Z".into(),
        expired: false,
        spec_version: "1.0.0".into(),
        keys: 4,
        roles: ["root", "timestamp", "snapshot", "targets"]
            .into_iter()
            .map(role)
            .collect(),
        self_signed: Ok(()),
    }
}

fn configured() -> UpdateFacts {
    let dir = Path::new("/var/lib/kawal");
    UpdateFacts {
        routes: route_rules(kawal_api::ROUTES),
        log: UpdateLog::default(),
        configured: Some(Configured {
            settings: settings(dir),
            state: Ok(state(Slot::A, "0.1.0")),
            slots: vec![
                verified(Slot::A, "0.1.0"),
                SlotCheck {
                    slot: Slot::B,
                    path: "/var/lib/kawal/slots/b".into(),
                    contents: SlotContents::Empty,
                },
            ],
            root: Ok(good_root()),
            datastore: Vec::new(),
            source_present: true,
        }),
    }
}

fn by_code(u: &UpdateFacts) -> BTreeMap<String, Finding> {
    findings(u, &BTreeMap::new())
        .into_iter()
        .map(|f| (f.code.clone(), f))
        .collect()
}

fn text(f: &Finding) -> String {
    let mut s: Vec<String> = f
        .evidence
        .iter()
        .map(|e| format!("{}: {}", e.label, e.value))
        .collect();
    s.extend(f.reason.clone());
    s.join("\n")
}

/// G045: PL-2-1, PL-2-2, PL-2-3
#[test]
fn a_configured_device_with_a_good_committed_slot_and_root_meets_all_three() {
    let f = by_code(&configured());
    for code in ["PL-2-1", "PL-2-2", "PL-2-3"] {
        assert_eq!(f[code].verdict, Verdict::Met, "{code}: {}", text(&f[code]));
    }
    let pl21 = text(&f["PL-2-1"]);
    assert!(pl21.contains(ROUTE_TEST), "{pl21}");
    assert!(
        pl21.contains(
            "POST /api/v1/update/apply: roles: admin, updater; re-authentication right before: yes"
        ),
        "{pl21}"
    );
    let pl22 = text(&f["PL-2-2"]);
    assert!(pl22.contains("committed: slot a, version 0.1.0"), "{pl22}");
    assert!(
        pl22.contains("slot a (committed), verified now: verifies"),
        "{pl22}"
    );
    assert!(pl22.contains("empty"), "{pl22}");
    let pl23 = text(&f["PL-2-3"]);
    assert!(pl23.contains("version 1, expires 2030"), "{pl23}");
    assert!(
        pl23.contains("root: threshold 1 of 1 key(s) (1 ecdsa)"),
        "{pl23}"
    );
}

/// G045: PL-2-1, PL-2-2, PL-2-3
#[test]
fn without_update_settings_none_is_met() {
    let mut u = configured();
    u.configured = None;
    let f = by_code(&u);
    for code in ["PL-2-1", "PL-2-2", "PL-2-3"] {
        assert_eq!(f[code].verdict, Verdict::NotMet, "{code}");
        assert_eq!(f[code].reason.as_deref(), Some(NOT_CONFIGURED), "{code}");
    }
    // The route rule still shows, for the assessor.
    assert!(text(&f["PL-2-1"]).contains("the update routes answer 503"));
}

/// G045: PL-2-1
#[test]
fn the_compiled_route_table_keeps_the_update_rule() {
    let rules = route_rules(kawal_api::ROUTES);
    assert_eq!(route_problems(&rules), Vec::<String>::new());
    // Reading the status is not an update: open to every role, without re-authentication.
    let status = rules
        .iter()
        .find(|r| r.method == "GET" && r.path == "/api/v1/update")
        .unwrap();
    assert!(!status.reauth);
}

/// G045: PL-2-1
#[test]
fn a_route_open_to_another_role_or_without_reauth_fails_pl_2_1() {
    let mut u = configured();
    for r in &mut u.routes {
        if r.path == "/api/v1/update/apply" {
            r.roles = vec![Role::Admin, Role::Operator, Role::Updater];
        }
        if r.path == "/update/rollback" {
            r.reauth = false;
        }
    }
    u.routes.retain(|r| r.path != "/api/v1/update/rollback");
    let f = &by_code(&u)["PL-2-1"];
    assert_eq!(f.verdict, Verdict::NotMet);
    let reason = f.reason.clone().unwrap();
    assert!(
        reason.contains("/api/v1/update/apply is open to admin, operator, updater"),
        "{reason}"
    );
    assert!(
        reason.contains("POST /update/rollback does not ask for re-authentication"),
        "{reason}"
    );
    assert!(
        reason.contains("POST /api/v1/update/rollback is not in the route table"),
        "{reason}"
    );
}

/// G045: PL-2-2
#[test]
fn a_trial_in_progress_is_shown_and_the_committed_slot_still_decides() {
    let mut u = configured();
    let c = u.configured.as_mut().unwrap();
    let mut s = state(Slot::A, "0.1.0");
    s.trial = Some(Trial {
        slot: Slot::B,
        version: "0.2.0".into(),
        security_version: 2,
        boots_used: 1,
        max_boots: 2,
        started_at_unix: 1_700_000_100,
        deadline_s: 60,
    });
    s.failed = vec!["0.1.5".into()];
    c.state = Ok(s);
    c.slots[1] = verified(Slot::B, "0.2.0");
    let f = &by_code(&u)["PL-2-2"];
    assert_eq!(f.verdict, Verdict::Met, "{}", text(f));
    let t = text(f);
    assert!(
        t.contains("trial in progress: version 0.2.0 in slot b: 1 of 2 boot(s) used"),
        "{t}"
    );
    assert!(
        t.contains("slot b (on trial), verified now: verifies"),
        "{t}"
    );
    assert!(t.contains("failed versions: 0.1.5"), "{t}");
}

/// G045: PL-2-2
#[test]
fn a_corrupt_empty_or_mislabelled_committed_slot_fails_pl_2_2() {
    let mut u = configured();
    u.configured.as_mut().unwrap().slots[0].contents =
        SlotContents::Fails("kawal: SHA-256 differs from the manifest".into());
    let f = &by_code(&u)["PL-2-2"];
    assert_eq!(f.verdict, Verdict::NotMet);
    let reason = f.reason.clone().unwrap();
    assert!(
        reason.contains("committed slot a does not verify") && reason.contains("SHA-256"),
        "{reason}"
    );

    u.configured.as_mut().unwrap().slots[0].contents = SlotContents::Empty;
    let reason = by_code(&u)["PL-2-2"].reason.clone().unwrap();
    assert!(reason.contains("committed slot a is empty"), "{reason}");

    u.configured.as_mut().unwrap().slots[0] = verified(Slot::A, "0.0.9");
    let reason = by_code(&u)["PL-2-2"].reason.clone().unwrap();
    assert!(reason.contains("holds version 0.0.9"), "{reason}");

    u.configured.as_mut().unwrap().state = Err("no boot state at /x".into());
    let reason = by_code(&u)["PL-2-2"].reason.clone().unwrap();
    assert!(reason.contains("boot state cannot be read"), "{reason}");
}

/// G045: PL-2-3
#[test]
fn no_root_or_a_root_that_cannot_anchor_fails_pl_2_3() {
    let mut u = configured();
    u.configured.as_mut().unwrap().root =
        Err("/var/lib/kawal/update/root.json: No such file or directory".into());
    let f = &by_code(&u)["PL-2-3"];
    assert_eq!(f.verdict, Verdict::NotMet);
    assert!(
        f.reason.clone().unwrap().contains("no usable trusted root"),
        "{f:?}"
    );

    let mut root = good_root();
    root.roles[1].1 = None;
    if let Some(targets) = root.roles[3].1.as_mut() {
        targets.threshold = 2;
    }
    root.self_signed = Err("signature threshold not met".into());
    u.configured.as_mut().unwrap().root = Ok(root);
    let reason = by_code(&u)["PL-2-3"].reason.clone().unwrap();
    assert!(reason.contains("no keys to the timestamp role"), "{reason}");
    assert!(
        reason.contains("targets role needs 2 signature(s) but the root holds only 1"),
        "{reason}"
    );
    assert!(reason.contains("own signatures do not verify"), "{reason}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// G045: PL-2-3
#[test]
fn a_vendor_root_is_read_and_a_changed_one_no_longer_verifies_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    runtime()
        .block_on(kawal_update::repo::init(
            &repo,
            &kawal_update::repo::InitOptions::default(),
        ))
        .unwrap();
    let path = repo.join("metadata/1.root.json");
    let r = read_root(&path, 0).unwrap();
    assert_eq!(r.version, 1);
    assert!(!r.expired);
    assert_eq!(r.self_signed, Ok(()));
    assert!(root_problems(&r).is_empty(), "{:?}", root_problems(&r));
    assert!(r.roles.iter().all(|(_, k)| {
        k.as_ref()
            .is_some_and(|k| k.threshold == 1 && k.key_types.len() == 1)
    }));
    // Far in the future, it has expired (and says so), which alone does not fail it.
    assert!(read_root(&path, i64::MAX).unwrap().expired);

    // A threshold raised after signing: the signatures no longer cover it.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["signed"]["roles"]["targets"]["threshold"] = 2.into();
    let changed = tmp.path().join("changed.json");
    std::fs::write(&changed, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = read_root(&changed, 0).unwrap();
    let problems = root_problems(&r).join("; ");
    assert!(problems.contains("targets role needs 2"), "{problems}");
    assert!(
        problems.contains("own signatures do not verify"),
        "{problems}"
    );

    std::fs::write(&changed, b"{\"signed\": {}}").unwrap();
    assert!(
        read_root(&changed, 0)
            .unwrap_err()
            .contains("not a TUF root")
    );
    assert!(read_root(&tmp.path().join("none.json"), 0).is_err());
}

/// G045: PL-2-2
#[test]
fn a_slot_is_checked_against_its_manifest_now() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    std::fs::create_dir_all(dir.join(PAYLOAD_DIR)).unwrap();
    assert_eq!(check_slot(Slot::A, &dir).contents, SlotContents::Empty);

    let body = b"#!/bin/sh\nexit 0\n".to_vec();
    let mut b = BundleBuilder::new("kawal-gateway", "0.1.0", 0, ["board-x1"]);
    b.file("kawal", 0o755, body.clone());
    let manifest = b.manifest().unwrap();
    std::fs::write(dir.join(PAYLOAD_DIR).join("kawal"), &body).unwrap();
    std::fs::write(dir.join(MANIFEST_NAME), manifest.to_toml().unwrap()).unwrap();
    assert_eq!(
        check_slot(Slot::A, &dir).contents,
        SlotContents::Verified {
            version: "0.1.0".into(),
            files: 1,
            bytes: body.len() as u64,
        }
    );

    let mut flipped = body;
    flipped[3] ^= 0x01;
    std::fs::write(dir.join(PAYLOAD_DIR).join("kawal"), &flipped).unwrap();
    assert!(
        matches!(check_slot(Slot::A, &dir).contents, SlotContents::Fails(why) if why.contains("SHA-256")),
    );
}

/// G045: PL-4-1
#[test]
fn pl_4_1_names_every_update_event_the_daemon_writes() {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/update.rs")).unwrap();
    // Every string literal that starts with "update." and is an event name.
    let written: Vec<String> = src
        .split("\"update.")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|tail| {
            tail.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'-')
        })
        .map(|tail| format!("update.{tail}"))
        .collect();
    assert!(written.len() > 10, "{written:?}");
    for name in written {
        assert!(
            super::super::UPDATE_EVENTS.contains(&name.as_str()),
            "{name}"
        );
    }
}

/// G045: PL-2-3
#[test]
fn the_datastore_versions_are_read_by_role() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(read_datastore(tmp.path()).is_empty());
    std::fs::write(
        tmp.path().join("timestamp.json"),
        br#"{"signed": {"_type": "timestamp", "version": 7}}"#,
    )
    .unwrap();
    std::fs::write(tmp.path().join("snapshot.json"), b"not json").unwrap();
    let got = read_datastore(tmp.path());
    assert_eq!(got[0], ("timestamp".to_owned(), Ok(7)));
    assert_eq!(got[1].0, "snapshot");
    assert!(got[1].1.is_err());
}
