//! The engine runs a [`Plan`]: a dispatcher (the one loop that owns the run's state) and
//! step tasks that call tools from the [`ToolRegistry`], with retries, failure routing,
//! timeouts, cancellation and `finally`. It reports through a stream of [`Event`]s and
//! returns a [`RunReport`].
//!
//! ```
//! use std::sync::Arc;
//! use ckflow::{Engine, Plan, ToolRegistry, Workflow};
//! use ckflow::engine::RunOptions;
//!
//! let registry = Arc::new(ToolRegistry::builtin());
//! let text = "apiVersion: ckflow/v1\nname: hello\nsteps:\n  - {id: a, tool: noop, with: {x: 1}}\n";
//! let wf = Workflow::from_str_with("hello.yaml", text, &registry).unwrap();
//! let inputs = wf.resolve_inputs(&Default::default()).unwrap();
//! let plan = Arc::new(Plan::new(Arc::new(wf), &registry));
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let report = rt.block_on(Engine::new(registry).run(plan, RunOptions::with_inputs(inputs), tx));
//! assert_eq!(report.status.as_str(), "succeeded");
//! assert_eq!(report.steps["a"].outputs["x"], 1);
//! let mut kinds = Vec::new();
//! while let Ok(e) = rx.try_recv() {
//!     kinds.push(serde_json::to_value(&e).unwrap()["kind"].as_str().unwrap().to_owned());
//! }
//! assert_eq!(kinds, ["run_started", "step_started", "step_finished", "run_finished"]);
//! ```

#![allow(
    clippy::result_large_err,
    reason = "ToolError is what a failed step carries everywhere; failures are off the hot path"
)]

mod context;
mod dispatcher;
pub mod event;
mod executor;
mod record;
pub mod redact;
mod retry;
mod routing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

pub use event::{Event, EventKind};
pub use record::{
    CommitFuture, FinishedInstance, FinishedStep, PriorInstance, PriorStep, Recorder, ResumeState,
    SharedOutput, items_hash,
};
pub use redact::Redactor;

pub use crate::report::{Kept, RunReport, RunStatus, SkipReason, StepReport, StepStatus};
use crate::tools::ContextSink;
use crate::{Plan, ToolRegistry};

/// How deep sub-workflows (the `workflow` tool) may nest.
pub const MAX_DEPTH: u32 = 8;

/// Runs plans with the tools of one registry. Cheap to clone; one engine can run many
/// plans at once.
#[derive(Clone)]
pub struct Engine {
    registry: Arc<ToolRegistry>,
}

/// Everything about one run besides the plan.
#[derive(Clone)]
pub struct RunOptions {
    /// The resolved inputs ([`crate::Workflow::resolve_inputs`]: checked, defaults filled in).
    pub inputs: Map<String, Value>,
    /// At most this many steps (and `for_each` instances) at once; the smaller of this and
    /// the workflow's `concurrency` applies.
    pub max_parallel: Option<usize>,
    /// The run's id; generated (`r-20261123-113000-ab12cd`) when `None`.
    pub run_id: Option<String>,
    /// The project folder: tools resolve relative paths against it.
    pub project_dir: PathBuf,
    /// The session workspace (`{{run.workspace}}`).
    pub workspace: PathBuf,
    /// Cancels the run: no new step starts, running steps' tokens fire, steps not started
    /// end `cancelled`, then `finally` runs and the run ends `cancelled`.
    pub cancel: CancellationToken,
    /// Cancels the `finally` steps too (a second Ctrl-C). `finally` steps never see
    /// [`RunOptions::cancel`].
    pub finally_cancel: CancellationToken,
    /// The session's shared context, read as `{{context.KEY}}`.
    pub context: Map<String, Value>,
    /// How deep in sub-workflows this run is (0 for a top-level run).
    pub depth: u32,
    /// More values to redact besides the workflow's secret inputs (a parent run's secrets).
    pub secrets: Vec<String>,
    /// Where the run is recorded (the store, through `crate::runner`): it sees every event
    /// and commits each turn's finished steps before the engine reports them. `None`: the
    /// run is not recorded.
    pub recorder: Option<Arc<dyn Recorder>>,
    /// The session's shared context, for `share_context` (given to tools as
    /// [`crate::ToolContext::context_sink`]). `None`: the run has no session.
    pub context_sink: Option<Arc<dyn ContextSink>>,
    /// Resume: the steps of the earlier attempt that are kept (not run again; their outputs
    /// and status feed templates), and the `for_each` instances that are (see
    /// [`PriorInstance`]).
    pub resume: Option<ResumeState>,
    /// Confine the tools' path arguments to the project folder and the workspace
    /// ([`crate::ToolContext::path`]): the MCP server's runs for clients.
    pub confine_paths: bool,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("inputs", &"…")
            .field("max_parallel", &self.max_parallel)
            .field("run_id", &self.run_id)
            .field("project_dir", &self.project_dir)
            .field("workspace", &self.workspace)
            .field("depth", &self.depth)
            .field("recorded", &self.recorder.is_some())
            .field("session", &self.context_sink.is_some())
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        RunOptions {
            inputs: Map::new(),
            max_parallel: None,
            run_id: None,
            workspace: here.clone(),
            project_dir: here,
            cancel: CancellationToken::new(),
            finally_cancel: CancellationToken::new(),
            context: Map::new(),
            depth: 0,
            secrets: Vec::new(),
            recorder: None,
            context_sink: None,
            resume: None,
            confine_paths: false,
        }
    }
}

impl RunOptions {
    /// Default options with these inputs.
    pub fn with_inputs(inputs: Map<String, Value>) -> RunOptions {
        RunOptions {
            inputs,
            ..RunOptions::default()
        }
    }
}

impl Engine {
    /// An engine calling the tools of `registry` (the plan's tools are already resolved;
    /// the registry serves recovery steps and tools that run workflows themselves).
    pub fn new(registry: Arc<ToolRegistry>) -> Engine {
        Engine { registry }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<ToolRegistry> {
        &self.registry
    }

    /// Run a plan to the end. Events go to `events` as they happen (the first is
    /// `RunStarted`, the last `RunFinished`); dropping the receiver is fine. Step failures
    /// are not errors here: they are in the report.
    pub async fn run(
        &self,
        plan: Arc<Plan>,
        opts: RunOptions,
        events: UnboundedSender<Event>,
    ) -> RunReport {
        let dispatcher =
            dispatcher::Dispatcher::new(Arc::clone(&self.registry), plan, opts, events);
        // The dispatcher runs as a task of its own: on a worker thread it and the step tasks
        // it spawns share that worker's queue, where a caller's `block_on` thread would cost
        // two thread wake-ups per step. Dropping this future aborts the run.
        let mut task = AbortOnDrop(tokio::spawn(dispatcher.run()));
        match (&mut task.0).await {
            Ok(report) => report,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the run's dispatcher was cancelled: {e}"),
        }
    }
}

/// Aborts the task when dropped (a dropped run must not go on in the background).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A new run id: `r-YYYYMMDD-HHMMSS-xxxxxx` (UTC, then six random hex digits).
pub fn new_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let tod = secs % 86_400;
    let mut rng = retry::Prng::from_entropy();
    let salt = rng.next_u64() ^ u64::from(now.subsec_nanos());
    format!(
        "r-{y:04}{mo:02}{d:02}-{:02}{:02}{:02}-{:06x}",
        tod / 3600,
        (tod % 3600) / 60,
        tod % 60,
        salt & 0xff_ffff
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_look_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        let id = new_run_id();
        assert_eq!(id.len(), "r-20261123-113000-ab12cd".len(), "{id}");
        assert!(id.starts_with("r-20"));
        assert_ne!(new_run_id(), new_run_id());
    }
}
