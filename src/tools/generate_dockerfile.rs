//! `generate_dockerfile` (SPEC §5): writes a Dockerfile for a project folder, or repairs an
//! existing one in place.
//!
//! Generation asks [`analyze_repository::analyze`] what the folder holds, looks at a few
//! files itself ([`ProjectFacts`]: lockfiles, npm scripts, .NET project files), and renders
//! one Handlebars template per language family (`generate_dockerfile/*.hbs`: rust, go, node,
//! python, java, dotnet, plus `generic` for a folder it cannot classify when `base_image` is
//! given). Every template builds dependencies in their own layer before copying the sources,
//! uses a builder stage where there is something to compile, pins its default images to a
//! version, and ends in a runtime stage that runs as the numeric user `10001:10001` (no
//! account needed in the image, so it works on any base, distroless included, and
//! Kubernetes can check `runAsNonRoot`). When a port is known the runtime stage has `EXPOSE`
//! and a `HEALTHCHECK` that works in that image without curl: a TCP connect made by the
//! language runtime (`node -e`, `python -c`) or by bash's `/dev/tcp` (the Debian and Ubuntu
//! based runtime images have bash); with a `base_image` that has neither (alpine,
//! distroless, chiseled, scratch, or an image it does not know) there is no HEALTHCHECK,
//! and `findings` says so (`CK005`). The generated text is checked with
//! [`validate_dockerfile::validate`], whose findings the tool returns.
//!
//! `fix: true` is the recovery route of the `containerize` workflow after a failed
//! `build_image`: it edits the existing Dockerfile line by line, so comments, spacing and
//! line endings stay as they were, first repairing what keeps it from parsing (a typo'd
//! instruction such as `FROOM`, a RUN continued without `\`), then whatever
//! validate_dockerfile finds that has a safe automatic fix ([`fix`]), round after round
//! until nothing changes. When nothing at all can be fixed it fails with `NOTHING_TO_FIX`
//! (class `tool_error`), so the workflow does not retry a build that would fail the same way.
//!
//! Paths: `path` and `output` are relative to the project folder like every path argument
//! (and confined to it when the context is, [`ToolContext::path`]); files are written
//! atomically (a temporary file in the same folder, then a rename).

// `ToolError` is the error type the `Tool` trait fixes; boxing it here would only move
// the allocation around.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use handlebars::Handlebars;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::analyze_repository::{self, Analysis};
use super::validate_dockerfile::{self, Dockerfile, Finding, Instruction, KEYWORDS};
use super::{Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::model::ErrorClass;

/// The `generate_dockerfile` tool.
pub struct GenerateDockerfile;

/// The user the generated runtime stage runs as, unless `user` says otherwise.
pub const DEFAULT_USER: &str = "10001:10001";

impl Tool for GenerateDockerfile {
    fn name(&self) -> &str {
        "generate_dockerfile"
    }

    fn description(&self) -> &str {
        "Writes a Dockerfile for a project folder from what analyze_repository finds \
         (multi-stage, pinned images, non-root user, dependency layers cached), or with \
         `fix: true` repairs the existing Dockerfile in place (typo'd instructions, COPY \
         destinations, apt/pip hygiene, exec-form CMD, …)."
    }

    fn input_schema(&self) -> Value {
        let image = |what: &str| {
            json!({
                "type": "string",
                "pattern": "^[^\\s]*$",
                "description": what
            })
        };
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The project to write a Dockerfile for, or (`fix: true`) whose \
                            Dockerfile to repair.",
            "additionalProperties": false,
            "required": ["path"],
            "properties": {
                "path": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The project folder, relative to the ckflow project \
                                    folder. With `fix: true` it may also name the \
                                    Dockerfile itself."
                },
                "base_image": image(
                    "The image of the final (runtime) stage instead of the default for the \
                     language (empty: the default); required for a folder analyze_repository cannot classify \
                     (a generic Dockerfile on that image is written). With `fix: true` it \
                     replaces a `latest` or untagged image in the last stage's FROM. An \
                     unpinned value is accepted and reported in `findings`."
                ),
                "builder_image": image(
                    "The image of the build stage instead of the default for the language \
                     (empty: the default; ignored when the Dockerfile has a single stage, and with `fix: true`)."
                ),
                "output": {
                    "type": "string",
                    "description": "Where to write (or, with `fix: true`, which Dockerfile \
                                    to repair), relative to the ckflow project folder like \
                                    every path argument, not to `path`; a folder means \
                                    `<folder>/Dockerfile`. Default (or empty): `<path>/Dockerfile`."
                },
                "overwrite": {
                    "type": "boolean",
                    "default": false,
                    "description": "Replace an existing file at the output path; without it \
                                    an existing Dockerfile is an error (`DOCKERFILE_EXISTS`)."
                },
                "fix": {
                    "type": "boolean",
                    "default": false,
                    "description": "Do not generate: repair the existing Dockerfile in place \
                                    with every automatic fix that applies, keeping the rest \
                                    byte for byte (passing it is the consent to edit the \
                                    file, `overwrite` is not needed)."
                },
                "port": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 65535,
                    "description": "The port the app listens on, instead of the first one \
                                    analyze_repository found: EXPOSE, HEALTHCHECK and the \
                                    port variable (`PORT`, `SERVER_PORT`, \
                                    `ASPNETCORE_HTTP_PORTS`) use it."
                },
                "user": {
                    "type": "string",
                    "pattern": "^([A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?)?$",
                    "description": "The user (`uid[:gid]` or a name that exists in the \
                                    runtime image) the final stage runs as. Default (or \
                                    empty): `10001:10001`."
                }
            }
        })
    }

    fn output_schema(&self) -> Value {
        let nullable = |t: &str, what: &str| json!({"type": [t, "null"], "description": what});
        let finding = json!({
            "type": "object",
            "required": ["rule", "severity", "line", "message", "fix"],
            "properties": {
                "rule": {"type": "string", "description": "The validate_dockerfile rule."},
                "severity": {
                    "type": "string",
                    "enum": ["error", "warning", "info"],
                    "description": "How bad it is."
                },
                "line": {"type": "integer", "description": "The instruction's first line."},
                "message": {"type": "string", "description": "What is wrong."},
                "fix": {"type": "string", "description": "How to fix it by hand."}
            }
        });
        json!({
            "type": "object",
            "description": "The Dockerfile written and what validate_dockerfile says about it. \
                            Every key is always present (null when it does not apply).",
            "required": ["path", "generated", "language", "build_system", "framework",
                         "base_image", "builder_image", "port", "user", "healthcheck",
                         "dockerignore", "fixed", "findings", "errors", "warnings", "valid"],
            "properties": {
                "path": {"type": "string", "description": "The Dockerfile written."},
                "dockerignore": nullable(
                    "string",
                    "The `.dockerignore` written beside it (the build context is `path`): \
                     only when generating and the folder had none; it keeps `.git`, \
                     ckflow's state, `k8s/` and the language's local build output and \
                     dependencies (`node_modules`, `target`, `.venv`, `bin`/`obj`, …) out \
                     of `COPY . .`. Null otherwise."
                ),
                "generated": {
                    "type": "boolean",
                    "description": "True when it was generated, false when an existing one \
                                    was fixed."
                },
                "language": nullable("string", "The language the template was chosen for."),
                "build_system": nullable("string", "The build system analyze_repository found."),
                "framework": nullable("string", "The framework analyze_repository found."),
                "base_image": nullable(
                    "string",
                    "The final stage's image (with `fix: true`: as the fixed file has it)."
                ),
                "builder_image": nullable(
                    "string",
                    "The build stage's image; null for a single stage or `fix: true`."
                ),
                "port": nullable("integer", "The port exposed; null when none is known."),
                "user": nullable("string", "The user the final stage runs as."),
                "healthcheck": nullable(
                    "string",
                    "The HEALTHCHECK's arguments; null when the runtime image has no way to \
                     probe the port or no port is known."
                ),
                "fixed": {
                    "type": "array",
                    "description": "The fixes applied (`fix: true`), in order.",
                    "items": {
                        "type": "object",
                        "required": ["rule", "line", "description"],
                        "properties": {
                            "rule": {
                                "type": "string",
                                "description": "The rule fixed (`DL1000` for syntax)."
                            },
                            "line": {
                                "type": "integer",
                                "description": "The line (1-based) of the instruction."
                            },
                            "description": {"type": "string", "description": "What changed."}
                        }
                    }
                },
                "findings": {
                    "type": "array",
                    "description": "What validate_dockerfile still finds in the file written.",
                    "items": finding
                },
                "errors": {"type": "integer", "description": "How many findings are errors."},
                "warnings": {
                    "type": "integer",
                    "description": "How many findings are warnings."
                },
                "valid": {
                    "type": "boolean",
                    "description": "Whether no finding is an error."
                }
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "PROJECT_NOT_FOUND",
                "`path` is not a folder (class `not_found`); with `fix: true`, neither a \
                 folder nor a file.",
            ),
            (
                "UNSUPPORTED_PROJECT",
                "analyze_repository could not classify the folder, found a language without \
                 a template, or found nothing to run (class `invalid_input`); the message \
                 says what it found. Pass `base_image` for a generic Dockerfile on that \
                 image, or write the Dockerfile by hand.",
            ),
            (
                "DOCKERFILE_EXISTS",
                "The output file exists (class `invalid_input`): pass `overwrite: true` to \
                 replace it or `fix: true` to repair it.",
            ),
            (
                "DOCKERFILE_NOT_FOUND",
                "`fix: true` and there is no Dockerfile to fix (class `not_found`).",
            ),
            (
                "DOCKERFILE_INVALID",
                "`fix: true`: the Dockerfile still does not parse after fixing (class \
                 `invalid_input`). The fixes that were applied are written anyway (better \
                 than losing them); details hold `fixed`, the remaining syntax `findings` \
                 and `path`. Also a file that is not UTF-8, and (generating) arguments that \
                 make the text unparsable.",
            ),
            (
                "NOTHING_TO_FIX",
                "`fix: true` found nothing it can fix automatically (class `tool_error`, so a \
                 workflow does not retry a build that would fail the same way); the file is \
                 left untouched and details hold its `findings` (or syntax errors).",
            ),
            (
                "WRITE_FAILED",
                "The Dockerfile could not be written (class `tool_error`).",
            ),
            (
                "PATH_OUTSIDE_PROJECT",
                "`path` or `output` leads outside the project folder and the session \
                 workspace in a confined run (class `invalid_input`).",
            ),
        ]
    }

    fn destructive(&self) -> bool {
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(run(args, ctx))
    }
}

// ---------------------------------------------------------------------------------------
// Arguments and the two modes

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    path: String,
    #[serde(default)]
    base_image: Option<String>,
    #[serde(default)]
    builder_image: Option<String>,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    fix: bool,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    user: Option<String>,
}

fn check_image(key: &str, v: &Option<String>) -> Result<(), ToolError> {
    match v {
        Some(s) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(ToolError::invalid(format!(
                "`{key}` must be an image reference such as `debian:bookworm-slim`, got {s:?}"
            )))
        }
        _ => Ok(()),
    }
}

fn is_user(s: &str) -> bool {
    let part = |p: &str| {
        let mut cs = p.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    match s.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(s),
    }
}

fn parse_args(args: Value) -> Result<Args, ToolError> {
    if !args.is_object() {
        return Err(ToolError::invalid(
            "the arguments of `generate_dockerfile` must be an object",
        ));
    }
    let mut a: Args = serde_json::from_value(args).map_err(|e| {
        ToolError::invalid(format!("invalid arguments of `generate_dockerfile`: {e}"))
    })?;
    if a.path.is_empty() {
        return Err(ToolError::invalid("`path` must not be empty"));
    }
    // An empty string is "not given": workflows pass optional inputs through as `""`.
    for v in [
        &mut a.base_image,
        &mut a.builder_image,
        &mut a.output,
        &mut a.user,
    ] {
        if v.as_deref() == Some("") {
            *v = None;
        }
    }
    check_image("base_image", &a.base_image)?;
    check_image("builder_image", &a.builder_image)?;
    if a.port == Some(0) {
        return Err(ToolError::invalid("`port` must be between 1 and 65535"));
    }
    if let Some(u) = &a.user
        && !is_user(u)
    {
        return Err(ToolError::invalid(format!(
            "`user` must be `uid[:gid]` or a user name, got {u:?}"
        )));
    }
    Ok(a)
}

/// A folder argument means `<folder>/Dockerfile`.
fn dockerfile_in(p: PathBuf) -> PathBuf {
    if p.is_dir() { p.join("Dockerfile") } else { p }
}

async fn run(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let a = parse_args(args)?;
    let dir = ctx.path("path", &a.path)?;
    if a.fix {
        let target = match &a.output {
            Some(o) => dockerfile_in(ctx.path("output", o)?),
            None if dir.is_file() => dir.clone(),
            None if dir.is_dir() => dir.join("Dockerfile"),
            None => {
                return Err(ToolError::new(
                    ErrorClass::NotFound,
                    format!("`{}` is neither a folder nor a file", dir.display()),
                )
                .with_code("PROJECT_NOT_FOUND"));
            }
        };
        return fix_file(&target, a.base_image.as_deref(), &ctx).await;
    }
    if !dir.is_dir() {
        return Err(ToolError::new(
            ErrorClass::NotFound,
            format!("the project folder `{}` does not exist", dir.display()),
        )
        .with_code("PROJECT_NOT_FOUND"));
    }
    let target = match &a.output {
        Some(o) => dockerfile_in(ctx.path("output", o)?),
        None => dir.join("Dockerfile"),
    };
    if target.exists() && !a.overwrite {
        return Err(ToolError::invalid(format!(
            "`{}` already exists: pass `overwrite: true` to replace it or `fix: true` to \
             repair it",
            target.display()
        ))
        .with_code("DOCKERFILE_EXISTS"));
    }
    let facts_dir = dir.clone();
    let job = tokio::task::spawn_blocking(move || {
        analyze_repository::analyze(&facts_dir)
            .map(|found| (found, ProjectFacts::gather(&facts_dir)))
    });
    let (analysis, facts) = tokio::select! {
        _ = ctx.cancel.cancelled() => return Err(ToolError::cancelled()),
        r = job => r.map_err(|e| ToolError::new(
            ErrorClass::ToolError,
            format!("analysing `{}` failed: {e}", dir.display()),
        ))??,
    };
    let opts = Options {
        base_image: a.base_image,
        builder_image: a.builder_image,
        port: a.port,
        user: a.user,
    };
    let g = render(&analysis, &facts, &opts).map_err(|e| name_dir(e, &dir))?;
    let findings = validate_dockerfile::validate(&g.text).map_err(|errs| {
        // Only an odd argument (a `user` or image the parser rejects) gets here.
        ToolError::invalid(format!(
            "the generated Dockerfile does not parse: line {}: {}",
            errs.first().map_or(0, |f| f.line),
            errs.first().map_or("", |f| f.message.as_str())
        ))
        .with_code("DOCKERFILE_INVALID")
        .with_details(json!({"findings": errs, "text": g.text}))
    })?;
    if ctx.cancel.is_cancelled() {
        return Err(ToolError::cancelled());
    }
    write_atomic(&target, &g.text).await?;
    let ignore = dir.join(".dockerignore");
    let dockerignore = match ignore.try_exists() {
        Ok(false) => {
            write_atomic(&ignore, &dockerignore_for(g.language.as_deref())).await?;
            Some(ignore.display().to_string())
        }
        _ => None,
    };
    let mut out = json!({
        "path": target.display().to_string(),
        "dockerignore": dockerignore,
        "generated": true,
        "language": g.language,
        "build_system": g.build_system,
        "framework": g.framework,
        "base_image": g.base_image,
        "builder_image": g.builder_image,
        "port": g.port,
        "user": g.user,
        "healthcheck": g.healthcheck,
        "fixed": [],
    });
    merge_report(&mut out, &findings);
    Ok(out)
}

/// The `.dockerignore` written beside a generated Dockerfile: what never belongs in the
/// build context (VCS, ckflow's state, the manifests, editor folders), then the language's
/// local dependencies and build output, which the image builds itself and which a
/// `COPY . .` would otherwise copy over what it installed.
pub fn dockerignore_for(language: Option<&str>) -> String {
    let mut lines = vec![
        "# Written by ckflow (generate_dockerfile): what stays out of the build context.",
        ".git",
        ".gitignore",
        ".ckflow",
        "k8s",
        ".idea",
        ".vscode",
        "*.log",
        ".env",
    ];
    lines.extend_from_slice(match language {
        Some("rust") => &["target"],
        Some("javascript" | "typescript") => &["node_modules", "npm-debug.log*", "coverage"],
        Some("python") => &[
            "__pycache__",
            "*.pyc",
            ".venv",
            "venv",
            ".pytest_cache",
            ".mypy_cache",
        ],
        Some("java" | "kotlin") => &["target", "build", ".gradle"],
        Some("csharp" | "fsharp") => &["bin", "obj"],
        _ => &[],
    });
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Put the folder's name in an error [`render`] made without knowing it.
fn name_dir(mut e: ToolError, dir: &Path) -> ToolError {
    e.message = format!("`{}`: {}", dir.display(), e.message);
    e
}

fn merge_report(out: &mut Value, findings: &[Finding]) {
    if let (Some(o), Value::Object(r)) =
        (out.as_object_mut(), validate_dockerfile::report(findings))
    {
        o.extend(r);
    }
}

async fn fix_file(
    target: &Path,
    base_image: Option<&str>,
    ctx: &ToolContext,
) -> Result<Value, ToolError> {
    let bytes = tokio::fs::read(target).await.map_err(|e| {
        ToolError::new(
            ErrorClass::NotFound,
            format!(
                "there is no Dockerfile to fix at `{}` ({e}); generate one without `fix`",
                target.display()
            ),
        )
        .with_code("DOCKERFILE_NOT_FOUND")
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ToolError::invalid(format!("`{}` is not UTF-8 text", target.display()))
            .with_code("DOCKERFILE_INVALID")
    })?;
    if ctx.cancel.is_cancelled() {
        return Err(ToolError::cancelled());
    }
    let fixed = fix(&text, base_image);
    let path = target.display().to_string();
    if fixed.fixes.is_empty() {
        let (what, list) = match &fixed.outcome {
            Err(errs) => (
                format!(
                    "it does not parse (line {}: {}) and no automatic fix applies",
                    errs.first().map_or(0, |f| f.line),
                    errs.first().map_or("", |f| f.message.as_str())
                ),
                errs,
            ),
            Ok(f) => (
                format!(
                    "no automatic fix applies to its {} finding(s), so the build failed for \
                     another reason (see the build log)",
                    f.len()
                ),
                f,
            ),
        };
        return Err(ToolError::new(
            ErrorClass::ToolError,
            format!("nothing to fix in `{path}`: {what}"),
        )
        .with_code("NOTHING_TO_FIX")
        .with_details(json!({"path": path, "fixed": [], "findings": list})));
    }
    write_atomic(target, &fixed.text).await?;
    match &fixed.outcome {
        Err(errs) => Err(ToolError::invalid(format!(
            "`{path}` still does not parse after {} fix(es), which were written: line {}: {}",
            fixed.fixes.len(),
            errs.first().map_or(0, |f| f.line),
            errs.first().map_or("", |f| f.message.as_str())
        ))
        .with_code("DOCKERFILE_INVALID")
        .with_details(json!({"path": path, "fixed": fixed.fixes, "findings": errs}))),
        Ok(findings) => {
            let base = validate_dockerfile::parse(&fixed.text)
                .ok()
                .and_then(|df| final_image(&df));
            let mut out = json!({
                "path": path,
                "dockerignore": null,
                "generated": false,
                "language": null,
                "build_system": null,
                "framework": null,
                "base_image": base,
                "builder_image": null,
                "port": null,
                "user": null,
                "healthcheck": null,
                "fixed": fixed.fixes,
            });
            merge_report(&mut out, findings);
            Ok(out)
        }
    }
}

/// The image of the last stage's FROM.
fn final_image(df: &Dockerfile) -> Option<String> {
    let from = df.instructions.iter().rev().find(|i| i.keyword == "FROM")?;
    from.flags().1.split_whitespace().next().map(str::to_owned)
}

/// Write `text` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees half a file; an existing file's permissions are kept.
pub async fn write_atomic(path: &Path, text: &str) -> Result<(), ToolError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let fail = |what: &str, e: std::io::Error| {
        ToolError::new(
            ErrorClass::ToolError,
            format!("cannot write `{}`: {what}: {e}", path.display()),
        )
        .with_code("WRITE_FAILED")
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|e| fail("creating its folder", e))?;
    let name = path
        .file_name()
        .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(
        ".{name}.ckflow-{}-{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let result = async {
        tokio::fs::write(&tmp, text)
            .await
            .map_err(|e| fail("writing a temporary file", e))?;
        if let Ok(meta) = tokio::fs::metadata(path).await {
            tokio::fs::set_permissions(&tmp, meta.permissions())
                .await
                .map_err(|e| fail("copying its permissions", e))?;
        }
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| fail("renaming the temporary file", e))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

// ---------------------------------------------------------------------------------------
// Generation

/// What generation needs to know about the folder beyond [`Analysis`]: which of the files
/// the templates care about are there, and a few things read from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectFacts {
    /// Which of [`ProjectFacts::KNOWN_FILES`] exist, relative to the folder.
    pub files: BTreeSet<String>,
    /// The names of `package.json`'s `scripts`.
    pub npm_scripts: BTreeSet<String>,
    /// Python servers the dependency files mention (`gunicorn`, `uvicorn`).
    pub python_servers: BTreeSet<String>,
    /// .NET project files (`*.csproj`, `*.fsproj`, `*.vbproj`), relative with `/`, sorted.
    pub dotnet_projects: Vec<String>,
    /// `Cargo.toml` declares a `[workspace]`.
    pub cargo_workspace: bool,
    /// `pom.xml` aggregates `<modules>`.
    pub maven_modules: bool,
    /// `Cargo.toml` declares targets by hand (`[lib]`, `[[bin]]`, …), which a stub
    /// `src/main.rs` would not satisfy.
    pub cargo_custom_targets: bool,
}

impl ProjectFacts {
    /// The files whose presence changes the Dockerfile.
    pub const KNOWN_FILES: &'static [&'static str] = &[
        "Cargo.lock",
        "go.sum",
        "vendor/modules.txt",
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        ".yarnrc.yml",
        "pnpm-lock.yaml",
        "bun.lock",
        "bun.lockb",
        "Pipfile",
        "Pipfile.lock",
        "requirements.txt",
        "pyproject.toml",
        "setup.py",
        "poetry.lock",
        "uv.lock",
        "manage.py",
        "app.py",
        "main.py",
        "build.gradle",
        "build.gradle.kts",
        "settings.gradle",
        "settings.gradle.kts",
        "gradle.properties",
        "gradlew",
        "gradle/wrapper/gradle-wrapper.properties",
    ];

    /// Look at the folder `dir` (best effort: unreadable files count as absent).
    pub fn gather(dir: &Path) -> ProjectFacts {
        let mut f = ProjectFacts::default();
        for name in Self::KNOWN_FILES {
            if dir.join(name).is_file() {
                f.files.insert((*name).to_owned());
            }
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        if let Ok(pkg) = serde_json::from_str::<Value>(&read("package.json"))
            && let Some(scripts) = pkg.get("scripts").and_then(Value::as_object)
        {
            f.npm_scripts = scripts.keys().cloned().collect();
        }
        let py = ["requirements.txt", "pyproject.toml", "Pipfile", "setup.py"]
            .iter()
            .map(|n| read(n).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("\n");
        for server in ["gunicorn", "uvicorn"] {
            if py.contains(server) {
                f.python_servers.insert(server.to_owned());
            }
        }
        let cargo = read("Cargo.toml");
        f.cargo_workspace = cargo.contains("[workspace]");
        f.maven_modules = read("pom.xml").contains("<modules>");
        f.cargo_custom_targets = cargo.contains("[lib]") || cargo.contains("[[");
        find_projects(dir, "", 0, &mut f.dotnet_projects);
        f.dotnet_projects.sort();
        f
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains(name)
    }
}

/// .NET project files under `dir`, at most four folders down, skipping build output.
fn find_projects(dir: &Path, rel: &str, depth: usize, out: &mut Vec<String>) {
    const SKIP: &[&str] = &["bin", "obj", "node_modules", "target", "vendor"];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= 64 {
            return;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            if depth < 4 && !name.starts_with('.') && !SKIP.contains(&name.as_str()) {
                find_projects(&e.path(), &path, depth + 1, out);
            }
        } else if [".csproj", ".fsproj", ".vbproj"]
            .iter()
            .any(|x| name.ends_with(x))
        {
            out.push(path);
        }
    }
}

/// The arguments that shape a generated Dockerfile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// The final stage's image instead of the language's default.
    pub base_image: Option<String>,
    /// The build stage's image instead of the language's default.
    pub builder_image: Option<String>,
    /// The port instead of the first one the analysis found.
    pub port: Option<u16>,
    /// The user instead of [`DEFAULT_USER`].
    pub user: Option<String>,
}

/// A generated Dockerfile and the choices behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generated {
    /// The Dockerfile's text.
    pub text: String,
    /// The template used (`rust`, `go`, `node`, `python`, `java`, `dotnet`, `generic`).
    pub template: &'static str,
    /// The analysis' language.
    pub language: Option<String>,
    /// The analysis' build system.
    pub build_system: Option<String>,
    /// The analysis' framework.
    pub framework: Option<String>,
    /// The final stage's image.
    pub base_image: String,
    /// The build stage's image, when there is one.
    pub builder_image: Option<String>,
    /// The port exposed.
    pub port: Option<u16>,
    /// The user the final stage runs as.
    pub user: String,
    /// The HEALTHCHECK's arguments, when there is one.
    pub healthcheck: Option<String>,
}

/// The language families with a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rust,
    Go,
    Node,
    Python,
    Java,
    Dotnet,
}

impl Family {
    fn of(a: &Analysis) -> Option<Family> {
        let by_build = match a.build_system.as_deref()? {
            "cargo" => Some(Family::Rust),
            "go" => Some(Family::Go),
            "npm" | "yarn" | "pnpm" | "bun" => Some(Family::Node),
            "pip" | "poetry" | "uv" | "pipenv" => Some(Family::Python),
            "maven" | "gradle" => Some(Family::Java),
            "dotnet" => Some(Family::Dotnet),
            _ => None,
        };
        by_build.or_else(|| Family::of_language(a.language.as_deref()?))
    }

    fn of_language(l: &str) -> Option<Family> {
        Some(match l {
            "rust" => Family::Rust,
            "go" => Family::Go,
            "javascript" | "typescript" => Family::Node,
            "python" => Family::Python,
            "java" | "kotlin" => Family::Java,
            "csharp" | "fsharp" | "vbnet" => Family::Dotnet,
            _ => return None,
        })
    }

    fn template(self) -> &'static str {
        match self {
            Family::Rust => "rust",
            Family::Go => "go",
            Family::Node => "node",
            Family::Python => "python",
            Family::Java => "java",
            Family::Dotnet => "dotnet",
        }
    }
}

/// The templates, parsed once: strict mode (a missing value is a bug, not an empty
/// string) and no HTML escaping, as in `crate::template`.
fn templates() -> &'static Result<Handlebars<'static>, String> {
    static T: OnceLock<Result<Handlebars<'static>, String>> = OnceLock::new();
    T.get_or_init(|| {
        let mut h = Handlebars::new();
        h.set_strict_mode(true);
        h.register_escape_fn(handlebars::no_escape);
        h.register_partial("tail", include_str!("generate_dockerfile/tail.hbs"))
            .map_err(|e| e.to_string())?;
        for (name, text) in [
            ("rust", include_str!("generate_dockerfile/rust.hbs")),
            ("go", include_str!("generate_dockerfile/go.hbs")),
            ("node", include_str!("generate_dockerfile/node.hbs")),
            ("python", include_str!("generate_dockerfile/python.hbs")),
            ("java", include_str!("generate_dockerfile/java.hbs")),
            ("dotnet", include_str!("generate_dockerfile/dotnet.hbs")),
            ("generic", include_str!("generate_dockerfile/generic.hbs")),
        ] {
            h.register_template_string(name, text)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(h)
    })
}

/// `["a", "b"]`: the JSON (exec) form as people write it.
fn json_array<S: AsRef<str>>(words: &[S]) -> String {
    let parts: Vec<String> = words
        .iter()
        .map(|w| Value::String(w.as_ref().to_owned()).to_string())
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A word for a shell command line: bare when it is plain, single-quoted otherwise.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '+'))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A name fit for a file and a command: `[A-Za-z0-9._-]`, never empty.
fn file_name(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let t = cleaned.trim_matches(|c| c == '-' || c == '.');
    if t.is_empty() {
        "app".to_owned()
    } else {
        t.to_owned()
    }
}

/// The version numbers in a requirement such as `1.22`, `>=18`, `^3.11`, `net8.0`.
fn version_parts(v: &str) -> Option<Vec<u32>> {
    let start = v.find(|c: char| c.is_ascii_digit())?;
    let run: String = v[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<u32> = run
        .split('.')
        .filter(|p| !p.is_empty())
        .map_while(|p| p.parse().ok())
        .collect();
    (!parts.is_empty()).then_some(parts)
}

/// The version to use: the project's (its first `n` numbers) when it names one exactly,
/// the larger of it and `default` when it is a minimum (`>=`, or `minimum` says so).
fn pick_version(project: Option<&str>, default: &str, n: usize, minimum: bool) -> String {
    let Some(want) = project.and_then(version_parts) else {
        return default.to_owned();
    };
    let want: Vec<u32> = want.into_iter().take(n).collect();
    let is_min = minimum || project.is_some_and(|p| p.trim_start().starts_with('>'));
    let def = version_parts(default).unwrap_or_default();
    if is_min && def >= want {
        return default.to_owned();
    }
    want.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// What a runtime image is known to have.
struct ImageTraits {
    /// Debian or Ubuntu based: apt-get works.
    apt: bool,
    /// bash is on the PATH (for the `/dev/tcp` probe).
    bash: bool,
    /// No shell or interpreter on the PATH that a probe could use (distroless, scratch).
    bare: bool,
}

fn image_traits(image: &str) -> ImageTraits {
    let low = image.to_ascii_lowercase();
    let no_tag = low.split('@').next().unwrap_or(&low);
    let (repo, tag) = match no_tag.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (no_tag, ""),
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let bare = low.contains("distroless") || low.contains("chiseled") || repo == "scratch";
    let slim_os = bare || tag.contains("alpine") || last == "alpine" || last == "busybox";
    const APT: &[&str] = &[
        "debian",
        "ubuntu",
        "buildpack-deps",
        "eclipse-temurin",
        "aspnet",
        "runtime",
        "runtime-deps",
        "node",
        "python",
        "golang",
        "rust",
    ];
    const BASH_ONLY: &[&str] = &[
        "fedora",
        "amazonlinux",
        "amazoncorretto",
        "rockylinux",
        "almalinux",
        "centos",
        "ubi8",
        "ubi9",
        "ubi",
        "ubi-minimal",
    ];
    let apt = !slim_os && APT.contains(&last);
    ImageTraits {
        apt,
        bash: apt || (!slim_os && BASH_ONLY.contains(&last)),
        bare,
    }
}

/// What runs the HEALTHCHECK's TCP connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Node,
    Bun,
    Python,
}

/// The HEALTHCHECK for `port` in `image`: its arguments and why it is that one. None when
/// the image has nothing to probe with (distroless, scratch, alpine without the language
/// runtime, an image it does not know).
fn healthcheck(probe: Option<Probe>, image: &str, port: u16) -> Option<(String, String)> {
    let traits = image_traits(image);
    let opts = "--interval=30s --timeout=5s --start-period=30s --retries=3";
    let js = format!(
        "require('net').connect({port}, '127.0.0.1').on('connect', () => process.exit(0))\
         .on('error', () => process.exit(1))"
    );
    let why = |by: &str| {
        format!(
            "# Probe: a TCP connect to the port made by {by}, as the image has no curl\n\
             # and the app may have no health endpoint."
        )
    };
    let (cmd, why) = match probe {
        _ if traits.bare => return None,
        Some(Probe::Node) => (
            vec!["node".to_owned(), "-e".to_owned(), js],
            why("node itself"),
        ),
        Some(Probe::Bun) => (
            vec!["bun".to_owned(), "-e".to_owned(), js],
            why("bun itself"),
        ),
        Some(Probe::Python) => (
            vec![
                "python".to_owned(),
                "-c".to_owned(),
                format!(
                    "import socket; socket.create_connection(('127.0.0.1', {port}), 4).close()"
                ),
            ],
            why("python itself"),
        ),
        None if traits.bash => (
            vec![
                "bash".to_owned(),
                "-c".to_owned(),
                format!(": </dev/tcp/127.0.0.1/{port}"),
            ],
            why("bash's /dev/tcp"),
        ),
        None => return None,
    };
    Some((format!("{opts} CMD {}", json_array(&cmd)), why))
}

/// Why an analysis cannot be turned into a Dockerfile, for people.
fn describe_analysis(a: &Analysis) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &a.reason {
        parts.push(r.clone());
    }
    if let Some(l) = &a.language {
        parts.push(format!("language `{l}`"));
    }
    if let Some(b) = &a.build_system {
        parts.push(format!("build system `{b}`"));
    }
    if !a.languages.is_empty() {
        parts.push(format!("languages found: {}", a.languages.join(", ")));
    }
    if !a.evidence.is_empty() {
        parts.push(format!("evidence: {}", a.evidence.join(", ")));
    }
    if parts.is_empty() {
        "no manifest, lockfile or source file it recognises".to_owned()
    } else {
        parts.join("; ")
    }
}

const WAY_OUT: &str = "pass `base_image` to get a generic Dockerfile on that image, or \
                       write the Dockerfile by hand";

fn unsupported(message: String, a: &Analysis) -> ToolError {
    ToolError::invalid(message)
        .with_code("UNSUPPORTED_PROJECT")
        .with_details(json!({"analysis": a}))
}

/// Render the Dockerfile for `analysis` (what [`analyze_repository::analyze`] found) and
/// `facts` (what [`ProjectFacts::gather`] found) with `opts`. Fails with
/// `UNSUPPORTED_PROJECT` for a folder it has no template for, unless `opts.base_image`
/// is given (then the generic template is used).
pub fn render(
    analysis: &Analysis,
    facts: &ProjectFacts,
    opts: &Options,
) -> Result<Generated, ToolError> {
    let family = if analysis.classified {
        Family::of(analysis)
    } else {
        None
    };
    if family.is_none() && opts.base_image.is_none() {
        let msg = if analysis.classified {
            format!(
                "there is no Dockerfile template for this project ({}); templates exist for \
                 Rust, Go, Node.js, Python, Java/Kotlin and .NET: {WAY_OUT}",
                describe_analysis(analysis)
            )
        } else {
            format!(
                "analyze_repository could not classify the project ({}): {WAY_OUT}",
                describe_analysis(analysis)
            )
        };
        return Err(unsupported(msg, analysis));
    }
    let user = opts.user.clone().unwrap_or_else(|| DEFAULT_USER.to_owned());
    let mut ctx = json!({
        "user": user,
        "port": null,
        "port_env": null,
        "healthcheck": null,
        "healthcheck_comment": null,
        "run": null,
        "run_keyword": "CMD",
    });
    let plan = match family {
        None => generic(analysis, opts),
        Some(Family::Rust) => rust(analysis, facts, opts),
        Some(Family::Go) => go(analysis, facts, opts),
        Some(Family::Node) => node(analysis, facts, opts),
        Some(Family::Python) => python(analysis, facts, opts),
        Some(Family::Java) => java(analysis, facts, opts),
        Some(Family::Dotnet) => dotnet(analysis, facts, opts),
    }?;
    if let (Some(o), Value::Object(vars)) = (ctx.as_object_mut(), plan.vars) {
        o.extend(vars);
    }
    let port = opts
        .port
        .or_else(|| analysis.ports.first().copied())
        .or(plan.default_port);
    let mut check = None;
    if let Some(p) = port {
        ctx["port"] = json!(p);
        ctx["port_env"] = json!(plan.port_var.map(|v| v.replace("{port}", &p.to_string())));
        if let Some((h, why)) = healthcheck(plan.probe, &plan.base_image, p) {
            ctx["healthcheck"] = json!(h);
            ctx["healthcheck_comment"] = json!(why);
            check = Some(h);
        }
    }
    if let Some(run) = &plan.run {
        let words: Vec<String> = run
            .iter()
            .map(|w| w.replace("{port}", &port.unwrap_or(0).to_string()))
            .collect();
        ctx["run"] = json!(json_array(&words));
        ctx["run_keyword"] = json!(plan.run_keyword);
    }
    ctx["base_image"] = json!(plan.base_image);
    ctx["builder_image"] = json!(plan.builder_image);
    let h = templates()
        .as_ref()
        .map_err(|e| ToolError::new(ErrorClass::ToolError, format!("a template is broken: {e}")))?;
    let name = family.map_or("generic", Family::template);
    let text = h.render(name, &ctx).map_err(|e| {
        ToolError::new(
            ErrorClass::ToolError,
            format!("rendering the `{name}` template failed: {e}"),
        )
    })?;
    Ok(Generated {
        text,
        template: name,
        language: analysis.language.clone(),
        build_system: analysis.build_system.clone(),
        framework: analysis.framework.clone(),
        base_image: plan.base_image,
        builder_image: plan.builder_image,
        port,
        user,
        healthcheck: check,
    })
}

/// What a family decides besides its template's own variables.
struct Plan {
    base_image: String,
    builder_image: Option<String>,
    /// The command, its words; `{port}` stands for the port.
    run: Option<Vec<String>>,
    run_keyword: &'static str,
    /// The variable that tells the app its port (`PORT={port}`, …).
    port_var: Option<&'static str>,
    /// The port the command or the framework listens on when nothing else says.
    default_port: Option<u16>,
    /// The runtime that probes the port for the HEALTHCHECK; `None`: bash, if the image
    /// has it.
    probe: Option<Probe>,
    /// The template's own variables.
    vars: Value,
}

fn generic(a: &Analysis, opts: &Options) -> Result<Plan, ToolError> {
    let base = opts.base_image.clone().unwrap_or_default();
    let reason = if a.classified {
        format!(
            "There is no template for this project: {}.",
            describe_analysis(a)
        )
    } else {
        format!(
            "analyze_repository could not classify the project: {}.",
            describe_analysis(a)
        )
    };
    Ok(Plan {
        base_image: base,
        builder_image: None,
        run: None,
        run_keyword: "CMD",
        port_var: None,
        default_port: None,
        probe: None,
        vars: json!({"reason": reason.replace('\n', " ")}),
    })
}

fn rust(a: &Analysis, f: &ProjectFacts, opts: &Options) -> Result<Plan, ToolError> {
    let bin = a
        .entrypoint
        .as_deref()
        .filter(|e| !e.contains('/') && !e.ends_with(".rs"))
        .or(a.name.as_deref())
        .map(file_name)
        .ok_or_else(|| {
            unsupported(
                format!(
                    "cannot tell which binary of the Rust project to run (no entry point or \
                     package name): {WAY_OUT}"
                ),
                a,
            )
        })?;
    let version = pick_version(a.version.as_deref(), "1.87", 2, true);
    let builder = opts
        .builder_image
        .clone()
        .unwrap_or_else(|| format!("rust:{version}-bookworm"));
    let base = opts
        .base_image
        .clone()
        .unwrap_or_else(|| "debian:bookworm-slim".to_owned());
    let lockfile = f.has("Cargo.lock");
    let manifests = if lockfile {
        "Cargo.toml Cargo.lock"
    } else {
        "Cargo.toml"
    };
    Ok(Plan {
        run: Some(vec![format!("/usr/local/bin/{bin}")]),
        run_keyword: "ENTRYPOINT",
        port_var: Some("PORT={port}"),
        default_port: None,
        probe: None,
        vars: json!({
            "bin": bin,
            "lockfile": lockfile,
            "manifests": manifests,
            "fetch_layer": !f.cargo_workspace && !f.cargo_custom_targets,
            "apt": image_traits(&base).apt,
        }),
        base_image: base,
        builder_image: Some(builder),
    })
}

fn go(a: &Analysis, f: &ProjectFacts, opts: &Options) -> Result<Plan, ToolError> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    };
    let package = match a.entrypoint.as_deref().filter(|e| plain(e)) {
        None | Some(".") | Some("./") => ".".to_owned(),
        Some(e) if e.ends_with(".go") => match e.rsplit_once('/') {
            Some((d, _)) if d != "." && !d.is_empty() => {
                format!("./{}", d.trim_start_matches("./"))
            }
            _ => ".".to_owned(),
        },
        Some(e) => format!("./{}", e.trim_start_matches("./").trim_end_matches('/')),
    };
    let bin = match package.rsplit('/').next() {
        Some(last) if package != "." => file_name(last),
        _ => a
            .name
            .as_deref()
            .and_then(|n| n.trim_end_matches('/').rsplit('/').next())
            .map_or_else(|| "app".to_owned(), file_name),
    };
    let version = pick_version(a.version.as_deref(), "1.24", 2, true);
    let builder = opts
        .builder_image
        .clone()
        .unwrap_or_else(|| format!("golang:{version}-bookworm"));
    let base = opts
        .base_image
        .clone()
        .unwrap_or_else(|| "debian:bookworm-slim".to_owned());
    let manifests = if f.has("go.sum") {
        "go.mod go.sum"
    } else {
        "go.mod"
    };
    Ok(Plan {
        run: Some(vec![format!("/usr/local/bin/{bin}")]),
        run_keyword: "ENTRYPOINT",
        port_var: Some("PORT={port}"),
        default_port: None,
        probe: None,
        vars: json!({
            "bin": bin,
            "package": package,
            "manifests": manifests,
            "vendor": f.has("vendor/modules.txt"),
            "apt": image_traits(&base).apt,
        }),
        base_image: base,
        builder_image: Some(builder),
    })
}

fn node(a: &Analysis, f: &ProjectFacts, opts: &Options) -> Result<Plan, ToolError> {
    let tool = match a.build_system.as_deref() {
        Some(t @ ("yarn" | "pnpm" | "bun")) => t,
        _ if f.has("pnpm-lock.yaml") => "pnpm",
        _ if f.has("yarn.lock") => "yarn",
        _ if f.has("bun.lock") || f.has("bun.lockb") => "bun",
        _ => "npm",
    };
    // the analysis' version is node's (engines.node, .nvmrc), which says nothing of bun's
    let image = if tool == "bun" {
        "oven/bun:1.1".to_owned()
    } else {
        let version = pick_version(a.version.as_deref(), "22", 1, false);
        format!("node:{version}-bookworm-slim")
    };
    let berry = tool == "yarn" && f.has(".yarnrc.yml");
    let lock = match tool {
        "pnpm" => ["pnpm-lock.yaml"].into_iter().find(|l| f.has(l)),
        "yarn" => ["yarn.lock"].into_iter().find(|l| f.has(l)),
        "bun" => ["bun.lock", "bun.lockb"].into_iter().find(|l| f.has(l)),
        _ => ["package-lock.json", "npm-shrinkwrap.json"]
            .into_iter()
            .find(|l| f.has(l)),
    };
    let locked = lock.is_some();
    let frozen = |cmd: &str, flag: &str, rest: &str| {
        let mut s = cmd.to_owned();
        if locked {
            s.push(' ');
            s.push_str(flag);
        }
        if !rest.is_empty() {
            s.push(' ');
            s.push_str(rest);
        }
        s
    };
    // (production install, full install, prune to production after a build)
    let (install, install_all, prune): (String, String, Option<String>) = match tool {
        "pnpm" => (
            frozen("pnpm install", "--frozen-lockfile", "--prod"),
            frozen("pnpm install", "--frozen-lockfile", ""),
            Some("pnpm prune --prod".to_owned()),
        ),
        // Yarn 2+ has no production-only install without a plugin: it keeps every dependency.
        "yarn" if berry => (
            frozen("yarn install", "--immutable", ""),
            frozen("yarn install", "--immutable", ""),
            None,
        ),
        "yarn" => (
            frozen("yarn install", "--frozen-lockfile", "--production"),
            frozen("yarn install", "--frozen-lockfile", ""),
            Some(frozen(
                "yarn install",
                "--frozen-lockfile",
                "--production --ignore-scripts --prefer-offline",
            )),
        ),
        "bun" => (
            frozen("bun install", "--frozen-lockfile", "--production"),
            frozen("bun install", "--frozen-lockfile", ""),
            Some(format!(
                "rm -rf node_modules && {}",
                frozen("bun install", "--frozen-lockfile", "--production")
            )),
        ),
        _ if locked => (
            "npm ci --omit=dev".to_owned(),
            "npm ci".to_owned(),
            Some("npm prune --omit=dev".to_owned()),
        ),
        _ => (
            "npm install --omit=dev".to_owned(),
            "npm install".to_owned(),
            Some("npm prune --omit=dev".to_owned()),
        ),
    };
    let mut manifests = vec!["package.json"];
    manifests.extend(lock);
    if berry {
        manifests.push(".yarnrc.yml");
    }
    let build = f.npm_scripts.contains("build").then(|| match tool {
        "npm" => "npm run build".to_owned(),
        t => format!("{t} run build"),
    });
    let js = |e: &str| [".js", ".mjs", ".cjs"].iter().any(|x| e.ends_with(x));
    let ts = |e: &str| {
        [".ts", ".tsx", ".mts", ".cts"]
            .iter()
            .any(|x| e.ends_with(x))
    };
    let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let run = match (tool, a.entrypoint.as_deref()) {
        // bun runs TypeScript itself
        ("bun", Some(e)) if js(e) || ts(e) => words(&["bun", "run", e]),
        ("bun", _) if f.npm_scripts.contains("start") => words(&["bun", "run", "start"]),
        ("bun", _) => words(&["bun", "run", "index.ts"]),
        (_, Some(e)) if js(e) => words(&["node", e]),
        _ if f.npm_scripts.contains("start") => words(&["npm", "start"]),
        (_, Some(e)) if !ts(e) => words(&["node", e]),
        _ => words(&["node", "index.js"]),
    };
    let title = if a.language.as_deref() == Some("typescript") {
        "TypeScript"
    } else {
        "Node.js"
    };
    let base = opts.base_image.clone().unwrap_or_else(|| image.clone());
    let builder = build
        .as_ref()
        .map(|_| opts.builder_image.clone().unwrap_or(image));
    let npm_start = run.first().is_some_and(|w| w == "npm");
    Ok(Plan {
        run: Some(run),
        run_keyword: "CMD",
        port_var: Some("PORT={port}"),
        default_port: None,
        probe: Some(if tool == "bun" {
            Probe::Bun
        } else {
            Probe::Node
        }),
        vars: json!({
            "title": title,
            "build_system": tool,
            "manifests": manifests.join(" "),
            "corepack": tool == "pnpm" || berry,
            "install": install,
            "install_all": install_all,
            "build": build,
            "prune": prune,
            "npm_start": npm_start,
        }),
        base_image: base,
        builder_image: builder,
    })
}

fn python(a: &Analysis, f: &ProjectFacts, opts: &Options) -> Result<Plan, ToolError> {
    let version = pick_version(a.version.as_deref(), "3.12", 2, false);
    let image = format!("python:{version}-slim-bookworm");
    let tool = match a.build_system.as_deref() {
        Some(t @ ("poetry" | "uv" | "pipenv")) => t,
        _ if f.has("requirements.txt") => "pip",
        _ if f.has("poetry.lock") => "poetry",
        _ if f.has("uv.lock") => "uv",
        _ if f.has("Pipfile") => "pipenv",
        _ => "pip",
    };
    let venv = matches!(tool, "poetry" | "uv");
    let lockfile = |lock: &str| f.has(lock).then(|| format!("pyproject.toml {lock}"));
    // (dependency files, install command, tool settings, the tool's pinned package)
    let (manifests, install, tool_env, tool_package) = match tool {
        "poetry" => (
            lockfile("poetry.lock").unwrap_or_else(|| "pyproject.toml".to_owned()),
            "poetry install --only main --no-root --no-interaction --no-ansi".to_owned(),
            "POETRY_VIRTUALENVS_IN_PROJECT=true \\\n    POETRY_NO_INTERACTION=1",
            "poetry==1.8.5",
        ),
        "uv" => (
            lockfile("uv.lock").unwrap_or_else(|| "pyproject.toml".to_owned()),
            if f.has("uv.lock") {
                "uv sync --frozen --no-dev --no-install-project".to_owned()
            } else {
                "uv sync --no-dev --no-install-project".to_owned()
            },
            "UV_COMPILE_BYTECODE=1 \\\n    UV_LINK_MODE=copy \\\n    UV_PYTHON_DOWNLOADS=never",
            "uv==0.5.11",
        ),
        "pipenv" => {
            let lock = f.has("Pipfile.lock");
            (
                if lock {
                    "Pipfile Pipfile.lock".to_owned()
                } else {
                    "Pipfile".to_owned()
                },
                format!(
                    "pip install --no-cache-dir pipenv==2024.4.0 && pipenv install --system {} \
                     && pip uninstall -y pipenv",
                    if lock { "--deploy" } else { "--skip-lock" }
                ),
                "",
                "",
            )
        }
        _ => (
            "requirements.txt".to_owned(),
            "pip install --no-cache-dir -r requirements.txt".to_owned(),
            "",
            "",
        ),
    };
    let deps_layer = match tool {
        "pip" => f.has("requirements.txt"),
        _ => true,
    };
    let (run, default_port) = python_command(a, f)?;
    let base = opts.base_image.clone().unwrap_or_else(|| image.clone());
    let builder = venv.then(|| opts.builder_image.clone().unwrap_or(image));
    Ok(Plan {
        run: Some(run),
        run_keyword: "CMD",
        port_var: Some("PORT={port}"),
        default_port,
        probe: Some(Probe::Python),
        vars: json!({
            "build_system": a.build_system.clone().unwrap_or_else(|| tool.to_owned()),
            "tool": tool,
            "venv": venv,
            "deps_layer": deps_layer,
            "manifests": manifests,
            "install": install,
            "tool_env": tool_env,
            "tool_package": tool_package,
            "project_install": tool == "pip"
                && !f.has("requirements.txt")
                && (f.has("pyproject.toml") || f.has("setup.py")),
        }),
        base_image: base,
        builder_image: builder,
    })
}

/// The command that serves a Python app, and the port it binds when nothing else says.
fn python_command(a: &Analysis, f: &ProjectFacts) -> Result<(Vec<String>, Option<u16>), ToolError> {
    let framework = a.framework.as_deref().unwrap_or("");
    let asgi = matches!(framework, "fastapi" | "starlette" | "litestar" | "quart");
    let gunicorn = f.python_servers.contains("gunicorn");
    let uvicorn = f.python_servers.contains("uvicorn");
    let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let serve = |target: &str, default: u16| -> Option<(Vec<String>, Option<u16>)> {
        let out = if uvicorn && (asgi || !gunicorn) {
            words(&["uvicorn", target, "--host", "0.0.0.0", "--port", "{port}"])
        } else if gunicorn {
            words(&["gunicorn", "--bind", "0.0.0.0:{port}", target])
        } else if framework == "flask" {
            let module = target.split(':').next().unwrap_or(target);
            words(&[
                "python", "-m", "flask", "--app", module, "run", "--host", "0.0.0.0", "--port",
                "{port}",
            ])
        } else {
            return None;
        };
        Some((out, Some(default)))
    };
    let default_port = match framework {
        "flask" if !gunicorn && !uvicorn => 5000,
        _ => 8000,
    };
    let entry = a
        .entrypoint
        .clone()
        .or_else(|| (framework == "django" && f.has("manage.py")).then(|| "manage.py".to_owned()))
        .or_else(|| f.has("app.py").then(|| "app.py".to_owned()))
        .or_else(|| f.has("main.py").then(|| "main.py".to_owned()));
    let Some(entry) = entry else {
        return Err(unsupported(
            format!(
                "cannot tell what runs the Python project (no entry point, app.py or \
                 main.py): {WAY_OUT}"
            ),
            a,
        ));
    };
    if entry == "manage.py" || entry.ends_with("/manage.py") {
        return Ok((
            words(&["python", &entry, "runserver", "0.0.0.0:{port}"]),
            Some(8000),
        ));
    }
    if entry.contains(':') {
        if let Some(s) = serve(&entry, default_port) {
            return Ok(s);
        }
        let module = entry.split(':').next().unwrap_or(&entry);
        return Ok((words(&["python", "-m", module]), None));
    }
    if let Some(script) = entry.strip_suffix(".py") {
        let module = script.trim_start_matches("./").replace('/', ".");
        if matches!(framework, "flask" | "fastapi" | "starlette")
            && let Some(s) = serve(&format!("{module}:app"), default_port)
        {
            return Ok(s);
        }
        return Ok((words(&["python", &entry]), None));
    }
    Ok((words(&["python", "-m", &entry]), None))
}

fn java(a: &Analysis, f: &ProjectFacts, opts: &Options) -> Result<Plan, ToolError> {
    let version = match pick_version(a.version.as_deref(), "21", 2, false).as_str() {
        // `1.8` is Java 8
        v if v.starts_with("1.") => v.trim_start_matches("1.").to_owned(),
        v => v.split('.').next().unwrap_or("21").to_owned(),
    };
    let gradle = a.build_system.as_deref() == Some("gradle")
        || (a.build_system.as_deref() != Some("maven")
            && (f.has("build.gradle") || f.has("build.gradle.kts")));
    let wrapper = gradle && f.has("gradlew") && f.has("gradle/wrapper/gradle-wrapper.properties");
    // the module the app is in (`app` for `app/build.gradle.kts`), "" at the top
    let module = a
        .manifest
        .as_deref()
        .and_then(|m| m.rsplit_once('/'))
        .map_or("", |(d, _)| d)
        .to_owned();
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    };
    let entry = a.entrypoint.as_deref().filter(|e| plain(e));
    // Gradle's `application` plugin: `installDist` makes `build/install/NAME` with a start
    // script, which runs the app with its dependencies (a plain jar would not).
    let install_dir = entry
        .filter(|e| gradle && e.contains("build/install/"))
        .and_then(|e| e.rsplit_once("/bin/"))
        .map(|(d, _)| d.to_owned());
    let jar = entry
        .and_then(|e| e.rsplit('/').next())
        .filter(|e| e.ends_with(".jar") || e.ends_with(".war"))
        .unwrap_or("*.jar")
        .to_owned();
    let join = |d: &str, p: &str| {
        if d.is_empty() {
            p.to_owned()
        } else {
            format!("{d}/{p}")
        }
    };
    let task = |t: &str| {
        if module.is_empty() {
            t.to_owned()
        } else {
            format!(":{}:{t}", module.replace('/', ":"))
        }
    };
    let (builder, manifests, deps, package, jar_dir) = if gradle {
        let mut files: Vec<&str> = [
            "build.gradle",
            "build.gradle.kts",
            "settings.gradle",
            "settings.gradle.kts",
            "gradle.properties",
        ]
        .into_iter()
        .filter(|n| f.has(n))
        .collect();
        let cmd = if wrapper {
            files.insert(0, "gradlew");
            "chmod +x gradlew && ./gradlew"
        } else {
            "gradle"
        };
        let goal = if install_dir.is_some() {
            "installDist"
        } else {
            "assemble"
        };
        (
            if wrapper {
                format!("eclipse-temurin:{version}-jdk")
            } else {
                format!("gradle:8.10-jdk{version}")
            },
            files.join(" "),
            // a single project's dependencies can be resolved from its build files alone
            (module.is_empty() && !files.is_empty())
                .then(|| format!("{cmd} --no-daemon dependencies")),
            format!("{cmd} --no-daemon {}", task(goal)),
            join(&module, "build/libs"),
        )
    } else {
        (
            format!("maven:3.9-eclipse-temurin-{version}"),
            "pom.xml".to_owned(),
            // the modules' poms are needed to resolve an aggregator's dependencies
            (!f.maven_modules).then(|| "mvn -B -q dependency:go-offline".to_owned()),
            "mvn -B -q -DskipTests package".to_owned(),
            if f.maven_modules {
                ".".to_owned()
            } else {
                join(&module, "target")
            },
        )
    };
    let title = if a.language.as_deref() == Some("kotlin") {
        "Kotlin"
    } else {
        "Java"
    };
    let spring = a.framework.as_deref() == Some("spring-boot");
    let run = match &install_dir {
        Some(_) => {
            let script = a
                .entrypoint
                .as_deref()
                .and_then(|e| e.rsplit('/').next())
                .unwrap_or("app");
            vec![format!("/app/bin/{script}")]
        }
        None => ["java", "-jar", "/app/app.jar"].map(str::to_owned).to_vec(),
    };
    Ok(Plan {
        base_image: opts
            .base_image
            .clone()
            .unwrap_or_else(|| format!("eclipse-temurin:{version}-jre")),
        builder_image: Some(opts.builder_image.clone().unwrap_or(builder)),
        run: Some(run),
        run_keyword: "ENTRYPOINT",
        port_var: Some(if spring {
            "SERVER_PORT={port}"
        } else {
            "PORT={port}"
        }),
        default_port: spring.then_some(8080),
        probe: None,
        vars: json!({
            "title": title,
            "build_system": if gradle { "gradle" } else { "maven" },
            "manifests": manifests,
            "wrapper_dir": wrapper,
            "deps": deps,
            "package": package,
            "install_dir": install_dir,
            "jar_dir": jar_dir,
            "jar_depth": if jar_dir == "." { "" } else { "-maxdepth 1 " },
            "jar": jar,
        }),
    })
}

fn dotnet(a: &Analysis, f: &ProjectFacts, opts: &Options) -> Result<Plan, ToolError> {
    let version = pick_version(a.version.as_deref(), "8.0", 2, false);
    let version = if version.contains('.') {
        version
    } else {
        format!("{version}.0")
    };
    let stem = |p: &str| -> String {
        let n = p.rsplit('/').next().unwrap_or(p);
        n.rsplit_once('.').map_or(n, |(s, _)| s).to_owned()
    };
    let is_project = |p: &&str| {
        [".csproj", ".fsproj", ".vbproj"]
            .iter()
            .any(|x| p.ends_with(x))
    };
    let assembly = a
        .entrypoint
        .as_deref()
        .map(|e| e.strip_suffix(".dll").unwrap_or(e).to_owned());
    let main = a
        .manifest
        .as_deref()
        .filter(is_project)
        .map(str::to_owned)
        .or_else(|| {
            let want = assembly
                .as_deref()
                .or(a.name.as_deref())?
                .to_ascii_lowercase();
            f.dotnet_projects
                .iter()
                .find(|p| stem(p).to_ascii_lowercase() == want)
                .cloned()
        })
        .or_else(|| f.dotnet_projects.first().cloned());
    let assembly = match (assembly, &main, a.name.as_deref()) {
        (Some(a), _, _) => a,
        (None, Some(p), _) => stem(p),
        (None, None, Some(n)) => n.to_owned(),
        (None, None, None) => {
            return Err(unsupported(
                format!(
                    "cannot tell which .NET project to publish (no project file, entry point \
                     or name): {WAY_OUT}"
                ),
                a,
            ));
        }
    };
    let mut project_files = f.dotnet_projects.clone();
    if let Some(m) = &main
        && !project_files.contains(m)
    {
        project_files.push(m.clone());
    }
    let projects: Vec<String> = project_files
        .iter()
        .map(|p| {
            let dir = match p.rsplit_once('/') {
                Some((d, _)) => format!("{d}/"),
                None => "./".to_owned(),
            };
            json_array(&[p.as_str(), dir.as_str()])
        })
        .collect();
    let web = a.framework.as_deref() == Some("aspnetcore");
    let runtime = if web { "aspnet" } else { "runtime" };
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(8);
    Ok(Plan {
        base_image: opts
            .base_image
            .clone()
            .unwrap_or_else(|| format!("mcr.microsoft.com/dotnet/{runtime}:{version}")),
        builder_image: Some(
            opts.builder_image
                .clone()
                .unwrap_or_else(|| format!("mcr.microsoft.com/dotnet/sdk:{version}")),
        ),
        run: Some(vec!["dotnet".to_owned(), format!("{assembly}.dll")]),
        run_keyword: "ENTRYPOINT",
        port_var: Some(if !web {
            "PORT={port}"
        } else if major >= 8 {
            "ASPNETCORE_HTTP_PORTS={port}"
        } else {
            "ASPNETCORE_URLS=http://+:{port}"
        }),
        // ASP.NET Core 8 images listen on 8080 unless told otherwise.
        default_port: (web && major >= 8).then_some(8080),
        probe: None,
        vars: json!({
            "runtime_kind": if web { "ASP.NET Core runtime" } else { ".NET runtime" },
            "projects": projects,
            "main_project": main.as_deref().map(shell_word).unwrap_or_default(),
        }),
    })
}

// ---------------------------------------------------------------------------------------
// Fixing an existing Dockerfile

/// One automatic fix applied by [`fix`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fix {
    /// The rule it answers (`DL1000` for a syntax error).
    pub rule: &'static str,
    /// The line (1-based) of the instruction it changed.
    pub line: usize,
    /// What was changed.
    pub description: String,
}

/// What [`fix`] made of a Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixed {
    /// The text with every fix applied (the input when there was none).
    pub text: String,
    /// The fixes, in the order they were applied.
    pub fixes: Vec<Fix>,
    /// validate_dockerfile's verdict on `text`: the findings left, or the syntax errors.
    pub outcome: Result<Vec<Finding>, Vec<Finding>>,
}

/// How many rounds of fixing at most (a fix can enable another: `apt` → `apt-get` →
/// `apt-get install -y`); each round applies every fix that applies and stops early when
/// nothing changes.
const MAX_ROUNDS: usize = 12;

/// Apply every automatic fix to `text`, round after round, until nothing changes: first
/// what keeps it from parsing (`DL1000`: an instruction that is a typo of a real one, at
/// edit distance 1, or 2 for words longer than three letters, and a RUN line that ends
/// with `&&`, `||` or `|` or is followed by one that starts with them but lacks the `\`),
/// then validate_dockerfile's findings that have a safe fix:
///
/// - `DL3021` a trailing `/` on the destination of a COPY/ADD with several sources;
/// - `DL3006`/`DL3007` an untagged or `latest` image in the last stage's FROM is replaced
///   by `base_image` (when given; earlier stages are build stages whose image the runtime
///   `base_image` cannot stand in for);
/// - `DL3004` `sudo` removed, when the RUN runs as root anyway (no non-root USER before it
///   in the stage) and does not switch users with `-u`/`-g`;
/// - `DL3014` `-y`, `DL3015` `--no-install-recommends` on `apt-get install`;
/// - `DL3009` ` && rm -rf /var/lib/apt/lists/*` after a shell-form RUN that installs with
///   apt-get (not one that only runs `apt-get update`: a later RUN needs its lists);
/// - `DL3027` `apt` → `apt-get` (for the subcommands apt-get has);
/// - `DL3042` `pip install --no-cache-dir`;
/// - `DL4000` `MAINTAINER x` → `LABEL org.opencontainers.image.authors="x"`;
/// - `DL3020` `ADD` → `COPY` when every source is a local path (not a URL or an archive)
///   and no ADD-only flag is used;
/// - `DL3000` a relative WORKDIR made absolute under `/`;
/// - `DL3025` a one-line shell-form CMD/ENTRYPOINT without shell features (variables,
///   operators, globs, redirections) in the JSON form, a leading `exec` dropped; not when
///   the stage has both CMD and ENTRYPOINT (the JSON form would change how they combine).
///
/// Edits are made inside lines: no line is added or removed, and comments, spacing, line
/// endings (`\r\n` too) and a byte-order mark stay as they were.
pub fn fix(text: &str, base_image: Option<&str>) -> Fixed {
    let mut doc = Doc::new(text);
    let mut fixes = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let current = doc.text();
        let before = fixes.len();
        match validate_dockerfile::parse(&current) {
            Err(_) => fix_syntax(&mut doc, &mut fixes),
            Ok(df) => {
                let findings = validate_dockerfile::lint(&df);
                // a fix made once and still found would only be made again: leave it
                let fresh: Vec<Finding> = findings
                    .into_iter()
                    .filter(|f| {
                        !fixes
                            .iter()
                            .any(|x: &Fix| x.rule == f.rule && x.line == f.line)
                    })
                    .collect();
                fix_findings(&mut doc, &df, &fresh, base_image, &mut fixes);
            }
        }
        if fixes.len() == before {
            break;
        }
    }
    let text = doc.text();
    let outcome = validate_dockerfile::validate(&text);
    Fixed {
        text,
        fixes,
        outcome,
    }
}

/// A Dockerfile as physical lines, each with its own line ending.
struct Doc {
    bom: bool,
    lines: Vec<Line>,
}

struct Line {
    text: String,
    end: &'static str,
}

impl Doc {
    fn new(text: &str) -> Doc {
        let (bom, body) = match text.strip_prefix('\u{feff}') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let lines = body
            .split_inclusive('\n')
            .map(|chunk| {
                let (text, end) = if let Some(t) = chunk.strip_suffix("\r\n") {
                    (t, "\r\n")
                } else if let Some(t) = chunk.strip_suffix('\n') {
                    (t, "\n")
                } else {
                    (chunk, "")
                };
                Line {
                    text: text.to_owned(),
                    end,
                }
            })
            .collect();
        Doc { bom, lines }
    }

    fn text(&self) -> String {
        let mut s = String::new();
        if self.bom {
            s.push('\u{feff}');
        }
        for l in &self.lines {
            s.push_str(&l.text);
            s.push_str(l.end);
        }
        s
    }

    fn line(&self, i: usize) -> &str {
        self.lines.get(i).map_or("", |l| l.text.as_str())
    }

    /// Replace bytes `start..end` of line `i`; false (and no change) when the range is not
    /// on character boundaries or the text stays the same.
    fn edit(&mut self, i: usize, start: usize, end: usize, with: &str) -> bool {
        let Some(l) = self.lines.get_mut(i) else {
            return false;
        };
        if start > end
            || end > l.text.len()
            || !l.text.is_char_boundary(start)
            || !l.text.is_char_boundary(end)
            || l.text[start..end] == *with
        {
            return false;
        }
        l.text.replace_range(start..end, with);
        true
    }

    /// Apply edits `(line, start, end, with)` from the last to the first, so earlier
    /// offsets stay right; true if any changed the text.
    fn apply(&mut self, mut edits: Vec<(usize, usize, usize, String)>) -> bool {
        edits.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
        let mut changed = false;
        for (i, s, e, with) in edits {
            changed |= self.edit(i, s, e, &with);
        }
        changed
    }
}

/// An instruction's place in the file, found the way the parser finds it.
struct Span {
    /// The first line's index.
    first: usize,
    /// The instruction's own lines: the first and its continuation lines (comment and blank
    /// lines inside a continuation are left out, as the parser leaves them out).
    code: Vec<usize>,
    /// Heredoc body lines.
    body: Vec<usize>,
    /// The keyword as written.
    word: String,
}

/// The escape character and the instructions of `doc`, whether or not it parses.
fn scan(doc: &Doc) -> (char, Vec<Span>) {
    let n = doc.lines.len();
    let mut escape = '\\';
    let mut i = 0;
    while i < n {
        let Some((k, v)) = validate_dockerfile::directive(doc.line(i)) else {
            break;
        };
        if k == "escape" && v == "`" {
            escape = '`';
        }
        i += 1;
    }
    let blank = |s: &str| {
        let t = s.trim();
        t.is_empty() || t.starts_with('#')
    };
    let mut spans = Vec::new();
    while i < n {
        if blank(doc.line(i)) {
            i += 1;
            continue;
        }
        let first = i;
        let mut code = Vec::new();
        let mut logical = String::new();
        loop {
            let cur = doc.line(i).trim_end();
            code.push(i);
            i += 1;
            match cur.strip_suffix(escape) {
                Some(head) => {
                    logical.push_str(head);
                    while i < n && blank(doc.line(i)) {
                        i += 1;
                    }
                    if i >= n {
                        break;
                    }
                }
                None => {
                    logical.push_str(cur);
                    break;
                }
            }
        }
        let logical = logical.trim();
        let (word, args) = logical
            .split_once(char::is_whitespace)
            .unwrap_or((logical, ""));
        let up = word.to_ascii_uppercase();
        let inner = args
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let heredocs = KEYWORDS.contains(&up.as_str())
            && (matches!(up.as_str(), "RUN" | "COPY" | "ADD")
                || (up == "ONBUILD" && matches!(inner.as_str(), "RUN" | "COPY" | "ADD")));
        let mut body = Vec::new();
        if heredocs {
            for (name, strip) in validate_dockerfile::heredoc_starts(args) {
                while i < n {
                    let l = doc.line(i);
                    let cmp = if strip { l.trim_start_matches('\t') } else { l };
                    i += 1;
                    if cmp == name {
                        break;
                    }
                    body.push(i - 1);
                }
            }
        }
        spans.push(Span {
            first,
            code,
            body,
            word: word.to_owned(),
        });
    }
    (escape, spans)
}

/// The keyword written in the case of `like` (lower case if it was all lower case).
fn cased(keyword: &str, like: &str) -> String {
    if like.chars().any(|c| c.is_ascii_lowercase()) && !like.chars().any(|c| c.is_ascii_uppercase())
    {
        keyword.to_ascii_lowercase()
    } else {
        keyword.to_owned()
    }
}

/// Edit distance with transpositions (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    if let Some(first) = d.first_mut() {
        for (j, cell) in first.iter_mut().enumerate() {
            *cell = j;
        }
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The instruction `word` is a typo of: the only nearest keyword within distance 1 (two
/// or three letters) or 2 (longer words).
fn closest_keyword(word: &str) -> Option<&'static str> {
    let up = word.to_ascii_uppercase();
    if up.len() < 2 || !up.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let max = if up.len() <= 3 { 1 } else { 2 };
    let mut best: Option<(&'static str, usize)> = None;
    let mut tie = false;
    for kw in KEYWORDS {
        let d = distance(&up, kw);
        if d > max {
            continue;
        }
        match best {
            Some((_, bd)) if d > bd => {}
            Some((_, bd)) if d == bd => tie = true,
            _ => {
                best = Some((kw, d));
                tie = false;
            }
        }
    }
    if tie { None } else { best.map(|b| b.0) }
}

/// Byte offsets of the keyword in an instruction's first line.
fn keyword_range(line: &str) -> (usize, usize) {
    let start = line.len() - line.trim_start().len();
    let end = line[start..]
        .find(char::is_whitespace)
        .map_or(line.len(), |e| start + e);
    (start, end)
}

/// Typos of instructions and RUN lines missing their `\`: what keeps a Dockerfile from
/// parsing and can be repaired.
fn fix_syntax(doc: &mut Doc, fixes: &mut Vec<Fix>) {
    let (escape, spans) = scan(doc);
    for (k, s) in spans.iter().enumerate() {
        let line = s.first + 1;
        let up = s.word.to_ascii_uppercase();
        if KEYWORDS.contains(&up.as_str()) {
            if up != "ONBUILD" {
                continue;
            }
            // the instruction ONBUILD triggers
            let text = doc.line(s.first);
            let (_, kw_end) = keyword_range(text);
            let rest = &text[kw_end..];
            let (off, end) = keyword_range(rest);
            let inner = &rest[off..end];
            if inner.is_empty() || KEYWORDS.contains(&inner.to_ascii_uppercase().as_str()) {
                continue;
            }
            if let Some(kw) = closest_keyword(inner) {
                let with = cased(kw, inner);
                let description = format!("`ONBUILD {inner}` → `ONBUILD {with}` (a typo)");
                if doc.edit(s.first, kw_end + off, kw_end + end, &with) {
                    fixes.push(Fix {
                        rule: "DL1000",
                        line,
                        description,
                    });
                }
            }
            continue;
        }
        if let Some(kw) = closest_keyword(&s.word) {
            let (start, end) = keyword_range(doc.line(s.first));
            let with = cased(kw, &s.word);
            let description = format!("`{}` → `{with}` (a typo of the instruction)", s.word);
            if doc.edit(s.first, start, end, &with) {
                fixes.push(Fix {
                    rule: "DL1000",
                    line,
                    description,
                });
            }
            continue;
        }
        // a command line of the RUN above whose `\` is missing
        let Some(prev) = k.checked_sub(1).and_then(|p| spans.get(p)) else {
            continue;
        };
        let Some(&last) = prev.code.last() else {
            continue;
        };
        let tail = doc.line(last).trim_end();
        let operator = |s: &str| ["&&", "||", "|"].iter().any(|o| s.starts_with(o));
        let ends_with_operator = ["&&", "||", "|"].iter().any(|o| tail.ends_with(o));
        if prev.word.eq_ignore_ascii_case("RUN")
            && prev.body.is_empty()
            && (operator(&s.word) || ends_with_operator)
        {
            let at = tail.len();
            if doc.edit(last, at, at, &format!(" {escape}")) {
                fixes.push(Fix {
                    rule: "DL1000",
                    line,
                    description: format!(
                        "joined line {line} to the RUN above: added the missing `{escape}` at \
                         the end of line {}",
                        last + 1
                    ),
                });
            }
        }
    }
}

/// A word or an operator of an instruction, by position.
#[derive(Debug, Clone, Copy)]
struct Tok {
    line: usize,
    start: usize,
    end: usize,
    op: bool,
}

/// Split `s` (bytes `base..` of line `line`) into words and shell operators; quotes keep
/// a word together, `#` at the start of a word ends the line.
fn lex(line: usize, s: &str, base: usize, out: &mut Vec<Tok>) {
    let b = s.as_bytes();
    let mut i = 0;
    let tok = |start: usize, end: usize, op: bool| Tok {
        line,
        start: base + start,
        end: base + end,
        op,
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            break;
        }
        let two = i + 1 < b.len() && b[i + 1] == c;
        match c {
            b'&' | b'|' if two => {
                out.push(tok(i, i + 2, true));
                i += 2;
                continue;
            }
            b'&' | b'|' | b';' | b'(' | b')' => {
                out.push(tok(i, i + 1, true));
                i += 1;
                continue;
            }
            _ => {}
        }
        let start = i;
        let mut quote: Option<u8> = None;
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(q) if c == q => quote = None,
                Some(b'"') if c == b'\\' => i += 1,
                Some(_) => {}
                None if c == b'\'' || c == b'"' => quote = Some(c),
                None if c == b'\\' => i += 1,
                None if c.is_ascii_whitespace()
                    || matches!(c, b'&' | b'|' | b';' | b'(' | b')') =>
                {
                    break;
                }
                None => {}
            }
            i += 1;
        }
        out.push(tok(start, i.min(b.len()), false));
    }
}

/// The words and operators of an instruction after its keyword (and, with `body`, of
/// its heredoc bodies, each line a command of its own). Leading `--flags` are dropped.
fn tokens(doc: &Doc, span: &Span, escape: char, body: bool) -> Vec<Tok> {
    let mut out = Vec::new();
    for (k, &li) in span.code.iter().enumerate() {
        let text = doc.line(li);
        let start = if k == 0 { keyword_range(text).1 } else { 0 };
        let trimmed = text.trim_end();
        let end = match trimmed.strip_suffix(escape) {
            Some(head) => head.len(),
            None => text.len(),
        };
        if start < end {
            lex(li, &text[start..end], start, &mut out);
        }
    }
    let flags = out
        .iter()
        .take_while(|t| !t.op && text_of(doc, t).starts_with("--"))
        .count();
    out.drain(..flags);
    if body {
        for &li in &span.body {
            out.push(Tok {
                line: li,
                start: 0,
                end: 0,
                op: true,
            });
            lex(li, doc.line(li), 0, &mut out);
        }
    }
    out
}

fn text_of<'d>(doc: &'d Doc, t: &Tok) -> &'d str {
    doc.line(t.line).get(t.start..t.end).unwrap_or("")
}

/// A word without its quotes.
fn unquoted<'d>(doc: &'d Doc, t: &Tok) -> &'d str {
    text_of(doc, t).trim_matches(|c| c == '"' || c == '\'')
}

/// The commands (runs of words between operators).
fn commands(toks: &[Tok]) -> Vec<Vec<Tok>> {
    toks.split(|t| t.op)
        .filter(|c| !c.is_empty())
        .map(<[Tok]>::to_vec)
        .collect()
}

/// A command without a leading `sudo` and its flags, as validate_dockerfile sees it.
fn program<'c>(doc: &Doc, cmd: &'c [Tok]) -> &'c [Tok] {
    if cmd.first().is_some_and(|t| unquoted(doc, t) == "sudo") {
        let skip = 1 + cmd[1..]
            .iter()
            .take_while(|t| text_of(doc, t).starts_with('-'))
            .count();
        cmd.get(skip..).unwrap_or(&[])
    } else {
        cmd
    }
}

/// The first word after the program that is not a flag.
fn subcommand(doc: &Doc, p: &[Tok]) -> Option<Tok> {
    p.iter()
        .skip(1)
        .find(|t| !text_of(doc, t).starts_with('-'))
        .copied()
}

/// What a fix may need to know about the instruction besides its text.
struct Site<'a> {
    ins: &'a Instruction,
    span: &'a Span,
    escape: char,
    last_stage: bool,
    /// No non-root USER before it in its stage.
    as_root: bool,
    /// Its stage has both a CMD and an ENTRYPOINT.
    cmd_and_entrypoint: bool,
}

/// The order fixes run in within a round (inserting after `install` in this order gives
/// `install -y --no-install-recommends --no-cache-dir`).
const FIX_ORDER: &[&str] = &[
    "DL3027", "DL3004", "DL3015", "DL3014", "DL3042", "DL3009", "DL3021", "DL3020", "DL3000",
    "DL4000", "DL3025", "DL3006", "DL3007",
];

fn fix_findings(
    doc: &mut Doc,
    df: &Dockerfile,
    findings: &[Finding],
    base_image: Option<&str>,
    fixes: &mut Vec<Fix>,
) {
    let (escape, spans) = scan(doc);
    // per instruction: its stage, and whether it runs as root
    let mut stage_of = Vec::new();
    let mut as_root = Vec::new();
    let mut stages: Vec<(bool, bool)> = Vec::new(); // (has CMD, has ENTRYPOINT)
    let mut root = true;
    for i in &df.instructions {
        if i.keyword == "FROM" {
            stages.push((false, false));
            root = true;
        }
        let s = stages.len().saturating_sub(1);
        stage_of.push(s);
        as_root.push(root);
        match i.keyword.as_str() {
            "USER" => {
                let name = i.args.split(':').next().unwrap_or("").trim();
                root = name == "root" || name == "0";
            }
            "CMD" => {
                if let Some(st) = stages.last_mut() {
                    st.0 = true;
                }
            }
            "ENTRYPOINT" => {
                if let Some(st) = stages.last_mut() {
                    st.1 = true;
                }
            }
            _ => {}
        }
    }
    let last_stage = stages.len().saturating_sub(1);
    let mut todo: Vec<&Finding> = findings
        .iter()
        .filter(|f| FIX_ORDER.contains(&f.rule))
        .collect();
    todo.sort_by_key(|f| FIX_ORDER.iter().position(|r| *r == f.rule));
    for f in todo {
        let Some(idx) = df.instructions.iter().position(|i| i.line == f.line) else {
            continue;
        };
        let Some(span) = spans.iter().find(|s| s.first + 1 == f.line) else {
            continue;
        };
        let stage = stage_of.get(idx).copied().unwrap_or(0);
        let site = Site {
            ins: &df.instructions[idx],
            span,
            escape,
            last_stage: stage == last_stage,
            as_root: as_root.get(idx).copied().unwrap_or(true),
            cmd_and_entrypoint: stages.get(stage).is_some_and(|s| s.0 && s.1),
        };
        let done = match f.rule {
            "DL3027" => fix_apt(doc, &site),
            "DL3004" => fix_sudo(doc, &site),
            "DL3015" => fix_apt_install(doc, &site, "--no-install-recommends"),
            "DL3014" => fix_apt_install(doc, &site, "-y"),
            "DL3042" => fix_pip(doc, &site),
            "DL3009" => fix_apt_lists(doc, &site),
            "DL3021" => fix_copy_dest(doc, &site),
            "DL3020" => fix_add(doc, &site),
            "DL3000" => fix_workdir(doc, &site),
            "DL4000" => fix_maintainer(doc, &site),
            "DL3025" => fix_exec_form(doc, &site),
            "DL3006" | "DL3007" => match base_image {
                Some(b) if site.last_stage => fix_from(doc, &site, b),
                _ => None,
            },
            _ => None,
        };
        if let Some(description) = done {
            fixes.push(Fix {
                rule: f.rule,
                line: f.line,
                description,
            });
        }
    }
}

/// Whether a RUN is a shell-form command line the token fixes may edit.
fn shell_run(site: &Site) -> bool {
    site.ins.keyword == "RUN" && site.ins.exec_form().is_none()
}

const APT_GET_SUBCOMMANDS: &[&str] = &[
    "install",
    "update",
    "upgrade",
    "dist-upgrade",
    "remove",
    "purge",
    "autoremove",
    "clean",
    "autoclean",
    "source",
    "build-dep",
    "download",
    "satisfy",
    "check",
];

fn fix_apt(doc: &mut Doc, site: &Site) -> Option<String> {
    if !shell_run(site) {
        return None;
    }
    let toks = tokens(doc, site.span, site.escape, true);
    let mut edits = Vec::new();
    for cmd in commands(&toks) {
        let p = program(doc, &cmd);
        if let Some(first) = p.first()
            && text_of(doc, first) == "apt"
            && subcommand(doc, p).is_some_and(|s| APT_GET_SUBCOMMANDS.contains(&unquoted(doc, &s)))
        {
            edits.push((first.line, first.start, first.end, "apt-get".to_owned()));
        }
    }
    doc.apply(edits)
        .then(|| "`apt` → `apt-get` (apt's interface is not stable for scripts)".to_owned())
}

fn fix_sudo(doc: &mut Doc, site: &Site) -> Option<String> {
    if !shell_run(site) || !site.as_root {
        return None;
    }
    let toks = tokens(doc, site.span, site.escape, true);
    let mut edits = Vec::new();
    for cmd in commands(&toks) {
        let Some(first) = cmd.first() else { continue };
        if unquoted(doc, first) != "sudo" {
            continue;
        }
        let flags: Vec<&Tok> = cmd[1..]
            .iter()
            .take_while(|t| text_of(doc, t).starts_with('-'))
            .collect();
        let switches = flags.iter().any(|t| {
            let w = text_of(doc, t);
            matches!(w, "-u" | "-g" | "-i" | "-s" | "--login" | "--shell")
                || w.starts_with("--user")
                || w.starts_with("--group")
                || (w.starts_with("-u") && !w.starts_with("--"))
        });
        let Some(next) = cmd.get(1 + flags.len()) else {
            continue;
        };
        if switches || next.line != first.line {
            continue;
        }
        edits.push((first.line, first.start, next.start, String::new()));
    }
    doc.apply(edits)
        .then(|| "removed `sudo` (RUN runs as root at this point)".to_owned())
}

fn fix_apt_install(doc: &mut Doc, site: &Site, flag: &str) -> Option<String> {
    if !shell_run(site) {
        return None;
    }
    let toks = tokens(doc, site.span, site.escape, true);
    let mut edits = Vec::new();
    for cmd in commands(&toks) {
        let p = program(doc, &cmd);
        if p.first().is_none_or(|t| unquoted(doc, t) != "apt-get") {
            continue;
        }
        let Some(sub) = subcommand(doc, p) else {
            continue;
        };
        if unquoted(doc, &sub) != "install" {
            continue;
        }
        let has = p.iter().any(|t| {
            let w = unquoted(doc, t);
            if flag == "-y" {
                w == "--yes"
                    || w == "--assume-yes"
                    || (w.starts_with('-') && !w.starts_with("--") && w.contains('y'))
            } else {
                w == "--no-install-recommends" || w.contains("Install-Recommends=false")
            }
        });
        if !has {
            edits.push((sub.line, sub.end, sub.end, format!(" {flag}")));
        }
    }
    doc.apply(edits)
        .then(|| format!("`apt-get install` → `apt-get install {flag}`"))
}

fn fix_pip(doc: &mut Doc, site: &Site) -> Option<String> {
    if !shell_run(site) {
        return None;
    }
    let toks = tokens(doc, site.span, site.escape, true);
    let mut edits = Vec::new();
    for cmd in commands(&toks) {
        let p = program(doc, &cmd);
        let Some(at) = p.iter().position(|t| {
            let w = unquoted(doc, t);
            w == "pip" || w == "pip3" || w.ends_with("/pip") || w.ends_with("/pip3")
        }) else {
            continue;
        };
        let Some(install) = p[at + 1..].iter().find(|t| unquoted(doc, t) == "install") else {
            continue;
        };
        if !p.iter().any(|t| unquoted(doc, t) == "--no-cache-dir") {
            edits.push((
                install.line,
                install.end,
                install.end,
                " --no-cache-dir".to_owned(),
            ));
        }
    }
    doc.apply(edits)
        .then(|| "`pip install` → `pip install --no-cache-dir`".to_owned())
}

fn fix_apt_lists(doc: &mut Doc, site: &Site) -> Option<String> {
    if !shell_run(site) || !site.span.body.is_empty() {
        return None;
    }
    let toks = tokens(doc, site.span, site.escape, false);
    let installs = commands(&toks).iter().any(|cmd| {
        let p = program(doc, cmd);
        p.first().is_some_and(|t| unquoted(doc, t) == "apt-get")
            && subcommand(doc, p).is_some_and(|s| unquoted(doc, &s) == "install")
    });
    let mentioned = site
        .span
        .code
        .iter()
        .any(|&l| doc.line(l).contains("/var/lib/apt/lists"));
    let last = toks.last().copied()?;
    if !installs || mentioned || last.op {
        return None;
    }
    doc.edit(
        last.line,
        last.end,
        last.end,
        " && rm -rf /var/lib/apt/lists/*",
    )
    .then(|| "added `&& rm -rf /var/lib/apt/lists/*` after the apt-get install".to_owned())
}

fn fix_copy_dest(doc: &mut Doc, site: &Site) -> Option<String> {
    let kw = site.ins.keyword.as_str();
    if kw != "COPY" && kw != "ADD" {
        return None;
    }
    if let Some(Ok(words)) = site.ins.exec_form() {
        // the JSON form: `["a", "b", "/dest"]` → `["a", "b", "/dest/"]`
        let dest = words.last()?.clone();
        let &li = site.span.code.last()?;
        let text = doc.line(li);
        let close = text.rfind(']')?;
        let quote = text[..close].trim_end().len().checked_sub(1)?;
        if text.as_bytes().get(quote) != Some(&b'"') {
            return None;
        }
        return doc.edit(li, quote, quote, "/").then(|| {
            format!("`{dest}` → `{dest}/`: the destination of several sources is a folder")
        });
    }
    // validate_dockerfile splits the shell form on whitespace (quotes do not group words
    // there: a path with spaces needs the JSON form), so the destination is the last word
    let &li = site.span.code.iter().rev().find(|&&l| {
        !doc.line(l)
            .trim()
            .trim_end_matches(site.escape)
            .trim()
            .is_empty()
    })?;
    let text = doc.line(li);
    let trimmed = text.trim_end();
    let content = trimmed
        .strip_suffix(site.escape)
        .unwrap_or(trimmed)
        .trim_end();
    let start = content.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let dest = content[start..].to_owned();
    if dest.is_empty() || dest.ends_with(['"', '\'']) || dest.contains('$') {
        return None;
    }
    let at = content.len();
    doc.edit(li, at, at, "/")
        .then(|| format!("`{dest}` → `{dest}/`: the destination of several sources is a folder"))
}

fn fix_add(doc: &mut Doc, site: &Site) -> Option<String> {
    if site.ins.keyword != "ADD" {
        return None;
    }
    let (flags, rest) = site.ins.flags();
    if flags
        .iter()
        .any(|(n, _)| matches!(n.as_str(), "checksum" | "keep-git-dir" | "unpack"))
    {
        return None;
    }
    let args: Vec<String> = match site.ins.exec_form() {
        Some(Ok(v)) => v,
        Some(Err(_)) => return None,
        None => rest.split_whitespace().map(str::to_owned).collect(),
    };
    let (_, sources) = args.split_last()?;
    if sources.iter().any(|s| {
        validate_dockerfile::is_url(s) || validate_dockerfile::is_archive(s) || s.contains("://")
    }) {
        return None;
    }
    let (start, end) = keyword_range(doc.line(site.span.first));
    let word = doc.line(site.span.first)[start..end].to_owned();
    doc.edit(site.span.first, start, end, &cased("COPY", &word))
        .then(|| "`ADD` → `COPY` (the sources are local files)".to_owned())
}

fn fix_workdir(doc: &mut Doc, site: &Site) -> Option<String> {
    if site.ins.keyword != "WORKDIR" {
        return None;
    }
    let toks = tokens(doc, site.span, site.escape, false);
    let [t] = toks.as_slice() else {
        return None;
    };
    let word = text_of(doc, t).to_owned();
    let q = usize::from(word.starts_with('"') || word.starts_with('\''));
    let inner = &word[q..];
    let (cut, with) = if inner.starts_with("./") {
        (2, "/")
    } else if inner == "." || (q == 1 && inner.len() == 2 && inner.starts_with('.')) {
        (1, "/")
    } else {
        (0, "/")
    };
    let at = t.start + q;
    let old = word.trim_matches(|c| c == '"' || c == '\'').to_owned();
    if !doc.edit(t.line, at, at + cut, with) {
        return None;
    }
    let new = text_of(
        doc,
        &Tok {
            end: t.end - cut + 1,
            ..*t
        },
    )
    .trim_matches(|c| c == '"' || c == '\'')
    .to_owned();
    Some(format!(
        "`WORKDIR {old}` → `WORKDIR {new}` (an absolute path)"
    ))
}

fn fix_maintainer(doc: &mut Doc, site: &Site) -> Option<String> {
    if site.ins.keyword != "MAINTAINER" || site.span.code.len() != 1 {
        return None;
    }
    let text = doc.line(site.span.first);
    let (start, end) = keyword_range(text);
    let value = text[end..].trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    let label = cased("LABEL", &text[start..end]);
    let with = format!("{label} org.opencontainers.image.authors=\"{escaped}\"");
    let len = text.len();
    doc.edit(site.span.first, start, len, &with)
        .then(|| "`MAINTAINER` → `LABEL org.opencontainers.image.authors`".to_owned())
}

/// The words of a command line with no shell feature in it (variables, operators, globs,
/// redirections, escapes, an environment assignment): what the JSON form can say alike.
fn plain_words(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if matches!(c, '$' | '`' | '\\') => return None,
            Some(_) => cur.push(c),
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    in_word = true;
                }
                c if c.is_whitespace() => {
                    if in_word {
                        out.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                '$' | '&' | '|' | ';' | '<' | '>' | '(' | ')' | '`' | '\\' | '*' | '?' | '['
                | ']' | '{' | '}' | '~' | '#' | '!' => return None,
                c => {
                    cur.push(c);
                    in_word = true;
                }
            },
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        out.push(cur);
    }
    if out.first().is_some_and(|w| w.contains('=')) {
        return None;
    }
    if out.first().is_some_and(|w| w == "exec") {
        out.remove(0);
    }
    (!out.is_empty()).then_some(out)
}

fn fix_exec_form(doc: &mut Doc, site: &Site) -> Option<String> {
    let kw = site.ins.keyword.as_str();
    if !matches!(kw, "CMD" | "ENTRYPOINT") || site.span.code.len() != 1 || site.cmd_and_entrypoint {
        return None;
    }
    let text = doc.line(site.span.first);
    let (_, end) = keyword_range(text);
    let rest = text[end..].trim();
    let words = plain_words(rest)?;
    let start = end + (text[end..].len() - text[end..].trim_start().len());
    let stop = text.trim_end().len();
    let json = json_array(&words);
    let description = format!("`{kw} {rest}` → `{kw} {json}` (the JSON form, so signals reach it)");
    doc.edit(site.span.first, start, stop, &json)
        .then_some(description)
}

fn fix_from(doc: &mut Doc, site: &Site, base_image: &str) -> Option<String> {
    if site.ins.keyword != "FROM" {
        return None;
    }
    let toks = tokens(doc, site.span, site.escape, false);
    let image = toks.first().copied()?;
    let old = text_of(doc, &image).to_owned();
    doc.edit(image.line, image.start, image.end, base_image)
        .then(|| format!("`FROM {old}` → `FROM {base_image}` (`base_image`)"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tools::ToolRegistry;
    use crate::tools::validate_dockerfile::Severity;

    fn analysis(language: &str, build: &str) -> Analysis {
        Analysis {
            classified: true,
            language: Some(language.to_owned()),
            languages: vec![language.to_owned()],
            build_system: Some(build.to_owned()),
            ..Analysis::default()
        }
    }

    fn with(mut a: Analysis, f: impl FnOnce(&mut Analysis)) -> Analysis {
        f(&mut a);
        a
    }

    fn facts(files: &[&str]) -> ProjectFacts {
        ProjectFacts {
            files: files.iter().map(|f| (*f).to_owned()).collect(),
            ..ProjectFacts::default()
        }
    }

    fn gen_ok(a: &Analysis, f: &ProjectFacts, o: &Options) -> Generated {
        render(a, f, o).unwrap_or_else(|e| panic!("{a:?}: {e}"))
    }

    /// A handful of shapes per language family: (label, analysis, facts).
    fn shapes() -> Vec<(&'static str, Analysis, ProjectFacts)> {
        let scripts = |f: ProjectFacts, s: &[&str]| ProjectFacts {
            npm_scripts: s.iter().map(|x| (*x).to_owned()).collect(),
            ..f
        };
        let servers = |f: ProjectFacts, s: &[&str]| ProjectFacts {
            python_servers: s.iter().map(|x| (*x).to_owned()).collect(),
            ..f
        };
        vec![
            (
                "rust-axum",
                with(analysis("rust", "cargo"), |a| {
                    a.name = Some("api".into());
                    a.entrypoint = Some("api".into());
                    a.framework = Some("axum".into());
                    a.ports = vec![3000];
                    a.version = Some("1.80".into());
                }),
                facts(&["Cargo.lock"]),
            ),
            (
                "rust-workspace-no-port",
                with(analysis("rust", "cargo"), |a| {
                    a.entrypoint = Some("cli".into());
                }),
                ProjectFacts {
                    cargo_workspace: true,
                    ..facts(&[])
                },
            ),
            (
                "go-cmd",
                with(analysis("go", "go"), |a| {
                    a.name = Some("api".into());
                    a.entrypoint = Some("./cmd/server".into());
                    a.version = Some("1.22".into());
                    a.ports = vec![8080];
                }),
                facts(&["go.sum"]),
            ),
            (
                "go-vendored-root",
                with(analysis("go", "go"), |a| {
                    a.name = Some("tool".into());
                    a.entrypoint = Some(".".into());
                }),
                facts(&["vendor/modules.txt"]),
            ),
            (
                "node-npm",
                with(analysis("javascript", "npm"), |a| {
                    a.entrypoint = Some("server.js".into());
                    a.framework = Some("express".into());
                    a.ports = vec![3000];
                    a.version = Some("20".into());
                }),
                scripts(facts(&["package-lock.json"]), &["start", "test"]),
            ),
            (
                "node-ts-yarn-build",
                with(analysis("typescript", "yarn"), |a| {
                    a.entrypoint = Some("dist/main.js".into());
                    a.ports = vec![3000];
                }),
                scripts(facts(&["yarn.lock"]), &["build", "start"]),
            ),
            (
                "node-pnpm",
                with(analysis("javascript", "pnpm"), |a| {
                    a.ports = vec![8080];
                }),
                scripts(facts(&["pnpm-lock.yaml"]), &["start"]),
            ),
            (
                "node-yarn-berry",
                with(analysis("javascript", "yarn"), |a| {
                    a.entrypoint = Some("index.js".into());
                }),
                facts(&["yarn.lock", ".yarnrc.yml"]),
            ),
            (
                "node-bun",
                with(analysis("typescript", "bun"), |a| {
                    a.entrypoint = Some("src/index.ts".into());
                    a.ports = vec![3000];
                }),
                facts(&["bun.lockb"]),
            ),
            (
                "python-flask-pip",
                with(analysis("python", "pip"), |a| {
                    a.entrypoint = Some("app:app".into());
                    a.framework = Some("flask".into());
                    a.ports = vec![5000];
                    a.version = Some("3.11".into());
                }),
                facts(&["requirements.txt"]),
            ),
            (
                "python-fastapi-poetry",
                with(analysis("python", "poetry"), |a| {
                    a.entrypoint = Some("app.main:app".into());
                    a.framework = Some("fastapi".into());
                    a.ports = vec![8000];
                }),
                servers(facts(&["pyproject.toml", "poetry.lock"]), &["uvicorn"]),
            ),
            (
                "python-uv-module",
                with(analysis("python", "uv"), |a| {
                    a.entrypoint = Some("worker".into());
                }),
                facts(&["pyproject.toml", "uv.lock"]),
            ),
            (
                "python-pipenv-django",
                with(analysis("python", "pipenv"), |a| {
                    a.entrypoint = Some("manage.py".into());
                    a.framework = Some("django".into());
                    a.ports = vec![8000];
                }),
                servers(
                    facts(&["Pipfile", "Pipfile.lock", "manage.py"]),
                    &["gunicorn"],
                ),
            ),
            (
                "python-pyproject-pip",
                with(analysis("python", "pip"), |a| {
                    a.entrypoint = Some("main.py".into());
                }),
                facts(&["pyproject.toml"]),
            ),
            (
                "java-maven-spring",
                with(analysis("java", "maven"), |a| {
                    a.name = Some("demo".into());
                    a.entrypoint = Some("target/demo-0.0.1-SNAPSHOT.jar".into());
                    a.framework = Some("spring-boot".into());
                    a.version = Some("17".into());
                    a.ports = vec![8080];
                    a.manifest = Some("pom.xml".into());
                }),
                facts(&[]),
            ),
            (
                "java-maven-modules",
                with(analysis("java", "maven"), |a| {
                    a.name = Some("parent".into());
                }),
                ProjectFacts {
                    maven_modules: true,
                    ..facts(&[])
                },
            ),
            (
                "kotlin-gradle-wrapper",
                with(analysis("kotlin", "gradle"), |a| {
                    a.name = Some("svc".into());
                    a.entrypoint = Some("build/libs/svc-1.0.jar".into());
                    a.ports = vec![8081];
                    a.manifest = Some("build.gradle.kts".into());
                }),
                facts(&[
                    "build.gradle.kts",
                    "settings.gradle.kts",
                    "gradlew",
                    "gradle/wrapper/gradle-wrapper.properties",
                ]),
            ),
            (
                "java-gradle-application-module",
                with(analysis("java", "gradle"), |a| {
                    a.name = Some("app".into());
                    a.entrypoint = Some("app/build/install/app/bin/app".into());
                    a.manifest = Some("app/build.gradle.kts".into());
                    a.version = Some("1.8".into());
                }),
                facts(&["settings.gradle.kts"]),
            ),
            (
                "dotnet-web",
                with(analysis("csharp", "dotnet"), |a| {
                    a.name = Some("Api".into());
                    a.entrypoint = Some("Api.dll".into());
                    a.framework = Some("aspnetcore".into());
                    a.version = Some("net8.0".into());
                    a.manifest = Some("src/Api/Api.csproj".into());
                }),
                ProjectFacts {
                    dotnet_projects: vec!["src/Api/Api.csproj".into(), "src/Lib/Lib.csproj".into()],
                    ..facts(&[])
                },
            ),
            (
                "dotnet-console-6",
                with(analysis("csharp", "dotnet"), |a| {
                    a.name = Some("Tool".into());
                    a.version = Some("net6.0".into());
                }),
                ProjectFacts {
                    dotnet_projects: vec!["Tool.csproj".into()],
                    ..facts(&[])
                },
            ),
        ]
    }

    /// The images of every FROM, the last stage's instructions, and the parsed file.
    fn stages(text: &str) -> (Vec<String>, Vec<Instruction>) {
        let df = validate_dockerfile::parse(text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        let froms = df
            .instructions
            .iter()
            .filter(|i| i.keyword == "FROM")
            .map(|i| i.args.split_whitespace().next().unwrap_or("").to_owned())
            .collect();
        let last = df
            .instructions
            .iter()
            .rposition(|i| i.keyword == "FROM")
            .unwrap();
        (froms, df.instructions[last..].to_vec())
    }

    #[test]
    fn every_template_renders_a_clean_dockerfile() {
        let mut templates = BTreeSet::new();
        for (label, a, f) in shapes() {
            let g = gen_ok(&a, &f, &Options::default());
            templates.insert(g.template);
            let findings = validate_dockerfile::validate(&g.text)
                .unwrap_or_else(|e| panic!("{label} does not parse: {e:?}\n{}", g.text));
            let bad: Vec<_> = findings
                .iter()
                .filter(|f| f.severity != Severity::Info)
                .collect();
            assert!(bad.is_empty(), "{label}: {bad:#?}\n{}", g.text);
            // only the missing HEALTHCHECK of a service without a known port is reported
            assert!(
                findings
                    .iter()
                    .all(|f| f.rule == "CK005" && g.port.is_none()),
                "{label}: {findings:#?}"
            );
            let (froms, last) = stages(&g.text);
            for image in &froms {
                let tag = image.rsplit('/').next().unwrap().split_once(':');
                assert!(
                    tag.is_some_and(|(_, t)| t != "latest"),
                    "{label}: `{image}` is not pinned"
                );
            }
            assert_eq!(froms.last(), Some(&g.base_image), "{label}");
            assert_eq!(
                froms.len() > 1,
                g.builder_image.is_some(),
                "{label}: a builder image means a build stage"
            );
            let kw = |k: &str| last.iter().filter(|i| i.keyword == k).collect::<Vec<_>>();
            assert_eq!(kw("USER").len(), 1, "{label}");
            assert_eq!(kw("USER")[0].args, DEFAULT_USER, "{label}");
            assert_eq!(kw("WORKDIR").len(), 1, "{label}");
            let run: Vec<_> = last
                .iter()
                .filter(|i| i.keyword == "CMD" || i.keyword == "ENTRYPOINT")
                .collect();
            assert_eq!(run.len(), 1, "{label}");
            assert!(matches!(run[0].exec_form(), Some(Ok(_))), "{label}");
            match g.port {
                Some(p) => {
                    assert_eq!(kw("EXPOSE")[0].args, p.to_string(), "{label}");
                    assert_eq!(kw("HEALTHCHECK").len(), 1, "{label}");
                    assert!(g.healthcheck.is_some());
                }
                None => assert!(kw("EXPOSE").is_empty() && kw("HEALTHCHECK").is_empty()),
            }
            assert!(
                !g.text.contains("{{"),
                "{label}: a template leaked\n{}",
                g.text
            );
            assert!(
                !g.text.contains("\n\n\n"),
                "{label}: blank lines\n{}",
                g.text
            );
        }
        assert_eq!(
            templates.into_iter().collect::<Vec<_>>(),
            ["dotnet", "go", "java", "node", "python", "rust"]
        );
    }

    #[test]
    fn compiled_languages_build_in_a_separate_stage() {
        for (label, a, f) in shapes() {
            let g = gen_ok(&a, &f, &Options::default());
            if matches!(g.template, "rust" | "go" | "java" | "dotnet") {
                let (froms, _) = stages(&g.text);
                assert_eq!(froms.len(), 2, "{label}");
                assert!(g.text.contains("COPY --from=build"), "{label}");
            }
        }
    }

    #[test]
    fn dependencies_are_installed_before_the_sources_are_copied() {
        let cases = [
            (
                "rust-axum",
                "COPY Cargo.toml Cargo.lock ./",
                "cargo fetch --locked",
            ),
            ("go-cmd", "COPY go.mod go.sum ./", "go mod download"),
            (
                "node-npm",
                "COPY package.json package-lock.json ./",
                "npm ci --omit=dev",
            ),
            (
                "node-ts-yarn-build",
                "COPY package.json yarn.lock ./",
                "yarn install --frozen-lockfile",
            ),
            (
                "node-pnpm",
                "COPY package.json pnpm-lock.yaml ./",
                "pnpm install --frozen-lockfile --prod",
            ),
            (
                "node-yarn-berry",
                "COPY package.json yarn.lock .yarnrc.yml ./",
                "yarn install --immutable",
            ),
            (
                "node-bun",
                "COPY package.json bun.lockb ./",
                "bun install --frozen-lockfile",
            ),
            (
                "python-flask-pip",
                "COPY requirements.txt ./",
                "pip install --no-cache-dir -r requirements.txt",
            ),
            (
                "python-fastapi-poetry",
                "COPY pyproject.toml poetry.lock ./",
                "poetry install --only main --no-root",
            ),
            (
                "python-uv-module",
                "COPY pyproject.toml uv.lock ./",
                "uv sync --frozen --no-dev",
            ),
            (
                "python-pipenv-django",
                "COPY Pipfile Pipfile.lock ./",
                "pipenv install --system --deploy",
            ),
            (
                "java-maven-spring",
                "COPY pom.xml ./",
                "mvn -B -q dependency:go-offline",
            ),
            (
                "kotlin-gradle-wrapper",
                "COPY gradlew build.gradle.kts settings.gradle.kts ./",
                "./gradlew --no-daemon dependencies",
            ),
            (
                "dotnet-web",
                "COPY [\"src/Api/Api.csproj\", \"src/Api/\"]",
                "dotnet restore src/Api/Api.csproj",
            ),
        ];
        let all = shapes();
        for (label, copy, install) in cases {
            let (_, a, f) = all.iter().find(|s| s.0 == label).unwrap();
            let t = gen_ok(a, f, &Options::default()).text;
            let at = |needle: &str| {
                t.find(needle)
                    .unwrap_or_else(|| panic!("{label}: no `{needle}` in\n{t}"))
            };
            let sources = t
                .find("COPY . .")
                .or_else(|| t.find("COPY --from=build /app ./"));
            assert!(at(copy) < at(install), "{label}");
            assert!(at(install) < sources.unwrap(), "{label}\n{t}");
        }
    }

    #[test]
    fn commands_fit_the_project() {
        let all = shapes();
        let text = |label: &str| {
            let (_, a, f) = all.iter().find(|s| s.0 == label).unwrap();
            gen_ok(a, f, &Options::default()).text
        };
        let has = |label: &str, needle: &str| {
            let t = text(label);
            assert!(t.contains(needle), "{label}: no `{needle}` in\n{t}");
        };
        has("rust-axum", "FROM rust:1.87-bookworm AS build");
        has("rust-axum", "ENTRYPOINT [\"/usr/local/bin/api\"]");
        has(
            "rust-workspace-no-port",
            "RUN cargo build --release --bin cli",
        );
        has(
            "go-cmd",
            "go build -trimpath -ldflags=\"-s -w\" -o /usr/local/bin/server ./cmd/server",
        );
        has("go-cmd", "FROM golang:1.24-bookworm AS build");
        has("node-npm", "FROM node:20-bookworm-slim");
        has("node-npm", "CMD [\"node\", \"server.js\"]");
        has(
            "node-ts-yarn-build",
            "RUN yarn run build && yarn install --frozen-lockfile --production",
        );
        has("node-ts-yarn-build", "COPY --from=build /app ./");
        has("node-pnpm", "RUN corepack enable");
        has("node-pnpm", "CMD [\"npm\", \"start\"]");
        has("node-pnpm", "ENV NPM_CONFIG_CACHE=/tmp/.npm");
        has("node-bun", "CMD [\"bun\", \"run\", \"src/index.ts\"]");
        has("node-bun", "CMD [\"bun\", \"-e\"");
        has("python-flask-pip", "FROM python:3.11-slim-bookworm");
        has(
            "python-flask-pip",
            "CMD [\"python\", \"-m\", \"flask\", \"--app\", \"app\", \"run\", \"--host\", \"0.0.0.0\", \"--port\", \"5000\"]",
        );
        has(
            "python-fastapi-poetry",
            "CMD [\"uvicorn\", \"app.main:app\", \"--host\", \"0.0.0.0\", \"--port\", \"8000\"]",
        );
        has(
            "python-fastapi-poetry",
            "COPY --from=build /app/.venv /app/.venv",
        );
        has("python-uv-module", "CMD [\"python\", \"-m\", \"worker\"]");
        has(
            "python-pipenv-django",
            "CMD [\"python\", \"manage.py\", \"runserver\", \"0.0.0.0:8000\"]",
        );
        has("python-pyproject-pip", "RUN pip install --no-cache-dir .");
        has(
            "java-maven-spring",
            "FROM maven:3.9-eclipse-temurin-17 AS build",
        );
        has("java-maven-spring", "-name 'demo-0.0.1-SNAPSHOT.jar'");
        has("java-maven-spring", "ENV SERVER_PORT=8080");
        has(
            "java-maven-spring",
            "ENTRYPOINT [\"java\", \"-jar\", \"/app/app.jar\"]",
        );
        has("java-maven-modules", "find . -name '*.jar'");
        has("kotlin-gradle-wrapper", "COPY gradle ./gradle");
        has(
            "kotlin-gradle-wrapper",
            "find build/libs -maxdepth 1 -name 'svc-1.0.jar'",
        );
        has(
            "java-gradle-application-module",
            "RUN gradle --no-daemon :app:installDist",
        );
        has(
            "java-gradle-application-module",
            "cp -r app/build/install/app /out",
        );
        has(
            "java-gradle-application-module",
            "ENTRYPOINT [\"/app/bin/app\"]",
        );
        has(
            "java-gradle-application-module",
            "FROM eclipse-temurin:8-jre",
        );
        has("dotnet-web", "COPY [\"src/Lib/Lib.csproj\", \"src/Lib/\"]");
        has("dotnet-web", "FROM mcr.microsoft.com/dotnet/aspnet:8.0");
        has("dotnet-web", "ENV ASPNETCORE_HTTP_PORTS=8080");
        has("dotnet-web", "EXPOSE 8080");
        has("dotnet-web", "ENTRYPOINT [\"dotnet\", \"Api.dll\"]");
        has(
            "dotnet-console-6",
            "FROM mcr.microsoft.com/dotnet/runtime:6.0",
        );
        has("dotnet-console-6", "COPY [\"Tool.csproj\", \"./\"]");
        // no dependency layer where it could not work
        assert!(!text("rust-workspace-no-port").contains("cargo fetch"));
        assert!(!text("go-vendored-root").contains("go mod download"));
        assert!(!text("java-maven-modules").contains("go-offline"));
        assert!(!text("java-gradle-application-module").contains("dependencies"));
    }

    #[test]
    fn options_override_images_port_and_user() {
        let all = shapes();
        let (_, a, f) = all.iter().find(|s| s.0 == "go-cmd").unwrap();
        let o = Options {
            base_image: Some("gcr.io/distroless/static-debian12:nonroot".into()),
            builder_image: Some("golang:1.23-alpine".into()),
            port: Some(9090),
            user: Some("65532:65532".into()),
        };
        let g = gen_ok(a, f, &o);
        let (froms, last) = stages(&g.text);
        assert_eq!(
            froms,
            [
                "golang:1.23-alpine",
                "gcr.io/distroless/static-debian12:nonroot"
            ]
        );
        assert!(
            !g.text.contains("apt-get"),
            "no apt in distroless\n{}",
            g.text
        );
        assert!(
            g.healthcheck.is_none(),
            "distroless has nothing to probe with"
        );
        assert!(
            last.iter()
                .any(|i| i.keyword == "EXPOSE" && i.args == "9090")
        );
        assert!(
            last.iter()
                .any(|i| i.keyword == "USER" && i.args == "65532:65532")
        );
        assert!(g.text.contains("ENV PORT=9090"));
        let rules: Vec<_> = validate_dockerfile::validate(&g.text)
            .unwrap()
            .into_iter()
            .map(|f| f.rule)
            .collect();
        assert_eq!(rules, ["CK005"], "only the missing healthcheck is reported");

        // node on alpine keeps its node probe; an unknown image gets none
        let (_, a, f) = all.iter().find(|s| s.0 == "node-npm").unwrap();
        let alpine = Options {
            base_image: Some("node:20-alpine".into()),
            ..Options::default()
        };
        assert!(
            gen_ok(a, f, &alpine)
                .healthcheck
                .unwrap()
                .contains("\"node\", \"-e\"")
        );
        let (_, a, f) = all.iter().find(|s| s.0 == "rust-axum").unwrap();
        let custom = Options {
            base_image: Some("registry.example.com/base:7".into()),
            ..Options::default()
        };
        let g = gen_ok(a, f, &custom);
        assert!(g.healthcheck.is_none());
        assert!(!g.text.contains("apt-get"));
        let ubuntu = Options {
            base_image: Some("ubuntu:24.04".into()),
            ..Options::default()
        };
        let g = gen_ok(a, f, &ubuntu);
        assert!(g.healthcheck.unwrap().contains("/dev/tcp/127.0.0.1/3000"));
        assert!(
            g.text
                .contains("apt-get install -y --no-install-recommends ca-certificates")
        );
    }

    #[test]
    fn an_unpinned_base_image_is_accepted_and_reported() {
        let all = shapes();
        let (_, a, f) = all.iter().find(|s| s.0 == "rust-axum").unwrap();
        for (image, rule) in [("debian:latest", "DL3007"), ("debian", "DL3006")] {
            let o = Options {
                base_image: Some(image.into()),
                ..Options::default()
            };
            let g = gen_ok(a, f, &o);
            let findings = validate_dockerfile::validate(&g.text).unwrap();
            assert!(
                findings.iter().any(|f| f.rule == rule),
                "{image}: {findings:?}"
            );
        }
    }

    #[test]
    fn an_unclassified_folder_is_unsupported_unless_a_base_image_is_given() {
        let a = Analysis {
            classified: false,
            languages: vec!["shell".into()],
            evidence: vec!["build.sh".into()],
            reason: Some("no build manifest found".into()),
            ..Analysis::default()
        };
        let e = render(&a, &ProjectFacts::default(), &Options::default()).unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);
        assert_eq!(e.code.as_deref(), Some("UNSUPPORTED_PROJECT"));
        for want in [
            "could not classify",
            "no build manifest found",
            "shell",
            "build.sh",
        ] {
            assert!(e.message.contains(want), "{want}: {}", e.message);
        }
        assert!(e.message.contains("`base_image`") && e.message.contains("by hand"));
        assert_eq!(
            e.details.unwrap()["analysis"]["reason"],
            "no build manifest found"
        );

        let o = Options {
            base_image: Some("busybox:1.36".into()),
            port: Some(8080),
            ..Options::default()
        };
        let g = gen_ok(&a, &ProjectFacts::default(), &o);
        assert_eq!(g.template, "generic");
        let (froms, last) = stages(&g.text);
        assert_eq!(froms, ["busybox:1.36"]);
        assert!(last.iter().any(|i| i.keyword == "USER"));
        assert!(
            !last.iter().any(|i| i.keyword == "CMD"),
            "the image's own command runs"
        );
        assert!(g.text.contains("no build manifest found"));
        let findings = validate_dockerfile::validate(&g.text).unwrap();
        assert!(
            findings.iter().all(|f| f.severity == Severity::Info),
            "{findings:?}"
        );
    }

    #[test]
    fn a_language_without_template_is_unsupported() {
        let a = analysis("ruby", "bundler");
        let e = render(&a, &ProjectFacts::default(), &Options::default()).unwrap_err();
        assert_eq!(e.code.as_deref(), Some("UNSUPPORTED_PROJECT"));
        assert!(e.message.contains("`ruby`") && e.message.contains("no Dockerfile template"));
        // nothing to run is unsupported too
        let e = render(
            &analysis("python", "pip"),
            &facts(&["requirements.txt"]),
            &Options::default(),
        )
        .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("UNSUPPORTED_PROJECT"));
        assert!(e.message.contains("what runs"), "{}", e.message);
        let e = render(&analysis("rust", "cargo"), &facts(&[]), &Options::default()).unwrap_err();
        assert!(e.message.contains("which binary"), "{}", e.message);
    }

    #[test]
    fn versions() {
        assert_eq!(pick_version(None, "3.12", 2, false), "3.12");
        assert_eq!(pick_version(Some("3.11.4"), "3.12", 2, false), "3.11");
        assert_eq!(pick_version(Some("^3.10"), "3.12", 2, false), "3.10");
        assert_eq!(pick_version(Some(">=3.9"), "3.12", 2, false), "3.12");
        assert_eq!(pick_version(Some(">=3.13"), "3.12", 2, false), "3.13");
        assert_eq!(
            pick_version(Some("1.75"), "1.87", 2, true),
            "1.87",
            "an MSRV"
        );
        assert_eq!(pick_version(Some("1.90.1"), "1.87", 2, true), "1.90");
        assert_eq!(pick_version(Some("net8.0"), "8.0", 2, false), "8.0");
        assert_eq!(pick_version(Some("lts/*"), "22", 1, false), "22");
        assert_eq!(
            file_name("github.com/acme/api v2"),
            "github.com-acme-api-v2"
        );
        assert_eq!(file_name("../.."), "app");
        assert_eq!(
            shell_word("src/My Api/Api.csproj"),
            "'src/My Api/Api.csproj'"
        );
        assert_eq!(json_array(&["a \"b\""]), "[\"a \\\"b\\\"\"]");
    }

    #[test]
    fn image_traits_know_common_images() {
        let t = |i: &str| {
            let t = image_traits(i);
            (t.apt, t.bash, t.bare)
        };
        assert_eq!(t("debian:bookworm-slim"), (true, true, false));
        assert_eq!(t("eclipse-temurin:21-jre"), (true, true, false));
        assert_eq!(
            t("mcr.microsoft.com/dotnet/aspnet:8.0"),
            (true, true, false)
        );
        assert_eq!(
            t("mcr.microsoft.com/dotnet/aspnet:8.0-alpine"),
            (false, false, false)
        );
        assert_eq!(
            t("mcr.microsoft.com/dotnet/aspnet:8.0-jammy-chiseled"),
            (false, false, true)
        );
        assert_eq!(
            t("gcr.io/distroless/cc-debian12:nonroot"),
            (false, false, true)
        );
        assert_eq!(t("scratch"), (false, false, true));
        assert_eq!(t("alpine:3.20"), (false, false, false));
        assert_eq!(t("amazoncorretto:21"), (false, true, false));
        assert_eq!(
            t("localhost:5000/debian:12@sha256:abc"),
            (true, true, false)
        );
    }

    // ---- fixes ------------------------------------------------------------------------

    fn fixed(text: &str) -> Fixed {
        fix(text, None)
    }

    /// `(rule, before, after)`: one fix each.
    const FIXES: &[(&str, &str, &str)] = &[
        (
            "DL1000",
            "FROOM debian:12\nUSER app\n",
            "FROM debian:12\nUSER app\n",
        ),
        (
            "DL1000",
            "FROM debian:12\nCOPPY a /a\nRUNN true\n",
            "FROM debian:12\nCOPY a /a\nRUN true\n",
        ),
        (
            "DL1000",
            "from debian:12\nrunn true\n",
            "from debian:12\nrun true\n",
        ),
        (
            "DL1000",
            "FROM debian:12\nEXPOES 80\n",
            "FROM debian:12\nEXPOSE 80\n",
        ),
        (
            "DL1000",
            "FROM a:1\nONBUILD RUNN make\n",
            "FROM a:1\nONBUILD RUN make\n",
        ),
        (
            "DL1000",
            "FROM a:1\nRUN apt-get update &&\n    apt-get clean\n",
            "FROM a:1\nRUN apt-get update && \\\n    apt-get clean\n",
        ),
        (
            "DL1000",
            "FROM a:1\nRUN make \\\n && make test\n && make install\n",
            "FROM a:1\nRUN make \\\n && make test \\\n && make install\n",
        ),
        (
            "DL3021",
            "FROM a:1\nCOPY a b /app\n",
            "FROM a:1\nCOPY a b /app/\n",
        ),
        (
            "DL3021",
            "FROM a:1\nCOPY --chown=1:1 a \\\n     b /app \\\n\n",
            "FROM a:1\nCOPY --chown=1:1 a \\\n     b /app/ \\\n\n",
        ),
        (
            "DL3021",
            "FROM a:1\nCOPY [\"a\", \"b\", \"/app\"]\n",
            "FROM a:1\nCOPY [\"a\", \"b\", \"/app/\"]\n",
        ),
        (
            "DL3004",
            "FROM a:1\nRUN sudo make install\n",
            "FROM a:1\nRUN make install\n",
        ),
        (
            "DL3004",
            "FROM a:1\nRUN make && sudo -E make install\n",
            "FROM a:1\nRUN make && make install\n",
        ),
        (
            "DL3014",
            "FROM a:1\nRUN apt-get install --no-install-recommends x && rm -rf /var/lib/apt/lists/*\n",
            "FROM a:1\nRUN apt-get install -y --no-install-recommends x && rm -rf /var/lib/apt/lists/*\n",
        ),
        (
            "DL3015",
            "FROM a:1\nRUN apt-get -q install -y x && rm -rf /var/lib/apt/lists/*\n",
            "FROM a:1\nRUN apt-get -q install --no-install-recommends -y x && rm -rf /var/lib/apt/lists/*\n",
        ),
        (
            "DL3009",
            "FROM a:1\nRUN apt-get update \\\n && apt-get install -y --no-install-recommends x\n",
            "FROM a:1\nRUN apt-get update \\\n && apt-get install -y --no-install-recommends x && rm -rf /var/lib/apt/lists/*\n",
        ),
        (
            "DL3027",
            "FROM a:1\nRUN apt update && apt-get clean\n",
            "FROM a:1\nRUN apt-get update && apt-get clean\n",
        ),
        (
            "DL3042",
            "FROM a:1\nRUN python3 -m pip install -r req.txt\n",
            "FROM a:1\nRUN python3 -m pip install --no-cache-dir -r req.txt\n",
        ),
        (
            "DL4000",
            "FROM a:1\nMAINTAINER \"Jane \\\"J\\\" <jane@example.com>\"\n",
            "FROM a:1\nLABEL org.opencontainers.image.authors=\"Jane \\\\\\\"J\\\\\\\" <jane@example.com>\"\n",
        ),
        (
            "DL4000",
            "FROM a:1\nmaintainer jane@example.com\n",
            "FROM a:1\nlabel org.opencontainers.image.authors=\"jane@example.com\"\n",
        ),
        (
            "DL3020",
            "FROM a:1\nADD app.py conf/ /app/\n",
            "FROM a:1\nCOPY app.py conf/ /app/\n",
        ),
        (
            "DL3000",
            "FROM a:1\nWORKDIR app\n",
            "FROM a:1\nWORKDIR /app\n",
        ),
        (
            "DL3000",
            "FROM a:1\nWORKDIR ./srv/app\n",
            "FROM a:1\nWORKDIR /srv/app\n",
        ),
        (
            "DL3000",
            "FROM a:1\nWORKDIR \"my app\"\n",
            "FROM a:1\nWORKDIR \"/my app\"\n",
        ),
        (
            "DL3025",
            "FROM a:1\nCMD python app.py --name 'a b'\n",
            "FROM a:1\nCMD [\"python\", \"app.py\", \"--name\", \"a b\"]\n",
        ),
        (
            "DL3025",
            "FROM a:1\nENTRYPOINT   exec /app/run  \n",
            "FROM a:1\nENTRYPOINT   [\"/app/run\"]  \n",
        ),
    ];

    #[test]
    fn each_fix_before_and_after() {
        for (rule, before, after) in FIXES {
            let r = fixed(before);
            assert_eq!(r.text, *after, "{rule}: {before:?} → {:#?}", r.fixes);
            assert!(
                r.fixes.iter().all(|f| f.rule == *rule),
                "{rule}: {:#?}",
                r.fixes
            );
            assert!(!r.fixes.is_empty());
            let left = r
                .outcome
                .as_ref()
                .unwrap_or_else(|e| panic!("{rule}: {e:?}"));
            assert!(
                left.iter().all(|f| f.rule != *rule),
                "{rule} is still found in {after:?}: {left:?}"
            );
        }
    }

    #[test]
    fn fixes_chain_and_settle() {
        // `apt` → `apt-get`, then `-y`, `--no-install-recommends`, the lists; sudo goes
        let r = fixed("FROM a:1\nRUN sudo apt install curl\n");
        assert_eq!(
            r.text,
            "FROM a:1\nRUN apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\n"
        );
        let rules: Vec<_> = r.fixes.iter().map(|f| f.rule).collect();
        assert_eq!(rules, ["DL3027", "DL3004", "DL3015", "DL3014", "DL3009"]);
        assert!(r.fixes.iter().all(|f| f.line == 2));
    }

    #[test]
    fn fixes_that_would_change_meaning_are_not_made() {
        let untouched = [
            // sudo after a non-root USER, or switching users
            "FROM a:1\nUSER app\nRUN sudo make install\nUSER app\n",
            "FROM a:1\nRUN sudo -u postgres psql\n",
            // only `apt-get update` here: a later RUN needs the lists
            "FROM a:1\nRUN apt-get update\nRUN apt-get install -y --no-install-recommends x && rm -rf /var/lib/apt/lists/*\n",
            // ADD of an archive or a URL is not a COPY
            "FROM a:1\nADD https://x/y.bin app.py /y/\n",
            // shell features in CMD; CMD and ENTRYPOINT together
            "FROM a:1\nCMD python app.py --port $PORT\n",
            "FROM a:1\nCMD echo hi > /tmp/x\n",
            "FROM a:1\nENTRYPOINT /app/run\nCMD serve\n",
            // apt subcommands apt-get does not have
            "FROM a:1\nRUN apt list --installed\n",
            // an untagged image without `base_image`
            "FROM debian\n",
            // a quoted shell-form destination (Docker does not read quotes there)
            "FROM a:1\nCOPY a b \"/my app\"\n",
        ];
        for text in untouched {
            let r = fixed(text);
            assert!(r.fixes.is_empty(), "{text:?}: {:#?}", r.fixes);
            assert_eq!(r.text, text);
        }
        // not a typo: too far from any instruction, or ambiguous
        for text in ["FROM a:1\nXYZZY b\n", "FROM a:1\ncp a b\n"] {
            let r = fixed(text);
            assert!(r.fixes.is_empty(), "{text:?}: {:?}", r.fixes);
            assert!(r.outcome.is_err());
        }
    }

    #[test]
    fn base_image_replaces_an_unpinned_final_image_only() {
        let text = "FROM golang AS build\nRUN go build\nFROM debian:latest\nUSER app\n";
        let r = fix(text, Some("debian:bookworm-slim"));
        assert_eq!(
            r.text,
            "FROM golang AS build\nRUN go build\nFROM debian:bookworm-slim\nUSER app\n"
        );
        assert_eq!(r.fixes.len(), 1);
        assert_eq!((r.fixes[0].rule, r.fixes[0].line), ("DL3007", 3));
        let left: Vec<_> = r.outcome.unwrap().into_iter().map(|f| f.rule).collect();
        assert!(
            left.contains(&"DL3006"),
            "the build stage is reported: {left:?}"
        );
        let r = fix(
            "FROM --platform=$BUILDPLATFORM node AS web\n",
            Some("node:22-slim"),
        );
        assert_eq!(
            r.text,
            "FROM --platform=$BUILDPLATFORM node:22-slim AS web\n"
        );
    }

    #[test]
    fn fixing_is_idempotent() {
        let bad = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dockerfiles/bad.Dockerfile"),
        )
        .unwrap();
        let mut texts: Vec<String> = FIXES.iter().map(|(_, b, _)| (*b).to_owned()).collect();
        texts.push(bad);
        texts.push("FROOM debian\nMAINTAINER x\nRUN sudo apt install y\nCMD run it\n".into());
        for text in texts {
            let once = fix(&text, Some("debian:12"));
            let twice = fix(&once.text, Some("debian:12"));
            assert!(twice.fixes.is_empty(), "{text:?}: {:#?}", twice.fixes);
            assert_eq!(twice.text, once.text);
        }
    }

    #[test]
    fn the_bad_fixture_gets_better() {
        let bad = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dockerfiles/bad.Dockerfile"),
        )
        .unwrap();
        let before = validate_dockerfile::validate(&bad).unwrap();
        let r = fix(&bad, Some("debian:bookworm-slim"));
        let after = r.outcome.unwrap();
        let fixed_rules: BTreeSet<_> = r.fixes.iter().map(|f| f.rule).collect();
        // not DL3006 (line 1 is not the last stage) nor DL3025 (that stage has both CMD and
        // ENTRYPOINT)
        for rule in [
            "DL4000", "DL3014", "DL3015", "DL3009", "DL3004", "DL3042", "DL3020", "DL3000",
            "DL3021",
        ] {
            assert!(fixed_rules.contains(rule), "{rule}: {:#?}", r.fixes);
        }
        assert!(after.len() < before.len(), "{after:#?}");
        assert_eq!(r.text.lines().count(), bad.lines().count());
    }

    #[test]
    fn crlf_bom_comments_and_spacing_are_kept() {
        let text = "\u{feff}# a comment  \r\nFROOM  debian:12   AS   base\r\n\r\n  # indented comment\r\nCOPY  a  b   /app\r\nUSER app";
        let r = fixed(text);
        assert_eq!(
            r.text,
            "\u{feff}# a comment  \r\nFROM  debian:12   AS   base\r\n\r\n  # indented comment\r\nCOPY  a  b   /app/\r\nUSER app"
        );
        let rules: Vec<_> = r.fixes.iter().map(|f| (f.rule, f.line)).collect();
        assert_eq!(rules, [("DL1000", 2), ("DL3021", 5)]);
        // heredoc bodies are not instructions
        let heredoc = "FROM a:1\nRUN <<EOF\nFROOM is not an instruction here\nEOF\nUSER app\n";
        assert!(fixed(heredoc).fixes.is_empty());
        // the escape directive is honoured
        let tick = "# escape=`\nFROM a:1\nRUN make &&\n  make install\n";
        assert_eq!(
            fixed(tick).text,
            "# escape=`\nFROM a:1\nRUN make && `\n  make install\n"
        );
    }

    #[test]
    fn what_cannot_be_parsed_or_fixed_is_reported() {
        let r = fixed("FROM a:1\nRUN\n");
        assert!(r.fixes.is_empty());
        assert!(r.outcome.is_err());
        // fixes still apply to what can be fixed
        let r = fixed("FROOM a:1\nRUN\n");
        assert_eq!(r.text, "FROM a:1\nRUN\n");
        assert_eq!(r.fixes.len(), 1);
        assert!(
            r.outcome.unwrap_err()[0]
                .message
                .contains("RUN needs arguments")
        );
        assert!(fixed("").fixes.is_empty());
    }

    #[test]
    fn typos() {
        assert_eq!(closest_keyword("FROOM"), Some("FROM"));
        assert_eq!(closest_keyword("form"), Some("FROM"));
        assert_eq!(closest_keyword("CPOY"), Some("COPY"));
        assert_eq!(closest_keyword("ENTRYPONT"), Some("ENTRYPOINT"));
        assert_eq!(closest_keyword("WROKDIR"), Some("WORKDIR"));
        assert_eq!(closest_keyword("LABLE"), Some("LABEL"));
        assert_eq!(
            closest_keyword("cp"),
            None,
            "two edits of a two-letter word"
        );
        assert_eq!(closest_keyword("apt-get"), None);
        assert_eq!(closest_keyword("echo"), None);
        assert_eq!(closest_keyword("X"), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    // ---- the tool ---------------------------------------------------------------------

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::detached(Arc::new(ToolRegistry::empty()), dir.to_path_buf())
    }

    async fn call(dir: &Path, args: Value) -> Result<Value, ToolError> {
        GenerateDockerfile.call(args, ctx(dir)).await
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("ckflow"))
            .collect()
    }

    #[tokio::test]
    async fn arguments_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        for args in [
            json!("x"),
            json!({}),
            json!({"path": ""}),
            json!({"path": ".", "bogus": 1}),
            json!({"path": ".", "port": 0}),
            json!({"path": ".", "port": 70000}),
            json!({"path": ".", "user": "a b"}),
            json!({"path": ".", "base_image": "debian 12"}),
            json!({"path": ".", "fix": "yes"}),
            json!({"path": ".", "overwrite": null}),
        ] {
            let e = call(dir.path(), args.clone()).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::InvalidInput, "{args}: {e}");
        }
        // a confined run (an MCP client's) stays in the project folder
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        for args in [
            json!({"path": ".."}),
            json!({"path": ".", "output": "../Dockerfile"}),
            json!({"path": "..", "fix": true}),
        ] {
            let e = GenerateDockerfile
                .call(args.clone(), ctx(&dir.path().join("p")).confined())
                .await
                .unwrap_err();
            assert_eq!(e.code.as_deref(), Some("PATH_OUTSIDE_PROJECT"), "{args}");
        }
        assert!(!dir.path().join("Dockerfile").exists());
        let e = call(dir.path(), json!({"path": "missing"}))
            .await
            .unwrap_err();
        assert_eq!(
            (e.class, e.code.as_deref()),
            (ErrorClass::NotFound, Some("PROJECT_NOT_FOUND"))
        );
    }

    #[tokio::test]
    async fn a_dockerignore_is_written_only_when_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "web", "scripts": {"start": "node server.js"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("server.js"),
            "require('http').createServer().listen(3000)\n",
        )
        .unwrap();
        let out = call(dir.path(), json!({"path": "."})).await.unwrap();
        let written = std::fs::read_to_string(dir.path().join(".dockerignore")).unwrap();
        assert!(
            out["dockerignore"]
                .as_str()
                .unwrap()
                .ends_with(".dockerignore")
        );
        for line in [".git", ".ckflow", "node_modules"] {
            assert!(
                written.lines().any(|l| l == line),
                "{line} missing:\n{written}"
            );
        }
        assert!(!written.lines().any(|l| l == "target"), "{written}");
        // A second generation (overwrite) keeps the user's own .dockerignore.
        std::fs::write(dir.path().join(".dockerignore"), "mine\n").unwrap();
        let out = call(dir.path(), json!({"path": ".", "overwrite": true}))
            .await
            .unwrap();
        assert!(out["dockerignore"].is_null());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".dockerignore")).unwrap(),
            "mine\n"
        );
        assert!(
            dockerignore_for(Some("rust"))
                .lines()
                .any(|l| l == "target")
        );
        assert!(dockerignore_for(Some("csharp")).lines().any(|l| l == "obj"));
        assert!(!dockerignore_for(None).contains("node_modules"));
    }

    #[tokio::test]
    async fn an_existing_dockerfile_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM mine:1\n").unwrap();
        let e = call(dir.path(), json!({"path": "."})).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);
        assert_eq!(e.code.as_deref(), Some("DOCKERFILE_EXISTS"));
        assert!(e.message.contains("`overwrite: true`") && e.message.contains("`fix: true`"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("Dockerfile")).unwrap(),
            "FROM mine:1\n"
        );
        // `output` is relative to the project folder, and refused the same way
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("Dockerfile.prod"), "FROM mine:1\n").unwrap();
        let e = call(
            dir.path(),
            json!({"path": "app", "output": "Dockerfile.prod"}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("DOCKERFILE_EXISTS"));
    }

    #[tokio::test]
    async fn an_unclassified_folder_is_refused_or_built_on_base_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello\n").unwrap();
        let e = call(dir.path(), json!({"path": "."})).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);
        assert_eq!(e.code.as_deref(), Some("UNSUPPORTED_PROJECT"));
        assert!(e.message.contains("base_image"), "{}", e.message);
        assert!(!dir.path().join("Dockerfile").exists());

        let r = call(
            dir.path(),
            json!({"path": ".", "base_image": "nginx:1.27", "output": "out/Dockerfile"}),
        )
        .await
        .unwrap();
        let written = dir.path().join("out/Dockerfile");
        assert_eq!(r["path"], written.display().to_string());
        assert_eq!(r["generated"], true);
        assert_eq!(r["base_image"], "nginx:1.27");
        assert_eq!(r["errors"], 0);
        let text = std::fs::read_to_string(&written).unwrap();
        assert!(text.contains("FROM nginx:1.27\n"));
        assert!(leftovers(&dir.path().join("out")).is_empty());
        let schema = jsonschema::draft202012::new(&GenerateDockerfile.output_schema()).unwrap();
        assert!(schema.is_valid(&r), "{r:#}");
    }

    #[tokio::test]
    async fn fix_repairs_the_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Dockerfile");
        std::fs::write(&path, "FROOM debian:12\r\nCOPY a b /app\r\nUSER app\r\n").unwrap();
        // as the containerize workflow calls it: optional inputs come as ""
        let r = call(
            dir.path(),
            json!({"path": ".", "fix": true, "base_image": ""}),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FROM debian:12\r\nCOPY a b /app/\r\nUSER app\r\n"
        );
        assert_eq!(r["generated"], false);
        assert_eq!(r["base_image"], "debian:12");
        assert_eq!(r["fixed"][0]["rule"], "DL1000");
        assert_eq!(r["fixed"][1]["rule"], "DL3021");
        assert_eq!(r["fixed"][1]["line"], 2);
        assert_eq!(r["valid"], true);
        let schema = jsonschema::draft202012::new(&GenerateDockerfile.output_schema()).unwrap();
        assert!(schema.is_valid(&r), "{r:#}");
        assert!(leftovers(dir.path()).is_empty());

        // fixed once, nothing left to fix: NOTHING_TO_FIX, the file untouched
        let e = call(dir.path(), json!({"path": ".", "fix": true}))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::ToolError);
        assert_eq!(e.code.as_deref(), Some("NOTHING_TO_FIX"));
        assert!(e.details.unwrap()["findings"].is_array());

        // `path` may name the Dockerfile; `output` too
        std::fs::write(dir.path().join("web.Dockerfile"), "FROM a:1\nRUNN true\n").unwrap();
        let r = call(dir.path(), json!({"path": "web.Dockerfile", "fix": true}))
            .await
            .unwrap();
        assert_eq!(
            r["fixed"][0]["description"],
            "`RUNN` → `RUN` (a typo of the instruction)"
        );
        std::fs::write(dir.path().join("other"), "FROM a:1\nCPY x /x\n").unwrap();
        call(
            dir.path(),
            json!({"path": ".", "output": "other", "fix": true}),
        )
        .await
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("other")).unwrap(),
            "FROM a:1\nCOPY x /x\n"
        );
    }

    #[tokio::test]
    async fn fix_failures() {
        let dir = tempfile::tempdir().unwrap();
        let e = call(dir.path(), json!({"path": ".", "fix": true}))
            .await
            .unwrap_err();
        assert_eq!(
            (e.class, e.code.as_deref()),
            (ErrorClass::NotFound, Some("DOCKERFILE_NOT_FOUND"))
        );
        // cannot parse and nothing to fix: untouched
        let path = dir.path().join("Dockerfile");
        std::fs::write(&path, "FROM a:1\nXYZZY\n").unwrap();
        let e = call(dir.path(), json!({"path": ".", "fix": true}))
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("NOTHING_TO_FIX"));
        assert!(e.message.contains("does not parse"), "{}", e.message);
        // still broken after fixing: the fixes are written, DOCKERFILE_INVALID
        std::fs::write(&path, "FROOM a:1\nXYZZY\n").unwrap();
        let e = call(dir.path(), json!({"path": ".", "fix": true}))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);
        assert_eq!(e.code.as_deref(), Some("DOCKERFILE_INVALID"));
        let d = e.details.unwrap();
        assert_eq!(d["fixed"][0]["rule"], "DL1000");
        assert_eq!(d["findings"][0]["rule"], "DL1000");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "FROM a:1\nXYZZY\n");
    }

    #[test]
    fn tool_is_described() {
        let t = GenerateDockerfile;
        let input = t.input_schema();
        let v = jsonschema::draft202012::new(&input).unwrap();
        for (p, s) in input["properties"].as_object().unwrap() {
            assert!(s["description"].is_string(), "{p}");
        }
        for (p, s) in t.output_schema()["properties"].as_object().unwrap() {
            assert!(s["description"].is_string(), "{p}");
        }
        assert!(v.is_valid(&json!({"path": ".", "fix": true, "base_image": "a:1"})));
        assert!(v.is_valid(&json!({"path": ".", "base_image": "", "user": "", "output": ""})));
        assert!(!v.is_valid(&json!({"path": ".", "base_image": "a b"})));
        assert!(!v.is_valid(&json!({"path": ".", "port": 0})));
        assert!(!v.is_valid(&json!({"fix": true})));
        assert!(!v.is_valid(&json!({"path": ".", "other": 1})));
        assert!(t.destructive());
        assert!(!t.host_exec());
        let codes: Vec<_> = t.error_codes().into_iter().map(|c| c.0).collect();
        for c in [
            "UNSUPPORTED_PROJECT",
            "DOCKERFILE_EXISTS",
            "NOTHING_TO_FIX",
            "DOCKERFILE_INVALID",
        ] {
            assert!(codes.contains(&c), "{c}");
        }
        assert!(templates().is_ok());
    }
}
