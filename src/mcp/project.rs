//! The project as MCP clients see it (names resolve in [`crate::workflow::catalog`]):
//! workflows sent inline (text or a JSON
//! object), and which of a workflow's tools execute on the host.

use serde_json::{Value, json};

use crate::ToolRegistry;
use crate::workflow::{Diagnostic, Diagnostics, Workflow};

/// What diagnostics call a workflow a client sent.
pub(crate) const INLINE_NAME: &str = "<mcp>";

/// A workflow a client sent: YAML or JSON text as given, or a JSON object pretty-printed
/// (so line and column of diagnostics point somewhere readable).
pub(crate) fn inline_text(arg: &Value) -> Result<String, String> {
    match arg {
        Value::String(s) => Ok(s.clone()),
        Value::Object(_) => serde_json::to_string_pretty(arg).map_err(|e| e.to_string()),
        other => Err(format!(
            "`workflow` must be YAML/JSON text or a JSON object, not {}",
            kind(other)
        )),
    }
}

/// Check inline workflow text.
pub(crate) fn check_inline(text: &str, registry: &ToolRegistry) -> Result<Workflow, Diagnostics> {
    Workflow::from_str_with(INLINE_NAME, text, registry)
}

/// Diagnostics as the JSON clients get: `{code, message, path, line, column, help?}` (plus
/// `file`).
pub(crate) fn diagnostics_json(diags: &[Diagnostic]) -> Value {
    serde_json::to_value(diags).unwrap_or_else(|_| json!([]))
}

/// The places where a workflow uses a tool that executes on the host: steps, `finally`
/// steps, the `route` of its `on_failure` rules, and routes of the default rules of the
/// tools it uses. Each as `steps[2] (`build`) uses `shell``.
pub(crate) fn host_exec_uses(wf: &Workflow, registry: &ToolRegistry) -> Vec<String> {
    let host = |name: &str| registry.tool(name).is_some_and(|t| t.host_exec());
    let mut out = Vec::new();
    let sections = [("steps", &wf.doc.steps), ("finally", &wf.doc.finally)];
    for (section, steps) in sections {
        for (i, s) in steps.iter().enumerate() {
            if host(&s.tool) {
                out.push(format!("{section}[{i}] (`{}`) uses `{}`", s.id, s.tool));
            }
        }
    }
    for (i, rule) in wf.doc.on_failure.iter().enumerate() {
        if let Some(route) = &rule.route
            && host(&route.tool)
        {
            out.push(format!("on_failure[{i}].route uses `{}`", route.tool));
        }
    }
    let mut used: Vec<&str> = sections
        .iter()
        .flat_map(|(_, steps)| steps.iter().map(|s| s.tool.as_str()))
        .collect();
    used.sort_unstable();
    used.dedup();
    for name in used {
        let Some(tool) = registry.tool(name) else {
            continue;
        };
        for (j, rule) in tool.default_rules().iter().enumerate() {
            if let Some(route) = &rule.route
                && host(&route.tool)
            {
                out.push(format!(
                    "{name}.default_rules[{j}].route uses `{}`",
                    route.tool
                ));
            }
        }
    }
    out
}

/// The message of a host-execution refusal.
pub(crate) fn host_exec_refusal(what: &str, uses: &[String]) -> String {
    format!(
        "{what} uses tools that execute on the host ({}); this server refuses them. Start it \
         with `ckflow mcp --allow-host-exec` to allow them, or use tools that do not execute \
         on the host (e.g. `run_container` instead of `shell`).",
        uses.join("; ")
    )
}

/// A JSON value's kind, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_exec_is_found_in_steps_finally_and_routes() {
        let registry = ToolRegistry::builtin();
        let text = "apiVersion: ckflow/v1\nname: x\nsteps:\n  - {id: a, tool: noop}\n  - {id: b, tool: shell, with: {run: 'true'}}\non_failure:\n  - match: {step: a}\n    route: {tool: shell, with: {run: 'true'}}\n    then: continue\nfinally:\n  - {id: c, tool: shell, with: {run: 'true'}}\n";
        let wf = check_inline(text, &registry).unwrap();
        let uses = host_exec_uses(&wf, &registry);
        assert_eq!(uses.len(), 3, "{uses:?}");
        assert!(uses[0].contains("steps[1]"));
        assert!(uses[1].contains("finally[0]"));
        assert!(uses[2].contains("on_failure[0]"));
        let clean = check_inline(
            "apiVersion: ckflow/v1\nname: x\nsteps:\n  - {id: a, tool: noop}\n",
            &registry,
        )
        .unwrap();
        assert!(host_exec_uses(&clean, &registry).is_empty());
    }
}
