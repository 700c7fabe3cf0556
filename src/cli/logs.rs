//! `ckflow logs ID [STEP] [--follow]`: a run's step logs from the store (plain files, so
//! this works while another process runs the run). Without STEP, every step's log, each
//! line prefixed by its step; `--follow` keeps printing new lines until the run ends.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::exit;
use super::runs::{open_existing, state_dir};
use crate::store::{LogFollower, Store, StoreError};

/// How often `--follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Arguments of `ckflow logs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's id.
    pub id: String,
    /// Only this step's log.
    pub step: Option<String>,
    /// Keep printing new lines until the run ends.
    #[arg(short, long)]
    pub follow: bool,
}

/// Run it.
pub fn run(a: Args, state: Option<PathBuf>) -> i32 {
    let store = match open_existing(&state_dir(state)) {
        Ok(Some(s)) => s,
        Ok(None) => return not_found(&a.id),
        Err(code) => return code,
    };
    match print_logs(&store, &a) {
        Ok(code) => code,
        Err(StoreError::RunNotFound(_) | StoreError::InvalidId { .. }) => not_found(&a.id),
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

fn not_found(id: &str) -> i32 {
    eprintln!("error: no run with id {id:?}");
    exit::INVALID
}

fn print_logs(store: &Store, a: &Args) -> Result<i32, StoreError> {
    let mut followers: BTreeMap<String, LogFollower> = BTreeMap::new();
    let single = a.step.is_some();
    if let Some(step) = &a.step {
        followers.insert(step.clone(), store.follow_log(&a.id, step)?);
    }
    let mut out = std::io::stdout().lock();
    loop {
        // Ask before reading, so the last read after the run ended sees everything.
        let running = a.follow && store.is_running(&a.id);
        if !single {
            for step in store.log_steps(&a.id)? {
                if let std::collections::btree_map::Entry::Vacant(e) = followers.entry(step) {
                    let f = store.follow_log(&a.id, e.key())?;
                    e.insert(f);
                }
            }
        }
        for (step, f) in &mut followers {
            for line in f.poll()? {
                let written = if single {
                    writeln!(out, "{line}")
                } else {
                    writeln!(out, "{step} | {line}")
                };
                if written.is_err() {
                    // A closed pipe (`| head`): nothing more to say.
                    return Ok(exit::OK);
                }
            }
        }
        let _ = out.flush();
        if !running {
            return Ok(exit::OK);
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}
