//! `build_image`: builds an image from a context folder and a Dockerfile with the engine's
//! builder, streaming its log, then tags the result.
//!
//! The context goes to the engine as a tar (built in memory, entries owned by root, in
//! sorted order) holding what `.dockerignore` leaves in ([`Matcher`]); the Dockerfile and
//! `.dockerignore` are always sent, as `docker build` does. A Dockerfile outside the
//! context is sent under a private name. Credentials for the registries of the `FROM`
//! images are resolved like `pull_image`'s and handed over as `X-Registry-Config`.
//!
//! Failures: a Dockerfile the builder rejects before running a step is `build_failed` /
//! `DOCKERFILE_INVALID`; a failing step is `build_failed` / `BUILD_FAILED` with the
//! instruction (`RUN false`), its step number, the exit code and the log's last lines in
//! `details`; a `FROM` image that cannot be pulled is classed like a pull failure.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::engine::{self, engine_error};
use super::ignore::Matcher;
use super::images::{check_platform, image_id, invalid_reference, or_cancel};
use super::reference::Reference;
use super::{Args, Lines, Redactor, auth, classify_registry, output, part};
use crate::tools::{Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::model::{ErrorClass, Rule, Then};

/// How many log lines a `BUILD_FAILED` error keeps.
const LOG_TAIL: usize = 30;
/// The name a Dockerfile from outside the context gets inside it.
const OUTSIDE_DOCKERFILE: &str = ".ckflow.Dockerfile";

/// The `build_image` tool.
pub struct BuildImage;

impl Tool for BuildImage {
    fn name(&self) -> &str {
        "build_image"
    }

    fn description(&self) -> &str {
        "Builds an image from a context folder (honouring `.dockerignore`) and a Dockerfile \
         with the Docker engine, streaming the build log, and tags it."
    }

    fn input_schema(&self) -> Value {
        let string_map = |what: &str| {
            json!({
                "type": "object",
                "description": what,
                "additionalProperties": {"type": ["string", "number", "boolean"]}
            })
        };
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "What to build and how to name it.",
            "additionalProperties": false,
            "properties": {
                "context": {
                    "type": "string",
                    "description": "The build context folder (relative to the project \
                                    folder); its `.dockerignore` decides what is sent. \
                                    Default: the project folder.",
                    "default": "."
                },
                "dockerfile": {
                    "type": "string",
                    "description": "The Dockerfile, relative to the context (or absolute).",
                    "default": "Dockerfile"
                },
                "tags": {
                    "type": ["array", "string"],
                    "description": "Names for the image, `[registry/]repository[:tag]` (tag \
                                    `latest` when left out).",
                    "items": {"type": "string"}
                },
                "build_args": string_map(
                    "Build-time variables for `ARG` (`--build-arg`). Not for secrets: they \
                     are recorded in the image's history."
                ),
                "target": {
                    "type": "string",
                    "description": "The stage to build in a multi-stage Dockerfile \
                                    (`--target`)."
                },
                "platform": {
                    "type": "string",
                    "description": "The platform to build for, `os[/arch[/variant]]` \
                                    (`--platform`)."
                },
                "no_cache": {
                    "type": "boolean",
                    "description": "Build every step afresh (`--no-cache`).",
                    "default": false
                },
                "labels": string_map("Labels to set on the image (`--label`).")
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "The built image.",
            "required": ["image_id", "tags"],
            "properties": {
                "image_id": {"type": "string", "description": "The image id (`sha256:…`)."},
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The names given to it, each with its tag."
                }
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "DOCKERFILE_INVALID",
                "The builder rejected the Dockerfile before running a step: unknown \
                 instruction or flag, empty file, no `FROM` (class `build_failed`); details \
                 hold `dockerfile`, `error` and, when known, `line`.",
            ),
            (
                "BUILD_FAILED",
                "A step failed, e.g. `RUN` exited non-zero or `COPY` found no file (class \
                 `build_failed`); the message names the instruction, details hold \
                 `dockerfile` (its absolute path), `instruction`, `step` (`3/5`), `exit_code` \
                 (for `RUN`) and `log` (the last lines).",
            ),
            (
                "DOCKERFILE_NOT_FOUND",
                "The Dockerfile does not exist (class `not_found`).",
            ),
            (
                "CONTEXT_NOT_FOUND",
                "The context folder does not exist or is not a folder (class `not_found`).",
            ),
            (
                "DOCKERIGNORE_INVALID",
                "`.dockerignore` has a bad pattern (class `invalid_input`).",
            ),
            (
                "CONTEXT_UNREADABLE",
                "A file of the context cannot be read (class `tool_error`).",
            ),
            (
                "INVALID_REFERENCE",
                "A tag is not a valid image reference (class `invalid_input`).",
            ),
            (
                "INVALID_PLATFORM",
                "`platform` is not `os[/arch[/variant]]` (class `invalid_input`).",
            ),
            (
                "TARGET_NOT_FOUND",
                "The Dockerfile has no stage named `target` (class `invalid_input`).",
            ),
            (
                "IMAGE_NOT_FOUND",
                "A `FROM` image does not exist (class `not_found`).",
            ),
            (
                "AUTH_FAILED",
                "The registry of a `FROM` image refused the credentials (class `auth_failed`).",
            ),
            (
                "TRANSIENT",
                "A passing fault while pulling a `FROM` image or talking to the engine (class \
                 `transient`).",
            ),
            (
                "ENGINE_UNREACHABLE",
                "No Docker engine answers at `DOCKER_HOST` (class `not_found`).",
            ),
        ]
    }

    fn default_rules(&self) -> Vec<Rule> {
        let mut with = serde_json::Map::new();
        with.insert("path".into(), json!("{{failed.error.details.dockerfile}}"));
        vec![Rule::on_tool_error(
            "build_image",
            "build_failed",
            Some(("validate_dockerfile", with)),
            Then::Fail,
            1,
        )]
    }

    fn destructive(&self) -> bool {
        // Tags the new image, moving a tag that named another.
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(build(args, ctx))
    }
}

/// Checked arguments.
struct Spec {
    context: PathBuf,
    /// The Dockerfile on disk.
    dockerfile: PathBuf,
    /// Its name inside the context tar.
    dockerfile_in_tar: String,
    /// Whether it lies outside the context (and is added under [`OUTSIDE_DOCKERFILE`]).
    outside: bool,
    tags: Vec<Reference>,
    build_args: HashMap<String, String>,
    labels: HashMap<String, String>,
    target: Option<String>,
    platform: Option<String>,
    no_cache: bool,
}

fn parse(args: &Value, ctx: &ToolContext) -> Result<Spec, ToolError> {
    let a = Args::new(
        "build_image",
        args,
        &[
            "context",
            "dockerfile",
            "tags",
            "build_args",
            "target",
            "platform",
            "no_cache",
            "labels",
        ],
    )?;
    let context = ctx.path("context", &a.str("context")?.unwrap_or_else(|| ".".into()))?;
    match std::fs::metadata(&context) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ToolError::new(
                ErrorClass::NotFound,
                format!("the build context `{}` is not a folder", context.display()),
            )
            .with_code("CONTEXT_NOT_FOUND"));
        }
        Err(e) => {
            return Err(ToolError::new(
                ErrorClass::NotFound,
                format!("the build context `{}`: {e}", context.display()),
            )
            .with_code("CONTEXT_NOT_FOUND"));
        }
    }
    let context = context.canonicalize().unwrap_or(context);
    let df_arg = a
        .str("dockerfile")?
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "Dockerfile".into());
    let dockerfile = context.join(&df_arg);
    if ctx.roots.is_some() {
        ctx.path("dockerfile", &dockerfile.display().to_string())?;
    }
    if !dockerfile.is_file() {
        return Err(ToolError::new(
            ErrorClass::NotFound,
            format!("there is no Dockerfile at `{}`", dockerfile.display()),
        )
        .with_code("DOCKERFILE_NOT_FOUND"));
    }
    let dockerfile = dockerfile.canonicalize().unwrap_or(dockerfile);
    let (dockerfile_in_tar, outside) = match dockerfile.strip_prefix(&context) {
        Ok(rel) => (rel.to_string_lossy().replace('\\', "/"), false),
        Err(_) => (OUTSIDE_DOCKERFILE.to_owned(), true),
    };
    let mut tags = Vec::new();
    for (i, t) in a.strings("tags")?.iter().enumerate() {
        let r = Reference::parse(t).map_err(|m| invalid_reference(&format!("tags[{i}]"), m))?;
        if r.digest.is_some() {
            return Err(invalid_reference(
                &format!("tags[{i}]"),
                format!("`{t}` has a digest; a tag is `repository:tag`"),
            ));
        }
        tags.push(r);
    }
    let platform = a.str("platform")?.filter(|p| !p.is_empty());
    if let Some(p) = &platform {
        check_platform(p)?;
    }
    Ok(Spec {
        context,
        dockerfile,
        dockerfile_in_tar,
        outside,
        tags,
        build_args: a.string_map("build_args")?.into_iter().collect(),
        labels: a.string_map("labels")?.into_iter().collect(),
        target: a.str("target")?.filter(|t| !t.is_empty()),
        platform,
        no_cache: a.bool("no_cache")?.unwrap_or(false),
    })
}

async fn build(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let spec = parse(&args, &ctx)?;
    let mut red = Redactor::new(&ctx);
    let matcher = {
        let path = spec.context.join(".dockerignore");
        match std::fs::read_to_string(&path) {
            Ok(text) => Matcher::parse(&text).map_err(|m| {
                ToolError::invalid(format!("`{}`: {m}", path.display()))
                    .with_code("DOCKERIGNORE_INVALID")
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Matcher::default(),
            Err(e) => {
                return Err(ToolError::new(
                    ErrorClass::ToolError,
                    format!("cannot read `{}`: {e}", path.display()),
                )
                .with_code("CONTEXT_UNREADABLE"));
            }
        }
    };
    let tar = {
        let context = spec.context.clone();
        let extra = spec.outside.then(|| spec.dockerfile.clone());
        let keep = spec.dockerfile_in_tar.clone();
        tokio::task::spawn_blocking(move || context_tar(&context, matcher, &keep, extra.as_deref()))
            .await
            .map_err(|e| {
                ToolError::new(ErrorClass::ToolError, format!("packing the context: {e}"))
            })?
            .map_err(|e| {
                ToolError::new(
                    ErrorClass::ToolError,
                    format!(
                        "packing the build context `{}`: {e}",
                        spec.context.display()
                    ),
                )
                .with_code("CONTEXT_UNREADABLE")
            })?
    };
    if ctx.cancel.is_cancelled() {
        return Err(ToolError::cancelled());
    }
    let engine = engine::connect(&ctx).await?;
    let creds = from_credentials(&spec.dockerfile, &ctx, &mut red).await;

    let opts = BuildImageOptions {
        dockerfile: spec.dockerfile_in_tar.clone(),
        nocache: spec.no_cache,
        rm: true,
        forcerm: true,
        buildargs: (!spec.build_args.is_empty()).then(|| spec.build_args.clone()),
        labels: (!spec.labels.is_empty()).then(|| spec.labels.clone()),
        platform: spec.platform.clone().unwrap_or_default(),
        target: spec.target.clone().unwrap_or_default(),
        ..BuildImageOptions::default()
    };
    let mut stream = engine
        .docker
        .build_image(opts, creds, Some(bollard::body_full(tar.into())));
    let mut log = Log::default();
    let mut lines = Lines::default();
    let mut id: Option<String> = None;
    loop {
        let item = tokio::select! {
            biased;
            // Dropping the request makes the engine stop the build and remove its
            // intermediate container (`forcerm`).
            () = ctx.cancel.cancelled() => return Err(ToolError::cancelled()),
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
        match item {
            Ok(info) => {
                if let Some(text) = &info.stream {
                    lines.push(text, |l| log.line(&ctx, &red, l));
                }
                if let Some(aux_id) = info.aux.as_ref().and_then(|a| a.id.clone()) {
                    id = Some(aux_id);
                }
                if let Some(status) = &info.status {
                    match &info.id {
                        Some(pid) => {
                            let detail = info
                                .progress_detail
                                .as_ref()
                                .map(|d| json!({"current": d.current, "total": d.total}));
                            part(&ctx, pid, status, detail.as_ref());
                        }
                        None => output(&ctx, &red, "stdout", status),
                    }
                }
            }
            Err(e) => {
                lines.finish(|l| log.line(&ctx, &red, l));
                return Err(failure(e, &spec, &log, &red));
            }
        }
    }
    lines.finish(|l| log.line(&ctx, &red, l));
    let id = match id.or_else(|| log.built.clone()) {
        Some(i) if i.starts_with("sha256:") => i,
        Some(short) => or_cancel(&ctx, image_id(&engine, &short, &red)).await?,
        None => {
            return Err(ToolError::new(
                ErrorClass::ToolError,
                red.apply(&format!(
                    "the engine finished the build without naming an image; last lines:\n{}",
                    log.tail.join("\n")
                )),
            ));
        }
    };
    let mut tags = Vec::new();
    for r in &spec.tags {
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        let opts = TagImageOptions {
            repo: Some(r.name()),
            tag: Some(tag.clone()),
        };
        let full = format!("{}:{tag}", r.name());
        or_cancel(&ctx, async {
            engine.docker.tag_image(&id, Some(opts)).await.map_err(|e| {
                engine_error(
                    e,
                    &format!("tagging the image as `{full}`"),
                    "IMAGE_NOT_FOUND",
                    &red,
                )
            })
        })
        .await?;
        tags.push(full);
    }
    Ok(json!({"image_id": id, "tags": tags}))
}

/// What the build log said so far.
#[derive(Default)]
struct Log {
    /// The last lines.
    tail: Vec<String>,
    /// `3/5` of the step running.
    step: Option<String>,
    /// Its instruction (`RUN false`).
    instruction: Option<String>,
    /// The short id of `Successfully built …`.
    built: Option<String>,
}

impl Log {
    fn line(&mut self, ctx: &ToolContext, red: &Redactor, line: &str) {
        let line = red.apply(line);
        if let Some(rest) = line.strip_prefix("Step ")
            && let Some((n, instr)) = rest.split_once(" : ")
        {
            self.step = Some(n.trim().to_owned());
            self.instruction = Some(instr.trim().to_owned());
        }
        if let Some(short) = line.strip_prefix("Successfully built ") {
            self.built = Some(short.trim().to_owned());
        }
        output(ctx, red, "stdout", &line);
        self.tail.push(line);
        if self.tail.len() > LOG_TAIL {
            self.tail.remove(0);
        }
    }
}

/// A build error as a tool failure.
fn failure(e: BollardError, spec: &Spec, log: &Log, red: &Redactor) -> ToolError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 400,
            message,
        } => {
            let message = red.apply(&message);
            if message.contains("failed to reach build target") {
                return ToolError::invalid(message).with_code("TARGET_NOT_FOUND");
            }
            if message.contains("platform") {
                return ToolError::invalid(message).with_code("INVALID_PLATFORM");
            }
            let mut details = json!({
                "dockerfile": spec.dockerfile.display().to_string(),
                "error": message,
            });
            if let Some(line) = parse_error_line(&message) {
                details["line"] = json!(line);
            }
            ToolError::new(
                ErrorClass::BuildFailed,
                format!(
                    "the Dockerfile `{}` is invalid: {message}",
                    spec.dockerfile.display()
                ),
            )
            .with_code("DOCKERFILE_INVALID")
            .with_details(details)
        }
        BollardError::DockerStreamError { error } => {
            let error = red.apply(&error);
            let instruction = log.instruction.clone().unwrap_or_default();
            let step = log.step.clone().unwrap_or_default();
            let is_from = instruction
                .split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("FROM"));
            let mut details = json!({
                "dockerfile": spec.dockerfile.display().to_string(),
                "instruction": instruction,
                "step": step,
                "error": error,
                "log": log.tail.join("\n"),
            });
            if is_from && let Some(class) = classify_registry(&error) {
                let code = match class {
                    ErrorClass::AuthFailed => "AUTH_FAILED",
                    ErrorClass::NotFound => "IMAGE_NOT_FOUND",
                    _ => "TRANSIENT",
                };
                return ToolError::new(class, format!("`{instruction}` (step {step}): {error}"))
                    .with_code(code)
                    .with_details(details);
            }
            if let Some(code) = exit_code_of(&error) {
                details["exit_code"] = json!(code);
            }
            let head = if instruction.is_empty() {
                "the build failed".to_owned()
            } else {
                format!("`{instruction}` failed (step {step})")
            };
            ToolError::new(ErrorClass::BuildFailed, format!("{head}: {error}"))
                .with_code("BUILD_FAILED")
                .with_details(details)
        }
        other => engine_error(other, "building the image", "IMAGE_NOT_FOUND", red),
    }
}

/// `line 2` of "dockerfile parse error line 2: …".
fn parse_error_line(message: &str) -> Option<u64> {
    let rest = &message[message.find("line ")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `1` of "The command '/bin/sh -c false' returned a non-zero code: 1".
fn exit_code_of(message: &str) -> Option<i64> {
    let rest = &message[message.find("returned a non-zero code: ")? + 26..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Credentials for the registries of the Dockerfile's `FROM` images (best effort: a
/// registry whose credentials cannot be found is simply left out).
async fn from_credentials(
    dockerfile: &Path,
    ctx: &ToolContext,
    red: &mut Redactor,
) -> Option<HashMap<String, DockerCredentials>> {
    let text = std::fs::read_to_string(dockerfile).ok()?;
    let mut out = HashMap::new();
    for registry in from_registries(&text) {
        let Ok(r) = auth::resolve(&registry, None, &auth::step_env(ctx)).await else {
            continue;
        };
        let Some(c) = &r.credentials else { continue };
        for s in r.secrets() {
            red.add(&s);
        }
        out.insert(
            r.server.clone(),
            DockerCredentials {
                username: c.username.clone(),
                password: c.password.clone(),
                identitytoken: c.identity_token.clone(),
                serveraddress: Some(r.server.clone()),
                ..DockerCredentials::default()
            },
        );
    }
    (!out.is_empty()).then_some(out)
}

/// The registries named by `FROM` lines (stage names, `scratch` and references with
/// variables are skipped).
pub(crate) fn from_registries(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    let mut logical = String::new();
    for raw in dockerfile.lines() {
        let line = raw.trim();
        if line.starts_with('#') && logical.is_empty() {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let words: Vec<&str> = logical.split_whitespace().collect();
        if words
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
        {
            let mut rest = words[1..].iter().filter(|w| !w.starts_with("--"));
            if let Some(image) = rest.next() {
                let image = image.to_string();
                let known = stages.iter().any(|s| s.eq_ignore_ascii_case(&image));
                if !known
                    && !image.eq_ignore_ascii_case("scratch")
                    && !image.contains('$')
                    && let Ok(r) = Reference::parse(&image)
                    && !out.contains(&r.registry())
                {
                    out.push(r.registry());
                }
                if let (Some(kw), Some(name)) = (rest.next(), rest.next())
                    && kw.eq_ignore_ascii_case("AS")
                {
                    stages.push((*name).to_owned());
                }
            }
        }
        logical.clear();
    }
    out
}

/// The context as a tar: what `matcher` leaves in, plus the Dockerfile (`keep`) and
/// `.dockerignore`; `outside` is a Dockerfile from elsewhere, added as
/// [`OUTSIDE_DOCKERFILE`].
pub(crate) fn context_tar(
    root: &Path,
    mut matcher: Matcher,
    keep: &str,
    outside: Option<&Path>,
) -> io::Result<Vec<u8>> {
    if !matcher.is_empty() {
        matcher.keep(".dockerignore");
        matcher.keep(keep);
    }
    let mut builder = tar::Builder::new(Vec::new());
    walk(&mut builder, root, "", &matcher)?;
    if let Some(df) = outside {
        let meta = std::fs::metadata(df)?;
        let mut h = header(&meta);
        builder.append_data(&mut h, OUTSIDE_DOCKERFILE, std::fs::File::open(df)?)?;
    }
    builder.into_inner()
}

/// A header for `meta`, owned by root as `docker build` sends it.
fn header(meta: &std::fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn walk(
    builder: &mut tar::Builder<Vec<u8>>,
    dir: &Path,
    rel: &str,
    matcher: &Matcher,
) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| with_path(e, dir))?
        .collect::<Result<_, _>>()
        .map_err(|e| with_path(e, dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| with_path(e, &path))?;
        let ft = meta.file_type();
        if matcher.excludes(&rel_path) {
            if ft.is_dir() && matcher.must_descend(&rel_path) {
                walk(builder, &path, &rel_path, matcher)?;
            }
            continue;
        }
        if ft.is_dir() {
            let mut h = header(&meta);
            builder.append_data(&mut h, format!("{rel_path}/"), io::empty())?;
            walk(builder, &path, &rel_path, matcher)?;
        } else if ft.is_file() {
            let mut h = header(&meta);
            let file = std::fs::File::open(&path).map_err(|e| with_path(e, &path))?;
            builder
                .append_data(&mut h, &rel_path, file)
                .map_err(|e| with_path(e, &path))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| with_path(e, &path))?;
            let mut h = header(&meta);
            h.set_size(0);
            builder.append_link(&mut h, &rel_path, target)?;
        }
        // Sockets, FIFOs and devices are left out.
    }
    Ok(())
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().uid().unwrap(), 0);
                e.path().unwrap().to_string_lossy().into_owned()
            })
            .collect()
    }

    #[test]
    fn context_tar_honours_dockerignore() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in [
            "Dockerfile",
            "app.sh",
            "secret.txt",
            "docs/a.md",
            "docs/keep.md",
            "node_modules/x/y.js",
            "sub/deep/secret.txt",
        ] {
            std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
            std::fs::write(p.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("app.sh", p.join("link")).unwrap();
        std::fs::write(
            p.join(".dockerignore"),
            "# comment\n**/secret.txt\nnode_modules\ndocs\n!docs/keep.md\nDockerfile\n.dockerignore\n",
        )
        .unwrap();
        let m = Matcher::parse(&std::fs::read_to_string(p.join(".dockerignore")).unwrap()).unwrap();
        let tar = context_tar(p, m, "Dockerfile", None).unwrap();
        assert_eq!(
            names(&tar),
            [
                ".dockerignore",
                "Dockerfile",
                "app.sh",
                "docs/keep.md",
                "link",
                "sub/",
                "sub/deep/"
            ]
        );
    }

    #[test]
    fn outside_dockerfile_is_added() {
        let d = tempfile::tempdir().unwrap();
        let ctx = d.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("a"), "a").unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM x").unwrap();
        let tar = context_tar(
            &ctx,
            Matcher::default(),
            OUTSIDE_DOCKERFILE,
            Some(&d.path().join("Dockerfile")),
        )
        .unwrap();
        assert_eq!(names(&tar), ["a", OUTSIDE_DOCKERFILE]);
    }

    #[test]
    fn from_lines() {
        let df = "# syntax=x\nFROM --platform=$BUILDPLATFORM golang:1 AS build\nFROM build AS test\n\
                  FROM 127.0.0.1:5001/base:1\nfrom \\\n  ghcr.io/o/i@sha256:0000000000000000000000000000000000000000000000000000000000000000\n\
                  FROM scratch\nFROM ${BASE}\nFROM docker.io/library/alpine\n";
        assert_eq!(
            from_registries(df),
            ["docker.io", "127.0.0.1:5001", "ghcr.io"]
        );
    }

    #[test]
    fn messages() {
        assert_eq!(
            parse_error_line("dockerfile parse error line 12: unknown instruction: FOO"),
            Some(12)
        );
        assert_eq!(
            exit_code_of("The command '/bin/sh -c false' returned a non-zero code: 3"),
            Some(3)
        );
        assert_eq!(exit_code_of("COPY failed"), None);
    }
}
