//! The GPIO tamper input (G045 PH-2-1) against a simulated chip (the kernel's gpio-sim).
//!
//! Needs root and `/sys/kernel/config/gpio-sim` (configfs mounted, `gpio-sim` loaded). Where
//! either is missing the test says so and returns without checking anything; the debounce
//! logic it relies on is tested without hardware in `tamper/debounce.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure should stop the test loudly"
)]
#![allow(
    clippy::disallowed_macros,
    reason = "the test says when it could not run"
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kawal_platform::tamper::{
    ActiveLevel, Alert, Destroy, Error, GpioInput, InputKind, Monitor, ResponseReport,
    TamperResponse, is_locked,
};

const CONFIGFS: &str = "/sys/kernel/config/gpio-sim";

/// A simulated chip with 8 lines, torn down on drop.
struct SimChip {
    dir: PathBuf,
    chip: PathBuf,
    sysfs: PathBuf,
}

impl SimChip {
    fn new(name: &str) -> std::io::Result<Self> {
        let dir = Path::new(CONFIGFS).join(name);
        std::fs::create_dir(&dir)?;
        std::fs::create_dir(dir.join("bank0"))?;
        std::fs::write(dir.join("bank0/num_lines"), "8")?;
        std::fs::write(dir.join("live"), "1")?;
        let dev_name = std::fs::read_to_string(dir.join("dev_name"))?;
        let chip_name = std::fs::read_to_string(dir.join("bank0/chip_name"))?;
        let (dev_name, chip_name) = (dev_name.trim(), chip_name.trim());
        Ok(Self {
            chip: Path::new("/dev").join(chip_name),
            sysfs: Path::new("/sys/devices/platform")
                .join(dev_name)
                .join(chip_name),
            dir,
        })
    }

    /// Pulls line `offset` up (high) or down (low).
    fn set(&self, offset: u32, high: bool) {
        let pull = if high { "pull-up" } else { "pull-down" };
        std::fs::write(self.sysfs.join(format!("sim_gpio{offset}/pull")), pull).unwrap();
    }
}

impl Drop for SimChip {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("live"), "0");
        let _ = std::fs::remove_dir(self.dir.join("bank0"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[derive(Default)]
struct Recorder {
    destroyed: Mutex<bool>,
    alerted: Mutex<bool>,
}

impl Destroy for Recorder {
    fn destroy_keys(&self) -> Result<(), String> {
        *self.destroyed.lock().unwrap() = true;
        Ok(())
    }
}

impl Alert for Recorder {
    fn tamper(&self, _report: &ResponseReport) -> Result<(), String> {
        *self.alerted.lock().unwrap() = true;
        Ok(())
    }
    fn fault(&self, _input: &str, _error: &Error) {}
}

/// G045: PH-2-1
#[test]
fn a_gpio_line_held_at_the_tamper_level_triggers_and_a_bounce_does_not() {
    if !Path::new(CONFIGFS).is_dir() {
        eprintln!("tamper_gpio: NOT RUN: {CONFIGFS} is missing (gpio-sim not available)");
        return;
    }
    let sim = match SimChip::new(&format!("kawal-tamper-{}", std::process::id())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tamper_gpio: NOT RUN: cannot create a gpio-sim chip: {e}");
            return;
        }
    };
    // Lid switch to ground: normally pulled up, tamper when low.
    sim.set(3, true);
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("root.sealed");
    std::fs::write(&blob, [7u8; kawal_crypto::root::SEALED_LEN]).unwrap();
    let rec = Arc::new(Recorder::default());
    let response = TamperResponse::new(dir.path(), &blob, rec.clone(), rec.clone());
    let input = GpioInput::new(
        "lid",
        &sim.chip,
        3,
        ActiveLevel::Low,
        Duration::from_millis(20),
    );
    let monitor = Monitor::start(vec![Box::new(input)], response).unwrap();
    assert!(
        monitor.report().faults.is_empty(),
        "{:?}",
        monitor.report().faults
    );

    // A 2 ms bounce is not tamper.
    sim.set(3, false);
    std::thread::sleep(Duration::from_millis(2));
    sim.set(3, true);
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !monitor.fired(),
        "a bounce shorter than the debounce period"
    );

    // Held low: tamper.
    sim.set(3, false);
    let report = monitor
        .wait_response(Duration::from_secs(5))
        .expect("the line ran the response");
    assert!(report.complete(), "{report:#?}");
    assert!(*rec.destroyed.lock().unwrap() && *rec.alerted.lock().unwrap());
    assert!(!blob.exists());
    assert_eq!(is_locked(dir.path()).unwrap().kind, Some(InputKind::Gpio));
    assert!(report.keys_destroyed_after < Duration::from_millis(100));
    drop(monitor);
}
