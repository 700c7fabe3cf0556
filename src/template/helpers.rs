//! The helpers ckflow adds to Handlebars' own: `json`, `default`, `join`, a `len` that
//! counts characters rather than bytes, and the softening of `each` / `with` blocks.
//!
//! Every helper here implements [`HelperDef::call_inner`], so it returns a typed JSON value
//! when it is used in a subexpression or as a whole-string template, and its rendered text
//! (via [`JsonRender`]) when it is interpolated into a longer string.

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonRender, Output, PathAndJson,
    RenderContext, RenderError, RenderErrorReason, ScopedJson, Template,
};
use serde_json::Value;

/// The value of a required parameter: absent => "param required", missing from the context
/// (strict mode) => the strict "missing variable" error naming the path.
fn required<'a, 'rc>(
    h: &'a Helper<'rc>,
    helper: &'static str,
    idx: usize,
) -> Result<&'a PathAndJson<'rc>, RenderError> {
    let p = h
        .param(idx)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex(helper, idx))?;
    if p.is_value_missing() {
        return Err(RenderError::strict_error(p.relative_path()));
    }
    Ok(p)
}

/// `json x [pretty=true]`: the JSON text of `x` (compact unless `pretty`).
///
/// As a whole-string template (`"{{json inputs.platforms}}"`) the renderer short-cuts this
/// helper and returns `x` itself, keeping its type.
struct JsonHelper;

impl HelperDef for JsonHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let v = required(h, "json", 0)?.value();
        let pretty = h
            .hash_get("pretty")
            .is_some_and(|p| p.value().as_bool() == Some(true));
        let text = if pretty {
            serde_json::to_string_pretty(v)
        } else {
            serde_json::to_string(v)
        }
        .map_err(RenderErrorReason::SerdeError)?;
        Ok(ScopedJson::Derived(Value::String(text)))
    }
}

/// `default x y`: `x` unless it is missing, `null` or `""`, then `y`.
///
/// A missing `x` is not an error even in strict mode: Handlebars evaluates a helper's
/// parameters leniently (a missing path becomes [`ScopedJson::Missing`]) and leaves the
/// strictness to each helper, so this one simply accepts it.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let first = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 0))?;
        let usable = !first.is_value_missing()
            && !matches!(first.value(), Value::Null)
            && first.value().as_str() != Some("");
        if usable {
            return Ok(ScopedJson::Derived(first.value().clone()));
        }
        let fallback = required(h, "default", 1)?;
        Ok(ScopedJson::Derived(fallback.value().clone()))
    }
}

/// `join list [sep]`: the items of `list` joined by `sep` (default `","`); strings are
/// used as they are, other items as their JSON text. A non-array value is joined as a
/// one-item list (`null` as an empty one).
struct JoinHelper;

impl HelperDef for JoinHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let list = required(h, "join", 0)?.value();
        let sep = match h.param(1) {
            None => ",".to_owned(),
            Some(_) => required(h, "join", 1)?.value().render(),
        };
        let item = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let text = match list {
            Value::Array(items) => items.iter().map(item).collect::<Vec<_>>().join(&sep),
            Value::Null => String::new(),
            other => item(other),
        };
        Ok(ScopedJson::Derived(Value::String(text)))
    }
}

/// `len x`: the number of items of an array or object, of characters of a string; 0 for
/// anything else. Replaces Handlebars' `len`, which counts a string's bytes.
struct LenHelper;

impl HelperDef for LenHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let n = match required(h, "len", 0)?.value() {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            Value::String(s) => s.chars().count(),
            _ => 0,
        };
        Ok(ScopedJson::Derived(Value::from(n)))
    }
}

/// Name of the internal helper [`soften_empty_blocks`] puts in the `else` branch of `each`
/// and `with` blocks that have none.
const EMPTY_BLOCK: &str = "__ckflow_empty_block";

/// Register the helpers of this module on `r` (Handlebars' own stay as they are).
pub(crate) fn register(r: &mut Handlebars<'static>) {
    r.register_helper("json", Box::new(JsonHelper));
    r.register_helper("default", Box::new(DefaultHelper));
    r.register_helper("join", Box::new(JoinHelper));
    r.register_helper("len", Box::new(LenHelper));
    r.register_helper(EMPTY_BLOCK, Box::new(EmptyBlockHelper));
}

/// Handlebars' `each` and `with`, in strict mode and without an `else` branch, fail with
/// "missing variable" on *any* value they cannot enter — `null`, `false`, `""`, a string to
/// `each` — which would blame a variable that is there. Give every such block an `else`
/// branch that renders nothing for an empty value, and fails with a precise message for a
/// really missing one or a value `each` cannot walk.
pub(crate) fn soften_empty_blocks(t: &mut Template) {
    for el in &mut t.elements {
        match el {
            TemplateElement::HelperBlock(ht) => {
                if let Some(body) = &mut ht.template {
                    soften_empty_blocks(body);
                }
                if let Some(inverse) = &mut ht.inverse {
                    soften_empty_blocks(inverse);
                }
                let name = ht.name.as_name().unwrap_or_default();
                if (name == "each" || name == "with")
                    && ht.inverse.is_none()
                    && let Some(param) = ht.params.first()
                {
                    ht.inverse = Some(empty_block_template(param.clone(), name));
                }
            }
            TemplateElement::DecoratorBlock(dt) | TemplateElement::PartialBlock(dt) => {
                if let Some(body) = &mut dt.template {
                    soften_empty_blocks(body);
                }
            }
            _ => {}
        }
    }
}

fn empty_block_template(param: Parameter, helper: &str) -> Template {
    let mut t = Template::compile(&format!("{{{{{EMPTY_BLOCK} x \"\"}}}}"))
        .expect("a constant template parses");
    if let Some(TemplateElement::Expression(ht)) = t.elements.first_mut() {
        ht.params = vec![param, Parameter::Literal(Value::String(helper.to_owned()))];
    }
    t
}

/// The `else` branch [`soften_empty_blocks`] adds: `x helper`.
struct EmptyBlockHelper;

impl HelperDef for EmptyBlockHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        _: &mut dyn Output,
    ) -> HelperResult {
        let p = required(h, EMPTY_BLOCK, 0)?;
        let helper = h
            .param(1)
            .and_then(|p| p.value().as_str())
            .unwrap_or("each");
        let empty = match p.value() {
            Value::Null | Value::Bool(false) => true,
            Value::String(s) => s.is_empty(),
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Bool(true) => false,
        };
        if empty {
            return Ok(());
        }
        let what = p
            .relative_path()
            .map_or_else(|| "the value".to_owned(), |p| format!("`{p}`"));
        Err(RenderErrorReason::Other(format!(
            "{what} is {}: `{helper}` needs a list or an object",
            json_type(p.value())
        ))
        .into())
    }
}

/// "a string", "a number", ... for messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
