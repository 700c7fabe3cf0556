//! Durable state: runs, steps, step logs, sessions, session history and shared context, under
//! `<project>/.ckflow/` (SPEC §2, §4). The rest of ckflow sees this module's API only; sled,
//! file names and lock files stay in here. `docs/state.md` describes the layout for users.
//!
//! sled locks a database to one process, and several processes share a project (two
//! terminals, CI, the MCP server), so state is split by who writes it:
//!
//! ```text
//! <state>/FORMAT                     format version ("2"); see `format`
//! <state>/index.lock, index/         shared sled index, opened for milliseconds per visit:
//!                                    run summaries, sessions, history, context
//! <state>/runs/<id>/db/              the run's own sled database, held by its owner
//!                                    process for the run's life: record, steps, routing
//! <state>/runs/<id>/journal          the run's commits since its database was last
//!                                    flushed, replayed by whoever opens it next
//! <state>/runs/<id>/logs/<step>.log  append-only step logs, readable by anyone
//! <state>/runs/<id>/live.json        the owner's snapshot at each commit, for readers
//! <state>/runs/<id>/owner            locked by the owner; holds its pid
//! <state>/runs/<id>/cancel           written by `ckflow cancel`
//! <state>/sessions/<id>/workspace/   a session's workspace
//! ```
//!
//! The engine writes through a [`RunHandle`] (one per run, owned by the process running it),
//! everyone reads through [`Store`]. Every call blocks on file IO: index visits wait up to
//! [`StoreOptions::lock_timeout`] for the index lock, so async callers should use
//! `tokio::task::spawn_blocking` for them; a [`RunHandle::commit`] is one `fsync`.

mod error;
mod format;
mod index;
mod journal;
mod lock;
mod logs;
mod model;
mod redact;
mod run;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use error::{Result, StoreError};
pub use format::CURRENT_FORMAT;
pub use logs::{LogFollower, log_file_name, percent_decode, step_of_log_file};
pub use model::{
    CancelOutcome, CommitStats, ContextEntry, DetailSource, GcOptions, GcReport, HistoryEntry,
    HistoryKind, InstanceRecord, LogStream, RunDetail, RunFilter, RunRecord, RunStatus, RunSummary,
    Session, StepError, StepRecord, StepStatus, SweepReport,
};
pub use redact::{MASK, redact};
pub(crate) use run::Finished;
pub use run::RunHandle;

use index::Index;
use lock::{Backoff, IndexLock, OwnerInfo, OwnerLock, live_owner};

/// The default cap on a step's log: 1 MiB.
pub const DEFAULT_LOG_CAP_BYTES: u64 = 1024 * 1024;
/// The default number of runs kept: when a run finishes, the oldest finished runs beyond
/// this many are removed (see [`Store::gc`]).
pub const DEFAULT_KEEP_RUNS: usize = 1000;
/// How long to wait for another process to release a database before giving up.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, at most, a busy run rewrites its `live.json` snapshot.
pub const DEFAULT_LIVE_INTERVAL: Duration = Duration::from_millis(200);
/// How long a shared-context entry lives unless it says otherwise: one hour.
pub const DEFAULT_CONTEXT_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a session may stay unused before a sweep removes it: 24 hours.
pub const DEFAULT_SESSION_IDLE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The most history entries kept per session; older ones are dropped as new ones come.
pub const HISTORY_CAP: usize = 1000;
/// The session the CLI uses when `--session` names none.
pub const DEFAULT_SESSION: &str = "default";

/// How a [`Store`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// A step's log stops at this many bytes, then ends with a truncation mark.
    pub log_cap_bytes: u64,
    /// The cap on kept runs enforced when a run finishes; `None` keeps everything.
    pub keep_runs: Option<usize>,
    /// How long to wait for a database another process holds.
    pub lock_timeout: Duration,
    /// Whether `ckflow cancel` may send SIGTERM to the processes that own this store's runs.
    /// A process running several runs at once (the MCP server) sets `false` and polls
    /// [`RunHandle::cancel_requested`] instead.
    pub cancel_by_signal: bool,
    /// [`RunHandle::commit_throttled`] rewrites `live.json` at most this often.
    pub live_interval: Duration,
    /// Keep the shared index open between visits, for a long-lived process that visits it
    /// often (the MCP server): it is released after 20 ms unused, or as soon as another
    /// process asks for it (`index.want`), or after 10 s held. Off by default.
    pub hold_index: bool,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            log_cap_bytes: DEFAULT_LOG_CAP_BYTES,
            keep_runs: Some(DEFAULT_KEEP_RUNS),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            cancel_by_signal: true,
            live_interval: DEFAULT_LIVE_INTERVAL,
            hold_index: false,
        }
    }
}

/// The state store of one project. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: StoreOptions,
    index_lock: IndexLock,
    /// With [`StoreOptions::hold_index`]: the index kept open between visits.
    holder: Option<Arc<index::Holder>>,
}

/// What [`Store::start_run`] does in the index besides listing the run.
#[derive(Debug, Clone, Default)]
pub struct RunStart {
    /// The session (`None`: a new one, with a new id).
    pub session: Option<String>,
    /// Labels merged over the session's.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Sweep expired context entries and idle sessions first (the CLI does, before each
    /// run).
    pub sweep: bool,
    /// Now, in milliseconds since the Unix epoch: the session's clock, which context entries
    /// have expired.
    pub now_ms: u64,
}

/// What [`Store::start_run`] returns.
#[derive(Debug)]
pub struct StartedRecord {
    /// The run's handle (the caller owns the run).
    pub handle: RunHandle,
    /// The run's session.
    pub session: Session,
    /// The session's shared context, as templates read it (`{{context.KEY}}`).
    pub context: serde_json::Map<String, serde_json::Value>,
    /// What the sweep removed, when one was asked for.
    pub swept: Option<SweepReport>,
}

/// What a run's `live.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct LiveSnapshot {
    /// The run's record without its source.
    run: RunRecord,
    /// The steps, without outputs.
    steps: Vec<StepRecord>,
}

/// [`LiveSnapshot`] borrowed, for writing it without copying every step.
#[derive(serde::Serialize)]
struct LiveSnapshotRef<'a> {
    run: &'a RunRecord,
    steps: &'a [StepRecord],
}

impl Store {
    /// Open (creating if needed) the state directory `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Open (creating if needed) the state directory `dir`. Refuses a directory written by a
    /// newer ckflow ([`StoreError::NewerFormat`]); migrates an older one.
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let dir = dir.as_ref();
        let dir = std::path::absolute(dir).map_err(StoreError::io("resolve", dir))?;
        for sub in ["runs", "sessions"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(StoreError::io("create", path))?;
        }
        let store = Store {
            inner: Arc::new(Inner {
                index_lock: IndexLock::new(dir.join("index.lock")),
                holder: options
                    .hold_index
                    .then(|| index::Holder::start(dir.join("index.lock"), dir.join("index"))),
                dir,
                options,
            }),
        };
        if format::check(store.dir())?.is_some() {
            // Migrate under the index lock, re-reading the version: another process may have
            // migrated meanwhile.
            let mut backoff = Backoff::new(store.inner.options.lock_timeout);
            let _guard = store.inner.index_lock.lock(&mut backoff)?;
            if let Some(v) = format::check(store.dir())? {
                format::migrate(store.dir(), v)?;
            }
        }
        Ok(store)
    }

    /// The default state directory of a project: `<project>/.ckflow`.
    pub fn default_dir(project: &Path) -> PathBuf {
        project.join(".ckflow")
    }

    /// The state directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// A run's directory, `<state>/runs/<id>`.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.inner.dir.join("runs").join(id)
    }

    /// The path of a step's log file.
    pub fn log_path(&self, id: &str, step: &str) -> PathBuf {
        self.run_dir(id).join("logs").join(log_file_name(step))
    }

    pub(crate) fn visit<T>(&self, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        if let Some(holder) = &self.inner.holder {
            return holder.visit(self.inner.options.lock_timeout, f);
        }
        index::visit(
            &self.inner.index_lock,
            &self.inner.dir.join("index"),
            self.inner.options.lock_timeout,
            f,
        )
    }

    /// Start recording a run. The record's `status` is set to `running` and its `pid` to
    /// this process. Its inputs must already be redacted ([`redact`]). When this returns,
    /// the record is on disk and the run is listed; the returned handle owns the run until
    /// [`RunHandle::finish`] or until it is dropped (then the run reads as `interrupted`).
    pub fn create_run(&self, record: RunRecord) -> Result<RunHandle> {
        let handle = self.create_run_files(record)?;
        let summary = handle.record().summary();
        self.visit(|ix| {
            let runs = ix.runs.clone();
            ix.put(&runs, summary.id.as_bytes(), &summary)
        })?;
        Ok(handle)
    }

    /// Start recording a run in a session, with one visit to the index for all of it: an
    /// optional sweep, the session (created or touched, labels merged), its shared context
    /// as of `now_ms`, a history entry, and the run's row. Otherwise as
    /// [`Store::create_run`]; the record's `session` is set to the session's id.
    pub fn start_run(&self, mut record: RunRecord, start: RunStart) -> Result<StartedRecord> {
        let session_id = match start.session {
            Some(id) => id,
            None => new_id(start.now_ms),
        };
        validate_id("session", &session_id)?;
        record.session = Some(session_id.clone());
        let handle = self.create_run_files(record)?;
        let summary = handle.record().summary();
        let workspace = self.session_workspace(&session_id);
        let now = start.now_ms;
        let entry = HistoryEntry {
            at_ms: now,
            kind: HistoryKind::Run,
            run_id: Some(summary.id.clone()),
            name: Some(summary.workflow.clone()),
            message: None,
            data: serde_json::json!({"status": "running"}),
        };
        let (swept, (session, expired), context) = self.visit(|ix| {
            let swept = if start.sweep {
                Some(self.sweep_in(ix, now)?)
            } else {
                None
            };
            let ensured = session::ensure_in(ix, &session_id, start.labels, None, now, workspace)?;
            let context = session::context_in(ix, &session_id, now)?;
            session::history_in(ix, &session_id, &entry)?;
            let runs = ix.runs.clone();
            ix.put(&runs, summary.id.as_bytes(), &summary)?;
            Ok((swept, ensured, context))
        })?;
        if let Some(r) = &swept {
            self.after_sweep(r);
        }
        self.after_ensure(&session, expired)?;
        Ok(StartedRecord {
            handle,
            session,
            context: context.into_iter().map(|e| (e.key, e.value)).collect(),
            swept,
        })
    }

    /// The run's directory, database, record and owner lock, durable; not listed yet.
    fn create_run_files(&self, mut record: RunRecord) -> Result<RunHandle> {
        validate_id("run", &record.id)?;
        let dir = self.run_dir(&record.id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::RunExists(record.id));
            }
            Err(e) => return Err(StoreError::io("create", dir)(e)),
        }
        let logs = dir.join("logs");
        std::fs::create_dir(&logs).map_err(StoreError::io("create", logs))?;
        let owner = OwnerLock::acquire(&dir.join("owner"), &record.id, self.owner_info())?;
        record.status = RunStatus::Running;
        record.pid = std::process::id();
        record.finished_at_ms = None;
        let handle = RunHandle::create(self.clone(), dir.clone(), record, owner)?;
        // The run's directory entry must survive a power cut as well as its contents.
        sync_dir(&self.inner.dir.join("runs"))?;
        Ok(handle)
    }

    /// Take over a run that no live process owns (crashed, interrupted, cancelled or
    /// failed), to continue it. Returns the handle, the stored record (before this resume:
    /// its `status` is what it was) and the steps, in the order they were first recorded,
    /// `running` ones read as `interrupted`. The engine keeps finished steps and runs the
    /// rest. Refuses with [`StoreError::RunStillRunning`] when a live process owns it.
    pub fn resume_run(&self, id: &str) -> Result<(RunHandle, RunRecord, Vec<StepRecord>)> {
        validate_id("run", id)?;
        let dir = self.run_dir(id);
        if !run::has_records(&dir) {
            return Err(StoreError::RunNotFound(id.to_owned()));
        }
        let owner = OwnerLock::acquire(&dir.join("owner"), id, self.owner_info())?;
        let _ = std::fs::remove_file(dir.join("cancel"));
        let (handle, before, steps) = RunHandle::resume(self.clone(), dir, id, owner)?;
        let summary = handle.record().summary();
        self.visit(|ix| {
            let runs = ix.runs.clone();
            ix.put(&runs, summary.id.as_bytes(), &summary)
        })?;
        Ok((handle, before, steps))
    }

    fn owner_info(&self) -> OwnerInfo {
        OwnerInfo {
            pid: std::process::id(),
            signal: self.inner.options.cancel_by_signal,
        }
    }

    /// The runs in the index, newest first, filtered. Reads the shared index only (plus the
    /// `owner` lock of runs stored as running, to tell running from interrupted), so it works
    /// while other processes run workflows, and stays fast: 10,000 runs list in tens of
    /// milliseconds.
    pub fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        let raw: Vec<sled::IVec> = self.visit(|ix| {
            ix.runs
                .iter()
                .values()
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(StoreError::db(&ix.path))
        })?;
        let index_path = self.inner.dir.join("index");
        let mut out = Vec::with_capacity(raw.len().min(filter.limit.unwrap_or(usize::MAX)));
        for bytes in raw {
            let mut summary: RunSummary =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(&index_path, e))?;
            if filter
                .workflow
                .as_ref()
                .is_some_and(|w| *w != summary.workflow)
                || filter.session.is_some() && filter.session != summary.session
            {
                continue;
            }
            if summary.status == RunStatus::Running {
                summary.status = self.derive_status(&summary.id);
            }
            if filter.status.is_some_and(|s| s != summary.status) {
                continue;
            }
            out.push(summary);
        }
        out.sort_unstable_by(|a, b| {
            b.started_at_ms
                .cmp(&a.started_at_ms)
                .then_with(|| b.id.cmp(&a.id))
        });
        if let Some(limit) = filter.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// The state of a run stored as running: `running` if a live process owns it, its final
    /// state if the owner finished it but could not update the index (from `live.json`),
    /// else `interrupted`.
    fn derive_status(&self, id: &str) -> RunStatus {
        let dir = self.run_dir(id);
        if live_owner(&dir.join("owner")).is_some() {
            return RunStatus::Running;
        }
        match read_live(&dir) {
            Some(live) if live.run.status.is_finished() => live.run.status,
            _ => RunStatus::Interrupted,
        }
    }

    /// Whether a live process owns (is running) the run.
    pub fn is_running(&self, id: &str) -> bool {
        validate_id("run", id).is_ok() && live_owner(&self.run_dir(id).join("owner")).is_some()
    }

    /// Everything about a run, or `None` if there is no such run. A run that another process
    /// is running is read from its `live.json` snapshot (its database is locked); otherwise
    /// from its database, which this opens for a moment.
    pub fn get_run(&self, id: &str) -> Result<Option<RunDetail>> {
        validate_id("run", id)?;
        let dir = self.run_dir(id);
        if !dir.is_dir() {
            return Ok(None);
        }
        let db_dir = dir.join("db");
        let mut backoff = Backoff::new(self.inner.options.lock_timeout);
        loop {
            if let Some(owner) = live_owner(&dir.join("owner")) {
                let pid = (owner.pid != 0).then_some(owner.pid);
                return match read_live(&dir) {
                    Some(live) => Ok(Some(RunDetail {
                        // The owner may be between its last write and letting go.
                        status: if live.run.status.is_finished() {
                            live.run.status
                        } else {
                            RunStatus::Running
                        },
                        owner_pid: pid,
                        run: live.run,
                        steps: live.steps,
                        source: DetailSource::LiveSnapshot,
                    })),
                    None => self.detail_from_index(id, Some(RunStatus::Running), pid),
                };
            }
            if !run::has_records(&dir) {
                return self.detail_from_index(id, None, None);
            }
            // Not owned: open the database for a moment. Another reader (or a resume that is
            // starting) may hold it; then look again.
            match lock::try_open_db(&db_dir)? {
                Some(db) => {
                    let Some((record, mut steps)) = run::read_run_db(&db, &dir, &db_dir)? else {
                        return self.detail_from_index(id, None, None);
                    };
                    drop(db);
                    let mut status = record.status;
                    if status == RunStatus::Running {
                        status = RunStatus::Interrupted;
                        run::mark_interrupted(&mut steps);
                    }
                    return Ok(Some(RunDetail {
                        run: record,
                        status,
                        owner_pid: None,
                        steps,
                        source: DetailSource::Database,
                    }));
                }
                None => {
                    if !backoff.wait() {
                        return Err(StoreError::Locked {
                            what: "the run database",
                            path: db_dir,
                            waited: backoff.elapsed(),
                        });
                    }
                }
            }
        }
    }

    fn detail_from_index(
        &self,
        id: &str,
        status: Option<RunStatus>,
        owner_pid: Option<u32>,
    ) -> Result<Option<RunDetail>> {
        let summary: Option<RunSummary> = self.visit(|ix| ix.get(&ix.runs, id.as_bytes()))?;
        Ok(summary.map(|s| {
            let derived = status.unwrap_or(match s.status {
                RunStatus::Running => RunStatus::Interrupted,
                other => other,
            });
            let mut run = RunRecord::new(s.id, s.workflow, s.started_at_ms);
            run.status = s.status;
            run.finished_at_ms = s.finished_at_ms;
            run.session = s.session;
            run.pid = s.pid;
            RunDetail {
                run,
                status: derived,
                owner_pid,
                steps: Vec::new(),
                source: DetailSource::Index,
            }
        }))
    }

    /// A step's whole log ("" when it wrote nothing).
    pub fn read_log(&self, id: &str, step: &str) -> Result<String> {
        validate_id("run", id)?;
        if !self.run_dir(id).is_dir() {
            return Err(StoreError::RunNotFound(id.to_owned()));
        }
        let path = self.log_path(id, step);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(StoreError::io("read", path)(e)),
        }
    }

    /// The steps of a run that have a log, sorted by id.
    pub fn log_steps(&self, id: &str) -> Result<Vec<String>> {
        validate_id("run", id)?;
        let dir = self.run_dir(id).join("logs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::RunNotFound(id.to_owned()));
            }
            Err(e) => return Err(StoreError::io("read", dir)(e)),
        };
        let mut steps: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| step_of_log_file(&e.file_name().to_string_lossy()))
            .collect();
        steps.sort();
        Ok(steps)
    }

    /// Follow a step's log (`ckflow logs --follow`): poll the follower for new lines while
    /// [`Store::is_running`] says the run goes on, then poll once more.
    pub fn follow_log(&self, id: &str, step: &str) -> Result<LogFollower> {
        validate_id("run", id)?;
        if !self.run_dir(id).is_dir() {
            return Err(StoreError::RunNotFound(id.to_owned()));
        }
        Ok(LogFollower::new(self.log_path(id, step)))
    }

    /// Ask the process running a run to cancel it (`ckflow cancel`, MCP `CancelRun`): writes
    /// the `cancel` marker its owner polls, then sends the owner SIGTERM unless the owner is
    /// this process or asked not to be signalled.
    pub fn request_cancel(&self, id: &str) -> Result<CancelOutcome> {
        validate_id("run", id)?;
        let dir = self.run_dir(id);
        if !dir.is_dir() {
            return Err(StoreError::RunNotFound(id.to_owned()));
        }
        let Some(owner) = live_owner(&dir.join("owner")) else {
            let status = match self.get_run(id)? {
                Some(detail) => detail.status,
                None => RunStatus::Interrupted,
            };
            return Ok(CancelOutcome::NotRunning { status });
        };
        let marker = dir.join("cancel");
        std::fs::write(&marker, format!("{}\n", now_ms()))
            .map_err(StoreError::io("write", marker))?;
        let pid = (owner.pid != 0).then_some(owner.pid);
        match pid {
            Some(pid) if owner.signal && pid != std::process::id() && signal_terminate(pid) => {
                Ok(CancelOutcome::Signalled { pid })
            }
            _ => Ok(CancelOutcome::Requested { pid }),
        }
    }

    /// Write index rows as they are, replacing rows with the same id, in one index visit.
    /// For migrations and tooling (the benchmarks seed a 10,000-run index this way); the
    /// engine never needs it.
    pub fn import_summaries(&self, summaries: &[RunSummary]) -> Result<()> {
        for s in summaries {
            validate_id("run", &s.id)?;
        }
        self.visit(|ix| {
            let runs = ix.runs.clone();
            let mut batch = sled::Batch::default();
            for s in summaries {
                batch.insert(
                    s.id.as_bytes(),
                    serde_json::to_vec(s).expect("summaries serialise"),
                );
            }
            runs.apply_batch(batch).map_err(StoreError::db(&ix.path))?;
            ix.mark_dirty();
            Ok(())
        })
    }

    /// Retention (`ckflow gc`): remove runs that ended longer than `older_than` ago, and all
    /// but the newest `keep` runs, index rows and directories both. Runs a live process owns
    /// are never removed (they count towards `keep`). Also removes run directories without
    /// an index row that no process owns and that are more than a minute old (left by a crash
    /// while a run was being created, or during an earlier gc).
    pub fn gc(&self, options: &GcOptions, now_ms: u64) -> Result<GcReport> {
        let (victims, known) = self.visit(|ix| {
            let victims = self.select_victims(ix, options, now_ms, None)?;
            let mut known = std::collections::HashSet::new();
            for k in ix.runs.iter().keys() {
                let k = k.map_err(StoreError::db(&ix.path))?;
                known.insert(String::from_utf8_lossy(&k).into_owned());
            }
            Ok((victims, known))
        })?;
        let mut report = GcReport::default();
        for id in victims {
            self.remove_run_dir(&id);
            report.runs_removed.push(id);
        }
        let runs = self.inner.dir.join("runs");
        let entries = std::fs::read_dir(&runs).map_err(StoreError::io("read", &runs))?;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) || validate_id("run", &name).is_err() {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60));
            if old && self.remove_run_dir(&name) {
                report.orphans_removed += 1;
            }
        }
        Ok(report)
    }

    /// Choose and unlist the runs that retention removes; the caller removes their
    /// directories after the visit. `except` is never chosen (the run finishing now).
    fn select_victims(
        &self,
        ix: &mut Index,
        options: &GcOptions,
        now_ms: u64,
        except: Option<&str>,
    ) -> Result<Vec<String>> {
        let rows: Vec<(sled::IVec, RunSummary)> = ix.scan(&ix.runs, b"")?;
        let mut rows: Vec<RunSummary> = rows.into_iter().map(|(_, s)| s).collect();
        rows.sort_unstable_by(|a, b| {
            b.started_at_ms
                .cmp(&a.started_at_ms)
                .then_with(|| b.id.cmp(&a.id))
        });
        let cutoff = options
            .older_than
            .map(|d| now_ms.saturating_sub(d.as_millis().try_into().unwrap_or(u64::MAX)));
        let mut victims = Vec::new();
        for (rank, s) in rows.iter().enumerate() {
            let beyond_cap = options.keep.is_some_and(|keep| rank >= keep);
            let ended = s.finished_at_ms.unwrap_or(s.started_at_ms);
            let too_old = cutoff.is_some_and(|c| ended < c);
            if !(beyond_cap || too_old) || except == Some(s.id.as_str()) {
                continue;
            }
            if live_owner(&self.run_dir(&s.id).join("owner")).is_some() {
                continue;
            }
            victims.push(s.id.clone());
        }
        let runs = ix.runs.clone();
        for id in &victims {
            ix.remove(&runs, id.as_bytes())?;
        }
        Ok(victims)
    }

    /// Remove a run's directory unless a live process owns it (taking its owner lock first,
    /// so a resume cannot start meanwhile). Whether it was removed.
    fn remove_run_dir(&self, id: &str) -> bool {
        let dir = self.run_dir(id);
        let owner = match OwnerLock::acquire(&dir.join("owner"), id, self.owner_info()) {
            Ok(owner) => owner,
            Err(StoreError::RunStillRunning { .. }) => return false,
            // The directory is already gone or unusable: remove what is there.
            Err(_) => {
                return std::fs::remove_dir_all(&dir).is_ok();
            }
        };
        let removed = std::fs::remove_dir_all(&dir);
        drop(owner);
        if let Err(e) = &removed {
            tracing::warn!(run = id, error = %e, "could not remove the run's directory");
        }
        removed.is_ok()
    }
}

/// Read a run's `live.json`.
fn read_live(dir: &Path) -> Option<LiveSnapshot> {
    let bytes = std::fs::read(dir.join("live.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Check that an id can name a directory: 1 to 128 of `A-Z a-z 0-9 _ - .`, not starting
/// with `.`.
pub fn validate_id(kind: &'static str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            kind,
            id: id.to_owned(),
        })
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new id for a run or a session: its UTC start time and 8 random hex digits,
/// `20260423-114512-3fa9c2e1`. Ids made later sort later (to the second).
pub fn new_id(now_ms: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(now_ms);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    let random = h.finish() as u32;
    let secs = now_ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{random:08x}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A time in milliseconds since the Unix epoch as `2026-04-23 11:45:12` (UTC), for people.
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A hash of a workflow's source for [`RunRecord::source_hash`]: `fnv1a64:` and 16 hex
/// digits. Not cryptographic; it tells whether a file changed.
pub fn source_hash(source: &str) -> String {
    format!("fnv1a64:{:016x}", crate::hash::fnv1a64(source.as_bytes()))
}

/// Write a file atomically: a temporary file in the same directory, then rename over it.
/// Readers see the old or the new content, never a mix.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes).map_err(StoreError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StoreError::io("rename", path)(e)
    })
}

/// `fsync` a directory, so that entries created in it survive a power cut.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::io("sync", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Send SIGTERM; whether it was delivered.
#[cfg(unix)]
fn signal_terminate(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; pid is a positive process id.
    pid > 0 && unsafe { libc::kill(pid, libc::SIGTERM) } == 0
}

#[cfg(not(unix))]
fn signal_terminate(_pid: u32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_valid() {
        let a = new_id(1_776_944_712_000);
        assert!(a.starts_with("20260423-114512-"), "{a}");
        assert_eq!(a.len(), "20260423-114512-".len() + 8);
        validate_id("run", &a).unwrap();
        let b = new_id(1_776_944_713_000);
        assert!(b > a);
        assert_ne!(new_id(1_776_944_712_000), new_id(1_776_944_712_000));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(format_utc(1_776_944_712_345), "2026-04-23 11:45:12");
    }

    #[test]
    fn bad_ids_are_refused() {
        for id in ["", ".x", "a/b", "a b", "ü", &"x".repeat(129)] {
            assert!(validate_id("run", id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn source_hash_is_stable_and_sensitive() {
        assert_eq!(source_hash(""), "fnv1a64:cbf29ce484222325");
        assert_ne!(source_hash("a: 1"), source_hash("a: 2"));
    }
}
