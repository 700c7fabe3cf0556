//! `ckflow graph FILE [--format dot|mermaid|json]`: the DAG for other tools to draw.

use std::sync::Arc;

use super::exit;
use crate::{Plan, ToolRegistry};

/// Output formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
    /// JSON: levels, steps and edges.
    Json,
}

/// Arguments of `ckflow graph`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A workflow file, or the NAME of one in the project's `workflows/` or shipped with
    /// ckflow.
    #[arg(value_name = "FILE|NAME")]
    pub file: String,
    /// The output format.
    #[arg(long, value_enum, default_value = "dot")]
    pub format: Format,
}

/// Run it.
pub fn run(a: Args) -> i32 {
    let registry = ToolRegistry::builtin();
    let Some(w) = super::load_target(&a.file, &super::project(), &registry) else {
        return exit::INVALID;
    };
    let plan = Plan::new(Arc::new(w), &registry);
    match a.format {
        Format::Dot => out!("{}", plan.to_dot()),
        Format::Mermaid => out!("{}", plan.to_mermaid()),
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json()).unwrap_or_default()
        ),
    }
    exit::OK
}
