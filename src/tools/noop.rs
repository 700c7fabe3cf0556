//! `noop`: does nothing and succeeds; returns its arguments so tests and examples can pass
//! values through it.

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolFuture};

/// The `noop` tool.
pub struct Noop;

impl Tool for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "Does nothing and succeeds; its result is its arguments (handy for passing values along)."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object", "additionalProperties": true,
               "description": "Any arguments; they are returned unchanged as the result."})
    }
    fn output_schema(&self) -> Value {
        json!({"type": "object", "description": "The arguments, unchanged."})
    }
    fn call(&self, args: Value, _ctx: ToolContext) -> ToolFuture {
        Box::pin(async move { Ok(args) })
    }
}
