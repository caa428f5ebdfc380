//! Optional per-topic payload rules: a size limit and a JSON check for what sensors publish
//! (G045 PL-1-1; threat ST-D-10, input validation).
//!
//! The operator lists rules (`[[mqtt.payload]]`), each a topic filter in which `{uid}` stands
//! for the publishing sensor's UID, with an optional `max-bytes` and an optional JSON check.
//! For every PUBLISH and every will of a sensor:
//!
//! - the **first** rule whose filter matches the topic name decides; later rules are not
//!   looked at, so a narrow rule goes before a broad one;
//! - a topic that no rule matches is not checked (the rules are optional);
//! - `max-bytes` limits the payload (not the packet) in bytes;
//! - a JSON check requires the payload to be one JSON value (RFC 8259) in UTF-8, with only
//!   whitespace around it, nested at most [`MAX_JSON_DEPTH`] deep; [`JsonCheck::Object`] also
//!   requires that value to be an object. The empty payload is not JSON, so under such a rule
//!   a sensor cannot clear a retained message with it.
//!
//! The check builds no tree: the payload is parsed into [`serde::de::IgnoredAny`], so its cost
//! is linear in its size and bounded by [`crate::limits::Settings::max_packet_bytes`]. A
//! refusal ([`PayloadRefusal`]) names the rule and what failed, never the payload: the
//! connection turns it into `mqtt.denied` with `reason = "payload"` and closes, as for an ACL
//! denial (see [`crate::conn`]). Commands from upstream ([`crate::broker::Broker::publish_local`])
//! are not sensors' input and are not checked.
//!
//! A `{uid}` rule is matched with the UID put in literally. The listener only admits UIDs for
//! which that cannot change the filter ([`crate::acl::uid_is_safe`]); should [`check`] see
//! another, such a rule counts as matching, so that the stricter reading applies.

use serde::de::IgnoredAny;

use crate::acl::uid_is_safe;
use crate::topic::{self, TopicRules};

/// The `{uid}` placeholder as written in a rule's topic.
const UID: &str = "{uid}";

/// How deep JSON arrays and objects may nest (serde_json's own limit when it builds values).
/// Parsing into [`IgnoredAny`] is iterative in serde_json and has no limit, so the depth is
/// counted here: the gateway is not at risk, but a consumer upstream that parses recursively
/// would be.
pub const MAX_JSON_DEPTH: usize = 128;

/// What a rule requires of the payload's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JsonCheck {
    /// Any bytes (only the size is checked).
    #[default]
    Off,
    /// One JSON value in UTF-8 (`json = true`).
    Value,
    /// One JSON object in UTF-8 (`json = true`, `json-object = true`).
    Object,
}

/// One rule, as configured (`[[mqtt.payload]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRule {
    /// The topic filter the rule applies to; `{uid}` stands for the sensor's UID.
    pub topic: String,
    /// Largest payload in bytes; `None` leaves the size to
    /// [`crate::limits::Settings::max_packet_bytes`].
    pub max_bytes: Option<usize>,
    /// The format check.
    pub json: JsonCheck,
}

impl PayloadRule {
    /// What makes the rule unusable under these limits, if anything: a topic that is not a
    /// valid filter once `{uid}` is filled in (or has another placeholder), a `max_bytes` of 0
    /// or above the packet limit, or a rule that checks nothing.
    pub fn problem(&self, rules: &TopicRules, max_packet_bytes: usize) -> Option<&'static str> {
        // A short sample UID, as for the ACL: the limits are checked on real topics later.
        let sample = self.topic.replace(UID, "u");
        if sample.contains(['{', '}']) {
            return Some("topic: {uid} is the only placeholder");
        }
        if rules.check_filter(&sample).is_err() {
            return Some("topic is not a valid topic filter");
        }
        match self.max_bytes {
            Some(0) => Some("max-bytes must be at least 1"),
            Some(n) if n > max_packet_bytes => Some("max-bytes is above max-packet-bytes"),
            None if self.json == JsonCheck::Off => Some("the rule checks neither size nor JSON"),
            _ => None,
        }
    }

    /// Whether the rule applies to `topic_name` published by `uid`.
    fn applies(&self, topic_name: &str, uid: &str) -> bool {
        if !self.topic.contains(UID) {
            return topic::matches(&self.topic, topic_name);
        }
        if !uid_is_safe(uid) {
            return true;
        }
        topic::matches(&self.topic.replace(UID, uid), topic_name)
    }

    /// Checks `payload` against this rule alone.
    fn verify(&self, payload: &[u8]) -> Result<(), PayloadRefusal> {
        if let Some(max) = self.max_bytes
            && payload.len() > max
        {
            return Err(PayloadRefusal::TooLarge {
                rule: self.topic.clone(),
                len: payload.len(),
                max,
            });
        }
        if self.json == JsonCheck::Off {
            return Ok(());
        }
        // Checked first: serde_json does not check UTF-8 inside strings it ignores.
        let Ok(text) = std::str::from_utf8(payload) else {
            return Err(PayloadRefusal::NotUtf8 {
                rule: self.topic.clone(),
            });
        };
        if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
            return Err(PayloadRefusal::NotJson {
                rule: self.topic.clone(),
                line: e.line(),
                column: e.column(),
            });
        }
        if nesting(text) > MAX_JSON_DEPTH {
            return Err(PayloadRefusal::TooDeep {
                rule: self.topic.clone(),
                max: MAX_JSON_DEPTH,
            });
        }
        // The parse succeeded, so the first non-whitespace byte starts the value.
        let object = text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{');
        if self.json == JsonCheck::Object && !object {
            return Err(PayloadRefusal::NotObject {
                rule: self.topic.clone(),
            });
        }
        Ok(())
    }
}

/// The deepest nesting of arrays and objects in `text`, which is valid JSON.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// What failed, as written in the audit log (`failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// The payload is larger than the rule's `max-bytes`.
    Size,
    /// The payload is not the JSON the rule asks for.
    Json,
}

impl Failed {
    /// The name used in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Json => "json",
        }
    }
}

/// Why a payload was refused. Caused by the peer; it names the rule (its topic as configured)
/// and never includes the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadRefusal {
    /// Larger than the rule allows.
    #[error("payload rule {rule:?}: {len} bytes, more than {max}")]
    TooLarge {
        /// The rule's topic.
        rule: String,
        /// The payload's size in bytes.
        len: usize,
        /// The rule's `max-bytes`.
        max: usize,
    },
    /// The rule asks for JSON and the payload is not UTF-8.
    #[error("payload rule {rule:?}: not UTF-8")]
    NotUtf8 {
        /// The rule's topic.
        rule: String,
    },
    /// The rule asks for JSON and the payload does not parse (or nests too deep).
    #[error("payload rule {rule:?}: not JSON (at line {line} column {column})")]
    NotJson {
        /// The rule's topic.
        rule: String,
        /// Where parsing stopped: the line (from 1).
        line: usize,
        /// Where parsing stopped: the column (from 1; 0 at the end of the input).
        column: usize,
    },
    /// The rule asks for JSON and the payload nests arrays and objects too deep.
    #[error("payload rule {rule:?}: JSON nested deeper than {max}")]
    TooDeep {
        /// The rule's topic.
        rule: String,
        /// [`MAX_JSON_DEPTH`].
        max: usize,
    },
    /// The rule asks for a JSON object and the payload is another JSON value.
    #[error("payload rule {rule:?}: JSON, but not an object")]
    NotObject {
        /// The rule's topic.
        rule: String,
    },
}

impl PayloadRefusal {
    /// The topic of the rule that refused, as configured.
    pub fn rule(&self) -> &str {
        match self {
            Self::TooLarge { rule, .. }
            | Self::NotUtf8 { rule }
            | Self::NotJson { rule, .. }
            | Self::TooDeep { rule, .. }
            | Self::NotObject { rule } => rule,
        }
    }

    /// Which check failed.
    pub fn failed(&self) -> Failed {
        match self {
            Self::TooLarge { .. } => Failed::Size,
            Self::NotUtf8 { .. }
            | Self::NotJson { .. }
            | Self::TooDeep { .. }
            | Self::NotObject { .. } => Failed::Json,
        }
    }

    /// What failed in more detail, without the rule or the payload (for the audit log).
    pub fn detail(&self) -> String {
        match self {
            Self::TooLarge { len, max, .. } => format!("{len} bytes, more than {max}"),
            Self::NotUtf8 { .. } => "not UTF-8".to_owned(),
            Self::NotJson { line, column, .. } => {
                format!("not JSON (at line {line} column {column})")
            }
            Self::TooDeep { max, .. } => format!("JSON nested deeper than {max}"),
            Self::NotObject { .. } => "JSON, but not an object".to_owned(),
        }
    }
}

/// Checks `payload`, published to `topic_name` by the sensor `uid`, against the first of
/// `rules` that applies (none applying: allowed).
///
/// # Errors
/// [`PayloadRefusal`] when the first matching rule refuses the payload.
pub fn check(
    rules: &[PayloadRule],
    topic_name: &str,
    uid: &str,
    payload: &[u8],
) -> Result<(), PayloadRefusal> {
    rules
        .iter()
        .find(|r| r.applies(topic_name, uid))
        .map_or(Ok(()), |r| r.verify(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(topic: &str, max_bytes: Option<usize>, json: JsonCheck) -> PayloadRule {
        PayloadRule {
            topic: topic.to_owned(),
            max_bytes,
            json,
        }
    }

    fn telemetry_rules() -> Vec<PayloadRule> {
        vec![
            rule("kawal/{uid}/up/telemetry", Some(64), JsonCheck::Object),
            rule("kawal/+/up/#", Some(16), JsonCheck::Off),
        ]
    }

    /// G045: PL-1-1
    /// threat ST-D-10
    #[test]
    fn oversized_payload_is_refused_with_the_rule_and_sizes() {
        let rules = telemetry_rules();
        assert_eq!(check(&rules, "kawal/s1/up/raw", "s1", &[0; 16]), Ok(()));
        let e = check(&rules, "kawal/s1/up/raw", "s1", &[0; 17]).unwrap_err();
        assert_eq!(
            e,
            PayloadRefusal::TooLarge {
                rule: "kawal/+/up/#".into(),
                len: 17,
                max: 16
            }
        );
        assert_eq!(e.failed().as_str(), "size");
        assert_eq!(e.rule(), "kawal/+/up/#");
    }

    /// G045: PL-1-1
    /// threat ST-D-10
    #[test]
    fn json_rules_refuse_what_is_not_json_and_never_echo_it() {
        let rules = vec![rule("t/json", None, JsonCheck::Value)];
        for good in [
            &br#"{"t": 21.5}"#[..],
            b"[1, 2, 3]",
            b" 42 ",
            b"\"text\"",
            b"null",
            "{\"name\":\"caf\u{e9}\"}".as_bytes(),
        ] {
            assert_eq!(
                check(&rules, "t/json", "s1", good),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
        for bad in [
            &b""[..],
            b"secret-token 21.5",
            b"{\"t\": 1",
            b"{\"t\": 1} trailing",
            b"{\"t\": 1}{\"t\": 2}",
            b"{'t': 1}",
            b"\xef\xbb\xbf{}",
        ] {
            let e = check(&rules, "t/json", "s1", bad).unwrap_err();
            assert_eq!(e.failed(), Failed::Json, "{e}");
            assert!(!e.to_string().contains("secret"), "{e}");
            assert!(!e.detail().contains("secret"), "{e}");
        }
        // Invalid UTF-8 inside a string, which serde_json would skip over when ignoring it.
        let e = check(&rules, "t/json", "s1", b"{\"a\": \"\xff\xfe\"}").unwrap_err();
        assert!(matches!(e, PayloadRefusal::NotUtf8 { .. }), "{e:?}");
    }

    /// G045: PL-1-1
    /// threat ST-D-10
    #[test]
    fn json_object_rule_refuses_other_values() {
        let rules = vec![rule("t", None, JsonCheck::Object)];
        assert_eq!(check(&rules, "t", "s1", b"\n {\"a\": [1]}\n"), Ok(()));
        for other in [&b"[]"[..], b"1", b"\"{}\"", b"true"] {
            let e = check(&rules, "t", "s1", other).unwrap_err();
            assert!(matches!(e, PayloadRefusal::NotObject { .. }), "{e:?}");
            assert_eq!(e.failed(), Failed::Json);
        }
    }

    /// G045: PL-1-1
    /// threat ST-D-10
    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        let rules = vec![rule("t", None, JsonCheck::Value)];
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check(&rules, "t", "s1", nested(128).as_bytes()), Ok(()));
        for n in [129, 100_000] {
            let e = check(&rules, "t", "s1", nested(n).as_bytes()).unwrap_err();
            assert!(
                matches!(e, PayloadRefusal::TooDeep { max: 128, .. }),
                "{e:?}"
            );
            assert_eq!(e.failed(), Failed::Json);
        }
        // Brackets inside strings (escaped quotes included) do not count.
        let quoted = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert_eq!(check(&rules, "t", "s1", quoted.as_bytes()), Ok(()));
        // An escaped backslash ends before the closing quote: what follows counts again.
        let after = format!(r#"{{"a": "\\", "b": {}}}"#, nested(128));
        assert!(check(&rules, "t", "s1", after.as_bytes()).is_err());
    }

    /// G045: PL-1-1
    #[test]
    fn first_matching_rule_wins_and_unmatched_topics_pass() {
        let rules = telemetry_rules();
        // 40 bytes of JSON: above the broad rule's 16 but the narrow rule comes first.
        let body = br#"{"temperature": 21.5, "humidity": 40.0}"#;
        assert_eq!(check(&rules, "kawal/s1/up/telemetry", "s1", body), Ok(()));
        // Another sensor's lane: the {uid} rule does not match, the broad one does.
        assert!(matches!(
            check(&rules, "kawal/s2/up/telemetry", "s1", body),
            Err(PayloadRefusal::TooLarge { .. })
        ));
        // No rule matches: anything goes.
        assert_eq!(check(&rules, "other/topic", "s1", &[0xff; 1000]), Ok(()));
        assert_eq!(check(&[], "kawal/s1/up/telemetry", "s1", b"x"), Ok(()));
        // With the rules the other way round, the broad rule decides.
        let reversed: Vec<_> = rules.into_iter().rev().collect();
        assert!(check(&reversed, "kawal/s1/up/telemetry", "s1", body).is_err());
    }

    #[test]
    fn an_unsafe_uid_gets_the_stricter_reading() {
        let rules = vec![rule("kawal/{uid}/up/#", Some(4), JsonCheck::Off)];
        assert!(check(&rules, "kawal/a/b/up/x", "a/b", b"12345").is_err());
        assert!(check(&rules, "anything", "+", b"12345").is_err());
        assert_eq!(check(&rules, "kawal/s1/up/x", "s1", b"1234"), Ok(()));
    }

    #[test]
    fn unusable_rules_are_named() {
        let t = TopicRules::default();
        let ok = rule("kawal/{uid}/up/telemetry", Some(1024), JsonCheck::Value);
        assert_eq!(ok.problem(&t, 65_536), None);
        assert_eq!(rule("a/#", None, JsonCheck::Object).problem(&t, 128), None);
        for bad in [
            rule("a/#/b", Some(1), JsonCheck::Off),
            rule("", Some(1), JsonCheck::Off),
            rule("a/{device}", Some(1), JsonCheck::Off),
            rule("a/{uid", Some(1), JsonCheck::Off),
            rule("a/b+", Some(1), JsonCheck::Off),
            rule("a", Some(0), JsonCheck::Value),
            rule("a", Some(65_537), JsonCheck::Value),
            rule("a", None, JsonCheck::Off),
        ] {
            assert!(bad.problem(&t, 65_536).is_some(), "{bad:?}");
        }
    }
}
