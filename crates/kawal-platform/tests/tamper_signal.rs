//! The signal tamper input (G045 PH-2-1): the enclosure's supervisor signals the daemon.
//!
//! A file of its own, so the signal raised here reaches no other test's process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure should stop the test loudly"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kawal_platform::tamper::{
    Alert, Config, Destroy, Error, InputKind, Monitor, ResponseReport, TamperResponse, is_locked,
};

#[derive(Default)]
struct Recorder {
    destroyed: Mutex<bool>,
    events: Mutex<Vec<String>>,
}

impl Destroy for Recorder {
    fn destroy_keys(&self) -> Result<(), String> {
        *self.destroyed.lock().unwrap() = true;
        Ok(())
    }
}

impl Alert for Recorder {
    fn tamper(&self, report: &ResponseReport) -> Result<(), String> {
        self.events.lock().unwrap().push(report.lock.reason.clone());
        Ok(())
    }
    fn fault(&self, _input: &str, _error: &Error) {}
}

/// G045: PH-2-1
#[test]
fn a_configured_signal_triggers_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("root.sealed");
    std::fs::write(&blob, [7u8; kawal_crypto::root::SEALED_LEN]).unwrap();
    let config = Config::from_toml(
        "[[input]]\nname = \"supervisor\"\nkind = \"signal\"\nsignal = \"SIGUSR2\"\n",
    )
    .unwrap()
    .validate()
    .unwrap();
    let rec = Arc::new(Recorder::default());
    let response = TamperResponse::new(dir.path(), &blob, rec.clone(), rec.clone());
    // Once started, the handler is installed: the signal no longer terminates the process.
    let monitor = Monitor::start(config.build(), response).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(!monitor.fired());
    signal_hook::low_level::raise(libc::SIGUSR2).unwrap();
    let report = monitor
        .wait_response(Duration::from_secs(5))
        .expect("the signal ran the response");
    assert!(report.complete(), "{report:#?}");
    assert!(*rec.destroyed.lock().unwrap());
    assert!(!blob.exists());
    let info = is_locked(dir.path()).unwrap();
    assert_eq!(info.input, "supervisor");
    assert_eq!(info.kind, Some(InputKind::Signal));
    assert_eq!(
        *rec.events.lock().unwrap(),
        vec!["signal SIGUSR2 received".to_owned()]
    );
    assert!(report.keys_destroyed_after < Duration::from_millis(100));
    let r = monitor.stop();
    assert!(r.faults.is_empty(), "{:?}", r.faults);
    // The handler stays installed: a late signal is caught and changes nothing.
    signal_hook::low_level::raise(libc::SIGUSR2).unwrap();
}
