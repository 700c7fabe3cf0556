//! `share_context`: publish a value to the run's session context (SPEC §4), where later runs
//! of the same session read it as `{{context.KEY}}`. The tool only validates and hands the
//! entry to [`ToolContext::context_sink`]; the runner stores it (redacted) in the store.

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::duration::parse_duration;
use crate::workflow::model::ErrorClass;

/// The `share_context` tool.
pub struct ShareContext;

impl Tool for ShareContext {
    fn name(&self) -> &str {
        "share_context"
    }
    fn description(&self) -> &str {
        "Publishes a value to the session's shared context; later runs of the session read it as {{context.KEY}}."
    }
    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["key", "value"],
            "additionalProperties": false,
            "properties": {
                "key": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_-]*$", "maxLength": 128,
                        "description": "The context key (`{{context.KEY}}`)."},
                "value": {"description": "Any JSON value (a template keeps its type)."},
                "ttl": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$",
                        "description": "How long the entry lives (default 1h), e.g. `30m`."}
            }
        })
    }
    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "key": {"type": "string"},
                "ttl_ms": {"type": "integer", "description": "The entry's time to live."}
            }
        })
    }
    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![(
            "NO_SESSION",
            "the run has no session to publish to (it is not recorded in a store)",
        )]
    }
    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let key = args
                .get("key")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .ok_or_else(|| ToolError::invalid("`key` must be a non-empty string"))?
                .to_owned();
            let value = args.get("value").cloned().unwrap_or(Value::Null);
            let ttl = match args.get("ttl").and_then(Value::as_str) {
                None => None,
                Some(t) => Some(parse_duration(t).ok_or_else(|| {
                    ToolError::invalid(format!("`ttl` {t:?} is not a duration such as 30m"))
                })?),
            };
            let Some(sink) = ctx.context_sink.clone() else {
                return Err(ToolError::new(
                    ErrorClass::ToolError,
                    "share_context needs a session: run the workflow with `ckflow run` or over MCP (with the store)",
                )
                .with_code("NO_SESSION"));
            };
            sink.put(key.clone(), value, ttl).await?;
            let ttl_ms = ttl.unwrap_or(crate::store::DEFAULT_CONTEXT_TTL).as_millis() as u64;
            Ok(json!({"key": key, "ttl_ms": ttl_ms}))
        })
    }
}
