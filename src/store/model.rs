//! The records the store keeps, as serde types. They are written as JSON (serde_json) into
//! sled values and into `live.json`; fields added later carry `#[serde(default)]` so older
//! records still read, and anything that changes the meaning of a stored field bumps the
//! format version (see [`super::format`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Its owner process is working on it.
    Running,
    /// Every step succeeded (or failed with `continue_on_error`).
    Succeeded,
    /// A step failed.
    Failed,
    /// It was cancelled (Ctrl-C, `ckflow cancel`, MCP cancel).
    Cancelled,
    /// Stored as running, but its owner process is gone (crash, `kill -9`, reboot). Never
    /// written by an owner: readers derive it. `ckflow resume` continues such a run.
    Interrupted,
}

impl RunStatus {
    /// Whether the run has ended (succeeded, failed or cancelled).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// The snake_case name (`running`, `succeeded`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a step (SPEC §1.2, plus the derived `interrupted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started yet.
    #[default]
    Pending,
    /// An attempt is in flight.
    Running,
    /// It succeeded.
    Succeeded,
    /// It failed (with `continue_on_error` the run goes on; the record keeps `failed`).
    Failed,
    /// Its `if` or `when` did not hold.
    Skipped,
    /// It was cancelled.
    Cancelled,
    /// Stored as running when its run's owner died; it runs again on resume. Derived by
    /// readers, never written by an owner.
    Interrupted,
}

impl StepStatus {
    /// Whether the step has ended (resume keeps these as they are, except
    /// failed/cancelled which it re-runs).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }
}

/// A step's failure (SPEC §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// The error class (`transient`, `timeout`, `build_failed`, …).
    pub class: String,
    /// The tool-specific code (`DOCKERFILE_INVALID`, …), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The message, already redacted.
    pub message: String,
    /// Structured detail (exit code, failing instruction …), already redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// What the store keeps about one run. Written by [`super::Store::create_run`], updated by
/// the owner's [`super::RunHandle`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id (file-name safe: see [`super::new_id`]).
    pub id: String,
    /// The workflow's `name`.
    pub workflow: String,
    /// The workflow file's text, so `resume` can plan again from it.
    #[serde(default)]
    pub source: String,
    /// A hash of `source` (see [`super::source_hash`]), to tell whether a file was edited.
    #[serde(default)]
    pub source_hash: String,
    /// The input values, with every secret already replaced by `***` (see
    /// [`super::redact`]). The store writes what it is given.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// The names of the secret inputs, so `resume` can ask for them again.
    #[serde(default)]
    pub secret_inputs: Vec<String>,
    /// The run's state as its owner last wrote it (`interrupted` is derived on read).
    pub status: RunStatus,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// The session it belongs to.
    #[serde(default)]
    pub session: Option<String>,
    /// The pid of the process that last owned it (set by the store).
    #[serde(default)]
    pub pid: u32,
    /// How many times it was resumed.
    #[serde(default)]
    pub resumes: u32,
}

impl RunRecord {
    /// A new record for a run starting now-ish: status `running`, no inputs, no session.
    pub fn new(
        id: impl Into<String>,
        workflow: impl Into<String>,
        started_at_ms: u64,
    ) -> RunRecord {
        RunRecord {
            id: id.into(),
            workflow: workflow.into(),
            source: String::new(),
            source_hash: String::new(),
            inputs: Map::new(),
            secret_inputs: Vec::new(),
            status: RunStatus::Running,
            started_at_ms,
            finished_at_ms: None,
            session: None,
            pid: std::process::id(),
            resumes: 0,
        }
    }

    /// The index row for this record.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            id: self.id.clone(),
            workflow: self.workflow.clone(),
            status: self.status,
            session: self.session.clone(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            pid: self.pid,
        }
    }
}

/// What the store keeps about one step (or one `for_each` instance, or one recovery step:
/// the engine chooses the id, e.g. `build`, `build[2]`, `build.recovery.1`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's id, unique within the run.
    pub id: String,
    /// Its state.
    pub status: StepStatus,
    /// Attempts started so far (1 for a step that ran once).
    #[serde(default)]
    pub attempts: u32,
    /// When the first attempt started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// When it ended, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// How long it ran, retries and delays included.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Its outputs (already redacted); `null` when it has none yet.
    #[serde(default)]
    pub outputs: Value,
    /// Its failure, when it failed.
    #[serde(default)]
    pub error: Option<StepError>,
    /// The failure-routing decisions taken for it, in order (the engine's own JSON: rule,
    /// recovery step, `then`).
    #[serde(default)]
    pub routing: Vec<Value>,
    /// For a recovery step: the step whose failure it recovers.
    #[serde(default)]
    pub recovery_for: Option<String>,
    /// Why it was skipped (`if`, `needs_failed`, `fail_fast` …), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_reason: Option<String>,
    /// It failed, but the failure counted as success (`continue_on_error`, `then:
    /// continue`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tolerated: bool,
    /// It is a `finally` step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
}

impl StepRecord {
    /// A pending record for a step.
    pub fn new(id: impl Into<String>) -> StepRecord {
        StepRecord {
            id: id.into(),
            ..StepRecord::default()
        }
    }
}

/// What the store keeps about one `for_each` instance of a main step that ended (succeeded
/// or failed), so that a resume keeps the instances that succeeded: the latest record per
/// step and instance. Kept apart from the steps (`ckflow runs show` lists steps only).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The step's id.
    pub step: String,
    /// The instance (its item's index, from 0).
    pub index: usize,
    /// The fingerprint of the step's whole item list when it ran (the engine's
    /// `items_hash`): a resume keeps the instance only if the list is the same.
    #[serde(default)]
    pub items_hash: String,
    /// `succeeded` or `failed`.
    pub status: StepStatus,
    /// Attempts it made.
    #[serde(default)]
    pub attempts: u32,
    /// When it ended, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// Its outputs (already redacted); `null` unless it succeeded.
    #[serde(default)]
    pub outputs: Value,
    /// Its failure, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
}

/// One row of the run index: what `ckflow runs` shows. Kept small on purpose (listing 10,000
/// of them must stay far below 200 ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's id.
    pub id: String,
    /// The workflow's `name`.
    pub workflow: String,
    /// Its state; `interrupted` when stored as running and no process owns it.
    pub status: RunStatus,
    /// Its session.
    #[serde(default)]
    pub session: Option<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// The pid of its (last) owner.
    #[serde(default)]
    pub pid: u32,
}

/// Which runs [`super::Store::list_runs`] returns. Every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs in this state (after `interrupted` is derived).
    pub status: Option<RunStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs of this session.
    pub session: Option<String>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

/// Where a [`RunDetail`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetailSource {
    /// The run's own database: complete.
    Database,
    /// The owner's `live.json` snapshot, because the run is running in another process:
    /// `run.source` is empty and step `outputs` are `null`.
    LiveSnapshot,
    /// Only the index row (the run's files are missing or not written yet): no steps.
    Index,
}

/// Everything about one run, for `ckflow runs show` and MCP `GetRun`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run's record (`status` as stored; see `status` for the derived one).
    pub run: RunRecord,
    /// Its state, with `interrupted` derived.
    pub status: RunStatus,
    /// The pid of the process running it, while it runs.
    pub owner_pid: Option<u32>,
    /// Its steps in the order they were first recorded; `running` steps of an interrupted
    /// run read as `interrupted`.
    pub steps: Vec<StepRecord>,
    /// Where this was read from.
    pub source: DetailSource,
}

/// What [`super::Store::request_cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum CancelOutcome {
    /// The cancel marker was written and the owner process was sent SIGTERM.
    Signalled {
        /// The owner's pid.
        pid: u32,
    },
    /// The cancel marker was written; the owner (this process, or one that asked not to be
    /// signalled, like the MCP server) sees it through [`super::RunHandle::cancel_requested`].
    Requested {
        /// The owner's pid, when known.
        pid: Option<u32>,
    },
    /// Nothing to cancel: the run is not running.
    NotRunning {
        /// Its state.
        status: RunStatus,
    },
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// The step's standard output (`[stdout] ` prefix).
    Stdout,
    /// The step's standard error (`[stderr] ` prefix).
    Stderr,
    /// A line from ckflow itself, e.g. "attempt 2 of 3" (`[ckflow] ` prefix).
    Ckflow,
}

impl LogStream {
    /// The prefix written before each line of this stream.
    pub fn prefix(self) -> &'static str {
        match self {
            LogStream::Stdout => "[stdout] ",
            LogStream::Stderr => "[stderr] ",
            LogStream::Ckflow => "[ckflow] ",
        }
    }
}

/// A session (SPEC §4): a workspace, labels, history and shared context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The session's id.
    pub id: String,
    /// Free-form labels (`--label k=v`, MCP metadata).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When it was last used, in milliseconds since the Unix epoch.
    pub last_active_ms: u64,
    /// How long it may stay unused before a sweep removes it, in milliseconds.
    pub idle_ttl_ms: u64,
    /// Its workspace folder (`<state>/sessions/<id>/workspace`), removed with it.
    pub workspace: PathBuf,
}

impl Session {
    /// Whether it has been idle past its TTL at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_active_ms) > self.idle_ttl_ms
    }
}

/// What kind of thing a [`HistoryEntry`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// A workflow run.
    Run,
    /// A tool call (MCP tool or a step).
    ToolCall,
    /// An error.
    Error,
}

/// One entry of a session's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What it records.
    pub kind: HistoryKind,
    /// The run involved, if any.
    #[serde(default)]
    pub run_id: Option<String>,
    /// The workflow or tool name, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// A one-line description or the error message (already redacted).
    #[serde(default)]
    pub message: Option<String>,
    /// Anything else (already redacted): arguments, a status, a result summary.
    #[serde(default)]
    pub data: Value,
}

/// One shared-context entry (`{{context.KEY}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// When it was written, in milliseconds since the Unix epoch.
    pub set_at_ms: u64,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// What [`super::Store::sweep`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Expired context entries removed (those of removed sessions included).
    pub context_removed: usize,
    /// Sessions removed for being idle past their TTL, with their workspaces.
    pub sessions_removed: Vec<String>,
}

/// What [`super::Store::gc`] removes: finished (or interrupted) runs older than `older_than`,
/// and beyond the newest `keep`. Runs that a live process owns are never removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Remove runs that ended (or, if they never ended, started) longer ago than this.
    pub older_than: Option<std::time::Duration>,
    /// Keep at most this many runs, the newest by start time.
    pub keep: Option<usize>,
}

impl Default for GcOptions {
    /// No age limit; the default cap ([`super::DEFAULT_KEEP_RUNS`]).
    fn default() -> GcOptions {
        GcOptions {
            older_than: None,
            keep: Some(super::DEFAULT_KEEP_RUNS),
        }
    }
}

/// What [`super::Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// The runs removed (index rows and directories).
    pub runs_removed: Vec<String>,
    /// Run directories removed that had no index row (left by a crash during creation or
    /// during an earlier gc).
    pub orphans_removed: usize,
}

/// How much flushing a [`super::RunHandle`] did: group commit shows as `flushes` much smaller
/// than `steps_finished`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommitStats {
    /// Step finishes recorded.
    pub steps_finished: u64,
    /// `commit` calls (including those inside `step_finished`).
    pub commits: u64,
    /// Syncs to disk actually done (journal frames appended and `fdatasync`ed; a commit with
    /// nothing new, or whose writes another commit already made durable, does none).
    pub flushes: u64,
}
