//! Templates at run time: which parts of a step need rendering, what they read, and
//! rendering with errors that name the template.
//!
//! The dispatcher never builds a full template context per step: [`StepTemplates::of`]
//! looks at a step once, before the run, and records which roots (`inputs`, `run`, …) and
//! which `steps.<id>` its templates read; a step without templates gets no context at all.

use serde_json::Value;

use crate::template;
use crate::tools::ToolError;
use crate::workflow::model::Step;

/// Root variables a template may read (bit flags).
pub(crate) mod root {
    pub const INPUTS: u16 = 1;
    pub const ENV: u16 = 1 << 1;
    pub const RUN: u16 = 1 << 2;
    pub const WORKFLOW: u16 = 1 << 3;
    pub const CONTEXT: u16 = 1 << 4;
    pub const ITEM: u16 = 1 << 5;
    pub const INDEX: u16 = 1 << 6;
    pub const RECOVERY: u16 = 1 << 7;
    pub const FAILED: u16 = 1 << 8;
    /// `steps` as a whole (`{{json steps}}`), or a template that could not be analysed.
    pub const ALL_STEPS: u16 = 1 << 9;
    pub const ALL: u16 = u16::MAX;
}

/// What a set of templates reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refs {
    /// [`root`] flags.
    pub roots: u16,
    /// The ids named as `steps.<id>`, without repeats.
    pub steps: Vec<String>,
}

impl Refs {
    pub fn has(&self, flag: u16) -> bool {
        self.roots & flag != 0
    }

    /// Add what one template string reads (nothing for a plain string).
    pub fn add_str(&mut self, s: &str) {
        if !template::is_template(s) {
            return;
        }
        let Ok(analysis) = template::analyze(s) else {
            // It will fail to render and say why; give it everything meanwhile.
            self.roots = root::ALL;
            return;
        };
        for r in analysis.references {
            let Some(first) = r.segments.first() else {
                continue;
            };
            self.roots |= match first.as_str() {
                "inputs" => root::INPUTS,
                "env" => root::ENV,
                "run" => root::RUN,
                "workflow" => root::WORKFLOW,
                "context" => root::CONTEXT,
                "item" => root::ITEM,
                "index" | "@index" => root::INDEX,
                "recovery" => root::RECOVERY,
                "failed" => root::FAILED,
                "steps" => match r.segments.get(1) {
                    Some(id) => {
                        if !self.steps.contains(id) {
                            self.steps.push(id.clone());
                        }
                        0
                    }
                    None => root::ALL_STEPS,
                },
                _ => 0,
            };
        }
    }

    /// Add what every string inside a value reads.
    pub fn add_value(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.add_str(s),
            Value::Array(a) => a.iter().for_each(|x| self.add_value(x)),
            Value::Object(m) => m.values().for_each(|x| self.add_value(x)),
            _ => {}
        }
    }
}

/// Whether any string inside a value is a template.
pub(crate) fn has_template(v: &Value) -> bool {
    match v {
        Value::String(s) => template::is_template(s),
        Value::Array(a) => a.iter().any(has_template),
        Value::Object(m) => m.values().any(has_template),
        _ => false,
    }
}

/// Which parts of a step are templates, and what they read. Computed once per run.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepTemplates {
    /// `with` has a template.
    pub with: bool,
    /// `if` is a template (a literal boolean is decided without a context).
    pub if_: bool,
    /// `if` reads `item` or `index`: decided per `for_each` instance.
    pub if_per_item: bool,
    /// `for_each` has a template.
    pub for_each: bool,
    /// The step has its own `env` with a template.
    pub env: bool,
    /// The step has an `outputs` map (rendered against `result`).
    pub outputs: bool,
    /// Everything its templates read.
    pub refs: Refs,
}

impl StepTemplates {
    pub fn of(step: &Step) -> StepTemplates {
        let mut t = StepTemplates {
            with: step.with.values().any(has_template),
            if_: step.if_.as_ref().is_some_and(has_template),
            for_each: step.for_each.as_ref().is_some_and(has_template),
            env: step.env.values().any(|v| template::is_template(&v.0)),
            outputs: step.outputs.is_some(),
            ..StepTemplates::default()
        };
        if !t.any() {
            return t;
        }
        let refs = &mut t.refs;
        if t.with {
            step.with.values().for_each(|v| refs.add_value(v));
        }
        if t.for_each {
            refs.add_value(step.for_each.as_ref().expect("checked above"));
        }
        if t.env {
            step.env.values().for_each(|v| refs.add_str(&v.0));
        }
        if let Some(outs) = &step.outputs {
            outs.values().for_each(|o| refs.add_value(&o.value));
        }
        if t.if_ {
            let mut own = Refs::default();
            own.add_value(step.if_.as_ref().expect("checked above"));
            t.if_per_item = step.for_each.is_some() && own.has(root::ITEM | root::INDEX);
            refs.roots |= own.roots;
            for id in own.steps {
                if !refs.steps.contains(&id) {
                    refs.steps.push(id);
                }
            }
        }
        t
    }

    /// Whether any part of the step needs a template context.
    pub fn any(&self) -> bool {
        self.with || self.if_ || self.for_each || self.env || self.outputs
    }
}

/// Render every string inside `v` against `ctx`. A failure is an `invalid_input` error
/// naming the place (`with.tags[0]`) and the template.
pub(crate) fn render_at(v: &Value, ctx: &Value, place: &str) -> Result<Value, ToolError> {
    let mut path = place.to_owned();
    render_inner(v, ctx, &mut path)
}

fn render_inner(v: &Value, ctx: &Value, path: &mut String) -> Result<Value, ToolError> {
    Ok(match v {
        Value::String(s) => {
            if !template::is_template(s) {
                return Ok(v.clone());
            }
            template::render_str(s, ctx).map_err(|e| {
                ToolError::invalid(format!(
                    "the template `{path}` (\"{s}\") does not render: {}",
                    e.message
                ))
                .with_code("TEMPLATE")
            })?
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, x) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(render_inner(x, ctx, path)?);
                path.truncate(len);
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, x) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                out.insert(k.clone(), render_inner(x, ctx, path)?);
                path.truncate(len);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// A rendered value as the text an environment variable holds.
pub(crate) fn env_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_name_roots_and_steps() {
        let mut r = Refs::default();
        r.add_str(
            "{{inputs.a}}-{{steps.build.outputs.x}}-{{#each steps.b.outputs}}{{this}}{{/each}}",
        );
        assert!(r.has(root::INPUTS) && !r.has(root::RUN));
        assert_eq!(r.steps, vec!["build", "b"]);
        r.add_str("{{json steps}}");
        assert!(r.has(root::ALL_STEPS));
    }

    #[test]
    fn render_errors_name_the_place() {
        let e = render_at(
            &json!({"tags": ["ok", "{{inputs.nope}}"]}),
            &json!({"inputs": {}}),
            "with",
        )
        .unwrap_err();
        assert!(e.message.contains("`with.tags[1]`"), "{}", e.message);
        assert!(e.message.contains("inputs.nope"), "{}", e.message);
    }
}
