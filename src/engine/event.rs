//! The one event type every reporter consumes (terminal, JSON lines, the store, MCP
//! progress). The engine produces events in a single place (its `Emitter`), which stamps them
//! and redacts secrets; consumers only read them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use super::record::Recorder;
use super::redact::Redactor;
use crate::report::{RuleSource, RunStatus, SkipReason, StepStatus};
use crate::tools::ToolError;
use crate::workflow::model::Then;

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, in milliseconds since the Unix epoch.
    pub at: u64,
    /// When it happened, in microseconds since the run started (monotonic).
    pub elapsed_us: u64,
    /// The run it belongs to.
    pub run_id: String,
    /// What happened (serialised flat, tagged by `kind`).
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Serialised with a `kind` tag in snake_case (`step_started`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The run started: always the first event.
    RunStarted {
        /// The workflow's `name`.
        workflow: String,
        /// How many steps the run has (`steps` and `finally`).
        steps: usize,
    },
    /// An attempt of a step (or of one `for_each` instance) started.
    StepStarted {
        /// The step's id.
        step: String,
        /// The `for_each` instance (from 0), for `for_each` steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<usize>,
        /// The attempt number, from 1 (routed retries count too).
        attempt: u32,
    },
    /// A line the step's tool printed.
    StepOutput {
        /// The step's id.
        step: String,
        /// The `for_each` instance, for `for_each` steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<usize>,
        /// `stdout` or `stderr`.
        stream: String,
        /// The line without its newline, secrets redacted.
        line: String,
    },
    /// A resume kept the step's work from the earlier attempt: the whole step (no
    /// `kept_instances`), or `kept_instances` of the `instances` of a `for_each` step that
    /// runs again for the rest. Sent before the step's other events.
    StepKept {
        /// The step's id.
        step: String,
        /// Instances kept, for a `for_each` step that runs again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kept_instances: Option<u64>,
        /// Its instances, with `kept_instances`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instances: Option<u64>,
    },
    /// A resume found that a `for_each` step's items render differently than in the earlier
    /// attempt, so all of its `instances` run again.
    ItemsChanged {
        /// The step's id.
        step: String,
        /// How many instances it has now.
        instances: u64,
    },
    /// A tool reported progress on part of its work (a layer pushed, a file written).
    StepProgress {
        /// The step's id.
        step: String,
        /// The `for_each` instance, for `for_each` steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<usize>,
        /// What is progressing (a layer id, a file).
        id: String,
        /// A short status word.
        status: String,
        /// Done so far, when known.
        current: Option<u64>,
        /// The total, when known.
        total: Option<u64>,
    },
    /// An attempt failed and the retry policy will try again after `delay_ms`.
    StepRetrying {
        /// The step's id.
        step: String,
        /// The `for_each` instance, for `for_each` steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<usize>,
        /// The attempt that failed (from 1); the next one is `attempt + 1`.
        attempt: u32,
        /// The wait before the next attempt, jitter included, in milliseconds.
        delay_ms: u64,
        /// Why the attempt failed.
        error: ToolError,
    },
    /// A failure-routing rule fired for a failed step (after its retries).
    StepRouted {
        /// The step's id.
        step: String,
        /// The `for_each` instance, for `for_each` steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<usize>,
        /// The rule (`on_failure[N]` or `TOOL.default_rules[N]`).
        rule: String,
        /// Whether it is the workflow's rule or the tool's.
        source: RuleSource,
        /// The recovery tool it runs, if any.
        tool: Option<String>,
        /// What happens after the recovery step.
        then: Then,
    },
    /// A rule's recovery tool started.
    RecoveryStarted {
        /// The failed step's id.
        step: String,
        /// The `for_each` instance, for `for_each` steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<usize>,
        /// The rule that fired.
        rule: String,
        /// The recovery tool.
        tool: String,
    },
    /// A rule's recovery tool finished.
    RecoveryFinished {
        /// The failed step's id.
        step: String,
        /// The `for_each` instance, for `for_each` steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<usize>,
        /// The rule that fired.
        rule: String,
        /// The recovery tool.
        tool: String,
        /// `succeeded` or `failed`.
        status: StepStatus,
        /// How long it ran, in milliseconds.
        duration_ms: u64,
        /// Its error, when it failed (the step then fails for good).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ToolError>,
    },
    /// A step will not run.
    StepSkipped {
        /// The step's id.
        step: String,
        /// Why.
        reason: SkipReason,
    },
    /// A step finished: succeeded, failed or cancelled (skipped steps get [`StepSkipped`]
    /// instead).
    ///
    /// [`StepSkipped`]: EventKind::StepSkipped
    StepFinished {
        /// The step's id.
        step: String,
        /// `succeeded`, `failed` or `cancelled`.
        status: StepStatus,
        /// Tool calls made (for `for_each`, the most any instance made).
        attempts: u32,
        /// From its first attempt's start to now, in milliseconds.
        duration_ms: u64,
        /// Its outputs (`null` unless it succeeded; a list for `for_each`).
        outputs: Value,
        /// Its failure, when it failed.
        error: Option<ToolError>,
        /// A failure that counts as success (`continue_on_error`, or a rule's
        /// `then: continue`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tolerated: bool,
    },
    /// The run finished: always the last event.
    RunFinished {
        /// `succeeded`, `failed` or `cancelled`.
        status: RunStatus,
        /// Wall time of the whole run, in milliseconds.
        duration_ms: u64,
    },
}

impl EventKind {
    /// The step an event is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            EventKind::RunStarted { .. } | EventKind::RunFinished { .. } => None,
            EventKind::StepStarted { step, .. }
            | EventKind::StepOutput { step, .. }
            | EventKind::StepProgress { step, .. }
            | EventKind::StepKept { step, .. }
            | EventKind::ItemsChanged { step, .. }
            | EventKind::StepRetrying { step, .. }
            | EventKind::StepRouted { step, .. }
            | EventKind::RecoveryStarted { step, .. }
            | EventKind::RecoveryFinished { step, .. }
            | EventKind::StepSkipped { step, .. }
            | EventKind::StepFinished { step, .. } => Some(step),
        }
    }

    /// Replace every secret in the event's text and values with `***`.
    fn redact(&mut self, r: &Redactor) {
        match self {
            EventKind::RunStarted { .. }
            | EventKind::RunFinished { .. }
            | EventKind::StepStarted { .. }
            | EventKind::StepSkipped { .. }
            | EventKind::StepKept { .. }
            | EventKind::ItemsChanged { .. }
            | EventKind::StepRouted { .. }
            | EventKind::RecoveryStarted { .. } => {}
            EventKind::StepOutput { line, .. } => r.string(line),
            EventKind::StepProgress { id, status, .. } => {
                r.string(id);
                r.string(status);
            }
            EventKind::StepRetrying { error, .. } => r.error(error),
            EventKind::RecoveryFinished { error, .. } => {
                if let Some(e) = error {
                    r.error(e);
                }
            }
            EventKind::StepFinished { outputs, error, .. } => {
                r.value(outputs);
                if let Some(e) = error {
                    r.error(e);
                }
            }
        }
    }
}

/// The single place events are produced: stamps them with the time and the run id,
/// redacts secrets, and sends them to the caller's channel. Cheap to clone (tools' progress
/// callbacks hold one). A closed channel is not an error: the caller stopped listening.
///
/// In a recorded run a step's finish is reported only once it is durable, while the run
/// goes on (its dependents start at once): [`Emitter::emit_finish`] queues the finish, and
/// every event after it waits behind it, until [`Emitter::durable`] says its commit
/// returned. So the caller sees events in the order they happened, never a finish that a
/// crash could take back, and never a dependent's start before its needs' finishes.
#[derive(Clone)]
pub(crate) struct Emitter {
    inner: Arc<EmitterInner>,
}

struct EmitterInner {
    tx: UnboundedSender<Event>,
    /// The run's recorder sees every event too (before the caller's channel).
    recorder: Option<Arc<dyn Recorder>>,
    run_id: String,
    start: Instant,
    start_unix_us: u64,
    redactor: Redactor,
    held: Mutex<Held>,
}

/// Events waiting for a finish before them to become durable.
#[derive(Default)]
struct Held {
    /// In order; `Some(n)` marks the finish numbered `n`.
    queue: VecDeque<(Option<u64>, Event)>,
    /// The number the next finish gets.
    next: u64,
    /// Finishes numbered below this are durable.
    durable: u64,
}

impl Emitter {
    pub(crate) fn new(
        tx: UnboundedSender<Event>,
        recorder: Option<Arc<dyn Recorder>>,
        run_id: String,
        redactor: Redactor,
    ) -> Emitter {
        let start_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Emitter {
            inner: Arc::new(EmitterInner {
                tx,
                recorder,
                run_id,
                start: Instant::now(),
                start_unix_us,
                redactor,
                held: Mutex::new(Held::default()),
            }),
        }
    }

    /// The run's start (for durations).
    pub(crate) fn start(&self) -> Instant {
        self.inner.start
    }

    pub(crate) fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// An instant of this run as milliseconds since the Unix epoch.
    pub(crate) fn unix_ms(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.inner.start).as_micros() as u64;
        (self.inner.start_unix_us + since) / 1000
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        self.produce(kind, false);
    }

    /// Emit a step's finish (`StepFinished` or `StepSkipped`) that is not durable yet: the
    /// caller hears of it, and of every event after it, once [`Emitter::durable`] passes the
    /// number returned.
    pub(crate) fn emit_finish(&self, kind: EventKind) -> u64 {
        self.produce(kind, true)
            .expect("a finish is always numbered")
    }

    /// The finishes numbered below `upto` are durable: send what waited for them.
    pub(crate) fn durable(&self, upto: u64) {
        let inner = &*self.inner;
        let mut held = crate::sync::lock(&inner.held);
        held.durable = held.durable.max(upto);
        while let Some((n, _)) = held.queue.front() {
            if n.is_some_and(|n| n >= held.durable) {
                break;
            }
            let (_, event) = held.queue.pop_front().expect("not empty");
            let _ = inner.tx.send(event);
        }
    }

    fn produce(&self, mut kind: EventKind, finish: bool) -> Option<u64> {
        let inner = &*self.inner;
        let closed = inner.tx.is_closed();
        if closed && inner.recorder.is_none() && !finish {
            return None;
        }
        kind.redact(&inner.redactor);
        let elapsed_us = inner.start.elapsed().as_micros() as u64;
        let event = Event {
            at: (inner.start_unix_us + elapsed_us) / 1000,
            elapsed_us,
            run_id: inner.run_id.clone(),
            kind,
        };
        match &inner.recorder {
            Some(r) => r.event(&event),
            // A run nobody records never holds anything back (only finishes waiting for
            // their commit are).
            None if !finish => {
                if !closed {
                    let _ = inner.tx.send(event);
                }
                return None;
            }
            None => {}
        }
        let mut held = crate::sync::lock(&inner.held);
        let number = finish.then(|| {
            held.next += 1;
            held.next - 1
        });
        if closed {
            return number;
        }
        if number.is_some() || !held.queue.is_empty() {
            held.queue.push_back((number, event));
        } else {
            let _ = inner.tx.send(event);
        }
        number
    }
}
