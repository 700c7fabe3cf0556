//! `ckflow plan FILE`: the levels and what each step would call, templates unrendered.

use std::fmt::Write;
use std::sync::Arc;

use super::exit;
use crate::plan::Dag;
use crate::workflow::duration::format_duration;
use crate::{Plan, ToolRegistry};

/// Arguments of `ckflow plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A workflow file, or the NAME of one in the project's `workflows/` or shipped with
    /// ckflow.
    #[arg(value_name = "FILE|NAME")]
    pub file: String,
}

/// Run it.
pub fn run(a: Args) -> i32 {
    let registry = ToolRegistry::builtin();
    let Some(w) = super::load_target(&a.file, &super::project(), &registry) else {
        return exit::INVALID;
    };
    let plan = Plan::new(Arc::new(w), &registry);
    out!("{}", render(&plan));
    exit::OK
}

/// The text `ckflow plan` prints.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let doc = &plan.workflow.doc;
    let _ = writeln!(
        out,
        "workflow {}: {} step{} in {} level{}, concurrency {}{}",
        doc.name,
        plan.main.steps.len(),
        if plan.main.steps.len() == 1 { "" } else { "s" },
        plan.main.levels.len(),
        if plan.main.levels.len() == 1 { "" } else { "s" },
        plan.concurrency,
        plan.timeout
            .map(|t| format!(", timeout {}", format_duration(t)))
            .unwrap_or_default()
    );
    dag(&mut out, &plan.main);
    if !plan.finally.steps.is_empty() {
        let _ = writeln!(out, "finally:");
        dag(&mut out, &plan.finally);
    }
    out
}

fn dag(out: &mut String, d: &Dag) {
    for (n, level) in d.levels.iter().enumerate() {
        let _ = writeln!(out, "level {n}:");
        for &i in level {
            let s = &d.steps[i];
            let mut line = format!("  {} -> {}", s.id(), s.step.tool);
            if !s.step.with.is_empty() {
                line.push(' ');
                line.push_str(&serde_json::to_string(&s.step.with).unwrap_or_default());
            }
            let mut extra = Vec::new();
            if !s.needs.is_empty() {
                extra.push(format!(
                    "needs {}",
                    s.needs
                        .iter()
                        .map(|&x| d.steps[x].id())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if s.step.when != crate::workflow::model::When::Success {
                extra.push(format!("when {:?}", s.step.when).to_lowercase());
            }
            if let Some(c) = &s.step.if_ {
                extra.push(format!("if {}", c));
            }
            if let Some(f) = &s.step.for_each {
                extra.push(format!("for_each {}", f));
            }
            if s.retry.max_attempts > 1 {
                extra.push(format!("up to {} attempts", s.retry.max_attempts));
            }
            if let Some(t) = s.timeout {
                extra.push(format!("timeout {}", format_duration(t)));
            }
            if s.continue_on_error {
                extra.push("continue_on_error".into());
            }
            if !extra.is_empty() {
                line.push_str(&format!("  ({})", extra.join("; ")));
            }
            let _ = writeln!(out, "{line}");
        }
    }
}
