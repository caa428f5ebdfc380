//! The power-up self-test refuses on any failed check (G045 PL-3-4).

use kawal_platform::selftest::{check_names, run};

/// G045: PL-3-4
#[test]
fn all_checks_pass_normally_in_order() {
    let mut called = false;
    let report = run(None, || {
        called = true;
        Ok(())
    });
    assert!(called, "store_check was not called");
    let names: Vec<String> = report.checks.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, check_names());
    for c in &report.checks {
        assert!(c.passed, "{}: {}", c.name, c.detail);
    }
    assert!(report.passed);
    assert!(report.total_micros >= report.total_micros_without_argon2);
    assert!(check_names().contains(&"kat:argon2id".to_owned()));
}

/// G045: PL-3-4
#[test]
fn each_injected_failure_fails_exactly_that_check() {
    for name in check_names() {
        let mut called = false;
        let report = run(Some(&name), || {
            called = true;
            Ok(())
        });
        assert!(!report.passed, "{name}: report passed");
        for c in &report.checks {
            assert_eq!(
                c.passed,
                c.name != name,
                "inject {name}: {} {}",
                c.name,
                c.detail
            );
        }
        assert_eq!(
            called,
            name != "store",
            "inject {name}: store_check called={called}"
        );
    }
}

/// G045: PL-3-4
#[test]
fn a_failing_store_check_fails_the_self_test() {
    let report = run(None, || Err("record unreadable".to_owned()));
    assert!(!report.passed);
    let store = report.checks.iter().find(|c| c.name == "store").unwrap();
    assert!(!store.passed);
    assert_eq!(store.detail, "record unreadable");
}
