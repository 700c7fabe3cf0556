//! The tools the server lists: the ckflow tools (fixed schemas, written here) and every
//! registry tool under its own name (its input and output schema from the registry). Built
//! once at start-up; `tools/list` and `ListTools` hand out the prepared values.

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::ToolRegistry;

/// The ckflow tools, by the name clients call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    ExecuteWorkflow,
    ExecuteCustomWorkflow,
    ValidateWorkflow,
    ListWorkflows,
    GetRun,
    ListRuns,
    CancelRun,
    ListTools,
}

impl Builtin {
    const ALL: [Builtin; 8] = [
        Builtin::ExecuteWorkflow,
        Builtin::ExecuteCustomWorkflow,
        Builtin::ValidateWorkflow,
        Builtin::ListWorkflows,
        Builtin::GetRun,
        Builtin::ListRuns,
        Builtin::CancelRun,
        Builtin::ListTools,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Builtin::ExecuteWorkflow => "ExecuteWorkflow",
            Builtin::ExecuteCustomWorkflow => "ExecuteCustomWorkflow",
            Builtin::ValidateWorkflow => "ValidateWorkflow",
            Builtin::ListWorkflows => "ListWorkflows",
            Builtin::GetRun => "GetRun",
            Builtin::ListRuns => "ListRuns",
            Builtin::CancelRun => "CancelRun",
            Builtin::ListTools => "ListTools",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Builtin::ExecuteWorkflow => {
                "Run a workflow by NAME: the project's `workflows/NAME.yaml`, else one shipped \
                 with ckflow such as `containerize` (see ListWorkflows). \
                 Waits for the end and returns the run report (isError when the run failed or \
                 was cancelled); with `wait: false` returns {run_id, session_id} at once. \
                 Sends a progress notification per finished step when the request has a \
                 progress token; cancelling the request cancels the run (`finally` still runs)."
            }
            Builtin::ExecuteCustomWorkflow => {
                "Run a workflow given inline: YAML or JSON text, or a JSON object \
                 (`apiVersion: ckflow/v1`, `name`, `steps`). Checked first: an invalid \
                 workflow returns isError with every diagnostic (line, column, path). \
                 Host-executing tools (`shell`, `workflow`) are refused unless the server \
                 runs with --allow-host-exec. Same results, progress and cancellation as \
                 ExecuteWorkflow."
            }
            Builtin::ValidateWorkflow => {
                "Check a workflow (YAML or JSON text, or a JSON object) without running it: \
                 {valid, diagnostics: [{code, message, path, line, column, help?}]}, every \
                 problem at once. Line and column point into the text as given (for an \
                 object, into its pretty-printed JSON); `path` is like `steps[2].with.tag`."
            }
            Builtin::ListWorkflows => {
                "The project's workflows (`workflows/*.yaml|yml|json`) and the ones shipped \
                 with ckflow (`containerize`): name (what ExecuteWorkflow takes), origin, \
                 description and inputs of each."
            }
            Builtin::GetRun => {
                "Everything about one run: status, inputs (secrets masked), every step with \
                 status, attempts, outputs and error. Works for running runs too."
            }
            Builtin::ListRuns => {
                "Past and running runs of the project, newest first (`limit` default 20, \
                 optional `status` and `session_id` filters)."
            }
            Builtin::CancelRun => {
                "Cancel a running run: no new step starts, running steps are stopped (their \
                 processes killed), `finally` runs."
            }
            Builtin::ListTools => {
                "The tool registry: every tool workflows may use in `tool:`, with its input \
                 and output JSON Schema, error codes and default failure-routing rules."
            }
        }
    }

    fn input_schema(self) -> Value {
        let workflow_arg = json!({
            "type": ["string", "object"],
            "description": "The workflow: YAML or JSON text, or a JSON object (apiVersion: ckflow/v1, name, steps, …)."
        });
        let inputs_arg = json!({
            "type": "object",
            "additionalProperties": true,
            "description": "Values for the workflow's declared inputs (defaults fill the rest)."
        });
        let session_arg = json!({
            "type": "string",
            "pattern": SESSION_ID_PATTERN,
            "description": "Tie this run to a session: its shared context ({{context.KEY}}) and workspace. Omitted: a new session, whose id the result returns."
        });
        let wait_arg = json!({
            "type": "boolean",
            "default": true,
            "description": "true: return the report when the run ends; false: return {run_id, session_id} at once (follow it with GetRun)."
        });
        let run_id_arg = json!({"type": "string", "minLength": 1, "description": "The run's id (from a run result or ListRuns)."});
        let schema = match self {
            Builtin::ExecuteWorkflow => json!({
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]*$",
                        "description": "A workflow of the project (`workflows/NAME.yaml`, .yml, .json) or a shipped one (`containerize`). No paths."
                    },
                    "inputs": inputs_arg, "session_id": session_arg, "wait": wait_arg
                },
                "required": ["name"]
            }),
            Builtin::ExecuteCustomWorkflow => json!({
                "properties": {
                    "workflow": workflow_arg, "inputs": inputs_arg,
                    "session_id": session_arg, "wait": wait_arg
                },
                "required": ["workflow"]
            }),
            Builtin::ValidateWorkflow => json!({
                "properties": {"workflow": workflow_arg},
                "required": ["workflow"]
            }),
            Builtin::ListWorkflows | Builtin::ListTools => json!({"properties": {}}),
            Builtin::GetRun | Builtin::CancelRun => json!({
                "properties": {"run_id": run_id_arg},
                "required": ["run_id"]
            }),
            Builtin::ListRuns => json!({
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20,
                              "description": "At most this many runs (the newest)."},
                    "status": {"type": "string",
                               "enum": ["running", "succeeded", "failed", "cancelled", "interrupted"],
                               "description": "Only runs in this state."},
                    "session_id": {"type": "string", "description": "Only runs of this session."}
                }
            }),
        };
        let mut schema = schema;
        schema["type"] = json!("object");
        schema["additionalProperties"] = json!(false);
        schema
    }

    fn annotations(self) -> ToolAnnotations {
        let a = ToolAnnotations::with_title(self.name());
        match self {
            Builtin::ExecuteWorkflow | Builtin::ExecuteCustomWorkflow => a
                .read_only(false)
                .destructive(true)
                .idempotent(false)
                .open_world(true),
            Builtin::CancelRun => a
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
            Builtin::ValidateWorkflow
            | Builtin::ListWorkflows
            | Builtin::GetRun
            | Builtin::ListRuns
            | Builtin::ListTools => a.read_only(true).open_world(false),
        }
    }
}

/// A session id, as the store accepts it (`validate_id`), for the schemas.
const SESSION_ID_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$";

/// The argument every registry tool takes over MCP besides its own (see [`Entry::Registry`]).
pub(crate) const SESSION_ARG: &str = "session_id";

/// What a listed tool name stands for.
#[derive(Clone)]
pub(crate) enum Entry {
    /// A ckflow tool.
    Builtin(Builtin),
    /// A registry tool, called directly.
    Registry {
        tool: Arc<dyn crate::Tool>,
        /// Whether the server takes `session_id` for itself: the call then runs in that
        /// session and is recorded in its history, and the tool never sees the argument.
        /// False only for a tool whose own input schema has a `session_id` property (it
        /// keeps its meaning for the tool).
        session_arg: bool,
    },
}

/// A registry tool's input schema as MCP lists it: the tool's own, plus an optional
/// `session_id` property, unless the tool declares one itself (then the schema is left
/// alone and the second value is false).
fn with_session_arg(mut input: Value) -> (Value, bool) {
    let Some(obj) = input.as_object_mut() else {
        return (input, false);
    };
    let properties = obj
        .entry("properties")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(properties) = properties.as_object_mut() else {
        return (input, false);
    };
    if properties.contains_key(SESSION_ARG) {
        return (input, false);
    }
    properties.insert(
        SESSION_ARG.to_owned(),
        json!({
            "type": "string",
            "pattern": SESSION_ID_PATTERN,
            "description": "Optional, taken by the ckflow server (the tool never sees it): run \
                            this call in the ckflow session with this id (created if missing). \
                            The call is recorded in the session's history (tool name, status, \
                            duration, error; argument names only, never their values), and \
                            the tool gets the session's workspace and shared context. \
                            Omitted: the call belongs to no session and is recorded nowhere."
        }),
    );
    (input, true)
}

/// Every tool the server lists, prepared once.
pub(crate) struct Catalog {
    tools: Vec<Tool>,
    by_name: HashMap<String, (usize, Entry)>,
    /// The `ListTools` result (it never changes).
    list_tools: CallToolResult,
}

impl Catalog {
    pub(crate) fn new(registry: &ToolRegistry) -> Catalog {
        let mut tools = Vec::new();
        let mut by_name = HashMap::new();
        for b in Builtin::ALL {
            let mut t = Tool::new(b.name(), b.description(), object(b.input_schema()));
            t.annotations = Some(b.annotations());
            by_name.insert(b.name().to_owned(), (tools.len(), Entry::Builtin(b)));
            tools.push(t);
        }
        let mut described = Vec::new();
        for tool in registry.iter() {
            let name = tool.name().to_owned();
            let mut d = ToolRegistry::describe(tool.as_ref());
            d["destructive"] = Value::Bool(tool.destructive());
            described.push(d);
            if by_name.contains_key(&name) || !valid_tool_name(&name) {
                tracing::warn!(tool = %name, "registry tool not offered over MCP: its name is taken or not a valid MCP tool name");
                continue;
            }
            let mut input = match tool.input_schema() {
                v @ Value::Object(_) => v,
                _ => json!({}),
            };
            if input.get("type").is_none() {
                input["type"] = json!("object");
            }
            let (input, session_arg) = with_session_arg(input);
            let mut t = Tool::new(name.clone(), tool.description().to_owned(), object(input));
            let output = tool.output_schema();
            // MCP wants an object schema here; a tool whose result is not an object keeps its
            // schema in ListTools only.
            if output.get("type") == Some(&json!("object")) {
                t.output_schema = Some(object(output));
            }
            let mut annotations = ToolAnnotations::with_title(name.clone())
                .read_only(false)
                .destructive(tool.destructive() || tool.host_exec());
            if tool.host_exec() {
                annotations = annotations.open_world(true);
            }
            t.annotations = Some(annotations);
            let entry = Entry::Registry {
                tool: Arc::clone(tool),
                session_arg,
            };
            by_name.insert(name, (tools.len(), entry));
            tools.push(t);
        }
        let list_tools = CallToolResult::structured(json!({ "tools": described }));
        Catalog {
            tools,
            by_name,
            list_tools,
        }
    }

    /// Every tool, ckflow's first.
    pub(crate) fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// A tool's definition by name.
    pub(crate) fn tool(&self, name: &str) -> Option<&Tool> {
        self.by_name.get(name).map(|(i, _)| &self.tools[*i])
    }

    /// What a name stands for.
    pub(crate) fn entry(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|(_, e)| e)
    }

    /// The `ListTools` result.
    pub(crate) fn list_tools_result(&self) -> CallToolResult {
        self.list_tools.clone()
    }
}

/// MCP tool names: 1 to 128 of `A-Z a-z 0-9 _ - .`.
fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A JSON object for a schema (anything else becomes an empty object schema).
fn object(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_listed_once_with_an_object_schema() {
        let registry = ToolRegistry::builtin();
        let c = Catalog::new(&registry);
        let mut names = std::collections::HashSet::new();
        for t in c.tools() {
            assert!(names.insert(t.name.to_string()), "{} twice", t.name);
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
            assert!(t.annotations.is_some(), "{}", t.name);
        }
        for b in Builtin::ALL {
            assert!(matches!(c.entry(b.name()), Some(Entry::Builtin(x)) if *x == b));
        }
        for name in registry.names() {
            assert!(c.tool(name).is_some(), "{name} missing");
        }
        let shell = c.tool("shell").unwrap().annotations.clone().unwrap();
        assert_eq!(shell.destructive_hint, Some(true));
        let validate = c
            .tool("ValidateWorkflow")
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        assert_eq!(validate.read_only_hint, Some(true));
    }

    /// A tool with a `session_id` argument of its own.
    struct OwnSession;

    impl crate::Tool for OwnSession {
        fn name(&self) -> &str {
            "own_session"
        }
        fn description(&self) -> &str {
            "Takes a session_id of its own."
        }
        fn input_schema(&self) -> Value {
            json!({"type": "object", "properties": {"session_id": {"type": "integer"}}})
        }
        fn output_schema(&self) -> Value {
            json!({"type": "object"})
        }
        fn call(&self, args: Value, _ctx: crate::ToolContext) -> crate::tools::ToolFuture {
            Box::pin(async move { Ok(args) })
        }
    }

    #[test]
    fn registry_tools_take_a_session_id_unless_they_have_their_own() {
        let mut registry = ToolRegistry::builtin();
        registry.register(OwnSession);
        let c = Catalog::new(&registry);
        for name in registry.names() {
            let t = c.tool(name).unwrap();
            let Some(Entry::Registry { session_arg, .. }) = c.entry(name) else {
                panic!("{name} is a registry tool");
            };
            let prop = &t.input_schema["properties"][SESSION_ARG];
            if name == "own_session" {
                assert!(!session_arg);
                assert_eq!(prop, &json!({"type": "integer"}), "the tool's own is kept");
                continue;
            }
            assert!(session_arg, "{name}");
            assert_eq!(prop["type"], "string", "{name}");
            assert!(prop["description"].as_str().unwrap().contains("history"));
            let required = t.input_schema.get("required").and_then(Value::as_array);
            assert!(
                !required.is_some_and(|r| r.contains(&json!(SESSION_ARG))),
                "{name}: optional"
            );
        }
        // The registry's own schemas (ListTools, `ckflow tools`) stay as they are.
        let own = registry
            .get("validate_dockerfile")
            .unwrap()
            .tool
            .input_schema();
        assert!(own["properties"].get(SESSION_ARG).is_none());
        // noop has no `properties`: it gets one.
        let noop = c.tool("noop").unwrap();
        assert_eq!(noop.input_schema["additionalProperties"], true);
        assert!(noop.input_schema["properties"][SESSION_ARG].is_object());
    }
}
