//! `tools/call`: the ckflow tools and direct calls of registry tools.
//!
//! Every result carries `structuredContent` and the same JSON as text. Problems the caller
//! can fix (an invalid workflow, a bad argument, a refused tool, a failed run) are results
//! with `isError: true` whose JSON says what is wrong (`error`: a stable word, `message`:
//! for people, plus `diagnostics`, the run report, …). Only an unknown tool name is a
//! protocol error.

#![allow(
    clippy::result_large_err,
    reason = "an error result is the reply itself, built once per call; `?` keeps the checks readable"
)]

use std::sync::Arc;

use indexmap::IndexMap;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Map, Value, json};

use super::McpServer;
use super::catalog::{Builtin, Entry};
use super::project;
use super::runs::{Outcome, ProgressSink, StartError};
use crate::report::RunStatus;
use crate::runner::RunnerError;
use crate::store::{RunFilter, StoreError};
use crate::workflow::catalog::{self, NameError};
use crate::{Diagnostics, Tool, ToolContext, Workflow};

/// Dispatch one `tools/call`.
pub(crate) async fn call(
    server: &McpServer,
    request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let Some(entry) = server.inner.catalog.entry(&request.name).cloned() else {
        return Err(ErrorData::invalid_params(
            format!("no tool named `{}` (tools/list has them all)", request.name),
            None,
        ));
    };
    let args = request.arguments.unwrap_or_default();
    Ok(match entry {
        Entry::Builtin(b) => match builtin(server, b, args, &context).await {
            Ok(r) | Err(r) => r,
        },
        Entry::Registry(tool) => registry_tool(server, tool, args, &context).await,
    })
}

/// An error result: `{error, message, ...extra}`.
fn failure(error: &str, message: impl Into<String>, extra: Value) -> CallToolResult {
    let mut v = json!({"error": error, "message": message.into()});
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        m.extend(x);
    }
    CallToolResult::structured_error(v)
}

/// A bad argument.
fn bad_argument(message: impl Into<String>) -> CallToolResult {
    failure("invalid_arguments", message, Value::Null)
}

/// The arguments of a ckflow tool, checked against the names it takes.
struct Args {
    tool: Builtin,
    map: JsonObject,
}

impl Args {
    fn new(tool: Builtin, map: JsonObject, allowed: &[&str]) -> Result<Args, CallToolResult> {
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad_argument(format!(
                "{} takes no argument `{unknown}` (it takes: {})",
                tool.name(),
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        Ok(Args { tool, map })
    }

    fn value(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> Result<&Value, CallToolResult> {
        self.value(name).ok_or_else(|| {
            bad_argument(format!("{} needs the argument `{name}`", self.tool.name()))
        })
    }

    fn string(&self, name: &str) -> Result<Option<&str>, CallToolResult> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(name, "a string", other)),
        }
    }

    fn required_string(&self, name: &str) -> Result<&str, CallToolResult> {
        self.required(name)?;
        self.string(name).map(|s| s.unwrap_or_default())
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool, CallToolResult> {
        match self.value(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong(name, "true or false", other)),
        }
    }

    fn object(&self, name: &str) -> Result<Map<String, Value>, CallToolResult> {
        match self.value(name) {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(other) => Err(self.wrong(name, "an object", other)),
        }
    }

    fn wrong(&self, name: &str, want: &str, got: &Value) -> CallToolResult {
        bad_argument(format!(
            "{}: `{name}` must be {want}, not {}",
            self.tool.name(),
            project::kind(got)
        ))
    }
}

/// Both `Ok` and `Err` are results; `Err` lets argument checks use `?`.
type Reply<T = CallToolResult> = Result<T, CallToolResult>;

async fn builtin(
    server: &McpServer,
    tool: Builtin,
    args: JsonObject,
    context: &RequestContext<RoleServer>,
) -> Reply {
    match tool {
        Builtin::ExecuteWorkflow => {
            let a = Args::new(tool, args, &["name", "inputs", "session_id", "wait"])?;
            execute_workflow(server, &a, context).await
        }
        Builtin::ExecuteCustomWorkflow => {
            let a = Args::new(tool, args, &["workflow", "inputs", "session_id", "wait"])?;
            execute_custom(server, &a, context).await
        }
        Builtin::ValidateWorkflow => {
            let a = Args::new(tool, args, &["workflow"])?;
            validate(server, &a).await
        }
        Builtin::ListWorkflows => {
            Args::new(tool, args, &[])?;
            list_workflows(server).await
        }
        Builtin::GetRun => {
            let a = Args::new(tool, args, &["run_id"])?;
            get_run(server, a.required_string("run_id")?).await
        }
        Builtin::ListRuns => {
            let a = Args::new(tool, args, &["limit", "status", "session_id"])?;
            list_runs(server, &a).await
        }
        Builtin::CancelRun => {
            let a = Args::new(tool, args, &["run_id"])?;
            cancel_run(server, a.required_string("run_id")?).await
        }
        Builtin::ListTools => {
            Args::new(tool, args, &[])?;
            Ok(server.inner.catalog.list_tools_result())
        }
    }
}

/// The workflow of `ValidateWorkflow` / `ExecuteCustomWorkflow`, as text.
fn workflow_text(a: &Args) -> Result<String, CallToolResult> {
    project::inline_text(a.required("workflow")?).map_err(bad_argument)
}

/// Workflow text bigger than this is checked on a blocking thread: checking is CPU work
/// that grows with the text (up to the loader's 16 MiB), and the async workers serve
/// everyone else meanwhile.
const CHECK_INLINE_MAX: usize = 64 * 1024;

/// Check inline workflow text against the server's registry.
async fn check(server: &McpServer, text: String) -> Reply<Result<Workflow, Diagnostics>> {
    let registry = Arc::clone(server.inner.runner.registry());
    if text.len() <= CHECK_INLINE_MAX {
        return Ok(project::check_inline(&text, &registry));
    }
    tokio::task::spawn_blocking(move || project::check_inline(&text, &registry))
        .await
        .map_err(|e| {
            failure(
                "internal",
                format!("checking the workflow failed: {e}"),
                Value::Null,
            )
        })
}

async fn validate(server: &McpServer, a: &Args) -> Reply {
    let text = workflow_text(a)?;
    let registry = server.inner.runner.registry();
    let v = match check(server, text).await? {
        Ok(wf) => {
            let mut v = json!({"valid": true, "diagnostics": []});
            // Valid, but ExecuteCustomWorkflow would refuse it here: say so now.
            if !server.inner.options.allow_host_exec {
                let uses = project::host_exec_uses(&wf, registry);
                if !uses.is_empty() {
                    v["host_exec_refused"] = json!(uses);
                }
            }
            v
        }
        Err(d) => json!({"valid": false, "diagnostics": project::diagnostics_json(&d.0)}),
    };
    // The answer is the diagnostics: a workflow with problems is not a failed call.
    Ok(CallToolResult::structured(v))
}

async fn execute_custom(
    server: &McpServer,
    a: &Args,
    context: &RequestContext<RoleServer>,
) -> Reply {
    let text = workflow_text(a)?;
    let registry = server.inner.runner.registry();
    let wf = check(server, text)
        .await?
        .map_err(|d| invalid_workflow(&d.0))?;
    if !server.inner.options.allow_host_exec {
        let uses = project::host_exec_uses(&wf, registry);
        if !uses.is_empty() {
            return Err(failure(
                "host_exec_refused",
                project::host_exec_refusal("the workflow", &uses),
                json!({"uses": uses, "flag": "--allow-host-exec"}),
            ));
        }
    }
    execute(server, wf, a, context).await
}

async fn execute_workflow(
    server: &McpServer,
    a: &Args,
    context: &RequestContext<RoleServer>,
) -> Reply {
    let name = a.required_string("name")?;
    let project_dir = server.inner.runner.project_dir().to_path_buf();
    let registry = Arc::clone(server.inner.runner.registry());
    let name_owned = name.to_owned();
    let loaded = tokio::task::spawn_blocking(move || {
        let found = catalog::resolve(&project_dir, &name_owned)?;
        Ok::<_, NameError>(found.load(&registry))
    })
    .await
    .map_err(|e| {
        failure(
            "internal",
            format!("loading the workflow failed: {e}"),
            Value::Null,
        )
    })?;
    let wf = match loaded {
        Ok(Ok(wf)) => wf,
        Ok(Err(d)) => return Err(invalid_workflow(&d.0)),
        Err(NameError::Refused(m)) => return Err(failure("refused", m, json!({"name": name}))),
        Err(NameError::NotFound(m)) => return Err(failure("not_found", m, json!({"name": name}))),
    };
    execute(server, wf, a, context).await
}

fn invalid_workflow(diags: &[crate::Diagnostic]) -> CallToolResult {
    failure(
        "invalid_workflow",
        format!(
            "the workflow has {} problem{}; fix them (see `diagnostics`: line, column, path) and call again",
            diags.len(),
            if diags.len() == 1 { "" } else { "s" }
        ),
        json!({"valid": false, "diagnostics": project::diagnostics_json(diags)}),
    )
}

/// Resolve the inputs, start the run, and wait for it (or not).
async fn execute(
    server: &McpServer,
    wf: Workflow,
    a: &Args,
    context: &RequestContext<RoleServer>,
) -> Reply {
    let given: IndexMap<String, Value> = a.object("inputs")?.into_iter().collect();
    let session_id = a.string("session_id")?.map(str::to_owned);
    let wait = a.bool("wait", true)?;
    let inputs = wf.resolve_inputs(&given).map_err(|d| {
        failure(
            "invalid_inputs",
            format!("the inputs do not fit `{}`", wf.doc.name),
            json!({"diagnostics": project::diagnostics_json(&d.0)}),
        )
    })?;
    let progress = match context.meta.get_progress_token() {
        Some(token) if wait => Some(ProgressSink {
            peer: context.peer.clone(),
            token,
        }),
        _ => None,
    };
    let runner = &server.inner.runner;
    let running = server
        .inner
        .runs
        .start(runner, Arc::new(wf), inputs, session_id, progress)
        .await
        .map_err(start_failure)?;
    if !wait {
        return Ok(CallToolResult::structured(json!({
            "run_id": running.run_id,
            "session_id": running.session_id,
            "status": "running",
        })));
    }
    let session_id = running.session_id.clone();
    let outcome: Outcome = running.wait(&context.ct).await;
    match outcome {
        Ok(report) => {
            let mut v = report.to_json();
            v["session_id"] = json!(session_id);
            Ok(if report.status == RunStatus::Succeeded {
                CallToolResult::structured(v)
            } else {
                CallToolResult::structured_error(v)
            })
        }
        Err(m) => Err(failure("internal", m, json!({"session_id": session_id}))),
    }
}

fn start_failure(e: StartError) -> CallToolResult {
    match e {
        StartError::Runner(RunnerError::Invalid(d)) => failure(
            "invalid_inputs",
            d.to_string().trim_end().to_owned(),
            json!({"diagnostics": project::diagnostics_json(&d.0)}),
        ),
        StartError::Runner(RunnerError::Store(StoreError::InvalidId { kind, id })) => {
            bad_argument(format!(
                "`{id}` is not a valid {kind} id (1 to 128 of A-Z a-z 0-9 _ - ., not starting with `.`)"
            ))
        }
        StartError::Runner(e) => failure("store", e.to_string(), Value::Null),
        StartError::Internal(m) => failure("internal", m, Value::Null),
    }
}

async fn list_workflows(server: &McpServer) -> Reply {
    let project_dir = server.inner.runner.project_dir().to_path_buf();
    let registry = Arc::clone(server.inner.runner.registry());
    let list = tokio::task::spawn_blocking(move || {
        catalog::list(&project_dir)
            .iter()
            .map(|(name, found)| catalog::describe(&project_dir, name, found, &registry))
            .collect::<Vec<Value>>()
    })
    .await
    .map_err(|e| failure("internal", format!("listing failed: {e}"), Value::Null))?;
    Ok(CallToolResult::structured(json!({"workflows": list})))
}

/// Run a store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CallToolResult> + Send + 'static,
) -> Reply<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        failure(
            "internal",
            format!("the store call failed: {e}"),
            Value::Null,
        )
    })?
}

/// A store error as a result.
fn store_failure(e: StoreError) -> CallToolResult {
    match e {
        StoreError::InvalidId { kind, id } => {
            bad_argument(format!("`{}` is not a valid {kind} id", id.escape_debug()))
        }
        StoreError::RunNotFound(id) => failure("not_found", format!("no run {id}"), Value::Null),
        other => failure("store", other.to_string(), Value::Null),
    }
}

async fn get_run(server: &McpServer, run_id: &str) -> Reply {
    let store = server.inner.runner.store().clone();
    let id = run_id.to_owned();
    let detail = blocking(move || store.get_run(&id).map_err(store_failure)).await?;
    match detail {
        Some(d) => Ok(CallToolResult::structured(
            serde_json::to_value(d).unwrap_or(Value::Null),
        )),
        None => Err(failure(
            "not_found",
            format!("no run {run_id} (ListRuns lists them)"),
            json!({"run_id": run_id}),
        )),
    }
}

async fn list_runs(server: &McpServer, a: &Args) -> Reply {
    let limit = match a.value("limit") {
        None => 20,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1000) => n as usize,
            _ => {
                return Err(bad_argument(
                    "ListRuns: `limit` must be a whole number from 1 to 1000",
                ));
            }
        },
    };
    let status = match a.string("status")? {
        None => None,
        Some(s) => Some(serde_json::from_value(json!(s)).map_err(|_| {
            bad_argument(format!(
                "ListRuns: `status` must be one of running, succeeded, failed, cancelled, interrupted (not `{s}`)"
            ))
        })?),
    };
    let filter = RunFilter {
        status,
        workflow: None,
        session: a.string("session_id")?.map(str::to_owned),
        limit: Some(limit),
    };
    let store = server.inner.runner.store().clone();
    let runs = blocking(move || store.list_runs(&filter).map_err(store_failure)).await?;
    Ok(CallToolResult::structured(json!({ "runs": runs })))
}

async fn cancel_run(server: &McpServer, run_id: &str) -> Reply {
    let runner = Arc::clone(&server.inner.runner);
    let id = run_id.to_owned();
    let outcome = blocking(move || {
        runner.cancel(&id).map_err(|e| match e {
            RunnerError::NotFound(id) => {
                failure("not_found", format!("no run {id}"), json!({"run_id": id}))
            }
            RunnerError::Store(e) => store_failure(e),
            other => failure("store", other.to_string(), Value::Null),
        })
    })
    .await?;
    let mut v = serde_json::to_value(outcome).unwrap_or_else(|_| json!({}));
    v["run_id"] = json!(run_id);
    Ok(CallToolResult::structured(v))
}

/// A registry tool called directly: arguments checked against its input schema, host
/// tools refused unless allowed, run with a detached context (the project folder as
/// workspace) that the request's cancellation cancels.
async fn registry_tool(
    server: &McpServer,
    tool: Arc<dyn Tool>,
    args: JsonObject,
    context: &RequestContext<RoleServer>,
) -> CallToolResult {
    let name = tool.name().to_owned();
    if tool.host_exec() && !server.inner.options.allow_host_exec {
        return failure(
            "host_exec_refused",
            project::host_exec_refusal(&format!("`{name}`"), &[format!("`{name}`")]),
            json!({"tool": name, "flag": "--allow-host-exec"}),
        );
    }
    let registry = server.inner.runner.registry();
    let args = Value::Object(args);
    if let Some(validator) = registry.get(&name).and_then(|r| r.input_validator()) {
        let problems: Vec<Value> = validator
            .iter_errors(&args)
            .map(|e| json!({"path": e.instance_path().as_str(), "message": e.to_string()}))
            .collect();
        if !problems.is_empty() {
            return failure(
                "invalid_arguments",
                format!("the arguments do not fit `{name}`'s input schema"),
                json!({"problems": problems}),
            );
        }
    }
    let mut ctx = ToolContext::detached(
        Arc::clone(registry),
        server.inner.runner.project_dir().to_path_buf(),
    );
    ctx.cancel = context.ct.child_token();
    if !server.inner.options.allow_host_exec {
        ctx = ctx.confined();
    }
    // A panicking tool fails its call, not the server.
    let task = tokio::spawn(tool.call(args, ctx));
    match task.await {
        Ok(Ok(Value::Object(m))) => CallToolResult::structured(Value::Object(m)),
        Ok(Ok(other)) => CallToolResult::structured(json!({ "result": other })),
        Ok(Err(e)) => {
            let message = e.to_string();
            failure(
                "tool_failed",
                message,
                json!({"tool": name, "tool_error": e}),
            )
        }
        Err(e) => failure(
            "internal",
            format!("`{name}` stopped unexpectedly: {e}"),
            json!({"tool": name}),
        ),
    }
}
