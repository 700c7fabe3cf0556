//! The shipped `containerize` workflow end to end, through the `ckflow` binary, against the
//! real Docker engine and the registry on 127.0.0.1:5000 that `scripts/services.sh` starts
//! (with the `ckflow-base:1` busybox image, so nothing comes from the internet).
//!
//! 1. A small app with a Dockerfile goes through `ckflow run containerize`: it is built,
//!    tagged for and pushed to the registry, and its manifests are written under `k8s/`.
//! 2. The same app with a Dockerfile that parses but does not build: the build fails, the
//!    routing rule runs `generate_dockerfile` with `fix: true`, and the build succeeds on
//!    the retry.
//! 3. A Dockerfile with misspelt instructions: the lint step fails with
//!    `DOCKERFILE_INVALID`, the fix corrects them, and the run goes on to build.
//!
//! Without an engine and registry these tests say why and pass, unless
//! `CKFLOW_REQUIRE_DOCKER=1` (CI sets it), which makes them fail instead.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const REGISTRY: &str = "127.0.0.1:5000";

/// Whether the engine and the registry are there (or why not).
fn services() -> bool {
    let engine = std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
        || std::env::var_os("DOCKER_HOST").is_some();
    let registry = std::net::TcpStream::connect_timeout(
        &REGISTRY.parse().expect("a socket address"),
        Duration::from_secs(2),
    )
    .is_ok();
    if engine && registry {
        return true;
    }
    let why = format!("engine reachable: {engine}, registry {REGISTRY} reachable: {registry}");
    if std::env::var("CKFLOW_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("CKFLOW_REQUIRE_DOCKER=1 but {why}");
    }
    eprintln!("skipped: no Docker services ({why}); scripts/services.sh starts them");
    false
}

/// A project folder holding a copy of the demo app under `app/`, with `dockerfile` as its
/// Dockerfile.
fn project(dockerfile: &str) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("a temp dir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containerize/app");
    let app = t.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    for f in ["server.sh", "index.html", ".dockerignore"] {
        std::fs::copy(src.join(f), app.join(f)).expect("copy the app");
    }
    std::fs::copy(src.join(dockerfile), app.join("Dockerfile")).expect("copy the Dockerfile");
    std::fs::create_dir(t.path().join(".ckflow")).expect("the project marker");
    (t, app)
}

/// `ckflow run containerize` in `dir` with `inputs`; the JSON report.
fn containerize(dir: &Path, inputs: &[(&str, &str)]) -> (i32, Value) {
    containerize_with(dir, inputs, None)
}

/// The same, with `path_dir` put first on ckflow's PATH.
fn containerize_with(dir: &Path, inputs: &[(&str, &str)], path_dir: Option<&Path>) -> (i32, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckflow"));
    cmd.current_dir(dir).args(["run", "containerize", "--json"]);
    if let Some(p) = path_dir {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", p.display()));
    }
    for (k, v) in inputs {
        cmd.arg("-i").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("ckflow runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// A unique image name per test and process, so runs never collide.
fn image(test: &str) -> String {
    format!("ckflow-e2e/{test}-{}", std::process::id())
}

/// The registry's answer to `GET /v2/<repo>/manifests/<tag>`: the status line.
fn registry_manifest(repo: &str, tag: &str) -> String {
    let mut s = std::net::TcpStream::connect(REGISTRY).expect("the registry");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {REGISTRY}\r\nAccept: \
         application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n"
    )
    .expect("the request");
    let mut text = String::new();
    s.read_to_string(&mut text).ok();
    text.lines().next().unwrap_or_default().to_owned()
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    &report["steps"][id]
}

fn status<'a>(report: &'a Value, id: &str) -> &'a str {
    step(report, id)["status"].as_str().unwrap_or("?")
}

/// Every manifest file parses as YAML with apiVersion, kind and metadata.name, and the
/// Deployment runs `image`; the kinds found.
fn check_manifests(app: &Path, image: &str) -> Vec<String> {
    let dir = app.join("k8s");
    let mut kinds = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", f.display()));
            if v.get("resources").is_some() && v["kind"] == "Kustomization" {
                kinds.push("Kustomization".into());
                continue;
            }
            assert!(
                v["apiVersion"].is_string(),
                "{}: no apiVersion",
                f.display()
            );
            assert!(
                v["metadata"]["name"].is_string(),
                "{}: no name",
                f.display()
            );
            let kind = v["kind"].as_str().expect("kind").to_owned();
            if kind == "Deployment" {
                let c = &v["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(c["image"], image, "{}", f.display());
                assert_eq!(c["ports"][0]["containerPort"], 8080, "{}", f.display());
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    kinds
}

#[test]
fn containerize_builds_pushes_and_writes_manifests() {
    if !services() {
        return;
    }
    let (t, app) = project("Dockerfile");
    let name = image("ok");
    let (code, r) = containerize(
        t.path(),
        &[
            ("path", "app"),
            ("image", &name),
            ("tag", "1.0.0"),
            ("registry", REGISTRY),
            ("push", "true"),
        ],
    );
    assert_eq!(
        (code, r["status"].as_str()),
        (0, Some("succeeded")),
        "{r:#}"
    );
    assert_eq!(step(&r, "analyze")["outputs"]["dockerfile"], "Dockerfile");
    assert_eq!(step(&r, "analyze")["outputs"]["ports"][0], 8080);
    assert_eq!(
        status(&r, "dockerfile"),
        "skipped",
        "an existing Dockerfile is kept"
    );
    assert_eq!(status(&r, "lint"), "succeeded");
    assert_eq!(step(&r, "build")["attempts"], 1);
    assert_eq!(status(&r, "scan"), "skipped", "scan is off by default");
    let remote = format!("{REGISTRY}/{name}:1.0.0");
    assert_eq!(step(&r, "tag")["outputs"]["target"], remote.as_str());
    assert!(
        step(&r, "push")["outputs"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{r:#}"
    );
    let answer = registry_manifest(&name, "1.0.0");
    assert!(answer.contains(" 200 "), "the registry has it: {answer}");
    let kinds = check_manifests(&app, &remote);
    assert!(
        kinds.contains(&"Deployment".to_owned()) && kinds.contains(&"Service".to_owned()),
        "{kinds:?}"
    );
    // The Dockerfile was the app's own and is left as it was.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containerize/app");
    assert_eq!(
        std::fs::read_to_string(app.join("Dockerfile")).unwrap(),
        std::fs::read_to_string(src.join("Dockerfile")).unwrap()
    );
}

#[test]
fn a_failing_build_is_fixed_and_built_again() {
    if !services() {
        return;
    }
    let (t, app) = project("Dockerfile.broken-build");
    let name = image("fix-build");
    let (code, r) = containerize(t.path(), &[("path", "app"), ("image", &name), ("tag", "2")]);
    assert_eq!(
        (code, r["status"].as_str()),
        (0, Some("succeeded")),
        "{r:#}"
    );
    let build = step(&r, "build");
    assert_eq!(build["status"], "succeeded", "{r:#}");
    assert_eq!(
        build["attempts"], 2,
        "failed once, then built after the fix: {build:#}"
    );
    let routing = &build["routing"][0];
    assert_eq!(routing["rule"], "on_failure[1]", "{build:#}");
    assert_eq!(routing["tool"], "generate_dockerfile", "{build:#}");
    assert_eq!(routing["then"], "retry", "{build:#}");
    let fixed: Vec<&str> = routing["result"]["fixed"]
        .as_array()
        .unwrap_or_else(|| panic!("the recovery lists its fixes: {routing:#}"))
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert!(
        fixed.contains(&"DL3021") && fixed.contains(&"DL3004"),
        "{fixed:?}"
    );
    let text = std::fs::read_to_string(app.join("Dockerfile")).unwrap();
    assert!(text.contains("COPY server.sh index.html /app/\n"), "{text}");
    assert!(text.contains("RUN chmod 755 /app/server.sh\n"), "{text}");
    // No registry given: nothing tagged or pushed, manifests name the local image.
    assert_eq!(status(&r, "tag"), "skipped");
    assert_eq!(status(&r, "push"), "skipped");
    check_manifests(&app, &format!("{name}:2"));
}

#[test]
fn misspelt_instructions_are_fixed_before_the_build() {
    if !services() {
        return;
    }
    let (t, app) = project("Dockerfile.broken-syntax");
    let name = image("fix-syntax");
    let (code, r) = containerize(t.path(), &[("path", "app"), ("image", &name)]);
    assert_eq!(
        (code, r["status"].as_str()),
        (0, Some("succeeded")),
        "{r:#}"
    );
    let lint = step(&r, "lint");
    assert_eq!(lint["attempts"], 2, "{lint:#}");
    assert_eq!(lint["routing"][0]["rule"], "on_failure[0]", "{lint:#}");
    assert_eq!(
        lint["routing"][0]["tool"], "generate_dockerfile",
        "{lint:#}"
    );
    assert_eq!(step(&r, "build")["attempts"], 1);
    let text = std::fs::read_to_string(app.join("Dockerfile")).unwrap();
    assert!(
        text.contains("\nFROM ckflow-base:1\n") && text.contains("\nCOPY server.sh /app/\n"),
        "{text}"
    );
}

/// Trivy cannot be installed on this machine (no Debian, PyPI or npm package), so this
/// test puts a stand-in `trivy` on PATH that prints a recorded report
/// (`tests/fixtures/trivy/alpine.json`: 3 critical findings) — the one mock here. Critical
/// findings fail the scan with CRITICAL_VULNS_FOUND, which fails the run: nothing is
/// tagged or pushed, no manifests are written.
#[test]
fn critical_findings_stop_the_run_before_the_push() {
    if !services() {
        return;
    }
    let (t, app) = project("Dockerfile");
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trivy/alpine.json");
    let script = bin.join("trivy");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'Version: 0.58.1'; exit 0; fi\n\
             echo \"$@\" > \"$(dirname \"$0\")/args\"\ncat '{}'\n",
            report.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let name = image("scan");
    let inputs = [
        ("path", "app"),
        ("image", name.as_str()),
        ("registry", REGISTRY),
        ("push", "true"),
        ("scan", "true"),
    ];
    let (code, r) = containerize_with(t.path(), &inputs, Some(&bin));
    assert_eq!((code, r["status"].as_str()), (1, Some("failed")), "{r:#}");
    let scan = step(&r, "scan");
    assert_eq!(scan["error"]["code"], "CRITICAL_VULNS_FOUND", "{scan:#}");
    assert_eq!(
        scan["error"]["details"]["counts"]["critical"], 3,
        "{scan:#}"
    );
    assert_eq!(
        scan["routing"][0]["rule"], "scan_image.default_rules[0]",
        "{scan:#}"
    );
    let args = std::fs::read_to_string(bin.join("args")).unwrap();
    assert!(
        args.contains(&format!("{name}:dev")),
        "trivy scanned the built image: {args}"
    );
    for s in ["tag", "push", "manifests"] {
        assert_ne!(status(&r, s), "succeeded", "{s} must not run: {r:#}");
    }
    assert!(!app.join("k8s").exists());
    assert!(registry_manifest(&name, "dev").contains(" 404 "));
    // With `fail_on=none` the same findings are reported and the run goes on.
    let inputs = [
        ("path", "app"),
        ("image", name.as_str()),
        ("scan", "true"),
        ("fail_on", "none"),
    ];
    let (code, r) = containerize_with(t.path(), &inputs, Some(&bin));
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(step(&r, "scan")["outputs"]["counts"]["critical"], 3);
    assert!(step(&r, "scan")["outputs"]["fixable"].as_u64().is_some());
}

#[test]
fn the_shipped_workflow_is_listed_and_a_project_file_overrides_it() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join(".ckflow")).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ckflow"))
            .current_dir(t.path())
            .args(args)
            .output()
            .expect("ckflow runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["workflows", "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["workflows"][0]["name"], "containerize");
    assert_eq!(list["workflows"][0]["origin"], "shipped");
    let (code, text) = run(&["workflows", "show", "containerize"]);
    assert_eq!(code, 0);
    assert!(text.contains("name: containerize"));
    // A copy in workflows/ overrides the shipped one.
    std::fs::create_dir(t.path().join("workflows")).unwrap();
    std::fs::write(
        t.path().join("workflows/containerize.yaml"),
        "apiVersion: ckflow/v1\nname: containerize\ndescription: ours\nsteps:\n  - {id: only, tool: noop}\n",
    )
    .unwrap();
    let (code, out) = run(&["run", "containerize", "--json", "--no-store"]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["steps"]["only"]["status"], "succeeded");
    let (_, out) = run(&["workflows", "--json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["workflows"][0]["origin"], "project");
    assert_eq!(list["workflows"][0]["description"], "ours");
}
