//! `ckflow cancel ID`: ask the process running a run (here or in another shell) to cancel
//! it: no new step starts, running steps are stopped, `finally` runs. The store writes the
//! run's `cancel` marker and sends its owner SIGTERM; the owner stops within a fraction of a
//! second. `--wait` waits until the run has ended.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::exit;
use super::runs::{open_existing, state_dir};
use crate::store::{CancelOutcome, StoreError};

/// Arguments of `ckflow cancel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's id.
    pub id: String,
    /// Wait (up to 60 s) until the run has ended, `finally` included.
    #[arg(long)]
    pub wait: bool,
}

/// Run it.
pub fn run(a: Args, state: Option<PathBuf>) -> i32 {
    let store = match open_existing(&state_dir(state)) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("error: no run with id {:?}", a.id);
            return exit::INVALID;
        }
        Err(code) => return code,
    };
    match store.request_cancel(&a.id) {
        Ok(CancelOutcome::NotRunning { status }) => {
            eprintln!("run {} is not running (it is {status})", a.id);
            exit::OK
        }
        Ok(CancelOutcome::Signalled { pid } | CancelOutcome::Requested { pid: Some(pid) }) => {
            eprintln!("cancelling run {} (process {pid})", a.id);
            wait(&store, &a)
        }
        Ok(CancelOutcome::Requested { pid: None }) => {
            eprintln!("cancelling run {}", a.id);
            wait(&store, &a)
        }
        Err(StoreError::RunNotFound(_) | StoreError::InvalidId { .. }) => {
            eprintln!("error: no run with id {:?}", a.id);
            exit::INVALID
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

fn wait(store: &crate::store::Store, a: &Args) -> i32 {
    if !a.wait {
        return exit::OK;
    }
    let start = Instant::now();
    while store.is_running(&a.id) {
        if start.elapsed() > Duration::from_secs(60) {
            eprintln!("error: run {} is still running after 60 s", a.id);
            return exit::FAILED;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("run {} stopped", a.id);
    exit::OK
}
