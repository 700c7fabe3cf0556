//! Tools are plug-ins behind one trait; the [`ToolRegistry`] is the only dispatch point.
//!
//! The same registry feeds validation of `with:` (each tool's input schema), `ckflow tools`,
//! the failure router (each tool's default rules) and, later, the MCP server. Built-in tools
//! live one per file (or family) beside this one; library users add their own with
//! [`ToolRegistry::register`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::workflow::model::{ErrorClass, Rule};

pub mod analyze_repository;
pub(crate) mod capture;
pub mod docker;
pub mod docs;
pub mod generate_dockerfile;
pub mod generate_manifests;
pub mod noop;
pub(crate) mod process;
pub mod render_template;
pub mod scan_image;
pub mod share_context;
pub mod shell;
pub mod subworkflow;
pub mod validate_dockerfile;

/// The future a tool call returns.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<Value, ToolError>> + Send>>;

/// A registry tool: name, description, schemas, error codes, default routing rules, and
/// an async call that honours a cancellation token and reports progress.
pub trait Tool: Send + Sync + 'static {
    /// The name steps use in `tool:`.
    fn name(&self) -> &str;
    /// One sentence for `ckflow tools`, docs and MCP.
    fn description(&self) -> &str;
    /// JSON Schema (draft 2020-12) of `with:`.
    fn input_schema(&self) -> Value;
    /// JSON Schema of the result.
    fn output_schema(&self) -> Value;
    /// The tool-specific error codes it may return, with what each means.
    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    /// Rules tried after the workflow's own `on_failure` rules (SPEC §1.3).
    fn default_rules(&self) -> Vec<Rule> {
        Vec::new()
    }
    /// Whether the tool executes things on the host (refused for MCP custom workflows
    /// unless the server allows it).
    fn host_exec(&self) -> bool {
        false
    }
    /// Whether a call changes something outside ckflow (MCP `destructiveHint`).
    fn destructive(&self) -> bool {
        false
    }
    /// Run the tool with rendered arguments. Must return promptly with class `cancelled`
    /// once `ctx.cancel` fires, leaving no process or container behind.
    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture;
}

/// What a tool reports while it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Progress {
    /// A line of output on `stream` (`stdout` or `stderr`), without its newline.
    Output {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The line, already redacted of secrets by the engine.
        line: String,
    },
    /// Progress of a part of the work (a layer being pushed, …).
    Part {
        /// What is progressing (a layer id, a file).
        id: String,
        /// A short status word.
        status: String,
        /// Done so far, when known.
        current: Option<u64>,
        /// The total, when known.
        total: Option<u64>,
    },
}

/// The sink a tool sends [`Progress`] to.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Everything a tool call may use besides its arguments.
#[derive(Clone)]
pub struct ToolContext {
    /// Fires on timeout, cancel or Ctrl-C.
    pub cancel: CancellationToken,
    /// Where progress goes (output lines become `StepOutput` events).
    pub progress: ProgressFn,
    /// The merged environment of the workflow and the step, rendered.
    pub env: IndexMap<String, String>,
    /// The project folder (relative paths in arguments are relative to it).
    pub project_dir: PathBuf,
    /// The session workspace folder.
    pub workspace: PathBuf,
    /// The run's id.
    pub run_id: String,
    /// The step's id (with `[index]` for `for_each` instances).
    pub step_id: String,
    /// The registry, for tools that run workflows themselves.
    pub registry: Arc<ToolRegistry>,
    /// Secret values to keep out of anything the tool returns or prints.
    pub secrets: Arc<Vec<String>>,
    /// How deep in sub-workflows this call is (guards against runaway recursion).
    pub depth: u32,
    /// The run's session context (`share_context` publishes to it); `None` when the run
    /// has no session (a library run without the store).
    pub context_sink: Option<Arc<dyn ContextSink>>,
    /// The folders path arguments must stay in (canonical); `None`: anywhere. The MCP
    /// server confines runs and tool calls from clients to the project and the session
    /// workspace unless it was started with `--allow-host-exec` (SPEC §3).
    pub roots: Option<Arc<Vec<PathBuf>>>,
}

/// The future a [`ContextSink`] returns.
pub type ContextFuture = Pin<Box<dyn Future<Output = Result<(), ToolError>> + Send>>;

/// Where tools publish shared-context entries: the run's session in the store
/// (`crate::runner`). Later runs of the session read them as `{{context.KEY}}`.
pub trait ContextSink: Send + Sync + 'static {
    /// Publish `value` under `key` for `ttl` (`None`: the default, one hour). The value
    /// is redacted of the run's secrets before it is stored.
    fn put(&self, key: String, value: Value, ttl: Option<std::time::Duration>) -> ContextFuture;
}

impl ToolContext {
    /// A context for calling a tool outside any run (tests, MCP atomic tool calls).
    pub fn detached(registry: Arc<ToolRegistry>, project_dir: PathBuf) -> ToolContext {
        ToolContext {
            cancel: CancellationToken::new(),
            progress: Arc::new(|_| {}),
            env: IndexMap::new(),
            workspace: project_dir.clone(),
            project_dir,
            run_id: String::new(),
            step_id: String::new(),
            registry,
            secrets: Arc::new(Vec::new()),
            depth: 0,
            context_sink: None,
            roots: None,
        }
    }

    /// The same context, its path arguments confined to the project folder and the
    /// workspace (see [`ToolContext::path`]).
    pub fn confined(mut self) -> ToolContext {
        self.roots = Some(Arc::new(confinement_roots(
            &self.project_dir,
            &self.workspace,
        )));
        self
    }

    /// Resolve a path argument against the project folder, without any check; tools take
    /// [`ToolContext::path`], which also enforces the confinement.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            self.project_dir.join(path)
        }
    }

    /// Resolve a path argument (relative to the project folder) and, when the context is
    /// confined, check that it stays inside the project or the workspace: `..` and
    /// symlinks are followed before the check, so neither can lead out. A path outside
    /// fails with `invalid_input` / `PATH_OUTSIDE_PROJECT`, naming the argument.
    #[allow(clippy::result_large_err)] // the error type every tool returns
    pub fn path(&self, arg: &str, p: &str) -> Result<PathBuf, ToolError> {
        let resolved = self.resolve(p);
        let Some(roots) = &self.roots else {
            return Ok(resolved);
        };
        let real = real_path(&resolved);
        if roots.iter().any(|r| real.starts_with(r)) {
            Ok(resolved)
        } else {
            Err(ToolError::invalid(format!(
                "`{arg}` is `{p}`, which is outside the project folder and the session \
                 workspace; this server only lets workflows from clients use paths inside \
                 them (start it with --allow-host-exec to lift this)"
            ))
            .with_code("PATH_OUTSIDE_PROJECT"))
        }
    }
}

/// The canonical project folder and workspace (as given when they do not exist yet).
pub(crate) fn confinement_roots(
    project: &std::path::Path,
    workspace: &std::path::Path,
) -> Vec<PathBuf> {
    let mut roots = vec![real_path(project)];
    let ws = real_path(workspace);
    if !roots.contains(&ws) {
        roots.push(ws);
    }
    roots
}

/// `p` with `.`/`..` resolved and every symlink of its longest existing prefix followed
/// (the part that does not exist yet is appended as written, normalised).
fn real_path(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let absolute;
    let p = if p.is_absolute() {
        p
    } else {
        absolute = std::env::current_dir().unwrap_or_default().join(p);
        absolute.as_path()
    };
    let mut out = PathBuf::new();
    let mut rest: Vec<Component<'_>> = p.components().collect();
    rest.reverse();
    while let Some(c) = rest.pop() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                // Follow a symlink here, so `..` after it goes up from where it points.
                if let Ok(meta) = std::fs::symlink_metadata(&out)
                    && meta.file_type().is_symlink()
                {
                    match std::fs::canonicalize(&out) {
                        Ok(real) => out = real,
                        // A dangling link: where it would point is unknown; keep the
                        // link's own path, which writes would follow, as outside.
                        Err(_) => return PathBuf::from("/\0dangling"),
                    }
                }
            }
        }
    }
    out
}

/// A tool failure: a class for routing, an optional tool-specific code, a message.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ToolError {
    /// The class rules match on.
    pub class: ErrorClass,
    /// A tool-specific code such as `DOCKERFILE_INVALID`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<String>,
    /// What went wrong, for people.
    pub message: String,
    /// Structured detail (exit code, failing instruction, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub details: Option<Value>,
}

impl ToolError {
    /// A failure of `class` with `message`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> ToolError {
        ToolError {
            class,
            code: None,
            message: message.into(),
            details: None,
        }
    }
    /// The same failure with a code.
    pub fn with_code(mut self, code: impl Into<String>) -> ToolError {
        self.code = Some(code.into());
        self
    }
    /// The same failure with structured details.
    pub fn with_details(mut self, details: Value) -> ToolError {
        self.details = Some(details);
        self
    }
    /// A `cancelled` failure.
    pub fn cancelled() -> ToolError {
        ToolError::new(ErrorClass::Cancelled, "cancelled")
    }
    /// An `invalid_input` failure.
    pub fn invalid(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorClass::InvalidInput, message)
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(c) => write!(f, "{} ({}): {}", self.class, c, self.message),
            None => write!(f, "{}: {}", self.class, self.message),
        }
    }
}

/// A registered tool with its compiled input validator.
pub struct Registered {
    /// The tool.
    pub tool: Arc<dyn Tool>,
    input_validator: OnceLock<Option<jsonschema::Validator>>,
}

impl Registered {
    /// The compiled input schema (compiled on first use; `None` if the schema is broken,
    /// which the registry's own tests rule out for built-ins).
    pub fn input_validator(&self) -> Option<&jsonschema::Validator> {
        self.input_validator
            .get_or_init(|| jsonschema::draft202012::new(&self.tool.input_schema()).ok())
            .as_ref()
    }
}

/// The tools a workflow may call, by name.
#[derive(Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Registered>,
}

impl ToolRegistry {
    /// An empty registry.
    pub fn empty() -> ToolRegistry {
        ToolRegistry::default()
    }

    /// The built-in tools.
    pub fn builtin() -> ToolRegistry {
        let mut r = ToolRegistry::empty();
        r.register(noop::Noop);
        r.register(shell::Shell);
        r.register(render_template::RenderTemplate);
        r.register(share_context::ShareContext);
        docker::register(&mut r);
        r.register(validate_dockerfile::ValidateDockerfile);
        r.register(analyze_repository::AnalyzeRepository);
        r.register(generate_dockerfile::GenerateDockerfile);
        r.register(scan_image::ScanImage);
        r.register(generate_manifests::GenerateManifests);
        r.register(subworkflow::SubWorkflow);
        r
    }

    /// Add (or replace) a tool.
    pub fn register<T: Tool>(&mut self, tool: T) -> &mut Self {
        self.register_arc(Arc::new(tool))
    }

    /// Add (or replace) a shared tool.
    pub fn register_arc(&mut self, tool: Arc<dyn Tool>) -> &mut Self {
        self.tools.insert(
            tool.name().to_owned(),
            Registered {
                tool,
                input_validator: OnceLock::new(),
            },
        );
        self
    }

    /// A tool by name.
    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.tools.get(name)
    }

    /// The tool itself by name.
    pub fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).map(|r| r.tool.clone())
    }

    /// Every tool name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// Every registered tool, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.values().map(|r| &r.tool)
    }

    /// A JSON description of one tool (what `ckflow tools show` and MCP `ListTools` give).
    pub fn describe(tool: &dyn Tool) -> Value {
        let codes: serde_json::Map<String, Value> = tool
            .error_codes()
            .into_iter()
            .map(|(c, m)| (c.to_owned(), Value::String(m.to_owned())))
            .collect();
        serde_json::json!({
            "name": tool.name(),
            "description": tool.description(),
            "input_schema": tool.input_schema(),
            "output_schema": tool.output_schema(),
            "error_codes": codes,
            "default_rules": tool.default_rules(),
            "host_exec": tool.host_exec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_paths_stay_in_the_project_and_the_workspace() {
        let t = tempfile::tempdir().unwrap();
        let project = t.path().join("proj");
        let ws = t.path().join("ws");
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), project.join("escape")).unwrap();
        std::os::unix::fs::symlink(project.join("src"), project.join("inner")).unwrap();
        std::os::unix::fs::symlink(t.path().join("nowhere"), project.join("dangling")).unwrap();
        let mut ctx = ToolContext::detached(Arc::new(ToolRegistry::empty()), project.clone());
        ctx.workspace = ws.clone();
        // Unconfined: anything goes.
        assert_eq!(ctx.path("p", "/etc").unwrap(), PathBuf::from("/etc"));
        let ctx = ctx.confined();
        for ok in [
            ".",
            "src",
            "src/new/file.txt",
            "inner/x",
            "src/../Dockerfile",
        ] {
            assert!(ctx.path("p", ok).is_ok(), "{ok} should be allowed");
        }
        assert!(ctx.path("p", ws.join("out.txt").to_str().unwrap()).is_ok());
        for bad in [
            "/etc/passwd",
            "..",
            "../outside",
            "src/../../x",
            "escape",
            "escape/f",
            "inner/../../x",
            "dangling/x",
        ] {
            let e = ctx.path("path", bad).expect_err(bad);
            assert_eq!(e.code.as_deref(), Some("PATH_OUTSIDE_PROJECT"), "{bad}");
            assert!(e.message.contains("`path`"), "{}", e.message);
        }
    }
}
