//! The engine's [`Recorder`] over the store: one thread per run owns the run's
//! [`RunHandle`] and does all of its file IO, fed by a channel, so the async workers never
//! wait on the disk.
//!
//! What it writes: step logs (`StepOutput` lines, and `[ckflow]` lines for attempts,
//! retries, routing and what a resume kept) as they come; each commit's finished `for_each`
//! instances and steps, then one journal sync (group commit) before the engine hears back;
//! the steps that are running, every
//! [`TICK`] (a step that finishes sooner is written once, finished); shared outputs to the
//! session context inside the commit; the run's end. Every tick it also looks for the
//! run's `cancel` marker (`ckflow cancel` from another process).

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::engine::{
    CommitFuture, Event, EventKind, FinishedInstance, FinishedStep, PriorInstance, Recorder,
    Redactor,
};
use crate::report::{RunReport, StepStatus as ReportStatus};
use crate::store::{
    self, HistoryEntry, HistoryKind, InstanceRecord, LogStream, RunHandle, RunRecord, RunStatus,
    StepError, StepRecord, StepStatus, Store, StoreError,
};
use crate::sync::lock;
use crate::tools::{ContextFuture, ContextSink, ToolError};
use crate::workflow::model::ErrorClass;

/// How often the store thread writes running steps, refreshes `live.json` and looks for
/// the cancel marker.
const TICK: Duration = Duration::from_millis(100);

enum Msg {
    Event(Box<Event>),
    Commit(
        Vec<FinishedInstance>,
        Vec<FinishedStep>,
        oneshot::Sender<Result<(), String>>,
    ),
    Finish(
        RunStatus,
        u64,
        oneshot::Sender<Result<RunRecord, StoreError>>,
    ),
}

/// The recorder the runner gives the engine. Cheap to share.
pub(crate) struct StoreRecorder {
    tx: Sender<Msg>,
    /// First attempts' `StepStarted` events, which need no prompt writing (a step is
    /// written as running only at the next tick, if it still is): queued without waking the
    /// store thread, which takes them before anything else it does. A wake-up per started
    /// step costs more than the rest of its recording.
    started: Arc<Mutex<Vec<Event>>>,
}

impl StoreRecorder {
    /// Start the run's store thread, which owns `handle` from now on. `cancel` fires when
    /// the run's `cancel` marker appears.
    pub(crate) fn start(
        handle: RunHandle,
        store: Store,
        session: String,
        workflow: String,
        cancel: CancellationToken,
        resumed: bool,
        close_after_answer: bool,
    ) -> std::io::Result<Arc<StoreRecorder>> {
        let (tx, rx) = channel();
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut thread = StoreThread {
            close_after_answer,
            started: started.clone(),
            run_id: handle.id().to_owned(),
            handle: Some(handle),
            store,
            session,
            workflow,
            cancel,
            running: IndexMap::new(),
            starts: 0,
            log_error: None,
            errors: Vec::new(),
        };
        std::thread::Builder::new()
            .name("ckflow-store".into())
            .spawn(move || thread.run(rx, resumed))?;
        Ok(Arc::new(StoreRecorder { tx, started }))
    }

    /// Record the run's end (final status, index row, session history) and give up the run.
    /// Waits for everything sent before to be written.
    pub(crate) async fn finish(&self, report: &RunReport) -> Result<RunRecord, StoreError> {
        let status = match report.status {
            crate::report::RunStatus::Succeeded => RunStatus::Succeeded,
            crate::report::RunStatus::Failed => RunStatus::Failed,
            crate::report::RunStatus::Cancelled => RunStatus::Cancelled,
        };
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Msg::Finish(status, store::now_ms(), reply))
            .is_err()
        {
            return Err(gone());
        }
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> StoreError {
    StoreError::Io {
        action: "record",
        path: std::path::PathBuf::from("(the run's store thread)"),
        source: std::io::Error::other("the store thread stopped"),
    }
}

impl Recorder for StoreRecorder {
    fn event(&self, event: &Event) {
        let wanted = matches!(
            event.kind,
            EventKind::StepStarted { .. }
                | EventKind::StepOutput { .. }
                | EventKind::StepRetrying { .. }
                | EventKind::StepRouted { .. }
                | EventKind::RecoveryStarted { .. }
                | EventKind::RecoveryFinished { .. }
                | EventKind::StepKept { .. }
                | EventKind::ItemsChanged { .. }
        );
        if let EventKind::StepStarted { attempt: 1, .. } = event.kind {
            lock(&self.started).push(event.clone());
        } else if wanted {
            let _ = self.tx.send(Msg::Event(Box::new(event.clone())));
        }
    }

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
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Msg::Commit(instances, steps, reply)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err("the run's store thread stopped".to_owned());
            }
            rx.await
                .unwrap_or_else(|_| Err("the run's store thread stopped".to_owned()))
        })
    }
}

struct StoreThread {
    run_id: String,
    /// Answer the run's end before closing its database (see [`Msg::Finish`]).
    close_after_answer: bool,
    /// See [`StoreRecorder::started`].
    started: Arc<Mutex<Vec<Event>>>,
    /// `None` once the run is finished.
    handle: Option<RunHandle>,
    store: Store,
    session: String,
    workflow: String,
    cancel: CancellationToken,
    /// Steps that started and have not finished: their record, whether it still has to be
    /// written, and the order they started in (thousands may be running while commits lag
    /// behind, so finishes `swap_remove` and ticks sort).
    running: IndexMap<String, (StepRecord, bool, u64)>,
    /// Starts seen so far.
    starts: u64,
    /// The first failure writing a log; the next commit reports it (a full disk is
    /// critical).
    log_error: Option<StoreError>,
    /// Failed steps, for the session's history.
    errors: Vec<(String, String)>,
}

impl StoreThread {
    fn run(&mut self, rx: Receiver<Msg>, resumed: bool) {
        if resumed {
            // A new run's start is in the session's history already (`Store::start_run`).
            self.history(HistoryKind::Run, None, json!({"status": "resumed"}));
        }
        let mut last_tick = Instant::now();
        loop {
            let msg = rx.recv_timeout(TICK);
            // What was queued quietly came before this message.
            let started = std::mem::take(&mut *lock(&self.started));
            for e in started {
                self.event(e);
            }
            match msg {
                Ok(Msg::Event(e)) => self.event(*e),
                Ok(Msg::Commit(instances, steps, reply)) => {
                    let result = self.commit(instances, steps).map_err(|e| e.to_string());
                    let _ = reply.send(result);
                }
                Ok(Msg::Finish(status, at, reply)) => {
                    // In a long-lived process, answer as soon as the run's end is durable and
                    // listed, and close the database and let go of the run after. (A CLI
                    // process may exit right after the answer, so it waits.)
                    match self.finish(status, at) {
                        Ok((record, finished)) if self.close_after_answer => {
                            let _ = reply.send(Ok(record));
                            drop(finished);
                        }
                        Ok((record, finished)) => {
                            drop(finished);
                            let _ = reply.send(Ok(record));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The run was dropped without finishing: leave it interrupted.
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick();
            }
        }
    }

    fn handle(&self) -> &RunHandle {
        self.handle.as_ref().expect("the run is not finished")
    }

    fn tick(&mut self) {
        if !self.cancel.is_cancelled() && self.handle().cancel_requested() {
            tracing::info!(run = %self.run_id, "cancel requested through the store");
            self.cancel.cancel();
        }
        let Some(handle) = self.handle.as_ref() else {
            return;
        };
        // In the order they started, which is the order the store lists them in.
        let mut dirty: Vec<_> = self.running.values_mut().filter(|r| r.1).collect();
        dirty.sort_unstable_by_key(|r| r.2);
        for (rec, dirty, _) in dirty {
            *dirty = false;
            if let Err(e) = handle.record_step_started(rec) {
                self.log_error.get_or_insert(e);
            }
        }
        if let Err(e) = handle.refresh_live() {
            self.log_error.get_or_insert(e);
        }
    }

    fn log(&mut self, step: &str, stream: LogStream, text: &str) {
        if let Err(e) = self.handle().append_log(step, stream, text) {
            tracing::warn!(run = %self.run_id, step, error = %e, "could not write the step's log");
            self.log_error.get_or_insert(e);
        }
    }

    fn event(&mut self, e: Event) {
        let inst = |i: Option<usize>| i.map(|i| format!("[{i}] ")).unwrap_or_default();
        match e.kind {
            EventKind::StepStarted {
                step,
                instance,
                attempt,
            } => {
                if attempt > 1 {
                    self.log(
                        &step,
                        LogStream::Ckflow,
                        &format!("{}attempt {attempt}", inst(instance)),
                    );
                }
                let order = self.starts;
                self.starts += 1;
                let entry = self.running.entry(step.clone()).or_insert_with(|| {
                    let mut rec = StepRecord::new(step);
                    rec.status = StepStatus::Running;
                    rec.started_at_ms = Some(e.at);
                    (rec, true, order)
                });
                if attempt > entry.0.attempts {
                    entry.0.attempts = attempt;
                    entry.1 = true;
                }
            }
            EventKind::StepOutput {
                step,
                instance,
                stream,
                line,
            } => {
                let stream = if stream == "stderr" {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                };
                let text = match instance {
                    Some(i) => format!("[{i}] {line}"),
                    None => line,
                };
                self.log(&step, stream, &text);
            }
            EventKind::StepRetrying {
                step,
                instance,
                attempt,
                delay_ms,
                error,
            } => self.log(
                &step,
                LogStream::Ckflow,
                &format!(
                    "{}attempt {attempt} failed ({error}); retrying in {}",
                    inst(instance),
                    crate::report::human_duration(delay_ms)
                ),
            ),
            EventKind::StepRouted {
                step,
                instance,
                rule,
                tool,
                then,
                ..
            } => {
                let route = tool
                    .map(|t| format!(", recovery `{t}`"))
                    .unwrap_or_default();
                self.log(
                    &step,
                    LogStream::Ckflow,
                    &format!(
                        "{}failure routed by {rule}{route}, then {}",
                        inst(instance),
                        json!(then).as_str().unwrap_or("?")
                    ),
                );
            }
            EventKind::RecoveryStarted {
                step,
                instance,
                tool,
                ..
            } => self.log(
                &step,
                LogStream::Ckflow,
                &format!("{}recovery step `{tool}` started", inst(instance)),
            ),
            EventKind::RecoveryFinished {
                step,
                instance,
                tool,
                status,
                error,
                ..
            } => {
                let why = error.map(|e| format!(": {e}")).unwrap_or_default();
                self.log(
                    &step,
                    LogStream::Ckflow,
                    &format!("{}recovery step `{tool}` {status}{why}", inst(instance)),
                );
            }
            // A resume's word on a step: only what it kept of a `for_each` step, or that its
            // items changed, goes to the step's log (a step kept whole has its log already).
            EventKind::StepKept {
                step,
                kept_instances: Some(n),
                instances,
            } => {
                let text = format!(
                    "resumed: {n} of {} instances kept from the earlier attempt",
                    instances.unwrap_or(n)
                );
                self.log(&step, LogStream::Ckflow, &text);
            }
            EventKind::ItemsChanged { step, .. } => {
                self.log(
                    &step,
                    LogStream::Ckflow,
                    "resumed: the items changed since the earlier attempt, so all instances run again",
                );
            }
            _ => {}
        }
    }

    /// Record a turn's finished instances and steps and make them durable (one journal sync);
    /// publish the steps' shared outputs.
    fn commit(
        &mut self,
        instances: Vec<FinishedInstance>,
        steps: Vec<FinishedStep>,
    ) -> Result<(), StoreError> {
        if let Some(e) = self.log_error.take() {
            return Err(e);
        }
        for i in instances {
            self.handle()
                .record_instance_finished(&instance_record(i))?;
        }
        let mut shared = Vec::new();
        for f in steps {
            self.running.swap_remove(&f.id);
            let rec = step_record(&f);
            if rec.status == StepStatus::Failed
                && let Some(e) = &rec.error
            {
                self.errors.push((f.id.clone(), e.message.clone()));
            }
            self.handle().record_step_finished(&rec)?;
            shared.extend(f.shared);
        }
        self.handle().commit_throttled()?;
        let now = store::now_ms();
        for s in shared {
            self.store
                .put_context(&self.session, &s.key, s.value, s.ttl, now)?;
        }
        Ok(())
    }

    fn finish(
        &mut self,
        status: RunStatus,
        at: u64,
    ) -> Result<(RunRecord, store::Finished), StoreError> {
        let handle = self.handle.take().expect("finished once");
        let mut history: Vec<HistoryEntry> = std::mem::take(&mut self.errors)
            .into_iter()
            .map(|(step, message)| HistoryEntry {
                at_ms: at,
                kind: HistoryKind::Error,
                run_id: Some(self.run_id.clone()),
                name: Some(step),
                message: Some(message),
                data: Value::Null,
            })
            .collect();
        history.push(HistoryEntry {
            at_ms: at,
            kind: HistoryKind::Run,
            run_id: Some(self.run_id.clone()),
            name: Some(self.workflow.clone()),
            message: None,
            data: json!({"status": status.as_str()}),
        });
        handle.finish_deferred(status, at, &history)
    }

    /// History is a convenience: failing to write it is logged, not fatal.
    fn history(&self, kind: HistoryKind, message: Option<String>, data: Value) {
        let entry = HistoryEntry {
            at_ms: store::now_ms(),
            kind,
            run_id: Some(self.run_id.clone()),
            name: Some(self.workflow.clone()),
            message,
            data,
        };
        if let Err(e) = self.store.record_history(&self.session, &entry) {
            tracing::warn!(run = %self.run_id, error = %e, "could not write the session's history");
        }
    }
}

/// The store's record of a finished step.
fn step_record(f: &FinishedStep) -> StepRecord {
    let r = &f.report;
    StepRecord {
        id: f.id.clone(),
        status: match r.status {
            ReportStatus::Pending => StepStatus::Pending,
            ReportStatus::Running => StepStatus::Running,
            ReportStatus::Succeeded => StepStatus::Succeeded,
            ReportStatus::Failed => StepStatus::Failed,
            ReportStatus::Skipped => StepStatus::Skipped,
            ReportStatus::Cancelled => StepStatus::Cancelled,
        },
        attempts: r.attempts,
        started_at_ms: f.started_at_ms,
        finished_at_ms: Some(f.finished_at_ms),
        duration_ms: Some(r.duration_ms),
        outputs: r.outputs.clone(),
        error: r.error.as_ref().map(|e| StepError {
            class: e.class.as_str().to_owned(),
            code: e.code.clone(),
            message: e.message.clone(),
            details: e.details.clone(),
        }),
        routing: r
            .routing
            .iter()
            .map(|x| serde_json::to_value(x).unwrap_or(Value::Null))
            .collect(),
        recovery_for: None,
        skipped_reason: r.skipped_reason.map(|s| s.as_str().to_owned()),
        tolerated: r.tolerated,
        finally: f.finally,
    }
}

/// The store's record of a finished `for_each` instance.
fn instance_record(f: FinishedInstance) -> InstanceRecord {
    InstanceRecord {
        step: f.step,
        index: f.index,
        items_hash: f.items_hash,
        status: match f.status {
            ReportStatus::Succeeded => StepStatus::Succeeded,
            _ => StepStatus::Failed,
        },
        attempts: f.attempts,
        finished_at_ms: Some(f.finished_at_ms),
        outputs: f.outputs,
        error: f.error.map(|e| StepError {
            class: e.class.as_str().to_owned(),
            code: e.code,
            message: e.message,
            details: e.details,
        }),
    }
}

/// The engine's record of a stored `for_each` instance, for a resume.
pub(crate) fn prior_instance(rec: InstanceRecord) -> (String, PriorInstance) {
    let status = match rec.status {
        StepStatus::Succeeded => ReportStatus::Succeeded,
        _ => ReportStatus::Failed,
    };
    let prior = PriorInstance {
        index: rec.index,
        items_hash: rec.items_hash,
        status,
        attempts: rec.attempts,
        outputs: rec.outputs,
    };
    (rec.step, prior)
}

/// The engine's record of a stored step, for a resume.
pub(crate) fn prior_report(rec: &StepRecord) -> Option<crate::report::StepReport> {
    use crate::report::SkipReason;
    let status = match rec.status {
        StepStatus::Succeeded => ReportStatus::Succeeded,
        StepStatus::Skipped => ReportStatus::Skipped,
        StepStatus::Failed => ReportStatus::Failed,
        StepStatus::Cancelled => ReportStatus::Cancelled,
        StepStatus::Pending | StepStatus::Running | StepStatus::Interrupted => return None,
    };
    let skipped_reason = rec.skipped_reason.as_deref().map(|r| match r {
        "needs_failed" => SkipReason::NeedsFailed,
        "needs_skipped" => SkipReason::NeedsSkipped,
        "no_failure" => SkipReason::NoFailure,
        "fail_fast" => SkipReason::FailFast,
        _ => SkipReason::If,
    });
    Some(crate::report::StepReport {
        status,
        attempts: rec.attempts,
        duration_ms: rec.duration_ms.unwrap_or(0),
        outputs: rec.outputs.clone(),
        error: rec.error.as_ref().map(|e| ToolError {
            class: ErrorClass::ALL
                .into_iter()
                .find(|c| c.as_str() == e.class)
                .unwrap_or(ErrorClass::ToolError),
            code: e.code.clone(),
            message: e.message.clone(),
            details: e.details.clone(),
        }),
        tolerated: rec.tolerated,
        routing: rec
            .routing
            .iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect(),
        skipped_reason,
    })
}

/// `share_context` over the store: entries go to the run's session, redacted.
pub(crate) struct StoreContext {
    pub(crate) store: Store,
    pub(crate) session: String,
    pub(crate) redactor: Redactor,
}

impl ContextSink for StoreContext {
    fn put(&self, key: String, mut value: Value, ttl: Option<Duration>) -> ContextFuture {
        self.redactor.value(&mut value);
        let store = self.store.clone();
        let session = self.session.clone();
        Box::pin(async move {
            let result = tokio::task::spawn_blocking(move || {
                store.put_context(&session, &key, value, ttl, store::now_ms())
            })
            .await;
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ToolError::new(
                    ErrorClass::ToolError,
                    format!("could not store the context entry: {e}"),
                )),
                Err(e) => Err(ToolError::new(ErrorClass::ToolError, e.to_string())),
            }
        })
    }
}
