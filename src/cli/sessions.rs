//! `ckflow sessions [list | show ID | rm ID] [--json]`: the project's sessions (SPEC §4):
//! their labels, workspaces, shared context and history. `rm` removes a session with its
//! context, history and workspace folder (never one with a run still running).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::json;

use super::exit;
use super::run::stdout;
use super::runs::{open_existing, render_table, state_dir};
use crate::report::human_duration;
use crate::store::{self, RunFilter, RunStatus, Store};

/// How many history entries `sessions show` prints.
const HISTORY_SHOWN: usize = 20;

/// Arguments of `ckflow sessions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do (default: list).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `ckflow sessions …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every session, most recently used first.
    List,
    /// One session: labels, workspace, shared context, recent history.
    Show {
        /// The session's id.
        id: String,
    },
    /// Remove a session: its context, history and workspace folder.
    Rm {
        /// The session's id.
        id: String,
    },
}

/// Run it.
pub fn run(a: Args, state: Option<PathBuf>) -> i32 {
    let store = match open_existing(&state_dir(state)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = match (a.command.unwrap_or(Command::List), store) {
        (Command::List, None) => Ok(list_empty(a.json)),
        (Command::Show { id } | Command::Rm { id }, None) => {
            eprintln!("error: no session with id {id:?}");
            Ok(exit::INVALID)
        }
        (Command::List, Some(s)) => list(&s, a.json),
        (Command::Show { id }, Some(s)) => show(&s, &id, a.json),
        (Command::Rm { id }, Some(s)) => rm(&s, &id),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        exit::FAILED
    })
}

fn list_empty(json: bool) -> i32 {
    if json {
        stdout("[]\n".to_owned());
    } else {
        eprintln!("no sessions");
    }
    exit::OK
}

fn list(store: &Store, json: bool) -> Result<i32, store::StoreError> {
    let now = store::now_ms();
    let mut sessions = store.list_sessions()?;
    sessions.retain(|s| !s.is_expired(now));
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_active_ms));
    if json {
        stdout(format!(
            "{}\n",
            serde_json::to_string_pretty(&sessions).unwrap_or_default()
        ));
        return Ok(exit::OK);
    }
    if sessions.is_empty() {
        eprintln!("no sessions");
        return Ok(exit::OK);
    }
    let rows: Vec<[String; 4]> = sessions
        .iter()
        .map(|s| {
            let expires = (s.last_active_ms + s.idle_ttl_ms).saturating_sub(now);
            [
                s.id.clone(),
                store::format_utc(s.last_active_ms),
                format!("in {}", human_duration(expires)),
                labels(s),
            ]
        })
        .collect();
    stdout(render_table(
        &["SESSION", "LAST USED (UTC)", "EXPIRES", "LABELS"],
        &rows,
    ));
    Ok(exit::OK)
}

fn labels(s: &store::Session) -> String {
    s.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn show(store: &Store, id: &str, json: bool) -> Result<i32, store::StoreError> {
    let now = store::now_ms();
    let session = match store::validate_id("session", id) {
        Ok(()) => store.get_session(id)?.filter(|s| !s.is_expired(now)),
        Err(_) => None,
    };
    let Some(session) = session else {
        eprintln!("error: no session with id {id:?}");
        return Ok(exit::INVALID);
    };
    let context = store.context_entries(id, now)?;
    let history = store.history(id, Some(HISTORY_SHOWN))?;
    if json {
        let v = json!({"session": session, "context": context, "history": history});
        stdout(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
        return Ok(exit::OK);
    }
    let mut out = String::new();
    let _ = writeln!(out, "session    {}", session.id);
    let _ = writeln!(
        out,
        "created    {} UTC",
        store::format_utc(session.created_at_ms)
    );
    let _ = writeln!(
        out,
        "last used  {} UTC",
        store::format_utc(session.last_active_ms)
    );
    let _ = writeln!(
        out,
        "expires    after {} idle",
        human_duration(session.idle_ttl_ms)
    );
    let _ = writeln!(out, "workspace  {}", session.workspace.display());
    if !session.labels.is_empty() {
        let _ = writeln!(out, "labels     {}", labels(&session));
    }
    let _ = writeln!(out, "\ncontext ({} entries)", context.len());
    for e in &context {
        let _ = writeln!(
            out,
            "  {} = {}  (expires in {})",
            e.key,
            e.value,
            human_duration(e.expires_at_ms.saturating_sub(now))
        );
    }
    let _ = writeln!(out, "\nhistory (newest {HISTORY_SHOWN})");
    for h in &history {
        let what = json!(h.kind);
        let _ = writeln!(
            out,
            "  {}  {:<9} {} {} {}",
            store::format_utc(h.at_ms),
            what.as_str().unwrap_or("?"),
            h.run_id.as_deref().unwrap_or("-"),
            h.name.as_deref().unwrap_or(""),
            history_detail(h)
        );
    }
    stdout(out);
    Ok(exit::OK)
}

/// The last column of a history line: for a tool call its status, duration and error
/// (`failed in 3 ms: invalid_input (DOCKERFILE_INVALID): …`); otherwise the message, or
/// the data.
fn history_detail(h: &store::HistoryEntry) -> String {
    if h.kind == store::HistoryKind::ToolCall {
        let mut s = h.data["status"].as_str().unwrap_or("?").to_owned();
        if let Some(ms) = h.data["duration_ms"].as_u64() {
            let _ = write!(s, " in {}", human_duration(ms));
        }
        if let Some(m) = &h.message {
            let _ = write!(s, ": {m}");
        }
        return s;
    }
    h.message.clone().unwrap_or_else(|| {
        if h.data.is_null() {
            String::new()
        } else {
            h.data.to_string()
        }
    })
}

fn rm(store: &Store, id: &str) -> Result<i32, store::StoreError> {
    if store::validate_id("session", id).is_err() || store.get_session(id)?.is_none() {
        eprintln!("error: no session with id {id:?}");
        return Ok(exit::INVALID);
    }
    let running = store.list_runs(&RunFilter {
        status: Some(RunStatus::Running),
        session: Some(id.to_owned()),
        ..RunFilter::default()
    })?;
    if let Some(r) = running.first() {
        eprintln!(
            "error: session {id} has a run still running ({}); cancel it first",
            r.id
        );
        return Ok(exit::FAILED);
    }
    store.remove_session(id)?;
    eprintln!("removed session {id}");
    Ok(exit::OK)
}
