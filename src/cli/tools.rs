//! `ckflow tools [show NAME]`: the registry, with input and output schemas.

use super::exit;
use crate::ToolRegistry;

/// Arguments of `ckflow tools`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `show NAME` prints one tool with its schemas.
    #[command(subcommand)]
    pub show: Option<Show>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print the Markdown reference (`docs/tools.md`).
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
}

/// `ckflow tools show NAME`.
#[derive(Debug, clap::Subcommand)]
pub enum Show {
    /// One tool with its input and output schemas, error codes and default rules.
    Show {
        /// The tool's name.
        name: String,
    },
}

/// Run it.
pub fn run(a: Args) -> i32 {
    let registry = ToolRegistry::builtin();
    match a.show {
        Some(Show::Show { name }) => match registry.tool(&name) {
            Some(t) => {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&ToolRegistry::describe(t.as_ref()))
                        .unwrap_or_default()
                );
                exit::OK
            }
            None => {
                let hint = crate::workflow::diagnostic::did_you_mean(&name, registry.names())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                eprintln!("error: no tool named `{name}`{hint}");
                exit::INVALID
            }
        },
        None if a.markdown => {
            out!("{}", crate::tools::docs::markdown(&registry));
            exit::OK
        }
        None if a.json => {
            let all: Vec<_> = registry
                .iter()
                .map(|t| ToolRegistry::describe(t.as_ref()))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            exit::OK
        }
        None => {
            let width = registry.names().map(str::len).max().unwrap_or(4);
            for t in registry.iter() {
                let host = if t.host_exec() { " [host]" } else { "" };
                outln!("{:width$}  {}{}", t.name(), t.description(), host);
            }
            exit::OK
        }
    }
}
