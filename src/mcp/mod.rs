//! The MCP server: a second front end over the library (not over the CLI), built on the
//! official Rust SDK, `rmcp`.
//!
//! [`McpServer`] is the `rmcp` handler. It lists the ckflow tools (`ExecuteWorkflow`,
//! `ExecuteCustomWorkflow`, `ValidateWorkflow`, `ListWorkflows`, `GetRun`, `ListRuns`,
//! `CancelRun`, `ListTools`) and every registry tool under its own name, and serves runs and
//! step logs as resources (`ckflow://runs/{id}`, `ckflow://runs/{id}/steps/{step}/log`).
//! Runs go through the [`Runner`], so they are recorded in the store, belong to sessions and
//! share context exactly as CLI runs do. [`transport`] puts the handler on stdio or on
//! streamable HTTP (bearer token, loopback by default); `rmcp` speaks both protocol
//! generations: the `initialize` handshake (2024-11-05 … 2025-11-25) and the stateless
//! 2026-07-28 revision (`server/discover`, per-request metadata).
//!
//! Failures are results, not protocol errors: a failed run, an invalid workflow, a refused
//! host-executing tool or a bad argument come back as a tool result with `isError: true`
//! and JSON that says what happened. Only an unknown tool or resource, or a malformed
//! message, is a JSON-RPC error.

mod catalog;
mod project;
mod resources;
mod runs;
mod tools;
pub mod transport;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::runner::Runner;

pub use runs::ShutdownReport;

/// How the server behaves (`ckflow mcp` flags).
#[derive(Debug, Clone, Default)]
pub struct McpOptions {
    /// Let custom workflows and direct tool calls use tools that execute on the host
    /// (`shell`, `workflow`, any tool whose `host_exec()` is true). Off by default.
    pub allow_host_exec: bool,
}

/// The MCP handler. Cheap to clone: every clone (one per HTTP session) shares the runner,
/// the tool catalogue and the runs this server started.
#[derive(Clone)]
pub struct McpServer {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Arc<Runner>,
    options: McpOptions,
    catalog: catalog::Catalog,
    runs: runs::ActiveRuns,
}

impl McpServer {
    /// A server over `runner` (its registry, project folder and store).
    pub fn new(runner: Arc<Runner>, options: McpOptions) -> McpServer {
        let catalog = catalog::Catalog::new(runner.registry());
        McpServer {
            inner: Arc::new(Inner {
                runner,
                options,
                catalog,
                runs: runs::ActiveRuns::default(),
            }),
        }
    }

    /// The runner.
    pub fn runner(&self) -> &Arc<Runner> {
        &self.inner.runner
    }

    /// The options.
    pub fn options(&self) -> &McpOptions {
        &self.inner.options
    }

    /// Sweep the store now and every `every` until `stop` fires: expired context entries
    /// and sessions idle past their TTL go (SPEC §4). A long-lived server is the only
    /// process that would otherwise never sweep.
    pub fn spawn_sweeper(
        &self,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.inner.runner.store().clone();
        tokio::spawn(async move {
            loop {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.sweep(crate::store::now_ms())).await {
                    Ok(Ok(r)) if r.context_removed > 0 || !r.sessions_removed.is_empty() => {
                        tracing::info!(
                            context = r.context_removed,
                            sessions = r.sessions_removed.len(),
                            "swept expired context and sessions"
                        );
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "sweeping the store failed"),
                    Err(e) => tracing::warn!(error = %e, "sweeping the store failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    }

    /// Cancel every run this server started that is still going and wait (up to `grace`)
    /// for them to end, so their processes are gone and their `finally` steps ran before the
    /// process exits.
    pub async fn shutdown(&self, grace: std::time::Duration) -> ShutdownReport {
        self.inner.runs.shutdown(grace).await
    }
}

/// What the server tells clients about itself.
const INSTRUCTIONS: &str = "ckflow runs declarative workflows (DAGs of tools). \
Use ValidateWorkflow to check a workflow and fix it from the diagnostics (line, column, \
path), ExecuteCustomWorkflow to run YAML/JSON you write, ExecuteWorkflow to run one of the \
project's workflows (ListWorkflows), and GetRun / ListRuns / CancelRun to follow runs. \
Pass the session_id a result returns to later calls so runs share context; registry tools \
called directly take an optional session_id too, which records the call in that session's \
history.";

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(
                Implementation::new("ckflow", env!("CARGO_PKG_VERSION")).with_title("ckflow"),
            )
            .with_protocol_version(ProtocolVersion::LATEST)
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.inner.catalog.tools().to_vec(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.catalog.tool(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        tools::call(self, request, context).await.map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(self).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(self, &request.uri).await.map(Into::into)
    }
}
