//! The shared index: a small sled database at `<state>/index/` that every process opens only
//! for the moment it needs it (lock `index.lock` → open → read/write → flush → close →
//! unlock). It holds what must be seen across processes: run summaries, sessions, session
//! history and shared context. sled locks a database to one process, so keeping it open
//! would shut every other ckflow process out; a visit costs a few milliseconds.
//!
//! Trees: `runs` (run id → [`RunSummary`]), `sessions` (id → [`Session`]), `history`
//! (session id, 0, time, sequence → [`HistoryEntry`]), `context` (session id, 0, key →
//! [`ContextEntry`]). Values are JSON.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Result, StoreError};
use super::lock::{Backoff, DbKind, IndexLock, flush_db, open_db};

/// An open index, for one visit.
pub(crate) struct Index {
    pub(crate) db: sled::Db,
    pub(crate) path: PathBuf,
    pub(crate) runs: sled::Tree,
    pub(crate) sessions: sled::Tree,
    pub(crate) history: sled::Tree,
    pub(crate) context: sled::Tree,
    dirty: bool,
}

impl Index {
    fn open(path: &Path, backoff: &mut Backoff) -> Result<Index> {
        let remaining = backoff_remaining(backoff);
        let db = open_db(path, DbKind::Index, remaining)?;
        let tree = |name: &str| db.open_tree(name).map_err(StoreError::db(path));
        Ok(Index {
            runs: tree("runs")?,
            sessions: tree("sessions")?,
            history: tree("history")?,
            context: tree("context")?,
            db,
            path: path.to_owned(),
            dirty: false,
        })
    }

    /// Note that something was written, so the visit ends with a flush.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
    ) -> Result<Option<T>> {
        match tree.get(key).map_err(StoreError::db(&self.path))? {
            Some(bytes) => Ok(Some(self.decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn put<T: Serialize>(
        &mut self,
        tree: &sled::Tree,
        key: &[u8],
        value: &T,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).expect("store records serialise");
        tree.insert(key, bytes)
            .map_err(StoreError::db(&self.path))?;
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn remove(&mut self, tree: &sled::Tree, key: &[u8]) -> Result<bool> {
        let old = tree.remove(key).map_err(StoreError::db(&self.path))?;
        self.dirty = true;
        Ok(old.is_some())
    }

    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(&self.path, e))
    }

    /// All values of a tree (or of the keys under `prefix`), decoded.
    pub(crate) fn scan<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        prefix: &[u8],
    ) -> Result<Vec<(sled::IVec, T)>> {
        let mut out = Vec::new();
        for kv in tree.scan_prefix(prefix) {
            let (k, v) = kv.map_err(StoreError::db(&self.path))?;
            out.push((k, self.decode(&v)?));
        }
        Ok(out)
    }

    fn close(self) -> Result<()> {
        if self.dirty {
            flush_db(&self.db, &self.path)?;
        }
        Ok(())
    }
}

fn backoff_remaining(backoff: &Backoff) -> std::time::Duration {
    // The index lock is ours by now; sled's own lock can still be held for a few ms by the
    // background threads of the previous visitor's handle. Give that at least a second.
    backoff.remaining().max(std::time::Duration::from_secs(1))
}

/// Visit the index: take the lock, open, run `f`, flush if it wrote, close, unlock. The lock
/// is waited for with backoff up to `timeout`, then [`StoreError::Locked`].
pub(crate) fn visit<T>(
    lock: &IndexLock,
    path: &Path,
    timeout: std::time::Duration,
    f: impl FnOnce(&mut Index) -> Result<T>,
) -> Result<T> {
    let mut backoff = Backoff::new(timeout);
    let _guard = lock.lock(&mut backoff)?;
    let mut index = Index::open(path, &mut backoff)?;
    let out = f(&mut index)?;
    index.close()?;
    Ok(out)
}

/// The key of a session's entry in `history` or `context`: the session id, a 0 byte, then
/// `rest`.
pub(crate) fn session_key(session: &str, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(session.len() + 1 + rest.len());
    key.extend_from_slice(session.as_bytes());
    key.push(0);
    key.extend_from_slice(rest);
    key
}
