//! Test helpers: a [`Case`] builder that runs a workflow through the library the way a user
//! of ckflow would (check, resolve inputs, plan, run) in a fresh project folder, and an
//! [`Outcome`] with the report and every event, plus small readers over them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ckflow::engine::{EventKind, RunOptions, StepReport};
use ckflow::{Engine, Event, Plan, RunReport, Tool, ToolRegistry, Workflow};
use indexmap::IndexMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One workflow run to make.
pub struct Case {
    yaml: String,
    inputs: IndexMap<String, Value>,
    registry: ToolRegistry,
    max_parallel: Option<usize>,
    cancel_after: Option<Duration>,
    cancel_finally_after: Option<Duration>,
    dir: tempfile::TempDir,
}

impl Case {
    /// A workflow (YAML text) to run in a fresh, empty project folder.
    pub fn new(yaml: &str) -> Case {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir_all(dir.path().join(".ckflow")).expect("the state folder");
        Case {
            yaml: yaml.to_owned(),
            inputs: IndexMap::new(),
            registry: ToolRegistry::builtin(),
            max_parallel: None,
            cancel_after: None,
            cancel_finally_after: None,
            dir,
        }
    }

    /// An input value (as `-i k=v` would give it, or typed).
    pub fn input(mut self, k: &str, v: impl Into<Value>) -> Case {
        self.inputs.insert(k.to_owned(), v.into());
        self
    }

    /// Add a tool to the registry.
    pub fn tool(mut self, t: impl Tool) -> Case {
        self.registry.register(t);
        self
    }

    /// A file in the project folder (`workflows/child.yaml`, …).
    pub fn file(self, rel: &str, text: &str) -> Case {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("folders");
        std::fs::write(p, text).expect("the file");
        self
    }

    /// `--max-parallel`.
    pub fn max_parallel(mut self, n: usize) -> Case {
        self.max_parallel = Some(n);
        self
    }

    /// Fire the run's cancellation token after `d` (Ctrl-C).
    pub fn cancel_after(mut self, d: Duration) -> Case {
        self.cancel_after = Some(d);
        self
    }

    /// Fire the `finally` cancellation token after `d` (a second Ctrl-C).
    pub fn cancel_finally_after(mut self, d: Duration) -> Case {
        self.cancel_finally_after = Some(d);
        self
    }

    /// The project folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Check, plan and run; panics if the workflow or the inputs are invalid.
    pub fn run(self) -> Outcome {
        let registry = Arc::new(self.registry);
        let wf = match Workflow::from_str_with("case.yaml", &self.yaml, &registry) {
            Ok(w) => w,
            Err(d) => panic!("the test workflow is invalid: {:#?}", d.0),
        };
        let inputs = match wf.resolve_inputs(&self.inputs) {
            Ok(i) => i,
            Err(d) => panic!("the test inputs are invalid: {:#?}", d.0),
        };
        let plan = Arc::new(Plan::new(Arc::new(wf), &registry));
        let cancel = CancellationToken::new();
        let finally_cancel = CancellationToken::new();
        let opts = RunOptions {
            inputs,
            max_parallel: self.max_parallel,
            project_dir: self.dir.path().to_path_buf(),
            workspace: self.dir.path().join(".ckflow"),
            cancel: cancel.clone(),
            finally_cancel: finally_cancel.clone(),
            ..RunOptions::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("a runtime");
        let (cancel_after, cancel_finally_after) = (self.cancel_after, self.cancel_finally_after);
        let (report, events) = rt.block_on(async move {
            if let Some(d) = cancel_after {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    cancel.cancel();
                });
            }
            if let Some(d) = cancel_finally_after {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    finally_cancel.cancel();
                });
            }
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let report = Engine::new(registry).run(plan, opts, tx).await;
            let mut events = Vec::new();
            while let Ok(e) = rx.try_recv() {
                events.push(e);
            }
            (report, events)
        });
        Outcome {
            report,
            events,
            dir: self.dir,
        }
    }
}

/// What a run left: the report, the events, and the project folder.
pub struct Outcome {
    pub report: RunReport,
    pub events: Vec<Event>,
    pub dir: tempfile::TempDir,
}

impl Outcome {
    /// The run's status (`succeeded`, …).
    pub fn status(&self) -> &'static str {
        self.report.status.as_str()
    }

    /// A step's record.
    pub fn step(&self, id: &str) -> &StepReport {
        self.report
            .steps
            .get(id)
            .unwrap_or_else(|| panic!("no step `{id}` in the report"))
    }

    /// A step's status.
    pub fn step_status(&self, id: &str) -> &'static str {
        self.step(id).status.as_str()
    }

    /// A step's skip reason.
    pub fn skipped_reason(&self, id: &str) -> Option<&'static str> {
        self.step(id).skipped_reason.map(|r| r.as_str())
    }

    /// A path in the project folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Every event about `step`.
    pub fn events_of(&self, step: &str) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| e.kind.step() == Some(step))
            .collect()
    }

    /// Microseconds since the run started at which each attempt of `step` started.
    pub fn starts(&self, step: &str) -> Vec<u64> {
        self.events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::StepStarted { step: s, .. } if s == step))
            .map(|e| e.elapsed_us)
            .collect()
    }

    /// When `step` first started (µs since the run started).
    pub fn started(&self, step: &str) -> u64 {
        *self
            .starts(step)
            .first()
            .unwrap_or_else(|| panic!("`{step}` never started"))
    }

    /// When `step` finished or was skipped (µs since the run started).
    pub fn finished(&self, step: &str) -> u64 {
        self.events
            .iter()
            .find(|e| {
                matches!(&e.kind, EventKind::StepFinished { step: s, .. } | EventKind::StepSkipped { step: s, .. } if s == step)
            })
            .unwrap_or_else(|| panic!("`{step}` never finished"))
            .elapsed_us
    }

    /// The events as JSON lines (what `--events` writes).
    pub fn events_json(&self) -> String {
        self.events
            .iter()
            .map(|e| serde_json::to_string(e).expect("events serialise"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The `kind` of every event, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| {
                serde_json::to_value(e).expect("json")["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }

    /// The text a step's tool printed on stdout (from its output events).
    pub fn output_lines(&self, step: &str) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::StepOutput { step: s, line, .. } if s == step => Some(line.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Read a pid a test script wrote (waiting a little for the file to appear).
pub fn read_pid(path: &Path) -> libc::pid_t {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no pid in {}", path.display());
}

/// Whether a process is still alive (signal 0), waiting up to `within` for it to go; a
/// zombie (dead, not yet reaped by its parent) counts as gone.
pub fn alive_after(pid: libc::pid_t, within: Duration) -> bool {
    let until = std::time::Instant::now() + within;
    loop {
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false);
        if !exists || zombie {
            return false;
        }
        if std::time::Instant::now() >= until {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
