//! The password rules' dictionary checks (zxcvbn and the common-password list) in a
//! short-lived process of kawal's own, so their tables (about 8 MiB) never stay in the daemon
//! after an operator sets a password.
//!
//! The daemon runs `kawal password-strength [--hint WORD]...` (hidden from the help), writes
//! the password to its standard input and reads one line back: `<score> <common 0|1>`. The
//! password is never an argument (arguments are visible to every process). A child that cannot
//! be started, takes longer than [`LIMIT`] or answers nonsense gives an error, and the
//! password is refused; the operator can try again.
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kawal_auth::policy::{Assessment, Strength};
use kawal_crypto::secret::SecretString;
use zeroize::Zeroizing;

use crate::error::{CliError, Exit, Result};

/// How long the child may take (loading the tables takes ~50 ms; a slow device more).
const LIMIT: Duration = Duration::from_secs(20);
/// Longest password read by the child, bytes (the rules allow at most 128 characters, up to
/// 4 bytes each).
const MAX_INPUT: u64 = 1024;

/// Dictionary checks in a child process running this executable.
#[derive(Debug)]
pub struct ChildStrength {
    exe: PathBuf,
}

impl ChildStrength {
    /// Checks with the executable the daemon runs from.
    ///
    /// # Errors
    /// The executable's path cannot be found.
    pub fn new() -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| {
            CliError::new(
                Exit::Failure,
                format!("cannot find kawal's own executable: {e}"),
            )
        })?;
        Ok(Self { exe })
    }
}

impl Strength for ChildStrength {
    fn assess(
        &self,
        password: &SecretString,
        hints: &[&str],
    ) -> std::result::Result<Assessment, String> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("password-strength");
        for h in hints {
            cmd.arg("--hint").arg(h);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env_clear()
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let written = child
            .stdin
            .take()
            .ok_or_else(|| "no pipe to the strength check".to_owned())
            .and_then(|mut stdin| {
                stdin
                    .write_all(password.expose().as_bytes())
                    .map_err(|e| format!("writing to the strength check: {e}"))
            });
        if let Err(e) = written {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the strength check took more than {LIMIT:?}"));
                }
                Err(e) => return Err(format!("waiting for the strength check: {e}")),
            }
        };
        let mut out = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = stdout.take(64).read_to_string(&mut out);
        }
        if !status.success() {
            return Err(format!("the strength check failed ({status})"));
        }
        parse_answer(&out).ok_or_else(|| "the strength check answered nonsense".to_owned())
    }
}

fn parse_answer(line: &str) -> Option<Assessment> {
    let mut parts = line.split_whitespace();
    let score: u8 = parts.next()?.parse().ok().filter(|s| *s <= 4)?;
    let common = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    parts
        .next()
        .is_none()
        .then_some(Assessment { score, common })
}

/// `kawal password-strength`: the child's side. Reads the password from standard input,
/// prints `<score> <common 0|1>`.
///
/// # Errors
/// Input larger than [`MAX_INPUT`] or not UTF-8.
pub fn run(hints: &[String]) -> Result<()> {
    let mut raw = Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut raw)
        .map_err(|e| CliError::new(Exit::Io, format!("stdin: {e}")))?;
    if raw.len() as u64 > MAX_INPUT {
        return Err(CliError::new(Exit::DataErr, "password too long"));
    }
    let text = Zeroizing::new(
        String::from_utf8(raw.to_vec())
            .map_err(|_| CliError::new(Exit::DataErr, "password is not UTF-8"))?,
    );
    let hints: Vec<&str> = hints.iter().map(String::as_str).collect();
    let a = kawal_auth::policy::assess(&text, &hints);
    crate::output::line(&format!("{} {}", a.score, u8::from(a.common)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(
            parse_answer("3 0\n"),
            Some(Assessment {
                score: 3,
                common: false
            })
        );
        assert_eq!(
            parse_answer("0 1"),
            Some(Assessment {
                score: 0,
                common: true
            })
        );
        for bad in ["", "5 0", "3", "3 2", "3 0 1", "x 0", "-1 0"] {
            assert_eq!(parse_answer(bad), None, "{bad:?}");
        }
    }
}
