//! The power-up self-test (G045 PL-3-4): the daemon refuses to serve unless every check
//! passes.
//!
//! Checks, in order: a known-answer test of every cryptographic primitive
//! ([`kawal_crypto::kat`]), the RNG health test, the wall clock's sanity and a read-back of
//! the store. Any one check can be made to fail on purpose (`inject`) so that tests can show
//! the refusal path works; the daemon never injects.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kawal_crypto::{kat, rng};

use crate::clock::wall_clock_sane;

/// Name of the RNG health check.
const RNG: &str = "rng-health";
/// Name of the wall clock check.
const CLOCK: &str = "clock";
/// Name of the store read-back check.
const STORE: &str = "store";
/// The KAT whose time is left out of `total_micros_without_argon2`.
const ARGON2: &str = "argon2id";

/// One check's outcome.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// Check name, as in [`check_names`].
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// How long it took, in microseconds.
    pub micros: u64,
    /// What was checked or why it failed.
    pub detail: String,
}

/// The outcome of a whole self-test.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SelfTestReport {
    /// Every check, in the order of [`check_names`].
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub passed: bool,
    /// Wall time of the whole run, in microseconds.
    pub total_micros: u64,
    /// The same without the Argon2id KAT, which dominates the run by design (it is slow).
    pub total_micros_without_argon2: u64,
}

/// Runs the power-up self-test.
///
/// `store_check` opens the store and reads back a record, returning `Err(reason)` on failure.
/// `inject` names one check to force-fail, for tests of the refusal path: `"kat:<name>"`
/// corrupts that KAT's input, `"rng-health"` feeds the health test a stuck source, `"clock"`
/// checks a time in 1970 and `"store"` fails without calling `store_check`. A name that is
/// not in [`check_names`] injects nothing.
pub fn run(
    inject: Option<&str>,
    store_check: impl FnOnce() -> Result<(), String>,
) -> SelfTestReport {
    let start = Instant::now();
    let mut checks: Vec<Check> = kat::run_all(inject.and_then(|n| n.strip_prefix("kat:")))
        .into_iter()
        .map(|o| Check {
            name: format!("kat:{}", o.name),
            passed: o.passed,
            micros: o.micros,
            detail: if o.passed {
                "computed answer matches the published vector".to_owned()
            } else {
                "computed answer DIFFERS from the published vector".to_owned()
            },
        })
        .collect();

    checks.push(timed(RNG, || {
        let result = if inject == Some(RNG) {
            rng::health_check(4096, |buf| {
                buf.fill(0x5a);
                Ok(())
            })
        } else {
            rng::os_health_check()
        };
        result
            .map(|r| {
                format!(
                    "{} bytes, longest run {} (cut-off {}), max proportion {} (cut-off {})",
                    r.samples,
                    r.longest_run,
                    rng::REPETITION_CUTOFF,
                    r.max_proportion,
                    rng::PROPORTION_CUTOFF
                )
            })
            .map_err(|e| e.to_string())
    }));

    checks.push(timed(CLOCK, || {
        let now = if inject == Some(CLOCK) {
            UNIX_EPOCH
        } else {
            SystemTime::now()
        };
        wall_clock_sane(now).map(|()| "wall clock year within 2024..=2100".to_owned())
    }));

    checks.push(timed(STORE, || {
        if inject == Some(STORE) {
            Err("failure injected".to_owned())
        } else {
            store_check().map(|()| "store opened and a record read back".to_owned())
        }
    }));

    let total_micros = micros_since(start);
    let argon2 = checks
        .iter()
        .filter(|c| c.name.strip_prefix("kat:") == Some(ARGON2))
        .map(|c| c.micros)
        .sum::<u64>();
    SelfTestReport {
        passed: checks.iter().all(|c| c.passed),
        checks,
        total_micros,
        total_micros_without_argon2: total_micros.saturating_sub(argon2),
    }
}

/// The names [`run`] produces, in order.
pub fn check_names() -> Vec<String> {
    kat::NAMES
        .iter()
        .map(|n| format!("kat:{n}"))
        .chain([RNG, CLOCK, STORE].map(str::to_owned))
        .collect()
}

fn timed(name: &str, f: impl FnOnce() -> Result<String, String>) -> Check {
    let start = Instant::now();
    let outcome = f();
    let micros = micros_since(start);
    let (passed, detail) = match outcome {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Check {
        name: name.to_owned(),
        passed,
        micros,
        detail,
    }
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}
