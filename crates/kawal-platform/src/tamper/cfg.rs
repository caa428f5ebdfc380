//! The tamper configuration: which inputs a device watches.
//!
//! [`Config`] is what deserialises from the `[tamper]` table; [`Config::validate`] checks every
//! input, collects *all* problems, and gives a [`ValidConfig`], the only form that builds
//! inputs. See the module doc of [`super`] for the TOML format.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Error, FileInput, GpioInput, Result, SignalInput, TamperInput};

/// The `[tamper]` table as written, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// The inputs, one `[[tamper.input]]` each; default none (tamper detection off).
    pub input: Vec<InputConfig>,
}

/// One `[[tamper.input]]`, selected by its `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum InputConfig {
    /// `kind = "gpio"`: a GPIO line.
    #[serde(rename_all = "kebab-case")]
    Gpio {
        /// A unique name for the log and the lock marker.
        name: String,
        /// The chip's character device, e.g. `/dev/gpiochip0`.
        chip: PathBuf,
        /// The line offset on the chip.
        line: u32,
        /// The level that means tamper; default `high`.
        #[serde(default)]
        active: ActiveLevel,
        /// How long the line must stay at the tamper level before it counts; default 5 ms,
        /// at most [`MAX_DEBOUNCE`].
        #[serde(default = "default_debounce_ms")]
        debounce_ms: u64,
    },
    /// `kind = "file"`: a file or sysfs attribute.
    #[serde(rename_all = "kebab-case")]
    File {
        /// A unique name for the log and the lock marker.
        name: String,
        /// The absolute path of the file or attribute.
        path: PathBuf,
        /// The content (trimmed of ASCII whitespace) that means tamper; default `"1"`.
        #[serde(default = "default_value")]
        value: String,
        /// How often to read it; default 10 ms, from 1 to [`MAX_INTERVAL`].
        #[serde(default = "default_interval_ms")]
        interval_ms: u64,
        /// What an unreadable or missing file means; default `tamper`.
        #[serde(default)]
        on_unreadable: OnUnreadable,
    },
    /// `kind = "signal"`: a Unix signal from the enclosure's supervisor.
    #[serde(rename_all = "kebab-case")]
    Signal {
        /// A unique name for the log and the lock marker.
        name: String,
        /// `SIGUSR1`, `SIGUSR2` or `SIGRTMIN+N`.
        signal: String,
    },
}

fn default_debounce_ms() -> u64 {
    5
}
fn default_value() -> String {
    "1".to_owned()
}
fn default_interval_ms() -> u64 {
    10
}

/// The longest debounce period accepted: longer would eat the response's time budget.
pub const MAX_DEBOUNCE: Duration = Duration::from_millis(50);
/// The longest file polling interval accepted, for the same reason.
pub const MAX_INTERVAL: Duration = Duration::from_millis(50);

/// The GPIO level that means tamper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActiveLevel {
    /// Tamper when the line is high.
    #[default]
    High,
    /// Tamper when the line is low.
    Low,
}

/// What a file input does when its file cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnreadable {
    /// Treat it as tamper: a supervisor attribute that disappears means its driver was
    /// unbound or the board changed. The safe default.
    #[default]
    Tamper,
    /// Report it as a fault of the input and keep polling. Unsafe unless the file is known to
    /// come and go for harmless reasons: an attacker who removes it goes undetected.
    Fault,
}

/// A signal a tamper input may watch: SIGUSR1, SIGUSR2 or a realtime signal. Others are the
/// daemon's own (SIGTERM, SIGHUP, ...) or cannot be caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSpec {
    name: String,
    number: i32,
}

impl SignalSpec {
    /// Parses `SIGUSR1`, `SIGUSR2` or `SIGRTMIN+N` (N from 0 to SIGRTMAX − SIGRTMIN).
    pub fn parse(s: &str) -> std::result::Result<Self, &'static str> {
        let number = match s {
            "SIGUSR1" => libc::SIGUSR1,
            "SIGUSR2" => libc::SIGUSR2,
            _ => {
                let n = s.strip_prefix("SIGRTMIN+").ok_or(
                    "must be SIGUSR1, SIGUSR2 or SIGRTMIN+N (other signals are kawal's own or cannot be caught)",
                )?;
                if n.is_empty() || n.len() > 2 || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("SIGRTMIN+N needs a small decimal N");
                }
                let n: i32 = n
                    .parse()
                    .map_err(|_| "SIGRTMIN+N needs a small decimal N")?;
                let sig = libc::SIGRTMIN() + n;
                if sig > libc::SIGRTMAX() {
                    return Err("SIGRTMIN+N is past SIGRTMAX on this system");
                }
                sig
            }
        };
        Ok(Self {
            name: s.to_owned(),
            number,
        })
    }

    /// The name as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signal number on this system.
    pub fn number(&self) -> i32 {
        self.number
    }
}

/// A checked input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidInput {
    /// A GPIO line.
    Gpio {
        /// Unique name.
        name: String,
        /// The chip's character device.
        chip: PathBuf,
        /// The line offset.
        line: u32,
        /// The tamper level.
        active: ActiveLevel,
        /// The debounce period.
        debounce: Duration,
    },
    /// A file or sysfs attribute.
    File {
        /// Unique name.
        name: String,
        /// The absolute path.
        path: PathBuf,
        /// The trimmed content that means tamper.
        value: String,
        /// The polling interval.
        interval: Duration,
        /// What an unreadable file means.
        on_unreadable: OnUnreadable,
    },
    /// A Unix signal.
    Signal {
        /// Unique name.
        name: String,
        /// The signal.
        signal: SignalSpec,
    },
}

impl ValidInput {
    /// Builds the input, ready for a [`super::Monitor`]. Nothing is opened until it first waits.
    pub fn build(&self) -> Box<dyn TamperInput> {
        match self {
            Self::Gpio {
                name,
                chip,
                line,
                active,
                debounce,
            } => Box::new(GpioInput::new(name, chip, *line, *active, *debounce)),
            Self::File {
                name,
                path,
                value,
                interval,
                on_unreadable,
            } => Box::new(
                FileInput::new(name, path, value)
                    .interval(*interval)
                    .on_unreadable(*on_unreadable),
            ),
            Self::Signal { name, signal } => Box::new(SignalInput::new(name, signal.clone())),
        }
    }
}

/// A checked tamper configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidConfig {
    /// The inputs, in configuration order.
    pub inputs: Vec<ValidInput>,
}

impl ValidConfig {
    /// Builds every input.
    pub fn build(&self) -> Vec<Box<dyn TamperInput>> {
        self.inputs.iter().map(ValidInput::build).collect()
    }
}

impl Config {
    /// Parses the `[tamper]` table's TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::InvalidConfig {
            problems: vec![e.to_string().trim_end().to_owned()],
        })
    }

    /// Checks every input and collects every problem.
    pub fn validate(&self) -> Result<ValidConfig> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        let mut signals = HashSet::new();
        let mut lines = HashSet::new();
        let mut inputs = Vec::new();
        for (i, input) in self.input.iter().enumerate() {
            let name = input.name();
            let mut bad = |field: &str, what: &str| {
                problems.push(format!("input {} {name:?}: {field}: {what}", i + 1));
            };
            if let Err(what) = check_name(name) {
                bad("name", what);
            } else if !names.insert(name.to_owned()) {
                bad("name", "used by an earlier input");
            }
            match input {
                InputConfig::Gpio {
                    chip,
                    line,
                    active,
                    debounce_ms,
                    ..
                } => {
                    if !chip.is_absolute() || !chip.starts_with("/dev") {
                        bad("chip", "must be a character device under /dev");
                    }
                    let debounce = Duration::from_millis(*debounce_ms);
                    if debounce > MAX_DEBOUNCE {
                        bad("debounce-ms", "at most 50 ms");
                    }
                    if !lines.insert((chip.clone(), *line)) {
                        bad("line", "watched by an earlier input");
                    }
                    inputs.push(ValidInput::Gpio {
                        name: name.to_owned(),
                        chip: chip.clone(),
                        line: *line,
                        active: *active,
                        debounce,
                    });
                }
                InputConfig::File {
                    path,
                    value,
                    interval_ms,
                    on_unreadable,
                    ..
                } => {
                    if !path.is_absolute() || has_dot_dot(path) {
                        bad("path", "must be absolute, without `..`");
                    }
                    let trimmed = value.trim_ascii();
                    if trimmed.is_empty() || trimmed.len() > 64 || trimmed != value {
                        bad(
                            "value",
                            "1 to 64 characters, without leading or trailing whitespace",
                        );
                    }
                    let interval = Duration::from_millis(*interval_ms);
                    if interval.is_zero() || interval > MAX_INTERVAL {
                        bad("interval-ms", "from 1 to 50 ms");
                    }
                    inputs.push(ValidInput::File {
                        name: name.to_owned(),
                        path: path.clone(),
                        value: value.clone(),
                        interval,
                        on_unreadable: *on_unreadable,
                    });
                }
                InputConfig::Signal { signal, .. } => match SignalSpec::parse(signal) {
                    Ok(spec) => {
                        if !signals.insert(spec.number()) {
                            bad("signal", "watched by an earlier input");
                        }
                        inputs.push(ValidInput::Signal {
                            name: name.to_owned(),
                            signal: spec,
                        });
                    }
                    Err(what) => bad("signal", what),
                },
            }
        }
        if problems.is_empty() {
            Ok(ValidConfig { inputs })
        } else {
            Err(Error::InvalidConfig { problems })
        }
    }
}

impl InputConfig {
    /// The input's configured name.
    pub fn name(&self) -> &str {
        match self {
            Self::Gpio { name, .. } | Self::File { name, .. } | Self::Signal { name, .. } => name,
        }
    }
}

fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err("only ASCII letters, digits, `-`, `_` and `.`");
    }
    Ok(())
}

fn has_dot_dot(p: &Path) -> bool {
    p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ValidConfig> {
        Config::from_toml(text)?.validate()
    }

    /// G045: PH-2-1
    #[test]
    fn accepts_all_three_kinds_with_defaults() {
        let v = parse(
            r#"
            [[input]]
            name = "lid"
            kind = "gpio"
            chip = "/dev/gpiochip0"
            line = 17
            active = "low"

            [[input]]
            name = "attr"
            kind = "file"
            path = "/sys/devices/platform/supervisor/tamper"

            [[input]]
            name = "sup"
            kind = "signal"
            signal = "SIGRTMIN+3"
            "#,
        )
        .unwrap();
        assert_eq!(v.inputs.len(), 3);
        assert_eq!(
            v.inputs[0],
            ValidInput::Gpio {
                name: "lid".into(),
                chip: "/dev/gpiochip0".into(),
                line: 17,
                active: ActiveLevel::Low,
                debounce: Duration::from_millis(5),
            }
        );
        assert_eq!(
            v.inputs[1],
            ValidInput::File {
                name: "attr".into(),
                path: "/sys/devices/platform/supervisor/tamper".into(),
                value: "1".into(),
                interval: Duration::from_millis(10),
                on_unreadable: OnUnreadable::Tamper,
            }
        );
        match &v.inputs[2] {
            ValidInput::Signal { signal, .. } => {
                assert_eq!(signal.number(), libc::SIGRTMIN() + 3);
                assert_eq!(signal.name(), "SIGRTMIN+3");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(v.build().len(), 3);
    }

    /// G045: PH-2-1
    #[test]
    fn an_empty_table_means_no_inputs() {
        assert!(parse("").unwrap().inputs.is_empty());
    }

    /// G045: PH-2-1
    #[test]
    fn rejects_unknown_fields_and_kinds() {
        let e = parse("[[input]]\nname = \"a\"\nkind = \"file\"\npath = \"/x\"\nvalu = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("valu"), "{e}");
        let e = parse("[[input]]\nname = \"a\"\nkind = \"laser\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("laser"), "{e}");
        let e = parse("[[inputs]]\nname = \"a\"\n").unwrap_err().to_string();
        assert!(e.contains("inputs"), "{e}");
    }

    /// G045: PH-2-1
    #[test]
    fn collects_every_problem_with_its_input_and_field() {
        let err = parse(
            r#"
            [[input]]
            name = "a"
            kind = "gpio"
            chip = "gpiochip0"
            line = 1
            debounce-ms = 500

            [[input]]
            name = "a"
            kind = "file"
            path = "relative/tamper"
            value = " 1"
            interval-ms = 0

            [[input]]
            name = "bad name"
            kind = "signal"
            signal = "SIGTERM"

            [[input]]
            name = "s1"
            kind = "signal"
            signal = "SIGUSR2"

            [[input]]
            name = "s2"
            kind = "signal"
            signal = "SIGUSR2"

            [[input]]
            name = "rt"
            kind = "signal"
            signal = "SIGRTMIN+999"
            "#,
        )
        .unwrap_err();
        let Error::InvalidConfig { problems } = err else {
            panic!("{err:?}")
        };
        let all = problems.join("\n");
        for needle in [
            "input 1 \"a\": chip:",
            "input 1 \"a\": debounce-ms:",
            "input 2 \"a\": name: used by an earlier input",
            "input 2 \"a\": path:",
            "input 2 \"a\": value:",
            "input 2 \"a\": interval-ms:",
            "input 3 \"bad name\": name:",
            "input 3 \"bad name\": signal: must be SIGUSR1",
            "input 5 \"s2\": signal: watched by an earlier input",
            "input 6 \"rt\": signal:",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
        assert_eq!(problems.len(), 10, "{all}");
    }

    #[test]
    fn signal_spec_refuses_kawals_own_and_uncatchable_signals() {
        for s in [
            "SIGTERM",
            "SIGKILL",
            "SIGHUP",
            "USR2",
            "SIGRTMIN+",
            "SIGRTMIN+-1",
            "15",
        ] {
            assert!(SignalSpec::parse(s).is_err(), "{s}");
        }
        assert_eq!(
            SignalSpec::parse("SIGUSR1").unwrap().number(),
            libc::SIGUSR1
        );
    }
}
