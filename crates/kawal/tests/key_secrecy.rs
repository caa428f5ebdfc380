//! No key byte reaches a log, an output or a file in the clear.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice,
    clippy::cast_precision_loss,
    reason = "test code: a failure should stop the test loudly"
)]
mod common;
use common::*;
use kawal_crypto::keys::*;
use kawal_crypto::password::Argon2Params;
use kawal_crypto::root::{KekInputs, RootSecret};
use kawal_store::{Sharing, Store};

/// G045: CR-1-2, CR-1-3, DS-1-3
#[test]
fn key_bytes_never_reach_logs_outputs_or_the_data_folder() {
    let (tmp, data, pw, init_output) = provisioned_with_output();
    let config = config_for(tmp.path(), &data);
    let mut outputs = String::new();
    let mut all_outputs = init_output;
    for args in [
        vec!["selftest", "--data-dir", d(&data)],
        vec!["keys", "rotate", "store-data", "--data-dir", d(&data)],
        vec!["audit", "--data-dir", d(&data), "--format", "json"],
        vec!["log", "show", "--data-dir", d(&data), "--json"],
        vec!["log", "verify", "--data-dir", d(&data)],
        vec!["config", "check", d(&config)],
    ] {
        let r = run(&args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.all());
        outputs.push_str(&r.all());
    }
    all_outputs.push_str(&outputs);
    // Recover the root and every purpose key, as only a test build can.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("device.json")).unwrap()).unwrap();
    let (binding, _) = kawal_platform::machine_binding(&kawal_platform::SysRoot::host());
    let kek = KekInputs {
        machine_binding: &binding,
        passphrase: None,
        argon2: Argon2Params::OWASP,
    };
    let root = RootSecret::unseal(
        &std::fs::read(data.join("root.sealed")).unwrap(),
        &kek,
        info["uid"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    let root_bytes = root.export_for_tests();
    let hierarchy = std::sync::Arc::new(KeyHierarchy::new(root));
    let store = Store::open(
        &data.join("store.redb"),
        hierarchy.clone(),
        Sharing::MultiProcess,
    )
    .unwrap();
    let mut secrets: Vec<(String, [u8; 32])> = vec![("root".into(), root_bytes)];
    macro_rules! purpose {
        ($($p:ident),*) => {$(
            let kv = store.key_version::<$p>().unwrap();
            secrets.push((stringify!($p).into(), hierarchy.export_for_tests::<$p>(&kv).unwrap()));
        )*};
    }
    purpose!(StoreData, Pii, RecordIndex, Session, AuditSigning);
    let disk = files(&data);
    for (name, bytes) in &secrets {
        let hexed = hex::encode(bytes);
        assert!(
            !all_outputs.contains(&hexed),
            "{name} key in command output"
        );
        for (path, content) in &disk {
            assert!(
                !contains(content, bytes),
                "{name} key bytes in {}",
                path.display()
            );
            assert!(
                !contains(content, hexed.as_bytes()),
                "{name} key hex in {}",
                path.display()
            );
        }
    }
    assert!(!outputs.contains(&pw), "admin password in later output");
}
