//! `workflow`: runs another workflow in-process as one step, with the same registry.
//!
//! The sub-workflow comes from the project's `workflows/NAME.yaml` (`name`) or from a file
//! (`file`, relative to the project). It is checked and its inputs resolved like a
//! top-level run; its step output lines and step outcomes come through as this step's
//! progress; cancelling this step cancels the sub-run (which still runs its `finally`).
//! Nesting is limited to [`MAX_DEPTH`] levels so that a workflow calling itself ends.

// `ToolError` is the error type the `Tool` trait fixes.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Map, Value, json};

use super::{Progress, Tool, ToolContext, ToolError, ToolFuture};
use crate::engine::{EventKind, MAX_DEPTH, RunOptions};
use crate::report::RunStatus;
use crate::workflow::catalog::{self, Found, NameError};
use crate::workflow::model::ErrorClass;
use crate::{Engine, Plan};

/// The `workflow` tool.
pub struct SubWorkflow;

impl Tool for SubWorkflow {
    fn name(&self) -> &str {
        "workflow"
    }

    fn description(&self) -> &str {
        "Runs another workflow (a NAME from the project's `workflows/`, or a file) in-process \
         as one step and returns its status, run id and every step's outputs."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The workflow to run (exactly one of `name` and `file`) and its inputs.",
            "additionalProperties": false,
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": "^[a-z0-9][a-z0-9_-]*$",
                    "description": "A workflow of the project: `workflows/NAME.yaml` (or `.yml`, `.json`)."
                },
                "file": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A workflow file (YAML or JSON), relative to the project folder."
                },
                "inputs": {
                    "type": "object",
                    "additionalProperties": true,
                    "description": "The sub-workflow's inputs, checked against its declared inputs (defaults apply)."
                }
            },
            "oneOf": [
                {"required": ["name"], "not": {"required": ["file"]}},
                {"required": ["file"], "not": {"required": ["name"]}}
            ]
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "The sub-run's outcome.",
            "required": ["status", "run_id", "outputs"],
            "properties": {
                "status": {
                    "type": "string",
                    "enum": ["succeeded"],
                    "description": "Always `succeeded` in a result: a failed or cancelled sub-run is a failure of this step."
                },
                "run_id": {"type": "string", "description": "The sub-run's id (`PARENT_RUN.STEP`)."},
                "outputs": {
                    "type": "object",
                    "additionalProperties": true,
                    "description": "Every step's outputs by step id (`null` for steps that did not succeed)."
                }
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "SUBWORKFLOW_FAILED",
                "The sub-workflow ran and failed (class `tool_error`); `details` holds its run report.",
            ),
            (
                "SUBWORKFLOW_INVALID",
                "The sub-workflow file or its inputs have problems (class `invalid_input`); `details` holds the diagnostics.",
            ),
            (
                "DEPTH_EXCEEDED",
                "Sub-workflows nest deeper than 8 levels (class `invalid_input`), e.g. a workflow calling itself.",
            ),
        ]
    }

    /// A sub-workflow may run host tools (`shell`), so it counts as one.
    fn host_exec(&self) -> bool {
        true
    }

    fn destructive(&self) -> bool {
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(run(args, ctx))
    }
}

async fn run(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    if ctx.depth >= MAX_DEPTH {
        return Err(ToolError::invalid(format!(
            "sub-workflows nest deeper than {MAX_DEPTH} levels (does a workflow call itself?)"
        ))
        .with_code("DEPTH_EXCEEDED"));
    }
    let found = workflow_path(&args, &ctx)?;
    let shown = found.display(&ctx.project_dir);
    let workflow = found.load(&ctx.registry).map_err(|d| {
        let first = d.0.first().map(|x| x.message.clone()).unwrap_or_default();
        ToolError::invalid(format!(
            "the workflow {shown} is invalid ({} problems): {first}",
            d.0.len()
        ))
        .with_code("SUBWORKFLOW_INVALID")
        .with_details(json!({"diagnostics": d.0}))
    })?;
    let given: IndexMap<String, Value> = match args.get("inputs") {
        Some(Value::Object(m)) => m.clone().into_iter().collect(),
        _ => IndexMap::new(),
    };
    let inputs = workflow.resolve_inputs(&given).map_err(|d| {
        let msgs: Vec<String> = d.0.iter().map(|x| x.message.clone()).collect();
        ToolError::invalid(format!(
            "the inputs do not fit {shown}: {}",
            msgs.join("; ")
        ))
        .with_code("SUBWORKFLOW_INVALID")
        .with_details(json!({"diagnostics": d.0}))
    })?;
    let name = workflow.doc.name.clone();
    let plan = Arc::new(Plan::new(Arc::new(workflow), &ctx.registry));
    let run_id = format!("{}.{}", ctx.run_id, ctx.step_id);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<crate::Event>();
    let progress = ctx.progress.clone();
    // The sub-run's step output and outcomes become this step's progress.
    let forward = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            match e.kind {
                EventKind::StepOutput {
                    step, stream, line, ..
                } => progress(Progress::Output {
                    stream: if stream == "stderr" {
                        "stderr"
                    } else {
                        "stdout"
                    },
                    line: format!("{step} | {line}"),
                }),
                EventKind::StepFinished { step, status, .. } => progress(Progress::Part {
                    id: step,
                    status: status.as_str().to_owned(),
                    current: None,
                    total: None,
                }),
                EventKind::StepSkipped { step, .. } => progress(Progress::Part {
                    id: step,
                    status: "skipped".into(),
                    current: None,
                    total: None,
                }),
                _ => {}
            }
        }
    });
    let opts = RunOptions {
        inputs,
        max_parallel: None,
        run_id: Some(run_id),
        project_dir: ctx.project_dir.clone(),
        workspace: ctx.workspace.clone(),
        cancel: ctx.cancel.clone(),
        finally_cancel: tokio_util::sync::CancellationToken::new(),
        context: Map::new(),
        depth: ctx.depth + 1,
        secrets: ctx.secrets.to_vec(),
        recorder: None,
        context_sink: ctx.context_sink.clone(),
        resume: None,
        confine_paths: ctx.roots.is_some(),
    };
    let report = Engine::new(Arc::clone(&ctx.registry))
        .run(plan, opts, tx)
        .await;
    let _ = forward.await;
    match report.status {
        RunStatus::Succeeded => {
            let outputs: Map<String, Value> = report
                .steps
                .iter()
                .map(|(id, s)| (id.clone(), s.outputs.clone()))
                .collect();
            Ok(json!({"status": "succeeded", "run_id": report.run_id, "outputs": outputs}))
        }
        RunStatus::Cancelled => Err(ToolError::new(
            ErrorClass::Cancelled,
            format!("the sub-workflow `{name}` was cancelled"),
        )
        .with_details(report.to_json())),
        RunStatus::Failed => {
            let failed: Vec<String> = report
                .steps
                .iter()
                .filter(|(_, s)| s.status == crate::report::StepStatus::Failed && s.error.is_some())
                .map(|(id, s)| {
                    format!(
                        "{id}: {}",
                        s.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
                    )
                })
                .collect();
            let why = if failed.is_empty() {
                "its timeout passed".to_owned()
            } else {
                failed.join("; ")
            };
            Err(ToolError::new(
                ErrorClass::ToolError,
                format!("the sub-workflow `{name}` failed: {why}"),
            )
            .with_code("SUBWORKFLOW_FAILED")
            .with_details(report.to_json()))
        }
    }
}

/// `name` → `workflows/NAME.yaml` (`.yml`, `.json`) of the project, else a shipped
/// workflow ([`crate::workflow::catalog`]); `file` → that file.
fn workflow_path(args: &Value, ctx: &ToolContext) -> Result<Found, ToolError> {
    match (
        args.get("name").and_then(Value::as_str),
        args.get("file").and_then(Value::as_str),
    ) {
        (Some(name), None) => catalog::resolve(&ctx.project_dir, name).map_err(|e| match e {
            NameError::Refused(m) => ToolError::invalid(m),
            NameError::NotFound(m) => ToolError::new(ErrorClass::NotFound, m),
        }),
        (None, Some(file)) => {
            let p = ctx.path("file", file)?;
            if p.is_file() {
                Ok(Found::File(p))
            } else {
                Err(ToolError::new(
                    ErrorClass::NotFound,
                    format!("no workflow file {}", p.display()),
                ))
            }
        }
        _ => Err(ToolError::invalid("give exactly one of `name` and `file`")),
    }
}
