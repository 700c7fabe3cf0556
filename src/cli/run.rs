//! `ckflow run FILE|NAME`: load, check and plan a workflow, resolve its inputs, run it
//! through the [`Runner`] (recorded in the state store, in a session; `--no-store` runs the
//! engine alone) on a multi-thread runtime, and report: live progress or plain lines on
//! stderr, JSON lines with `--events`, the report on stdout with `--json`. Ctrl-C and
//! SIGTERM cancel (a second one stops `finally` too). Exit 0 ok, 1 failed, 2 invalid,
//! 130 cancelled. [`drive`] is shared with `ckflow resume`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use tokio::sync::mpsc::UnboundedSender;

use super::{color_stderr, exit, render};
use crate::engine::{Event, EventKind, Redactor, RunOptions};
use crate::report::json_lines::JsonLines;
use crate::report::terminal::Terminal;
use crate::runner::{RunRequest, Runner, RunnerError, StartedRun};
use crate::store::{self, Store};
use crate::workflow::catalog::{self, Found};
use crate::{Engine, Plan, RunReport, ToolRegistry};

/// Arguments of `ckflow run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A workflow file, or the NAME of one in the project's `workflows/` (no `/`, no
    /// extension).
    #[arg(value_name = "FILE|NAME")]
    pub workflow: String,
    /// An input, `KEY=VALUE` (repeatable); text becomes the declared type (`replicas=3` is
    /// an integer, arrays and objects are JSON).
    #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// A YAML or JSON mapping of inputs; `-i` values win over it.
    #[arg(long, value_name = "FILE")]
    pub inputs_file: Option<PathBuf>,
    /// At most N steps at once (the smaller of this and the workflow's `concurrency`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,
    /// `--json` and `--events`.
    #[command(flatten)]
    pub reporting: Reporting,
    /// Check the workflow and the inputs and print the plan; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The session the run belongs to (its workspace and shared context); default
    /// `default`, one per project.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// A label for the session, `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Do not record the run in the state store: no `ckflow runs`, `logs`, `resume` or
    /// shared context for it.
    #[arg(long)]
    pub no_store: bool,
}

/// Run it. `state_dir` is the global `--state-dir`.
pub fn run(a: Args, state_dir: Option<PathBuf>) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let project = project_dir(&cwd);
    let registry = Arc::new(ToolRegistry::builtin());
    let Some(workflow) = super::load_target(&a.workflow, &project, &registry) else {
        return exit::INVALID;
    };
    let given = match given_inputs(&a.inputs_file, &a.inputs) {
        Ok(g) => g,
        Err(msg) => {
            eprintln!("error: {msg}");
            return exit::INVALID;
        }
    };
    let inputs = match workflow.resolve_inputs(&given) {
        Ok(i) => i,
        Err(d) => {
            eprint!("{}", render::diagnostics(&d.0, color_stderr()));
            eprintln!("error: the inputs do not fit `{}`", workflow.doc.name);
            return exit::INVALID;
        }
    };
    let redactor = Redactor::new(workflow.secret_values(&inputs));
    let workflow = Arc::new(workflow);
    if a.dry_run {
        let plan = Plan::new(Arc::clone(&workflow), &registry);
        return dry_run(&plan, &inputs, &redactor, a.reporting.json);
    }
    let reporting = &a.reporting;
    let state = state_dir.unwrap_or_else(|| Store::default_dir(&project));
    if a.no_store {
        return run_unrecorded(registry, workflow, inputs, &a, project, &state, reporting);
    }
    let Some(store) = open_store(&state) else {
        return exit::FAILED;
    };
    let runner = Arc::new(Runner::with_store(registry, project, store).with_sweep_on_start(true));
    let request = RunRequest {
        workflow,
        inputs,
        session_id: Some(
            a.session
                .clone()
                .unwrap_or_else(|| store::DEFAULT_SESSION.to_owned()),
        ),
        labels: a.labels.clone(),
        max_parallel: a.max_parallel.map(|n| n as usize),
        events: None,
    };
    drive(reporting, |events| {
        let started = runner.start(RunRequest { events, ..request })?;
        Ok(Driven::from_runner(&runner, started))
    })
}

/// Open the state store for a command; on failure print why.
pub(crate) fn open_store(dir: &Path) -> Option<Store> {
    match Store::open(dir) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// `--no-store`: the engine alone, as a library user would run it.
fn run_unrecorded(
    registry: Arc<ToolRegistry>,
    workflow: Arc<crate::Workflow>,
    inputs: serde_json::Map<String, Value>,
    a: &Args,
    project: PathBuf,
    state: &Path,
    reporting: &Reporting,
) -> i32 {
    let workspace = state.join("workspace");
    if let Err(e) = std::fs::create_dir_all(&workspace) {
        eprintln!(
            "error: cannot create the workspace {}: {e}",
            workspace.display()
        );
        return exit::FAILED;
    }
    let plan = Arc::new(Plan::new(workflow, &registry));
    let max_parallel = a.max_parallel.map(|n| n as usize);
    drive(reporting, move |events| {
        let cancel = CancellationToken::new();
        let finally_cancel = CancellationToken::new();
        let opts = RunOptions {
            inputs,
            max_parallel,
            project_dir: project,
            workspace,
            cancel: cancel.clone(),
            finally_cancel: finally_cancel.clone(),
            ..RunOptions::default()
        };
        let events = events.unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().0);
        let report =
            tokio::spawn(async move { Engine::new(registry).run(plan, opts, events).await });
        Ok(Driven {
            report,
            cancel: Arc::new(move || {
                if cancel.is_cancelled() {
                    finally_cancel.cancel();
                }
                cancel.cancel();
            }),
        })
    })
}

/// How a command reports a run it drives (`run`, `resume`).
#[derive(Debug, Clone, clap::Args)]
pub struct Reporting {
    /// Print only the run report (JSON) on stdout; stderr gets nothing but errors.
    #[arg(long)]
    pub json: bool,
    /// Write every event as a JSON line to FILE (`-`: stdout).
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<String>,
}

/// A run going on, as [`drive`] needs it.
pub(crate) struct Driven {
    /// Its report, at the end.
    pub report: tokio::task::JoinHandle<RunReport>,
    /// Called on each Ctrl-C / SIGTERM (the second stops `finally` too).
    pub cancel: Arc<dyn Fn() + Send + Sync>,
}

impl Driven {
    /// A run started by the runner.
    pub(crate) fn from_runner(runner: &Arc<Runner>, started: StartedRun) -> Driven {
        let runner = Arc::clone(runner);
        let id = started.run_id;
        Driven {
            report: started.report,
            cancel: Arc::new(move || {
                let _ = runner.cancel(&id);
            }),
        }
    }
}

/// Start a run on a fresh runtime and report it: live progress or plain lines on stderr,
/// JSON lines with `--events`, the report with `--json`; Ctrl-C and SIGTERM cancel. `start`
/// gets the events channel (`None` when nobody reads events) and runs inside the runtime.
/// Returns the exit code.
pub(crate) fn drive(
    reporting: &Reporting,
    start: impl FnOnce(Option<UnboundedSender<Event>>) -> Result<Driven, RunnerError>,
) -> i32 {
    let events_out: Option<Box<dyn Write + Send>> = match reporting.events.as_deref() {
        None => None,
        Some("-") => Some(Box::new(std::io::stdout())),
        Some(file) => match std::fs::File::create(file) {
            Ok(f) => Some(Box::new(f)),
            Err(e) => {
                eprintln!("error: cannot write the events to {file}: {e}");
                return exit::INVALID;
            }
        },
    };
    let Some(runtime) = super::runtime() else {
        return exit::FAILED;
    };
    let terminal = (!reporting.json)
        .then(|| Terminal::stderr(std::io::stderr().is_terminal(), color_stderr()));
    let quiet = reporting.json;
    let outcome = runtime.block_on(execute(start, terminal, events_out, quiet));
    runtime.shutdown_timeout(Duration::from_millis(200));
    let report = match outcome {
        Ok(Some(report)) => report,
        Ok(None) => return exit::FAILED,
        Err(e) => return runner_error(e),
    };
    if reporting.json {
        stdout(format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ));
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
    }
    report.exit_code()
}

/// Print why the runner refused, and the exit code for it.
pub(crate) fn runner_error(e: RunnerError) -> i32 {
    match e {
        RunnerError::Invalid(d) => {
            eprint!("{}", render::diagnostics(&d.0, color_stderr()));
            exit::INVALID
        }
        // A bad id, an unknown session: the request is wrong, the store is fine.
        RunnerError::Store(ref s) if !s.is_critical() => {
            eprintln!("error: {e}");
            exit::INVALID
        }
        RunnerError::NotFound(_) | RunnerError::Running(_) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
        RunnerError::Store(_) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

/// Print to stdout; a closed pipe (`| head`) is not worth a panic.
pub(crate) fn stdout(text: String) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Run on the runtime: signals, the run, and the reporters on a blocking thread.
async fn execute(
    start: impl FnOnce(Option<UnboundedSender<Event>>) -> Result<Driven, RunnerError>,
    terminal: Option<Terminal>,
    events_out: Option<Box<dyn Write + Send>>,
    quiet: bool,
) -> Result<Option<RunReport>, RunnerError> {
    // Register the handlers before any step starts: from here on Ctrl-C is ours.
    let signals = Signals::register();
    if terminal.is_none() && events_out.is_none() {
        // Nobody reads the events (`--json`): none are even sent.
        let driven = start(None)?;
        let listener = signals.map(|s| s.listen(Arc::clone(&driven.cancel), quiet));
        let report = join(driven.report).await;
        if let Some(l) = listener {
            l.abort();
        }
        return Ok(report);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let driven = start(Some(tx))?;
    let listener = signals.map(|s| s.listen(Arc::clone(&driven.cancel), quiet));
    let reporter = tokio::task::spawn_blocking(move || {
        let mut sinks = Sinks {
            terminal,
            events: events_out.map(JsonLines::new),
            error: None,
        };
        'run: while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            loop {
                while let Some(e) = next.take().or_else(|| rx.try_recv().ok()) {
                    if sinks.take(&e) {
                        break 'run;
                    }
                }
                sinks.flush();
                // Let events gather for a moment rather than wake this thread for each one.
                std::thread::sleep(Duration::from_millis(10));
                match rx.try_recv() {
                    Ok(e) => next = Some(e),
                    Err(_) => break,
                }
            }
        }
        sinks.flush();
        (sinks.terminal, sinks.error)
    });

    let report = join(driven.report).await;
    if let Some(l) = listener {
        l.abort();
    }
    let Some(report) = report else {
        return Ok(None);
    };
    let (terminal, sink_error) = match reporter.await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the reporter stopped: {e}");
            return Ok(None);
        }
    };
    if let Some(e) = sink_error {
        eprintln!("error: writing the events failed: {e}");
    }
    if let Some(mut t) = terminal {
        t.finish(&report);
    }
    Ok(Some(report))
}

/// The run's report; a panic in the engine goes on panicking here.
async fn join(report: tokio::task::JoinHandle<RunReport>) -> Option<RunReport> {
    match report.await {
        Ok(r) => Some(r),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => {
            eprintln!("error: the run stopped: {e}");
            None
        }
    }
}

/// Where the events of a run go in the CLI.
struct Sinks {
    terminal: Option<Terminal>,
    events: Option<JsonLines<Box<dyn Write + Send>>>,
    /// The first error writing the events.
    error: Option<std::io::Error>,
}

impl Sinks {
    /// Take one event; true for the last one.
    fn take(&mut self, e: &Event) -> bool {
        if let Some(t) = &mut self.terminal {
            t.event(e);
        }
        if let Some(s) = &mut self.events
            && let Err(err) = s.event(e)
        {
            self.error.get_or_insert(err);
        }
        matches!(e.kind, EventKind::RunFinished { .. })
    }

    fn flush(&mut self) {
        if let Some(t) = &mut self.terminal {
            t.flush();
        }
        if let Some(s) = &mut self.events
            && let Err(err) = s.flush()
        {
            self.error.get_or_insert(err);
        }
    }
}

/// SIGINT and SIGTERM, registered before a run starts.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => Some(Signals { int, term }),
            _ => {
                eprintln!(
                    "error: cannot listen for Ctrl-C; it will stop ckflow without running `finally`"
                );
                None
            }
        }
    }

    /// The first signal cancels the run, the second stops `finally` too (`cancel` is called
    /// once per signal).
    fn listen(
        mut self,
        cancel: Arc<dyn Fn() + Send + Sync>,
        quiet: bool,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
            cancel();
            if !quiet {
                eprintln!(
                    "cancelling: no new steps start, running steps are stopped, `finally` runs (again to stop it too)"
                );
            }
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
            cancel();
            if !quiet {
                eprintln!("cancelling `finally` too");
            }
        })
    }
}

/// `--dry-run`: the plan and the resolved inputs (secrets masked).
fn dry_run(
    plan: &Plan,
    inputs: &serde_json::Map<String, Value>,
    redactor: &Redactor,
    json: bool,
) -> i32 {
    let mut shown = Value::Object(inputs.clone());
    redactor.value(&mut shown);
    if json {
        let out = serde_json::json!({"plan": plan.to_json(), "inputs": shown});
        stdout(format!(
            "{}\n",
            serde_json::to_string_pretty(&out).unwrap_or_default()
        ));
        return exit::OK;
    }
    let mut text = super::plan::render(plan);
    if let Value::Object(m) = shown
        && !m.is_empty()
    {
        text.push_str("inputs:\n");
        for (k, v) in m {
            text.push_str(&format!("  {k} = {v}\n"));
        }
    }
    stdout(text);
    exit::OK
}

/// The project: the nearest ancestor of `cwd` holding `.git`, `workflows/` or `.ckflow/`,
/// else `cwd` itself.
pub fn project_dir(cwd: &Path) -> PathBuf {
    cwd.ancestors()
        .find(|d| {
            [".git", "workflows", ".ckflow"]
                .iter()
                .any(|m| d.join(m).exists())
        })
        .unwrap_or(cwd)
        .to_path_buf()
}

/// A FILE is used as given; a NAME (no `/`, no extension) is `workflows/NAME.yaml` (or
/// `.yml`, `.json`) of the project, else a workflow shipped in the binary
/// ([`crate::workflow::catalog`]).
pub fn resolve_workflow(arg: &str, project: &Path) -> Result<Found, String> {
    let is_file = arg.contains('/') || [".yaml", ".yml", ".json"].iter().any(|e| arg.ends_with(e));
    if is_file {
        return Ok(Found::File(PathBuf::from(arg)));
    }
    match catalog::resolve(project, arg) {
        Ok(found) => Ok(found),
        Err(_) if Path::new(arg).is_file() => Ok(Found::File(PathBuf::from(arg))),
        Err(e) => Err(e.to_string()),
    }
}

/// `--inputs-file` first, then every `-i KEY=VALUE` over it.
pub(crate) fn given_inputs(
    inputs_file: &Option<PathBuf>,
    inputs: &[String],
) -> Result<IndexMap<String, Value>, String> {
    let mut given = IndexMap::new();
    if let Some(f) = inputs_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let v: Value = serde_yaml::from_str(&text)
            .map_err(|e| format!("{} is not YAML or JSON: {e}", f.display()))?;
        match v {
            Value::Object(m) => given.extend(m),
            Value::Null => {}
            _ => {
                return Err(format!(
                    "{} must hold a mapping of input names to values",
                    f.display()
                ));
            }
        }
    }
    for kv in inputs {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(format!("`-i {kv}`: inputs are given as KEY=VALUE"));
        };
        given.insert(k.trim().to_owned(), Value::String(v.to_owned()));
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_in_the_project() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("workflows")).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("workflows/hello.yaml"), "x").unwrap();
        assert_eq!(project_dir(&root.join("a/b")), root);
        let file = |f: Found| match f {
            Found::File(p) => p,
            Found::Shipped(s) => PathBuf::from(s.file_name()),
        };
        assert_eq!(
            file(resolve_workflow("hello", root).unwrap()),
            root.join("workflows/hello.yaml").canonicalize().unwrap()
        );
        assert_eq!(
            file(resolve_workflow("x/y.yaml", root).unwrap()),
            PathBuf::from("x/y.yaml")
        );
        assert_eq!(
            file(resolve_workflow("containerize", root).unwrap()),
            PathBuf::from("shipped:workflows/containerize.yaml")
        );
        assert!(
            resolve_workflow("nope", root)
                .unwrap_err()
                .contains("workflows/nope.yaml")
        );
    }
}
