//! Runs and step logs as MCP resources: `ckflow://runs/{id}` (the run's detail, JSON, as
//! `GetRun` gives it) and `ckflow://runs/{id}/steps/{step}/log` (the step's log, text).
//! `resources/list` lists the newest runs; both shapes are resource templates.

use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};

use super::McpServer;
use crate::store::{RunFilter, StoreError, percent_decode};

/// The URI scheme and prefix of run resources.
const PREFIX: &str = "ckflow://runs/";
/// How many runs `resources/list` lists.
const LISTED: usize = 50;

/// The resource templates.
pub(crate) fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new("ckflow://runs/{id}", "run")
            .with_title("A ckflow run")
            .with_description(
                "A run's detail: status, inputs (secrets masked), steps with outputs and errors.",
            )
            .with_mime_type("application/json"),
        ResourceTemplate::new("ckflow://runs/{id}/steps/{step}/log", "step-log")
            .with_title("A step's log")
            .with_description(
                "The output of one step of a run, each line prefixed by its stream \
                 ([stdout], [stderr], [ckflow]). `step` is percent-encoded (`build%5B2%5D`).",
            )
            .with_mime_type("text/plain"),
    ])
}

/// The newest runs, as resources.
pub(crate) async fn list(server: &McpServer) -> Result<ListResourcesResult, ErrorData> {
    let store = server.inner.runner.store().clone();
    let runs = tokio::task::spawn_blocking(move || {
        store.list_runs(&RunFilter {
            limit: Some(LISTED),
            ..RunFilter::default()
        })
    })
    .await
    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let resources = runs
        .into_iter()
        .map(|r| {
            Resource::new(format!("{PREFIX}{}", r.id), format!("run {}", r.id))
                .with_title(format!("{} ({})", r.workflow, r.status))
                .with_mime_type("application/json")
        })
        .collect();
    Ok(ListResourcesResult::with_all_items(resources))
}

/// What a resource URI names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Run(String),
    Log { run: String, step: String },
}

fn parse(uri: &str) -> Option<Target> {
    let rest = uri.strip_prefix(PREFIX)?;
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [run] if !run.is_empty() => Some(Target::Run(percent_decode(run)?)),
        [run, "steps", step, "log"] if !run.is_empty() && !step.is_empty() => Some(Target::Log {
            run: percent_decode(run)?,
            step: percent_decode(step)?,
        }),
        _ => None,
    }
}

fn not_found(uri: &str, why: impl std::fmt::Display) -> ErrorData {
    ErrorData::resource_not_found(format!("{why}"), Some(serde_json::json!({ "uri": uri })))
}

/// Read a run or a step log.
pub(crate) async fn read(server: &McpServer, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let Some(target) = parse(uri) else {
        return Err(not_found(
            uri,
            format_args!(
                "no resource {uri}: ckflow serves ckflow://runs/{{id}} and \
                 ckflow://runs/{{id}}/steps/{{step}}/log"
            ),
        ));
    };
    let store = server.inner.runner.store().clone();
    let owned = uri.to_owned();
    let contents = tokio::task::spawn_blocking(move || -> Result<ResourceContents, ErrorData> {
        let uri = owned.as_str();
        let store_error = |e: StoreError| match e {
            StoreError::InvalidId { .. } | StoreError::RunNotFound(_) => not_found(uri, e),
            other => ErrorData::internal_error(other.to_string(), None),
        };
        match target {
            Target::Run(id) => {
                let detail = store
                    .get_run(&id)
                    .map_err(store_error)?
                    .ok_or_else(|| not_found(uri, format_args!("no run {id}")))?;
                let text = serde_json::to_string_pretty(&detail)
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                Ok(ResourceContents::text(text, uri).with_mime_type("application/json"))
            }
            Target::Log { run, step } => {
                let known = store.log_steps(&run).map_err(store_error)?;
                if !known.contains(&step) {
                    let detail = store.get_run(&run).map_err(store_error)?;
                    let has_step = detail
                        .as_ref()
                        .is_some_and(|d| d.steps.iter().any(|s| s.id == step));
                    if !has_step {
                        return Err(not_found(
                            uri,
                            format_args!("run {run} has no step {step:?} with a log"),
                        ));
                    }
                }
                let text = store.read_log(&run, &step).map_err(store_error)?;
                Ok(ResourceContents::text(text, uri).with_mime_type("text/plain"))
            }
        }
    })
    .await
    .map_err(|e| ErrorData::internal_error(e.to_string(), None))??;
    Ok(ReadResourceResult::new(vec![contents]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse() {
        assert_eq!(
            parse("ckflow://runs/20260423-114512-3fa9c2e1"),
            Some(Target::Run("20260423-114512-3fa9c2e1".into()))
        );
        assert_eq!(
            parse("ckflow://runs/r1/steps/build%5B2%5D/log"),
            Some(Target::Log {
                run: "r1".into(),
                step: "build[2]".into()
            })
        );
        for bad in [
            "ckflow://runs/",
            "ckflow://runs/a/b",
            "ckflow://runs/a/steps//log",
            "ckflow://other/a",
            "file:///etc/passwd",
            "ckflow://runs/a/steps/%zz/log",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
