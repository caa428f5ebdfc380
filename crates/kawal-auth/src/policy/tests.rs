//! Each rule rejects what it should, accepts what it should, and never echoes the password.
use super::*;

const WHO: Subject<'static> = Subject {
    user_name: "operator7",
    device_uid: "kw-abc123xyz",
};

fn broken(p: &str) -> Vec<Rule> {
    Policy::default()
        .check(&SecretString::new(p.into()), WHO)
        .err()
        .unwrap_or_default()
}

/// G045: AU-1-8
#[test]
fn strong_passphrases_pass() {
    for p in [
        "correct horse battery staple",
        "Tr4vel-Mug!Lantern-92",
        "gunung kinabalu berkabus pagi",
        "Ünïcödé pässwörd 雨の夜",
    ] {
        assert_eq!(broken(p), vec![], "{p}");
    }
}

/// G045: AU-1-8
#[test]
fn each_rule_names_what_it_rejects() {
    let cases: [(&str, Rule); 8] = [
        ("Sh0rt!x", Rule::TooShort { min: 12 }),
        ("zebra-mmmm-violin-92", Rule::RepeatedCharacters),
        ("violet-abcd-harbour-7", Rule::Sequence),
        ("violet-9876-harbour-x", Rule::Sequence),
        ("violet-qwer-harbour-x", Rule::Sequence),
        ("harbour-OPERATOR7-violet", Rule::ContainsUserName),
        ("harbour-kw-abc123xyz-v", Rule::ContainsDeviceUid),
        ("password1234", Rule::Common),
    ];
    for (p, rule) in cases {
        let b = broken(p);
        assert!(b.contains(&rule), "{p}: expected {rule:?}, got {b:?}");
    }
    assert!(broken("aaaaaaaaaaaaaaaaaaa").contains(&Rule::TooGuessable { score: 0, min: 3 }));
    assert!(broken(&"x".repeat(200)).contains(&Rule::TooLong { max: 128 }));
}

/// G045: AU-1-8, AU-2-3
#[test]
fn messages_never_contain_the_password() {
    for p in ["password1234", "violet-abcd-harbour-7", "Sh0rt!x"] {
        for rule in broken(p) {
            assert!(!rule.to_string().contains(p), "{rule}");
        }
    }
}

#[test]
fn the_shipped_list_is_large_enough() {
    assert!(common_list_len() >= 10_000, "{}", common_list_len());
}

#[test]
fn weak_settings_are_refused() {
    assert!(Policy::default().validate().is_ok());
    assert!(
        Policy {
            min_length: 6,
            ..Policy::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        Policy {
            max_length: 32,
            ..Policy::default()
        }
        .validate()
        .is_err()
    );
}

/// G045: AU-1-1
#[test]
fn a_password_from_the_history_is_refused() {
    use kawal_crypto::password::{Argon2Params, hash};
    let old: Vec<_> = ["first-pass-phrase-1", "second-pass-phrase-2"]
        .iter()
        .map(|p| hash(&SecretString::new((*p).into()), Argon2Params::TEST).unwrap())
        .collect();
    assert!(reused(&SecretString::new("second-pass-phrase-2".into()), &old).unwrap());
    assert!(!reused(&SecretString::new("third-pass-phrase-3".into()), &old).unwrap());
}
