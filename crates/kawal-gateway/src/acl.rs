//! Per-device information-flow rules (G045 DS-2-1): which topics a sensor may publish to and
//! which filters it may subscribe to, by the role it was enrolled with.
//!
//! Each role has publish and subscribe *templates*: topic filters in which `{uid}` stands for
//! the sensor's UID (from its certificate). Templates are checked when the ACL is built: a
//! template that is not a valid filter once `{uid}` is filled in, or that names any other
//! placeholder, is an error naming the role and template, so a bad configuration stops the
//! daemon instead of silently allowing or denying.
//!
//! - A PUBLISH (and a will) is allowed when its topic name matches one of the role's publish
//!   templates.
//! - A SUBSCRIBE filter is allowed only when it is *contained in* one of the role's subscribe
//!   templates ([`crate::topic::filter_contains`]): a sensor that subscribes to `#` is refused,
//!   never narrowed to what it may read.
//! - A role that is not configured may do nothing.
//! - A UID that could change a template's meaning (one with `/`, `+`, `#`, a control
//!   character, or empty) matches no template containing `{uid}` ([`uid_is_safe`]).

use std::collections::BTreeMap;
use std::fmt;

use crate::topic::{self, TopicError, TopicRules};

/// The placeholder for the sensor's UID.
pub const UID_PLACEHOLDER: &str = "uid";
/// Longest UID accepted, in bytes.
pub const MAX_UID_LEN: usize = 128;

/// One role's templates, as configured (`[mqtt.acl.<role>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleRules {
    /// Topic filters the role may publish to.
    pub publish: Vec<String>,
    /// Filters the role may subscribe within.
    pub subscribe: Vec<String>,
}

/// The ACL as configured: role name to templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclConfig {
    /// The roles.
    pub roles: BTreeMap<String, RoleRules>,
}

impl Default for AclConfig {
    /// `sensor`: publish `kawal/{uid}/up/#`, subscribe `kawal/{uid}/down/#`;
    /// `reader` (a local consumer): subscribe `kawal/+/up/#`, publish nothing.
    fn default() -> Self {
        let mut roles = BTreeMap::new();
        roles.insert(
            "sensor".to_owned(),
            RoleRules {
                publish: vec!["kawal/{uid}/up/#".to_owned()],
                subscribe: vec!["kawal/{uid}/down/#".to_owned()],
            },
        );
        roles.insert(
            "reader".to_owned(),
            RoleRules {
                publish: Vec::new(),
                subscribe: vec!["kawal/+/up/#".to_owned()],
            },
        );
        Self { roles }
    }
}

impl AclConfig {
    /// From the daemon's validated form: role to `(publish, subscribe)`.
    pub fn from_pairs(pairs: &BTreeMap<String, (Vec<String>, Vec<String>)>) -> Self {
        Self {
            roles: pairs
                .iter()
                .map(|(role, (publish, subscribe))| {
                    (
                        role.clone(),
                        RoleRules {
                            publish: publish.clone(),
                            subscribe: subscribe.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// What a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// PUBLISH and wills.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
}

impl Action {
    /// The name used in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A template that cannot be used (operator misconfiguration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// A `{name}` other than `{uid}`.
    #[error(
        "mqtt.acl.{role}: {action} template {template:?}: unknown placeholder {{{placeholder}}}"
    )]
    UnknownPlaceholder {
        /// The role.
        role: String,
        /// Publish or subscribe.
        action: Action,
        /// The template as written.
        template: String,
        /// The placeholder's name.
        placeholder: String,
    },
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("mqtt.acl.{role}: {action} template {template:?}: unbalanced braces")]
    Unbalanced {
        /// The role.
        role: String,
        /// Publish or subscribe.
        action: Action,
        /// The template as written.
        template: String,
    },
    /// Not a valid topic filter once `{uid}` is filled in.
    #[error(
        "mqtt.acl.{role}: {action} template {template:?} is not a valid topic filter: {source}"
    )]
    BadFilter {
        /// The role.
        role: String,
        /// Publish or subscribe.
        action: Action,
        /// The template as written.
        template: String,
        /// Why.
        #[source]
        source: TopicError,
    },
    /// An empty role name.
    #[error("mqtt.acl: empty role name")]
    EmptyRole,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Uid,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    parts: Vec<Part>,
    has_uid: bool,
}

impl Template {
    fn parse(role: &str, action: Action, text: &str) -> Result<Self, AclError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let unbalanced = || AclError::Unbalanced {
            role: role.to_owned(),
            action,
            template: text.to_owned(),
        };
        while let Some(open) = rest.find(['{', '}']) {
            let (lit, tail) = rest.split_at(open);
            if tail.starts_with('}') {
                return Err(unbalanced());
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(lit.to_owned()));
            }
            let tail = tail.get(1..).unwrap_or_default();
            let close = tail.find('}').ok_or_else(unbalanced)?;
            let (name, after) = tail.split_at(close);
            if name.contains('{') {
                return Err(unbalanced());
            }
            if name != UID_PLACEHOLDER {
                return Err(AclError::UnknownPlaceholder {
                    role: role.to_owned(),
                    action,
                    template: text.to_owned(),
                    placeholder: name.to_owned(),
                });
            }
            parts.push(Part::Uid);
            rest = after.get(1..).unwrap_or_default();
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        let has_uid = parts.contains(&Part::Uid);
        Ok(Self { parts, has_uid })
    }

    /// The filter for `uid`, or `None` when the template needs a UID and `uid` is unsafe.
    fn render(&self, uid: &str) -> Option<String> {
        if self.has_uid && !uid_is_safe(uid) {
            return None;
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Uid => out.push_str(uid),
            }
        }
        Some(out)
    }
}

/// Whether `uid` can be put into a topic without changing its structure: 1 to
/// [`MAX_UID_LEN`] bytes, no `/`, `+`, `#`, `$` at the start, or control characters.
pub fn uid_is_safe(uid: &str) -> bool {
    (1..=MAX_UID_LEN).contains(&uid.len())
        && !uid.starts_with('$')
        && !uid
            .chars()
            .any(|c| matches!(c, '/' | '+' | '#') || c.is_control())
}

#[derive(Debug, Clone, Default)]
struct Role {
    publish: Vec<Template>,
    subscribe: Vec<Template>,
}

/// The checked ACL.
#[derive(Debug, Clone)]
pub struct Acl {
    roles: BTreeMap<String, Role>,
}

impl Acl {
    /// Parses and checks every template of `config` against `rules`.
    ///
    /// # Errors
    /// Every template that cannot be used.
    pub fn new(config: &AclConfig, rules: &TopicRules) -> Result<Self, Vec<AclError>> {
        let mut errors = Vec::new();
        let mut roles = BTreeMap::new();
        for (name, rr) in &config.roles {
            if name.is_empty() {
                errors.push(AclError::EmptyRole);
                continue;
            }
            let mut role = Role::default();
            for (action, texts, into) in [
                (Action::Publish, &rr.publish, &mut role.publish),
                (Action::Subscribe, &rr.subscribe, &mut role.subscribe),
            ] {
                for text in texts {
                    match Template::parse(name, action, text).and_then(|t| {
                        // A short sample UID: the limits are checked on real topics later.
                        let sample = t.render("u").unwrap_or_default();
                        rules.check_filter(&sample).map(|()| t).map_err(|source| {
                            AclError::BadFilter {
                                role: name.clone(),
                                action,
                                template: text.clone(),
                                source,
                            }
                        })
                    }) {
                        Ok(t) => into.push(t),
                        Err(e) => errors.push(e),
                    }
                }
            }
            roles.insert(name.clone(), role);
        }
        if errors.is_empty() {
            Ok(Self { roles })
        } else {
            Err(errors)
        }
    }

    /// Whether `role` is configured.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    /// Whether a sensor `uid` of `role` may publish to the topic name `topic` (also used for
    /// wills).
    pub fn may_publish(&self, role: &str, uid: &str, topic: &str) -> bool {
        self.roles.get(role).is_some_and(|r| {
            r.publish
                .iter()
                .filter_map(|t| t.render(uid))
                .any(|f| topic::matches(&f, topic))
        })
    }

    /// Whether a sensor `uid` of `role` may subscribe to the filter `filter`: it must lie
    /// entirely within one of the role's subscribe templates.
    pub fn may_subscribe(&self, role: &str, uid: &str, filter: &str) -> bool {
        self.roles.get(role).is_some_and(|r| {
            r.subscribe
                .iter()
                .filter_map(|t| t.render(uid))
                .any(|outer| topic::filter_contains(&outer, filter))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_acl() -> Acl {
        Acl::new(&AclConfig::default(), &TopicRules::default()).unwrap()
    }

    /// G045: DS-2-1
    #[test]
    fn sensor_publishes_only_in_its_own_lane() {
        let acl = default_acl();
        assert!(acl.may_publish("sensor", "s1", "kawal/s1/up/temp"));
        assert!(acl.may_publish("sensor", "s1", "kawal/s1/up"));
        assert!(!acl.may_publish("sensor", "s1", "kawal/s2/up/temp"));
        assert!(!acl.may_publish("sensor", "s1", "kawal/s1/down/cmd"));
        assert!(!acl.may_publish("sensor", "s1", "other"));
        assert!(!acl.may_publish("reader", "r1", "kawal/r1/up/x"));
        assert!(!acl.may_publish("nobody", "s1", "kawal/s1/up/x"));
    }

    /// G045: DS-2-1
    #[test]
    fn subscriptions_must_be_contained_not_narrowed() {
        let acl = default_acl();
        assert!(acl.may_subscribe("sensor", "s1", "kawal/s1/down/#"));
        assert!(acl.may_subscribe("sensor", "s1", "kawal/s1/down/cmd"));
        assert!(!acl.may_subscribe("sensor", "s1", "#"));
        assert!(!acl.may_subscribe("sensor", "s1", "kawal/#"));
        assert!(!acl.may_subscribe("sensor", "s1", "kawal/+/down/#"));
        assert!(!acl.may_subscribe("sensor", "s1", "kawal/s2/down/#"));
        assert!(acl.may_subscribe("reader", "r1", "kawal/+/up/#"));
        assert!(acl.may_subscribe("reader", "r1", "kawal/s9/up/t"));
        assert!(!acl.may_subscribe("reader", "r1", "kawal/+/down/#"));
        assert!(!acl.may_subscribe("reader", "r1", "#"));
    }

    /// G045: DS-2-1
    #[test]
    fn a_uid_with_topic_syntax_matches_nothing() {
        let acl = default_acl();
        for uid in ["", "a/b", "+", "#", "$SYS", "a\nb", &"x".repeat(129)] {
            assert!(!acl.may_publish("sensor", uid, "kawal/a/b/up/x"), "{uid:?}");
            assert!(
                !acl.may_subscribe("sensor", uid, "kawal/+/down/#"),
                "{uid:?}"
            );
        }
        assert!(uid_is_safe("KWL-0001.sensor_a"));
    }

    #[test]
    fn bad_templates_are_named() {
        let mut roles = BTreeMap::new();
        roles.insert(
            "x".to_owned(),
            RoleRules {
                publish: vec!["a/{device}/#".into(), "a/#/b".into(), "a/{uid".into()],
                subscribe: vec!["b/}".into(), "ok/{uid}/+".into(), "".into()],
            },
        );
        let errs = Acl::new(&AclConfig { roles }, &TopicRules::default()).unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(
            matches!(&errs[0], AclError::UnknownPlaceholder { placeholder, .. } if placeholder == "device")
        );
        assert!(matches!(&errs[1], AclError::BadFilter { template, .. } if template == "a/#/b"));
        assert!(matches!(errs[2], AclError::Unbalanced { .. }));
        assert!(matches!(errs[3], AclError::Unbalanced { .. }));
        assert!(matches!(
            errs[4],
            AclError::BadFilter {
                source: TopicError::Empty,
                ..
            }
        ));
        assert!(errs[0].to_string().contains("mqtt.acl.x"));
    }

    #[test]
    fn placeholder_may_sit_inside_a_level() {
        let mut roles = BTreeMap::new();
        roles.insert(
            "dev".to_owned(),
            RoleRules {
                publish: vec!["site/dev-{uid}/+".into()],
                subscribe: Vec::new(),
            },
        );
        let acl = Acl::new(&AclConfig { roles }, &TopicRules::default()).unwrap();
        assert!(acl.may_publish("dev", "7", "site/dev-7/t"));
        assert!(!acl.may_publish("dev", "7", "site/dev-8/t"));
    }
}
