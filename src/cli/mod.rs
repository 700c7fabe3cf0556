//! The command line: one file per subcommand. clap parses; each command turns its arguments
//! into library calls and returns an exit code (SPEC §2: 0 ok, 1 failed, 2 invalid, 130
//! cancelled). Nothing here holds logic the MCP server would need: both sit on the library.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `print!` that does not panic on a closed pipe (`ckflow plan x | head -1`).
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::run::stdout(format!($($t)*))
    };
}

/// `println!` that does not panic on a closed pipe.
macro_rules! outln {
    () => {
        $crate::cli::run::stdout("\n".to_owned())
    };
    ($($t:tt)*) => {
        $crate::cli::run::stdout(format!("{}\n", format_args!($($t)*)))
    };
}

pub mod cancel;
pub mod gc;
pub mod graph;
pub mod init;
pub mod logs;
pub mod mcp;
pub mod plan;
pub mod render;
pub mod resume;
pub mod run;
pub mod runs;
pub mod schema;
pub mod sessions;
pub mod tools;
pub mod validate;
pub mod workflows;

/// Exit codes, documented in `docs/cli.md`.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The workflow ran and failed (or a command failed).
    pub const FAILED: i32 = 1;
    /// The workflow or the command line is invalid.
    pub const INVALID: i32 = 2;
    /// The run was cancelled (Ctrl-C, SIGTERM, `ckflow cancel`).
    pub const CANCELLED: i32 = 130;
}

/// ckflow: a declarative workflow engine for DAGs of tools, from the CLI or over MCP.
#[derive(Debug, Parser)]
#[command(name = "ckflow", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Where runs, sessions and logs are stored (default: `.ckflow/` of the project).
    #[arg(long, global = true, env = "CKFLOW_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow (a file, or a NAME from the project's `workflows/`).
    Run(run::Args),
    /// Check workflow files and print every problem at once.
    Validate(validate::Args),
    /// Print the order the steps would run in, by level, without running anything.
    Plan(plan::Args),
    /// Print the DAG as Graphviz dot, Mermaid or JSON.
    Graph(graph::Args),
    /// Print the workflow JSON Schema (draft 2020-12).
    Schema,
    /// List the tools of the registry, or show one with its schemas.
    Tools(tools::Args),
    /// Serve MCP: stdio by default, streamable HTTP with `--http ADDR`.
    Mcp(mcp::Args),
    /// List past and running runs, or show one (`runs show ID`).
    Runs(runs::Args),
    /// Print a run's step logs (`--follow` to keep printing).
    Logs(logs::Args),
    /// Cancel a running run, from any shell.
    Cancel(cancel::Args),
    /// Continue a run that was interrupted, cancelled or failed.
    Resume(resume::Args),
    /// List, show or remove sessions.
    Sessions(sessions::Args),
    /// Remove old runs (retention) and expired sessions.
    Gc(gc::Args),
    /// List the project's and the shipped workflows with their inputs, or show one.
    Workflows(workflows::Args),
    /// Create `workflows/` with a first workflow.
    Init(init::Args),
}

/// Whether stderr is a terminal that wants colour.
pub fn color_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Parse the process arguments and run; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::INVALID,
            };
            let _ = e.print();
            return code;
        }
    };
    run(cli)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(a) => run::run(a, cli.state_dir),
        Command::Validate(a) => validate::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Graph(a) => graph::run(a),
        Command::Schema => schema::run(),
        Command::Tools(a) => tools::run(a),
        Command::Mcp(a) => mcp::run(a, cli.state_dir),
        Command::Runs(a) => runs::run(a, cli.state_dir),
        Command::Logs(a) => logs::run(a, cli.state_dir),
        Command::Cancel(a) => cancel::run(a, cli.state_dir),
        Command::Resume(a) => resume::run(a, cli.state_dir),
        Command::Sessions(a) => sessions::run(a, cli.state_dir),
        Command::Gc(a) => gc::run(a, cli.state_dir),
        Command::Workflows(a) => workflows::run(a),
        Command::Init(a) => init::run(a),
    }
}

/// Load and check the workflow a FILE or NAME argument names (see
/// [`run::resolve_workflow`]); on failure print why to stderr.
pub fn load_target(
    arg: &str,
    project: &std::path::Path,
    registry: &crate::ToolRegistry,
) -> Option<crate::Workflow> {
    match run::resolve_workflow(arg, project) {
        Ok(crate::workflow::catalog::Found::File(path)) => load_or_report(&path, registry),
        Ok(found) => match found.load(registry) {
            Ok(w) => Some(w),
            Err(d) => {
                eprint!("{}", render::diagnostics(&d.0, color_stderr()));
                eprintln!(
                    "error: {}: {} problem(s)",
                    found.display(project),
                    d.0.len()
                );
                None
            }
        },
        Err(msg) => {
            eprintln!("error: {msg}");
            None
        }
    }
}

/// The multi-thread runtime `run`, `resume` and `mcp` work on; `None` (said on stderr) when
/// it cannot start.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// The project of the working directory (SPEC §2).
pub fn project() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    run::project_dir(&cwd)
}

/// Load and check a workflow file; on failure print its diagnostics to stderr.
pub fn load_or_report(
    path: &std::path::Path,
    registry: &crate::ToolRegistry,
) -> Option<crate::Workflow> {
    match crate::Workflow::from_path_with(path, registry) {
        Ok(w) => Some(w),
        Err(d) => {
            eprint!("{}", render::diagnostics(&d.0, color_stderr()));
            eprintln!(
                "error: {}: {} problem{}",
                path.display(),
                d.0.len(),
                if d.0.len() == 1 { "" } else { "s" }
            );
            None
        }
    }
}
