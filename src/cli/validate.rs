//! `ckflow validate FILE... [--json]`: every diagnostic of every file; exit 0 or 2.

use std::path::PathBuf;

use super::{exit, render};
use crate::{ToolRegistry, Workflow};

/// Arguments of `ckflow validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow files (YAML or JSON).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the diagnostics as a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run it.
pub fn run(a: Args) -> i32 {
    let registry = ToolRegistry::builtin();
    let mut all = Vec::new();
    let mut bad_files = 0;
    for f in &a.files {
        match Workflow::from_path_with(f, &registry) {
            Ok(w) => {
                if !a.json {
                    outln!(
                        "{}: ok ({} steps)",
                        f.display(),
                        w.doc.steps.len() + w.doc.finally.len()
                    );
                }
            }
            Err(d) => {
                bad_files += 1;
                if !a.json {
                    eprint!("{}", render::diagnostics(&d.0, super::color_stderr()));
                }
                all.extend(d.0);
            }
        }
    }
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&render::diagnostics_json(&all)).unwrap_or_default()
        );
    } else if bad_files > 0 {
        eprintln!(
            "error: {} problem{} in {} file{}",
            all.len(),
            if all.len() == 1 { "" } else { "s" },
            bad_files,
            if bad_files == 1 { "" } else { "s" }
        );
    }
    if bad_files > 0 {
        exit::INVALID
    } else {
        exit::OK
    }
}
