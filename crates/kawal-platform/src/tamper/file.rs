//! A file or sysfs attribute as a tamper input, polled.
//!
//! sysfs attributes do not reliably support inotify (and only some drivers call
//! `sysfs_notify`), so the file is read every `interval` (default 10 ms): a read of a few
//! bytes, cheap enough for an idle daemon. Its content, trimmed of ASCII whitespace, is
//! compared with the configured value.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cfg::OnUnreadable;
use super::{Error, InputKind, Result, StopFlag, TamperInput, TamperSignal};

/// The most bytes read from the file: attributes are short, and a huge file is not one.
const MAX_READ: u64 = 4096;

/// A polled file or sysfs attribute.
#[derive(Debug)]
pub struct FileInput {
    name: String,
    path: PathBuf,
    value: String,
    interval: Duration,
    on_unreadable: OnUnreadable,
    /// A fault was reported and the file has not been readable since: report it only once.
    faulted: bool,
}

impl FileInput {
    /// Watches `path` for the content `value`, every 10 ms; an unreadable file is tamper.
    pub fn new(name: &str, path: &Path, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            path: path.to_path_buf(),
            value: value.to_owned(),
            interval: Duration::from_millis(10),
            on_unreadable: OnUnreadable::Tamper,
            faulted: false,
        }
    }

    /// Sets the polling interval.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets what an unreadable or missing file means.
    pub fn on_unreadable(mut self, policy: OnUnreadable) -> Self {
        self.on_unreadable = policy;
        self
    }

    fn read(&self) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(64);
        std::fs::File::open(&self.path)?
            .take(MAX_READ)
            .read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn signal(&self, reason: String) -> TamperSignal {
        TamperSignal {
            input: self.name.clone(),
            kind: InputKind::File,
            reason,
            seen: Instant::now(),
        }
    }
}

impl TamperInput for FileInput {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> InputKind {
        InputKind::File
    }

    fn wait(&mut self, stop: &StopFlag) -> Result<Option<TamperSignal>> {
        loop {
            if stop.is_stopped() {
                return Ok(None);
            }
            match self.read() {
                Ok(bytes) => {
                    self.faulted = false;
                    if bytes.trim_ascii() == self.value.as_bytes() {
                        let reason = format!("{} reads {:?}", self.path.display(), self.value);
                        return Ok(Some(self.signal(reason)));
                    }
                }
                Err(e) => match self.on_unreadable {
                    OnUnreadable::Tamper => {
                        let reason = format!("{} is unreadable: {e}", self.path.display());
                        return Ok(Some(self.signal(reason)));
                    }
                    OnUnreadable::Fault if !self.faulted => {
                        self.faulted = true;
                        return Err(Error::InputRead {
                            input: self.name.clone(),
                            path: self.path.clone(),
                            source: e,
                        });
                    }
                    OnUnreadable::Fault => {}
                },
            }
            if stop.sleep(self.interval) {
                return Ok(None);
            }
        }
    }

    /// None: the input reports a fault once and keeps polling by itself.
    fn fault_backoff(&self) -> Duration {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PH-2-1
    #[test]
    fn trimmed_content_equal_to_the_value_is_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tamper");
        std::fs::write(&path, "1\n").unwrap();
        let mut input = FileInput::new("attr", &path, "1");
        let s = input.wait(&StopFlag::new()).unwrap().unwrap();
        assert_eq!(s.input, "attr");
        assert_eq!(s.kind, InputKind::File);
        assert!(s.reason.contains("reads \"1\""), "{}", s.reason);
    }

    /// G045: PH-2-1
    #[test]
    fn other_content_is_not_tamper_and_stop_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tamper");
        std::fs::write(&path, "0\n").unwrap();
        let stop = StopFlag::new();
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            s2.stop();
        });
        let mut input = FileInput::new("attr", &path, "1");
        assert!(input.wait(&stop).unwrap().is_none());
        t.join().unwrap();
    }

    /// G045: PH-2-1
    #[test]
    fn unreadable_file_as_fault_is_reported_once_then_polled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let mut input = FileInput::new("attr", &path, "1").on_unreadable(OnUnreadable::Fault);
        let stop = StopFlag::new();
        let e = input.wait(&stop).unwrap_err();
        assert!(matches!(e, Error::InputRead { .. }), "{e}");
        // The second call polls quietly until the file appears with the tamper value.
        let p2 = path;
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(40));
            std::fs::write(p2, "1").unwrap();
        });
        assert!(input.wait(&stop).unwrap().is_some());
        t.join().unwrap();
    }
}
