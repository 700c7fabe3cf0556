//! The engine's hooks for durable state: a [`Recorder`] that sees every event and makes
//! step finishes durable, and a [`ResumeState`] that tells a resumed run which steps it
//! keeps. The engine knows nothing of files or databases; `crate::runner` implements the
//! recorder over the store.
//!
//! The contract (docs/state.md, "What is written when"): the dispatcher collects the steps
//! that finished in one turn of its loop and hands them to [`Recorder::commit`] as one
//! batch. Until that commit has resolved, nothing hears of those steps: no `StepFinished`
//! event, no dependent released. One commit is in flight at a time; steps finishing
//! meanwhile ride on the next one (group commit), so the dispatcher never waits on the disk
//! while it has other work.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use super::event::Event;
use crate::report::StepReport;

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
    /// Make these finishes durable. The engine reports them only once the future resolves.
    fn commit(&self, steps: Vec<FinishedStep>) -> CommitFuture;
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

/// What a resumed run starts from: the steps of the earlier attempt(s) it keeps.
#[derive(Debug, Clone, Default)]
pub struct ResumeState {
    prior: HashMap<String, PriorStep>,
    rerun: HashSet<String>,
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

    /// Run step `id` again even if it succeeded (its definition changed); the steps after
    /// it run again too.
    pub fn rerun(&mut self, id: impl Into<String>) {
        self.rerun.insert(id.into());
    }

    /// The earlier record of `id`, if it may be kept (it succeeded or was skipped, not by
    /// `fail_fast`, and its definition did not change). The dispatcher also requires all of
    /// its needs to be kept.
    pub(crate) fn keepable(&self, id: &str) -> Option<&PriorStep> {
        use crate::report::{SkipReason, StepStatus};
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

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.prior.is_empty()
    }
}
