//! Failure routing (SPEC §1.3): which rule fires for a failure that used its retries.
//!
//! Rules are tried in order, the workflow's `on_failure` first, then the failed tool's
//! default rules; the first whose `match` fits and that has fired fewer than `max` times
//! for this step (or `for_each` instance) fires. The dispatcher owns the fire counts and
//! runs the recovery step; this module only decides.

use crate::report::RuleSource;
use crate::tools::ToolError;
use crate::workflow::model::{Match, Rule};

/// A rule that fires.
#[derive(Debug, Clone)]
pub(crate) struct Fired {
    /// `on_failure[N]` or `TOOL.default_rules[N]`.
    pub name: String,
    /// Whose rule it is.
    pub source: RuleSource,
    /// Its position in its list (with `source`, the key of its fire count).
    pub index: usize,
    /// The rule itself.
    pub rule: Rule,
}

/// Whether `m` fits a failure of `step` (calling `tool`) with `err`. Every field given must
/// fit; an empty field fits anything; errors compare with the class or the code, ignoring
/// case.
pub(crate) fn fits(m: &Match, step: &str, tool: &str, err: &ToolError) -> bool {
    (m.step.is_empty() || m.step.iter().any(|s| s == step))
        && (m.tool.is_empty() || m.tool.iter().any(|t| t == tool))
        && (m.error.is_empty()
            || m.error.iter().any(|e| {
                e.eq_ignore_ascii_case(err.class.as_str())
                    || err
                        .code
                        .as_deref()
                        .is_some_and(|c| e.eq_ignore_ascii_case(c))
            }))
}

/// The first rule that fires, given how often each rule already fired for this step.
pub(crate) fn pick(
    workflow_rules: &[Rule],
    tool_rules: &[Rule],
    step: &str,
    tool: &str,
    err: &ToolError,
    fired: impl Fn(RuleSource, usize) -> u32,
) -> Option<Fired> {
    let ours = workflow_rules
        .iter()
        .enumerate()
        .map(|(i, r)| (RuleSource::Workflow, i, r));
    let theirs = tool_rules
        .iter()
        .enumerate()
        .map(|(i, r)| (RuleSource::Tool, i, r));
    ours.chain(theirs)
        .find(|(source, i, r)| fits(&r.matcher, step, tool, err) && fired(*source, *i) < r.max)
        .map(|(source, index, rule)| Fired {
            name: match source {
                RuleSource::Workflow => format!("on_failure[{index}]"),
                RuleSource::Tool => format!("{tool}.default_rules[{index}]"),
            },
            source,
            index,
            rule: rule.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::model::{ErrorClass, Then};

    fn rule(step: &[&str], error: &[&str], max: u32) -> Rule {
        Rule {
            matcher: Match {
                step: step.iter().map(|s| s.to_string()).collect(),
                tool: vec![],
                error: error.iter().map(|s| s.to_string()).collect(),
            },
            route: None,
            then: Then::Fail,
            max,
        }
    }

    #[test]
    fn first_fitting_rule_under_its_max_fires() {
        let err = ToolError::new(ErrorClass::BuildFailed, "x").with_code("DOCKERFILE_INVALID");
        let rules = vec![
            rule(&["other"], &[], 1),
            rule(&["build"], &["dockerfile_invalid"], 1),
            rule(&[], &["BUILD_FAILED"], 2),
        ];
        let f = pick(&rules, &[], "build", "build_image", &err, |_, _| 0).unwrap();
        assert_eq!((f.name.as_str(), f.index), ("on_failure[1]", 1));
        // Rule 1 has used its one firing: rule 2 is next.
        let f = pick(&rules, &[], "build", "build_image", &err, |_, i| {
            u32::from(i == 1)
        })
        .unwrap();
        assert_eq!(f.index, 2);
        // Tool rules come after the workflow's.
        let tool_rules = vec![rule(&[], &[], 1)];
        let f = pick(&rules, &tool_rules, "build", "build_image", &err, |s, _| {
            if s == RuleSource::Workflow { 9 } else { 0 }
        })
        .unwrap();
        assert_eq!(f.name, "build_image.default_rules[0]");
        assert!(pick(&rules, &[], "build", "t", &err, |_, _| 9).is_none());
    }
}
