//! Runs started over MCP: starting them through the [`Runner`], waiting for their reports,
//! progress notifications from their events, cancellation from the client, and the
//! shutdown that cancels what is left when the server stops.
//!
//! Every run this server starts is tracked until its report is in, whether a call waits
//! for it or not (`wait: false`), so that shutdown can cancel it and wait for its `finally`
//! steps: no process outlives the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::Peer;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Workflow;
use crate::engine::{Event, EventKind};
use crate::report::RunReport;
use crate::runner::{RunRequest, Runner, RunnerError, StartedRun};
use crate::sync::lock;

/// The report of a run, or why there is none (its task panicked or was aborted).
pub(crate) type Outcome = Result<Arc<RunReport>, String>;

/// The runs this server started and that have not ended, by id.
pub(crate) struct ActiveRuns {
    runs: Arc<Mutex<HashMap<String, Active>>>,
    /// Starting a run visits the store's shared index a few times under its file lock;
    /// concurrent starts from this process would only take turns at that lock by polling
    /// it (and, fifty at once, time out), so they queue here instead.
    starting: tokio::sync::Semaphore,
}

impl Default for ActiveRuns {
    fn default() -> ActiveRuns {
        ActiveRuns {
            runs: Arc::default(),
            starting: tokio::sync::Semaphore::new(1),
        }
    }
}

/// Why a run did not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The runner refused it (the store failed, the inputs do not fit).
    Runner(RunnerError),
    /// Starting it panicked.
    Internal(String),
}

struct Active {
    cancel: CancellationToken,
    done: watch::Receiver<Option<Outcome>>,
}

/// Where progress notifications for a run go.
pub(crate) struct ProgressSink {
    pub(crate) peer: Peer<RoleServer>,
    pub(crate) token: ProgressToken,
}

/// A run that was started: its ids, its cancel token and a way to wait for it.
pub(crate) struct Running {
    pub(crate) run_id: String,
    pub(crate) session_id: String,
    pub(crate) cancel: CancellationToken,
    done: watch::Receiver<Option<Outcome>>,
    progress: Option<tokio::task::JoinHandle<()>>,
}

/// What [`ActiveRuns::shutdown`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Runs that were still going and were cancelled.
    pub cancelled: usize,
    /// Runs that had not ended when the grace period was over.
    pub unfinished: usize,
}

impl ActiveRuns {
    /// Start a run (the store work happens on a blocking thread) and track it.
    pub(crate) async fn start(
        &self,
        runner: &Arc<Runner>,
        workflow: Arc<Workflow>,
        inputs: Map<String, Value>,
        session_id: Option<String>,
        progress: Option<ProgressSink>,
    ) -> Result<Running, StartError> {
        let (events, forward) = match progress {
            Some(sink) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some(tokio::spawn(forward_progress(rx, sink))))
            }
            None => (None, None),
        };
        let req = RunRequest {
            workflow,
            inputs,
            session_id,
            labels: vec!["via=mcp".to_owned()],
            max_parallel: None,
            events,
        };
        let runner = Arc::clone(runner);
        let permit = self.starting.acquire().await;
        let started = tokio::task::spawn_blocking(move || runner.start(req)).await;
        drop(permit);
        let started: StartedRun = match started {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => return Err(StartError::Runner(e)),
            Err(e) => {
                return Err(StartError::Internal(format!(
                    "the run could not be started: {e}"
                )));
            }
        };
        let (tx, done) = watch::channel(None);
        let StartedRun {
            run_id,
            session_id,
            cancel,
            report,
        } = started;
        lock(&self.runs).insert(
            run_id.clone(),
            Active {
                cancel: cancel.clone(),
                done: done.clone(),
            },
        );
        let id = run_id.clone();
        let runs = Arc::clone(&self.runs);
        tokio::spawn(async move {
            let outcome = match report.await {
                Ok(r) => Ok(Arc::new(r)),
                Err(e) if e.is_panic() => Err(format!("the run {id} panicked")),
                Err(e) => Err(format!("the run {id} was aborted: {e}")),
            };
            lock(&runs).remove(&id);
            let _ = tx.send(Some(outcome));
        });
        Ok(Running {
            run_id,
            session_id,
            cancel,
            done,
            progress: forward,
        })
    }

    /// Cancel every run still going and wait up to `grace` for them to end.
    pub(crate) async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let runs: Vec<(String, Active)> = lock(&self.runs).drain().collect();
        let mut report = ShutdownReport::default();
        let deadline = tokio::time::Instant::now() + grace;
        for (_, a) in &runs {
            if a.done.borrow().is_none() {
                a.cancel.cancel();
                report.cancelled += 1;
            }
        }
        for (id, mut a) in runs {
            let ended = tokio::time::timeout_at(deadline, a.done.wait_for(Option::is_some)).await;
            if !matches!(ended, Ok(Ok(_))) {
                tracing::warn!(run = %id, "the run did not end before the server stopped");
                report.unfinished += 1;
            }
        }
        report
    }
}

impl Running {
    /// Wait for the run's report. When `cancelled` fires first (the client cancelled the
    /// request, or went away), the run is cancelled and this still waits for it to end:
    /// its `finally` steps run and its processes are gone when this returns.
    pub(crate) async fn wait(mut self, cancelled: &CancellationToken) -> Outcome {
        // A dropped call (its task aborted) must not leave the run going.
        let guard = self.cancel.clone().drop_guard();
        tokio::select! {
            r = self.done.wait_for(Option::is_some) => { let _ = r; }
            _ = cancelled.cancelled() => {
                tracing::info!(run = %self.run_id, "the client cancelled the request: cancelling the run");
                self.cancel.cancel();
            }
        }
        let outcome = match self.done.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(|| Err("no report".to_owned())),
            Err(_) => Err(format!("the run {} ended without a report", self.run_id)),
        };
        guard.disarm();
        // Every progress notification goes out before the result.
        if let Some(forward) = self.progress.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), forward).await;
        }
        outcome
    }
}

/// Send a progress notification per finished (or skipped) step: `progress` counts them,
/// `total` is the number of steps (`steps` and `finally`).
async fn forward_progress(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>, sink: ProgressSink) {
    let mut total: Option<f64> = None;
    let mut done = 0u64;
    while let Some(e) = rx.recv().await {
        let message = match &e.kind {
            EventKind::RunStarted { steps, .. } => {
                total = Some(*steps as f64);
                continue;
            }
            EventKind::StepFinished { step, status, .. } => format!("{step} {status}"),
            EventKind::StepSkipped { step, reason } => format!("{step} skipped ({reason})"),
            EventKind::RunFinished { .. } => break,
            _ => continue,
        };
        done += 1;
        let mut param = ProgressNotificationParam::new(sink.token.clone(), done as f64);
        param.total = total;
        param.message = Some(message);
        if let Err(err) = sink.peer.notify_progress(param).await {
            tracing::debug!(%err, "a progress notification could not be sent");
        }
    }
}
