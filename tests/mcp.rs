//! `ckflow mcp` from the outside, driven by the official Python SDK (`mcp` 2.x): the
//! scenarios in `tests/mcp/scenarios.py` run against the built binary over stdio and over
//! streamable HTTP, with the SDK in its handshake-era mode (`initialize`, "legacy") and in
//! its current stateless mode (2026-07-28, "modern"). Raw checks (`tests/mcp/raw.py`) send
//! what no SDK would: no or wrong tokens, oversized and malformed bodies, garbage on stdin.
//!
//! The Python side needs a venv with `mcp` installed, named by `CKFLOW_VENV`
//! (`python3 -m venv /tmp/venv-mcp && /tmp/venv-mcp/bin/pip install "mcp>=2,<3"`). Without
//! one the tests print why and pass, unless `CKFLOW_REQUIRE_MCP=1` (CI), which makes them
//! fail.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ckflow");
const TOKEN: &str = "test-token-5b0f3c1e9a";

/// The venv's python, if it has `mcp` 2.x; `None` (with the reason printed) otherwise.
fn python() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let venv = std::env::var_os("CKFLOW_VENV")
            .ok_or("CKFLOW_VENV is not set (a venv with `pip install \"mcp>=2,<3\"`)")?;
        let py = Path::new(&venv).join("bin/python");
        let out = Command::new(&py)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('mcp'))",
            ])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", py.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() {
            return Err(format!("the venv {} has no `mcp` package", py.display()));
        }
        if !version.starts_with("2.") {
            return Err(format!("the venv has mcp {version}; these tests need 2.x"));
        }
        Ok(py)
    });
    match found {
        Ok(py) => Some(py.clone()),
        Err(why) if std::env::var("CKFLOW_REQUIRE_MCP").as_deref() == Ok("1") => {
            panic!("CKFLOW_REQUIRE_MCP=1 but the MCP client is not available: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A project folder with the workflows the scenarios use.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let root = dir.path();
        let wf = root.join("workflows");
        std::fs::create_dir_all(&wf).unwrap();
        std::fs::write(
            wf.join("hello.yaml"),
            "apiVersion: ckflow/v1\nname: hello\ndescription: Greets someone\ninputs:\n  who: {type: string, default: world, description: Whom to greet}\nsteps:\n  - id: greet\n    tool: noop\n    with: {greeting: \"hello {{inputs.who}}\"}\n",
        )
        .unwrap();
        std::fs::write(
            wf.join("failing.yaml"),
            "apiVersion: ckflow/v1\nname: failing\nsteps:\n  - id: render\n    tool: render_template\n    with: {template_file: no/such/template.hbs}\n",
        )
        .unwrap();
        std::fs::write(
            wf.join("broken.yaml"),
            "apiVersion: ckflow/v1\nname: broken\nsteps:\n  - id: a\n    tool: noop\n    needs: [zzz]\n",
        )
        .unwrap();
        std::fs::write(
            wf.join("sleeper.yaml"),
            "apiVersion: ckflow/v1\nname: sleeper\ninputs:\n  pidfile: {type: string, required: true}\n  marker: {type: string, required: true}\nsteps:\n  - id: sleep\n    tool: shell\n    with: {run: \"echo $$ > {{inputs.pidfile}}; exec sleep 300\"}\nfinally:\n  - id: cleanup\n    tool: shell\n    with: {run: \"echo done > {{inputs.marker}}\"}\n",
        )
        .unwrap();
        std::fs::write(
            root.join("outside.yaml"),
            "apiVersion: ckflow/v1\nname: outside\nsteps:\n  - {id: a, tool: noop}\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("outside.yaml"), wf.join("evil.yaml")).unwrap();
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `ckflow mcp --http 127.0.0.1:0` with the token; stopped (SIGTERM, then waited for) on drop.
struct HttpServer {
    child: Child,
    url: String,
}

impl HttpServer {
    fn start(project: &Path, extra: &[&str]) -> HttpServer {
        let mut child = Command::new(BIN)
            .args(["mcp", "--http", "127.0.0.1:0", "--project"])
            .arg(project)
            .args(extra)
            .env("CKFLOW_MCP_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ckflow mcp starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent && let Some(at) = line.find("http://") {
                    let url = line[at..].split_whitespace().next().unwrap().to_owned();
                    let _ = tx.send(url);
                    sent = true;
                } else {
                    eprintln!("[server] {line}");
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server prints where it listens");
        HttpServer { child, url }
    }

    /// Stop it like a service manager would, and wait: it must exit by itself.
    fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ckflow mcp did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum Via<'a> {
    Stdio(&'a [&'a str]),
    Http(&'a HttpServer),
}

/// Run one Python scenario; panics with its output when it fails.
fn scenario(py: &Path, project: &Project, name: &str, mode: &str, via: Via) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    let mut cmd = Command::new(py);
    cmd.arg(dir.join("scenarios.py"))
        .arg(name)
        .args(["--bin", BIN, "--mode", mode, "--project"])
        .arg(project.path())
        .env("PYTHONPATH", &dir)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    match via {
        Via::Stdio(extra) => {
            for a in extra {
                cmd.arg(format!("--server-arg={a}"));
            }
        }
        Via::Http(server) => {
            cmd.args(["--url", &server.url, "--token", TOKEN]);
        }
    }
    let out = cmd.output().expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "scenario {name} ({mode}) failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

/// Run a raw check from `tests/mcp/raw.py`.
fn raw(py: &Path, check: &str, args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp");
    let out = Command::new(py)
        .arg(dir.join("raw.py"))
        .arg(check)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "raw check {check} failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}

const MODES: [&str; 2] = ["legacy", "modern"];

#[test]
fn stdio_tools_workflows_validation_security_resources() {
    let Some(py) = python() else { return };
    let project = Project::new();
    for mode in MODES {
        scenario(&py, &project, "basics", mode, Via::Stdio(&[]));
    }
}

#[test]
fn stdio_sessions_share_context() {
    let Some(py) = python() else { return };
    let project = Project::new();
    for mode in MODES {
        scenario(&py, &project, "sessions", mode, Via::Stdio(&[]));
    }
}

#[test]
fn stdio_direct_tool_calls_in_the_session_history() {
    let Some(py) = python() else { return };
    let project = Project::new();
    for mode in MODES {
        scenario(&py, &project, "tool_history", mode, Via::Stdio(&[]));
    }
}

#[test]
fn stdio_progress_in_order() {
    let Some(py) = python() else { return };
    let project = Project::new();
    // `auto`: the SDK's default, which probes `server/discover` and then goes stateless.
    for mode in ["legacy", "modern", "auto"] {
        scenario(&py, &project, "progress", mode, Via::Stdio(&[]));
    }
}

#[test]
fn stdio_cancel_kills_the_steps_and_runs_finally() {
    let Some(py) = python() else { return };
    let project = Project::new();
    for mode in MODES {
        scenario(&py, &project, "cancel", mode, Via::Stdio(&[]));
    }
}

#[test]
fn stdio_host_exec_when_allowed() {
    let Some(py) = python() else { return };
    let project = Project::new();
    scenario(
        &py,
        &project,
        "host_exec_allowed",
        "legacy",
        Via::Stdio(&["--allow-host-exec"]),
    );
}

#[test]
fn http_everything_in_both_modes() {
    let Some(py) = python() else { return };
    let project = Project::new();
    let server = HttpServer::start(project.path(), &[]);
    for mode in MODES {
        for name in [
            "basics",
            "sessions",
            "tool_history",
            "progress",
            "cancel",
            "auth",
        ] {
            scenario(&py, &project, name, mode, Via::Http(&server));
        }
    }
    let status = server.stop();
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
}

#[test]
fn http_fifty_concurrent_runs() {
    let Some(py) = python() else { return };
    let project = Project::new();
    let server = HttpServer::start(project.path(), &[]);
    for mode in MODES {
        scenario(&py, &project, "concurrency", mode, Via::Http(&server));
    }
    assert!(server.stop().success());
}

#[test]
fn http_refuses_what_no_client_should_send() {
    let Some(py) = python() else { return };
    let project = Project::new();
    let server = HttpServer::start(project.path(), &[]);
    raw(&py, "http", &[&server.url, TOKEN]);
    assert!(server.stop().success());
}

#[test]
fn stdio_survives_malformed_messages() {
    let Some(py) = python() else { return };
    let project = Project::new();
    raw(&py, "stdio", &[BIN, project.path().to_str().unwrap()]);
}

#[test]
fn stopping_the_server_cancels_running_runs() {
    let Some(py) = python() else { return };
    let project = Project::new();
    let server = HttpServer::start(project.path(), &[]);
    raw(
        &py,
        "start_sleeper",
        &[&server.url, TOKEN, project.path().to_str().unwrap()],
    );
    let pid: i32 = std::fs::read_to_string(project.path().join("sleeper.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    assert!(server.stop().success());
    assert!(
        !alive(pid),
        "the step's process is gone once the server has stopped"
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("sleeper.finally"))
            .unwrap()
            .trim(),
        "done",
        "finally ran"
    );
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

#[test]
fn http_without_a_token_is_refused_at_start() {
    let project = Project::new();
    for addr in ["0.0.0.0:0", "127.0.0.1:0"] {
        let out = Command::new(BIN)
            .args(["mcp", "--http", addr, "--project"])
            .arg(project.path())
            .env_remove("CKFLOW_MCP_TOKEN")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{addr}: {stderr}");
        assert!(stderr.contains("CKFLOW_MCP_TOKEN"), "{stderr}");
        if addr.starts_with("0.") {
            assert!(stderr.contains("non-loopback"), "{stderr}");
        }
    }
}

#[test]
fn every_protocol_revision_by_hand() {
    let Some(py) = python() else { return };
    let project = Project::new();
    let server = HttpServer::start(project.path(), &[]);
    raw(
        &py,
        "versions",
        &[BIN, project.path().to_str().unwrap(), &server.url, TOKEN],
    );
    assert!(server.stop().success());
}
