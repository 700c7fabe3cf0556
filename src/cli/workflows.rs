//! `ckflow workflows [--json]`: the project's workflows and the shipped ones, with their
//! inputs; `ckflow workflows show NAME`: one workflow's text (a shipped one can be copied
//! into `workflows/` this way and edited; the copy then overrides it).

use super::exit;
use crate::ToolRegistry;
use crate::workflow::catalog::{self, Found};

/// Arguments of `ckflow workflows`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `show NAME` prints that workflow's text.
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands of `ckflow workflows`.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Print a workflow's YAML (the project's file, or the shipped text).
    Show {
        /// The workflow's NAME.
        name: String,
    },
}

/// Run it.
pub fn run(a: Args) -> i32 {
    let project = super::project();
    match a.command {
        Some(Sub::Show { name }) => match catalog::resolve(&project, &name) {
            Ok(Found::File(p)) => match std::fs::read_to_string(&p) {
                Ok(text) => {
                    out!("{text}");
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", p.display());
                    exit::FAILED
                }
            },
            Ok(Found::Shipped(s)) => {
                out!("{}", s.text);
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        },
        None => {
            let registry = ToolRegistry::builtin();
            let list: Vec<serde_json::Value> = catalog::list(&project)
                .iter()
                .map(|(name, found)| catalog::describe(&project, name, found, &registry))
                .collect();
            if a.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "workflows": list }))
                        .unwrap_or_default()
                );
            } else {
                out!("{}", render(&list));
            }
            exit::OK
        }
    }
}

/// The text listing: a line per workflow, then its inputs indented.
pub fn render(list: &[serde_json::Value]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if list.is_empty() {
        out.push_str("no workflows (ckflow init writes a first one into workflows/)\n");
    }
    for w in list {
        let s = |k: &str| w.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let _ = writeln!(out, "{}  ({}, {})", s("name"), s("origin"), s("file"));
        if w.get("valid").and_then(|v| v.as_bool()) != Some(true) {
            let _ = writeln!(out, "    invalid: {}", s("first_problem"));
            continue;
        }
        if !s("description").is_empty() {
            let _ = writeln!(out, "    {}", s("description"));
        }
        if let Some(inputs) = w.get("inputs").and_then(|v| v.as_object()) {
            for (k, spec) in inputs {
                let ty = spec
                    .get("type")
                    .and_then(|v| v.as_str())
                    .unwrap_or("string");
                let req = spec.get("required").and_then(|v| v.as_bool()) == Some(true);
                let default = spec
                    .get("default")
                    .map(|d| format!(" = {d}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "    -i {k}=<{ty}>{}{default}",
                    if req { " (required)" } else { "" }
                );
            }
        }
    }
    out
}
