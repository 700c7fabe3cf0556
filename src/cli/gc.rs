//! `ckflow gc [--older-than 7d] [--keep N]`: retention. Removes runs that ended longer ago
//! than `--older-than`, and all but the newest `--keep` runs (default 1,000, the cap every
//! finished run also applies), with their databases and logs; never a running run. Also
//! sweeps expired context entries and sessions idle past their TTL (with their workspaces).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::exit;
use super::run::stdout;
use super::runs::{open_existing, state_dir};
use crate::store::{self, DEFAULT_KEEP_RUNS, GcOptions};

/// Arguments of `ckflow gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove runs that ended more than this long ago: `7d`, `12h`, `30m`.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub older_than: Option<Duration>,
    /// Keep at most the newest N runs (default 1000; 0 removes every finished run).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_RUNS)]
    pub keep: usize,
    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `7d`, or any duration the workflow language takes (`12h`, `30m`).
fn parse_age(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not an age such as 7d, 12h or 30m");
    if let Some(days) = s.strip_suffix('d') {
        let n: u64 = days.parse().map_err(|_| bad())?;
        return Ok(Duration::from_secs(n * 86_400));
    }
    crate::workflow::duration::parse_duration(s).ok_or_else(bad)
}

/// Run it.
pub fn run(a: Args, state: Option<PathBuf>) -> i32 {
    let store = match open_existing(&state_dir(state)) {
        Ok(Some(s)) => s,
        Ok(None) => {
            if a.json {
                stdout("{\"runs_removed\": [], \"orphans_removed\": 0, \"sessions_removed\": [], \"context_removed\": 0}\n".to_owned());
            } else {
                eprintln!("nothing to collect");
            }
            return exit::OK;
        }
        Err(code) => return code,
    };
    let now = store::now_ms();
    let options = GcOptions {
        older_than: a.older_than,
        keep: Some(a.keep),
    };
    let gc = match store.gc(&options, now) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let sweep = match store.sweep(now) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    if a.json {
        let v = json!({
            "runs_removed": gc.runs_removed,
            "orphans_removed": gc.orphans_removed,
            "sessions_removed": sweep.sessions_removed,
            "context_removed": sweep.context_removed,
        });
        stdout(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
    } else {
        eprintln!(
            "removed {} run(s), {} leftover run folder(s), {} expired session(s), {} expired context entr{}",
            gc.runs_removed.len(),
            gc.orphans_removed,
            sweep.sessions_removed.len(),
            sweep.context_removed,
            if sweep.context_removed == 1 {
                "y"
            } else {
                "ies"
            }
        );
    }
    exit::OK
}
