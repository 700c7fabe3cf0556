//! Running workflows with the store: the one way the CLI and the MCP server start, resume and
//! cancel runs. A [`Runner`] holds the tool registry, the project folder and the [`Store`]; it
//! creates each run's durable record, gives the engine a recorder that commits every
//! finished step before anything reports it, appends step output to the store's logs, and
//! publishes shared context to the run's session.
//!
//! The store's calls block on file IO. While a run goes on, all of its IO happens on a
//! thread of its own (`recorder`), never on the async workers. [`Runner::start`] and
//! [`Runner::resume`] create the run's durable record before they return (a few
//! milliseconds; an index visit may wait for another process up to the store's lock
//! timeout), inside `block_in_place` on a multi-thread runtime, then return with the run
//! going on as a task.

#![allow(
    clippy::result_large_err,
    reason = "RunnerError carries diagnostics, like validation does; failures are off the hot path"
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::engine::{Event, PriorStep, Redactor, ResumeState, RunOptions};
use crate::store::{self, CancelOutcome, RunRecord, RunStart, Store, StoreError, StoreOptions};
use crate::workflow::diagnostic::{Code, Diagnostic};
use crate::{Diagnostics, Engine, Plan, RunReport, ToolRegistry, Workflow};

mod recorder;

use crate::sync::lock;
pub(crate) use recorder::StoreContext;
use recorder::StoreRecorder;

/// Starts, resumes and cancels runs, recording them in the store. Cheap to share (`Arc`);
/// runs started here go on as tasks of the current tokio runtime.
pub struct Runner {
    registry: Arc<ToolRegistry>,
    project_dir: PathBuf,
    store: Store,
    /// The runs live in this process, by id.
    live: Arc<Mutex<HashMap<String, LiveRun>>>,
    /// Sweep expired context and sessions as each run starts (the CLI does).
    sweep_on_start: bool,
    /// Confine the runs' path arguments to the project and the workspace.
    confine_paths: bool,
    /// The process outlives its runs (the MCP server): a run's result goes out before its
    /// database is closed (sled flushes and syncs it once more then).
    long_lived: bool,
}

/// A run going on in this process: its tokens (the second cancel stops `finally` too).
struct LiveRun {
    cancel: CancellationToken,
    finally_cancel: CancellationToken,
}

/// What [`Runner::start`] needs.
pub struct RunRequest {
    /// The checked workflow.
    pub workflow: Arc<Workflow>,
    /// The resolved inputs ([`Workflow::resolve_inputs`]); secrets in clear (they are
    /// redacted before anything is stored).
    pub inputs: Map<String, Value>,
    /// The session; `None` starts a new one (its id is in [`StartedRun::session_id`]).
    pub session_id: Option<String>,
    /// Session labels, `key=value` (a bare `key` means an empty value).
    pub labels: Vec<String>,
    /// At most this many steps at once (the smaller of this and the workflow's
    /// `concurrency`).
    pub max_parallel: Option<usize>,
    /// Another consumer of the run's events (the CLI's reporter, MCP progress).
    pub events: Option<UnboundedSender<Event>>,
}

/// What [`Runner::resume`] needs.
pub struct ResumeRequest {
    /// The run to continue.
    pub run_id: String,
    /// Inputs given again: the secret inputs must be (they were never stored); others
    /// given here replace the stored values (steps kept from before are not run again).
    pub inputs: Map<String, Value>,
    /// Plan from this (edited) workflow instead of the stored source; its step ids must be
    /// those of the stored run.
    pub from_file: Option<Arc<Workflow>>,
    /// At most this many steps at once.
    pub max_parallel: Option<usize>,
    /// Another consumer of the run's events.
    pub events: Option<UnboundedSender<Event>>,
}

/// A run that was started (or resumed) and is going on.
pub struct StartedRun {
    /// The run's id.
    pub run_id: String,
    /// The session it belongs to.
    pub session_id: String,
    /// Cancels it (as Ctrl-C does: `finally` still runs).
    pub cancel: CancellationToken,
    /// Its report, once it has ended and its end is recorded.
    pub report: tokio::task::JoinHandle<RunReport>,
}

/// Why a run could not be started, resumed or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The store failed (see [`StoreError::is_critical`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request does not fit the workflow: a secret input not given again on resume, a
    /// `--from-file` whose step ids differ, inputs of the wrong type.
    #[error("{}", .0.0.iter().map(|d| d.message.as_str()).collect::<Vec<_>>().join("; "))]
    Invalid(Diagnostics),
    /// No run with this id.
    #[error("no run with id {0:?}")]
    NotFound(String),
    /// The run is still running (here or in another process), so it cannot be resumed.
    #[error("run {0} is still running")]
    Running(String),
}

impl Runner {
    /// A runner for the project `project_dir` with the store in `state_dir` (default
    /// [`Store::default_dir`]). The store is opened without signals: `ckflow cancel` reaches
    /// runs of this process through their `cancel` marker, which each run polls, so a
    /// process running several runs (the MCP server) is never sent SIGTERM for one of them.
    pub fn new(
        registry: Arc<ToolRegistry>,
        project_dir: PathBuf,
        state_dir: Option<PathBuf>,
    ) -> Result<Runner, StoreError> {
        let dir = state_dir.unwrap_or_else(|| Store::default_dir(&project_dir));
        let store = Store::open_with(
            dir,
            StoreOptions {
                cancel_by_signal: false,
                hold_index: true,
                ..StoreOptions::default()
            },
        )?;
        let mut runner = Runner::with_store(registry, project_dir, store);
        runner.long_lived = true;
        Ok(runner)
    }

    /// A runner over a store opened by the caller (the CLI opens it with signals on: its
    /// process runs one run and takes SIGTERM as cancel).
    pub fn with_store(registry: Arc<ToolRegistry>, project_dir: PathBuf, store: Store) -> Runner {
        Runner {
            registry,
            project_dir,
            store,
            live: Arc::new(Mutex::new(HashMap::new())),
            sweep_on_start: false,
            confine_paths: false,
            long_lived: false,
        }
    }

    /// Sweep expired context entries and idle sessions as each run starts (in the same
    /// visit to the store's index). The CLI does; a long-lived server sweeps on a timer
    /// instead (`store().sweep(now)`).
    pub fn with_sweep_on_start(mut self, on: bool) -> Runner {
        self.sweep_on_start = on;
        self
    }

    /// Confine the tools' path arguments in every run to the project folder and the
    /// session workspace ([`crate::ToolContext::path`]); the MCP server does unless it
    /// was started with `--allow-host-exec`.
    pub fn with_confined_paths(mut self, on: bool) -> Runner {
        self.confine_paths = on;
        self
    }

    /// The tool registry.
    pub fn registry(&self) -> &Arc<ToolRegistry> {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The project folder.
    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    /// Whether a run is live in this process.
    pub fn is_live_here(&self, run_id: &str) -> bool {
        lock(&self.live).contains_key(run_id)
    }

    /// Create the run record (durable) and start the run on the current tokio runtime;
    /// returns at once. Must be called within a tokio runtime.
    pub fn start(&self, req: RunRequest) -> Result<StartedRun, RunnerError> {
        let now = store::now_ms();
        let wf = &req.workflow;
        let secret_names = secret_names(wf);
        let mut record = RunRecord::new(store::new_id(now), wf.doc.name.clone(), now);
        record.source = wf.source().to_owned();
        record.source_hash = store::source_hash(wf.source());
        record.inputs = store::redact(&req.inputs, &secret_names);
        record.secret_inputs = secret_names;
        let start = RunStart {
            session: req.session_id.clone(),
            labels: parse_labels(&req.labels),
            sweep: self.sweep_on_start,
            now_ms: now,
        };
        let started = off_the_workers(|| self.store.start_run(record, start))?;
        let plan = Arc::new(Plan::new(Arc::clone(wf), &self.registry));
        self.launch(Launch {
            handle: started.handle,
            plan,
            inputs: req.inputs,
            session: started.session.id,
            workspace: started.session.workspace,
            context: started.context,
            max_parallel: req.max_parallel,
            events: req.events,
            resume: None,
        })
    }

    /// The steps whose definition differs between the run's stored workflow and `edited`
    /// (what `ckflow resume --from-file` reports), or [`RunnerError::Invalid`] when the step
    /// ids differ.
    pub fn changed_steps(
        &self,
        run_id: &str,
        edited: &Workflow,
    ) -> Result<Vec<String>, RunnerError> {
        let (stored, _) = self.stored_workflow(run_id)?;
        compare_steps(&stored, edited)
    }

    /// Resume a stored run (interrupted, failed or cancelled): finished steps are kept, the
    /// rest run again; of a `for_each` step that runs again, the instances that succeeded
    /// with the same items are kept. With `from_file`, steps whose definition changed run again too (and
    /// the steps after them).
    pub fn resume(&self, req: ResumeRequest) -> Result<StartedRun, RunnerError> {
        if self.is_live_here(&req.run_id) {
            return Err(RunnerError::Running(req.run_id));
        }
        let (stored, record) = self.stored_workflow(&req.run_id)?;
        if record.status == store::RunStatus::Succeeded {
            let d = stored.loaded.diag(
                Code::InputValue,
                "",
                format!("run {} succeeded: there is nothing to resume", req.run_id),
            );
            return Err(RunnerError::Invalid(Diagnostics(vec![d])));
        }
        let (workflow, changed) = match &req.from_file {
            Some(edited) => {
                let changed = compare_steps(&stored, edited)?;
                (Arc::clone(edited), changed)
            }
            None => (Arc::new(stored), Vec::new()),
        };
        let inputs = resume_inputs(&workflow, &record, req.inputs)?;
        let now = store::now_ms();
        let (handle, _before, steps) = match off_the_workers(|| self.store.resume_run(&req.run_id))
        {
            Ok(x) => x,
            Err(StoreError::RunStillRunning { .. }) => {
                return Err(RunnerError::Running(req.run_id));
            }
            Err(StoreError::RunNotFound(id)) => return Err(RunnerError::NotFound(id)),
            Err(e) => return Err(e.into()),
        };
        let session_id = record
            .session
            .clone()
            .unwrap_or_else(|| store::DEFAULT_SESSION.to_owned());
        let (session, context) = off_the_workers(|| {
            let session =
                self.store
                    .ensure_session(Some(&session_id), BTreeMap::new(), None, now)?;
            let context = self.store.get_context(&session.id, now)?;
            Ok::<_, StoreError>((session, context))
        })?;
        let plan = Arc::new(Plan::new(Arc::clone(&workflow), &self.registry));
        let mut resume = ResumeState::new();
        for s in &steps {
            if let Some(report) = recorder::prior_report(s) {
                resume.prior(s.id.clone(), PriorStep { report });
            }
        }
        for i in off_the_workers(|| handle.instances())? {
            let (step, prior) = recorder::prior_instance(i);
            resume.prior_instance(step, prior);
        }
        for id in changed {
            resume.rerun(id);
        }
        self.launch(Launch {
            handle,
            plan,
            inputs,
            session: session.id,
            workspace: session.workspace,
            context,
            max_parallel: req.max_parallel,
            events: req.events,
            resume: Some(resume),
        })
    }

    /// Cancel a run: one live in this process through its token (a second cancel stops its
    /// `finally` steps too, like a second Ctrl-C), one in another process through the store
    /// (its `cancel` marker, and SIGTERM if that process takes it).
    pub fn cancel(&self, run_id: &str) -> Result<CancelOutcome, RunnerError> {
        if let Some(run) = lock(&self.live).get(run_id) {
            if run.cancel.is_cancelled() {
                run.finally_cancel.cancel();
            }
            run.cancel.cancel();
            return Ok(CancelOutcome::Requested {
                pid: Some(std::process::id()),
            });
        }
        match off_the_workers(|| self.store.request_cancel(run_id)) {
            Ok(o) => Ok(o),
            Err(StoreError::RunNotFound(id)) => Err(RunnerError::NotFound(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// The workflow a run was started with (from its stored source), and its record.
    fn stored_workflow(&self, run_id: &str) -> Result<(Workflow, RunRecord), RunnerError> {
        let detail = match off_the_workers(|| self.store.get_run(run_id)) {
            Ok(Some(d)) => d,
            Ok(None) | Err(StoreError::RunNotFound(_)) => {
                return Err(RunnerError::NotFound(run_id.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        if detail.status == store::RunStatus::Running {
            return Err(RunnerError::Running(run_id.to_owned()));
        }
        let record = detail.run;
        let name = format!("{}.yaml (stored with run {run_id})", record.workflow);
        let wf = Workflow::from_str_with(&name, &record.source, &self.registry)
            .map_err(RunnerError::Invalid)?;
        Ok((wf, record))
    }

    fn launch(&self, l: Launch) -> Result<StartedRun, RunnerError> {
        let run_id = l.handle.id().to_owned();
        let cancel = CancellationToken::new();
        let secrets = l.plan.workflow.secret_values(&l.inputs);
        let recorder = StoreRecorder::start(
            l.handle,
            self.store.clone(),
            l.session.clone(),
            l.plan.workflow.doc.name.clone(),
            cancel.clone(),
            l.resume.is_some(),
            self.long_lived,
        )
        .map_err(|e| StoreError::Io {
            action: "start a thread for",
            path: self.store.run_dir(&run_id),
            source: e,
        })?;
        let sink = StoreContext {
            store: self.store.clone(),
            session: l.session.clone(),
            redactor: Redactor::new(secrets),
        };
        let finally_cancel = CancellationToken::new();
        lock(&self.live).insert(
            run_id.clone(),
            LiveRun {
                cancel: cancel.clone(),
                finally_cancel: finally_cancel.clone(),
            },
        );
        let opts = RunOptions {
            inputs: l.inputs,
            max_parallel: l.max_parallel,
            run_id: Some(run_id.clone()),
            project_dir: self.project_dir.clone(),
            workspace: l.workspace,
            cancel: cancel.clone(),
            finally_cancel,
            context: l.context,
            recorder: Some(recorder.clone()),
            context_sink: Some(Arc::new(sink)),
            resume: l.resume,
            confine_paths: self.confine_paths,
            ..RunOptions::default()
        };
        let engine = Engine::new(Arc::clone(&self.registry));
        let events = l
            .events
            .unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().0);
        let live = Arc::clone(&self.live);
        let id = run_id.clone();
        let report = tokio::spawn(async move {
            let mut report = engine.run(l.plan, opts, events).await;
            if let Err(e) = recorder.finish(&report).await {
                tracing::error!(run = %id, error = %e, "could not record the end of the run");
                report.status = crate::report::RunStatus::Failed;
                report
                    .error
                    .get_or_insert_with(|| format!("could not record the end of the run: {e}"));
            }
            lock(&live).remove(&id);
            report
        });
        Ok(StartedRun {
            run_id,
            session_id: l.session,
            cancel,
            report,
        })
    }
}

/// What [`Runner::launch`] needs.
struct Launch {
    handle: store::RunHandle,
    plan: Arc<Plan>,
    inputs: Map<String, Value>,
    session: String,
    workspace: PathBuf,
    context: Map<String, Value>,
    max_parallel: Option<usize>,
    events: Option<UnboundedSender<Event>>,
    resume: Option<ResumeState>,
}

/// Run blocking store IO from a caller that may be an async worker: on a multi-thread
/// runtime the worker hands its other tasks away first (`block_in_place`).
fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// `k=v` labels (a bare `k` is `k=""`).
fn parse_labels(labels: &[String]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.to_owned()),
            None => (l.trim().to_owned(), String::new()),
        })
        .collect()
}

/// The names of a workflow's secret inputs.
fn secret_names(wf: &Workflow) -> Vec<String> {
    wf.doc
        .inputs
        .iter()
        .filter(|(_, spec)| spec.secret)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The inputs of a resumed run: the stored values, with the secrets (stored as `***`) given
/// again in `given`. A secret that is missing is an error naming it.
fn resume_inputs(
    wf: &Workflow,
    record: &RunRecord,
    given: Map<String, Value>,
) -> Result<Map<String, Value>, RunnerError> {
    let mut raw: indexmap::IndexMap<String, Value> = indexmap::IndexMap::new();
    let mut diags = Vec::new();
    for (name, spec) in &wf.doc.inputs {
        let stored_secret = record.secret_inputs.iter().any(|s| s == name);
        if let Some(v) = given.get(name) {
            raw.insert(name.clone(), v.clone());
        } else if stored_secret || spec.secret {
            // Present in the stored inputs (as `***`) means it was given: ask again.
            if record.inputs.contains_key(name) {
                diags.push(wf.loaded.diag(
                    Code::InputValue,
                    &format!("/inputs/{}", name.replace('~', "~0").replace('/', "~1")),
                    format!(
                        "input `{name}` is secret and was not stored; give it again with -i {name}=…"
                    ),
                ));
            }
        } else if let Some(v) = record.inputs.get(name) {
            raw.insert(name.clone(), v.clone());
        }
    }
    for (k, v) in given {
        raw.entry(k).or_insert(v);
    }
    if !diags.is_empty() {
        return Err(RunnerError::Invalid(Diagnostics(diags)));
    }
    wf.resolve_inputs(&raw).map_err(RunnerError::Invalid)
}

/// The step ids of a workflow (main steps, then `finally`), each with its definition.
fn step_definitions(wf: &Workflow) -> Vec<(String, Value)> {
    let steps = wf.doc.steps.iter().chain(wf.doc.finally.iter());
    steps
        .map(|s| (s.id.clone(), serde_json::to_value(s).unwrap_or(Value::Null)))
        .collect()
}

/// The ids of the steps of `edited` whose definition differs from `stored`; an error when
/// the step ids differ.
fn compare_steps(stored: &Workflow, edited: &Workflow) -> Result<Vec<String>, RunnerError> {
    let old: HashMap<String, Value> = step_definitions(stored).into_iter().collect();
    let new = step_definitions(edited);
    let new_ids: HashSet<&str> = new.iter().map(|(id, _)| id.as_str()).collect();
    let added: Vec<&str> = new
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| !old.contains_key(*id))
        .collect();
    let mut removed: Vec<&str> = old
        .keys()
        .map(String::as_str)
        .filter(|id| !new_ids.contains(id))
        .collect();
    removed.sort_unstable();
    if !added.is_empty() || !removed.is_empty() {
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("added {}", added.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("removed {}", removed.join(", ")));
        }
        let d = Diagnostic {
            help: Some(
                "resume --from-file needs the same step ids as the stored run; start a new run instead"
                    .to_owned(),
            ),
            ..edited.loaded.diag(
                Code::InputValue,
                "/steps",
                format!(
                    "the step ids of {} differ from the stored run's: {}",
                    edited.file_name(),
                    parts.join("; ")
                ),
            )
        };
        return Err(RunnerError::Invalid(Diagnostics(vec![d])));
    }
    Ok(new
        .into_iter()
        .filter(|(id, def)| old.get(id) != Some(def))
        .map(|(id, _)| id)
        .collect())
}
