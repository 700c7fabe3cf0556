//! `ckflow runs [--json] [--status S] [--workflow W] [--session S] [--limit N]`: the runs of
//! the project, newest first, from the store's index (so it works while runs go on in other
//! processes); `ckflow runs show ID [--json]`: one run with its steps, attempts, errors,
//! failure routing and durations.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::exit;
use super::run::{project_dir, stdout};
use crate::report::human_duration;
use crate::store::{self, RunDetail, RunFilter, RunStatus, RunSummary, StepStatus, Store};

/// How many runs the table shows unless `--limit` says otherwise.
const DEFAULT_LIMIT: usize = 50;

/// Arguments of `ckflow runs`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `show ID`: one run in detail.
    #[command(subcommand)]
    pub show: Option<Show>,
    /// Print JSON (an array of runs).
    #[arg(long)]
    pub json: bool,
    /// Only runs in this state: running, succeeded, failed, cancelled or interrupted.
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    pub status: Option<RunStatus>,
    /// Only runs of this workflow (its `name`).
    #[arg(long, value_name = "NAME")]
    pub workflow: Option<String>,
    /// Only runs of this session.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// At most N runs, the newest (default 50 for the table, all for `--json`; 0: all).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// `ckflow runs show ID`.
#[derive(Debug, clap::Subcommand)]
pub enum Show {
    /// One run: its record, steps, attempts, errors, routing and durations.
    Show {
        /// The run's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_status(s: &str) -> Result<RunStatus, String> {
    [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Interrupted,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
    .ok_or_else(|| {
        format!("`{s}` is not a run status (running, succeeded, failed, cancelled, interrupted)")
    })
}

/// The state directory: `--state-dir` / `CKFLOW_STATE_DIR`, else `.ckflow/` of the project.
pub(crate) fn state_dir(global: Option<PathBuf>) -> PathBuf {
    global.unwrap_or_else(|| {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Store::default_dir(&project_dir(&cwd))
    })
}

/// Open the store for a reading command; `None` (and nothing created) when there is no
/// state directory yet. Errors are printed; the exit code is returned.
pub(crate) fn open_existing(dir: &Path) -> Result<Option<Store>, i32> {
    if !dir.exists() {
        return Ok(None);
    }
    match Store::open(dir) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(exit::FAILED)
        }
    }
}

/// Run it.
pub fn run(a: Args, state: Option<PathBuf>) -> i32 {
    let dir = state_dir(state);
    let store = match open_existing(&dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(Show::Show { id, json }) = a.show {
        return show(store.as_ref(), &id, json);
    }
    let filter = RunFilter {
        status: a.status,
        workflow: a.workflow,
        session: a.session,
        limit: None,
    };
    let mut runs = match &store {
        None => Vec::new(),
        Some(s) => match s.list_runs(&filter) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILED;
            }
        },
    };
    let total = runs.len();
    let limit = match a.limit {
        Some(0) => usize::MAX,
        Some(n) => n,
        None if a.json => usize::MAX,
        None => DEFAULT_LIMIT,
    };
    runs.truncate(limit);
    if a.json {
        stdout(format!(
            "{}\n",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        ));
        return exit::OK;
    }
    if runs.is_empty() {
        eprintln!("no runs");
        return exit::OK;
    }
    let mut text = table(&runs, store::now_ms());
    if total > runs.len() {
        let _ = writeln!(
            text,
            "({} of {total} runs; --limit N for more, --limit 0 for all)",
            runs.len()
        );
    }
    stdout(text);
    exit::OK
}

/// The runs as a table.
fn table(runs: &[RunSummary], now: u64) -> String {
    let rows: Vec<[String; 6]> = runs
        .iter()
        .map(|r| {
            let duration = match (r.status, r.finished_at_ms) {
                (_, Some(end)) => human_duration(end.saturating_sub(r.started_at_ms)),
                (RunStatus::Running, None) => {
                    format!("{}…", human_duration(now.saturating_sub(r.started_at_ms)))
                }
                _ => "-".to_owned(),
            };
            [
                r.id.clone(),
                r.workflow.clone(),
                r.status.as_str().to_owned(),
                store::format_utc(r.started_at_ms),
                duration,
                r.session.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let head = [
        "RUN",
        "WORKFLOW",
        "STATUS",
        "STARTED (UTC)",
        "DURATION",
        "SESSION",
    ];
    render_table(&head, &rows)
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn render_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = head.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::with_capacity(rows.len() * 100);
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        let mut pending = String::new();
        for (cell, w) in cells.zip(widths) {
            if !first {
                pending.push_str("  ");
            }
            first = false;
            pending.push_str(cell);
            for _ in cell.chars().count()..w {
                pending.push(' ');
            }
        }
        out.push_str(pending.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut head.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// `ckflow runs show ID`.
fn show(store: Option<&Store>, id: &str, json: bool) -> i32 {
    let detail = match store.map(|s| s.get_run(id)) {
        Some(Ok(Some(d))) => d,
        Some(Err(e)) if !matches!(e, store::StoreError::InvalidId { .. }) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
        _ => {
            eprintln!("error: no run with id {id:?}");
            return exit::INVALID;
        }
    };
    if json {
        stdout(format!(
            "{}\n",
            serde_json::to_string_pretty(&detail_json(&detail)).unwrap_or_default()
        ));
    } else {
        stdout(detail_text(&detail, store::now_ms()));
    }
    exit::OK
}

/// A run as JSON: the record (without its source), the derived status, the steps.
pub fn detail_json(d: &RunDetail) -> Value {
    let mut run = serde_json::to_value(&d.run).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut run {
        m.remove("source");
        m.insert("status".into(), json!(d.status));
        m.insert("stored_status".into(), json!(d.run.status));
        m.insert("owner_pid".into(), json!(d.owner_pid));
        m.insert("read_from".into(), json!(d.source));
        m.insert("steps".into(), json!(d.steps));
    }
    run
}

/// A run for people.
fn detail_text(d: &RunDetail, now: u64) -> String {
    let r = &d.run;
    let mut out = String::new();
    let _ = writeln!(out, "run       {}", r.id);
    let _ = writeln!(out, "workflow  {}", r.workflow);
    let mut status = d.status.as_str().to_owned();
    if let Some(pid) = d.owner_pid {
        let _ = write!(status, " (process {pid})");
    }
    let _ = writeln!(out, "status    {status}");
    if let Some(s) = &r.session {
        let _ = writeln!(out, "session   {s}");
    }
    let _ = writeln!(out, "started   {} UTC", store::format_utc(r.started_at_ms));
    match r.finished_at_ms {
        Some(end) if d.status.is_finished() => {
            let _ = writeln!(
                out,
                "finished  {} UTC, after {}",
                store::format_utc(end),
                human_duration(end.saturating_sub(r.started_at_ms))
            );
        }
        _ if d.status == RunStatus::Running => {
            let _ = writeln!(
                out,
                "running   for {}",
                human_duration(now.saturating_sub(r.started_at_ms))
            );
        }
        _ => {}
    }
    if r.resumes > 0 {
        let _ = writeln!(out, "resumed   {} time(s)", r.resumes);
    }
    if !r.inputs.is_empty() {
        let _ = writeln!(out, "inputs");
        for (k, v) in &r.inputs {
            let _ = writeln!(out, "  {k} = {v}");
        }
    }
    if d.status == RunStatus::Interrupted {
        let _ = writeln!(
            out,
            "\nits process died; `ckflow resume {}` continues it",
            r.id
        );
    }
    if d.steps.is_empty() {
        let _ = writeln!(out, "\nno steps recorded");
        return out;
    }
    out.push('\n');
    let rows: Vec<[String; 5]> = d
        .steps
        .iter()
        .map(|s| {
            let mut status = step_status(s);
            if s.finally {
                status.push_str(" (finally)");
            }
            [
                s.id.clone(),
                status,
                s.attempts.to_string(),
                s.duration_ms.map(human_duration).unwrap_or_else(|| {
                    match (s.status, s.started_at_ms) {
                        (StepStatus::Running, Some(t)) => {
                            format!("{}…", human_duration(now.saturating_sub(t)))
                        }
                        _ => "-".to_owned(),
                    }
                }),
                s.error
                    .as_ref()
                    .map(|e| {
                        let code = e
                            .code
                            .as_deref()
                            .map(|c| format!(" {c}"))
                            .unwrap_or_default();
                        format!("{}{code}: {}", e.class, first_line(&e.message))
                    })
                    .or_else(|| s.skipped_reason.as_ref().map(|r| format!("skipped: {r}")))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&render_table(
        &["STEP", "STATUS", "ATTEMPTS", "DURATION", "ERROR"],
        &rows,
    ));
    for s in d.steps.iter().filter(|s| !s.routing.is_empty()) {
        let _ = writeln!(out, "\nrouting of {}:", s.id);
        for r in &s.routing {
            let rule = r["rule"].as_str().unwrap_or("?");
            let then = r["then"].as_str().unwrap_or("?");
            let tool = r["tool"]
                .as_str()
                .map(|t| format!(" ran `{t}` ({})", r["status"].as_str().unwrap_or("?")))
                .unwrap_or_default();
            let _ = writeln!(out, "  {rule}:{tool}, then {then}");
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// A step's status for people: `failed (tolerated)` for a tolerated failure.
fn step_status(s: &store::StepRecord) -> String {
    let name = serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if s.tolerated {
        format!("{name} (tolerated)")
    } else {
        name
    }
}
