//! The published JSON Schema (`schemas/workflow.schema.json`, draft 2020-12) and the first
//! validation pass: every structural problem, turned into positioned diagnostics.
//!
//! The schema file is embedded in the binary (`ckflow schema` prints it) and compiled once.
//! Errors are mapped to stable codes: unknown keys (with "did you mean"), missing fields,
//! wrong `apiVersion`, bad durations, and the rest as plain schema errors.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use super::diagnostic::{Code, Diagnostic, did_you_mean};
use super::load::{Loaded, escape_segment};

/// The schema text, as published.
pub const SCHEMA_TEXT: &str = include_str!("../../schemas/workflow.schema.json");

/// The schema as JSON.
pub fn schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(|| serde_json::from_str(SCHEMA_TEXT).expect("the embedded schema is JSON"))
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| jsonschema::draft202012::new(schema()).expect("the embedded schema compiles"))
}

/// Fields that hold durations: their pattern errors get the duration code.
const DURATION_FIELDS: [&str; 4] = ["timeout", "delay", "max_delay", "ttl"];

/// The keys the language knows for the object at `pointer`, for "did you mean".
fn known_keys(pointer: &str) -> &'static [&'static str] {
    let segs: Vec<&str> = pointer.split('/').skip(1).collect();
    const ROOT: &[&str] = &[
        "$schema",
        "apiVersion",
        "name",
        "description",
        "inputs",
        "env",
        "concurrency",
        "timeout",
        "fail_fast",
        "defaults",
        "steps",
        "on_failure",
        "finally",
    ];
    const STEP: &[&str] = &[
        "id",
        "name",
        "tool",
        "with",
        "needs",
        "if",
        "when",
        "for_each",
        "timeout",
        "retry",
        "continue_on_error",
        "env",
        "outputs",
    ];
    const INPUT: &[&str] = &[
        "type",
        "required",
        "default",
        "secret",
        "description",
        "enum",
    ];
    const RETRY: &[&str] = &[
        "max_attempts",
        "backoff",
        "delay",
        "max_delay",
        "jitter",
        "on",
    ];
    const DEFAULTS: &[&str] = &["timeout", "retry", "continue_on_error"];
    const RULE: &[&str] = &["match", "route", "then", "max"];
    const MATCH: &[&str] = &["step", "tool", "error"];
    const ROUTE: &[&str] = &["tool", "with"];
    const OUTPUT: &[&str] = &["value", "share", "ttl"];
    match segs.as_slice() {
        [] => ROOT,
        ["inputs", _] => INPUT,
        ["defaults"] => DEFAULTS,
        ["defaults", "retry"] => RETRY,
        ["steps" | "finally", _] => STEP,
        ["steps" | "finally", _, "retry"] => RETRY,
        ["steps" | "finally", _, "outputs", _] => OUTPUT,
        ["on_failure", _] => RULE,
        ["on_failure", _, "match"] => MATCH,
        ["on_failure", _, "route"] => ROUTE,
        _ => &[],
    }
}

/// Check a loaded document against the schema. Returns the diagnostics and a copy of the
/// value with the offending nodes removed, so that the semantic checks can still look at
/// everything else (all problems are reported at once).
pub fn check(loaded: &Loaded) -> (Vec<Diagnostic>, Value) {
    let v = validator();
    if v.is_valid(&loaded.value) {
        // The common case, and the fast one: collecting errors costs several times more.
        return (Vec::new(), loaded.value.clone());
    }
    let mut diags = Vec::new();
    let mut remove: Vec<String> = Vec::new();
    for err in v.iter_errors(&loaded.value) {
        let pointer = err.instance_path().as_str().to_owned();
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for key in unexpected {
                    let child = format!("{pointer}/{}", escape_segment(key));
                    let mut d = loaded.diag_key(
                        Code::UnknownField,
                        &child,
                        format!("unknown field `{key}`"),
                    );
                    let known = known_keys(&pointer);
                    if let Some(s) = did_you_mean(key, known.iter().copied()) {
                        d.help = Some(format!("did you mean `{s}`?"));
                    } else if !known.is_empty() {
                        d.help = Some(format!("known fields here: {}", known.join(", ")));
                    }
                    diags.push(d);
                    remove.push(child);
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| property.to_string());
                let what = match pointer.split('/').nth(1) {
                    Some("steps" | "finally") if pointer.matches('/').count() == 2 => "this step",
                    Some("inputs") => "this input",
                    Some("on_failure") => "this rule",
                    _ if pointer.is_empty() => "the workflow",
                    _ => "this mapping",
                };
                diags.push(loaded.diag(
                    Code::MissingField,
                    &pointer,
                    format!("{what} is missing the required field `{name}`"),
                ));
                remove.push(pointer);
            }
            ValidationErrorKind::Constant { expected_value } if pointer == "/apiVersion" => {
                let mut d = loaded.diag(
                    Code::ApiVersion,
                    &pointer,
                    format!(
                        "unsupported apiVersion {}; this ckflow reads {}",
                        loaded.value["apiVersion"], expected_value
                    ),
                );
                d.help = Some("write `apiVersion: ckflow/v1`".into());
                diags.push(d);
            }
            ValidationErrorKind::Pattern { .. }
                if pointer
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| DURATION_FIELDS.contains(&last)) =>
            {
                let mut d = loaded.diag(
                    Code::Duration,
                    &pointer,
                    format!("{} is not a duration", err.instance()),
                );
                d.help = Some("write a number and a unit: 500ms, 30s, 10m, 2h (or 1h30m)".into());
                diags.push(d);
                remove.push(pointer);
            }
            ValidationErrorKind::Type { .. } if pointer.is_empty() => {
                let mut d = loaded.diag(
                    Code::Schema,
                    &pointer,
                    format!("a workflow is a mapping, not {}", json_kind(&loaded.value)),
                );
                d.help = Some("start with `apiVersion: ckflow/v1`, `name:` and `steps:`".into());
                diags.push(d);
            }
            ValidationErrorKind::Minimum { limit }
                if pointer
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| ["max_attempts", "max", "concurrency"].contains(&last)) =>
            {
                let field = pointer.rsplit('/').next().unwrap_or_default();
                let mut d = loaded.diag(
                    Code::BadLimit,
                    &pointer,
                    format!(
                        "`{field}` is {}, but it must be at least {limit}",
                        err.instance()
                    ),
                );
                d.help = Some(match field {
                    "max_attempts" => {
                        "`max_attempts` counts the first attempt: 1 means no retry".into()
                    }
                    "max" => "`max` is how often the rule may fire for one step".into(),
                    _ => "`concurrency` is how many steps may run at once".into(),
                });
                diags.push(d);
                remove.push(pointer);
            }
            ValidationErrorKind::Pattern { pattern } => {
                let what = match pointer.rsplit('/').next() {
                    Some("id") => "a step id",
                    Some("name") if pointer == "/name" => "a workflow name",
                    _ => "this value",
                };
                let mut d = loaded.diag(
                    Code::Schema,
                    &pointer,
                    format!(
                        "{} is not valid as {what}: it must match {pattern}",
                        err.instance()
                    ),
                );
                if what != "this value" {
                    d.help = Some("use lower-case letters, digits, `_` and `-`, starting with a letter or digit".into());
                }
                diags.push(d);
                remove.push(pointer);
            }
            _ => {
                let mut msg = err.to_string();
                if msg.len() > 300 {
                    msg.truncate(300);
                    msg.push('…');
                }
                diags.push(loaded.diag(Code::Schema, &pointer, msg));
                remove.push(pointer);
            }
        }
    }
    let mut repaired = loaded.value.clone();
    if !remove.is_empty() {
        // Longest pointers first, so removing a child never shifts a sibling still to go.
        remove.sort_by(|a, b| b.len().cmp(&a.len()).then(b.cmp(a)));
        remove.dedup();
        for p in &remove {
            remove_at(&mut repaired, p);
        }
    }
    diags.sort_by_key(|d| (d.line, d.column));
    diags.dedup_by(|a, b| a.line == b.line && a.column == b.column && a.message == b.message);
    (diags, repaired)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Remove the object member at `pointer` (array items are left alone: removing one would
/// shift the others and misplace later diagnostics).
fn remove_at(root: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(m)) = root.pointer_mut(parent) {
        m.shift_remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_2020_12_and_compiles() {
        assert!(schema()["$schema"].as_str().unwrap().contains("2020-12"));
        let _ = validator();
    }

    #[test]
    fn known_keys_cover_the_model() {
        // Every key the schema lists for a step is one `known_keys` suggests from.
        let step = &schema()["$defs"];
        let any_step = step
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, d)| {
                d["properties"].get("tool").is_some() && d["properties"].get("id").is_some()
            })
            .map(|(_, d)| d)
            .unwrap();
        for k in any_step["properties"].as_object().unwrap().keys() {
            assert!(known_keys("/steps/0").contains(&k.as_str()), "{k}");
        }
    }
}
