//! Handlebars templates in workflow values (SPEC §1.1): parsing, analysis and rendering.
//!
//! Every string under a step's `with`, `if`, `for_each`, `env` and `outputs` may be a
//! template. Validation calls [`analyze`] to learn, before anything runs, which context
//! paths (`inputs.x`, `steps.<id>.outputs.y`, ...) and which helpers a template uses; the
//! engine calls [`render_str`] / [`render_value`] just before a step runs, against a JSON
//! context shaped `{"inputs", "env", "steps": {"<id>": {"outputs", "status", "error"}},
//! "run", "workflow", "item", "index", "result", "context", "recovery"}`.
//!
//! The rules: strict mode (a missing variable is an error naming it), no HTML escaping,
//! and a string that is exactly one `{{ ... }}` expression keeps the JSON type of its value.

mod helpers;
mod walk;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use handlebars::template::{Parameter, Subexpression, TemplateElement};
use handlebars::{
    Context, Handlebars, RenderContext, RenderError, RenderErrorReason, Renderable, StringOutput,
    Template,
};
use serde_json::{Map, Value};

use walk::{Anchor, RawText, Site, SiteKind, Walk};

/// A template that does not parse or does not render: what went wrong, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    /// What went wrong, e.g. "`inputs.nope` is not defined".
    pub message: String,
    /// Byte offset inside the template string, when known.
    pub offset: Option<usize>,
}

impl TemplateError {
    fn new(message: impl Into<String>, offset: Option<usize>) -> TemplateError {
        TemplateError {
            message: message.into(),
            offset,
        }
    }
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TemplateError {}

/// Names of all helpers usable in templates: Handlebars' own (`if unless each with lookup
/// log raw eq ne gt gte lt lte and or not len`) and ckflow's (`json default join`).
pub const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "log", "raw", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len", "json", "default", "join",
];

/// The shared registry: strict mode on, no HTML escaping, ckflow's helpers registered.
pub fn registry() -> &'static Handlebars<'static> {
    static REGISTRY: OnceLock<Handlebars<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Handlebars::new();
        r.set_strict_mode(true);
        r.register_escape_fn(handlebars::no_escape);
        helpers::register(&mut r);
        r
    })
}

/// True if the string contains a template (`{{`).
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

/// One variable reference found in a template, as path segments from the root of the
/// context: `{{steps.build.outputs.image}}` gives `["steps", "build", "outputs", "image"]`,
/// `{{item}}` gives `["item"]`, `{{@root.inputs.x}}` gives `["inputs", "x"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The path's named segments (`this` and `..` left out; `@index` kept as `"@index"`).
    pub segments: Vec<String>,
    /// True when the path is not relative to the root context: inside an `#each` / `#with`
    /// body, or written with `this`, `./`, `../` or `@`. The validator does not check these.
    pub scoped: bool,
    /// Byte offset of the path inside the template string, when known.
    pub offset: Option<usize>,
}

/// What a template uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    /// Every variable reference, in document order.
    pub references: Vec<Reference>,
    /// Every helper name called, in document order, without repeats.
    pub helpers: Vec<String>,
}

/// Parse a template with Handlebars' own parser and collect its variable references and
/// helper calls, through block bodies, `else` branches and subexpressions.
///
/// A name is a helper when it has parameters or hash arguments, opens a block (`{{#x}}`),
/// heads a subexpression, or is a known helper ([`HELPERS`]) used alone (`{{len}}`, which
/// Handlebars calls as a helper); any other `{{foo}}` is a path reference.
///
/// A syntax error comes back with the byte offset Handlebars reports for it.
pub fn analyze(src: &str) -> Result<Analysis, TemplateError> {
    let tpl = compile(src)?;
    let walk = Walk::of(&tpl);
    let offsets = walk.offsets(src);
    let mut analysis = Analysis::default();
    for (site, offset) in walk.sites.iter().zip(offsets) {
        match &site.kind {
            SiteKind::Ref { segments, .. } => analysis.references.push(Reference {
                segments: segments.clone(),
                scoped: site.scoped(),
                offset,
            }),
            SiteKind::Helper => {
                if !analysis.helpers.contains(&site.raw) {
                    analysis.helpers.push(site.raw.clone());
                }
            }
        }
    }
    Ok(analysis)
}

/// Render one string against a JSON context.
///
/// - Without `{{` the string comes back unchanged, without touching Handlebars.
/// - A string that is exactly one expression (`"{{inputs.replicas}}"`,
///   `"{{json inputs.platforms}}"`, `"{{default inputs.x 3}}"`, `"{{eq a b}}"`) keeps the
///   JSON type of its value; `json x` as a whole string gives `x` itself.
/// - Anything else renders to a string, without HTML escaping.
///
/// Strict: a missing variable is an error naming it ("`inputs.nope` is not defined"),
/// except as the first argument of `default`.
pub fn render_str(src: &str, ctx: &Value) -> Result<Value, TemplateError> {
    if !is_template(src) {
        return Ok(Value::String(src.to_owned()));
    }
    let mut tpl = compile(src)?;
    if src.starts_with("{{")
        && src.ends_with("}}")
        && tpl.elements.len() == 1
        && let TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) =
            &tpl.elements[0]
    {
        return render_single(src, &tpl, &ht.name, &ht.params, &ht.hash, ctx);
    }
    let walk = Walk::of(&tpl);
    helpers::soften_empty_blocks(&mut tpl);
    let hctx = Context::from(needed_context(&walk, ctx));
    let mut rc = RenderContext::new(None);
    let mut out = StringOutput::new();
    tpl.render(registry(), &hctx, &mut rc, &mut out)
        .map_err(|e| render_error(e, src, &walk, ctx))?;
    let text = out
        .into_string()
        .map_err(|e| TemplateError::new(e.to_string(), None))?;
    Ok(Value::String(text))
}

/// Render every string inside a JSON value: arrays and objects recursively (object keys
/// are not rendered); numbers, booleans and `null` are returned unchanged.
pub fn render_value(v: &Value, ctx: &Value) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => render_str(s, ctx)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_value(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, i) in map {
                out.insert(k.clone(), render_value(i, ctx)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// SPEC truthiness for `if`: `false`, `null`, `""`, `0`, `"0"`, `"false"` (any case, and
/// strings are trimmed first), `[]` and `{}` are false; everything else is true.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => {
            let s = s.trim();
            !(s.is_empty() || s == "0" || s.eq_ignore_ascii_case("false"))
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Parse with Handlebars' parser; its errors become [`TemplateError`]s with a byte offset.
fn compile(src: &str) -> Result<Template, TemplateError> {
    // The parser has `unwrap`s on paths its grammar should make unreachable; a template
    // from a workflow file must never take the process down with it.
    let parsed = std::panic::catch_unwind(|| Template::compile(src)).map_err(|_| {
        TemplateError::new(
            "invalid template: the Handlebars parser gave up on it",
            None,
        )
    })?;
    parsed.map_err(|e| {
        let offset = e
            .pos()
            .and_then(|(line, col)| byte_offset(src, line, col))
            .or_else(|| invalid_param_offset(src, e.reason()));
        let message = match e.reason() {
            handlebars::TemplateErrorReason::InvalidSyntax(pest) => {
                friendly_syntax(pest, offset == Some(src.len()))
            }
            other => other.to_string(),
        };
        TemplateError::new(message, offset)
    })
}

/// Pest's "expected helper_parameter, or trailing_tilde_to_omit_whitespace" in words.
fn friendly_syntax(pest: &str, at_end: bool) -> String {
    let word = |rule: &str| -> &'static str {
        match rule.trim() {
            "identifier" | "opt_identifier" => "a name",
            "path_inline" | "path_id" | "path_raw_id" | "reference" => "a path",
            "partial_identifier" | "opt_partial_identifier" => "a partial name",
            "subexpression" => "`(`",
            "helper_parameter" | "literal" => "a parameter",
            "hash" => "a `key=value` argument",
            "leading_tilde_to_omit_whitespace" | "trailing_tilde_to_omit_whitespace" => "`~`",
            "invert_tag_item" | "invert_tag" | "invert_chain_tag" => "`else`",
            "helper_block_end" => "a closing `{{/...}}` tag",
            _ => "",
        }
    };
    let list = |rules: &str| -> String {
        let mut words: Vec<&str> = Vec::new();
        for rule in rules.split(',').map(|r| r.trim().trim_start_matches("or ")) {
            let w = word(rule);
            if !w.is_empty() && !words.contains(&w) {
                words.push(w);
            }
        }
        match words.as_slice() {
            [] => String::new(),
            [one] => (*one).to_owned(),
            [init @ .., last] => format!("{} or {last}", init.join(", ")),
        }
    };
    let (unexpected, expected) = match pest.split_once(';') {
        Some((u, e)) => (u.trim().strip_prefix("unexpected "), e.trim()),
        None => (pest.trim().strip_prefix("unexpected "), pest.trim()),
    };
    let expected = expected
        .strip_prefix("expected ")
        .map(list)
        .unwrap_or_default();
    if at_end && pest.contains("helper_block_end") {
        return "invalid template syntax: a block is not closed (missing `{{/...}}`)".to_owned();
    }
    if unexpected.is_some_and(|u| u.contains("invert_tag")) {
        return "invalid template syntax: `else` outside a block, or a second `else`".to_owned();
    }
    if at_end {
        return "invalid template syntax: the template ends inside a `{{ }}` tag".to_owned();
    }
    if expected.is_empty() {
        format!("invalid template syntax: {pest}")
    } else {
        format!("invalid template syntax: expected {expected}")
    }
}

/// Where an `InvalidParam` error (which Handlebars reports without a position) points.
fn invalid_param_offset(src: &str, reason: &handlebars::TemplateErrorReason) -> Option<usize> {
    match reason {
        handlebars::TemplateErrorReason::InvalidParam(p) if !p.is_empty() => src.find(p.as_str()),
        _ => None,
    }
}

/// Byte offset of a 1-based (line, column) position counted the way pest counts it:
/// columns in characters, `\n` or `\r\n` ending a line.
fn byte_offset(src: &str, line: usize, col: usize) -> Option<usize> {
    let (mut l, mut c) = (1, 1);
    let mut chars = src.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        if (l, c) == (line, col) {
            return Some(i);
        }
        match ch {
            '\r' if chars.peek().is_some_and(|&(_, n)| n == '\n') => {
                chars.next();
                (l, c) = (l + 1, 1);
            }
            '\n' => (l, c) = (l + 1, 1),
            _ => c += 1,
        }
    }
    ((l, c) == (line, col)).then_some(src.len())
}

/// A string that is exactly one expression: evaluate it to a typed JSON value.
fn render_single(
    src: &str,
    tpl: &Template,
    name: &Parameter,
    params: &[Parameter],
    hash: &std::collections::HashMap<String, Parameter>,
    ctx: &Value,
) -> Result<Value, TemplateError> {
    let bare = params.is_empty() && hash.is_empty();
    let expr = match name {
        Parameter::Path(p) if bare && !HELPERS.contains(&p.raw_text()) => {
            // A bare path: look it up directly, no Handlebars context needed.
            match lookup(p, ctx) {
                Lookup::Found(v) => return Ok(v.clone()),
                Lookup::Missing => {
                    return Err(TemplateError::new(
                        not_defined(p.raw_text()),
                        src.find(p.raw_text()),
                    ));
                }
                Lookup::Unsupported => Parameter::Path(p.clone()),
            }
        }
        Parameter::Subexpression(_) if bare => name.clone(),
        // `json x` as a whole string is `x` itself.
        Parameter::Name(n) if n == "json" && params.len() == 1 => params[0].clone(),
        _ => Parameter::Subexpression(Subexpression::new(
            name.clone(),
            params.to_vec(),
            hash.clone(),
        )),
    };
    let walk = Walk::of(tpl);
    let hctx = Context::from(needed_context(&walk, ctx));
    let mut rc = RenderContext::new(None);
    let value = expr
        .expand(registry(), &hctx, &mut rc)
        .map_err(|e| render_error(e, src, &walk, ctx))?;
    if value.is_value_missing() {
        let raw = value
            .relative_path()
            .cloned()
            .unwrap_or_else(|| src.trim_matches(['{', '}', '~', ' ']).to_owned());
        return Err(TemplateError::new(not_defined(&raw), src.find(&raw)));
    }
    Ok(value.value().clone())
}

fn not_defined(path: &str) -> String {
    format!("`{path}` is not defined")
}

enum Lookup<'a> {
    Found(&'a Value),
    Missing,
    /// A path this lookup does not resolve on its own (`../x`, `@index`): ask Handlebars.
    Unsupported,
}

/// Resolve a root-level path in `ctx` the way Handlebars does (object keys, array indexes).
fn lookup<'a>(p: &handlebars::Path, ctx: &'a Value) -> Lookup<'a> {
    let (segments, anchor) = walk::path_segments(p);
    if matches!(anchor, Anchor::Up | Anchor::Local) {
        return Lookup::Unsupported;
    }
    match get_path(ctx, &segments) {
        Some(v) => Lookup::Found(v),
        None => Lookup::Missing,
    }
}

fn get_path<'a>(ctx: &'a Value, segments: &[String]) -> Option<&'a Value> {
    segments.iter().try_fold(ctx, |node, seg| match node {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The part of `ctx` a template can read: the subtrees under the root-level paths it
/// names, so that rendering one string does not copy the outputs of every step so far.
/// Falls back to the whole context when the template reaches around (`../`, partials).
fn needed_context(walk: &Walk, ctx: &Value) -> Value {
    if walk.opaque || !ctx.is_object() {
        return ctx.clone();
    }
    let mut prefixes: Vec<&[String]> = Vec::new();
    for site in &walk.sites {
        let SiteKind::Ref {
            segments,
            anchor,
            in_block,
            ..
        } = &site.kind
        else {
            continue;
        };
        match anchor {
            Anchor::Up => return ctx.clone(),
            Anchor::Local => continue,
            Anchor::Plain | Anchor::This if *in_block => continue,
            _ => {}
        }
        // Copy at the deepest point the path still runs through objects.
        let mut node = ctx;
        let mut depth = 0;
        for seg in segments {
            match node {
                Value::Object(m) => match m.get(seg) {
                    Some(child) => {
                        node = child;
                        depth += 1;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        if depth == 0 {
            if segments.is_empty() {
                return ctx.clone();
            }
            continue; // the first segment is missing: nothing to copy
        }
        prefixes.push(&segments[..depth]);
    }
    prefixes.sort();
    prefixes.dedup();
    let mut out = Value::Object(Map::new());
    let mut covered: Option<&[String]> = None;
    for prefix in prefixes {
        if covered.is_some_and(|c| prefix.starts_with(c)) {
            continue;
        }
        covered = Some(prefix);
        let src = get_path(ctx, prefix).cloned().unwrap_or(Value::Null);
        let mut slot = &mut out;
        for seg in &prefix[..prefix.len() - 1] {
            slot = slot
                .as_object_mut()
                .expect("intermediate prefixes are objects")
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if let Some(m) = slot.as_object_mut() {
            m.insert(prefix[prefix.len() - 1].clone(), src);
        }
    }
    out
}

/// Turn a Handlebars render error into a [`TemplateError`] that names the missing variable.
fn render_error(e: RenderError, src: &str, walk: &Walk, ctx: &Value) -> TemplateError {
    let offset_of = |pred: &dyn Fn(&Site) -> bool| -> Option<usize> {
        let i = walk.sites.iter().position(pred)?;
        walk.offsets(src).get(i).copied().flatten()
    };
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => TemplateError::new(
            not_defined(path),
            offset_of(&|s| matches!(s.kind, SiteKind::Ref { .. }) && &s.raw == path),
        ),
        RenderErrorReason::MissingVariable(None)
        | RenderErrorReason::ParamNotFoundForIndex(..)
        | RenderErrorReason::ParamNotFoundForName(..)
        | RenderErrorReason::InvalidJsonIndex(..) => {
            let helper = match e.reason() {
                RenderErrorReason::ParamNotFoundForIndex(h, i) => Some((*h, Some(*i))),
                RenderErrorReason::ParamNotFoundForName(h, _) => Some((*h, None)),
                _ => None,
            };
            if let Some(i) = missing_reference(walk, ctx, helper) {
                let offsets = walk.offsets(src);
                return TemplateError::new(not_defined(&walk.sites[i].raw), offsets[i]);
            }
            let message = match e.reason() {
                RenderErrorReason::ParamNotFoundForIndex(h, i) => {
                    format!("helper `{h}` is missing its argument {}", i + 1)
                }
                RenderErrorReason::ParamNotFoundForName(h, n) => {
                    format!("helper `{h}` is missing its argument `{n}`")
                }
                RenderErrorReason::MissingVariable(None) => {
                    "a value looked up (e.g. with `lookup`) is not defined".to_owned()
                }
                other => other.to_string(),
            };
            let helper_name = match e.reason() {
                RenderErrorReason::MissingVariable(None) => Some("lookup"),
                _ => helper.map(|(h, _)| h),
            };
            let offset = helper_name
                .and_then(|h| offset_of(&|s| matches!(s.kind, SiteKind::Helper) && s.raw == h));
            TemplateError::new(message, offset)
        }
        RenderErrorReason::HelperNotFound(name) => TemplateError::new(
            format!("unknown helper `{name}`"),
            offset_of(&|s| matches!(s.kind, SiteKind::Helper) && &s.raw == name),
        ),
        RenderErrorReason::Other(message) => {
            // our helpers' messages start with the path they are about: "`inputs.s` is ..."
            let path = message
                .strip_prefix('`')
                .and_then(|m| m.split_once('`'))
                .map(|(p, _)| p);
            let offset = path
                .and_then(|p| offset_of(&|s| matches!(s.kind, SiteKind::Ref { .. }) && s.raw == p));
            TemplateError::new(message.clone(), offset)
        }
        other => TemplateError::new(other.to_string(), None),
    }
}

/// The reference most likely behind a strict-mode failure: a root-level path that is not
/// in `ctx`, preferably a parameter of the helper that failed.
fn missing_reference(
    walk: &Walk,
    ctx: &Value,
    helper: Option<(&str, Option<usize>)>,
) -> Option<usize> {
    let missing: Vec<usize> = walk
        .sites
        .iter()
        .enumerate()
        .filter(|(_, s)| match &s.kind {
            SiteKind::Ref {
                segments, optional, ..
            } => !optional && !s.scoped() && get_path(ctx, segments).is_none(),
            SiteKind::Helper => false,
        })
        .map(|(i, _)| i)
        .collect();
    let parent_is = |i: &usize, exact: bool| {
        let SiteKind::Ref { parent, .. } = &walk.sites[*i].kind else {
            return false;
        };
        match (parent, helper) {
            (Some((p, idx)), Some((h, want))) => {
                p == h && (!exact || want.is_none() || *idx == want)
            }
            _ => false,
        }
    };
    missing
        .iter()
        .find(|i| parent_is(i, true))
        .or_else(|| missing.iter().find(|i| parent_is(i, false)))
        .or_else(|| missing.first())
        .copied()
}
