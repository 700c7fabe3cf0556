//! `run_container`: a command in a sandboxed container (SPEC §5).
//!
//! The sandbox, unless the step loosens it: no network (`network: none`), a read-only root
//! filesystem with a writable `/tmp` tmpfs, all capabilities dropped, `no-new-privileges`,
//! 512 MiB of memory and no swap, one CPU, 256 processes. The session workspace is mounted
//! read-write at `/workspace`; further `mounts` must come from the project folder or the
//! workspace (symlinks resolved), so a workflow cannot reach the rest of the host through
//! a container — that is what the host-executing `shell` is for.
//!
//! Output is streamed line by line ([`Progress::Output`](crate::tools::Progress)) and
//! captured (1 MiB per stream, then a `…[truncated N bytes]` mark). A non-zero exit is
//! class `exit_code`, code `EXIT_<n>` (`OOM_KILLED` when the memory limit killed it).
//!
//! No container is ever left behind: each gets a unique name and the labels
//! `ckflow.run_id` and `ckflow.step`, and is removed (forcibly) on every path — success,
//! failure, cancel, and, through a drop guard, a call whose future is dropped.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, EventMessage, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, EventsOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::engine::{self, Engine, engine_error};
use super::http::Endpoint;
use super::images::{PullImage, check_image, or_cancel};
use super::reference::{Reference, is_image_id};
use super::{Args, Redactor, output};
use crate::tools::capture::Capture;
use crate::tools::{Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::model::ErrorClass;

/// A line longer than this is reported in pieces.
const MAX_LINE: usize = 64 << 10;
/// How long output may still arrive after the container exited.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long removing a container is retried (a cancelled call waits for it).
const REMOVE_PATIENCE: Duration = Duration::from_secs(5);
/// The same for a dropped call, whose removal runs on a thread of its own.
const DROPPED_REMOVE_PATIENCE: Duration = Duration::from_secs(30);
/// How long a dropped call's container may take to appear after its create was sent.
const LATE_CREATE: Duration = Duration::from_secs(5);
/// How long a SIGKILLed container's OOM flag may take to show.
const OOM_EVENT_GRACE: Duration = Duration::from_secs(1);
/// Defaults of the sandbox.
const DEFAULT_MEMORY: &str = "512m";
const DEFAULT_CPUS: f64 = 1.0;
const DEFAULT_PIDS: i64 = 256;
/// Docker's smallest memory limit.
const MIN_MEMORY: i64 = 6 << 20;
/// Where the workspace is mounted.
const WORKSPACE: &str = "/workspace";
/// The `/tmp` of a read-only container.
const TMPFS_OPTIONS: &str = "rw,nosuid,nodev,exec,mode=1777";

/// The `run_container` tool.
pub struct RunContainer;

impl Tool for RunContainer {
    fn name(&self) -> &str {
        "run_container"
    }

    fn description(&self) -> &str {
        "Runs a command in a sandboxed container (no network, read-only root, no \
         capabilities, memory/CPU/process limits, the workspace at /workspace) and returns \
         its stdout, stderr and exit code; the container is always removed."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The image, the command, and how far to loosen the sandbox.",
            "additionalProperties": false,
            "required": ["image"],
            "properties": {
                "image": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The image: a reference (`app:1.0`, pulled if missing) or \
                                    an id (`sha256:…`)."
                },
                "run": {
                    "type": "string",
                    "description": "A shell script, run as `sh -c <run>` (the image needs a \
                                    `sh`). Give `run` or `command`, not both; neither runs the \
                                    image's own command."
                },
                "command": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "description": "The program and its arguments, replacing the image's \
                                    entrypoint and command."
                },
                "env": {
                    "type": "object",
                    "description": "Environment variables, over the workflow's and the \
                                    step's `env`.",
                    "additionalProperties": {"type": ["string", "number", "boolean"]}
                },
                "workdir": {
                    "type": "string",
                    "description": "The working directory, an absolute path in the container \
                                    (e.g. `/workspace`); default: the image's."
                },
                "user": {
                    "type": "string",
                    "description": "`user[:group]` (name or number) to run as; default: the \
                                    image's."
                },
                "network": {
                    "type": "string",
                    "description": "The network: `none` (no network at all), `bridge`, `host` \
                                    or a named network.",
                    "default": "none"
                },
                "read_only": {
                    "type": "boolean",
                    "description": "Make the root filesystem read-only (a writable tmpfs is \
                                    mounted at `/tmp`).",
                    "default": true
                },
                "memory": {
                    "type": ["string", "integer"],
                    "description": "Memory limit (no swap): bytes, or a number with `k`, `m` \
                                    or `g` (`256m`, `1g`); at least 6m.",
                    "default": DEFAULT_MEMORY
                },
                "cpus": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "CPUs the container may use (`0.5`, `2`).",
                    "default": DEFAULT_CPUS
                },
                "pids": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Most processes at once; `0` means no limit.",
                    "default": DEFAULT_PIDS
                },
                "mounts": {
                    "type": "array",
                    "description": "Host folders or files to mount; sources must lie inside \
                                    the project folder or the workspace.",
                    "items": {
                        "type": "object",
                        "description": "One bind mount.",
                        "additionalProperties": false,
                        "required": ["source", "target"],
                        "properties": {
                            "source": {
                                "type": "string",
                                "description": "The host path, relative to the project folder."
                            },
                            "target": {
                                "type": "string",
                                "description": "The absolute path in the container."
                            },
                            "read_only": {
                                "type": "boolean",
                                "description": "Mount it read-only.",
                                "default": true
                            }
                        }
                    }
                }
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "What the container printed and how it exited.",
            "required": ["stdout", "stderr", "exit_code"],
            "properties": {
                "stdout": {
                    "type": "string",
                    "description": "Standard output (at most 1 MiB, then a `…[truncated N bytes]` mark)."
                },
                "stderr": {
                    "type": "string",
                    "description": "Standard error (at most 1 MiB, then a `…[truncated N bytes]` mark)."
                },
                "exit_code": {"type": "integer", "description": "The exit code (0 on success)."}
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "EXIT_<n>",
                "The command exited with code n (class `exit_code`); details hold `exit_code` \
                 and the last 4 KiB of `stdout` and `stderr`.",
            ),
            (
                "OOM_KILLED",
                "The memory limit was reached and the kernel killed the command (class \
                 `exit_code`, usually exit code 137); details as for EXIT_<n>.",
            ),
            (
                "IMAGE_NOT_FOUND",
                "The image is neither local nor pullable (class `not_found`).",
            ),
            (
                "INVALID_REFERENCE",
                "`image` is neither an image reference nor an id (class `invalid_input`).",
            ),
            (
                "INVALID_LIMIT",
                "`memory`, `cpus` or `pids` is not a valid limit (class `invalid_input`).",
            ),
            (
                "MOUNT_NOT_FOUND",
                "A mount's source does not exist (class `not_found`).",
            ),
            (
                "MOUNT_OUTSIDE_PROJECT",
                "A mount's source lies outside the project folder and the workspace (class \
                 `invalid_input`).",
            ),
            (
                "START_FAILED",
                "The engine could not create or start the container: unknown user, missing \
                 program, a limit the host cannot give (class `invalid_input` or \
                 `tool_error`).",
            ),
            (
                "ENGINE_UNREACHABLE",
                "No Docker engine answers at `DOCKER_HOST` (class `not_found`).",
            ),
        ]
    }

    fn destructive(&self) -> bool {
        // The command may write to the workspace.
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(run(args, ctx))
    }
}

/// Checked arguments.
struct Spec {
    image: String,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    user: Option<String>,
    network: String,
    read_only: bool,
    memory: i64,
    memory_text: String,
    nano_cpus: i64,
    pids: Option<i64>,
    mounts: Vec<Mount>,
}

fn parse(args: &Value, ctx: &ToolContext) -> Result<Spec, ToolError> {
    let a = Args::new(
        "run_container",
        args,
        &[
            "image",
            "run",
            "command",
            "env",
            "workdir",
            "user",
            "network",
            "read_only",
            "memory",
            "cpus",
            "pids",
            "mounts",
        ],
    )?;
    let image = a.required("image")?;
    check_image("image", &image)?;
    let (entrypoint, cmd) = match (a.str("run")?, a.has("command")) {
        (Some(_), true) => {
            return Err(ToolError::invalid(
                "give `run` (a shell script) or `command` (a list), not both",
            ));
        }
        (Some(run), false) => (Some(vec!["sh".into(), "-c".into()]), Some(vec![run])),
        (None, true) => {
            let c = a.strings("command")?;
            if c.is_empty() {
                return Err(ToolError::invalid("`command` must not be empty"));
            }
            (Some(c), None)
        }
        (None, false) => (None, None),
    };
    let mut env: Vec<(String, String)> = ctx
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in a.string_map("env")? {
        if k.contains('=') {
            return Err(ToolError::invalid(format!(
                "`env`: `{k}` is not a valid variable name"
            )));
        }
        env.retain(|(x, _)| *x != k);
        env.push((k, v));
    }
    env.retain(|(k, _)| !k.starts_with("CKFLOW_"));
    env.push(("CKFLOW_RUN_ID".into(), ctx.run_id.clone()));
    env.push(("CKFLOW_STEP_ID".into(), ctx.step_id.clone()));
    env.push(("CKFLOW_WORKSPACE".into(), WORKSPACE.into()));
    let workdir = a.str("workdir")?.filter(|w| !w.is_empty());
    if let Some(w) = &workdir
        && !w.starts_with('/')
    {
        return Err(ToolError::invalid(format!(
            "`workdir` must be an absolute path in the container, not `{w}`"
        )));
    }
    let limit = |m: String| ToolError::invalid(m).with_code("INVALID_LIMIT");
    let (memory, memory_text) = match a.value("memory") {
        None => (
            parse_memory(DEFAULT_MEMORY).map_err(limit)?,
            DEFAULT_MEMORY.to_owned(),
        ),
        Some(Value::String(s)) => (parse_memory(s).map_err(limit)?, s.trim().to_owned()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(b) if b >= MIN_MEMORY => (b, format!("{b} bytes")),
            _ => return Err(limit(format!("`memory`: {n} is below the minimum of 6m"))),
        },
        Some(_) => return Err(limit("`memory` must be a string such as `256m`".into())),
    };
    let cpus = match a.value("cpus") {
        None => DEFAULT_CPUS,
        Some(v) => match v.as_f64() {
            Some(c) if c > 0.0 && c.is_finite() => c,
            _ => return Err(limit(format!("`cpus` must be a number above 0, not {v}"))),
        },
    };
    let pids = match a.value("pids") {
        None => Some(DEFAULT_PIDS),
        Some(v) => match v.as_i64() {
            Some(0) => None,
            Some(p) if p > 0 => Some(p),
            _ => return Err(limit(format!("`pids` must be a whole number ≥ 0, not {v}"))),
        },
    };
    let workspace = canonical_dir(&ctx.workspace)?;
    let mut mounts = vec![Mount {
        target: Some(WORKSPACE.into()),
        source: Some(workspace.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(false),
        ..Mount::default()
    }];
    let project = ctx
        .project_dir
        .canonicalize()
        .unwrap_or_else(|_| ctx.project_dir.clone());
    if let Some(list) = a.value("mounts") {
        let items = list
            .as_array()
            .ok_or_else(|| ToolError::invalid("`mounts` must be a list"))?;
        for (i, m) in items.iter().enumerate() {
            mounts.push(mount(i, m, ctx, &project, &workspace)?);
        }
    }
    Ok(Spec {
        image,
        entrypoint,
        cmd,
        env,
        workdir,
        user: a.str("user")?.filter(|u| !u.is_empty()),
        network: a
            .str("network")?
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "none".into()),
        read_only: a.bool("read_only")?.unwrap_or(true),
        memory,
        memory_text,
        nano_cpus: (cpus * 1e9).round() as i64,
        pids,
        mounts,
    })
}

/// The workspace, created if missing, with symlinks resolved.
fn canonical_dir(p: &Path) -> Result<PathBuf, ToolError> {
    std::fs::create_dir_all(p)
        .and_then(|()| p.canonicalize())
        .map_err(|e| {
            ToolError::new(
                ErrorClass::ToolError,
                format!("the workspace `{}`: {e}", p.display()),
            )
        })
}

/// One entry of `mounts`, checked.
fn mount(
    i: usize,
    m: &Value,
    ctx: &ToolContext,
    project: &Path,
    workspace: &Path,
) -> Result<Mount, ToolError> {
    let obj = m
        .as_object()
        .ok_or_else(|| ToolError::invalid(format!("`mounts[{i}]` must be an object")))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["source", "target", "read_only"].contains(&k.as_str()))
    {
        return Err(ToolError::invalid(format!(
            "`mounts[{i}]` has no field `{k}` (it takes `source`, `target`, `read_only`)"
        )));
    }
    let text = |k: &str| -> Result<String, ToolError> {
        match obj.get(k) {
            Some(Value::String(s)) if !s.is_empty() && !s.contains('\0') => Ok(s.clone()),
            _ => Err(ToolError::invalid(format!(
                "`mounts[{i}].{k}` must be a non-empty string"
            ))),
        }
    };
    let source = ctx.path(&format!("mounts[{i}].source"), &text("source")?)?;
    let target = text("target")?;
    if !target.starts_with('/') || target.trim_end_matches('/').is_empty() {
        return Err(ToolError::invalid(format!(
            "`mounts[{i}].target` must be an absolute path other than `/`, not `{target}`"
        )));
    }
    if target.trim_end_matches('/') == WORKSPACE {
        return Err(ToolError::invalid(format!(
            "`mounts[{i}].target`: {WORKSPACE} is the workspace's"
        )));
    }
    let read_only = match obj.get("read_only") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ToolError::invalid(format!(
                "`mounts[{i}].read_only` must be true or false"
            )));
        }
    };
    let real = source.canonicalize().map_err(|e| {
        ToolError::new(
            ErrorClass::NotFound,
            format!("`mounts[{i}].source` `{}`: {e}", source.display()),
        )
        .with_code("MOUNT_NOT_FOUND")
    })?;
    if !real.starts_with(project) && !real.starts_with(workspace) {
        return Err(ToolError::invalid(format!(
            "`mounts[{i}].source` `{}` is outside the project folder and the workspace; \
             run_container only mounts those",
            real.display()
        ))
        .with_code("MOUNT_OUTSIDE_PROJECT"));
    }
    Ok(Mount {
        target: Some(target),
        source: Some(real.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Mount::default()
    })
}

/// `256m`, `1g`, `1.5G`, `512MiB`, `1048576` → bytes (binary multiples, as Docker).
pub(crate) fn parse_memory(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`memory`: `{s}` is not a size such as `256m`"))?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "ki" | "kib" => 1024.0,
        "m" | "mb" | "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "`memory`: unknown unit `{u}` in `{s}` (use k, m or g)"
            ));
        }
    };
    let bytes = (n * mult).round();
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(format!("`memory`: `{s}` is too large"));
    }
    let bytes = bytes as i64;
    if bytes < MIN_MEMORY {
        return Err(format!("`memory`: `{s}` is below Docker's minimum of 6m"));
    }
    Ok(bytes)
}

/// A unique container name: `ckflow-<run>-<random>`.
fn container_name(run_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: OnceLock<std::hash::RandomState> = OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let salt =
        KEYS.get_or_init(std::hash::RandomState::new)
            .hash_one((std::process::id(), n, nanos));
    let run: String = run_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(24)
        .collect();
    if run.is_empty() {
        format!("ckflow-{salt:016x}")
    } else {
        format!("ckflow-{run}-{salt:016x}")
    }
}

/// Removes the container when dropped, unless [`Cleanup::remove`] already did.
struct Cleanup {
    name: String,
    endpoint: Endpoint,
    armed: bool,
}

impl Cleanup {
    /// Kill and remove the container now.
    async fn remove(&mut self, docker: &Docker) {
        remove_container(docker, &self.name, Duration::ZERO, REMOVE_PATIENCE).await;
        self.armed = false;
    }
}

/// Kill and remove `name`, retrying engine hiccups for `patience`. A "no such container" is
/// believed at once when `late_create` is zero; otherwise it is asked again for that long,
/// since a create whose answer never arrived (the call was dropped mid-request) may still
/// be registering the container.
async fn remove_container(docker: &Docker, name: &str, late_create: Duration, patience: Duration) {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..RemoveContainerOptions::default()
    };
    let start = tokio::time::Instant::now();
    let give_up = start + patience;
    loop {
        let attempt = docker.remove_container(name, Some(opts.clone()));
        let gone = match tokio::time::timeout(patience, attempt).await {
            Ok(Ok(())) => true,
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => start.elapsed() >= late_create,
            // 409: another removal is under way; anything else: try again.
            Ok(Err(_)) | Err(_) => false,
        };
        if gone || tokio::time::Instant::now() >= give_up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The call's future was dropped (or it panicked): remove the container from a
        // thread of its own, since the caller's runtime may be shutting down.
        let name = std::mem::take(&mut self.name);
        let endpoint = self.endpoint.clone();
        let _ = std::thread::Builder::new()
            .name("ckflow-container-cleanup".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(docker) = engine::client(&endpoint) else {
                        return;
                    };
                    let Ok(Ok(docker)) =
                        tokio::time::timeout(engine::CONNECT_TIMEOUT, docker.negotiate_version())
                            .await
                    else {
                        return;
                    };
                    remove_container(&docker, &name, LATE_CREATE, DROPPED_REMOVE_PATIENCE).await;
                });
            });
    }
}

async fn run(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let spec = parse(&args, &ctx)?;
    let red = Redactor::new(&ctx);
    let engine = engine::connect(&ctx).await?;
    if ctx.cancel.is_cancelled() {
        return Err(ToolError::cancelled());
    }
    let name = container_name(&ctx.run_id);
    let body = create_body(&spec, &ctx);
    let mut cleanup = Cleanup {
        name: name.clone(),
        endpoint: engine.endpoint.clone(),
        armed: true,
    };
    if let Err(e) = create(&engine, &name, body.clone(), &red).await {
        let missing = e.class == ErrorClass::NotFound && !is_image_id(&spec.image);
        if !missing || Reference::parse(&spec.image).is_err() {
            cleanup.armed = false;
            return Err(e);
        }
        // Not local: pull it (with credentials, progress and cancellation), then retry.
        PullImage
            .call(json!({"image": spec.image}), ctx.clone())
            .await
            .inspect_err(|_| cleanup.armed = false)?;
        create(&engine, &name, body, &red)
            .await
            .inspect_err(|_| cleanup.armed = false)?;
    }
    let result = supervise(&engine, &name, &spec, &ctx, &red).await;
    cleanup.remove(&engine.docker).await;
    result
}

/// The engine's create request for `spec`.
fn create_body(spec: &Spec, ctx: &ToolContext) -> ContainerCreateBody {
    let labels = HashMap::from([
        ("ckflow.run_id".to_owned(), ctx.run_id.clone()),
        ("ckflow.step".to_owned(), ctx.step_id.clone()),
        ("ckflow.tool".to_owned(), "run_container".to_owned()),
    ]);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: spec.workdir.clone(),
        user: spec.user.clone(),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone()),
            readonly_rootfs: Some(spec.read_only),
            tmpfs: spec
                .read_only
                .then(|| HashMap::from([("/tmp".to_owned(), TMPFS_OPTIONS.to_owned())])),
            memory: Some(spec.memory),
            memory_swap: Some(spec.memory),
            nano_cpus: Some(spec.nano_cpus),
            pids_limit: spec.pids,
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            mounts: Some(spec.mounts.clone()),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

async fn create(
    engine: &Engine,
    name: &str,
    body: ContainerCreateBody,
    red: &Redactor,
) -> Result<(), ToolError> {
    let opts = CreateContainerOptions {
        name: Some(name.to_owned()),
        ..CreateContainerOptions::default()
    };
    engine
        .docker
        .create_container(Some(opts), body)
        .await
        .map(|_| ())
        .map_err(|e| {
            let e = engine_error(e, "creating the container", "IMAGE_NOT_FOUND", red);
            if e.code.is_none() {
                e.with_code("START_FAILED")
            } else {
                e
            }
        })
}

/// Attach, start, stream and wait; the caller removes the container.
async fn supervise(
    engine: &Engine,
    name: &str,
    spec: &Spec,
    ctx: &ToolContext,
    red: &Redactor,
) -> Result<Value, ToolError> {
    let docker = &engine.docker;
    // Attached before the start, so the stream sees every byte; `logs` would replay the
    // log file as well and race the stream into duplicate output.
    let attach_opts = AttachContainerOptions {
        stream: true,
        logs: false,
        stdout: true,
        stderr: true,
        ..AttachContainerOptions::default()
    };
    let attached = or_cancel(ctx, async {
        docker
            .attach_container(name, Some(attach_opts))
            .await
            .map_err(|e| engine_error(e, "attaching to the container", "START_FAILED", red))
    })
    .await?;
    // The kernel's OOM kills, as engine events: the engine's `OOMKilled` flag misses those
    // whose event it handles after the exit. `since` replays any that come before the
    // subscription is in place.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_sub(1));
    let mut events = Box::pin(docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(HashMap::from([
            ("container".to_owned(), vec![name.to_owned()]),
            ("event".to_owned(), vec!["oom".to_owned()]),
        ])),
    })));
    let mut oom_seen = false;
    let mut events_done = false;
    or_cancel(ctx, async {
        docker.start_container(name, None).await.map_err(|e| {
            let e = engine_error(e, "starting the container", "START_FAILED", red);
            if e.code.is_none() {
                e.with_code("START_FAILED")
            } else {
                e
            }
        })
    })
    .await?;
    let mut frames = attached.output;
    let mut wait = docker.wait_container(
        name,
        Some(WaitContainerOptions {
            condition: "not-running".into(),
        }),
    );
    let mut out = Stream::new("stdout");
    let mut err = Stream::new("stderr");
    let mut frames_done = false;
    let mut exit: Option<i64> = None;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    while !(frames_done && exit.is_some()) {
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ToolError::cancelled()),
            frame = frames.next(), if !frames_done => match frame {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    out.push(&message, ctx, red);
                }
                Some(Ok(LogOutput::StdErr { message })) => err.push(&message, ctx, red),
                Some(Ok(LogOutput::StdIn { .. })) => {}
                // The stream ended, or broke: the exit code still decides.
                Some(Err(_)) | None => frames_done = true,
            },
            w = wait.next(), if exit.is_none() => {
                let code = match w {
                    Some(Ok(r)) => r.status_code,
                    Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                    Some(Err(e)) => {
                        return Err(engine_error(e, "waiting for the container", "START_FAILED", red));
                    }
                    None => {
                        return Err(ToolError::new(
                            ErrorClass::ToolError,
                            "the engine ended the wait without an exit code",
                        ));
                    }
                };
                exit = Some(code);
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
            }
            ev = events.next(), if !oom_seen && !events_done => match ev {
                Some(Ok(_)) => oom_seen = true,
                Some(Err(_)) | None => events_done = true,
            },
            () = until(drain_deadline) => frames_done = true,
        }
    }
    out.finish(ctx, red);
    err.finish(ctx, red);
    let code = exit.unwrap_or_default();
    if code == 0 {
        return Ok(json!({
            "stdout": red.apply(&out.capture.text()),
            "stderr": red.apply(&err.capture.text()),
            "exit_code": 0,
        }));
    }
    let oom = oom_seen
        || or_cancel(ctx, async {
            Ok(oom_killed(docker, name, code, &mut events, events_done).await)
        })
        .await?;
    let stderr_tail = red.apply(&err.capture.tail());
    let details = json!({
        "exit_code": code,
        "stdout": red.apply(&out.capture.tail()),
        "stderr": stderr_tail,
        "oom_killed": oom,
    });
    if oom {
        return Err(ToolError::new(
            ErrorClass::ExitCode,
            format!(
                "the container ran out of memory (limit {}) and was killed (exit code {code})",
                spec.memory_text
            ),
        )
        .with_code("OOM_KILLED")
        .with_details(details));
    }
    let last = stderr_tail
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| shorten(l, 300));
    let message = match last {
        Some(l) => format!("exit code {code}: {l}"),
        None => format!("exit code {code}"),
    };
    Err(ToolError::new(ErrorClass::ExitCode, message)
        .with_code(format!("EXIT_{code}"))
        .with_details(details))
}

/// Whether the kernel's OOM killer ended the container: the engine's flag, or an `oom`
/// event. Either may come a little after the exit, so a SIGKILL exit (137) waits for them
/// for a moment before concluding it was something else.
async fn oom_killed(
    docker: &Docker,
    name: &str,
    code: i64,
    events: &mut (
             impl futures_util::Stream<Item = Result<EventMessage, bollard::errors::Error>> + Unpin
         ),
    mut events_done: bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + OOM_EVENT_GRACE;
    loop {
        let flag = docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        if flag {
            return true;
        }
        if code != 137 || tokio::time::Instant::now() >= deadline {
            return false;
        }
        let pause = tokio::time::sleep(Duration::from_millis(50));
        if events_done {
            pause.await;
            continue;
        }
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(_)) => return true,
                Some(Err(_)) | None => events_done = true,
            },
            () = pause => {}
        }
    }
}

/// Sleep until `deadline`, or forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// At most `max` characters of `s`, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// One output stream of the container: split into lines for progress, captured for the
/// result.
struct Stream {
    name: &'static str,
    pending: Vec<u8>,
    capture: Capture,
}

impl Stream {
    fn new(name: &'static str) -> Stream {
        Stream {
            name,
            pending: Vec::new(),
            capture: Capture::default(),
        }
    }

    fn push(&mut self, bytes: &[u8], ctx: &ToolContext, red: &Redactor) {
        self.capture.push(bytes);
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(i) = self.pending[start..].iter().position(|&b| b == b'\n') {
            self.emit(start, start + i, ctx, red);
            start += i + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() >= MAX_LINE {
            self.emit(0, self.pending.len(), ctx, red);
            self.pending.clear();
        }
    }

    fn finish(&mut self, ctx: &ToolContext, red: &Redactor) {
        if !self.pending.is_empty() {
            self.emit(0, self.pending.len(), ctx, red);
            self.pending.clear();
        }
    }

    fn emit(&self, start: usize, end: usize, ctx: &ToolContext, red: &Redactor) {
        let mut line = &self.pending[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        output(ctx, red, self.name, &String::from_utf8_lossy(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256m").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_memory("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_memory(" 8388608 ").unwrap(), 8 << 20);
        assert!(parse_memory("5m").unwrap_err().contains("minimum"));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("3x").unwrap_err().contains("unit"));
    }

    #[test]
    fn names_are_unique_and_valid() {
        let a = container_name("run 1/[x]");
        let b = container_name("run 1/[x]");
        assert_ne!(a, b);
        assert!(a.starts_with("ckflow-run1x-"), "{a}");
        assert!(container_name("").starts_with("ckflow-"));
    }
}
