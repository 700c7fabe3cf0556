//! The state directory's format version: the text file `FORMAT` (`2\n` today).
//!
//! Opening a directory with a newer version is refused with a clear error (an older ckflow
//! must not write into a layout it does not know). Opening one with an older version runs
//! the migration chain: [`MIGRATIONS`]`[v - 1]` turns version `v` into `v + 1`, under the
//! index lock so that only one process migrates, and `FORMAT` is rewritten after each step so
//! a crash mid-chain resumes from the last finished step. Each migration must therefore be
//! safe to run again on a half-migrated directory. `docs/state.md` describes the policy.
//!
//! Versions:
//! 1. the first;
//! 2. a run's commits go to `runs/<id>/journal`, which whoever opens the run's database next
//!    replays into it (`super::journal`). A version-1 directory has no journals, so there is
//!    nothing to convert; the version tells a ckflow that does not know journals (and would
//!    read a crashed run without its last commits) to keep out.

use std::path::Path;

use super::error::{Result, StoreError};

/// The format this build writes.
pub const CURRENT_FORMAT: u32 = 2;

/// A migration from version `v` (its index + 1) to `v + 1`, given the state directory.
type Migration = fn(&Path) -> Result<()>;

/// The chain: entry `i` migrates version `i + 1` to `i + 2`.
const MIGRATIONS: [Migration; CURRENT_FORMAT as usize - 1] = [journals];

/// 1 → 2: version 1 wrote no journals, and its run databases hold every commit already.
fn journals(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Read the version in `FORMAT`; `None` when there is no such file yet.
pub(crate) fn read(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join("FORMAT");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u32>().map(Some).map_err(|_| {
            StoreError::corrupt(
                &path,
                format!("expected a format version number, found {:?}", text.trim()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", path)(e)),
    }
}

/// Write `FORMAT` atomically (a temporary file, then rename).
pub(crate) fn write(dir: &Path, version: u32) -> Result<()> {
    super::write_atomically(&dir.join("FORMAT"), format!("{version}\n").as_bytes())
}

/// Check the version: write it to a new directory, refuse a newer one, report whether the
/// directory needs migrating.
pub(crate) fn check(dir: &Path) -> Result<Option<u32>> {
    match read(dir)? {
        None => {
            write(dir, CURRENT_FORMAT)?;
            Ok(None)
        }
        Some(v) if v > CURRENT_FORMAT => Err(StoreError::NewerFormat {
            path: dir.to_owned(),
            found: v,
            supported: CURRENT_FORMAT,
        }),
        Some(0) => Err(StoreError::corrupt(
            dir.join("FORMAT"),
            "format version 0 does not exist",
        )),
        Some(v) if v < CURRENT_FORMAT => Ok(Some(v)),
        Some(_) => Ok(None),
    }
}

/// Run the migration chain from `from` to [`CURRENT_FORMAT`]. The caller holds the index
/// lock and has re-read the version under it.
pub(crate) fn migrate(dir: &Path, from: u32) -> Result<()> {
    for v in from..CURRENT_FORMAT {
        let step = MIGRATIONS[(v - 1) as usize];
        step(dir)?;
        write(dir, v + 1)?;
        tracing::info!(dir = %dir.display(), from = v, to = v + 1, "migrated the state directory");
    }
    Ok(())
}
