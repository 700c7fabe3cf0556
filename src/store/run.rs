//! The writing side of one run: a [`RunHandle`], held by the one process running the run.
//! It owns the run's sled database (`runs/<id>/db/`), its log files and its `live.json`.
//!
//! The database's default tree holds `run` (the [`RunRecord`]), `format`, and per step
//! `s<sequence>` (an 8-byte big-endian number) → the step's latest [`StepRecord`], so steps
//! read back in the order they were first recorded; the owner keeps the id → sequence map
//! in memory and rebuilds it from the records on resume; and per `for_each` instance of a
//! main step `e<step id>\0<index>` (the index 4-byte big-endian) → the instance's latest
//! [`InstanceRecord`], read only by a resume. (Databases of earlier builds also hold
//! `i<step id>` keys; nothing reads them.)
//!
//! Durability is by group commit: [`RunHandle::record_step_finished`] writes without waiting,
//! [`RunHandle::commit`] makes everything written so far durable with one append to the
//! run's journal and one `fdatasync` (`super::journal`; the database itself is flushed only
//! when it is closed), then rewrites `live.json`. [`RunHandle::step_finished`] is both in one
//! call; callers on several threads that finish steps at the same moment share a sync.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::error::{Result, StoreError};
use super::journal::{self, Journal};
use super::lock::{DbKind, OwnerLock, flush_db, open_db};
use super::logs::LogWriter;
use super::model::{
    CommitStats, HistoryEntry, InstanceRecord, LogStream, RunRecord, RunStatus, StepRecord,
    StepStatus,
};
use super::{LiveSnapshotRef, Store, format, write_atomically};
use crate::sync::lock;

/// The owner's handle on a run: records steps, logs and the end of the run. Obtained from
/// [`Store::create_run`] or [`Store::resume_run`]; `Send + Sync`, so the engine may share it
/// (in an `Arc`) between the dispatcher and step tasks.
///
/// How the engine uses it: at each dispatcher turn, record every step that finished in that
/// turn with [`RunHandle::record_step_finished`], call [`RunHandle::commit`] once, and only
/// then report those steps as done (events, progress, the terminal). Dropping the handle
/// without [`RunHandle::finish`] leaves the run `interrupted`, ready for `resume`.
#[derive(Debug)]
pub struct RunHandle {
    store: Store,
    id: String,
    dir: PathBuf,
    db_dir: PathBuf,
    /// Holds the database and makes the writes to it (locked after `state`, never before).
    applier: Mutex<Applier>,
    /// Where commits go (appended under `commit_lock`).
    journal: Journal,
    state: Mutex<State>,
    /// Serialises commits (and so `live.json` writes); held across the flush, while `state`
    /// is not, so steps can be recorded during a flush and ride on the next one.
    commit_lock: Mutex<()>,
    logs: Mutex<HashMap<String, LogWriter>>,
    owner: OwnerLock,
}

#[derive(Debug)]
struct State {
    record: RunRecord,
    next_seq: u64,
    /// Step id → (sequence number, position in `live`).
    positions: HashMap<String, (u64, usize)>,
    /// The steps as `live.json` shows them (no outputs).
    live: Vec<StepRecord>,
    /// Writes (step starts, step finishes, the run's end) made so far, numbered from 1.
    written: u64,
    /// The number of the last write that was a finish.
    last_finish: u64,
    /// The writes since the last commit, as a journal frame's payload.
    pending: Vec<u8>,
    /// The writes known to be on disk (all those numbered up to this).
    durable: u64,
    /// Whether `live` changed since `live.json` was last written.
    live_dirty: bool,
    /// When `live.json` was last written (for [`RunHandle::commit_throttled`]).
    live_written: Option<Instant>,
    stats: CommitStats,
}

fn step_key(seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b's');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The key of an instance record: `e`, the step id, a 0 byte, the index (4 bytes, BE).
fn instance_key(step: &str, index: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(step.len() + 6);
    k.push(b'e');
    k.extend_from_slice(step.as_bytes());
    k.push(0);
    k.extend_from_slice(&(index as u32).to_be_bytes());
    k
}

fn without_outputs(rec: &StepRecord) -> StepRecord {
    StepRecord {
        outputs: serde_json::Value::Null,
        ..rec.clone()
    }
}

/// A run database's content: the record and the steps with their sequence numbers, in order.
type Loaded = (RunRecord, Vec<(u64, StepRecord)>);

/// Read a run database. `None` if it holds no record (creation was cut short).
fn load(db: &sled::Db, path: &Path) -> Result<Option<Loaded>> {
    let Some(bytes) = db.get(b"run").map_err(StoreError::db(path))? else {
        return Ok(None);
    };
    let record: RunRecord =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(path, e))?;
    let mut steps = Vec::new();
    for kv in db.scan_prefix(b"s") {
        let (k, v) = kv.map_err(StoreError::db(path))?;
        let seq: [u8; 8] = k[1..]
            .try_into()
            .map_err(|_| StoreError::corrupt(path, "a step key is not 9 bytes long"))?;
        let rec: StepRecord =
            serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(path, e))?;
        steps.push((u64::from_be_bytes(seq), rec));
    }
    Ok(Some((record, steps)))
}

/// Read a run database for display (replaying its journal first): the record and the
/// steps in order. The caller holds `db`, opened from `path` in the run's directory `dir`.
pub(crate) fn read_run_db(
    db: &sled::Db,
    dir: &Path,
    path: &Path,
) -> Result<Option<(RunRecord, Vec<StepRecord>)>> {
    journal::replay(db, path, dir)?;
    Ok(load(db, path)?.map(|(r, steps)| (r, steps.into_iter().map(|(_, s)| s).collect())))
}

/// Whether the run in `dir` may have records: its database exists, or its journal has
/// something in it (a run whose process died before its database was opened has only that).
pub(crate) fn has_records(dir: &Path) -> bool {
    dir.join("db").join("conf").exists()
        || std::fs::metadata(dir.join(journal::FILE)).is_ok_and(|m| m.len() > 0)
}

/// Open a run's database (waiting up to `timeout` for a reader that holds it) and replay
/// its journal into it.
fn open_run_db(dir: &Path, db_dir: &Path, timeout: std::time::Duration) -> Result<sled::Db> {
    let db = open_db(db_dir, DbKind::Run, timeout)?;
    journal::replay(&db, db_dir, dir)?;
    Ok(db)
}

/// Write `key` → `value` to a run's database (through `applier`) and to the pending journal
/// frame.
fn put(applier: &mut Applier, pending: &mut Vec<u8>, key: &[u8], value: Vec<u8>) -> Result<()> {
    journal::entry(pending, key, &value);
    applier.put(key, value)
}

/// Writes to a run's database. Nothing reads a run's database while its owner has it
/// (readers use `live.json`, and commits are durable through the journal), so the database
/// need not be current, or even open, while the run goes on:
///
/// * a new run's database is opened (created) on a thread of its own, while the run starts
///   (a resumed run's is open already; its thread starts with its first write);
/// * every write goes, in order, to that thread, so the thread that records steps (and whose
///   commits the engine waits for) does not also pay for sled's inserts, about half of
///   recording a step.
///
/// Whatever reads the database, and the close, first wait for the thread ([`Applier::db`],
/// [`Applier::close`]).
#[derive(Debug)]
struct Applier {
    /// The database, once open.
    db: Arc<OnceLock<sled::Db>>,
    db_dir: PathBuf,
    tx: Option<std::sync::mpsc::Sender<ApplyMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The first thing the thread could not do (open the database, an insert); the next
    /// commit reports it.
    failed: Arc<Mutex<Option<StoreError>>>,
}

enum ApplyMsg {
    Put(Vec<u8>, Vec<u8>),
    Drained(std::sync::mpsc::SyncSender<()>),
}

impl Applier {
    /// For a database that is open.
    fn with_db(db: sled::Db, db_dir: PathBuf) -> Applier {
        Applier {
            db: Arc::new(OnceLock::from(db)),
            db_dir,
            tx: None,
            thread: None,
            failed: Arc::default(),
        }
    }

    /// For a new run: its database is opened (waiting up to `timeout` for its lock) on the
    /// thread, which starts now.
    fn opening(db_dir: PathBuf, timeout: Duration) -> Result<Applier> {
        let mut a = Applier {
            db: Arc::default(),
            db_dir,
            tx: None,
            thread: None,
            failed: Arc::default(),
        };
        a.start(Some(timeout))?;
        Ok(a)
    }

    /// Start the thread; with `open`, it opens the database first.
    fn start(&mut self, open: Option<Duration>) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel::<ApplyMsg>();
        let cell = Arc::clone(&self.db);
        let db_dir = self.db_dir.clone();
        let failed = Arc::clone(&self.failed);
        let thread = std::thread::Builder::new()
            .name("ckflow-apply".into())
            .spawn(move || {
                if let Some(timeout) = open {
                    match open_db(&db_dir, DbKind::Run, timeout) {
                        Ok(db) => {
                            let _ = cell.set(db);
                        }
                        Err(e) => {
                            lock(&failed).get_or_insert(e);
                        }
                    }
                }
                let db = cell.get();
                for msg in rx {
                    match (msg, db) {
                        (ApplyMsg::Put(k, v), Some(db)) => {
                            if let Err(e) = db.insert(k, v) {
                                lock(&failed).get_or_insert(StoreError::db(&db_dir)(e));
                            }
                        }
                        // The database did not open: the error is reported already.
                        (ApplyMsg::Put(..), None) => {}
                        (ApplyMsg::Drained(done), _) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(StoreError::io("start a thread for", &self.db_dir))?;
        self.tx = Some(tx);
        self.thread = Some(thread);
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>) -> Result<()> {
        if self.tx.is_none() {
            self.start(None)?;
        }
        self.check()?;
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(ApplyMsg::Put(key.to_vec(), value)).is_ok());
        if !sent {
            return Err(StoreError::io("write", &self.db_dir)(
                std::io::Error::other("the run database's writer thread stopped"),
            ));
        }
        Ok(())
    }

    /// The first thing the thread failed to do, if any.
    fn check(&self) -> Result<()> {
        match lock(&self.failed).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The database, once every write handed to the thread is in it.
    fn db(&self) -> Result<sled::Db> {
        if let Some(tx) = &self.tx {
            let (done, wait) = std::sync::mpsc::sync_channel(1);
            if tx.send(ApplyMsg::Drained(done)).is_ok() {
                let _ = wait.recv();
            }
        }
        self.check()?;
        self.opened()
    }

    fn opened(&self) -> Result<sled::Db> {
        self.db.get().cloned().ok_or_else(|| {
            StoreError::io("open", &self.db_dir)(std::io::Error::other(
                "the run database did not open",
            ))
        })
    }

    /// Wait for the thread to finish, and hand back the database.
    fn close(mut self) -> Result<sled::Db> {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.check()?;
        self.opened()
    }
}

/// Steps stored as running when their run's owner died read as interrupted.
pub(crate) fn mark_interrupted(steps: &mut [StepRecord]) {
    for s in steps {
        if s.status == StepStatus::Running {
            s.status = StepStatus::Interrupted;
        }
    }
}

impl RunHandle {
    /// A new run: its database, record and `live.json`. The caller holds `owner` and has
    /// created `dir`.
    pub(crate) fn create(
        store: Store,
        dir: PathBuf,
        record: RunRecord,
        owner: OwnerLock,
    ) -> Result<RunHandle> {
        let db_dir = dir.join("db");
        let applier = Applier::opening(db_dir.clone(), store.options().lock_timeout)?;
        let journal = Journal::open(&dir)?;
        // The first commit (below) makes both durable in one journal frame.
        let mut pending = Vec::new();
        let mut applier = applier;
        let format = format::CURRENT_FORMAT.to_string().into_bytes();
        put(&mut applier, &mut pending, b"format", format)?;
        let bytes = serde_json::to_vec(&record).expect("records serialise");
        put(&mut applier, &mut pending, b"run", bytes)?;
        let handle = RunHandle {
            id: record.id.clone(),
            store,
            dir,
            db_dir,
            applier: Mutex::new(applier),
            journal,
            state: Mutex::new(State {
                record,
                next_seq: 0,
                positions: HashMap::new(),
                live: Vec::new(),
                written: 1,
                last_finish: 0,
                pending,
                durable: 0,
                live_dirty: true,
                live_written: None,
                stats: CommitStats::default(),
            }),
            commit_lock: Mutex::new(()),
            logs: Mutex::new(HashMap::new()),
            owner,
        };
        handle.commit()?;
        Ok(handle)
    }

    /// Take over an existing run (the caller holds `owner`): returns the handle, the record
    /// as it was, and the steps with running ones marked interrupted.
    pub(crate) fn resume(
        store: Store,
        dir: PathBuf,
        id: &str,
        owner: OwnerLock,
    ) -> Result<(RunHandle, RunRecord, Vec<StepRecord>)> {
        let db_dir = dir.join("db");
        // A reader may hold the database for a moment; wait for it.
        let db = open_run_db(&dir, &db_dir, store.options().lock_timeout)?;
        let Some((before, stored)) = load(&db, &db_dir)? else {
            return Err(StoreError::corrupt(
                &db_dir,
                format!("run {id} has no stored record"),
            ));
        };
        let mut steps: Vec<StepRecord> = stored.iter().map(|(_, s)| s.clone()).collect();
        mark_interrupted(&mut steps);
        let mut record = before.clone();
        record.status = RunStatus::Running;
        record.finished_at_ms = None;
        record.pid = std::process::id();
        record.resumes += 1;
        let mut pending = Vec::new();
        let mut applier = Applier::with_db(db, db_dir.clone());
        let bytes = serde_json::to_vec(&record).expect("records serialise");
        put(&mut applier, &mut pending, b"run", bytes)?;
        let journal = Journal::open(&dir)?;
        let mut positions = HashMap::new();
        let mut live = Vec::new();
        for ((seq, _), step) in stored.iter().zip(&steps) {
            positions.insert(step.id.clone(), (*seq, live.len()));
            live.push(without_outputs(step));
        }
        let next_seq = stored.last().map_or(0, |(seq, _)| seq + 1);
        let handle = RunHandle {
            store,
            id: id.to_owned(),
            dir,
            db_dir,
            applier: Mutex::new(applier),
            journal,
            state: Mutex::new(State {
                record,
                next_seq,
                positions,
                live,
                written: 1,
                last_finish: 0,
                pending,
                durable: 0,
                live_dirty: true,
                live_written: None,
                stats: CommitStats::default(),
            }),
            commit_lock: Mutex::new(()),
            logs: Mutex::new(HashMap::new()),
            owner,
        };
        handle.commit()?;
        Ok((handle, before, steps))
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The run's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's record as it stands.
    pub fn record(&self) -> RunRecord {
        lock(&self.state).record.clone()
    }

    /// How much committing and flushing this handle has done.
    pub fn stats(&self) -> CommitStats {
        lock(&self.state).stats
    }

    /// Whether `ckflow cancel` (or MCP `CancelRun`) asked for this run to stop. Cheap (one
    /// `stat`): poll it every few hundred milliseconds.
    pub fn cancel_requested(&self) -> bool {
        self.dir.join("cancel").exists()
    }

    /// Write a step's record; returns the write's number (the commit target for a finish)
    /// target for this one).
    fn write_step(&self, rec: &StepRecord, finished: bool) -> Result<u64> {
        let mut st = lock(&self.state);
        let (seq, pos) = match st.positions.get(&rec.id) {
            Some(&p) => p,
            None => (st.next_seq, st.live.len()),
        };
        let bytes = serde_json::to_vec(rec).expect("records serialise");
        put(
            &mut lock(&self.applier),
            &mut st.pending,
            &step_key(seq),
            bytes,
        )?;
        if pos == st.live.len() {
            st.next_seq += 1;
            st.positions.insert(rec.id.clone(), (seq, pos));
            st.live.push(without_outputs(rec));
        } else {
            st.live[pos] = without_outputs(rec);
        }
        st.live_dirty = true;
        st.written += 1;
        if finished {
            st.last_finish = st.written;
            st.stats.steps_finished += 1;
        }
        Ok(st.written)
    }

    /// Record a `for_each` instance's finish (replacing its earlier record) without waiting
    /// for the disk: it is durable after the next [`RunHandle::commit`], like a step's
    /// finish. It does not show in `live.json` or the run's steps.
    pub fn record_instance_finished(&self, rec: &InstanceRecord) -> Result<()> {
        let mut st = lock(&self.state);
        let bytes = serde_json::to_vec(rec).expect("records serialise");
        let key = instance_key(&rec.step, rec.index);
        put(&mut lock(&self.applier), &mut st.pending, &key, bytes)?;
        st.written += 1;
        st.last_finish = st.written;
        Ok(())
    }

    /// The run's `for_each` instance records (the latest of each instance), by step and
    /// index: what a resume may keep.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>> {
        let db = lock(&self.applier).db()?;
        let mut out = Vec::new();
        for kv in db.scan_prefix(b"e") {
            let (_, v) = kv.map_err(StoreError::db(&self.db_dir))?;
            let rec: InstanceRecord =
                serde_json::from_slice(&v).map_err(|e| StoreError::corrupt(&self.db_dir, e))?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Record that a step (attempt) started. Not flushed by itself (the next commit takes it
    /// along): a step that was running when the process died runs again on resume anyway.
    /// `live.json` shows it at once unless finishes are waiting for a commit, then at that
    /// commit.
    pub fn step_started(&self, rec: &StepRecord) -> Result<()> {
        self.write_step(rec, false)?;
        self.write_live_if_clean()
    }

    /// [`RunHandle::step_started`] without touching `live.json`: for a caller that records
    /// several starts at once and then calls [`RunHandle::refresh_live`] once (the snapshot
    /// holds every step, so one rewrite per start would cost O(steps) each).
    pub fn record_step_started(&self, rec: &StepRecord) -> Result<()> {
        self.write_step(rec, false).map(drop)
    }

    /// Record a step's finish without waiting for the disk; also closes the step's log
    /// (writing its truncation mark). It is durable, and shown in `live.json`, after the
    /// next [`RunHandle::commit`]. Do not report the step done before that commit returns.
    pub fn record_step_finished(&self, rec: &StepRecord) -> Result<()> {
        if let Some(w) = lock(&self.logs).get_mut(&rec.id) {
            w.close()?;
        }
        self.write_step(rec, true)?;
        Ok(())
    }

    /// Record a step's finish and return once it is on disk. Equivalent to
    /// [`RunHandle::record_step_finished`] then [`RunHandle::commit`], except that threads
    /// finishing steps at the same moment share one journal sync.
    pub fn step_finished(&self, rec: &StepRecord) -> Result<()> {
        if let Some(w) = lock(&self.logs).get_mut(&rec.id) {
            w.close()?;
        }
        let target = self.write_step(rec, true)?;
        self.commit_to(Some(target), false)
    }

    /// Make everything recorded so far durable (one journal frame and one `fdatasync` for all of
    /// it, none if there is nothing new) and rewrite `live.json`.
    pub fn commit(&self) -> Result<()> {
        self.commit_to(None, false)
    }

    /// [`RunHandle::commit`], but rewrite `live.json` only if the last rewrite is at least
    /// [`super::StoreOptions::live_interval`] old: the snapshot holds every step, so a run
    /// with thousands of steps and a commit every few milliseconds would spend its time
    /// writing it. The engine commits this way; [`RunHandle::refresh_live`] catches up.
    pub fn commit_throttled(&self) -> Result<()> {
        self.commit_to(None, true)
    }

    /// Rewrite `live.json` if it is behind (and every recorded finish is durable), whatever
    /// its age. Call it when the run is idle, so readers see the latest state.
    pub fn refresh_live(&self) -> Result<()> {
        let _commit = lock(&self.commit_lock);
        let snapshot = {
            let mut st = lock(&self.state);
            if st.last_finish > st.durable || !st.live_dirty {
                return Ok(());
            }
            st.live_dirty = false;
            st.live_written = Some(Instant::now());
            self.snapshot(&mut st)
        };
        write_atomically(&self.dir.join("live.json"), &snapshot)
    }

    /// Commit until at least write `target` is durable (`None`: all written so far).
    fn commit_to(&self, target: Option<u64>, throttle: bool) -> Result<()> {
        let _commit = lock(&self.commit_lock);
        // A write the database refused means the store is broken: the run must stop.
        lock(&self.applier).check()?;
        let interval = self.store.options().live_interval;
        let (upto, pending, snapshot) = {
            let mut st = lock(&self.state);
            st.stats.commits += 1;
            match target {
                // Another commit already flushed this caller's finish.
                Some(t) if st.durable >= t => return Ok(()),
                None if st.durable >= st.written && !st.live_dirty => return Ok(()),
                _ => {}
            }
            let write_live = st.live_dirty
                && !(throttle && st.live_written.is_some_and(|t| t.elapsed() < interval));
            let snapshot = write_live.then(|| {
                st.live_dirty = false;
                st.live_written = Some(Instant::now());
                self.snapshot(&mut st)
            });
            (st.written, std::mem::take(&mut st.pending), snapshot)
        };
        if !pending.is_empty() {
            self.journal.append(&pending)?;
            let mut st = lock(&self.state);
            st.durable = st.durable.max(upto);
            st.stats.flushes += 1;
        }
        match snapshot {
            Some(snapshot) => write_atomically(&self.dir.join("live.json"), &snapshot),
            None => Ok(()),
        }
    }

    /// Rewrite `live.json` if every recorded finish is already durable (so the snapshot shows
    /// nothing that a crash could still take back).
    fn write_live_if_clean(&self) -> Result<()> {
        let _commit = lock(&self.commit_lock);
        let snapshot = {
            let mut st = lock(&self.state);
            if st.last_finish > st.durable || !st.live_dirty {
                return Ok(());
            }
            st.live_dirty = false;
            st.live_written = Some(Instant::now());
            self.snapshot(&mut st)
        };
        write_atomically(&self.dir.join("live.json"), &snapshot)
    }

    fn snapshot(&self, st: &mut State) -> Vec<u8> {
        // Without the source (which can be large): taken out and put back, not copied.
        let source = std::mem::take(&mut st.record.source);
        let snapshot = LiveSnapshotRef {
            run: &st.record,
            steps: &st.live,
        };
        let bytes = serde_json::to_vec(&snapshot).expect("snapshots serialise");
        st.record.source = source;
        bytes
    }

    /// Append output to a step's log (split into lines, each prefixed by its stream),
    /// honouring the log cap. Lines are written straight to the file, so `ckflow logs
    /// --follow` sees them at once. Pass redacted text.
    pub fn append_log(&self, step: &str, stream: LogStream, text: &str) -> Result<()> {
        let mut logs = lock(&self.logs);
        let writer = match logs.get_mut(step) {
            Some(w) => w,
            None => {
                let w = LogWriter::open(
                    self.store.log_path(&self.id, step),
                    self.store.options().log_cap_bytes,
                )?;
                logs.entry(step.to_owned()).or_insert(w)
            }
        };
        writer.append(stream, text)
    }

    /// End the run: close the logs, write the final status and time, flush, write the last
    /// `live.json`, update the index (enforcing [`super::StoreOptions::keep_runs`]) and give
    /// up ownership. Returns the final record.
    pub fn finish(self, status: RunStatus, finished_at_ms: u64) -> Result<RunRecord> {
        self.finish_with_history(status, finished_at_ms, &[])
    }

    /// [`RunHandle::finish`], also adding `history` to the run's session (in the same index
    /// visit; skipped if the session is gone).
    pub fn finish_with_history(
        self,
        status: RunStatus,
        finished_at_ms: u64,
        history: &[HistoryEntry],
    ) -> Result<RunRecord> {
        let (record, finished) = self.finish_deferred(status, finished_at_ms, history)?;
        drop(finished);
        Ok(record)
    }

    /// [`RunHandle::finish_with_history`], except for what can wait: closing the database
    /// (flushing and syncing it, then removing the journal, though everything is durable
    /// already), removing the runs beyond the cap and giving up ownership happen when the
    /// returned [`Finished`] is dropped. Until then the run reads as finished everywhere (its
    /// index row and `live.json` say so) but cannot be resumed. The store thread answers
    /// the engine first, then drops it.
    pub(crate) fn finish_deferred(
        self,
        status: RunStatus,
        finished_at_ms: u64,
        history: &[HistoryEntry],
    ) -> Result<(RunRecord, Finished)> {
        for w in lock(&self.logs).values_mut() {
            w.close()?;
        }
        let record = {
            let mut st = lock(&self.state);
            st.record.status = status;
            st.record.finished_at_ms = Some(finished_at_ms);
            let bytes = serde_json::to_vec(&st.record).expect("records serialise");
            put(&mut lock(&self.applier), &mut st.pending, b"run", bytes)?;
            st.written += 1;
            st.last_finish = st.written;
            st.live_dirty = true;
            st.record.clone()
        };
        self.commit()?;
        let RunHandle {
            store,
            id,
            dir,
            db_dir,
            applier,
            owner,
            ..
        } = self;
        let summary = record.summary();
        let keep = store.options().keep_runs;
        let victims = store.visit(|ix| {
            let runs = ix.runs.clone();
            ix.put(&runs, summary.id.as_bytes(), &summary)?;
            if let Some(session) = &summary.session {
                for entry in history {
                    match super::session::history_in(ix, session, entry) {
                        Ok(()) | Err(StoreError::SessionNotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            match keep {
                // Cheap check first: only look at every row when the cap is exceeded.
                Some(keep) if ix.runs.len() > keep => {
                    let options = super::GcOptions {
                        older_than: None,
                        keep: Some(keep),
                    };
                    store.select_victims(ix, &options, finished_at_ms, Some(&id))
                }
                _ => Ok(Vec::new()),
            }
        })?;
        let finished = Finished {
            applier: Some(applier.into_inner().unwrap_or_else(|p| p.into_inner())),
            db_dir,
            dir,
            owner: Some(owner),
            store,
            victims,
        };
        Ok((record, finished))
    }
}

/// The rest of finishing a run, done on drop: see [`RunHandle::finish_deferred`].
pub(crate) struct Finished {
    applier: Option<Applier>,
    db_dir: PathBuf,
    dir: PathBuf,
    owner: Option<OwnerLock>,
    store: Store,
    victims: Vec<String>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        // Flushed and synced, the database holds everything the journal does: the journal
        // can go. (If the flush fails, the journal stays and the next open replays it.)
        if let Some(applier) = self.applier.take() {
            match applier
                .close()
                .and_then(|db| flush_db(&db, &self.db_dir).map(|()| db))
            {
                Ok(db) => {
                    drop(db);
                    let _ = std::fs::remove_file(self.dir.join(journal::FILE));
                }
                Err(e) => tracing::warn!(error = %e, "could not flush a finished run's database"),
            }
        }
        for victim in std::mem::take(&mut self.victims) {
            self.store.remove_run_dir(&victim);
        }
        if let Some(owner) = self.owner.take() {
            owner.release();
        }
    }
}
