//! Slots as folders: `<root>/a/`, `<root>/b/` and the two-copy boot-state record
//! `<root>/boot-state.{0,1}` next to them (outside both slots, so an update can never touch it).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::durable::{Durable, FsDurable};
use super::machine::{self, Backend};
use super::{
    BootControl, BootState, Clock, Committed, Error, Result, SLOT_EXECUTABLE, Slot, record,
    system_clock,
};

/// The folder back end of [`BootControl`].
#[derive(Clone)]
pub struct DirSlots {
    root: PathBuf,
    durable: Arc<dyn Durable>,
    clock: Clock,
}

impl std::fmt::Debug for DirSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirSlots")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl DirSlots {
    /// The slots under `root`, on the real file system and clock. Nothing is read yet: a missing
    /// or corrupt state shows at the first call (and `boot` still picks a runnable slot).
    #[must_use]
    pub fn open(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            durable: Arc::new(FsDurable),
            clock: system_clock(),
        }
    }

    /// Uses `durable` for the boot-state record (tests inject power cuts here).
    #[must_use]
    pub fn with_durable(mut self, durable: Arc<dyn Durable>) -> Self {
        self.durable = durable;
        self
    }

    /// Uses `clock` for time limits and event times.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The folder holding both slots and the record.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The two copies of the boot-state record.
    #[must_use]
    pub fn record_paths(&self) -> [PathBuf; 2] {
        record::paths(&self.root)
    }

    /// Creates both slot folders and the first boot state: `slot` holds the installed `version`.
    /// Refused if any copy of a boot state exists, even a corrupt one (never overwritten).
    pub fn initialise(
        &mut self,
        slot: Slot,
        version: &str,
        security_version: u64,
    ) -> Result<BootState> {
        let paths = self.record_paths();
        for p in &paths {
            if self.durable.read(p).map_err(|e| Error::io(p, e))?.is_some() {
                return Err(Error::AlreadyInitialised {
                    root: self.root.clone(),
                });
            }
        }
        for s in [Slot::A, Slot::B] {
            let dir = self.slot_path(s);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(dir, e)),
            }
        }
        let committed = Committed {
            slot,
            version: version.to_owned(),
            security_version,
        };
        let state = BootState::new(committed, (self.clock)());
        record::store(self.durable.as_ref(), &paths, &state, None)?;
        Ok(state)
    }
}

impl Backend for DirSlots {
    fn load(&self) -> Result<BootState> {
        record::load(self.durable.as_ref(), &self.record_paths())?
            .map(|l| l.state)
            .ok_or_else(|| Error::NotInitialised {
                root: self.root.clone(),
            })
    }

    fn store(&mut self, next: &BootState) -> Result<()> {
        // Read again rather than trust a cached number: the copy to overwrite is the one that
        // does not hold the newest valid state *now*.
        let paths = self.record_paths();
        let prev = record::load(self.durable.as_ref(), &paths)?.map(|l| (l.seq, l.index));
        record::store(self.durable.as_ref(), &paths, next, prev).map(|_| ())
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.root.join(slot.dir_name())
    }
}

machine::boot_control_over_backend!(DirSlots);

/// Whether `dir` is a real folder (not a link) holding a non-empty executable regular file
/// [`SLOT_EXECUTABLE`] (not a link either: a slot runs only what is in it).
pub(crate) fn executable_in(dir: &Path) -> bool {
    let is_dir = |d: &Path| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir());
    let exe = dir.join(SLOT_EXECUTABLE);
    // Every folder from the slot down to the executable is real: no link leads out of it.
    is_dir(dir)
        && exe.parent().is_some_and(is_dir)
        && fs::symlink_metadata(&exe).is_ok_and(|m| {
            m.file_type().is_file() && m.len() > 0 && m.permissions().mode() & 0o111 != 0
        })
}

/// Empties the slot folder `dir` and leaves a fresh empty folder.
///
/// Nothing outside `dir` is touched: `remove_dir_all` removes symbolic links found inside the
/// tree as links, never what they point at, and opens each level relative to its parent (so a
/// folder swapped for a link during the walk is not followed either). If `dir` itself is a link
/// or a file, only that link or file is removed.
pub(crate) fn empty_slot_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?,
        Ok(_) => {
            tracing::warn!(
                ?dir,
                "slot is not a folder; removing the link or file itself"
            );
            fs::remove_file(dir).map_err(|e| Error::io(dir, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dir, e)),
    }
    fs::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| Error::io(dir, e))?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(parent, e))
}
