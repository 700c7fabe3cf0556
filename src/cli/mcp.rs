//! `ckflow mcp [--http ADDR] [--allow-host-exec] [--project DIR]`: the MCP server
//! ([`crate::mcp`]) on stdio, or on streamable HTTP with a bearer token from
//! `CKFLOW_MCP_TOKEN`. Stdout carries protocol messages only; logs go to stderr
//! (`CKFLOW_LOG`, e.g. `CKFLOW_LOG=debug`, default `warn`). SIGINT/SIGTERM or the client
//! closing stdin stop it: runs still going are cancelled and their `finally` steps run
//! before it exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::exit;
use crate::ToolRegistry;
use crate::mcp::transport::{self, HttpListener};
use crate::mcp::{McpOptions, McpServer};
use crate::runner::Runner;

/// How long runs get to end (their `finally` steps) when the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How often the server sweeps expired context and sessions from the store.
const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

/// Arguments of `ckflow mcp`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve streamable HTTP on ADDR (`127.0.0.1:8808`) at `/mcp` instead of stdio. Every
    /// request must send `Authorization: Bearer $CKFLOW_MCP_TOKEN`.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Let workflows sent by clients, and direct tool calls, use tools that execute on the
    /// host (`shell`, `workflow`). Off by default.
    #[arg(long)]
    pub allow_host_exec: bool,
    /// The project folder (default: found from the working directory, as for every
    /// command). MCP clients often start servers in an unrelated folder.
    #[arg(long, env = "CKFLOW_PROJECT", value_name = "DIR")]
    pub project: Option<PathBuf>,
}

/// Run the server; returns the exit code.
pub fn run(a: Args, state_dir: Option<PathBuf>) -> i32 {
    init_logging();
    let project = match &a.project {
        Some(p) => match std::path::absolute(p) {
            Ok(p) if p.is_dir() => p,
            _ => {
                eprintln!("error: --project {}: not a folder", p.display());
                return exit::INVALID;
            }
        },
        None => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            super::run::project_dir(&cwd)
        }
    };
    let token = std::env::var("CKFLOW_MCP_TOKEN").ok();
    if let Some(addr) = &a.http
        && let Err(e) = transport::check_http(addr, token.as_deref())
    {
        eprintln!("error: {e}");
        return exit::INVALID;
    }
    let registry = Arc::new(ToolRegistry::builtin());
    let runner = match Runner::new(registry, project.clone(), state_dir) {
        // Clients' runs keep their paths inside the project unless the server trusts them.
        Ok(r) => Arc::new(r.with_confined_paths(!a.allow_host_exec)),
        Err(e) => {
            eprintln!("error: cannot open the state store: {e}");
            return exit::FAILED;
        }
    };
    let Some(runtime) = super::runtime() else {
        return exit::FAILED;
    };
    let server = McpServer::new(
        runner,
        McpOptions {
            allow_host_exec: a.allow_host_exec,
        },
    );
    let code = runtime.block_on(serve(server, a.http, token, project));
    // A read of a blocking stdin may still be pending; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn serve(
    server: McpServer,
    http: Option<SocketAddr>,
    token: Option<String>,
    project: PathBuf,
) -> i32 {
    let shutdown = CancellationToken::new();
    let signals = listen_for_signals(shutdown.clone());
    let sweeper = server.spawn_sweeper(SWEEP_EVERY, shutdown.clone());
    let result = match http {
        None => {
            tracing::info!(project = %project.display(), "serving MCP on stdio");
            transport::serve_stdio(server.clone(), shutdown.clone()).await
        }
        Some(addr) => match HttpListener::bind(addr, token.as_deref()).await {
            Ok(listener) => {
                let shown = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| addr.to_string());
                // One line on stderr so people (and tests) know where to connect.
                eprintln!(
                    "ckflow mcp: listening on http://{shown}{} (project {})",
                    transport::ENDPOINT,
                    project.display()
                );
                listener.serve(server.clone(), shutdown.clone()).await
            }
            Err(e) => Err(e),
        },
    };
    shutdown.cancel();
    let report = server.shutdown(SHUTDOWN_GRACE).await;
    if report.cancelled > 0 {
        tracing::info!(
            cancelled = report.cancelled,
            unfinished = report.unfinished,
            "cancelled the runs still going"
        );
    }
    if let Some(s) = signals {
        s.abort();
    }
    sweeper.abort();
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILED
        }
    }
}

/// SIGINT / SIGTERM stop the server (runs are cancelled, `finally` runs).
fn listen_for_signals(shutdown: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return None;
    };
    Some(tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping: cancelling runs still going");
        shutdown.cancel();
    }))
}

/// Logs to stderr only (stdout is the protocol's), filtered by `CKFLOW_LOG`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CKFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
