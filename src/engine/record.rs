//! The engine's hooks for durable state: a [`Recorder`] that sees every event and makes
//! step finishes durable, and a [`ResumeState`] that tells a resumed run which steps it
//! keeps. The engine knows nothing of files or databases; `crate::runner` implements the
//! recorder over the store.
//!
//! The contract (docs/state.md, "What is written when"): the dispatcher collects the steps
//! (and, for a recorder that wants them, the `for_each` instances) that finished in one turn
//! of its loop and hands them to [`Recorder::commit`] (or [`Recorder::commit_all`]) as one
//! batch. Until that commit has resolved, the caller's event channel hears nothing of those
//! steps (no `StepFinished`, and no event produced after it), and a step with effects keeps
//! its slot; their dependents start at once, since a recorder must make commits durable in
//! the order it gets them, each with everything it was given before (the recorder itself
//! sees events as they are produced). One commit is in flight at a time; steps finishing
//! meanwhile ride on the next one (group commit), so the dispatcher never waits on the disk
//! while it has other work.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use super::event::Event;
use crate::report::{StepReport, StepStatus};

/// What a commit returns: `Err` carries the store's message, and aborts the run (a broken
/// store is a critical error, never ignored).
pub type CommitFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Receives a run's events and makes step finishes durable. Implementations must not block
/// in [`Recorder::event`] (it is called on the async workers, also from tools' progress
/// callbacks): queue the IO to a thread of their own.
pub trait Recorder: Send + Sync + 'static {
    /// Every event of the run, already redacted, in the order the engine emits it
    /// (`StepStarted`, `StepOutput` lines, retries, routing …).
    fn event(&self, event: &Event);
    /// Make these finishes durable, after (or with) everything this recorder was given
    /// before. The engine reports them only once the future resolves.
    fn commit(&self, steps: Vec<FinishedStep>) -> CommitFuture;

    /// Whether this recorder records `for_each` instances ([`Recorder::commit_all`]), so
    /// that a resume can keep those that succeeded. Default: no (a resume then runs a
    /// partly finished `for_each` step whole).
    fn records_instances(&self) -> bool {
        false
    }

    /// Make these instance finishes and step finishes durable in one commit (the instances
    /// first). Called instead of [`Recorder::commit`] when a turn has instance finishes, and
    /// only if [`Recorder::records_instances`]. The default drops the instances.
    fn commit_all(
        &self,
        instances: Vec<FinishedInstance>,
        steps: Vec<FinishedStep>,
    ) -> CommitFuture {
        drop(instances);
        self.commit(steps)
    }
}

/// A `for_each` instance of a main step that ended (succeeded or failed), as the engine
/// hands it to [`Recorder::commit_all`] (redacted). Its slot stays taken until the commit
/// returns, as a step's does.
#[derive(Debug, Clone)]
pub struct FinishedInstance {
    /// The step's id.
    pub step: String,
    /// The instance (its item's index, from 0).
    pub index: usize,
    /// The fingerprint of the step's whole item list ([`items_hash`]): a resume keeps the
    /// instance only if the list renders to the same fingerprint again.
    pub items_hash: String,
    /// `succeeded` or `failed`.
    pub status: StepStatus,
    /// Attempts it made.
    pub attempts: u32,
    /// Its outputs (`null` unless it succeeded).
    pub outputs: Value,
    /// Its failure, when it failed.
    pub error: Option<crate::tools::ToolError>,
    /// When it finished (ms since the Unix epoch).
    pub finished_at_ms: u64,
}

/// A step that finished, as the engine hands it to [`Recorder::commit`] (redacted).
#[derive(Debug, Clone)]
pub struct FinishedStep {
    /// The step's id.
    pub id: String,
    /// Whether it is a `finally` step.
    pub finally: bool,
    /// Its record, as the report will show it.
    pub report: StepReport,
    /// When its first attempt started (ms since the Unix epoch); `None` if it never did.
    pub started_at_ms: Option<u64>,
    /// When it finished (ms since the Unix epoch).
    pub finished_at_ms: u64,
    /// Outputs to publish to the session's shared context (`share: true`): key, value,
    /// time to live.
    pub shared: Vec<SharedOutput>,
}

/// An output with `share: true`.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedOutput {
    /// The output's name (the context key).
    pub key: String,
    /// Its value.
    pub value: Value,
    /// How long it lives (`None`: the store's default, one hour).
    pub ttl: Option<Duration>,
}

/// What a resumed run starts from: the steps (and `for_each` instances) of the earlier
/// attempt(s) it keeps.
#[derive(Debug, Clone, Default)]
pub struct ResumeState {
    prior: HashMap<String, PriorStep>,
    instances: HashMap<String, Vec<PriorInstance>>,
    rerun: HashSet<String>,
}

/// A `for_each` instance's latest record from before the resume. One that succeeded is
/// kept (not run again, its outputs take its place in the step's list) when the step runs
/// again with the same item list and all of its needs kept.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorInstance {
    /// The instance (its item's index, from 0).
    pub index: usize,
    /// The fingerprint of the step's item list then ([`items_hash`]).
    pub items_hash: String,
    /// Its status then (only `succeeded` is kept).
    pub status: StepStatus,
    /// Attempts it made.
    pub attempts: u32,
    /// Its outputs.
    pub outputs: Value,
}

/// The fingerprint of a `for_each` step's item list (FNV-1a 64 of its JSON text):
/// `fnv1a64:0123456789abcdef`. Pass the items redacted, so the fingerprint says nothing
/// about a secret.
pub fn items_hash(items: &[Value]) -> String {
    let mut h = crate::hash::Fnv::default();
    // Writing JSON values to memory cannot fail.
    let _ = serde_json::to_writer(&mut h, items);
    format!("fnv1a64:{:016x}", h.finish())
}

/// A step's record from before the resume.
#[derive(Debug, Clone)]
pub struct PriorStep {
    /// Its record (status, attempts, outputs, error …).
    pub report: StepReport,
}

impl ResumeState {
    /// Nothing known yet.
    pub fn new() -> ResumeState {
        ResumeState::default()
    }

    /// Add an earlier record of step `id`.
    pub fn prior(&mut self, id: impl Into<String>, step: PriorStep) {
        self.prior.insert(id.into(), step);
    }

    /// Add the latest earlier record of an instance of the `for_each` step `id`.
    pub fn prior_instance(&mut self, id: impl Into<String>, instance: PriorInstance) {
        self.instances.entry(id.into()).or_default().push(instance);
    }

    /// Run step `id` again even if it succeeded (its definition changed); the steps after
    /// it run again too.
    pub fn rerun(&mut self, id: impl Into<String>) {
        self.rerun.insert(id.into());
    }

    /// The earlier record of `id`, if it may be kept (it succeeded or was skipped, not by
    /// `fail_fast`, and its definition did not change). The dispatcher also requires all of
    /// its needs to be kept.
    pub(crate) fn keepable(&self, id: &str) -> Option<&PriorStep> {
        use crate::report::SkipReason;
        if self.rerun.contains(id) {
            return None;
        }
        let p = self.prior.get(id)?;
        match p.report.status {
            StepStatus::Succeeded => Some(p),
            StepStatus::Skipped if p.report.skipped_reason != Some(SkipReason::FailFast) => Some(p),
            _ => None,
        }
    }

    /// The earlier instance records of the `for_each` step `id` that succeeded, unless its
    /// definition changed (the dispatcher also requires all of its needs to be kept, and
    /// the item list to be the same).
    pub(crate) fn take_instances(&mut self, id: &str) -> Option<Vec<PriorInstance>> {
        if self.rerun.contains(id) {
            return None;
        }
        let mut v = self.instances.remove(id)?;
        v.retain(|i| i.status == StepStatus::Succeeded);
        (!v.is_empty()).then_some(v)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.prior.is_empty() && self.instances.is_empty()
    }
}
