//! The project as MCP clients see it: workflow names that resolve inside `workflows/` and
//! nowhere else, the listing of those workflows, workflows sent inline (text or a JSON
//! object), and which of a workflow's tools execute on the host.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::ToolRegistry;
use crate::workflow::{Diagnostic, Diagnostics, Workflow};

/// What diagnostics call a workflow a client sent.
pub(crate) const INLINE_NAME: &str = "<mcp>";

/// The extensions a workflow file may have, in the order names are tried.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Why a workflow name does not resolve.
#[derive(Debug)]
pub(crate) enum NameError {
    /// The name is not a plain name (a path, `..`, odd characters): refused.
    Refused(String),
    /// No such workflow.
    NotFound(String),
}

/// Whether `name` is a plain workflow name: 1 to 128 of `A-Z a-z 0-9 _ -`, starting with a
/// letter or digit. Nothing that could be a path gets through.
pub(crate) fn is_plain_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `NAME` → `<project>/workflows/NAME.{yaml,yml,json}`, refusing anything that would leave
/// `workflows/`: paths, `..`, absolute names, and symlinks that point outside it.
pub(crate) fn resolve(project: &Path, name: &str) -> Result<PathBuf, NameError> {
    if !is_plain_name(name) {
        return Err(NameError::Refused(format!(
            "`{}` is not a workflow name: ExecuteWorkflow takes the NAME of a file in the \
             project's workflows/ folder (letters, digits, `-`, `_`; no paths, no `..`, no \
             extension)",
            name.escape_debug()
        )));
    }
    let dir = project.join("workflows");
    let Ok(real_dir) = dir.canonicalize() else {
        return Err(NameError::NotFound(format!(
            "no workflow `{name}`: the project {} has no workflows/ folder",
            project.display()
        )));
    };
    if let Some(found) = resolve_in(&dir, &real_dir, name) {
        return found;
    }
    let known: Vec<String> = names(project).into_iter().map(|(n, _)| n).collect();
    let hint = if known.is_empty() {
        "the folder has no workflows".to_owned()
    } else {
        format!("its workflows: {}", known.join(", "))
    };
    Err(NameError::NotFound(format!(
        "no workflow `{name}` in workflows/ ({hint})"
    )))
}

/// The first `dir/NAME.EXT` that exists, checked to stay inside `real_dir` (the canonical
/// `dir`); `None` when there is none.
fn resolve_in(dir: &Path, real_dir: &Path, name: &str) -> Option<Result<PathBuf, NameError>> {
    for ext in EXTENSIONS {
        let candidate = dir.join(format!("{name}.{ext}"));
        if std::fs::symlink_metadata(&candidate).is_err() {
            continue;
        }
        return Some(match candidate.canonicalize() {
            Ok(real) if !real.starts_with(real_dir) => Err(NameError::Refused(format!(
                "workflows/{name}.{ext} is a link to a file outside workflows/; refused"
            ))),
            Ok(real) if real.is_file() => Ok(real),
            Ok(_) => Err(NameError::NotFound(format!(
                "workflows/{name}.{ext} is not a file"
            ))),
            Err(e) => Err(NameError::NotFound(format!(
                "workflows/{name}.{ext} cannot be read: {e}"
            ))),
        });
    }
    None
}

/// The workflow files of the project that ExecuteWorkflow accepts, by name (sorted), with
/// their real paths. Names that are refused (links out of `workflows/`) are left out.
pub(crate) fn names(project: &Path) -> Vec<(String, PathBuf)> {
    let dir = project.join("workflows");
    let Ok(real_dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut stems = std::collections::BTreeSet::new();
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name();
        if let Some((stem, ext)) = file.to_str().and_then(|f| f.rsplit_once('.'))
            && EXTENSIONS.contains(&ext)
            && is_plain_name(stem)
        {
            stems.insert(stem.to_owned());
        }
    }
    stems
        .into_iter()
        .filter_map(|stem| match resolve_in(&dir, &real_dir, &stem) {
            Some(Ok(path)) => Some((stem, path)),
            _ => None,
        })
        .collect()
}

/// One entry of `ListWorkflows`.
pub(crate) fn describe(project: &Path, name: &str, path: &Path, registry: &ToolRegistry) -> Value {
    let file = path
        .strip_prefix(project)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| {
            format!(
                "workflows/{}",
                path.file_name().unwrap_or_default().display()
            )
        });
    match Workflow::from_path_with(path, registry) {
        Ok(wf) => {
            let inputs: Map<String, Value> = wf
                .doc
                .inputs
                .iter()
                .map(|(k, spec)| {
                    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
                    if spec.secret
                        && let Some(d) = v.get_mut("default")
                    {
                        *d = json!(crate::store::MASK);
                    }
                    (k.clone(), v)
                })
                .collect();
            json!({
                "name": name,
                "workflow": wf.doc.name,
                "file": file,
                "description": wf.doc.description,
                "inputs": inputs,
                "steps": wf.doc.steps.len() + wf.doc.finally.len(),
                "valid": true,
            })
        }
        Err(d) => json!({
            "name": name,
            "file": file,
            "valid": false,
            "problems": d.0.len(),
            "first_problem": d.0.first().map(Diagnostic::short),
        }),
    }
}

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
    fn names_cannot_leave_workflows() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("workflows")).unwrap();
        std::fs::write(root.join("workflows/hello.yaml"), "x").unwrap();
        std::fs::write(root.join("outside.yaml"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("outside.yaml"), root.join("workflows/evil.yaml"))
            .unwrap();
        assert!(resolve(root, "hello").is_ok());
        for bad in [
            "../outside",
            "/etc/passwd",
            "a/b",
            "..",
            ".hidden",
            "",
            "x\0y",
            "hello.yaml",
        ] {
            assert!(
                matches!(resolve(root, bad), Err(NameError::Refused(_))),
                "{bad:?}"
            );
        }
        assert!(
            matches!(resolve(root, "evil"), Err(NameError::Refused(m)) if m.contains("outside"))
        );
        assert!(
            matches!(resolve(root, "nope"), Err(NameError::NotFound(m)) if m.contains("hello"))
        );
        let listed: Vec<String> = names(root).into_iter().map(|(n, _)| n).collect();
        assert_eq!(listed, ["hello"]);
    }

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
