//! `ckflow resume ID [-i KEY=VALUE]... [--from-file F]`: continue a run that was interrupted
//! (its process died), cancelled or failed. It is planned again from the workflow source
//! stored with it (or from F, whose step ids must match; the steps that changed are named
//! and run again); steps that finished are kept with their outputs, the rest run (of a
//! `for_each` step that runs again, the instances that succeeded with the same items are
//! kept too). What was kept is marked in the report (`kept`, `kept_instances`) and on the
//! terminal. Secret inputs were never stored, so they must be given again. Reports and
//! exits like `run`.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Map;

use super::exit;
use super::run::{Driven, Reporting, drive, given_inputs, project_dir, runner_error};
use super::runs::{open_existing, state_dir};
use crate::ToolRegistry;
use crate::runner::{ResumeRequest, Runner};

/// Arguments of `ckflow resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's id.
    pub id: String,
    /// An input given again, `KEY=VALUE` (repeatable): secret inputs must be, since they
    /// were never stored.
    #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// A YAML or JSON mapping of inputs; `-i` values win over it.
    #[arg(long, value_name = "FILE")]
    pub inputs_file: Option<PathBuf>,
    /// Plan from this (edited) workflow file instead of the stored source; its step ids must
    /// be the run's. Steps whose definition changed run again, and the steps after them.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// At most N steps at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,
    /// `--json` and `--events`.
    #[command(flatten)]
    pub reporting: Reporting,
}

/// Run it.
pub fn run(a: Args, state: Option<PathBuf>) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let project = project_dir(&cwd);
    let store = match open_existing(&state_dir(state)) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("error: no run with id {:?}", a.id);
            return exit::INVALID;
        }
        Err(code) => return code,
    };
    let registry = Arc::new(ToolRegistry::builtin());
    let runner = Arc::new(Runner::with_store(Arc::clone(&registry), project, store));
    let given = match given_inputs(&a.inputs_file, &a.inputs) {
        Ok(g) => g,
        Err(msg) => {
            eprintln!("error: {msg}");
            return exit::INVALID;
        }
    };
    let inputs: Map<String, serde_json::Value> = given.into_iter().collect();
    let from_file = match &a.from_file {
        None => None,
        Some(path) => {
            let Some(wf) = super::load_or_report(path, &registry) else {
                return exit::INVALID;
            };
            match runner.changed_steps(&a.id, &wf) {
                Ok(changed) if changed.is_empty() => {
                    eprintln!("{}: no step changed", path.display());
                }
                Ok(changed) => eprintln!(
                    "{}: step{} changed since the run: {} (run again, with the steps after them)",
                    path.display(),
                    if changed.len() == 1 { "" } else { "s" },
                    changed.join(", ")
                ),
                Err(e) => return runner_error(e),
            }
            Some(Arc::new(wf))
        }
    };
    let reporting = &a.reporting;
    let request = ResumeRequest {
        run_id: a.id.clone(),
        inputs,
        from_file,
        max_parallel: a.max_parallel.map(|n| n as usize),
        events: None,
    };
    drive(reporting, |events| {
        let started = runner.resume(ResumeRequest { events, ..request })?;
        if !reporting.json {
            eprintln!("resuming run {}", started.run_id);
        }
        Ok(Driven::from_runner(&runner, started))
    })
}
