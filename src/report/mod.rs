//! The run report and the reporters that consume engine events.
//!
//! [`RunReport`] is the record a run leaves behind (SPEC §2: `ckflow run --json`, MCP
//! `ExecuteWorkflow`); the engine builds it once, at the end, from the dispatcher's state.
//! The reporters ([`json_lines`], [`terminal`]) read the [`crate::engine::Event`] stream as it
//! comes and never talk back to the engine.

pub mod json_lines;
pub mod terminal;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tools::ToolError;
use crate::workflow::model::Then;

/// The status of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started yet (its needs are not finished). Never left in a finished report.
    Pending,
    /// Started: an attempt, a retry delay or a recovery step is under way.
    Running,
    /// The tool succeeded (every instance, for `for_each`).
    Succeeded,
    /// The tool failed after retries and routing (the step may still count as succeeded
    /// for ordering, see [`StepReport::error`] and `continue_on_error`).
    Failed,
    /// Not run: its `when` or `if` did not hold, or `fail_fast` stopped it.
    Skipped,
    /// Not run, or stopped, because the run was cancelled.
    Cancelled,
}

impl StepStatus {
    /// The snake_case name (`succeeded`, …) used in reports and templates.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step succeeded, was skipped, or failed with its failure tolerated.
    Succeeded,
    /// A step failed (and its failure was not tolerated), or the run's `timeout` passed.
    Failed,
    /// The run was cancelled (Ctrl-C, SIGTERM, a cancelled token).
    Cancelled,
}

impl RunStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The process exit code of SPEC §2: 0 succeeded, 1 failed, 130 cancelled.
    pub fn exit_code(self) -> i32 {
        match self {
            RunStatus::Succeeded => 0,
            RunStatus::Failed => 1,
            RunStatus::Cancelled => 130,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `when: success` and a needed step failed (or was cancelled).
    NeedsFailed,
    /// `when: success` and every needed step was skipped.
    NeedsSkipped,
    /// `when: failure` and no needed step failed (for a `finally` step without needs: the
    /// main steps did not fail).
    NoFailure,
    /// `if` rendered to a false value.
    If,
    /// `fail_fast`: an earlier step failed, so no new step starts.
    FailFast,
}

impl SkipReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NeedsFailed => "needs_failed",
            SkipReason::NeedsSkipped => "needs_skipped",
            SkipReason::NoFailure => "no_failure",
            SkipReason::If => "if",
            SkipReason::FailFast => "fail_fast",
        }
    }

    /// A short explanation for people.
    pub fn explain(self) -> &'static str {
        match self {
            SkipReason::NeedsFailed => "a needed step failed",
            SkipReason::NeedsSkipped => "every needed step was skipped",
            SkipReason::NoFailure => "`when: failure` and nothing failed",
            SkipReason::If => "`if` is false",
            SkipReason::FailFast => "fail_fast: an earlier step failed",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a failure-routing rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// The workflow's own `on_failure` list.
    Workflow,
    /// The default rules of the failed step's tool.
    Tool,
}

/// One firing of a failure-routing rule for a step (SPEC §1.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingRecord {
    /// The rule: `on_failure[N]` for the workflow's rules, `TOOL.default_rules[N]` for a
    /// tool's.
    pub rule: String,
    /// Whether the rule is the workflow's or the tool's.
    pub source: RuleSource,
    /// The `for_each` instance that failed, when the step has `for_each`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<usize>,
    /// The recovery tool that ran (`route.tool`), if the rule has a route.
    pub tool: Option<String>,
    /// The recovery step's status: `succeeded` or `failed` (`succeeded` when there is no
    /// route).
    pub status: StepStatus,
    /// The recovery tool's result, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The recovery tool's error, when it failed (the step then fails for good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolError>,
    /// What the rule decided: `retry`, `continue` or `fail` (not applied when the recovery
    /// step failed).
    pub then: Then,
}

/// The record of one step in a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Its final status.
    pub status: StepStatus,
    /// Tool calls made (retries and routed retries included; for `for_each`, the most any
    /// instance made). 0 when it never started.
    pub attempts: u32,
    /// From its first attempt's start to its end, in milliseconds (0 when it never started).
    pub duration_ms: u64,
    /// Its outputs: the `outputs` map rendered, or the tool's whole result; a list in item
    /// order for `for_each`; `null` when it did not succeed.
    pub outputs: Value,
    /// The failure (`class`, `code`, `message`, `details`) when it failed, else `null`.
    pub error: Option<ToolError>,
    /// It failed, but the failure counts as success for ordering and the run
    /// (`continue_on_error`, or a rule's `then: continue`). Only present when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tolerated: bool,
    /// The routing rules that fired for it, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routing: Vec<RoutingRecord>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_reason: Option<SkipReason>,
}

/// The report of a finished run (SPEC §2), secrets redacted.
///
/// In JSON, [`RunReport::kept`] shows as fields of the steps' entries: `"kept": true` for a
/// step a resume kept whole, `"kept_instances": N` for a `for_each` step that ran again
/// with N of its instances kept (both only present when set).
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The run's id (`r-20261123-113000-ab12cd`).
    pub run_id: String,
    /// The workflow's `name`.
    pub workflow: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// Wall time of the whole run, `finally` included, in milliseconds.
    pub duration_ms: u64,
    /// Every step, main steps then `finally` steps, in file order.
    pub steps: IndexMap<String, StepReport>,
    /// Why the run stopped when no step explains it (the state store failed). Only present
    /// when set.
    pub error: Option<String>,
    /// A resumed run: what it kept from the earlier attempt(s), by step id (only steps that
    /// kept something). Empty for a run that is not a resume.
    pub kept: IndexMap<String, Kept>,
}

/// What a resumed run kept of one step from the earlier attempt(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Kept {
    /// The whole step: it did not run again; its record is the earlier one.
    pub step: bool,
    /// A `for_each` step that ran again: how many of its instances did not (they had
    /// succeeded with the same items; their outputs are in the list).
    pub instances: usize,
}

impl Serialize for RunReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            run_id: &'a str,
            workflow: &'a str,
            status: RunStatus,
            duration_ms: u64,
            steps: StepsOut<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
        }
        Out {
            run_id: &self.run_id,
            workflow: &self.workflow,
            status: self.status,
            duration_ms: self.duration_ms,
            steps: StepsOut(self),
            error: self.error.as_deref(),
        }
        .serialize(s)
    }
}

/// The steps of a report, each with its `kept` fields.
struct StepsOut<'a>(&'a RunReport);

impl Serialize for StepsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.0;
        if r.kept.is_empty() {
            return r.steps.serialize(s);
        }
        #[derive(Serialize)]
        struct StepOut<'a> {
            #[serde(flatten)]
            report: &'a StepReport,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            kept: bool,
            #[serde(skip_serializing_if = "is_zero")]
            kept_instances: usize,
        }
        let mut m = s.serialize_map(Some(r.steps.len()))?;
        for (id, report) in &r.steps {
            let kept = r.kept.get(id).copied().unwrap_or_default();
            m.serialize_entry(
                id,
                &StepOut {
                    report,
                    kept: kept.step,
                    kept_instances: kept.instances,
                },
            )?;
        }
        m.end()
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl<'de> Deserialize<'de> for RunReport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RunReport, D::Error> {
        #[derive(Deserialize)]
        struct In {
            run_id: String,
            workflow: String,
            status: RunStatus,
            duration_ms: u64,
            steps: IndexMap<String, StepIn>,
            #[serde(default)]
            error: Option<String>,
        }
        #[derive(Deserialize)]
        struct StepIn {
            #[serde(flatten)]
            report: StepReport,
            #[serde(default)]
            kept: bool,
            #[serde(default)]
            kept_instances: usize,
        }
        let r = In::deserialize(d)?;
        let mut kept = IndexMap::new();
        let steps = r
            .steps
            .into_iter()
            .map(|(id, s)| {
                if s.kept || s.kept_instances > 0 {
                    let k = Kept {
                        step: s.kept,
                        instances: s.kept_instances,
                    };
                    kept.insert(id.clone(), k);
                }
                (id, s.report)
            })
            .collect();
        Ok(RunReport {
            run_id: r.run_id,
            workflow: r.workflow,
            status: r.status,
            duration_ms: r.duration_ms,
            steps,
            error: r.error,
            kept,
        })
    }
}

impl RunReport {
    /// The process exit code for this run (0, 1 or 130).
    pub fn exit_code(&self) -> i32 {
        self.status.exit_code()
    }

    /// What a resume kept of step `id` (nothing for a run that is not a resume).
    pub fn kept(&self, id: &str) -> Kept {
        self.kept.get(id).copied().unwrap_or_default()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A duration for people: `850ms`, `1.2s`, `2m05s`.
pub fn human_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        if s < 3600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(status: StepStatus) -> StepReport {
        StepReport {
            status,
            attempts: 1,
            duration_ms: 3,
            outputs: json!({"x": 1}),
            error: None,
            tolerated: false,
            routing: vec![],
            skipped_reason: None,
        }
    }

    fn report(kept: &[(&str, Kept)]) -> RunReport {
        let mut steps = IndexMap::new();
        steps.insert("a".to_owned(), step(StepStatus::Succeeded));
        steps.insert("b".to_owned(), step(StepStatus::Succeeded));
        steps.insert("c".to_owned(), step(StepStatus::Succeeded));
        RunReport {
            run_id: "r-1".into(),
            workflow: "w".into(),
            status: RunStatus::Succeeded,
            duration_ms: 9,
            steps,
            error: None,
            kept: kept.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn a_report_without_kept_steps_serialises_as_before() {
        let r = report(&[]);
        let v = r.to_json();
        assert_eq!(
            v,
            json!({"run_id": "r-1", "workflow": "w", "status": "succeeded", "duration_ms": 9,
                   "steps": {"a": {"status": "succeeded", "attempts": 1, "duration_ms": 3, "outputs": {"x": 1}, "error": null},
                             "b": {"status": "succeeded", "attempts": 1, "duration_ms": 3, "outputs": {"x": 1}, "error": null},
                             "c": {"status": "succeeded", "attempts": 1, "duration_ms": 3, "outputs": {"x": 1}, "error": null}}})
        );
        let back: RunReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn kept_steps_and_instances_are_fields_of_the_steps_and_read_back() {
        let r = report(&[
            (
                "a",
                Kept {
                    step: true,
                    instances: 0,
                },
            ),
            (
                "b",
                Kept {
                    step: false,
                    instances: 3,
                },
            ),
        ]);
        let v = r.to_json();
        assert_eq!(v["steps"]["a"]["kept"], true);
        assert!(v["steps"]["a"].get("kept_instances").is_none());
        assert_eq!(v["steps"]["b"]["kept_instances"], 3);
        assert!(v["steps"]["b"].get("kept").is_none());
        assert!(v["steps"]["c"].get("kept").is_none());
        assert_eq!(v["steps"]["b"]["outputs"]["x"], 1);
        let keys: Vec<&String> = v["steps"]["a"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "status",
                "attempts",
                "duration_ms",
                "outputs",
                "error",
                "kept"
            ]
        );
        let back: RunReport = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.kept("c"), Kept::default());
    }
}
