//! Topic names and filters (MQTT 3.1.1 §4.7), checked beyond what the codec checks (ST-D-10).
//!
//! The codec (`mqtt-proto`, ADR 0004) already refuses invalid UTF-8, and wildcards or U+0000
//! in topic names. It accepts an empty topic name, and it has no length or depth limit; those
//! rules live here, together with filter matching and filter containment (which the ACL uses
//! to decide whether a subscription stays inside what a role may read).
//!
//! Matching follows the specification: `+` matches exactly one level, `#` (last level only)
//! matches the parent level and any number of levels below it, and a filter whose first level
//! is a wildcard never matches a topic whose first level starts with `$` (§4.7.2).

/// The level separator.
pub const SEP: char = '/';
/// The single-level wildcard.
pub const ONE: &str = "+";
/// The multi-level wildcard.
pub const ALL: &str = "#";

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Topic names and filters must be at least one byte long (§4.7.3).
    #[error("empty topic")]
    Empty,
    /// Longer than the configured maximum.
    #[error("topic is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More levels than the configured maximum.
    #[error("topic has {depth} levels, more than the limit of {max}")]
    TooDeep {
        /// Number of levels.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// U+0000 is not allowed anywhere in a topic (§4.7.3).
    #[error("topic contains U+0000")]
    Nul,
    /// Topic names (as opposed to filters) must not contain `+` or `#`.
    #[error("wildcard in a topic name")]
    WildcardInName,
    /// `#` must be a whole level and the last one.
    #[error("`#` must be the last level on its own")]
    BadMultiWildcard,
    /// `+` must be a whole level.
    #[error("`+` must be a level on its own")]
    BadSingleWildcard,
}

/// Length and depth limits for topic names and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRules {
    /// Longest topic name or filter, in bytes (default 256).
    pub max_len: usize,
    /// Most levels (default 16).
    pub max_depth: usize,
}

impl Default for TopicRules {
    fn default() -> Self {
        Self {
            max_len: 256,
            max_depth: 16,
        }
    }
}

impl TopicRules {
    fn check_common(&self, s: &str) -> Result<(), TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        if s.len() > self.max_len {
            return Err(TopicError::TooLong {
                len: s.len(),
                max: self.max_len,
            });
        }
        if s.contains('\0') {
            return Err(TopicError::Nul);
        }
        let depth = s.split(SEP).count();
        if depth > self.max_depth {
            return Err(TopicError::TooDeep {
                depth,
                max: self.max_depth,
            });
        }
        Ok(())
    }

    /// Checks a topic name (what PUBLISH and a will carry).
    ///
    /// # Errors
    /// The first rule `name` breaks.
    pub fn check_name(&self, name: &str) -> Result<(), TopicError> {
        self.check_common(name)?;
        if name.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        Ok(())
    }

    /// Checks a topic filter (what SUBSCRIBE and UNSUBSCRIBE carry, and ACL templates).
    ///
    /// # Errors
    /// The first rule `filter` breaks.
    pub fn check_filter(&self, filter: &str) -> Result<(), TopicError> {
        self.check_common(filter)?;
        let mut levels = filter.split(SEP).peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') && (level != ALL || levels.peek().is_some()) {
                return Err(TopicError::BadMultiWildcard);
            }
            if level.contains('+') && level != ONE {
                return Err(TopicError::BadSingleWildcard);
            }
        }
        Ok(())
    }
}

/// Whether the (valid) filter `filter` matches the (valid) topic name `topic`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split(SEP);
    let mut t = topic.split(SEP);
    loop {
        match (f.next(), t.next()) {
            (Some(ALL), _) => return true,
            (Some(ONE), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic that the (valid) filter `inner` matches is also matched by the
/// (valid) filter `outer`: whether a subscription to `inner` stays inside `outer`.
///
/// `kawal/+/up/#` contains `kawal/s1/up/t` and `kawal/s1/up/#`, but not `kawal/#` nor `#`.
pub fn filter_contains(outer: &str, inner: &str) -> bool {
    // A leading wildcard in `outer` does not match `$` topics, so it cannot contain a filter
    // whose first level is a `$` literal.
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut o = outer.split(SEP);
    let mut i = inner.split(SEP);
    loop {
        match (o.next(), i.next()) {
            (Some(ALL), _) => return true,
            // `inner` matches any depth here; only `#` in `outer` covers that.
            (Some(_), Some(ALL)) => return false,
            (Some(ONE), Some(_)) => {}
            (Some(ol), Some(il)) if ol == il => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PL-1-1 (threat ST-D-10: input validation)
    #[test]
    fn refuses_bad_names() {
        let r = TopicRules::default();
        assert_eq!(r.check_name(""), Err(TopicError::Empty));
        assert_eq!(r.check_name("a\0b"), Err(TopicError::Nul));
        assert_eq!(r.check_name("a/+/b"), Err(TopicError::WildcardInName));
        assert_eq!(r.check_name("a/#"), Err(TopicError::WildcardInName));
        assert!(matches!(
            r.check_name(&"x".repeat(257)),
            Err(TopicError::TooLong { len: 257, max: 256 })
        ));
        assert!(matches!(
            r.check_name(&["a"; 17].join("/")),
            Err(TopicError::TooDeep { depth: 17, .. })
        ));
        assert!(r.check_name(&["a"; 16].join("/")).is_ok());
        assert!(r.check_name("kawal/s1/up/temp").is_ok());
        assert!(
            r.check_name("/").is_ok(),
            "two empty levels are a valid name"
        );
    }

    /// G045: PL-1-1 (threat ST-D-10: input validation)
    #[test]
    fn refuses_bad_filters() {
        let r = TopicRules::default();
        for bad in ["", "a/#/b", "a#", "#a", "a/b#", "a+/b", "a/+b", "++", "a\0"] {
            assert!(r.check_filter(bad).is_err(), "{bad:?}");
        }
        for good in ["#", "+", "a/#", "+/+/#", "a/+/c", "/+", "$SYS/#"] {
            assert!(r.check_filter(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn matches_per_specification() {
        assert!(matches("#", "a/b"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/+", "a"));
        assert!(matches("+/+", "/x"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
    }

    /// G045: DS-2-1
    #[test]
    fn containment_is_strict() {
        assert!(filter_contains("kawal/+/up/#", "kawal/s1/up/t"));
        assert!(filter_contains("kawal/+/up/#", "kawal/s1/up/#"));
        assert!(filter_contains("kawal/+/up/#", "kawal/+/up/+"));
        assert!(filter_contains("kawal/+/up/#", "kawal/s1/up"));
        assert!(!filter_contains("kawal/+/up/#", "kawal/#"));
        assert!(!filter_contains("kawal/+/up/#", "#"));
        assert!(!filter_contains("kawal/+/up/#", "kawal/+/+/#"));
        assert!(!filter_contains("kawal/s1/down/#", "kawal/+/down/#"));
        assert!(filter_contains("kawal/s1/down/#", "kawal/s1/down/cmd"));
        assert!(!filter_contains("kawal/s1/down/#", "kawal/s1"));
        assert!(!filter_contains("a/+", "a/b/c"));
        assert!(filter_contains("a/+", "a/+"));
        assert!(!filter_contains("a/b", "a/+"));
        assert!(filter_contains("#", "a/#"));
        assert!(!filter_contains("#", "$SYS/#"));
        assert!(!filter_contains("+/x", "$SYS/x"));
    }
}
