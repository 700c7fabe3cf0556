//! The dispatcher: the one loop that owns a run's state (STYLE 6).
//!
//! It `select!`s over step completions (an mpsc channel the step tasks answer on), the
//! cancellation tokens, the run's deadline and retry timers, and is the only code that
//! changes run state. Steps run as tokio tasks in a `JoinSet`, at most `min(concurrency,
//! max_parallel)` at once (a semaphore whose permits the tasks hold). Everything is
//! O(steps + edges): a step is looked at when it becomes ready and when it settles, and a
//! settled step only touches its dependents.
//!
//! A *unit* is what one task runs: a step, or one `for_each` instance of it. Units carry
//! their own attempts, retry timers and routing fire counts; a step settles when all its
//! units have.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::context::{Refs, StepTemplates, has_template, render_at, root};
use super::event::{Emitter, Event, EventKind};
use super::executor::{self, Call, Done};
use super::record::{
    CommitFuture, FinishedInstance, FinishedStep, PriorInstance, Recorder, ResumeState,
    SharedOutput, items_hash,
};
use super::redact::Redactor;
use super::retry::{self, Prng};
use super::routing::{self, Fired};
use super::{RunOptions, new_run_id};
use crate::plan::{Dag, Plan, PlanStep};
use crate::report::{
    Kept, RoutingRecord, RuleSource, RunReport, RunStatus, SkipReason, StepReport, StepStatus,
};
use crate::template;
use crate::tools::{ContextSink, Progress, ProgressFn, ToolContext, ToolError, ToolRegistry};
use crate::workflow::model::{ErrorClass, Then, When};

const MAIN: u8 = 0;
const FINALLY: u8 = 1;

/// A step: its DAG (`MAIN` or `FINALLY`) and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct StepKey {
    dag: u8,
    idx: u32,
}

/// A unit of work: a step's instance (0 for a step without `for_each`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct UnitKey {
    step: StepKey,
    unit: u32,
}

/// What a task runs: an attempt of the unit's tool, or a rule's recovery tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Job {
    unit: UnitKey,
    recovery: bool,
}

/// Why the current phase is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The caller's token fired (Ctrl-C, SIGTERM, `cancel`).
    Cancelled,
    /// The run's `timeout` passed.
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitState {
    /// An attempt or a recovery step waits for a free slot.
    Queued,
    /// Its task is running.
    Running,
    /// Waiting for a retry timer.
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl UnitState {
    fn is_final(self) -> bool {
        matches!(
            self,
            UnitState::Succeeded | UnitState::Failed | UnitState::Skipped | UnitState::Cancelled
        )
    }
}

struct Unit {
    /// The `for_each` item (`null` without `for_each`).
    item: Value,
    state: UnitState,
    attempts: u32,
    /// How often each rule fired for this unit: (source, index, count).
    fired: Vec<(RuleSource, usize, u32)>,
    /// The last recovery step's result (`{{recovery}}`).
    recovery: Option<Value>,
    /// A fired rule whose recovery step is queued or running, with the failure it handles.
    pending: Option<(Fired, ToolError)>,
    outputs: Value,
    error: Option<ToolError>,
    /// Failed, but a rule said `then: continue`.
    tolerated: bool,
}

impl Unit {
    fn new(item: Value) -> Unit {
        Unit {
            item,
            state: UnitState::Queued,
            attempts: 0,
            fired: Vec::new(),
            recovery: None,
            pending: None,
            outputs: Value::Null,
            error: None,
            tolerated: false,
        }
    }

    fn fire_count(&self, source: RuleSource, index: usize) -> u32 {
        self.fired
            .iter()
            .find(|(s, i, _)| *s == source && *i == index)
            .map_or(0, |f| f.2)
    }

    fn fire(&mut self, source: RuleSource, index: usize) {
        match self
            .fired
            .iter_mut()
            .find(|(s, i, _)| *s == source && *i == index)
        {
            Some(f) => f.2 += 1,
            None => self.fired.push((source, index, 1)),
        }
    }
}

struct StepState {
    status: StepStatus,
    /// Needs not finished yet.
    waiting: u32,
    failed_needs: u32,
    skipped_needs: u32,
    cancelled_needs: u32,
    for_each: bool,
    units: Vec<Unit>,
    units_left: u32,
    started: Option<Instant>,
    duration_ms: u64,
    attempts: u32,
    outputs: Value,
    error: Option<ToolError>,
    /// A failure that counts as success for ordering and the run.
    tolerated: bool,
    routing: Vec<RoutingRecord>,
    skipped_reason: Option<SkipReason>,
    /// When it finished (for the record).
    finished: Option<Instant>,
    /// The fingerprint of its `for_each` items, when its instances are recorded or may be
    /// kept by a resume.
    items_hash: Option<String>,
    /// Resume: kept whole from the earlier attempt.
    kept: bool,
    /// Resume: `for_each` instances kept from the earlier attempt.
    kept_units: u32,
}

/// What a settled step means to the steps that need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Skipped,
    Cancelled,
}

/// Per-step facts computed once before the run.
#[derive(Default)]
struct StepInfo {
    templates: StepTemplates,
    /// The steps its templates read.
    reads: Vec<StepKey>,
}

struct DagState {
    steps: Vec<StepState>,
    info: Vec<StepInfo>,
    /// Steps not settled yet; the phase is over at 0.
    unsettled: usize,
}

pub(crate) struct Dispatcher {
    plan: Arc<Plan>,
    registry: Arc<ToolRegistry>,
    emitter: Emitter,
    run_id: String,
    project_dir: std::path::PathBuf,
    workspace: std::path::PathBuf,
    /// Where path arguments must stay ([`ToolContext::roots`]).
    roots: Option<Arc<Vec<std::path::PathBuf>>>,
    inputs: Value,
    shared_context: Value,
    depth: u32,
    secrets: Arc<Vec<String>>,
    /// The workflow's `env`, rendered once.
    base_env: Arc<IndexMap<String, String>>,
    env_value: Value,
    env_error: Option<ToolError>,
    ids: HashMap<String, StepKey>,
    dags: [DagState; 2],
    phase: u8,
    /// Units whose next job waits for a slot, in the order they became ready.
    ready: VecDeque<Job>,
    /// Retry timers: (due, sequence, unit).
    timers: BinaryHeap<Reverse<(Instant, u64, UnitKey)>>,
    timer_seq: u64,
    /// Steps that finished and whose dependents have not been told yet.
    to_settle: Vec<StepKey>,
    semaphore: Arc<Semaphore>,
    tx: UnboundedSender<Done<Job>>,
    rx: UnboundedReceiver<Done<Job>>,
    tasks: JoinSet<()>,
    rng: Prng,
    /// The caller's tokens: the first stops the main DAG, the second `finally`.
    cancel: CancellationToken,
    finally_cancel: CancellationToken,
    /// What step tasks get children of, per phase.
    main_token: CancellationToken,
    finally_token: CancellationToken,
    deadline: Option<Instant>,
    stop: Option<Stop>,
    main_cancelled: bool,
    finally_cancelled: bool,
    timed_out: bool,
    fail_fast_tripped: bool,
    main_failed: bool,
    finally_failed: bool,
    /// Where the run is recorded; `None` when it is not (or the store broke).
    recorder: Option<Arc<dyn Recorder>>,
    context_sink: Option<Arc<dyn ContextSink>>,
    /// Steps that finished but are not committed yet (not reported; their dependents may
    /// have started).
    uncommitted: Vec<StepKey>,
    /// The number the emitter gave the last finish, plus one (0: none yet).
    finishes: u64,
    /// The commit in flight and the steps it carries, with their slots.
    inflight: Option<Inflight>,
    /// The slot of the job whose result is being handled (recorded runs only).
    permit_in_hand: Option<OwnedSemaphorePermit>,
    /// Slots of finished steps waiting for their commit.
    held_permits: Vec<OwnedSemaphorePermit>,
    /// The store failed: the run stops and fails with this message.
    store_error: Option<String>,
    /// Resume: the steps kept from before.
    resume: Option<ResumeState>,
    /// Whether this is a resumed run.
    resumed: bool,
    /// Resume: the earlier successful instances of main `for_each` steps that may be kept
    /// (their needs are all kept), by step index; taken when the step starts.
    resume_units: HashMap<u32, Vec<PriorInstance>>,
    /// Whether the recorder records `for_each` instances (main steps only).
    record_instances: bool,
    /// Instances that ended but are not committed yet.
    uncommitted_instances: Vec<FinishedInstance>,
    /// Tasks running a tool without effects (`noop`, `share_context` …): they answer in
    /// microseconds as a rule, so a commit waits a moment for them to ride along.
    quick_running: usize,
    /// When a commit held back for quick tasks starts anyway.
    commit_due: Option<Instant>,
}

impl Dispatcher {
    pub(crate) fn new(
        registry: Arc<ToolRegistry>,
        plan: Arc<Plan>,
        opts: RunOptions,
        events: UnboundedSender<Event>,
    ) -> Dispatcher {
        let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
        let mut secrets = plan.workflow.secret_values(&opts.inputs);
        secrets.extend(opts.secrets.iter().cloned());
        let redactor = Redactor::new(secrets);
        let secrets = Arc::new(redactor.secrets().to_vec());
        let emitter = Emitter::new(events, opts.recorder.clone(), run_id.clone(), redactor);
        let limit = opts
            .max_parallel
            .map_or(plan.concurrency, |m| m.min(plan.concurrency))
            .max(1);
        let (tx, rx) = unbounded_channel();
        let main_token = opts.cancel.child_token();
        let finally_token = opts.finally_cancel.child_token();
        let deadline = plan.timeout.map(|t| emitter.start() + t);

        let [main_t, finally_t] = [&plan.main, &plan.finally].map(|d| {
            d.steps
                .iter()
                .map(|s| StepTemplates::of(&s.step))
                .collect::<Vec<_>>()
        });
        // Step ids are only looked up for templates (a rule's `route.with` may have some).
        let mut ids = HashMap::new();
        if !plan.workflow.doc.on_failure.is_empty()
            || main_t.iter().chain(&finally_t).any(StepTemplates::any)
        {
            for (dag, d) in [(MAIN, &plan.main), (FINALLY, &plan.finally)] {
                for s in &d.steps {
                    ids.insert(
                        s.id().to_owned(),
                        StepKey {
                            dag,
                            idx: s.index as u32,
                        },
                    );
                }
            }
        }
        let dags = [
            dag_state(&plan.main, main_t, &ids),
            dag_state(&plan.finally, finally_t, &ids),
        ];

        let record_instances = opts
            .recorder
            .as_ref()
            .is_some_and(|r| r.records_instances());
        let mut d = Dispatcher {
            registry,
            emitter,
            run_id,
            roots: opts.confine_paths.then(|| {
                Arc::new(crate::tools::confinement_roots(
                    &opts.project_dir,
                    &opts.workspace,
                ))
            }),
            project_dir: opts.project_dir,
            workspace: opts.workspace,
            inputs: Value::Object(opts.inputs),
            shared_context: Value::Object(opts.context),
            depth: opts.depth,
            secrets,
            base_env: Arc::new(IndexMap::new()),
            env_value: Value::Object(Map::new()),
            env_error: None,
            ids,
            dags,
            phase: MAIN,
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            to_settle: Vec::new(),
            semaphore: Arc::new(Semaphore::new(limit)),
            tx,
            rx,
            tasks: JoinSet::new(),
            rng: Prng::from_entropy(),
            cancel: opts.cancel,
            finally_cancel: opts.finally_cancel,
            main_token,
            finally_token,
            deadline,
            stop: None,
            main_cancelled: false,
            finally_cancelled: false,
            timed_out: false,
            fail_fast_tripped: false,
            main_failed: false,
            finally_failed: false,
            recorder: opts.recorder,
            context_sink: opts.context_sink,
            uncommitted: Vec::new(),
            finishes: 0,
            inflight: None,
            permit_in_hand: None,
            held_permits: Vec::new(),
            store_error: None,
            resumed: opts.resume.is_some(),
            resume: opts.resume,
            resume_units: HashMap::new(),
            record_instances,
            uncommitted_instances: Vec::new(),
            quick_running: 0,
            commit_due: None,
            plan,
        };
        d.render_workflow_env();
        d
    }

    /// Run to the end and build the report.
    pub(crate) async fn run(mut self) -> RunReport {
        self.emit(EventKind::RunStarted {
            workflow: self.plan.workflow.doc.name.clone(),
            steps: self.plan.len(),
        });
        self.keep_resumed();
        self.start_dag(MAIN);
        loop {
            self.check_stop();
            loop {
                self.settle_all();
                self.pump();
                if self.to_settle.is_empty() {
                    break;
                }
            }
            self.start_commit();
            if self.dags[self.phase as usize].unsettled == 0 {
                if self.phase == MAIN {
                    self.enter_finally();
                    continue;
                }
                // The run ends once every finish is durable (and so reported).
                if self.inflight.is_none() && !self.commit_pending() {
                    break;
                }
            }
            let next_timer = self.timers.peek().map(|t| t.0.0);
            let cancel = if self.phase == MAIN {
                self.cancel.clone()
            } else {
                self.finally_cancel.clone()
            };
            let deadline = if self.phase == MAIN && self.stop.is_none() {
                self.deadline
            } else {
                None
            };
            let far = Instant::now() + Duration::from_secs(86_400 * 365);
            tokio::select! {
                biased;
                _ = cancel.cancelled(), if self.stop.is_none() => self.stop(Stop::Cancelled),
                _ = tokio::time::sleep_until(deadline.unwrap_or(far).into()), if deadline.is_some() => {
                    self.stop(Stop::TimedOut)
                }
                Some(done) = self.rx.recv() => {
                    self.on_done(done);
                    while let Ok(more) = self.rx.try_recv() {
                        self.on_done(more);
                    }
                }
                _ = tokio::time::sleep_until(next_timer.unwrap_or(far).into()), if next_timer.is_some() => {
                    self.fire_timers()
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                Some(result) = commit_done(&mut self.inflight), if self.inflight.is_some() => {
                    self.on_committed(result)
                }
                _ = tokio::time::sleep_until(self.commit_due.unwrap_or(far).into()),
                    if self.commit_due.is_some() && self.inflight.is_none() => {}
            }
        }
        // Every unit has answered; reap the tasks (they end right after answering).
        while self.tasks.join_next().await.is_some() {}
        let report = self.report();
        self.emit(EventKind::RunFinished {
            status: report.status,
            duration_ms: report.duration_ms,
        });
        report
    }

    fn emit(&self, kind: EventKind) {
        self.emitter.emit(kind);
    }

    fn dag(&self, d: u8) -> &Dag {
        if d == MAIN {
            &self.plan.main
        } else {
            &self.plan.finally
        }
    }

    fn pstep(&self, k: StepKey) -> &PlanStep {
        &self.dag(k.dag).steps[k.idx as usize]
    }

    fn st(&mut self, k: StepKey) -> &mut StepState {
        &mut self.dags[k.dag as usize].steps[k.idx as usize]
    }

    fn unit(&mut self, u: UnitKey) -> &mut Unit {
        &mut self.dags[u.step.dag as usize].steps[u.step.idx as usize].units[u.unit as usize]
    }

    fn instance(&self, u: UnitKey) -> Option<usize> {
        self.dags[u.step.dag as usize].steps[u.step.idx as usize]
            .for_each
            .then_some(u.unit as usize)
    }

    fn phase_token(&self) -> &CancellationToken {
        if self.phase == MAIN {
            &self.main_token
        } else {
            &self.finally_token
        }
    }

    // ---- phases -------------------------------------------------------------------------

    fn start_dag(&mut self, d: u8) {
        let plan = Arc::clone(&self.plan);
        let dag = if d == MAIN { &plan.main } else { &plan.finally };
        for s in &dag.steps {
            let k = StepKey {
                dag: d,
                idx: s.index as u32,
            };
            // Steps kept by a resume are settled already.
            if s.needs.is_empty() && self.st(k).status == StepStatus::Pending {
                self.ready_step(k);
            }
        }
    }

    fn enter_finally(&mut self) {
        self.phase = FINALLY;
        self.stop = None;
        self.ready.clear();
        self.timers.clear();
        self.start_dag(FINALLY);
    }

    /// The main DAG's outcome, as `finally` steps see it (`run.status`).
    fn main_status(&self) -> RunStatus {
        if self.main_cancelled {
            RunStatus::Cancelled
        } else if self.timed_out || self.main_failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        }
    }

    fn check_stop(&mut self) {
        if self.stop.is_some() {
            return;
        }
        if self.phase == MAIN {
            if self.cancel.is_cancelled() {
                self.stop(Stop::Cancelled);
            } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.stop(Stop::TimedOut);
            }
        } else if self.finally_cancel.is_cancelled() {
            self.stop(Stop::Cancelled);
        }
    }

    /// Stop the current phase: no new work; running tasks' tokens fire; everything not
    /// running ends `cancelled`.
    fn stop(&mut self, why: Stop) {
        self.stop = Some(why);
        match (self.phase, why) {
            (MAIN, Stop::Cancelled) => self.main_cancelled = true,
            (MAIN, Stop::TimedOut) => self.timed_out = true,
            _ => self.finally_cancelled = true,
        }
        self.phase_token().cancel();
        self.ready.clear();
        self.timers.clear();
        let d = self.phase;
        let n = self.dags[d as usize].steps.len();
        // Units of started steps that are not in a task end now.
        for i in 0..n {
            let k = StepKey {
                dag: d,
                idx: i as u32,
            };
            if self.st(k).status != StepStatus::Running {
                continue;
            }
            for u in 0..self.st(k).units.len() {
                let uk = UnitKey {
                    step: k,
                    unit: u as u32,
                };
                if matches!(self.unit(uk).state, UnitState::Queued | UnitState::Waiting) {
                    self.unit_end(uk, UnitState::Cancelled, Value::Null, None);
                }
            }
        }
        // Steps that never started are cancelled.
        for i in 0..n {
            let k = StepKey {
                dag: d,
                idx: i as u32,
            };
            if self.st(k).status == StepStatus::Pending {
                self.finish_unstarted(k, StepStatus::Cancelled, None, None);
            }
        }
    }

    // ---- readiness ----------------------------------------------------------------------

    /// A step whose needs have all finished: run it, skip it or cancel it.
    fn ready_step(&mut self, k: StepKey) {
        if self.stop.is_some() {
            self.finish_unstarted(k, StepStatus::Cancelled, None, None);
            return;
        }
        if k.dag == MAIN && self.fail_fast_tripped {
            self.finish_unstarted(k, StepStatus::Skipped, Some(SkipReason::FailFast), None);
            return;
        }
        let ps = self.pstep(k);
        let needs = ps.needs.len() as u32;
        let when = ps.step.when;
        let st = &self.dags[k.dag as usize].steps[k.idx as usize];
        let skip = match when {
            When::Success if st.failed_needs > 0 || st.cancelled_needs > 0 => {
                Some(SkipReason::NeedsFailed)
            }
            When::Success if needs > 0 && st.skipped_needs == needs => {
                Some(SkipReason::NeedsSkipped)
            }
            When::Success | When::Always => None,
            When::Failure if needs == 0 => {
                // A `finally` step without needs looks at the main steps' outcome.
                (k.dag == MAIN || self.main_status() != RunStatus::Failed)
                    .then_some(SkipReason::NoFailure)
            }
            When::Failure => (st.failed_needs == 0).then_some(SkipReason::NoFailure),
        };
        if let Some(reason) = skip {
            self.finish_unstarted(k, StepStatus::Skipped, Some(reason), None);
            return;
        }
        if let Err(e) = self.activate(k) {
            self.finish_unstarted(k, StepStatus::Failed, None, Some(e));
        }
    }

    /// Decide `if`, expand `for_each` and queue the step's units.
    fn activate(&mut self, k: StepKey) -> Result<(), ToolError> {
        let plan = Arc::clone(&self.plan);
        let ps = &(if k.dag == MAIN {
            &plan.main
        } else {
            &plan.finally
        })
        .steps[k.idx as usize];
        let info = &self.dags[k.dag as usize].info[k.idx as usize];
        let per_item_if = info.templates.if_per_item;
        let needs_ctx = info.templates.if_ || info.templates.for_each;
        let ctx = needs_ctx.then(|| self.context(k, None, None));
        if !per_item_if && let Some(cond) = &ps.step.if_ {
            let v = match &ctx {
                Some(c) if has_template(cond) => render_at(cond, c, "if")?,
                _ => cond.clone(),
            };
            if !template::truthy(&v) {
                self.finish_unstarted(k, StepStatus::Skipped, Some(SkipReason::If), None);
                return Ok(());
            }
        }
        let items: Option<Vec<Value>> = match &ps.step.for_each {
            None => None,
            Some(spec) => {
                let v = match &ctx {
                    Some(c) if has_template(spec) => render_at(spec, c, "for_each")?,
                    _ => spec.clone(),
                };
                Some(for_each_items(v)?)
            }
        };
        let for_each = items.is_some();
        // The items' fingerprint, for the instances' records and a resume's check.
        let hash = match &items {
            Some(items)
                if k.dag == MAIN
                    && (self.record_instances || self.resume_units.contains_key(&k.idx)) =>
            {
                let r = self.emitter.redactor();
                Some(if r.is_empty() {
                    items_hash(items)
                } else {
                    let mut redacted = items.clone();
                    redacted.iter_mut().for_each(|v| r.value(v));
                    items_hash(&redacted)
                })
            }
            _ => None,
        };
        let units: Vec<Unit> = match items {
            None => vec![Unit::new(Value::Null)],
            Some(items) => items.into_iter().map(Unit::new).collect(),
        };
        {
            let st = self.st(k);
            st.for_each = for_each;
            st.units = units;
            st.items_hash = hash;
        }
        if per_item_if {
            let cond = ps.step.if_.as_ref().expect("per-item `if` exists");
            for u in 0..self.st(k).units.len() {
                let uk = UnitKey {
                    step: k,
                    unit: u as u32,
                };
                let c = self.context(k, Some(uk), None);
                let v = render_at(cond, &c, &format!("if (instance {u})"))?;
                if !template::truthy(&v) {
                    self.unit(uk).state = UnitState::Skipped;
                }
            }
        }
        if k.dag == MAIN
            && !self.resume_units.is_empty()
            && let Some(prior) = self.resume_units.remove(&k.idx)
        {
            self.keep_units(k, prior);
        }
        let st = self.st(k);
        let live = st
            .units
            .iter()
            .filter(|u| u.state == UnitState::Queued)
            .count();
        st.units_left = live as u32;
        if st.units.is_empty() || (live == 0 && st.kept_units > 0) {
            // `for_each` over an empty list, or every instance kept by a resume: nothing to
            // do, nothing failed.
            st.status = StepStatus::Running;
            st.started = Some(Instant::now());
            self.finish_step(k);
            return Ok(());
        }
        if live == 0 {
            self.finish_unstarted(k, StepStatus::Skipped, Some(SkipReason::If), None);
            return Ok(());
        }
        for u in 0..self.st(k).units.len() {
            let uk = UnitKey {
                step: k,
                unit: u as u32,
            };
            if self.unit(uk).state == UnitState::Queued {
                self.ready.push_back(Job {
                    unit: uk,
                    recovery: false,
                });
            }
        }
        Ok(())
    }

    /// Resume: the instances of a `for_each` step that succeeded in the earlier attempt
    /// with the same item list end at once, with their earlier outputs and attempts; the
    /// others run. If the items changed, every instance runs (and a `resume` /
    /// `items_changed` progress event says so).
    fn keep_units(&mut self, k: StepKey, prior: Vec<PriorInstance>) {
        let id = self.pstep(k).id().to_owned();
        let st = self.st(k);
        let Some(hash) = st.items_hash.clone() else {
            return;
        };
        let total = st.units.len();
        let mut kept = 0u32;
        let mut matched = false;
        for p in prior {
            if p.items_hash != hash || p.index >= total {
                continue;
            }
            matched = true;
            let unit = &mut st.units[p.index];
            if unit.state == UnitState::Queued {
                unit.state = UnitState::Succeeded;
                unit.outputs = p.outputs;
                unit.attempts = p.attempts;
                kept += 1;
            }
        }
        st.kept_units = kept;
        let event = if kept > 0 {
            EventKind::StepKept {
                step: id,
                kept_instances: Some(u64::from(kept)),
                instances: Some(total as u64),
            }
        } else if !matched {
            tracing::info!(run = %self.run_id, step = %id,
                "the step's items changed since the earlier attempt: every instance runs again");
            EventKind::ItemsChanged {
                step: id,
                instances: total as u64,
            }
        } else {
            return;
        };
        self.emit(event);
    }

    // ---- starting work ------------------------------------------------------------------

    /// Start queued jobs while there are free slots.
    fn pump(&mut self) {
        while let Some(&job) = self.ready.front() {
            let k = job.unit.step;
            if self.unit(job.unit).state != UnitState::Queued {
                self.ready.pop_front();
                continue;
            }
            if k.dag == MAIN && self.fail_fast_tripped && self.st(k).status == StepStatus::Pending {
                // fail_fast: a step that has not started does not start.
                self.ready.pop_front();
                for unit in &mut self.st(k).units {
                    unit.state = UnitState::Skipped;
                }
                self.finish_unstarted(k, StepStatus::Skipped, Some(SkipReason::FailFast), None);
                continue;
            }
            let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() else {
                break;
            };
            self.ready.pop_front();
            if job.recovery {
                self.start_recovery(job, permit);
            } else {
                self.start_attempt(job, permit);
            }
        }
    }

    fn tool_context(&self, u: UnitKey, label: String) -> ToolContext {
        ToolContext {
            cancel: self.phase_token().child_token(),
            context_sink: self.context_sink.clone(),
            progress: self.progress_fn(u),
            env: IndexMap::new(),
            project_dir: self.project_dir.clone(),
            workspace: self.workspace.clone(),
            run_id: self.run_id.clone(),
            step_id: label,
            registry: Arc::clone(&self.registry),
            secrets: Arc::clone(&self.secrets),
            depth: self.depth,
            roots: self.roots.clone(),
        }
    }

    fn progress_fn(&self, u: UnitKey) -> ProgressFn {
        let emitter = self.emitter.clone();
        let step = self.pstep(u.step).id().to_owned();
        let instance = self.instance(u);
        Arc::new(move |p: Progress| {
            emitter.emit(match p {
                Progress::Output { stream, line } => EventKind::StepOutput {
                    step: step.clone(),
                    instance,
                    stream: stream.to_owned(),
                    line,
                },
                Progress::Part {
                    id,
                    status,
                    current,
                    total,
                } => EventKind::StepProgress {
                    step: step.clone(),
                    instance,
                    id,
                    status,
                    current,
                    total,
                },
            })
        })
    }

    fn spawn(&mut self, job: Job, call: Call, permit: OwnedSemaphorePermit) {
        self.unit(job.unit).state = UnitState::Running;
        // A recorded step with effects keeps its slot until its finish is committed, so a
        // crash can make at most `max_parallel` such steps run again. A tool that changes
        // nothing (`noop`, `share_context` …) may simply run again: its slot is freed at once.
        let keep_permit =
            self.recorder.is_some() && (call.tool.destructive() || call.tool.host_exec());
        if !keep_permit {
            self.quick_running += 1;
        }
        self.tasks.spawn(executor::run(
            call,
            job,
            permit,
            self.tx.clone(),
            keep_permit,
        ));
    }

    /// Answer a job at once, without a task (it could not even start).
    fn answer(&mut self, job: Job, err: ToolError) {
        self.unit(job.unit).state = UnitState::Running;
        let _ = self.tx.send(Done {
            key: job,
            result: Err(err),
            duration: Duration::ZERO,
            permit: None,
            quick: false,
        });
    }

    fn start_attempt(&mut self, job: Job, permit: OwnedSemaphorePermit) {
        let u = job.unit;
        let k = u.step;
        let attempt = {
            let st = self.st(k);
            if st.status == StepStatus::Pending {
                st.status = StepStatus::Running;
                st.started = Some(Instant::now());
            }
            let unit = &mut st.units[u.unit as usize];
            unit.attempts += 1;
            unit.attempts
        };
        let instance = self.instance(u);
        let plan = Arc::clone(&self.plan);
        let ps = &(if k.dag == MAIN {
            &plan.main
        } else {
            &plan.finally
        })
        .steps[k.idx as usize];
        self.emit(EventKind::StepStarted {
            step: ps.id().to_owned(),
            instance,
            attempt,
        });
        if let Some(e) = &self.env_error {
            let e = e.clone();
            self.answer(job, e);
            return;
        }
        let t = &self.dags[k.dag as usize].info[k.idx as usize].templates;
        let (render_args, any) = (t.with, t.any());
        let ctx = any.then(|| self.context(k, Some(u), None));
        let label = match instance {
            Some(i) => format!("{}[{i}]", ps.id()),
            None => ps.id().to_owned(),
        };
        let call = Call {
            tool: Arc::clone(&ps.tool),
            args: Value::Object(ps.step.with.clone()),
            render_args,
            args_place: "with",
            ctx,
            base_env: Arc::clone(&self.base_env),
            step_env: (!ps.step.env.is_empty()).then(|| ps.step.env.clone()),
            outputs: ps.step.outputs.clone(),
            timeout: ps.timeout,
            tool_ctx: self.tool_context(u, label),
        };
        self.spawn(job, call, permit);
    }

    fn start_recovery(&mut self, job: Job, permit: OwnedSemaphorePermit) {
        let u = job.unit;
        let k = u.step;
        let instance = self.instance(u);
        let (fired, error, attempts) = {
            let unit = self.unit(u);
            let (f, e) = unit
                .pending
                .clone()
                .expect("a queued recovery has its rule");
            (f, e, unit.attempts)
        };
        let route = fired
            .rule
            .route
            .clone()
            .expect("only rules with a route queue a recovery");
        let plan = Arc::clone(&self.plan);
        let ps = &(if k.dag == MAIN {
            &plan.main
        } else {
            &plan.finally
        })
        .steps[k.idx as usize];
        self.emit(EventKind::RecoveryStarted {
            step: ps.id().to_owned(),
            instance,
            rule: fired.name.clone(),
            tool: route.tool.clone(),
        });
        let Some(tool) = self.registry.tool(&route.tool) else {
            let e = ToolError::new(
                ErrorClass::NotFound,
                format!("the recovery tool `{}` is not in the registry", route.tool),
            );
            self.answer(job, e);
            return;
        };
        let args = Value::Object(route.with);
        let mut refs = self.dags[k.dag as usize].info[k.idx as usize]
            .templates
            .refs
            .clone();
        refs.add_value(&args);
        let mut ctx = self.context(k, Some(u), Some(&refs));
        if let Value::Object(m) = &mut ctx {
            let err = error_json(&error);
            let mut failed = json!({
                "id": ps.id(), "step": ps.id(), "tool": ps.step.tool, "attempts": attempts, "error": err,
            });
            // A `for_each` instance: which one (a rule's templates cannot name `item`).
            if let (Some(i), Some(item)) = (instance, m.get("item")) {
                failed["index"] = Value::from(i);
                failed["item"] = item.clone();
            }
            m.insert("failed".into(), failed);
        }
        let label = match instance {
            Some(i) => format!("{}[{i}]:recovery", ps.id()),
            None => format!("{}:recovery", ps.id()),
        };
        let call = Call {
            tool,
            render_args: has_template(&args),
            args,
            args_place: "route.with",
            ctx: Some(ctx),
            base_env: Arc::clone(&self.base_env),
            step_env: (!ps.step.env.is_empty()).then(|| ps.step.env.clone()),
            outputs: None,
            timeout: ps.timeout,
            tool_ctx: self.tool_context(u, label),
        };
        self.spawn(job, call, permit);
    }

    // ---- results ------------------------------------------------------------------------

    fn on_done(&mut self, done: Done<Job>) {
        let job = done.key;
        if done.quick {
            self.quick_running -= 1;
        }
        // If this result finishes its step, `announce` keeps the slot until the commit.
        self.permit_in_hand = done.permit;
        if job.recovery {
            self.on_recovery(job.unit, done.result, done.duration);
        } else {
            self.on_attempt(job.unit, done.result);
        }
        self.permit_in_hand = None;
    }

    /// What a result means while the phase is stopping: no retries, no routing.
    fn end_stopped(&mut self, u: UnitKey, result: Result<Value, ToolError>) {
        match (result, self.stop) {
            (Ok(out), _) => self.unit_end(u, UnitState::Succeeded, out, None),
            (Err(_), Some(Stop::TimedOut)) => {
                let t = self.plan.timeout.unwrap_or_default();
                let e = ToolError::new(
                    ErrorClass::Timeout,
                    format!(
                        "the run's timeout ({}) passed",
                        crate::report::human_duration(t.as_millis() as u64)
                    ),
                );
                self.unit_end(u, UnitState::Failed, Value::Null, Some(e));
            }
            (Err(_), _) => self.unit_end(u, UnitState::Cancelled, Value::Null, None),
        }
    }

    fn on_attempt(&mut self, u: UnitKey, result: Result<Value, ToolError>) {
        if self.stop.is_some() {
            self.end_stopped(u, result);
            return;
        }
        let e = match result {
            Ok(out) => {
                self.unit_end(u, UnitState::Succeeded, out, None);
                return;
            }
            Err(e) => e,
        };
        let plan = Arc::clone(&self.plan);
        let ps = &(if u.step.dag == MAIN {
            &plan.main
        } else {
            &plan.finally
        })
        .steps[u.step.idx as usize];
        let attempts = self.unit(u).attempts;
        if attempts < ps.retry.max_attempts && ps.retry.retries(e.class) {
            let delay = retry::delay(&ps.retry, attempts + 1, &mut self.rng);
            self.emit(EventKind::StepRetrying {
                step: ps.id().to_owned(),
                instance: self.instance(u),
                attempt: attempts,
                delay_ms: delay.as_millis() as u64,
                error: e,
            });
            self.unit(u).state = UnitState::Waiting;
            self.timer_seq += 1;
            self.timers
                .push(Reverse((Instant::now() + delay, self.timer_seq, u)));
            return;
        }
        self.route(u, e);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((due, _, u))) = self.timers.peek().copied() {
            if due > now {
                break;
            }
            self.timers.pop();
            if self.unit(u).state == UnitState::Waiting {
                self.unit(u).state = UnitState::Queued;
                self.ready.push_back(Job {
                    unit: u,
                    recovery: false,
                });
            }
        }
    }

    /// A failure that used its retries: try the routing rules.
    fn route(&mut self, u: UnitKey, e: ToolError) {
        let plan = Arc::clone(&self.plan);
        let ps = &(if u.step.dag == MAIN {
            &plan.main
        } else {
            &plan.finally
        })
        .steps[u.step.idx as usize];
        let tool_rules = ps.tool.default_rules();
        let fired = {
            let unit = self.unit(u);
            routing::pick(
                &plan.workflow.doc.on_failure,
                &tool_rules,
                ps.id(),
                &ps.step.tool,
                &e,
                |s, i| unit.fire_count(s, i),
            )
        };
        let Some(fired) = fired else {
            self.unit_end(u, UnitState::Failed, Value::Null, Some(e));
            return;
        };
        self.unit(u).fire(fired.source, fired.index);
        let instance = self.instance(u);
        self.emit(EventKind::StepRouted {
            step: ps.id().to_owned(),
            instance,
            rule: fired.name.clone(),
            source: fired.source,
            tool: fired.rule.route.as_ref().map(|r| r.tool.clone()),
            then: fired.rule.then,
        });
        if fired.rule.route.is_some() {
            let unit = self.unit(u);
            unit.pending = Some((fired, e));
            unit.state = UnitState::Queued;
            self.ready.push_back(Job {
                unit: u,
                recovery: true,
            });
            return;
        }
        let then = fired.rule.then;
        self.st(u.step).routing.push(RoutingRecord {
            rule: fired.name,
            source: fired.source,
            instance,
            tool: None,
            status: StepStatus::Succeeded,
            result: None,
            error: None,
            then,
        });
        self.then(u, then, e, None);
    }

    fn on_recovery(&mut self, u: UnitKey, result: Result<Value, ToolError>, took: Duration) {
        let (fired, e) = self
            .unit(u)
            .pending
            .take()
            .expect("a recovery answers for its rule");
        let plan = Arc::clone(&self.plan);
        let ps = &(if u.step.dag == MAIN {
            &plan.main
        } else {
            &plan.finally
        })
        .steps[u.step.idx as usize];
        let instance = self.instance(u);
        let tool = fired
            .rule
            .route
            .as_ref()
            .map(|r| r.tool.clone())
            .unwrap_or_default();
        let status = if result.is_ok() {
            StepStatus::Succeeded
        } else {
            StepStatus::Failed
        };
        self.emit(EventKind::RecoveryFinished {
            step: ps.id().to_owned(),
            instance,
            rule: fired.name.clone(),
            tool: tool.clone(),
            status,
            duration_ms: took.as_millis() as u64,
            error: result.as_ref().err().cloned(),
        });
        let (ok, err) = match result {
            Ok(v) => (Some(v), None),
            Err(re) => (None, Some(re)),
        };
        self.st(u.step).routing.push(RoutingRecord {
            rule: fired.name,
            source: fired.source,
            instance,
            tool: Some(tool),
            status,
            result: ok.clone(),
            error: err,
            then: fired.rule.then,
        });
        if self.stop.is_some() {
            self.end_stopped(u, Err(e));
            return;
        }
        match ok {
            // The recovery step failed: the step fails for good (both errors recorded).
            None => self.unit_end(u, UnitState::Failed, Value::Null, Some(e)),
            Some(r) => self.then(u, fired.rule.then, e, Some(r)),
        }
    }

    fn then(&mut self, u: UnitKey, then: Then, e: ToolError, recovery: Option<Value>) {
        match then {
            Then::Retry => {
                let unit = self.unit(u);
                if recovery.is_some() {
                    unit.recovery = recovery;
                }
                unit.state = UnitState::Queued;
                self.ready.push_back(Job {
                    unit: u,
                    recovery: false,
                });
            }
            Then::Continue => {
                self.unit(u).tolerated = true;
                self.unit_end(u, UnitState::Failed, Value::Null, Some(e));
            }
            Then::Fail => self.unit_end(u, UnitState::Failed, Value::Null, Some(e)),
        }
    }

    // ---- finishing ----------------------------------------------------------------------

    fn unit_end(&mut self, u: UnitKey, state: UnitState, outputs: Value, error: Option<ToolError>) {
        debug_assert!(state.is_final());
        let k = u.step;
        let continue_on_error = self.pstep(k).continue_on_error;
        let fail_fast = self.plan.workflow.doc.fail_fast;
        let unit = self.unit(u);
        unit.state = state;
        unit.outputs = outputs;
        unit.error = error;
        let tolerated = unit.tolerated;
        if self.record_instances
            && k.dag == MAIN
            && matches!(state, UnitState::Succeeded | UnitState::Failed)
            && self.dags[MAIN as usize].steps[k.idx as usize].for_each
        {
            self.record_instance(u);
        }
        if state == UnitState::Failed
            && !tolerated
            && !continue_on_error
            && k.dag == MAIN
            && fail_fast
        {
            self.fail_fast_tripped = true;
        }
        let st = self.st(k);
        st.units_left -= 1;
        if st.units_left == 0 {
            self.finish_step(k);
        }
    }

    /// Every unit of a started step has ended: the step's record, its event, and its
    /// dependents' turn.
    fn finish_step(&mut self, k: StepKey) {
        let continue_on_error = self.pstep(k).continue_on_error;
        let st = self.st(k);
        let mut failed_units = st
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.state == UnitState::Failed);
        let first_failed = failed_units.next().map(|(i, _)| i);
        let all_failed_tolerated = st
            .units
            .iter()
            .filter(|u| u.state == UnitState::Failed)
            .all(|u| u.tolerated);
        let status = if first_failed.is_some() {
            StepStatus::Failed
        } else if st.units.iter().any(|u| u.state == UnitState::Cancelled) {
            StepStatus::Cancelled
        } else if !st.units.is_empty() && st.units.iter().all(|u| u.state == UnitState::Skipped) {
            StepStatus::Skipped
        } else {
            StepStatus::Succeeded
        };
        st.attempts = st.units.iter().map(|u| u.attempts).max().unwrap_or(0);
        st.error = first_failed.map(|i| {
            let mut e = st.units[i]
                .error
                .clone()
                .unwrap_or_else(|| ToolError::new(ErrorClass::ToolError, "failed"));
            if st.for_each {
                e.message = format!("instance {i}: {}", e.message);
            }
            e
        });
        st.outputs = if status != StepStatus::Succeeded {
            Value::Null
        } else if st.for_each {
            Value::Array(
                st.units
                    .iter_mut()
                    .map(|u| std::mem::take(&mut u.outputs))
                    .collect(),
            )
        } else {
            std::mem::take(&mut st.units[0].outputs)
        };
        st.tolerated = status == StepStatus::Failed && (continue_on_error || all_failed_tolerated);
        st.duration_ms = st.started.map_or(0, |s| s.elapsed().as_millis() as u64);
        st.finished = Some(Instant::now());
        st.status = status;
        if status == StepStatus::Skipped {
            st.skipped_reason = Some(SkipReason::If);
        }
        self.announce(k);
    }

    /// A step that ends without having started: skipped, cancelled, or failed before its
    /// tool could be called (a template in `if` or `for_each` did not render).
    fn finish_unstarted(
        &mut self,
        k: StepKey,
        status: StepStatus,
        reason: Option<SkipReason>,
        error: Option<ToolError>,
    ) {
        let continue_on_error = self.pstep(k).continue_on_error;
        let st = self.st(k);
        st.status = status;
        st.skipped_reason = reason;
        st.tolerated = status == StepStatus::Failed && continue_on_error;
        st.error = error;
        st.finished = Some(Instant::now());
        self.announce(k);
    }

    /// A step has ended: note what it means for the run, report it (when the run is
    /// recorded, once its finish is committed) and release its dependents at once.
    ///
    /// Dependents need not wait for the commit: commits are made in order, each carrying
    /// everything recorded before it, so whatever a dependent does reaches the disk after
    /// its needs' finishes, and a step with effects keeps its slot until its own commit (see
    /// `spawn`), so a crash still makes at most `max_parallel` of them run again.
    fn announce(&mut self, k: StepKey) {
        let fail_fast = self.plan.workflow.doc.fail_fast;
        let st = &self.dags[k.dag as usize].steps[k.idx as usize];
        if st.status == StepStatus::Failed && !st.tolerated {
            if k.dag == MAIN {
                self.main_failed = true;
                if fail_fast {
                    self.fail_fast_tripped = true;
                }
            } else {
                self.finally_failed = true;
            }
        }
        let kind = self.finish_event(k);
        if self.recorder.is_some() {
            self.finishes = self.emitter.emit_finish(kind) + 1;
            self.uncommitted.push(k);
            self.held_permits.extend(self.permit_in_hand.take());
        } else {
            self.emit(kind);
        }
        self.to_settle.push(k);
    }

    /// Whether finished steps or instances wait for a commit that has not started.
    fn commit_pending(&self) -> bool {
        self.recorder.is_some()
            && !(self.uncommitted.is_empty() && self.uncommitted_instances.is_empty())
    }

    /// The event that reports a finished step.
    fn finish_event(&self, k: StepKey) -> EventKind {
        let id = self.pstep(k).id().to_owned();
        let st = &self.dags[k.dag as usize].steps[k.idx as usize];
        match st.status {
            StepStatus::Skipped => EventKind::StepSkipped {
                step: id,
                reason: st.skipped_reason.unwrap_or(SkipReason::If),
            },
            status => EventKind::StepFinished {
                step: id,
                status,
                attempts: st.attempts,
                duration_ms: st.duration_ms,
                outputs: st.outputs.clone(),
                error: st.error.clone(),
                tolerated: st.tolerated,
            },
        }
    }

    // ---- recording ----------------------------------------------------------------------

    /// A `for_each` instance of a main step ended (succeeded or failed): it rides on the
    /// next commit, and keeps its slot (if it has effects) until then, like a step.
    fn record_instance(&mut self, u: UnitKey) {
        let k = u.step;
        let st = &self.dags[k.dag as usize].steps[k.idx as usize];
        let unit = &st.units[u.unit as usize];
        let mut outputs = unit.outputs.clone();
        let mut error = unit.error.clone();
        let r = self.emitter.redactor();
        if !r.is_empty() {
            r.value(&mut outputs);
            if let Some(e) = &mut error {
                r.error(e);
            }
        }
        let finished = FinishedInstance {
            step: self.pstep(k).id().to_owned(),
            index: u.unit as usize,
            items_hash: st.items_hash.clone().unwrap_or_default(),
            status: if unit.state == UnitState::Succeeded {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            },
            attempts: unit.attempts,
            outputs,
            error,
            finished_at_ms: self.emitter.unix_ms(Instant::now()),
        };
        self.uncommitted_instances.push(finished);
        self.held_permits.extend(self.permit_in_hand.take());
    }

    /// Hand the steps that finished since the last commit to the recorder, unless a commit
    /// is in flight (they ride on the next one).
    fn start_commit(&mut self) {
        if self.inflight.is_some()
            || (self.uncommitted.is_empty() && self.uncommitted_instances.is_empty())
        {
            return;
        }
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        // Tasks without effects are still running (typically a layer of `noop`s that will
        // all answer within microseconds): wait for them, up to COMMIT_DELAY, so that one
        // commit carries them all rather than one commit each on the critical path.
        if self.quick_running > 0 {
            let due = *self
                .commit_due
                .get_or_insert_with(|| Instant::now() + COMMIT_DELAY);
            if Instant::now() < due {
                return;
            }
        }
        self.commit_due = None;
        let keys = std::mem::take(&mut self.uncommitted);
        let batch = keys.into_iter().map(|k| self.finished_step(k)).collect();
        let commit = if self.uncommitted_instances.is_empty() {
            recorder.commit(batch)
        } else {
            recorder.commit_all(std::mem::take(&mut self.uncommitted_instances), batch)
        };
        self.inflight = Some(Inflight {
            upto: self.finishes,
            permits: std::mem::take(&mut self.held_permits),
            commit,
        });
    }

    /// A commit resolved: report its steps; a failed one stops the run (the store is broken).
    fn on_committed(&mut self, result: Result<(), String>) {
        let Inflight { upto, permits, .. } = self.inflight.take().expect("a commit was in flight");
        // The steps are durable (or the store is broken): their slots are free again.
        drop(permits);
        if let Err(e) = result {
            tracing::error!(run = %self.run_id, error = %e, "the state store failed; stopping the run");
            self.store_error = Some(e);
            // Nothing more is recorded; what finishes from now on is reported at once.
            self.recorder = None;
            self.record_instances = false;
            self.uncommitted_instances.clear();
            self.held_permits.clear();
            self.uncommitted.clear();
            self.emitter.durable(u64::MAX);
            if self.phase == MAIN && self.stop.is_none() {
                self.stop(Stop::Cancelled);
            }
            return;
        }
        self.emitter.durable(upto);
    }

    /// What the recorder gets for a finished step (redacted).
    fn finished_step(&self, k: StepKey) -> FinishedStep {
        let ps = self.pstep(k);
        let st = &self.dags[k.dag as usize].steps[k.idx as usize];
        let mut report = step_report(st);
        self.redact_report(&mut report);
        let mut shared = Vec::new();
        if st.status == StepStatus::Succeeded
            && let Some(outputs) = &ps.step.outputs
        {
            for (name, spec) in outputs.iter().filter(|(_, spec)| spec.share) {
                let value = if st.for_each {
                    Value::Array(
                        report
                            .outputs
                            .as_array()
                            .map(|items| items.iter().map(|o| o[name.as_str()].clone()).collect())
                            .unwrap_or_default(),
                    )
                } else {
                    report.outputs[name.as_str()].clone()
                };
                let ttl = spec
                    .ttl
                    .as_deref()
                    .and_then(crate::workflow::duration::parse_duration);
                shared.push(SharedOutput {
                    key: name.clone(),
                    value,
                    ttl,
                });
            }
        }
        FinishedStep {
            id: ps.id().to_owned(),
            finally: k.dag == FINALLY,
            report,
            started_at_ms: st.started.map(|t| self.emitter.unix_ms(t)),
            finished_at_ms: self
                .emitter
                .unix_ms(st.finished.unwrap_or_else(Instant::now)),
            shared,
        }
    }

    fn redact_report(&self, rep: &mut StepReport) {
        let r = self.emitter.redactor();
        if r.is_empty() {
            return;
        }
        r.value(&mut rep.outputs);
        if let Some(e) = &mut rep.error {
            r.error(e);
        }
        for rec in &mut rep.routing {
            if let Some(v) = &mut rec.result {
                r.value(v);
            }
            if let Some(e) = &mut rec.error {
                r.error(e);
            }
        }
    }

    /// Resume: take over the main steps the earlier attempt finished (succeeded, or skipped
    /// not by `fail_fast`) whose needs are all kept too, so that what a kept step read is
    /// exactly what it read before. They are reported at once (after a `resume`/`kept`
    /// progress event), not run, and not recorded again; their outputs feed templates.
    /// Of a `for_each` step that runs again with its needs all kept, the instances that
    /// succeeded before are kept when it starts ([`Dispatcher::keep_units`]).
    fn keep_resumed(&mut self) {
        let Some(mut resume) = self.resume.take() else {
            return;
        };
        let plan = Arc::clone(&self.plan);
        let mut kept = vec![false; plan.main.steps.len()];
        for &i in plan.main.levels.iter().flatten() {
            let ps = &plan.main.steps[i];
            if !ps.needs.iter().all(|&n| kept[n]) {
                continue;
            }
            let Some(prior) = resume.keepable(ps.id()) else {
                if ps.step.for_each.is_some()
                    && let Some(units) = resume.take_instances(ps.id())
                {
                    self.resume_units.insert(i as u32, units);
                }
                continue;
            };
            kept[i] = true;
            let k = StepKey {
                dag: MAIN,
                idx: i as u32,
            };
            let p = prior.report.clone();
            self.emit(EventKind::StepKept {
                step: ps.id().to_owned(),
                kept_instances: None,
                instances: None,
            });
            let st = self.st(k);
            st.kept = true;
            st.status = p.status;
            st.attempts = p.attempts;
            st.duration_ms = p.duration_ms;
            st.outputs = p.outputs;
            st.error = p.error;
            st.tolerated = p.tolerated;
            st.routing = p.routing;
            st.skipped_reason = p.skipped_reason;
            let kind = self.finish_event(k);
            self.emit(kind);
            self.to_settle.push(k);
        }
    }

    /// Tell the dependents of every finished step; those whose needs are all finished get
    /// their turn (which may finish them at once, and so on, without recursion).
    fn settle_all(&mut self) {
        let plan = Arc::clone(&self.plan);
        while let Some(k) = self.to_settle.pop() {
            let st = &self.dags[k.dag as usize].steps[k.idx as usize];
            let outcome = match st.status {
                StepStatus::Succeeded => Outcome::Ok,
                StepStatus::Failed if st.tolerated => Outcome::Ok,
                StepStatus::Failed => Outcome::Failed,
                StepStatus::Skipped => Outcome::Skipped,
                _ => Outcome::Cancelled,
            };
            self.dags[k.dag as usize].unsettled -= 1;
            let dag = if k.dag == MAIN {
                &plan.main
            } else {
                &plan.finally
            };
            for &d in &dag.steps[k.idx as usize].dependents {
                let dk = StepKey {
                    dag: k.dag,
                    idx: d as u32,
                };
                let ds = self.st(dk);
                if ds.status != StepStatus::Pending || ds.waiting == 0 {
                    continue;
                }
                ds.waiting -= 1;
                match outcome {
                    Outcome::Ok => {}
                    Outcome::Failed => ds.failed_needs += 1,
                    Outcome::Skipped => ds.skipped_needs += 1,
                    Outcome::Cancelled => ds.cancelled_needs += 1,
                }
                if ds.waiting == 0 {
                    self.ready_step(dk);
                }
            }
        }
    }

    // ---- templates ----------------------------------------------------------------------

    /// The template context for a step (or one of its units), holding only what its
    /// templates read: `refs` (default: the step's own) decides which roots and which
    /// `steps.<id>` entries are filled in.
    fn context(&self, k: StepKey, u: Option<UnitKey>, refs: Option<&Refs>) -> Value {
        let info = &self.dags[k.dag as usize].info[k.idx as usize];
        let (refs, reads): (&Refs, Vec<StepKey>) = match refs {
            None => (&info.templates.refs, info.reads.clone()),
            Some(r) => (
                r,
                r.steps
                    .iter()
                    .filter_map(|id| self.ids.get(id).copied())
                    .collect(),
            ),
        };
        let mut m = Map::new();
        if refs.has(root::INPUTS) {
            m.insert("inputs".into(), self.inputs.clone());
        }
        // `env` is always there: a step's own env is merged into it before `with` renders.
        m.insert("env".into(), self.env_value.clone());
        if refs.has(root::RUN) {
            let status = if self.phase == MAIN {
                "running"
            } else {
                self.main_status().as_str()
            };
            m.insert(
                "run".into(),
                json!({"id": self.run_id, "workspace": self.workspace.display().to_string(), "status": status}),
            );
        }
        if refs.has(root::WORKFLOW) {
            m.insert(
                "workflow".into(),
                json!({"name": self.plan.workflow.doc.name}),
            );
        }
        if refs.has(root::CONTEXT) {
            m.insert("context".into(), self.shared_context.clone());
        }
        if refs.has(root::ALL_STEPS) || !reads.is_empty() {
            let mut steps = Map::new();
            if refs.has(root::ALL_STEPS) {
                for d in [MAIN, FINALLY] {
                    if d == FINALLY && self.phase == MAIN {
                        continue;
                    }
                    for i in 0..self.dags[d as usize].steps.len() {
                        let sk = StepKey {
                            dag: d,
                            idx: i as u32,
                        };
                        steps.insert(self.pstep(sk).id().to_owned(), self.step_entry(sk));
                    }
                }
            } else {
                for sk in reads {
                    steps.insert(self.pstep(sk).id().to_owned(), self.step_entry(sk));
                }
            }
            m.insert("steps".into(), Value::Object(steps));
        }
        if let Some(u) = u {
            let st = &self.dags[k.dag as usize].steps[k.idx as usize];
            let unit = &st.units[u.unit as usize];
            if st.for_each {
                m.insert("item".into(), unit.item.clone());
                m.insert("index".into(), Value::from(u.unit));
            }
            if refs.has(root::RECOVERY) {
                m.insert(
                    "recovery".into(),
                    unit.recovery.clone().unwrap_or(Value::Null),
                );
            }
        }
        Value::Object(m)
    }

    fn step_entry(&self, k: StepKey) -> Value {
        let st = &self.dags[k.dag as usize].steps[k.idx as usize];
        json!({
            "outputs": st.outputs,
            "status": st.status.as_str(),
            "error": st.error.as_ref().map(error_json),
        })
    }

    fn render_workflow_env(&mut self) {
        let doc = &self.plan.workflow.doc;
        if doc.env.is_empty() {
            return;
        }
        let mut refs = Refs::default();
        for v in doc.env.values() {
            refs.add_str(&v.0);
        }
        let mut ctx = Map::new();
        ctx.insert("inputs".into(), self.inputs.clone());
        ctx.insert(
            "run".into(),
            json!({"id": self.run_id, "workspace": self.workspace.display().to_string(), "status": "running"}),
        );
        ctx.insert("workflow".into(), json!({"name": doc.name}));
        ctx.insert("context".into(), self.shared_context.clone());
        let ctx = Value::Object(ctx);
        let mut env = IndexMap::new();
        for (k, v) in &doc.env {
            match render_at(&Value::String(v.0.clone()), &ctx, &format!("env.{k}")) {
                Ok(v) => {
                    env.insert(k.clone(), super::context::env_text(v));
                }
                Err(e) => {
                    self.env_error.get_or_insert(e);
                }
            }
        }
        self.env_value = Value::Object(
            env.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
        self.base_env = Arc::new(env);
    }

    // ---- the report ---------------------------------------------------------------------

    fn report(&self) -> RunReport {
        let status = if self.store_error.is_some() {
            RunStatus::Failed
        } else if self.main_cancelled || self.finally_cancelled {
            RunStatus::Cancelled
        } else if self.timed_out || self.main_failed || self.finally_failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        let mut steps = IndexMap::with_capacity(self.plan.len());
        for d in [MAIN, FINALLY] {
            for (i, st) in self.dags[d as usize].steps.iter().enumerate() {
                let mut report = step_report(st);
                self.redact_report(&mut report);
                steps.insert(self.dag(d).steps[i].id().to_owned(), report);
            }
        }
        let mut kept = IndexMap::new();
        if self.resumed {
            for (i, st) in self.dags[MAIN as usize].steps.iter().enumerate() {
                let instances = if st.status == StepStatus::Skipped {
                    0
                } else {
                    st.kept_units as usize
                };
                if st.kept || instances > 0 {
                    let k = Kept {
                        step: st.kept,
                        instances,
                    };
                    kept.insert(self.plan.main.steps[i].id().to_owned(), k);
                }
            }
        }
        RunReport {
            kept,
            run_id: self.run_id.clone(),
            workflow: self.plan.workflow.doc.name.clone(),
            status,
            duration_ms: self.emitter.start().elapsed().as_millis() as u64,
            steps,
            error: self
                .store_error
                .as_ref()
                .map(|e| format!("the state store failed, so the run stopped: {e}")),
        }
    }
}

fn dag_state(dag: &Dag, templates: Vec<StepTemplates>, ids: &HashMap<String, StepKey>) -> DagState {
    let mut info = Vec::with_capacity(dag.steps.len());
    let mut steps = Vec::with_capacity(dag.steps.len());
    for (s, templates) in dag.steps.iter().zip(templates) {
        let reads = templates
            .refs
            .steps
            .iter()
            .filter_map(|id| ids.get(id).copied())
            .collect();
        info.push(StepInfo { templates, reads });
        steps.push(StepState {
            status: StepStatus::Pending,
            waiting: s.needs.len() as u32,
            failed_needs: 0,
            skipped_needs: 0,
            cancelled_needs: 0,
            for_each: false,
            units: Vec::new(),
            units_left: 0,
            started: None,
            duration_ms: 0,
            attempts: 0,
            outputs: Value::Null,
            error: None,
            tolerated: false,
            routing: Vec::new(),
            skipped_reason: None,
            finished: None,
            items_hash: None,
            kept: false,
            kept_units: 0,
        });
    }
    DagState {
        unsettled: steps.len(),
        steps,
        info,
    }
}

/// How long a commit may wait for running tasks without effects to answer (so that they
/// share it). Short next to a commit's own cost (a flush and an `fsync`).
const COMMIT_DELAY: Duration = Duration::from_micros(500);

/// A commit in flight.
struct Inflight {
    /// It makes the finishes the emitter numbered below this durable.
    upto: u64,
    /// Their slots, freed when it resolves.
    permits: Vec<OwnedSemaphorePermit>,
    commit: CommitFuture,
}

/// Wait for the commit in flight, if any.
async fn commit_done(inflight: &mut Option<Inflight>) -> Option<Result<(), String>> {
    match inflight {
        Some(i) => Some((&mut i.commit).await),
        None => None,
    }
}

/// A step's state as its report shows it (not redacted).
fn step_report(st: &StepState) -> StepReport {
    StepReport {
        status: st.status,
        attempts: st.attempts,
        duration_ms: st.duration_ms,
        outputs: st.outputs.clone(),
        error: st.error.clone(),
        tolerated: st.tolerated,
        routing: st.routing.clone(),
        skipped_reason: st.skipped_reason,
    }
}

/// `steps.<id>.error` in templates: `{class, code, message}` (`code` null when none).
/// A failure as templates see it (`steps.<id>.error`, `failed.error`): class, code, message
/// and the tool's structured details (a push failure's `registry`, an exit code, …).
fn error_json(e: &ToolError) -> Value {
    json!({"class": e.class.as_str(), "code": e.code, "message": e.message, "details": e.details})
}

/// The items of a rendered `for_each`: a list, or text holding a JSON list.
fn for_each_items(v: Value) -> Result<Vec<Value>, ToolError> {
    match v {
        Value::Array(items) => Ok(items),
        Value::String(s) if s.trim_start().starts_with('[') => {
            match serde_json::from_str::<Value>(&s) {
                Ok(Value::Array(items)) => Ok(items),
                _ => Err(ToolError::invalid(format!(
                    "`for_each` must give a list; it rendered to {s:?}"
                ))),
            }
        }
        other => Err(ToolError::invalid(format!(
            "`for_each` must give a list; it rendered to {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::{Engine, PriorStep};
    use crate::workflow::Workflow;

    /// Records instance finishes and the order of everything committed.
    #[derive(Default)]
    struct Rec {
        instances: Mutex<Vec<FinishedInstance>>,
        /// `fe[1]` for an instance, `fe` for a step, in commit order.
        order: Mutex<Vec<String>>,
    }

    struct ArcRec(Arc<Rec>);

    impl Recorder for ArcRec {
        fn event(&self, _: &Event) {}
        fn commit(&self, steps: Vec<FinishedStep>) -> CommitFuture {
            self.commit_all(Vec::new(), steps)
        }
        fn records_instances(&self) -> bool {
            true
        }
        fn commit_all(
            &self,
            instances: Vec<FinishedInstance>,
            steps: Vec<FinishedStep>,
        ) -> CommitFuture {
            let mut order = self.0.order.lock().unwrap();
            for i in &instances {
                order.push(format!("{}[{}]", i.step, i.index));
            }
            order.extend(steps.iter().map(|s| s.id.clone()));
            self.0.instances.lock().unwrap().extend(instances);
            Box::pin(async { Ok(()) })
        }
    }

    fn run(
        yaml: &str,
        rec: &Arc<Rec>,
        resume: Option<ResumeState>,
        dir: &std::path::Path,
    ) -> (RunReport, Vec<Event>) {
        let registry = Arc::new(ToolRegistry::builtin());
        let wf = Workflow::from_str_with("t.yaml", yaml, &registry).unwrap();
        let inputs = wf.resolve_inputs(&Default::default()).unwrap();
        let plan = Arc::new(Plan::new(Arc::new(wf), &registry));
        let opts = RunOptions {
            inputs,
            project_dir: dir.to_path_buf(),
            workspace: dir.to_path_buf(),
            recorder: Some(Arc::new(ArcRec(Arc::clone(rec)))),
            resume,
            ..RunOptions::default()
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (tx, mut rx) = unbounded_channel();
        let report = rt.block_on(Engine::new(registry).run(plan, opts, tx));
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (report, events)
    }

    fn fan(items: &str) -> String {
        format!(
            "apiVersion: ckflow/v1\nname: t\nsteps:\n  - id: fe\n    tool: shell\n    for_each: {items}\n    \
             with: {{run: \"echo {{{{item}}}} >> ran.txt; if [ ! -f ok ] && [ {{{{item}}}} = 2 ]; then exit 1; fi; echo v={{{{item}}}} >> $CKFLOW_OUTPUT\"}}\n  \
             - {{id: after, tool: noop, needs: [fe]}}\n"
        )
    }

    /// The earlier attempt, as a resume reads it back from `rec`.
    fn resume_from(rec: &Rec, report: &RunReport) -> ResumeState {
        let mut r = ResumeState::new();
        for (id, s) in &report.steps {
            r.prior(id.clone(), PriorStep { report: s.clone() });
        }
        for i in rec.instances.lock().unwrap().iter() {
            let p = PriorInstance {
                index: i.index,
                items_hash: i.items_hash.clone(),
                status: i.status,
                attempts: i.attempts,
                outputs: i.outputs.clone(),
            };
            r.prior_instance(i.step.clone(), p);
        }
        r
    }

    fn started(events: &[Event]) -> Vec<Option<usize>> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::StepStarted { step, instance, .. } if step == "fe" => Some(*instance),
                _ => None,
            })
            .collect()
    }

    fn resume_notes(events: &[Event]) -> Vec<(String, String, Option<u64>)> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::StepKept {
                    step,
                    kept_instances,
                    ..
                } => Some((step.clone(), "kept".to_owned(), *kept_instances)),
                EventKind::ItemsChanged { step, .. } => {
                    Some((step.clone(), "items_changed".to_owned(), None))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn instances_are_committed_before_their_step_and_a_resume_keeps_those_that_succeeded() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = fan("[1, 2, 3]");
        let rec = Arc::new(Rec::default());
        let (report, _) = run(&yaml, &rec, None, dir.path());
        assert_eq!(report.status, RunStatus::Failed);
        assert!(report.kept.is_empty());
        {
            let inst = rec.instances.lock().unwrap();
            let mut seen: Vec<(usize, StepStatus)> =
                inst.iter().map(|i| (i.index, i.status)).collect();
            seen.sort_by_key(|s| s.0);
            assert_eq!(
                seen,
                [
                    (0, StepStatus::Succeeded),
                    (1, StepStatus::Failed),
                    (2, StepStatus::Succeeded)
                ]
            );
            let hash = items_hash(&[json!(1), json!(2), json!(3)]);
            assert!(inst.iter().all(|i| i.items_hash == hash));
            let first = inst.iter().find(|i| i.index == 0).unwrap();
            assert_eq!(first.outputs["v"], "1");
        }
        let order = rec.order.lock().unwrap().clone();
        let fe = order.iter().position(|o| o == "fe").unwrap();
        assert!(order[..fe].iter().filter(|o| o.starts_with("fe[")).count() == 3);

        // Resume, item 2 fixed: only instance 1 runs; the list is whole, in item order.
        std::fs::write(dir.path().join("ok"), "").unwrap();
        let resume = resume_from(&rec, &report);
        let rec2 = Arc::new(Rec::default());
        let (report, events) = run(&yaml, &rec2, Some(resume), dir.path());
        assert_eq!(report.status, RunStatus::Succeeded);
        assert_eq!(started(&events), [Some(1)]);
        let vs: Vec<Value> = report.steps["fe"]
            .outputs
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["v"].clone())
            .collect();
        assert_eq!(vs, ["1", "2", "3"]);
        assert_eq!(
            report.kept("fe"),
            Kept {
                step: false,
                instances: 2
            }
        );
        assert_eq!(report.kept("after"), Kept::default());
        assert_eq!(
            resume_notes(&events),
            [("fe".to_owned(), "kept".to_owned(), Some(2))]
        );
        // Only the instance that ran is recorded again.
        assert_eq!(rec2.instances.lock().unwrap().len(), 1);
        let json = report.to_json();
        assert_eq!(json["steps"]["fe"]["kept_instances"], 2);
        assert!(json["steps"]["after"].get("kept").is_none());
        let ran = std::fs::read_to_string(dir.path().join("ran.txt")).unwrap();
        let mut ran: Vec<&str> = ran.lines().collect();
        ran.sort_unstable();
        assert_eq!(ran, ["1", "2", "2", "3"], "instances 0 and 2 ran once");

        // A second resume after that one keeps the whole step (and what needs it).
        let resume = resume_from(&rec, &report);
        let (report, events) = run(&yaml, &Arc::new(Rec::default()), Some(resume), dir.path());
        assert!(started(&events).is_empty());
        assert!(report.kept("fe").step && report.kept("after").step);
    }

    #[test]
    fn a_resume_runs_every_instance_when_the_items_changed() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Arc::new(Rec::default());
        let (report, _) = run(&fan("[1, 2, 3]"), &rec, None, dir.path());
        assert_eq!(report.status, RunStatus::Failed);
        let resume = resume_from(&rec, &report);
        let (report, events) = run(
            &fan("[1, 2, 4]"),
            &Arc::new(Rec::default()),
            Some(resume),
            dir.path(),
        );
        assert_eq!(report.status, RunStatus::Failed);
        assert_eq!(started(&events).len(), 3);
        assert!(report.kept.is_empty());
        assert_eq!(
            resume_notes(&events),
            [("fe".to_owned(), "items_changed".to_owned(), None)]
        );
    }
}
