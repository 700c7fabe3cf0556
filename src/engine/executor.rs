//! The step executor: what one tokio task does for one attempt of a step (or one recovery
//! step). It renders the step's templates against the context the dispatcher prepared,
//! calls the tool under the step's timeout, renders `outputs`, and reports back over the
//! dispatcher's channel. It owns no run state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedSender;

use super::context::{env_text, render_at};
use crate::tools::{Tool, ToolContext, ToolError};
use crate::workflow::model::{EnvValue, ErrorClass, OutputSpec};

/// How long a tool may take to return once its cancellation token has fired before the
/// executor drops its future (which kills what it spawned, `kill_on_drop`).
const GRACE: Duration = Duration::from_secs(5);

/// One tool call to make.
pub(crate) struct Call {
    /// The tool.
    pub tool: Arc<dyn Tool>,
    /// Its arguments, templates not yet rendered when `render_args`.
    pub args: Value,
    /// Whether `args` holds templates.
    pub render_args: bool,
    /// Where the arguments come from, for error messages (`with`, `route.with`).
    pub args_place: &'static str,
    /// The template context, when anything needs rendering.
    pub ctx: Option<Value>,
    /// The workflow's rendered `env`.
    pub base_env: Arc<IndexMap<String, String>>,
    /// The step's own `env` (templates), applied over `base_env`.
    pub step_env: Option<IndexMap<String, EnvValue>>,
    /// The step's `outputs` map, rendered against `result`.
    pub outputs: Option<IndexMap<String, OutputSpec>>,
    /// The per-attempt deadline.
    pub timeout: Option<Duration>,
    /// The tool context (its `env` is filled in here).
    pub tool_ctx: ToolContext,
}

/// The result of a call, as the dispatcher receives it.
pub(crate) struct Done<K> {
    /// Which unit of work this was (the dispatcher's key).
    pub key: K,
    /// The outputs, or the failure.
    pub result: Result<Value, ToolError>,
    /// How long the call took.
    pub duration: Duration,
    /// The step's slot, when the dispatcher asked for it back: while a run is recorded, a
    /// step that finishes keeps its slot until its finish is committed, so that at any
    /// moment at most `max_parallel` steps are started and not durably finished (the most a
    /// crash can make run again).
    pub permit: Option<OwnedSemaphorePermit>,
    /// Whether the task was one of the dispatcher's quick ones (a tool without effects,
    /// whose slot was freed at once); see `Dispatcher::start_commit`.
    pub quick: bool,
}

/// Sends the completion exactly once, even if the task panics or is aborted: a tool that
/// panics must not leave the dispatcher waiting for it.
struct Reply<K: Copy> {
    tx: UnboundedSender<Done<K>>,
    key: K,
    start: Instant,
    sent: bool,
    quick: bool,
}

impl<K: Copy> Reply<K> {
    fn send(mut self, result: Result<Value, ToolError>, permit: Option<OwnedSemaphorePermit>) {
        self.sent = true;
        let _ = self.tx.send(Done {
            key: self.key,
            result,
            duration: self.start.elapsed(),
            permit,
            quick: self.quick,
        });
    }
}

impl<K: Copy> Drop for Reply<K> {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.tx.send(Done {
                key: self.key,
                result: Err(ToolError::new(ErrorClass::ToolError, "the tool panicked")),
                duration: self.start.elapsed(),
                permit: None,
                quick: self.quick,
            });
        }
    }
}

/// The body of a step task. With `keep_permit` the slot goes back to the dispatcher with
/// the result instead of being freed.
pub(crate) async fn run<K: Copy + Send + 'static>(
    call: Call,
    key: K,
    permit: OwnedSemaphorePermit,
    tx: UnboundedSender<Done<K>>,
    keep_permit: bool,
) {
    let reply = Reply {
        tx,
        key,
        start: Instant::now(),
        sent: false,
        quick: !keep_permit,
    };
    let result = execute(call).await;
    if keep_permit {
        reply.send(result, Some(permit));
    } else {
        // Free the slot before the dispatcher hears of it, so it can start the next step at
        // once.
        drop(permit);
        reply.send(result, None);
    }
}

async fn execute(call: Call) -> Result<Value, ToolError> {
    let Call {
        tool,
        args,
        render_args,
        args_place,
        mut ctx,
        base_env,
        step_env,
        outputs,
        timeout,
        mut tool_ctx,
    } = call;
    let mut env = (*base_env).clone();
    if let Some(step_env) = step_env {
        for (k, v) in step_env {
            let text = match &ctx {
                Some(c) if crate::template::is_template(&v.0) => {
                    env_text(render_at(&Value::String(v.0), c, &format!("env.{k}"))?)
                }
                _ => v.0,
            };
            env.insert(k, text);
        }
        // `with` and `outputs` see the step's env over the workflow's.
        if let Some(Value::Object(c)) = &mut ctx {
            let merged = env
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            c.insert("env".into(), Value::Object(merged));
        }
    }
    let args = match (&ctx, render_args) {
        (Some(c), true) => {
            let args = render_at(&args, c, args_place)?;
            check_args(&tool, &args, &tool_ctx, args_place)?;
            args
        }
        _ => args,
    };
    tool_ctx.env = env;
    let result = call_tool(tool.as_ref(), args, tool_ctx, timeout).await?;
    let Some(specs) = outputs else {
        return Ok(result);
    };
    let mut ctx = match ctx {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    ctx.insert("result".into(), result);
    let ctx = Value::Object(ctx);
    let mut out = serde_json::Map::with_capacity(specs.len());
    for (name, spec) in specs {
        let v = render_at(&spec.value, &ctx, &format!("outputs.{name}"))?;
        out.insert(name, v);
    }
    Ok(Value::Object(out))
}

/// Rendered arguments against the tool's input schema: validation could not check the
/// template parts before the run, so a template that renders to the wrong type is caught
/// here, as `invalid_input`, before the tool sees it.
fn check_args(
    tool: &Arc<dyn Tool>,
    args: &Value,
    ctx: &ToolContext,
    place: &str,
) -> Result<(), ToolError> {
    let Some(reg) = ctx.registry.get(tool.name()) else {
        return Ok(());
    };
    // Only when the registry holds this very tool (the plan may come from another one).
    if Arc::as_ptr(&reg.tool) as *const () != Arc::as_ptr(tool) as *const () {
        return Ok(());
    }
    let Some(validator) = reg.input_validator() else {
        return Ok(());
    };
    match validator.iter_errors(args).next() {
        None => Ok(()),
        Some(err) => {
            let at = err.instance_path().as_str().replace('/', ".");
            Err(ToolError::invalid(format!(
                "after rendering, `{place}{at}` does not fit `{}`: {err}",
                tool.name()
            )))
        }
    }
}

/// Call a tool under an optional deadline. When the deadline passes the tool's token fires
/// and, once the tool has returned (or [`GRACE`] has passed), the call fails with class
/// `timeout`. When the token fires for another reason (the run is cancelled), the tool's
/// own answer (normally `cancelled`) stands.
async fn call_tool(
    tool: &dyn Tool,
    args: Value,
    ctx: ToolContext,
    timeout: Option<Duration>,
) -> Result<Value, ToolError> {
    let token = ctx.cancel.clone();
    let mut fut = tool.call(args, ctx);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let timed_out = tokio::select! {
        r = &mut fut => return r,
        _ = deadline => {
            token.cancel();
            true
        }
        _ = token.cancelled() => false,
    };
    let late = tokio::time::timeout(GRACE, fut).await;
    if timed_out {
        let t = timeout.unwrap_or_default();
        return Err(ToolError::new(
            ErrorClass::Timeout,
            format!(
                "the step timed out after {}",
                crate::report::human_duration(t.as_millis() as u64)
            ),
        ));
    }
    match late {
        Ok(r) => r,
        Err(_) => Err(ToolError::new(
            ErrorClass::Cancelled,
            format!(
                "cancelled; the tool did not stop within {}s and was dropped",
                GRACE.as_secs()
            ),
        )),
    }
}
