//! Password rules (G045 AU-1-8, in the manner of NIST SP 800-63B).
//!
//! Length counts Unicode scalar values; any character is allowed. Rejected: too short or too
//! long, runs of one repeated character, ascending or descending sequences (letters, digits,
//! keyboard rows), the user name or device UID inside the password, common passwords (a shipped
//! list of 30,000, see `data/common-passwords.txt`), and passwords a strength estimator
//! (zxcvbn) rates below the configured score. Each broken rule is reported by name; no message
//! ever contains the password.
use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use kawal_crypto::secret::SecretString;
use serde::{Deserialize, Serialize};

/// The rules' settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Policy {
    /// Fewest characters (default 12).
    pub min_length: usize,
    /// Most characters (default 128; at least 64 is required).
    pub max_length: usize,
    /// Longest run of one character allowed (default 2: "aa" passes, "aaa" does not).
    pub max_repeat: usize,
    /// Longest sequence allowed (default 3: "abc" passes, "abcd" does not).
    pub max_sequence: usize,
    /// Lowest zxcvbn score accepted, 0-4 (default 3).
    pub min_score: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 128,
            max_repeat: 2,
            max_sequence: 3,
            min_score: 3,
        }
    }
}

/// A rule a password broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// Fewer characters than the minimum.
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// More characters than the maximum.
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// One character repeated too many times in a row.
    RepeatedCharacters,
    /// An ascending or descending run of letters, digits or keyboard keys.
    Sequence,
    /// Contains the user name.
    ContainsUserName,
    /// Contains the device UID.
    ContainsDeviceUid,
    /// On the list of common passwords.
    Common,
    /// Rated too easy to guess.
    TooGuessable {
        /// The estimator's score, 0-4.
        score: u8,
        /// The minimum accepted.
        min: u8,
    },
    /// The dictionary checks could not be made (the password is refused: fail closed).
    NotAssessed,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::TooShort { min } => write!(f, "must be at least {min} characters"),
            Rule::TooLong { max } => write!(f, "must be at most {max} characters"),
            Rule::RepeatedCharacters => {
                f.write_str("must not repeat one character three or more times in a row")
            }
            Rule::Sequence => f.write_str("must not contain a run such as abcd, 4321 or qwer"),
            Rule::ContainsUserName => f.write_str("must not contain the user name"),
            Rule::ContainsDeviceUid => f.write_str("must not contain the device UID"),
            Rule::Common => f.write_str("is on the list of commonly used passwords"),
            Rule::TooGuessable { score, min } => {
                write!(
                    f,
                    "is too easy to guess (strength {score} of 4, at least {min} needed)"
                )
            }
            Rule::NotAssessed => {
                f.write_str("could not be checked against the dictionaries now; try again")
            }
        }
    }
}

/// Who the password is for, so it can be checked against them.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The account's user name.
    pub user_name: &'a str,
    /// The device UID.
    pub device_uid: &'a str,
}

const ROWS: [&str; 4] = ["1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm"];

fn common() -> &'static HashSet<&'static str> {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("../data/common-passwords.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    })
}

/// How many common passwords are on the shipped list.
pub fn common_list_len() -> usize {
    common().len()
}

fn longest_run(chars: &[char]) -> usize {
    let mut best = 0;
    let mut run = 0;
    for (i, c) in chars.iter().enumerate() {
        run = if i > 0 && chars[i - 1] == *c {
            run + 1
        } else {
            1
        };
        best = best.max(run);
    }
    best
}

/// Longest run where each character is the next (or previous) one: in code points for
/// letters and digits, in position along a keyboard row otherwise.
fn longest_sequence(lower: &[char]) -> usize {
    let step = |a: char, b: char| -> Option<i32> {
        if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() {
            let d = b as i32 - a as i32;
            if d == 1 || d == -1 {
                return Some(d);
            }
        }
        for row in ROWS {
            if let (Some(i), Some(j)) = (row.find(a), row.find(b)) {
                // A row step is reported as ±2, never confused with a code-point step.
                if j == i + 1 {
                    return Some(2);
                }
                if i == j + 1 {
                    return Some(-2);
                }
            }
        }
        None
    };
    let mut best = usize::from(!lower.is_empty());
    let mut run = 1;
    let mut dir = None;
    for w in lower.windows(2) {
        match step(w[0], w[1]) {
            Some(d) if dir == Some(d) => run += 1,
            Some(d) => {
                run = 2;
                dir = Some(d);
            }
            None => {
                run = 1;
                dir = None;
            }
        }
        best = best.max(run);
    }
    best
}

/// What the dictionary checks say of a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessment {
    /// zxcvbn's score, 0-4.
    pub score: u8,
    /// On the shipped list of common passwords (compared in lower case).
    pub common: bool,
}

/// The dictionary checks: the common-password list and the zxcvbn estimate. Their tables take
/// about 8 MiB once loaded and stay loaded for the life of the process, so a long-running
/// daemon runs them elsewhere (a short-lived process of its own); see [`InProcess`].
pub trait Strength: Send + Sync {
    /// Assesses `password`; `hints` are words that make it weaker (user name, device UID).
    ///
    /// # Errors
    /// The assessment could not be made (the caller refuses the password).
    fn assess(&self, password: &SecretString, hints: &[&str]) -> Result<Assessment, String>;
}

/// The dictionary checks in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcess;

impl Strength for InProcess {
    fn assess(&self, password: &SecretString, hints: &[&str]) -> Result<Assessment, String> {
        Ok(assess(password.expose(), hints))
    }
}

/// The dictionary checks of `text` (see [`Strength`]).
#[must_use]
pub fn assess(text: &str, hints: &[&str]) -> Assessment {
    Assessment {
        score: u8::from(zxcvbn::zxcvbn(text, hints).score()),
        common: common().contains(text.to_lowercase().as_str()),
    }
}

impl Policy {
    /// Checks a new password with the dictionary checks in this process; `Err` lists every
    /// rule it breaks.
    pub fn check(&self, password: &SecretString, who: Subject<'_>) -> Result<(), Vec<Rule>> {
        self.check_with(password, who, &InProcess)
    }

    /// As [`Policy::check`], the dictionary checks by `strength`. If they cannot be made, the
    /// password is refused ([`Rule::NotAssessed`]).
    pub fn check_with(
        &self,
        password: &SecretString,
        who: Subject<'_>,
        strength: &dyn Strength,
    ) -> Result<(), Vec<Rule>> {
        let text = password.expose();
        let chars: Vec<char> = text.chars().collect();
        let lower_text = text.to_lowercase();
        let lower: Vec<char> = lower_text.chars().collect();
        let mut broken = Vec::new();
        if chars.len() < self.min_length {
            broken.push(Rule::TooShort {
                min: self.min_length,
            });
        }
        if chars.len() > self.max_length {
            broken.push(Rule::TooLong {
                max: self.max_length,
            });
            return Err(broken); // do not spend the estimator on an oversized input
        }
        if longest_run(&chars) > self.max_repeat {
            broken.push(Rule::RepeatedCharacters);
        }
        if longest_sequence(&lower) > self.max_sequence {
            broken.push(Rule::Sequence);
        }
        let user = who.user_name.to_lowercase();
        if user.chars().count() >= 3 && lower_text.contains(&user) {
            broken.push(Rule::ContainsUserName);
        }
        let uid = who.device_uid.to_lowercase();
        if !uid.is_empty() && lower_text.contains(&uid) {
            broken.push(Rule::ContainsDeviceUid);
        }
        match strength.assess(password, &[who.user_name, who.device_uid, "kawal"]) {
            Ok(a) => {
                if a.common {
                    broken.push(Rule::Common);
                }
                if a.score < self.min_score {
                    broken.push(Rule::TooGuessable {
                        score: a.score,
                        min: self.min_score,
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "password strength could not be assessed");
                broken.push(Rule::NotAssessed);
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(broken)
        }
    }

    /// Rejects settings weaker than G045 and SP 800-63B allow.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_length < 8 {
            return Err("min-length must be at least 8".into());
        }
        if self.max_length < 64 || self.max_length < self.min_length {
            return Err("max-length must be at least 64 and at least min-length".into());
        }
        if self.min_score > 4 {
            return Err("min-score is 0-4".into());
        }
        if self.max_repeat == 0 || self.max_sequence < 2 {
            return Err("max-repeat must be at least 1 and max-sequence at least 2".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// Whether `new` equals any password in `history` (the initial one and the last N), checked
/// against their Argon2id verifiers, each in constant time (G045 AU-1-1).
pub fn reused(
    new: &SecretString,
    history: &[kawal_crypto::password::PasswordHash],
) -> kawal_crypto::Result<bool> {
    let mut hit = false;
    // Every entry is checked, so the time does not tell which one matched.
    for old in history {
        hit |= kawal_crypto::password::verify(new, old)?;
    }
    Ok(hit)
}
