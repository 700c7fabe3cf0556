//! `ckflow run FILE|NAME`: load, check and plan a workflow, resolve its inputs, run it with
//! the engine on a multi-thread runtime, and report: live progress or plain lines on
//! stderr, JSON lines with `--events`, the report on stdout with `--json`. Ctrl-C and
//! SIGTERM cancel (a second one stops `finally` too). Exit 0 ok, 1 failed, 2 invalid,
//! 130 cancelled.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{color_stderr, exit, render};
use crate::engine::{Event, EventKind, Redactor, RunOptions};
use crate::report::json_lines::JsonLines;
use crate::report::terminal::Terminal;
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
    /// Print only the run report (JSON) on stdout; stderr gets nothing but errors.
    #[arg(long)]
    pub json: bool,
    /// Write every event as a JSON line to FILE (`-`: stdout).
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<String>,
    /// Check the workflow and the inputs and print the plan; run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Run it. `state_dir` is the global `--state-dir` (the session workspace lives under it).
pub fn run(a: Args, state_dir: Option<PathBuf>) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let project = project_dir(&cwd);
    let path = match resolve_workflow(&a.workflow, &project) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("error: {msg}");
            return exit::INVALID;
        }
    };
    let registry = Arc::new(ToolRegistry::builtin());
    let Some(workflow) = super::load_or_report(&path, &registry) else {
        return exit::INVALID;
    };
    let given = match given_inputs(&a) {
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
    let plan = Arc::new(Plan::new(Arc::new(workflow), &registry));
    if a.dry_run {
        return dry_run(&plan, &inputs, &redactor, a.json);
    }
    let events_out: Option<Box<dyn Write + Send>> = match a.events.as_deref() {
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
    let state = state_dir.unwrap_or_else(|| project.join(".ckflow"));
    let workspace = state.join("workspace");
    if let Err(e) = std::fs::create_dir_all(&workspace) {
        eprintln!(
            "error: cannot create the workspace {}: {e}",
            workspace.display()
        );
        return exit::FAILED;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::FAILED;
        }
    };
    let terminal =
        (!a.json).then(|| Terminal::stderr(std::io::stderr().is_terminal(), color_stderr()));
    let opts = RunOptions {
        inputs,
        max_parallel: a.max_parallel.map(|n| n as usize),
        project_dir: project,
        workspace,
        ..RunOptions::default()
    };
    let quiet = a.json;
    let report = runtime.block_on(execute(registry, plan, opts, terminal, events_out, quiet));
    runtime.shutdown_timeout(Duration::from_millis(200));
    let Some(report) = report else {
        return exit::FAILED;
    };
    if a.json {
        stdout(format!(
            "{}\n",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ));
    }
    report.exit_code()
}

/// Print to stdout; a closed pipe (`| head`) is not worth a panic.
fn stdout(text: String) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Run on the runtime: signals, the engine, and the reporters on a blocking thread.
async fn execute(
    registry: Arc<ToolRegistry>,
    plan: Arc<Plan>,
    mut opts: RunOptions,
    terminal: Option<Terminal>,
    events_out: Option<Box<dyn Write + Send>>,
    quiet: bool,
) -> Option<RunReport> {
    let cancel = CancellationToken::new();
    let finally_cancel = CancellationToken::new();
    opts.cancel = cancel.clone();
    opts.finally_cancel = finally_cancel.clone();
    // Register the handlers before any step starts: from here on Ctrl-C is ours.
    let signals = listen_for_signals(cancel, finally_cancel, quiet);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    if terminal.is_none() && events_out.is_none() {
        // Nobody reads the events (`--json`): with the receiver gone, none are even made.
        drop(rx);
        let report = Engine::new(registry).run(plan, opts, tx).await;
        if let Some(s) = signals {
            s.abort();
        }
        return Some(report);
    }
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

    let report = Engine::new(registry).run(plan, opts, tx).await;
    if let Some(s) = signals {
        s.abort();
    }
    let (terminal, sink_error) = match reporter.await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the reporter stopped: {e}");
            return None;
        }
    };
    if let Some(e) = sink_error {
        eprintln!("error: writing the events failed: {e}");
    }
    if let Some(mut t) = terminal {
        t.finish(&report);
    }
    Some(report)
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

/// SIGINT / SIGTERM: the first cancels the run, the second stops `finally` too.
fn listen_for_signals(
    cancel: CancellationToken,
    finally_cancel: CancellationToken,
    quiet: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("error: cannot listen for Ctrl-C; it will stop ckflow without running `finally`");
        return None;
    };
    Some(tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        cancel.cancel();
        if !quiet {
            eprintln!(
                "cancelling: no new steps start, running steps are stopped, `finally` runs (again to stop it too)"
            );
        }
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        finally_cancel.cancel();
        if !quiet {
            eprintln!("cancelling `finally` too");
        }
    }))
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
/// `.yml`, `.json`) of the project.
pub fn resolve_workflow(arg: &str, project: &Path) -> Result<PathBuf, String> {
    let is_file = arg.contains('/') || [".yaml", ".yml", ".json"].iter().any(|e| arg.ends_with(e));
    if is_file {
        return Ok(PathBuf::from(arg));
    }
    for ext in ["yaml", "yml", "json"] {
        let p = project.join("workflows").join(format!("{arg}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    if Path::new(arg).is_file() {
        return Ok(PathBuf::from(arg));
    }
    Err(format!(
        "no workflow named `{arg}`: there is no {}",
        project
            .join("workflows")
            .join(format!("{arg}.yaml"))
            .display()
    ))
}

/// `--inputs-file` first, then every `-i KEY=VALUE` over it.
fn given_inputs(a: &Args) -> Result<IndexMap<String, Value>, String> {
    let mut given = IndexMap::new();
    if let Some(f) = &a.inputs_file {
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
    for kv in &a.inputs {
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
        assert_eq!(
            resolve_workflow("hello", root).unwrap(),
            root.join("workflows/hello.yaml")
        );
        assert_eq!(
            resolve_workflow("x/y.yaml", root).unwrap(),
            PathBuf::from("x/y.yaml")
        );
        assert!(
            resolve_workflow("nope", root)
                .unwrap_err()
                .contains("workflows/nope.yaml")
        );
    }
}
