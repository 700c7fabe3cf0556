//! Semantic checks after the schema (SPEC §1.4): ids, needs, cycles, tools, each step's
//! `with` against its tool's input schema, templates and their references, input defaults,
//! durations and routing rules. Every check runs; every problem is collected.

use std::collections::{HashMap, HashSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use super::diagnostic::{Code, Diagnostic, did_you_mean};
use super::duration::parse_duration;
use super::load::{Loaded, escape_segment};
use super::model::{ErrorClass, Step, WorkflowDoc};
use crate::template;
use crate::tools::ToolRegistry;

/// Which section a step is in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Section {
    Steps,
    Finally,
}

impl Section {
    fn key(self) -> &'static str {
        match self {
            Section::Steps => "steps",
            Section::Finally => "finally",
        }
    }
}

/// Where in a step a template stands: decides which variables exist there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    With,
    If,
    ForEach,
    Env,
    Outputs,
    RouteWith,
    WorkflowEnv,
}

struct Checker<'a> {
    loaded: &'a Loaded,
    doc: &'a WorkflowDoc,
    registry: &'a ToolRegistry,
    diags: Vec<Diagnostic>,
    /// id -> (section, index) of the first step with that id.
    ids: HashMap<&'a str, (Section, usize)>,
    /// Ancestors of each step (by id), computed on demand.
    ancestors: HashMap<(Section, usize), HashSet<&'a str>>,
}

/// Run every semantic check. `loaded` gives positions; `doc` is the typed document.
pub fn check(loaded: &Loaded, doc: &WorkflowDoc, registry: &ToolRegistry) -> Vec<Diagnostic> {
    let mut c = Checker {
        loaded,
        doc,
        registry,
        diags: Vec::new(),
        ids: HashMap::new(),
        ancestors: HashMap::new(),
    };
    c.ids_and_needs();
    c.cycles(Section::Steps);
    c.cycles(Section::Finally);
    c.inputs();
    c.tools_and_with();
    c.durations_and_limits();
    c.rules();
    c.templates();
    c.diags
}

impl<'a> Checker<'a> {
    fn steps(&self, s: Section) -> &'a [Step] {
        match s {
            Section::Steps => &self.doc.steps,
            Section::Finally => &self.doc.finally,
        }
    }

    fn ptr(s: Section, i: usize) -> String {
        format!("/{}/{i}", s.key())
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn ids_and_needs(&mut self) {
        for sec in [Section::Steps, Section::Finally] {
            for (i, st) in self.steps(sec).iter().enumerate() {
                if let Some((osec, oi)) = self.ids.get(st.id.as_str()).copied() {
                    let other = self.loaded.pos(&format!("{}/id", Self::ptr(osec, oi)));
                    let mut d = self.loaded.diag(
                        Code::DuplicateStep,
                        &format!("{}/id", Self::ptr(sec, i)),
                        format!("the step id `{}` is used twice", st.id),
                    );
                    d.help = Some(format!(
                        "the first `{}` is at line {}; step ids must be unique across `steps` and `finally`",
                        st.id, other.line
                    ));
                    self.push(d);
                } else {
                    self.ids.insert(st.id.as_str(), (sec, i));
                }
            }
        }
        for sec in [Section::Steps, Section::Finally] {
            for (i, st) in self.steps(sec).iter().enumerate() {
                for (n, need) in st.needs.iter().enumerate() {
                    let p = format!("{}/needs/{n}", Self::ptr(sec, i));
                    if need == &st.id {
                        let mut d = self.loaded.diag(
                            Code::SelfNeed,
                            &p,
                            format!("the step `{need}` needs itself"),
                        );
                        d.help = Some("remove it from its own `needs`".into());
                        self.push(d);
                        continue;
                    }
                    match self.ids.get(need.as_str()).copied() {
                        None => {
                            let mut d = self.loaded.diag(
                                Code::UnknownNeed,
                                &p,
                                format!(
                                    "`needs` names `{need}`, which is not a step of this workflow"
                                ),
                            );
                            let names = self.ids.keys().copied().collect::<Vec<_>>();
                            if let Some(s) = did_you_mean(need, names) {
                                d.help = Some(format!("did you mean `{s}`?"));
                            }
                            self.push(d);
                        }
                        Some((osec, _)) if osec != sec => {
                            let mut d = self.loaded.diag(
                                Code::CrossSectionNeed,
                                &p,
                                format!(
                                    "`{}` is in `{}` but needs `{need}` from `{}`",
                                    st.id,
                                    sec.key(),
                                    osec.key()
                                ),
                            );
                            d.help = Some(
                                "`finally` steps run after the whole DAG and may only need other `finally` steps; main steps cannot wait for `finally`".into(),
                            );
                            self.push(d);
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// Every cycle, each reported whole (`a -> b -> c -> a`), one per strongly connected
    /// component, starting from the component's step that comes first in the file.
    fn cycles(&mut self, sec: Section) {
        let steps = self.steps(sec);
        let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(steps.len(), steps.len());
        let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| g.add_node(i)).collect();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, st) in steps.iter().enumerate() {
            index.entry(st.id.as_str()).or_insert(i);
        }
        for (i, st) in steps.iter().enumerate() {
            for need in &st.needs {
                if let Some(&j) = index.get(need.as_str())
                    && j != i
                {
                    // Edge from the step to what it needs: a cycle reads in `needs` order.
                    g.add_edge(nodes[i], nodes[j], ());
                }
            }
        }
        let mut sccs: Vec<Vec<usize>> = tarjan_scc(&g)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut v: Vec<usize> = c.into_iter().map(|n| g[n]).collect();
                v.sort_unstable();
                v
            })
            .collect();
        sccs.sort();
        for comp in sccs {
            let members: HashSet<usize> = comp.iter().copied().collect();
            let start = comp[0];
            let path = find_cycle(start, &members, |i| {
                steps[i]
                    .needs
                    .iter()
                    .filter_map(|n| index.get(n.as_str()).copied())
                    .collect()
            });
            let mut names: Vec<&str> = path.iter().map(|&i| steps[i].id.as_str()).collect();
            names.push(steps[start].id.as_str());
            let second = steps[path.get(1).copied().unwrap_or(start)].id.as_str();
            let need_pos = steps[start]
                .needs
                .iter()
                .position(|n| n == second)
                .unwrap_or(0);
            let mut d = self.loaded.diag(
                Code::Cycle,
                &format!("{}/needs/{need_pos}", Self::ptr(sec, start)),
                format!("the steps' needs form a cycle: {}", names.join(" -> ")),
            );
            d.help = Some("a workflow is a DAG: remove one of these `needs`".into());
            self.push(d);
        }
    }

    fn inputs(&mut self) {
        for (name, spec) in &self.doc.inputs {
            let base = format!("/inputs/{}", escape_segment(name));
            if let Some(def) = &spec.default
                && !spec.ty.accepts(def)
            {
                self.push(self.loaded.diag(
                    Code::InputDefault,
                    &format!("{base}/default"),
                    format!(
                        "the default of input `{name}` is {}, not of its type `{}`",
                        json_kind(def),
                        spec.ty.as_str()
                    ),
                ));
            }
            if let Some(allowed) = &spec.allowed {
                for (i, a) in allowed.iter().enumerate() {
                    if !spec.ty.accepts(a) {
                        self.push(self.loaded.diag(
                            Code::InputDefault,
                            &format!("{base}/enum/{i}"),
                            format!(
                                "the allowed value {a} of input `{name}` is not of its type `{}`",
                                spec.ty.as_str()
                            ),
                        ));
                    }
                }
                if let Some(def) = &spec.default
                    && spec.ty.accepts(def)
                    && !allowed.contains(def)
                {
                    self.push(self.loaded.diag(
                        Code::InputDefault,
                        &format!("{base}/default"),
                        format!(
                            "the default {def} of input `{name}` is not one of its allowed values"
                        ),
                    ));
                }
            }
            if spec.required && spec.default.is_some() {
                // Not an error: a default makes `required` moot. Nothing to report.
            }
        }
    }

    fn tools_and_with(&mut self) {
        let names: Vec<&str> = self.registry.names().collect();
        for sec in [Section::Steps, Section::Finally] {
            for (i, st) in self.steps(sec).iter().enumerate() {
                let base = Self::ptr(sec, i);
                let Some(reg) = self.registry.get(&st.tool) else {
                    let mut d = self.loaded.diag(
                        Code::UnknownTool,
                        &format!("{base}/tool"),
                        format!("no tool named `{}` in the registry", st.tool),
                    );
                    d.help = Some(match did_you_mean(&st.tool, names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? (`ckflow tools` lists them all)"),
                        None => "`ckflow tools` lists the tools".into(),
                    });
                    self.push(d);
                    continue;
                };
                self.check_with(reg.tool.name(), &st.with, &format!("{base}/with"));
            }
        }
    }

    /// Check `with` against the tool's input schema. Template strings can render to any
    /// type, so errors on a node that is a template are left for run time.
    fn check_with(&mut self, tool: &str, with: &serde_json::Map<String, Value>, base: &str) {
        let Some(reg) = self.registry.get(tool) else {
            return;
        };
        let Some(v) = reg.input_validator() else {
            return;
        };
        let inst = Value::Object(with.clone());
        for err in v.iter_errors(&inst) {
            let sub = err.instance_path().as_str();
            if let Some(Value::String(s)) = inst.pointer(sub)
                && template::is_template(s)
            {
                continue;
            }
            let pointer = format!("{base}{sub}");
            let (pointer, msg) = match err.kind() {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let key = unexpected.first().cloned().unwrap_or_default();
                    let schema = reg.tool.input_schema();
                    let props: Vec<String> = schema["properties"]
                        .as_object()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    let hint = did_you_mean(&key, props.iter().map(String::as_str))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    (
                        format!("{pointer}/{}", escape_segment(&key)),
                        format!("`{tool}` has no argument `{key}`{hint}"),
                    )
                }
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    (pointer, format!("`{tool}` needs the argument {property}"))
                }
                _ => (pointer, format!("argument of `{tool}`: {err}")),
            };
            let mut d = self.loaded.diag(Code::ToolInput, &pointer, msg);
            if d.path.ends_with(']') || d.path.contains('.') {
                // keep
            }
            d.help = Some(format!("`ckflow tools show {tool}` gives its input schema"));
            self.push(d);
        }
    }

    fn durations_and_limits(&mut self) {
        let mut check = |this: &mut Self, pointer: String, s: &Option<String>| {
            if let Some(s) = s
                && parse_duration(s).is_none()
            {
                let mut d =
                    this.loaded
                        .diag(Code::Duration, &pointer, format!("`{s}` is not a duration"));
                d.help = Some("write a number and a unit: 500ms, 30s, 10m, 2h".into());
                this.push(d);
            }
        };
        check(self, "/timeout".into(), &self.doc.timeout.clone());
        if let Some(d) = &self.doc.defaults {
            check(self, "/defaults/timeout".into(), &d.timeout.clone());
            if let Some(r) = d.retry.clone() {
                self.retry_limits("/defaults/retry", &r, &mut check);
            }
        }
        for sec in [Section::Steps, Section::Finally] {
            for (i, st) in self.steps(sec).iter().enumerate() {
                let base = Self::ptr(sec, i);
                check(self, format!("{base}/timeout"), &st.timeout);
                if let Some(r) = &st.retry {
                    self.retry_limits(&format!("{base}/retry"), r, &mut check);
                }
                if let Some(outs) = &st.outputs {
                    for (k, o) in outs {
                        check(
                            self,
                            format!("{base}/outputs/{}/ttl", escape_segment(k)),
                            &o.ttl,
                        );
                    }
                }
            }
        }
    }

    fn retry_limits(
        &mut self,
        base: &str,
        r: &super::model::Retry,
        check: &mut impl FnMut(&mut Self, String, &Option<String>),
    ) {
        check(self, format!("{base}/delay"), &r.delay);
        check(self, format!("{base}/max_delay"), &r.max_delay);
        if let (Some(d), Some(m)) = (
            r.delay.as_deref().and_then(parse_duration),
            r.max_delay.as_deref().and_then(parse_duration),
        ) && m < d
        {
            self.push(self.loaded.diag(
                Code::BadLimit,
                &format!("{base}/max_delay"),
                format!(
                    "`max_delay` ({}) is shorter than `delay` ({})",
                    r.max_delay.as_deref().unwrap_or_default(),
                    r.delay.as_deref().unwrap_or_default()
                ),
            ));
        }
        if let Some(i) =
            r.on.as_ref()
                .and_then(|on| on.iter().position(|c| *c == ErrorClass::Cancelled))
        {
            self.push(self.loaded.diag(
                Code::BadLimit,
                &format!("{base}/on/{i}"),
                "a cancelled step is never retried; remove `cancelled` from `on`",
            ));
        }
    }

    fn rules(&mut self) {
        let tool_names: Vec<&str> = self.registry.names().collect();
        for (r, rule) in self.doc.on_failure.iter().enumerate() {
            let base = format!("/on_failure/{r}");
            for (i, s) in rule.matcher.step.iter().enumerate() {
                if !self.ids.contains_key(s.as_str()) {
                    let mut d = self.loaded.diag(
                        Code::RuleReference,
                        &format!(
                            "{base}/match/step{}",
                            if rule_field_is_list(self.loaded, &base, "step") {
                                format!("/{i}")
                            } else {
                                String::new()
                            }
                        ),
                        format!("the rule matches the step `{s}`, which does not exist"),
                    );
                    if let Some(x) = did_you_mean(s, self.ids.keys().copied()) {
                        d.help = Some(format!("did you mean `{x}`?"));
                    }
                    self.push(d);
                }
            }
            for (i, t) in rule.matcher.tool.iter().enumerate() {
                if self.registry.get(t).is_none() {
                    let mut d = self.loaded.diag(
                        Code::RuleReference,
                        &format!(
                            "{base}/match/tool{}",
                            if rule_field_is_list(self.loaded, &base, "tool") {
                                format!("/{i}")
                            } else {
                                String::new()
                            }
                        ),
                        format!("the rule matches the tool `{t}`, which is not in the registry"),
                    );
                    if let Some(x) = did_you_mean(t, tool_names.iter().copied()) {
                        d.help = Some(format!("did you mean `{x}`?"));
                    }
                    self.push(d);
                }
            }
            if let Some(route) = &rule.route {
                if self.registry.get(&route.tool).is_none() {
                    let mut d = self.loaded.diag(
                        Code::RuleReference,
                        &format!("{base}/route/tool"),
                        format!(
                            "the rule routes to the tool `{}`, which is not in the registry",
                            route.tool
                        ),
                    );
                    if let Some(x) = did_you_mean(&route.tool, tool_names.iter().copied()) {
                        d.help = Some(format!("did you mean `{x}`?"));
                    }
                    self.push(d);
                } else {
                    self.check_with(&route.tool, &route.with, &format!("{base}/route/with"));
                }
            }
        }
    }

    fn templates(&mut self) {
        for (k, v) in &self.doc.env {
            let p = format!("/env/{}", escape_segment(k));
            self.template_str(&v.0, &p, Place::WorkflowEnv, None);
        }
        for sec in [Section::Steps, Section::Finally] {
            for (i, st) in self.steps(sec).iter().enumerate() {
                let base = Self::ptr(sec, i);
                let me = Some((sec, i));
                self.template_value(
                    &Value::Object(st.with.clone()),
                    &format!("{base}/with"),
                    Place::With,
                    me,
                );
                if let Some(v) = &st.if_ {
                    self.template_value(v, &format!("{base}/if"), Place::If, me);
                }
                if let Some(v) = &st.for_each {
                    self.template_value(v, &format!("{base}/for_each"), Place::ForEach, me);
                }
                for (k, v) in &st.env {
                    self.template_str(
                        &v.0,
                        &format!("{base}/env/{}", escape_segment(k)),
                        Place::Env,
                        me,
                    );
                }
                if let Some(outs) = &st.outputs {
                    for (k, o) in outs {
                        let p = if self
                            .loaded
                            .value
                            .pointer(&format!("{base}/outputs/{}/value", escape_segment(k)))
                            .is_some()
                        {
                            format!("{base}/outputs/{}/value", escape_segment(k))
                        } else {
                            format!("{base}/outputs/{}", escape_segment(k))
                        };
                        self.template_value(&o.value, &p, Place::Outputs, me);
                    }
                }
            }
        }
        for (r, rule) in self.doc.on_failure.iter().enumerate() {
            if let Some(route) = &rule.route {
                self.template_value(
                    &Value::Object(route.with.clone()),
                    &format!("/on_failure/{r}/route/with"),
                    Place::RouteWith,
                    None,
                );
            }
        }
    }

    fn template_value(
        &mut self,
        v: &Value,
        pointer: &str,
        place: Place,
        me: Option<(Section, usize)>,
    ) {
        match v {
            Value::String(s) => self.template_str(s, pointer, place, me),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.template_value(x, &format!("{pointer}/{i}"), place, me);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    self.template_value(x, &format!("{pointer}/{}", escape_segment(k)), place, me);
                }
            }
            _ => {}
        }
    }

    fn template_str(&mut self, s: &str, pointer: &str, place: Place, me: Option<(Section, usize)>) {
        if !template::is_template(s) {
            return;
        }
        let analysis = match template::analyze(s) {
            Ok(a) => a,
            Err(e) => {
                let mut d = self.loaded.diag(
                    Code::TemplateSyntax,
                    pointer,
                    format!(
                        "the template does not parse: {}",
                        e.message.split(": expected ").next().unwrap_or(&e.message)
                    ),
                );
                d.help = Some("check that every `{{` has its `}}` and every `{{#block}}` its `{{/block}}`; templates are Handlebars: `{{inputs.name}}`, `{{json steps.a.outputs}}`, `{{#if x}}…{{/if}}`".into());
                self.push(d);
                return;
            }
        };
        for h in &analysis.helpers {
            if !template::HELPERS.contains(&h.as_str()) {
                let mut d = self.loaded.diag(
                    Code::UnknownHelper,
                    pointer,
                    format!("the template calls `{h}`, which is not a helper"),
                );
                d.help = Some(match did_you_mean(h, template::HELPERS.iter().copied()) {
                    Some(x) => format!("did you mean `{x}`?"),
                    None => format!("helpers: {}", template::HELPERS.join(", ")),
                });
                self.push(d);
            }
        }
        // `route.with` runs in the failed step's context, which has `item`/`index` when the
        // failed step is a `for_each` instance.
        let has_item = place == Place::RouteWith
            || (me.is_some_and(|(sec, i)| self.steps(sec)[i].for_each.is_some())
                && place != Place::ForEach);
        for r in &analysis.references {
            if r.scoped {
                continue;
            }
            let Some(root) = r.segments.first() else {
                continue;
            };
            match root.as_str() {
                "inputs" => {
                    if let Some(name) = r.segments.get(1)
                        && !self.doc.inputs.contains_key(name)
                    {
                        let mut d = self.loaded.diag(
                            Code::TemplateInputRef,
                            pointer,
                            format!("the template uses `inputs.{name}`, but no input `{name}` is declared"),
                        );
                        d.help = Some(
                            match did_you_mean(name, self.doc.inputs.keys().map(String::as_str)) {
                                Some(x) => format!("did you mean `inputs.{x}`?"),
                                None => format!(
                                    "declare it under `inputs:` (e.g. `{name}: {{type: string}}`)"
                                ),
                            },
                        );
                        self.push(d);
                    }
                }
                "steps" => {
                    let Some(id) = r.segments.get(1) else {
                        continue;
                    };
                    if !self.ids.contains_key(id.as_str()) {
                        let mut d = self.loaded.diag(
                            Code::TemplateStepRef,
                            pointer,
                            format!("the template uses `steps.{id}`, but there is no step `{id}`"),
                        );
                        if let Some(x) = did_you_mean(id, self.ids.keys().copied()) {
                            d.help = Some(format!("did you mean `steps.{x}`?"));
                        }
                        self.push(d);
                        continue;
                    }
                    if let Some((sec, i)) = me {
                        let up = self.is_upstream(sec, i, id);
                        if !up {
                            let own = self.steps(sec)[i].id.clone();
                            let mut d = self.loaded.diag(
                                Code::TemplateStepRef,
                                pointer,
                                if &own == id {
                                    format!("the step `{own}` uses its own `steps.{id}`; use `result` inside `outputs`")
                                } else {
                                    format!("the template uses `steps.{id}`, but `{own}` does not (transitively) need `{id}`")
                                },
                            );
                            if &own != id {
                                d.help = Some(format!("add `{id}` to the `needs` of `{own}`"));
                            }
                            self.push(d);
                        }
                    }
                }
                "env" | "run" | "workflow" | "context" => {}
                "item" | "index" => {
                    if !has_item {
                        let mut d = self.loaded.diag(
                            Code::TemplateVariable,
                            pointer,
                            format!("`{root}` exists only in a step with `for_each`"),
                        );
                        d.help = Some("add `for_each` to the step, or use another variable".into());
                        self.push(d);
                    }
                }
                "result" => {
                    if place != Place::Outputs {
                        let mut d = self.loaded.diag(
                            Code::TemplateVariable,
                            pointer,
                            "`result` exists only in a step's `outputs`",
                        );
                        d.help = Some("other steps read `steps.<id>.outputs`".into());
                        self.push(d);
                    }
                }
                "recovery" => {
                    if !matches!(place, Place::With | Place::RouteWith) {
                        self.push(self.loaded.diag(
                            Code::TemplateVariable,
                            pointer,
                            "`recovery` exists only in `with` (a retried step reads its recovery step's result)",
                        ));
                    }
                }
                "failed" => {
                    if place != Place::RouteWith {
                        self.push(self.loaded.diag(
                            Code::TemplateVariable,
                            pointer,
                            "`failed` exists only in a rule's `route.with`",
                        ));
                    }
                }
                other => {
                    let roots = [
                        "inputs", "env", "steps", "run", "workflow", "context", "item", "index",
                        "result", "recovery", "failed",
                    ];
                    let mut d = self.loaded.diag(
                        Code::TemplateVariable,
                        pointer,
                        format!("the template uses `{other}`, which is not a variable"),
                    );
                    d.help = Some(match did_you_mean(other, roots) {
                        Some(x) => format!("did you mean `{x}`?"),
                        None => format!("variables: {}", roots.join(", ")),
                    });
                    self.push(d);
                }
            }
        }
    }

    /// Whether step `id` is a (transitive) dependency of step `i` of `sec`. Finally steps see
    /// every main step (they run after the DAG) and their own upstream `finally` steps.
    fn is_upstream(&mut self, sec: Section, i: usize, id: &str) -> bool {
        if sec == Section::Finally && self.ids.get(id).is_some_and(|(s, _)| *s == Section::Steps) {
            return true;
        }
        if !self.ancestors.contains_key(&(sec, i)) {
            let steps = self.steps(sec);
            let index: HashMap<&str, usize> = steps
                .iter()
                .enumerate()
                .map(|(j, s)| (s.id.as_str(), j))
                .collect();
            let mut seen: HashSet<&'a str> = HashSet::new();
            let mut stack: Vec<usize> = vec![i];
            while let Some(j) = stack.pop() {
                for n in &steps[j].needs {
                    if let Some(&k) = index.get(n.as_str())
                        && seen.insert(steps[k].id.as_str())
                    {
                        stack.push(k);
                    }
                }
            }
            self.ancestors.insert((sec, i), seen);
        }
        self.ancestors[&(sec, i)].contains(id)
    }
}

fn rule_field_is_list(loaded: &Loaded, base: &str, field: &str) -> bool {
    loaded
        .value
        .pointer(&format!("{base}/match/{field}"))
        .is_some_and(Value::is_array)
}

/// A cycle through `start` inside one strongly connected component, as step indices in
/// `needs` order (start first, not repeated at the end).
fn find_cycle(
    start: usize,
    members: &HashSet<usize>,
    next: impl Fn(usize) -> Vec<usize>,
) -> Vec<usize> {
    // Breadth-first search from `start` back to `start`, staying in the component: gives a
    // shortest cycle, which is the most readable one.
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(u) = queue.pop_front() {
        for v in next(u) {
            if !members.contains(&v) {
                continue;
            }
            if v == start {
                let mut path = vec![u];
                let mut cur = u;
                while cur != start {
                    cur = prev[&cur];
                    path.push(cur);
                }
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(v) {
                e.insert(u);
                queue.push_back(v);
            }
        }
    }
    vec![start]
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
