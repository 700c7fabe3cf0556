//! `shell`: runs a command line with `sh -c` on the host (SPEC §5).
//!
//! - Like make, a plain command line (`cargo build --release`: no shell syntax, no
//!   builtin) is started directly when the shell is the default `sh`, saving a shell
//!   start per step; whatever that start cannot do as the shell would (not found, not
//!   executable) goes through `sh -c` after all, and a death by signal n reads as exit
//!   code 128+n, as under the shell ([`direct_argv`]).
//! - Environment: ckflow's own environment, then the step's `ctx.env`, then `with.env`
//!   (later wins), then `CKFLOW_OUTPUT`, `CKFLOW_RUN_ID`, `CKFLOW_STEP_ID` and
//!   `CKFLOW_WORKSPACE`, which cannot be overridden.
//! - `$CKFLOW_OUTPUT` names a fresh file (not created in advance) the script may append
//!   `key=value` lines to, or GitHub's multi-line form `key<<DELIM` … `DELIM`. After a
//!   successful exit every key becomes an output next to `stdout`, `stderr` and
//!   `exit_code`; values are always strings (`count=3` gives `"3"`, not `3`), a repeated key
//!   keeps its last value. The file is deleted afterwards, whatever happened.
//! - The child runs in its own process group with stdin closed; stdout and stderr are
//!   streamed line by line as [`Progress::Output`] and captured (each capped at 1 MiB in the
//!   result, with a `…[truncated N bytes]` mark).
//! - When the shell exits, whatever it left running in its process group is killed (start a
//!   daemon with `setsid` to keep it). On cancel the group gets SIGTERM, then SIGKILL after
//!   2 s; dropping the call's future kills the group too, so no process is left behind.

// `ToolError` is the error type the `Tool` trait fixes; boxing it here would only move
// the allocation around.
#![allow(clippy::result_large_err)]

use std::hash::BuildHasher;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

use super::capture::Capture;
use super::process::Group;
use super::{Progress, ProgressFn, Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::model::ErrorClass;

/// A line longer than this is reported in pieces.
const MAX_LINE: usize = 64 << 10;
/// How long a cancelled process group gets between SIGTERM and SIGKILL.
/// How long to keep reading the pipes once the shell has exited and its group is gone
/// (only a process that left the group can still hold them open).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Result keys `$CKFLOW_OUTPUT` may not set.
const RESERVED: [&str; 3] = ["stdout", "stderr", "exit_code"];

/// The `shell` tool.
pub struct Shell;

impl Tool for Shell {
    fn name(&self) -> &str {
        "shell"
    }

    fn description(&self) -> &str {
        "Runs a command line with `sh -c` on the host and returns its stdout, stderr, exit code \
         and the `key=value` outputs it writes to `$CKFLOW_OUTPUT`."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "A command line to run on the host.",
            "additionalProperties": false,
            "required": ["run"],
            "properties": {
                "run": {
                    "type": "string",
                    "description": "The script, passed to the shell as `-c <run>`. With the \
                                    default shell, a plain command line (no quotes, \
                                    variables, globs, redirections, operators or builtins) \
                                    is started directly, as make does, with the same \
                                    result and one process fewer."
                },
                "env": {
                    "type": "object",
                    "description": "Extra environment variables; they override ckflow's \
                                    environment and the step's `env`.",
                    "additionalProperties": {"type": ["string", "number", "boolean"]}
                },
                "workdir": {
                    "type": "string",
                    "description": "The working directory (relative to the project folder); \
                                    default: the project folder."
                },
                "shell": {
                    "type": "string",
                    "description": "The shell program, run as `<shell> -c <run>`; default `sh`.",
                    "default": "sh"
                }
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "What the process printed and how it exited, plus every key it \
                            wrote to `$CKFLOW_OUTPUT` (always as a string).",
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
            },
            "additionalProperties": {
                "type": "string",
                "description": "A value written to `$CKFLOW_OUTPUT`."
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "EXIT_<n>",
                "The process exited with code n (class `exit_code`); details hold `exit_code` \
                 and the last 4 KiB of `stdout` and `stderr`.",
            ),
            (
                "SIGNAL_<n>",
                "The process was killed by signal n (class `exit_code`); details as for EXIT_<n>, \
                 with `exit_code` 128+n and `signal`.",
            ),
            (
                "WORKDIR_NOT_FOUND",
                "`workdir` does not exist (class `not_found`).",
            ),
            (
                "WORKDIR_NOT_DIRECTORY",
                "`workdir` is not a directory (class `invalid_input`).",
            ),
            (
                "SHELL_NOT_FOUND",
                "The shell program was not found (class `not_found`).",
            ),
            (
                "SPAWN_FAILED",
                "The process could not be started for another reason.",
            ),
            (
                "OUTPUT_INVALID",
                "The `$CKFLOW_OUTPUT` file is malformed or sets a reserved key (class \
                 `tool_error`).",
            ),
        ]
    }

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

/// Parsed `with:`.
struct Args {
    run: String,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    shell: String,
}

impl Args {
    fn parse(v: &Value) -> Result<Args, ToolError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ToolError::invalid("the arguments of `shell` must be an object"))?;
        let string = |k: &str, v: &Value| -> Result<String, ToolError> {
            match v {
                Value::String(s) if !s.contains('\0') => Ok(s.clone()),
                Value::String(_) => Err(ToolError::invalid(format!(
                    "`{k}` must not contain a NUL character"
                ))),
                _ => Err(ToolError::invalid(format!("`{k}` must be a string"))),
            }
        };
        let mut args = Args {
            run: String::new(),
            env: Vec::new(),
            workdir: None,
            shell: "sh".to_owned(),
        };
        let mut has_run = false;
        for (k, v) in obj {
            match k.as_str() {
                "run" => {
                    args.run = string(k, v)?;
                    has_run = true;
                }
                "workdir" => args.workdir = Some(string(k, v)?),
                "shell" => {
                    args.shell = string(k, v)?;
                    if args.shell.is_empty() {
                        return Err(ToolError::invalid("`shell` must not be empty"));
                    }
                }
                "env" => {
                    let map = v
                        .as_object()
                        .ok_or_else(|| ToolError::invalid("`env` must be an object"))?;
                    for (name, value) in map {
                        if name.is_empty() || name.contains(['=', '\0']) {
                            return Err(ToolError::invalid(format!(
                                "`env`: `{name}` is not a valid variable name"
                            )));
                        }
                        let value = match value {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => {
                                return Err(ToolError::invalid(format!(
                                    "`env.{name}` must be a string, number or boolean"
                                )));
                            }
                        };
                        if value.contains('\0') {
                            return Err(ToolError::invalid(format!(
                                "`env.{name}` must not contain a NUL character"
                            )));
                        }
                        args.env.push((name.clone(), value));
                    }
                }
                other => {
                    return Err(ToolError::invalid(format!(
                        "unknown argument `{other}` (expected `run`, `env`, `workdir`, `shell`)"
                    )));
                }
            }
        }
        if !has_run {
            return Err(ToolError::invalid("`run` is required"));
        }
        Ok(args)
    }
}

async fn run(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let args = Args::parse(&args)?;
    let dir = match &args.workdir {
        Some(w) => ctx.path("workdir", w)?,
        None => ctx.project_dir.clone(),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if !m.is_dir() => {
            return Err(ToolError::invalid(format!(
                "workdir `{}` is not a directory",
                dir.display()
            ))
            .with_code("WORKDIR_NOT_DIRECTORY"));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ToolError::new(
                ErrorClass::NotFound,
                format!("workdir `{}` does not exist", dir.display()),
            )
            .with_code("WORKDIR_NOT_FOUND"));
        }
        _ => {}
    }
    if ctx.cancel.is_cancelled() {
        return Err(ToolError::cancelled());
    }

    let output_file = OutputFile(output_path());
    let overrides_path = ctx.env.contains_key("PATH") || args.env.iter().any(|(k, _)| k == "PATH");
    let program = if overrides_path {
        std::path::PathBuf::from(&args.shell)
    } else {
        resolve_program(&args.shell)
    };
    let configure = |cmd: &mut Command| {
        cmd.envs(&ctx.env)
            .envs(args.env.iter().map(|(k, v)| (k, v)))
            .env("CKFLOW_OUTPUT", &output_file.0)
            .env("CKFLOW_RUN_ID", &ctx.run_id)
            .env("CKFLOW_STEP_ID", &ctx.step_id)
            .env("CKFLOW_WORKSPACE", &ctx.workspace)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
    };
    // Like make: a plain command line with the default shell is executed directly, which
    // saves starting a shell per step. Anything the direct start cannot do exactly as
    // `sh -c` would (not found, not executable, …) goes through the shell after all, so
    // its messages and exit codes are the shell's.
    let direct = (args.shell == "sh")
        .then(|| direct_argv(&args.run))
        .flatten()
        .and_then(|argv| {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            configure(&mut cmd);
            cmd.spawn().ok()
        });
    let is_direct = direct.is_some();
    let mut child = match direct {
        Some(child) => child,
        None => {
            let mut cmd = Command::new(&program);
            cmd.arg("-c").arg(&args.run);
            configure(&mut cmd);
            cmd.spawn().map_err(|e| spawn_error(&args.shell, &dir, e))?
        }
    };
    // From here on, leaving this function by any path (return, `?`, the future being
    // dropped) kills the whole group unless it has been dealt with already.
    let mut group = Group::of(&child);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ToolError::new(
            ErrorClass::ToolError,
            "the child's pipes are missing",
        ));
    };
    let mut out = Pipe::new("stdout", stdout);
    let mut err = Pipe::new("stderr", stderr);
    let mut status: Option<ExitStatus> = None;
    let mut drain_deadline: Option<Instant> = None;

    loop {
        if status.is_some() && out.done && err.done {
            break;
        }
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => {
                group.terminate(&mut child).await;
                return Err(ToolError::cancelled());
            }
            r = out.read(), if !out.done => out.consume(r, &ctx.progress),
            r = err.read(), if !err.done => err.consume(r, &ctx.progress),
            s = child.wait(), if status.is_none() => {
                let s = s.map_err(|e| {
                    ToolError::new(ErrorClass::ToolError, format!("waiting for the shell: {e}"))
                })?;
                // Whatever the shell left running in its group goes with it.
                group.kill_rest();
                status = Some(s);
                drain_deadline = Some(Instant::now() + DRAIN_GRACE);
            }
            () = until(drain_deadline) => break,
        }
    }
    let status = status.unwrap_or_default();
    let secrets: &[String] = &ctx.secrets;

    // A command the shell would have run reports a death by signal n as the shell does:
    // exit code 128+n.
    let status = match status.signal() {
        Some(sig) if is_direct => ExitStatus::from_raw((128 + sig) << 8),
        _ => status,
    };
    let exit_code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if !status.success() {
        return Err(exit_error(status, exit_code, &out, &err, secrets));
    }

    let mut result = Map::new();
    result.insert(
        "stdout".into(),
        Value::String(redact(out.capture.text(), secrets)),
    );
    result.insert(
        "stderr".into(),
        Value::String(redact(err.capture.text(), secrets)),
    );
    result.insert("exit_code".into(), json!(exit_code));
    for (k, v) in output_file.take()? {
        result.insert(k, Value::String(redact(v, secrets)));
    }
    Ok(Value::Object(result))
}

/// Sleep until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The absolute path of `name` on this process's `PATH`, looked up once per name.
///
/// Spawning `sh` by name makes the child try every `PATH` entry in turn (`execvp`): eight
/// failed `execve` calls per step on a typical machine. Resolving once keeps the spawn path
/// as short as ninja's. Names with a `/` and names not found are returned unchanged (the
/// spawn then reports the error).
fn resolve_program(name: &str) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, std::path::PathBuf>>> = OnceLock::new();
    if name.contains('/') {
        return std::path::PathBuf::from(name);
    }
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = cache.lock()
        && let Some(p) = map.get(name)
    {
        return p.clone();
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(candidate)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    });
    match found {
        Some(p) => {
            if let Ok(mut map) = cache.lock() {
                map.insert(name.to_owned(), p.clone());
            }
            p
        }
        None => std::path::PathBuf::from(name),
    }
}

fn spawn_error(shell: &str, dir: &std::path::Path, e: io::Error) -> ToolError {
    match e.kind() {
        io::ErrorKind::NotFound => ToolError::new(
            ErrorClass::NotFound,
            format!(
                "cannot start `{shell}` in `{}`: not found (is the shell installed and on PATH?)",
                dir.display()
            ),
        )
        .with_code("SHELL_NOT_FOUND"),
        io::ErrorKind::PermissionDenied => ToolError::invalid(format!(
            "cannot start `{shell}` in `{}`: permission denied",
            dir.display()
        ))
        .with_code("SPAWN_FAILED"),
        _ => {
            let class = match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE) => {
                    ErrorClass::Transient
                }
                _ => ErrorClass::ToolError,
            };
            ToolError::new(class, format!("cannot start `{shell}`: {e}")).with_code("SPAWN_FAILED")
        }
    }
}

/// The words of `run` when `sh -c run` would just run one program with them: no shell
/// syntax at all (quotes, expansions, redirections, operators, comments, globs, several
/// lines, an assignment before the command) and a first word that is not a keyword or a
/// builtin of the shell (`true` and `false` excepted: the programs behave the same). `None`
/// means the shell must run it.
fn direct_argv(run: &str) -> Option<Vec<String>> {
    const SYNTAX: &[char] = &[
        '\n', '\r', '#', ';', '&', '|', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?',
        '[', ']', '~', '{', '}', '!', '^', '=', '%',
    ];
    const SHELL_WORDS: &[&str] = &[
        ".", ":", "alias", "bg", "break", "case", "cd", "chdir", "command", "continue", "do",
        "done", "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "fc", "fg", "fi",
        "for", "function", "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd",
        "read", "readonly", "return", "select", "set", "shift", "test", "then", "time", "times",
        "trap", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
    ];
    if run.contains(SYNTAX) || !run.is_ascii() {
        return None;
    }
    let argv: Vec<String> = run.split_whitespace().map(str::to_owned).collect();
    let first = argv.first()?;
    if SHELL_WORDS.contains(&first.as_str()) {
        return None;
    }
    Some(argv)
}

/// The failure for a non-zero exit or a death by signal.
fn exit_error(
    status: ExitStatus,
    exit_code: i32,
    out: &Pipe<impl AsyncRead + Unpin>,
    err: &Pipe<impl AsyncRead + Unpin>,
    secrets: &[String],
) -> ToolError {
    let stderr_tail = redact(err.capture.tail(), secrets);
    let last_line = stderr_tail
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| shorten(l, 300));
    let (code, head) = match status.signal() {
        Some(sig) => (format!("SIGNAL_{sig}"), format!("killed by signal {sig}")),
        None => (
            format!("EXIT_{exit_code}"),
            format!("exit code {exit_code}"),
        ),
    };
    let message = match last_line {
        Some(l) => format!("{head}: {l}"),
        None => head,
    };
    let mut details = json!({
        "exit_code": exit_code,
        "stdout": redact(out.capture.tail(), secrets),
        "stderr": stderr_tail,
    });
    if let Some(sig) = status.signal() {
        details["signal"] = json!(sig);
    }
    ToolError::new(ErrorClass::ExitCode, message)
        .with_code(code)
        .with_details(details)
}

/// At most `max` characters of `s`, with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// `s` with every secret replaced by `***`.
fn redact(mut s: String, secrets: &[String]) -> String {
    for secret in secrets.iter().filter(|x| !x.is_empty()) {
        if s.contains(secret.as_str()) {
            s = s.replace(secret.as_str(), "***");
        }
    }
    s
}

/// A fresh, unpredictable path in the temp folder for `$CKFLOW_OUTPUT`; nothing is created.
fn output_path() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: OnceLock<std::hash::RandomState> = OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let salt = KEYS
        .get_or_init(std::hash::RandomState::new)
        .hash_one((pid, n, nanos));
    std::env::temp_dir().join(format!("ckflow-output-{pid}-{n}-{salt:016x}"))
}

/// The `$CKFLOW_OUTPUT` file: read once the shell succeeded, deleted in any case.
struct OutputFile(PathBuf);

impl OutputFile {
    /// The key/value pairs the script wrote (none if it wrote no file).
    fn take(&self) -> Result<Vec<(String, String)>, ToolError> {
        let bytes = match std::fs::read(&self.0) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ToolError::new(
                    ErrorClass::ToolError,
                    format!("cannot read the `$CKFLOW_OUTPUT` file: {e}"),
                )
                .with_code("OUTPUT_INVALID"));
            }
        };
        parse_outputs(&String::from_utf8_lossy(&bytes)).map_err(|m| {
            ToolError::new(ErrorClass::ToolError, format!("`$CKFLOW_OUTPUT`: {m}"))
                .with_code("OUTPUT_INVALID")
        })
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Parse `key=value` lines and `key<<DELIM` … `DELIM` blocks; blank lines are skipped, a
/// later value of a key replaces an earlier one.
fn parse_outputs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let lineno = i + 1;
        let heredoc = match (line.find('='), line.find("<<")) {
            (Some(eq), Some(hd)) => hd < eq,
            (None, Some(_)) => true,
            _ => false,
        };
        let (key, value) = if heredoc {
            let (key, delim) = line.split_once("<<").unwrap_or((line, ""));
            if delim.is_empty() {
                return Err(format!("line {lineno}: `{key}<<` needs a delimiter"));
            }
            let mut body: Vec<&str> = Vec::new();
            loop {
                match lines.next() {
                    Some((_, l)) if l == delim => break,
                    Some((_, l)) => body.push(l),
                    None => {
                        return Err(format!(
                            "line {lineno}: `{key}<<{delim}` is not closed by a `{delim}` line"
                        ));
                    }
                }
            }
            (key, body.join("\n"))
        } else if let Some((key, value)) = line.split_once('=') {
            (key, value.to_owned())
        } else {
            return Err(format!(
                "line {lineno}: expected `key=value` or `key<<DELIMITER`, got `{}`",
                shorten(line, 80)
            ));
        };
        if key.is_empty() {
            return Err(format!("line {lineno}: the key is empty"));
        }
        if RESERVED.contains(&key) {
            return Err(format!(
                "line {lineno}: `{key}` is reserved for the tool's own result"
            ));
        }
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key.to_owned(), value)),
        }
    }
    Ok(out)
}

/// One of the child's output pipes: read in chunks, split into lines for progress,
/// captured for the result.
struct Pipe<R> {
    stream: &'static str,
    reader: R,
    /// Bytes read but not yet reported (an incomplete line).
    pending: Vec<u8>,
    capture: Capture,
    done: bool,
}

impl<R: AsyncRead + Unpin> Pipe<R> {
    fn new(stream: &'static str, reader: R) -> Self {
        Pipe {
            stream,
            reader,
            pending: Vec::new(),
            capture: Capture::default(),
            done: false,
        }
    }

    /// Read what is available (cancel safe: nothing is lost if another branch wins).
    async fn read(&mut self) -> io::Result<usize> {
        self.pending.reserve(8 << 10);
        self.reader.read_buf(&mut self.pending).await
    }

    /// Account for a finished [`Pipe::read`]: capture the bytes, report complete lines.
    fn consume(&mut self, r: io::Result<usize>, progress: &ProgressFn) {
        let n = match r {
            Ok(n) if n > 0 => n,
            // EOF, or a read error (treated as EOF: the stream is over for us).
            _ => {
                self.done = true;
                if !self.pending.is_empty() {
                    self.emit(0, self.pending.len(), progress);
                    self.pending.clear();
                }
                return;
            }
        };
        let start = self.pending.len() - n;
        self.capture.push(&self.pending[start..]);
        let mut line_start = 0;
        let mut from = start;
        while let Some(i) = self.pending[from..].iter().position(|&b| b == b'\n') {
            let end = from + i;
            self.emit(line_start, end, progress);
            line_start = end + 1;
            from = line_start;
        }
        self.pending.drain(..line_start);
        if self.pending.len() >= MAX_LINE {
            self.emit(0, self.pending.len(), progress);
            self.pending.clear();
        }
    }

    fn emit(&self, start: usize, end: usize, progress: &ProgressFn) {
        let mut line = &self.pending[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        progress(Progress::Output {
            stream: self.stream,
            line: String::from_utf8_lossy(line).into_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::tools::capture::{CAPTURE_LIMIT, TAIL_LIMIT, utf8_prefix_len};
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::tools::ToolRegistry;

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::detached(Arc::new(ToolRegistry::empty()), dir.to_path_buf())
    }

    /// Output lines seen, as (stream, line).
    type Seen = Arc<Mutex<Vec<(&'static str, String)>>>;

    /// A context whose progress is collected.
    fn recording(dir: &Path) -> (ToolContext, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut c = ctx(dir);
        let sink = seen.clone();
        c.progress = Arc::new(move |p| {
            if let Progress::Output { stream, line } = p {
                sink.lock().unwrap().push((stream, line));
            }
        });
        (c, seen)
    }

    async fn sh(dir: &Path, args: Value) -> Result<Value, ToolError> {
        Shell.call(args, ctx(dir)).await
    }

    #[test]
    fn only_plain_command_lines_skip_the_shell() {
        let words = |r: &str| direct_argv(r);
        assert_eq!(
            words("  true  "),
            Some(vec!["true".to_owned()]),
            "surrounding blanks"
        );
        assert_eq!(
            words("ls -la ./src"),
            Some(vec!["ls".into(), "-la".into(), "./src".into()])
        );
        for shellish in [
            "",
            "   ",
            "echo hi",
            "cd /tmp",
            "exit 3",
            "export A",
            "FOO=1 env",
            "ls $HOME",
            "ls *.rs",
            "a | b",
            "a && b",
            "a; b",
            "a > f",
            "a\nb",
            "echo 'x'",
            "ls \"x y\"",
            "ls ~",
            "ls # comment",
            "ls {a,b}",
            "cmd --flag=1",
            "printf x",
            "pwd",
            "kill 1",
            "ls é",
        ] {
            assert_eq!(
                words(shellish),
                None,
                "{shellish:?} must go through the shell"
            );
        }
    }

    #[tokio::test]
    async fn direct_commands_behave_as_under_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("marker.txt"), "x").unwrap();
        // Found on PATH, run in the workdir, with ckflow's variables.
        let r = sh(&root, json!({"run": "ls"})).await.unwrap();
        assert!(r["stdout"].as_str().unwrap().contains("marker.txt"), "{r}");
        let r = sh(&root, json!({"run": "env", "env": {"MINE": "1"}}))
            .await
            .unwrap();
        let out = r["stdout"].as_str().unwrap();
        assert!(
            out.contains("MINE=1") && out.contains("CKFLOW_OUTPUT="),
            "{out}"
        );
        let e = sh(&root, json!({"run": "false"})).await.unwrap_err();
        assert_eq!(e.code.as_deref(), Some("EXIT_1"));
        // Not found or not executable: the shell's own message and exit code.
        let e = sh(&root, json!({"run": "no-such-command-xyz --help"}))
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("EXIT_127"), "{e}");
        assert!(e.message.contains("not found"), "{}", e.message);
        let e = sh(&root, json!({"run": "./marker.txt"})).await.unwrap_err();
        assert_eq!(e.code.as_deref(), Some("EXIT_126"), "{e}");
        // Killed from outside: reported as the shell reports it, 128 + the signal.
        // (A duration no other test uses, so that pkill finds this sleep only.)
        let fut = sh(&root, json!({"run": "sleep 29.75"}));
        tokio::pin!(fut);
        let killer = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = std::process::Command::new("pkill")
                .args(["-TERM", "-f", "^sleep 29.75$"])
                .status();
        };
        let (r, ()) = tokio::join!(&mut fut, killer);
        let e = r.unwrap_err();
        assert_eq!(e.code.as_deref(), Some("EXIT_143"), "{e}");
    }

    fn lines(seen: &[(&'static str, String)], stream: &str) -> Vec<String> {
        seen.iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn alive(pid: libc::pid_t) -> bool {
        // SAFETY: signal 0 only checks for existence.
        let r = unsafe { libc::kill(pid, 0) };
        !(r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
    }

    async fn wait_dead(pid: libc::pid_t, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} is still alive"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn read_pid(file: &Path) -> libc::pid_t {
        for _ in 0..250 {
            if let Ok(s) = std::fs::read_to_string(file)
                && let Ok(pid) = s.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no pid written to {}", file.display());
    }

    #[tokio::test]
    async fn captures_and_streams_stdout_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let (c, seen) = recording(dir.path());
        let r = Shell
            .call(
                json!({"run": "echo one; echo two; echo err1 >&2; printf 'three\\r\\nno-newline'"}),
                c,
            )
            .await
            .unwrap();
        assert_eq!(r["stdout"], "one\ntwo\nthree\r\nno-newline");
        assert_eq!(r["stderr"], "err1\n");
        assert_eq!(r["exit_code"], 0);
        let seen = seen.lock().unwrap();
        assert_eq!(
            lines(&seen, "stdout"),
            ["one", "two", "three", "no-newline"]
        );
        assert_eq!(lines(&seen, "stderr"), ["err1"]);
    }

    #[tokio::test]
    async fn interleaved_streams_arrive_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (c, seen) = recording(dir.path());
        Shell
            .call(
                json!({"run": "echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c"}),
                c,
            )
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                ("stdout", "a".to_owned()),
                ("stderr", "b".to_owned()),
                ("stdout", "c".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn lines_stream_while_the_process_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = ctx(dir.path());
        c.progress = Arc::new(move |p| {
            let _ = tx.send(p);
        });
        let task = tokio::spawn(Shell.call(json!({"run": "echo first; sleep 1; echo second"}), c));
        let first = tokio::time::timeout(Duration::from_millis(900), rx.recv())
            .await
            .expect("the first line arrives before the process ends")
            .unwrap();
        assert_eq!(
            first,
            Progress::Output {
                stream: "stdout",
                line: "first".into()
            }
        );
        assert!(!task.is_finished());
        let r = task.await.unwrap().unwrap();
        assert_eq!(r["stdout"], "first\nsecond\n");
    }

    #[tokio::test]
    async fn ckflow_output_key_value_and_heredoc() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"
            echo "file=$CKFLOW_OUTPUT"
            echo "image=app:1.0" >> "$CKFLOW_OUTPUT"
            echo "count=3" >> "$CKFLOW_OUTPUT"
            echo "flag=true" >> "$CKFLOW_OUTPUT"
            echo "eq=a=b<<c" >> "$CKFLOW_OUTPUT"
            echo "" >> "$CKFLOW_OUTPUT"
            printf 'notes<<EOF\nline 1\n\nline=3\nEOF\n' >> "$CKFLOW_OUTPUT"
            printf 'crlf=x\r\n' >> "$CKFLOW_OUTPUT"
            echo "image=app:2.0" >> "$CKFLOW_OUTPUT"
        "#;
        let r = sh(dir.path(), json!({"run": script})).await.unwrap();
        assert_eq!(r["image"], "app:2.0", "the last value wins");
        assert_eq!(r["count"], "3", "numbers stay strings");
        assert_eq!(r["flag"], "true", "booleans stay strings");
        assert_eq!(r["eq"], "a=b<<c");
        assert_eq!(r["notes"], "line 1\n\nline=3");
        assert_eq!(r["crlf"], "x");
        assert_eq!(r["exit_code"], 0);
        let path = r["stdout"]
            .as_str()
            .unwrap()
            .trim()
            .strip_prefix("file=")
            .unwrap();
        assert!(path.starts_with(std::env::temp_dir().to_str().unwrap()));
        assert!(!Path::new(path).exists(), "the output file is deleted");
    }

    #[tokio::test]
    async fn ckflow_output_is_fresh_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let run = r#"test -e "$CKFLOW_OUTPUT" && echo exists; echo "$CKFLOW_OUTPUT""#;
        let a = sh(dir.path(), json!({"run": run})).await.unwrap();
        let b = sh(dir.path(), json!({"run": run})).await.unwrap();
        assert_ne!(a["stdout"], b["stdout"]);
        assert!(!a["stdout"].as_str().unwrap().contains("exists"));
        assert_eq!(a.as_object().unwrap().len(), 3, "no file, no extra keys");
    }

    #[tokio::test]
    async fn malformed_ckflow_output_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (run, needle) in [
            (
                r#"printf 'a<<EOF\nx\n' >> "$CKFLOW_OUTPUT""#,
                "is not closed",
            ),
            (r#"echo 'stdout=x' >> "$CKFLOW_OUTPUT""#, "reserved"),
            (
                r#"echo 'just text' >> "$CKFLOW_OUTPUT""#,
                "expected `key=value`",
            ),
            (r#"echo '=x' >> "$CKFLOW_OUTPUT""#, "key is empty"),
        ] {
            let e = sh(dir.path(), json!({"run": run})).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::ToolError, "{run}");
            assert_eq!(e.code.as_deref(), Some("OUTPUT_INVALID"));
            assert!(e.message.contains(needle), "{run}: {}", e.message);
        }
    }

    #[tokio::test]
    async fn ckflow_variables_are_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ctx(dir.path());
        c.run_id = "run-1".into();
        c.step_id = "build[2]".into();
        c.workspace = dir.path().join("ws");
        let r = Shell
            .call(
                json!({"run": "echo $CKFLOW_RUN_ID $CKFLOW_STEP_ID $CKFLOW_WORKSPACE"}),
                c,
            )
            .await
            .unwrap();
        assert_eq!(
            r["stdout"],
            format!("run-1 build[2] {}\n", dir.path().join("ws").display())
        );
    }

    #[tokio::test]
    async fn nonzero_exit_is_an_exit_code_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = sh(
            dir.path(),
            json!({"run": "echo out; echo first >&2; echo 'it broke' >&2; echo >&2; exit 3"}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::ExitCode);
        assert_eq!(e.code.as_deref(), Some("EXIT_3"));
        assert_eq!(e.message, "exit code 3: it broke");
        assert_eq!(
            e.details.unwrap(),
            json!({"exit_code": 3, "stdout": "out\n", "stderr": "first\nit broke\n\n"})
        );

        let e = sh(dir.path(), json!({"run": "exit 1"})).await.unwrap_err();
        assert_eq!(e.message, "exit code 1");
        assert_eq!(e.code.as_deref(), Some("EXIT_1"));
    }

    #[tokio::test]
    async fn death_by_signal_has_a_signal_code() {
        let dir = tempfile::tempdir().unwrap();
        let e = sh(dir.path(), json!({"run": "kill -9 $$"}))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::ExitCode);
        assert_eq!(e.code.as_deref(), Some("SIGNAL_9"));
        assert!(e.message.starts_with("killed by signal 9"), "{}", e.message);
        let d = e.details.unwrap();
        assert_eq!(d["exit_code"], 137);
        assert_eq!(d["signal"], 9);
    }

    #[tokio::test]
    async fn error_details_hold_4k_tails() {
        let dir = tempfile::tempdir().unwrap();
        let e = sh(
            dir.path(),
            json!({"run": "head -c 10000 /dev/zero | tr '\\0' x; echo; echo last >&2; exit 2"}),
        )
        .await
        .unwrap_err();
        let d = e.details.unwrap();
        let out = d["stdout"].as_str().unwrap();
        assert_eq!(out.len(), TAIL_LIMIT);
        assert!(out.ends_with("xx\n"));
        assert_eq!(d["stderr"], "last\n");
    }

    #[tokio::test]
    async fn env_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ctx(dir.path());
        c.env.insert("HOME".into(), "/from-ctx".into());
        c.env.insert("A".into(), "ctx-a".into());
        c.env.insert("B".into(), "ctx-b".into());
        let r = Shell
            .call(
                json!({
                    "run": "echo \"$HOME|$A|$B|$N|$T\"; test -n \"$PATH\" && echo path-inherited; \
                            test \"$CKFLOW_OUTPUT\" != /tmp/mine && echo output-kept",
                    "env": {"B": "with-b", "N": 5, "T": true, "CKFLOW_OUTPUT": "/tmp/mine"}
                }),
                c,
            )
            .await
            .unwrap();
        assert_eq!(
            r["stdout"],
            "/from-ctx|ctx-a|with-b|5|true\npath-inherited\noutput-kept\n"
        );
    }

    #[tokio::test]
    async fn workdir_and_shell() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let r = sh(&root, json!({"run": "pwd"})).await.unwrap();
        assert_eq!(r["stdout"], format!("{}\n", root.display()));
        let r = sh(&root, json!({"run": "pwd", "workdir": "sub"}))
            .await
            .unwrap();
        assert_eq!(r["stdout"], format!("{}\n", root.join("sub").display()));
        let abs = root.join("sub").display().to_string();
        let r = sh(&root, json!({"run": "pwd", "workdir": abs}))
            .await
            .unwrap();
        assert_eq!(r["stdout"], format!("{}\n", root.join("sub").display()));

        let e = sh(&root, json!({"run": "pwd", "workdir": "nope"}))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.code.as_deref(), Some("WORKDIR_NOT_FOUND"));
        assert!(e.message.contains("nope"), "{}", e.message);

        std::fs::write(root.join("file"), "").unwrap();
        let e = sh(&root, json!({"run": "pwd", "workdir": "file"}))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);

        let e = sh(&root, json!({"run": "true", "shell": "no-such-shell-xyz"}))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.code.as_deref(), Some("SHELL_NOT_FOUND"));

        let r = sh(&root, json!({"run": "echo $0", "shell": "/bin/sh"}))
            .await
            .unwrap();
        assert_eq!(r["stdout"], "/bin/sh\n");
    }

    #[tokio::test]
    async fn bad_arguments_are_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        for args in [
            json!({}),
            json!({"run": 1}),
            json!({"run": "true", "bogus": 1}),
            json!({"run": "true", "env": {"X": null}}),
            json!({"run": "true", "env": {"A=B": "x"}}),
            json!("true"),
        ] {
            let e = sh(dir.path(), args.clone()).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::InvalidInput, "{args}");
        }
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let c = ctx(dir.path());
        let cancel = c.cancel.clone();
        let task = tokio::spawn(Shell.call(json!({"run": "sleep 30 & echo $! > pid; wait"}), c));
        let pid = read_pid(&dir.path().join("pid")).await;
        assert!(alive(pid));
        let started = std::time::Instant::now();
        cancel.cancel();
        let e = tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("cancel returns promptly")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Cancelled);
        wait_dead(
            pid,
            Duration::from_secs(3).saturating_sub(started.elapsed()),
        )
        .await;
    }

    #[tokio::test]
    async fn cancel_escalates_to_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let c = ctx(dir.path());
        let cancel = c.cancel.clone();
        let run = "trap '' TERM; sh -c 'trap \"\" TERM; sleep 30' & echo $! > pid; wait";
        let task = tokio::spawn(Shell.call(json!({"run": run}), c));
        let pid = read_pid(&dir.path().join("pid")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
        let e = tokio::time::timeout(Duration::from_secs(4), task)
            .await
            .expect("SIGKILL after the grace period")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Cancelled);
        wait_dead(pid, Duration::from_secs(3)).await;
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut fut = Shell.call(
            json!({"run": "sleep 30 & echo $! > pid; wait"}),
            ctx(dir.path()),
        );
        let pidfile = dir.path().join("pid");
        let pid = tokio::select! {
            r = &mut fut => panic!("the shell ended early: {r:?}"),
            pid = read_pid(&pidfile) => pid,
        };
        assert!(alive(pid));
        drop(fut);
        wait_dead(pid, Duration::from_secs(3)).await;
    }

    #[tokio::test]
    async fn background_leftovers_are_killed_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let r = sh(dir.path(), json!({"run": "sleep 30 & echo $!"}))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: libc::pid_t = r["stdout"].as_str().unwrap().trim().parse().unwrap();
        wait_dead(pid, Duration::from_secs(3)).await;
    }

    #[tokio::test]
    async fn output_is_capped_with_a_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (c, seen) = recording(dir.path());
        let r = Shell
            .call(
                json!({"run": "head -c 1100000 /dev/zero | tr '\\0' a; echo done >&2"}),
                c,
            )
            .await
            .unwrap();
        let out = r["stdout"].as_str().unwrap();
        let mark = format!("\n…[truncated {} bytes]", 1_100_000 - CAPTURE_LIMIT);
        assert!(out.ends_with(&mark), "{}", &out[out.len() - 60..]);
        assert_eq!(out.len(), CAPTURE_LIMIT + mark.len());
        assert_eq!(r["stderr"], "done\n");
        // The long line still streams, in pieces.
        let streamed: usize = lines(&seen.lock().unwrap(), "stdout")
            .iter()
            .map(String::len)
            .sum();
        assert_eq!(streamed, 1_100_000);
    }

    #[test]
    fn capture_cuts_on_a_character_boundary() {
        let mut c = Capture::default();
        c.push(&vec![b'a'; CAPTURE_LIMIT - 1]);
        c.push("é and more".as_bytes());
        let text = c.text();
        assert!(
            text.ends_with("a\n…[truncated 11 bytes]"),
            "{}",
            &text[text.len() - 40..]
        );
        assert!(c.tail().ends_with("é and more"));
        assert_eq!(utf8_prefix_len("aé".as_bytes()), 3);
        assert_eq!(utf8_prefix_len(&"aé".as_bytes()[..2]), 1);
        assert_eq!(utf8_prefix_len("a€".as_bytes()), 4);
        assert_eq!(utf8_prefix_len(&"a€".as_bytes()[..3]), 1);
    }

    #[tokio::test]
    async fn secrets_are_redacted_from_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ctx(dir.path());
        c.secrets = Arc::new(vec!["hunter2".into()]);
        let r = Shell
            .call(
                json!({"run": "echo pw=hunter2; echo tok=hunter2 >> \"$CKFLOW_OUTPUT\""}),
                c,
            )
            .await
            .unwrap();
        assert_eq!(r["stdout"], "pw=***\n");
        assert_eq!(r["tok"], "***");
    }

    #[tokio::test]
    async fn many_quick_steps() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        for _ in 0..100 {
            sh(dir.path(), json!({"run": "true"})).await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn schemas_are_valid_and_described() {
        let input = Shell.input_schema();
        let v = jsonschema::draft202012::new(&input).unwrap();
        assert!(
            v.is_valid(&json!({"run": "x", "env": {"A": 1, "B": true, "C": "c"},
                                   "workdir": "w", "shell": "bash"}))
        );
        assert!(!v.is_valid(&json!({"env": {}})));
        assert!(!v.is_valid(&json!({"run": "x", "other": 1})));
        assert!(!v.is_valid(&json!({"run": "x", "env": {"A": null}})));
        for (name, p) in input["properties"].as_object().unwrap() {
            assert!(p["description"].is_string(), "{name}");
        }
        jsonschema::draft202012::new(&Shell.output_schema()).unwrap();
        assert!(Shell.host_exec());
    }
}
