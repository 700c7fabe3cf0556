//! The workflow language as typed serde models (SPEC §1).
//!
//! These types are what a workflow file *means* once it has passed the JSON Schema
//! (`schemas/workflow.schema.json`). Loading never deserialises straight from user text into
//! them: the loader first checks the document against the schema, which reports every
//! structural problem with its line and column, and only then converts it. Every struct
//! denies unknown fields so that the two layers cannot silently drift apart.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "ckflow/v1";

/// A whole workflow document (the root of a `ckflow/v1` file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDoc {
    /// The JSON Schema an editor should use for this file; ignored by ckflow.
    #[serde(default, rename = "$schema", skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Always `ckflow/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The workflow's name, `[a-z0-9][a-z0-9_-]*`.
    pub name: String,
    /// Free text shown by `ckflow workflows` and MCP `ListWorkflows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Typed inputs, in file order; checked before anything runs.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inputs: IndexMap<String, InputSpec>,
    /// Environment for every process and container step (templates allowed).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, EnvValue>,
    /// Most steps running at once (default: the number of CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Deadline for the whole run (a duration such as `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// When true, no new step starts after the first failure.
    #[serde(default)]
    pub fail_fast: bool,
    /// Values every step gets unless it sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,
    /// The steps of the DAG, in file order.
    pub steps: Vec<Step>,
    /// Failure-routing rules, tried in order before the tools' default rules (SPEC §1.3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Rule>,
    /// Steps that always run after the DAG, after success, failure or cancel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<Step>,
}

/// The declared type of an input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Any text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON array.
    Array,
    /// A JSON object.
    Object,
}

impl InputType {
    /// The name used in the language (`string`, `integer`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }

    /// Whether a JSON value is of this type.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            InputType::String => v.is_string(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Number => v.is_number(),
            InputType::Boolean => v.is_boolean(),
            InputType::Array => v.is_array(),
            InputType::Object => v.is_object(),
        }
    }
}

/// One declared input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The input's type; values are checked against it before the run starts.
    #[serde(rename = "type")]
    pub ty: InputType,
    /// A run without this input (and without a default) is refused.
    #[serde(default)]
    pub required: bool,
    /// Used when the caller gives no value; must be of `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Never printed, logged, stored in clear or returned over MCP.
    #[serde(default)]
    pub secret: bool,
    /// Shown in listings and `--help`-like output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When present, the value must be one of these.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Value>>,
}

/// An environment value: YAML scalars are accepted and turned into text.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(transparent)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::String(s) => Ok(EnvValue(s)),
            Value::Number(n) => Ok(EnvValue(n.to_string())),
            Value::Bool(b) => Ok(EnvValue(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "an env value must be a string, number or boolean, not {other}"
            ))),
        }
    }
}

/// Workflow-wide defaults for steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Default step timeout (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Default retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Default for `continue_on_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
}

/// When a step runs relative to the outcome of its `needs` (SPEC §1.2).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// None of the needed steps failed (skipped counts as fine). The default.
    #[default]
    Success,
    /// At least one needed step failed.
    Failure,
    /// Whatever happened to the needed steps.
    Always,
}

/// One step of the DAG (or of `finally`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id, `[a-z0-9][a-z0-9_-]*`.
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The registry tool this step calls.
    pub tool: String,
    /// Tool arguments; every string is a template.
    #[serde(
        default,
        rename = "with",
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub with: serde_json::Map<String, Value>,
    /// Dependencies: the DAG's edges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// A template (or boolean); renders to `false`, `""`, `0` or `"false"` => skipped.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_: Option<Value>,
    /// `success` (default), `failure` or `always`.
    #[serde(default)]
    pub when: When,
    /// A YAML list, or a template rendering to a JSON array: one instance per item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<Value>,
    /// Step deadline (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// A failure is recorded but counts as success for ordering and the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
    /// Extra environment for this step (templates allowed).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, EnvValue>,
    /// Named outputs computed from the tool's `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<IndexMap<String, OutputSpec>>,
}

/// One named output: a template, optionally published to the session's shared context.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutputSpec {
    /// The template (or literal) giving the value.
    pub value: Value,
    /// Publish to the session's shared context under the output's name.
    pub share: bool,
    /// How long a shared entry lives (a duration; default one hour).
    pub ttl: Option<String>,
}

impl<'de> Deserialize<'de> for OutputSpec {
    /// Either a plain value (`image: "{{result.image}}"`) or `{value, share, ttl}`.
    /// The JSON Schema has already checked the shape, so this only converts.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        if let Value::Object(m) = &v
            && m.contains_key("value")
            && m.keys().all(|k| k == "value" || k == "share" || k == "ttl")
        {
            return Ok(OutputSpec {
                value: m.get("value").cloned().unwrap_or(Value::Null),
                share: m.get("share").and_then(Value::as_bool).unwrap_or(false),
                ttl: m.get("ttl").and_then(Value::as_str).map(str::to_owned),
            });
        }
        Ok(OutputSpec {
            value: v,
            share: false,
            ttl: None,
        })
    }
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// The same `delay` every time. The default.
    #[default]
    Fixed,
    /// `delay`, then twice that, and so on, capped by `max_delay`.
    Exponential,
}

/// A retry policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts including the first (1 = no retry).
    #[serde(default = "one")]
    pub max_attempts: u32,
    /// `fixed` (default) or `exponential`.
    #[serde(default)]
    pub backoff: Backoff,
    /// The first delay (a duration; default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// The longest delay (a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    /// Randomise each delay by up to ±50 % so retries of many steps spread out.
    #[serde(default)]
    pub jitter: bool,
    /// Error classes that are retried (default: every class but `cancelled` and `invalid_input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<ErrorClass>>,
}

fn one() -> u32 {
    1
}

/// The class of a tool failure (SPEC §1.3).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The arguments were wrong.
    InvalidInput,
    /// Something named does not exist (image, file, engine, scanner).
    NotFound,
    /// Credentials were missing or refused.
    AuthFailed,
    /// A passing fault worth retrying.
    Transient,
    /// The step's deadline passed.
    Timeout,
    /// The run was cancelled.
    Cancelled,
    /// A process exited non-zero.
    ExitCode,
    /// An image build failed.
    BuildFailed,
    /// Any other tool failure.
    ToolError,
}

impl ErrorClass {
    /// Every class, in the order of SPEC §1.3.
    pub const ALL: [ErrorClass; 9] = [
        ErrorClass::InvalidInput,
        ErrorClass::NotFound,
        ErrorClass::AuthFailed,
        ErrorClass::Transient,
        ErrorClass::Timeout,
        ErrorClass::Cancelled,
        ErrorClass::ExitCode,
        ErrorClass::BuildFailed,
        ErrorClass::ToolError,
    ];

    /// The snake_case name used in workflow files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::NotFound => "not_found",
            ErrorClass::AuthFailed => "auth_failed",
            ErrorClass::Transient => "transient",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::ExitCode => "exit_code",
            ErrorClass::BuildFailed => "build_failed",
            ErrorClass::ToolError => "tool_error",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure-routing rule (SPEC §1.3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which failures this rule handles; every field given must fit.
    #[serde(rename = "match")]
    pub matcher: Match,
    /// A recovery tool to run before `then`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// What happens after the recovery step: `retry`, `continue` or `fail`.
    #[serde(default)]
    pub then: Then,
    /// How often this rule may fire for one step (default 1).
    #[serde(default = "one")]
    pub max: u32,
}

impl Rule {
    /// A tool's default rule: when `tool` fails with `error` (a class or a code), run the
    /// recovery `route` (a tool and its `with`, templates) if any, then `then`; it fires at
    /// most `max` times per step.
    pub fn on_tool_error(
        tool: &str,
        error: &str,
        route: Option<(&str, serde_json::Map<String, Value>)>,
        then: Then,
        max: u32,
    ) -> Rule {
        Rule {
            matcher: Match {
                tool: if tool.is_empty() {
                    Vec::new()
                } else {
                    vec![tool.to_owned()]
                },
                error: vec![error.to_owned()],
                ..Match::default()
            },
            route: route.map(|(tool, with)| Route {
                tool: tool.to_owned(),
                with,
            }),
            then,
            max,
        }
    }
}

/// The `match` of a rule. Every field given must fit; an empty match fits every failure.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Step ids (one or a list).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub step: Vec<String>,
    /// Tool names (one or a list).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool: Vec<String>,
    /// Error classes or codes, compared without regard to case (one or a list).
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub error: Vec<String>,
}

/// The recovery step a rule runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The registry tool to call.
    pub tool: String,
    /// Its arguments (templates; the failed step's context plus `failed`).
    #[serde(
        default,
        rename = "with",
        skip_serializing_if = "serde_json::Map::is_empty"
    )]
    pub with: serde_json::Map<String, Value>,
}

/// What a rule does after its recovery step.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    /// Run the failed step once more. The default.
    #[default]
    Retry,
    /// Go on as if the step had succeeded (its record keeps `failed`).
    Continue,
    /// The step fails for good.
    Fail,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "expected a string, got {other}"
                ))),
            })
            .collect(),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a list of strings, got {other}"
        ))),
    }
}
