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

use std::collections::BTreeMap;
use std::sync::Arc;

use indexmap::IndexMap;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Map, Value, json};

use super::McpServer;
use super::catalog::{Builtin, Entry, SESSION_ARG};
use super::project;
use super::runs::{Outcome, ProgressSink, StartError};
use crate::engine::Redactor;
use crate::report::RunStatus;
use crate::runner::{RunnerError, StoreContext};
use crate::store::{HistoryEntry, HistoryKind, RunFilter, Session, StoreError};
use crate::workflow::catalog::{self, NameError};
use crate::workflow::model::ErrorClass;
use crate::{Diagnostics, Tool, ToolContext, ToolError, Workflow};

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
        Entry::Registry { tool, session_arg } => {
            registry_tool(server, tool, session_arg, args, context.ct.child_token()).await
        }
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
            invalid_id(kind, &id)
        }
        StartError::Runner(e) => failure("store", e.to_string(), Value::Null),
        StartError::Internal(m) => failure("internal", m, Value::Null),
    }
}

/// A session or run id the store refuses.
fn invalid_id(kind: &str, id: &str) -> CallToolResult {
    bad_argument(format!(
        "`{}` is not a valid {kind} id (1 to 128 of A-Z a-z 0-9 _ - ., not starting with `.`)",
        id.escape_debug()
    ))
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

/// A registry tool called directly. Without `session_id` it runs detached, as before
/// sessions knew about direct calls: the project folder as workspace, no shared context,
/// recorded nowhere (a call must not create a session just by happening, or every call
/// would leave one behind). With `session_id` (see [`Entry::Registry`]) it runs in that
/// session, created if missing exactly as `ExecuteWorkflow` creates it: the session's
/// workspace and shared context, and a `tool_call` entry in its history (SPEC §4) whether
/// the call succeeds or fails. The result is the same either way. `cancel` is the
/// request's: cancelling it cancels the call.
async fn registry_tool(
    server: &McpServer,
    tool: Arc<dyn Tool>,
    session_arg: bool,
    mut args: JsonObject,
    cancel: tokio_util::sync::CancellationToken,
) -> CallToolResult {
    let session_id = if session_arg {
        match args.remove(SESSION_ARG) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return bad_argument(format!(
                    "{}: `{SESSION_ARG}` must be a string, not {}",
                    tool.name(),
                    project::kind(&other)
                ));
            }
        }
    } else {
        None
    };
    let Some(session_id) = session_id else {
        return match invoke(server, &tool, args, None, cancel).await {
            Ok(r) => r,
            Err(f) => f.result,
        };
    };
    let session = match open_session(server, session_id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let names: Vec<String> = args.keys().cloned().collect();
    let redactor = Redactor::new(secret_values(&args));
    let started = std::time::Instant::now();
    let outcome = invoke(server, &tool, args, Some(&session), cancel).await;
    let entry = tool_call_entry(
        tool.name(),
        &outcome,
        started.elapsed(),
        names,
        &redactor,
        crate::store::now_ms(),
    );
    record_activity(server, session.id, entry).await;
    match outcome {
        Ok(r) => r,
        Err(f) => f.result,
    }
}

/// A direct call that failed: the result for the client, and what the history keeps.
struct Failed {
    result: CallToolResult,
    /// The stable word of the result's `error`.
    error: &'static str,
    message: String,
    /// The tool's own failure, for `tool_failed`.
    tool_error: Option<ToolError>,
}

impl Failed {
    fn new(error: &'static str, message: String, extra: Value) -> Failed {
        Failed {
            result: failure(error, message.clone(), extra),
            error,
            message,
            tool_error: None,
        }
    }
}

/// Check the arguments and call the tool: detached, or in `session`.
async fn invoke(
    server: &McpServer,
    tool: &Arc<dyn Tool>,
    args: JsonObject,
    session: Option<&Session>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<CallToolResult, Failed> {
    let name = tool.name().to_owned();
    if tool.host_exec() && !server.inner.options.allow_host_exec {
        return Err(Failed::new(
            "host_exec_refused",
            project::host_exec_refusal(&format!("`{name}`"), &[format!("`{name}`")]),
            json!({"tool": name, "flag": "--allow-host-exec"}),
        ));
    }
    let registry = server.inner.runner.registry();
    let redactor = Redactor::new(secret_values(&args));
    let args = Value::Object(args);
    if let Some(validator) = registry.get(&name).and_then(|r| r.input_validator()) {
        let problems: Vec<Value> = validator
            .iter_errors(&args)
            .map(|e| json!({"path": e.instance_path().as_str(), "message": e.to_string()}))
            .collect();
        if !problems.is_empty() {
            return Err(Failed::new(
                "invalid_arguments",
                format!("the arguments do not fit `{name}`'s input schema"),
                json!({"problems": problems}),
            ));
        }
    }
    let mut ctx = ToolContext::detached(
        Arc::clone(registry),
        server.inner.runner.project_dir().to_path_buf(),
    );
    ctx.cancel = cancel;
    if let Some(session) = session {
        ctx.workspace = session.workspace.clone();
        // `share_context` in a direct call: entries go to that session (redacted), as a run's
        // do (its later runs read them as `{{context.KEY}}`).
        ctx.context_sink = Some(Arc::new(StoreContext {
            store: server.inner.runner.store().clone(),
            session: session.id.clone(),
            redactor,
        }));
    }
    if !server.inner.options.allow_host_exec {
        ctx = ctx.confined();
    }
    // A panicking tool fails its call, not the server.
    let task = tokio::spawn(tool.call(args, ctx));
    match task.await {
        Ok(Ok(Value::Object(m))) => Ok(CallToolResult::structured(Value::Object(m))),
        Ok(Ok(other)) => Ok(CallToolResult::structured(json!({ "result": other }))),
        Ok(Err(e)) => {
            let message = e.to_string();
            Err(Failed {
                result: failure(
                    "tool_failed",
                    message.clone(),
                    json!({"tool": name, "tool_error": e}),
                ),
                error: "tool_failed",
                message,
                tool_error: Some(e),
            })
        }
        Err(e) => Err(Failed::new(
            "internal",
            format!("`{name}` stopped unexpectedly: {e}"),
            json!({"tool": name}),
        )),
    }
}

/// The session `id`, created if missing (touched if not), with its workspace; labelled
/// `via=mcp` like the sessions of runs started over MCP.
async fn open_session(server: &McpServer, id: String) -> Reply<Session> {
    let store = server.inner.runner.store().clone();
    blocking(move || {
        let labels = BTreeMap::from([("via".to_owned(), "mcp".to_owned())]);
        store
            .ensure_session(Some(&id), labels, None, crate::store::now_ms())
            .map_err(|e| match e {
                StoreError::InvalidId { kind, id } => invalid_id(kind, &id),
                other => store_failure(other),
            })
    })
    .await
}

/// Add a direct call's entry to its session's history (and touch the session). History is
/// a convenience: failing to write it is logged, not fatal (as for runs).
async fn record_activity(server: &McpServer, session: String, entry: HistoryEntry) {
    let store = server.inner.runner.store().clone();
    let tool = entry.name.clone().unwrap_or_default();
    let id = session.clone();
    match tokio::task::spawn_blocking(move || store.record_activity(&id, &entry)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(%session, %tool, error = %e, "could not write the session's history")
        }
        Err(e) => {
            tracing::warn!(%session, %tool, error = %e, "could not write the session's history")
        }
    }
}

/// The history entry of a direct call: kind `tool_call`, the tool's name, and in `data` its
/// status (`succeeded`, `failed`, or `cancelled` when the tool stopped because the request
/// was cancelled), `duration_ms`, the *names* of its arguments (values may be secrets and
/// are never stored) and, when it failed, `error: {error, class?, code?, message}`; the
/// message is also the entry's `message`. Messages are redacted of the values of arguments
/// that look like credentials ([`secret_values`]).
fn tool_call_entry(
    tool: &str,
    outcome: &Result<CallToolResult, Failed>,
    took: std::time::Duration,
    mut arguments: Vec<String>,
    redactor: &Redactor,
    now_ms: u64,
) -> HistoryEntry {
    arguments.sort();
    let duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    let mut data = json!({
        "via": "mcp",
        "status": "succeeded",
        "duration_ms": duration_ms,
        "arguments": arguments,
    });
    let mut message = None;
    if let Err(f) = outcome {
        let text = redactor.str(&f.message);
        let mut error = json!({"error": f.error, "message": text});
        if let Some(e) = &f.tool_error {
            error["class"] = serde_json::to_value(e.class).unwrap_or(Value::Null);
            if let Some(code) = &e.code {
                error["code"] = json!(redactor.str(code));
            }
        }
        let cancelled = f
            .tool_error
            .as_ref()
            .is_some_and(|e| e.class == ErrorClass::Cancelled);
        data["status"] = json!(if cancelled { "cancelled" } else { "failed" });
        data["error"] = error;
        message = Some(text);
    }
    HistoryEntry {
        at_ms: now_ms,
        kind: HistoryKind::ToolCall,
        run_id: None,
        name: Some(tool.to_owned()),
        message,
        data,
    }
}

/// Argument names whose values are treated as secrets (case-insensitive substrings): the
/// registry auth of `push_image` / `pull_image`, tokens and passwords in `env`, ….
const SECRET_NAME_PARTS: [&str; 6] = [
    "auth",
    "password",
    "passwd",
    "token",
    "secret",
    "credential",
];

/// The strings under arguments (at any depth) whose names look like credentials, to keep
/// out of the history if an error message repeats them.
fn secret_values(args: &JsonObject) -> Vec<String> {
    fn secret_name(name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        SECRET_NAME_PARTS.iter().any(|p| name.contains(p))
    }
    fn all(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(a) => a.iter().for_each(|x| all(x, out)),
            // A user name is not a secret, and masking a short one would garble messages.
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("username"))
                .for_each(|(_, x)| all(x, out)),
            Value::Bool(_) | Value::Null => {}
        }
    }
    fn walk(m: &JsonObject, out: &mut Vec<String>) {
        for (k, v) in m {
            if secret_name(k) {
                all(v, out);
            } else {
                match v {
                    Value::Object(inner) => walk(inner, out),
                    Value::Array(a) => a.iter().for_each(|x| {
                        if let Value::Object(inner) = x {
                            walk(inner, out)
                        }
                    }),
                    _ => {}
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(args, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolRegistry;
    use crate::mcp::McpOptions;
    use crate::runner::Runner;

    /// A server over the project `<dir>/project`, its state in `<dir>/state` (so session
    /// workspaces are outside the project, as with `--state-dir`).
    fn server(dir: &std::path::Path) -> McpServer {
        let registry = Arc::new(ToolRegistry::builtin());
        let project = dir.join("project");
        std::fs::create_dir_all(&project).unwrap();
        let runner = Runner::new(registry, project, Some(dir.join("state")))
            .unwrap()
            .with_confined_paths(true);
        McpServer::new(Arc::new(runner), McpOptions::default())
    }

    async fn direct(s: &McpServer, tool: &str, args: Value) -> CallToolResult {
        let Some(Entry::Registry { tool, session_arg }) = s.inner.catalog.entry(tool).cloned()
        else {
            panic!("{tool} is not a registry tool");
        };
        let Value::Object(args) = args else {
            panic!("arguments are an object")
        };
        registry_tool(s, tool, session_arg, args, Default::default()).await
    }

    fn content(r: &CallToolResult) -> Value {
        r.structured_content.clone().unwrap_or(Value::Null)
    }

    #[tokio::test]
    async fn direct_calls_with_a_session_are_in_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path());
        let store = s.inner.runner.store().clone();

        let r = direct(
            &s,
            "validate_dockerfile",
            json!({"content": "FROM alpine:3.20\n", "session_id": "s1"}),
        )
        .await;
        assert_eq!(r.is_error, Some(false), "{:?}", content(&r));
        assert_eq!(content(&r)["valid"], true);
        let session = store.get_session("s1").unwrap().expect("created");
        assert_eq!(session.labels.get("via").map(String::as_str), Some("mcp"));
        assert!(session.workspace.is_dir());

        let r = direct(
            &s,
            "validate_dockerfile",
            json!({"content": "RUN echo\n", "session_id": "s1"}),
        )
        .await;
        assert_eq!(r.is_error, Some(true));
        assert_eq!(content(&r)["tool_error"]["code"], "DOCKERFILE_INVALID");

        let r = direct(
            &s,
            "render_template",
            json!({"nope": 1, "session_id": "s1"}),
        )
        .await;
        assert_eq!(content(&r)["error"], "invalid_arguments");

        let h = store.history("s1", None).unwrap();
        assert_eq!(h.len(), 3, "{h:#?}");
        assert!(
            h.iter()
                .all(|e| e.kind == HistoryKind::ToolCall && e.run_id.is_none())
        );
        assert_eq!(h[0].name.as_deref(), Some("validate_dockerfile"));
        assert_eq!(h[0].data["status"], "succeeded");
        assert_eq!(
            h[0].data["arguments"],
            json!(["content"]),
            "names only, no session_id"
        );
        assert!(h[0].data["duration_ms"].is_u64() && h[0].data.get("error").is_none());
        assert!(h[0].message.is_none());
        assert_eq!(h[1].data["status"], "failed");
        assert_eq!(h[1].data["error"]["error"], "tool_failed");
        assert_eq!(h[1].data["error"]["class"], "invalid_input");
        assert_eq!(h[1].data["error"]["code"], "DOCKERFILE_INVALID");
        assert!(
            h[1].message
                .as_deref()
                .unwrap()
                .contains("DOCKERFILE_INVALID")
        );
        assert!(
            !h[1].data.to_string().contains("RUN echo"),
            "argument values are not stored"
        );
        assert_eq!(h[2].data["error"]["error"], "invalid_arguments");
        assert_eq!(h[2].data["arguments"], json!(["nope"]));
    }

    #[tokio::test]
    async fn direct_calls_without_a_session_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path());
        let r = direct(&s, "noop", json!({"a": 1})).await;
        assert_eq!(content(&r), json!({"a": 1}));
        let r = direct(&s, "validate_dockerfile", json!({"content": "RUN x\n"})).await;
        assert_eq!(r.is_error, Some(true));
        assert!(s.inner.runner.store().list_sessions().unwrap().is_empty());

        // `session_id` is the server's: the tool never sees it.
        let r = direct(&s, "noop", json!({"a": 1, "session_id": "s2"})).await;
        assert_eq!(content(&r), json!({"a": 1}));
        for bad in [json!("../x"), json!(7)] {
            let r = direct(&s, "noop", json!({"session_id": bad})).await;
            assert_eq!(content(&r)["error"], "invalid_arguments", "{bad}");
        }
        let ids: Vec<String> = s
            .inner
            .runner
            .store()
            .list_sessions()
            .unwrap()
            .into_iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(ids, ["s2"]);
    }

    #[tokio::test]
    async fn a_session_gives_its_workspace_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path());
        let r = direct(
            &s,
            "share_context",
            json!({"key": "color", "value": "blue", "session_id": "s3"}),
        )
        .await;
        assert_eq!(r.is_error, Some(false), "{:?}", content(&r));
        let store = s.inner.runner.store();
        let ctx = store.get_context("s3", crate::store::now_ms()).unwrap();
        assert_eq!(ctx.get("color"), Some(&json!("blue")));
        // Without a session, share_context has nowhere to publish.
        let r = direct(&s, "share_context", json!({"key": "color", "value": "red"})).await;
        assert_eq!(content(&r)["tool_error"]["code"], "NO_SESSION");

        // The session workspace is inside the confinement; another session's is not.
        let ws = store.get_session("s3").unwrap().unwrap().workspace;
        std::fs::write(ws.join("Dockerfile"), "FROM alpine:3.20\n").unwrap();
        let path = ws.join("Dockerfile").display().to_string();
        let r = direct(
            &s,
            "validate_dockerfile",
            json!({"path": path, "session_id": "s3"}),
        )
        .await;
        assert_eq!(r.is_error, Some(false), "{:?}", content(&r));
        let r = direct(
            &s,
            "validate_dockerfile",
            json!({"path": path, "session_id": "other"}),
        )
        .await;
        assert_eq!(content(&r)["tool_error"]["code"], "PATH_OUTSIDE_PROJECT");
    }

    #[test]
    fn credentials_stay_out_of_the_history() {
        let Value::Object(args) = json!({
            "image": "registry.example/app:1",
            "auth": {"username": "me", "password": "hunter2-pw"},
            "env": {"API_TOKEN": "tok-123", "HOME": "/root"},
            "mounts": [{"secret_file": "/run/s"}],
        }) else {
            unreachable!()
        };
        let mut found = secret_values(&args);
        found.sort();
        assert_eq!(found, ["/run/s", "hunter2-pw", "tok-123"]);
        let redactor = Redactor::new(found);
        let failed: Result<CallToolResult, Failed> = Err(Failed {
            result: CallToolResult::structured_error(json!({})),
            error: "tool_failed",
            message: "auth_failed (AUTH): login as me with hunter2-pw refused".to_owned(),
            tool_error: Some(ToolError::new(ErrorClass::AuthFailed, "refused").with_code("AUTH")),
        });
        let names = args.keys().cloned().collect();
        let e = tool_call_entry(
            "push_image",
            &failed,
            Default::default(),
            names,
            &redactor,
            5,
        );
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("login as me with ***"), "{text}");
        assert_eq!(
            e.data["arguments"],
            json!(["auth", "env", "image", "mounts"])
        );
        assert_eq!(e.data["status"], "failed");
        assert_eq!(e.data["error"]["class"], "auth_failed");
        assert_eq!(e.at_ms, 5);

        let cancelled: Result<CallToolResult, Failed> = Err(Failed {
            result: CallToolResult::structured_error(json!({})),
            error: "tool_failed",
            message: "cancelled".to_owned(),
            tool_error: Some(ToolError::cancelled()),
        });
        let e = tool_call_entry("noop", &cancelled, Default::default(), vec![], &redactor, 5);
        assert_eq!(e.data["status"], "cancelled");
    }
}
