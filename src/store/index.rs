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
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Result, StoreError};
use super::lock::{
    Backoff, DbKind, IndexLock, flush_db, index_locked, open_db, open_lock_file, try_index_flock,
    wanted,
};
use crate::sync::lock;

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

    fn close(mut self) -> Result<()> {
        self.sync()
    }

    /// Make what this visit wrote durable (a flush and an `fsync`), if it wrote anything.
    fn sync(&mut self) -> Result<()> {
        if self.dirty {
            flush_db(&self.db, &self.path)?;
            self.dirty = false;
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

/// The index kept open between visits by a long-lived process (the MCP server, with
/// [`super::StoreOptions::hold_index`]): opening the index costs about 1.5 ms (sled reads
/// its snapshot and replays its log), and a recorded run visits it twice.
///
/// The holder keeps the lock and the open database after a visit, and gives both up when
/// nobody in this process has visited for [`HOLD_IDLE`], at the end of a visit when another
/// process has asked for the lock (it creates `index.want` while it waits), or after
/// [`HOLD_MAX`] in a row; after the last two it holds nothing for [`HOLD_COOLDOWN`], so the
/// other process gets its turn. Every visit that writes still ends with a flush and an
/// `fsync`, so durability is the same as without holding.
pub(crate) struct Holder {
    lock_path: PathBuf,
    path: PathBuf,
    state: std::sync::Mutex<Held>,
    /// The thread that releases an idle index.
    closer: std::sync::OnceLock<std::thread::Thread>,
}

/// How long an unused held index stays open.
pub(crate) const HOLD_IDLE: Duration = Duration::from_millis(20);
/// The longest the index is held in a row: a safety net, since a waiting process says so
/// with `index.want` and the holder lets go at its next visit. (At 1 s, the 50 ms of
/// visits without holding that follow it were 5% of a busy server's runs, and its p95.)
pub(crate) const HOLD_MAX: Duration = Duration::from_secs(10);
/// How long, after [`HOLD_MAX`], visits open and close the index as without holding.
pub(crate) const HOLD_COOLDOWN: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Held {
    /// The lock file, locked while `index` is `Some`.
    file: Option<std::fs::File>,
    index: Option<Index>,
    opened: Option<Instant>,
    last: Option<Instant>,
    cooldown_until: Option<Instant>,
    /// Hold nothing at all (no thread to release it).
    never: bool,
}

impl Held {
    /// Close the index (flushing it if a visit left it dirty) and unlock.
    fn release(&mut self) {
        if let Some(index) = self.index.take()
            && let Err(e) = index.close()
        {
            tracing::warn!(error = %e, "closing the held state index");
        }
        if let Some(file) = &self.file {
            let _ = file.unlock();
        }
        self.opened = None;
        self.last = None;
    }

    /// Release if idle or held too long.
    fn expire(&mut self, now: Instant) {
        let (Some(opened), Some(last)) = (self.opened, self.last) else {
            return;
        };
        if now.duration_since(opened) >= HOLD_MAX {
            self.release();
            self.cooldown_until = Some(now + HOLD_COOLDOWN);
        } else if now.duration_since(last) >= HOLD_IDLE {
            self.release();
        }
    }
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder").field("path", &self.path).finish()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        lock(&self.state).release();
        // Wake the closer thread so that it sees the holder gone and ends.
        if let Some(closer) = self.closer.get() {
            closer.unpark();
        }
    }
}

impl Holder {
    /// A holder for the index at `path` locked through `lock_path`, with a thread that
    /// releases it when idle (the thread ends with the holder).
    pub(crate) fn start(lock_path: PathBuf, path: PathBuf) -> Arc<Holder> {
        let holder = Arc::new(Holder {
            lock_path,
            path,
            state: std::sync::Mutex::new(Held::default()),
            closer: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&holder);
        let spawned = std::thread::Builder::new()
            .name("ckflow-index".into())
            .spawn(move || {
                let mut nap = HOLD_IDLE / 2;
                loop {
                    // Parked while nothing is held; a visit that opens the index unparks it.
                    std::thread::park_timeout(nap);
                    let Some(holder) = weak.upgrade() else {
                        return;
                    };
                    let mut held = lock(&holder.state);
                    held.expire(Instant::now());
                    if held.index.is_some() && wanted(&holder.lock_path) {
                        held.release();
                        held.cooldown_until = Some(Instant::now() + HOLD_COOLDOWN);
                    }
                    nap = if held.index.is_some() {
                        HOLD_IDLE / 2
                    } else {
                        Duration::from_secs(3600)
                    };
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = holder.closer.set(handle.thread().clone());
            }
            Err(e) => {
                // Without the thread nothing would release an idle index: hold nothing.
                tracing::warn!(error = %e, "no thread to release the state index; not holding it");
                lock(&holder.state).never = true;
            }
        }
        holder
    }

    /// [`visit`], keeping the index open afterwards.
    pub(crate) fn visit<T>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Index) -> Result<T>,
    ) -> Result<T> {
        let mut held = lock(&self.state);
        let now = Instant::now();
        held.expire(now);
        if held.index.is_none() {
            let mut backoff = Backoff::new(timeout);
            if held.file.is_none() {
                held.file = Some(open_lock_file(&self.lock_path)?);
            }
            let file = held.file.as_ref().expect("opened above");
            while !try_index_flock(file, &self.lock_path)? {
                if !backoff.wait() {
                    return Err(index_locked(&self.lock_path, &backoff));
                }
            }
            match Index::open(&self.path, &mut backoff) {
                Ok(index) => {
                    held.index = Some(index);
                    held.opened = Some(now);
                    if let Some(closer) = self.closer.get() {
                        closer.unpark();
                    }
                }
                Err(e) => {
                    held.release();
                    return Err(e);
                }
            }
        }
        let index = held.index.as_mut().expect("opened above");
        let out = f(index).and_then(|out| index.sync().map(|()| out));
        held.last = Some(Instant::now());
        let cooling = held.never || held.cooldown_until.is_some_and(|t| now < t);
        if out.is_err() || cooling {
            held.release();
        } else if wanted(&self.lock_path) {
            // Another process waits for the lock: let go, and let it have a turn.
            held.release();
            held.cooldown_until = Some(Instant::now() + HOLD_COOLDOWN);
        }
        out
    }
}
