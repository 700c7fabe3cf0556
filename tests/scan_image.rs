//! `scan_image` from the outside, through the built-in registry: recorded Trivy reports
//! (`tests/fixtures/trivy/`, see its README) read with `report_file`, the `fail_on`
//! failure, a missing scanner, and the process path.
//!
//! Trivy cannot be installed on the machines these tests run on (no network beyond the
//! package registries, and no Debian, PyPI or npm package ships it), so the process path runs
//! a stand-in: a small `/bin/sh` script named `trivy`, written into a temp folder that the
//! step's `PATH` (`ToolContext::env`) puts first. It prints a fixture report (or an error, or
//! sleeps) the way Trivy would, and records the arguments it was given.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ckflow::tools::Progress;
use ckflow::{ToolContext, ToolError, ToolRegistry};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trivy")
}

/// `s` with regex metacharacters escaped, for an insta filter.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A call's context: the fixtures as project folder, a temp folder for the stand-in, and
/// the progress it reports.
struct Case {
    ctx: ToolContext,
    tmp: tempfile::TempDir,
    seen: Arc<Mutex<Vec<Progress>>>,
}

impl Case {
    fn new() -> Case {
        let registry = Arc::new(ToolRegistry::builtin());
        let mut ctx = ToolContext::detached(registry, fixtures());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        ctx.progress = Arc::new(move |p| sink.lock().unwrap().push(p));
        Case {
            ctx,
            tmp: tempfile::tempdir().unwrap(),
            seen,
        }
    }

    /// Put a stand-in `trivy` running `body` first on the step's PATH; `$TMP` names the
    /// temp folder inside it.
    fn trivy(mut self, body: &str) -> Case {
        use std::os::unix::fs::PermissionsExt;
        let bin = self.tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let script = bin.join("trivy");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.ctx
            .env
            .insert("PATH".into(), format!("{}:/usr/bin:/bin", bin.display()));
        self.ctx
            .env
            .insert("TMP".into(), self.tmp.path().display().to_string());
        self
    }

    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let tool = self.ctx.registry.tool("scan_image").expect("registered");
        tool.call(args, self.ctx.clone()).await
    }

    /// A file the stand-in wrote into `$TMP`.
    fn written(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.tmp.path().join(name)).ok()
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| match p {
                Progress::Output { stream, line } if *stream == "stderr" => Some(line.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Snapshot `value` with the fixtures folder shown as `[fixtures]`.
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({filters => vec![
            (escape(&fixtures().display().to_string()).leak() as &str, "[fixtures]"),
        ]}, {
            insta::assert_json_snapshot!($name, $value);
        })
    };
}

fn error_json(e: &ToolError) -> Value {
    serde_json::to_value(e).unwrap()
}

/// Prints `$1` (a fixture name, through `$REPORT`) as Trivy's report and records its
/// arguments; answers `--version` like Trivy 0.58.1.
const PRINTS_REPORT: &str = r#"
if [ "$1" = "--version" ]; then
  echo called >> "$TMP/version-calls"
  printf 'Version: 0.58.1\nVulnerability DB:\n  Version: 2\n'
  exit 0
fi
printf '%s\n' "$@" > "$TMP/args"
echo "2024-12-10T09:31:17Z	INFO	Vulnerability scanning is enabled" >&2
cat "$REPORT"
"#;

/// Starts a child that sleeps, records both pids and waits: a Trivy that hangs.
const HANGS: &str = r#"
echo $$ > "$TMP/shell.pid"
sleep 30 &
echo $! > "$TMP/sleep.pid"
wait
"#;

#[tokio::test]
async fn report_files() {
    let case = Case::new();
    for name in ["clean", "alpine", "debian", "no-results", "legacy-v1"] {
        let result = case
            .call(json!({"report_file": format!("{name}.json")}))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        snapshot!(format!("report_{name}"), result);
    }
}

#[tokio::test]
async fn filters_and_max_findings() {
    let case = Case::new();
    let result = case
        .call(
            json!({"report_file": "debian.json", "severity": ["high", "medium"],
                     "ignore_unfixed": true, "max_findings": 3}),
        )
        .await
        .unwrap();
    assert_eq!(result["total"], 6);
    assert_eq!(result["findings"].as_array().unwrap().len(), 3);
    snapshot!("debian_filtered", result);
    let counts_only = case
        .call(json!({"report_file": "alpine.json", "max_findings": 0}))
        .await
        .unwrap();
    assert_eq!(counts_only["findings"], json!([]));
    assert_eq!(counts_only["total"], 9);
}

#[tokio::test]
async fn truncated_report_is_invalid() {
    let case = Case::new();
    let e = case
        .call(json!({"report_file": "truncated.json"}))
        .await
        .unwrap_err();
    snapshot!("truncated_report", error_json(&e));
}

#[tokio::test]
async fn missing_report_file() {
    let case = Case::new();
    let e = case
        .call(json!({"report_file": "missing.json"}))
        .await
        .unwrap_err();
    snapshot!("missing_report_file", error_json(&e));
}

#[tokio::test]
async fn fail_on_threshold_fails_with_the_result_in_details() {
    let case = Case::new();
    let e = case
        .call(json!({"report_file": "alpine.json", "fail_on": "high", "max_findings": 4}))
        .await
        .unwrap_err();
    snapshot!("fail_on_high", error_json(&e));
    // The details are what the call would have returned.
    let ok = case
        .call(json!({"report_file": "alpine.json", "fail_on": "none", "max_findings": 4}))
        .await
        .unwrap();
    let mut details = e.details.unwrap();
    details["fail_on"] = json!("none");
    assert_eq!(details, ok);
    // Unknown findings never trip the threshold; low ones do at `low`.
    let debian_unknown_only = case
        .call(json!({"report_file": "debian.json", "severity": ["unknown"], "fail_on": "low"}))
        .await
        .unwrap();
    assert_eq!(debian_unknown_only["counts"]["unknown"], 1);
    let e = case
        .call(json!({"report_file": "debian.json", "severity": ["low"], "fail_on": "low"}))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("CRITICAL_VULNS_FOUND"));
}

#[test]
fn default_rule_and_error_codes() {
    let registry = ToolRegistry::builtin();
    let tool = registry.tool("scan_image").unwrap();
    let d = ToolRegistry::describe(tool.as_ref());
    insta::assert_json_snapshot!(
        "described",
        json!({"default_rules": d["default_rules"], "error_codes": d["error_codes"],
               "host_exec": d["host_exec"]})
    );
}

#[tokio::test]
async fn no_scanner_on_an_empty_path() {
    let mut case = Case::new();
    case.ctx.env.insert("PATH".into(), String::new());
    let e = case.call(json!({"image": "app:1"})).await.unwrap_err();
    snapshot!("scanner_not_found", error_json(&e));
    // A PATH without trivy in it is the same.
    case.ctx
        .env
        .insert("PATH".into(), case.tmp.path().display().to_string());
    let e = case.call(json!({"image": "app:1"})).await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some("SCANNER_NOT_FOUND"));
}

#[tokio::test]
async fn stand_in_trivy_scans_the_image() {
    let mut case = Case::new().trivy(PRINTS_REPORT);
    case.ctx.env.insert(
        "REPORT".into(),
        fixtures().join("alpine.json").display().to_string(),
    );
    let result = case
        .call(
            json!({"image": "registry.example.com/shop/api:1.4.2", "fail_on": "none",
                     "severity": ["critical", "high", "medium", "low"], "ignore_unfixed": true,
                     "timeout": "10m"}),
        )
        .await
        .unwrap();
    snapshot!("stand_in_alpine", result);
    assert_eq!(
        case.written("args").unwrap(),
        "image\n--format\njson\n--quiet\n--scanners\nvuln\n--timeout\n10m\n--severity\n\
         CRITICAL,HIGH,MEDIUM,LOW\n--ignore-unfixed\nregistry.example.com/shop/api:1.4.2\n"
    );
    assert_eq!(case.written("version-calls").as_deref(), Some("called\n"));
    assert_eq!(
        case.stderr_lines(),
        vec!["2024-12-10T09:31:17Z INFO Vulnerability scanning is enabled"]
    );
}

#[tokio::test]
async fn stand_in_report_with_a_version_needs_no_version_call() {
    let mut case = Case::new().trivy(PRINTS_REPORT);
    case.ctx.env.insert(
        "REPORT".into(),
        fixtures().join("debian.json").display().to_string(),
    );
    let result = case
        .call(json!({"image": "python:3.11-slim-bookworm", "max_findings": 1}))
        .await
        .unwrap();
    assert_eq!(
        result["scanner"],
        json!({"name": "trivy", "version": "0.65.0"})
    );
    assert_eq!(result["image"], "python:3.11-slim-bookworm");
    assert_eq!(result["counts"]["critical"], 1);
    assert_eq!(case.written("version-calls"), None);
    assert_eq!(
        case.written("args").unwrap().lines().collect::<Vec<_>>(),
        vec![
            "image",
            "--format",
            "json",
            "--quiet",
            "--scanners",
            "vuln",
            "--timeout",
            "5m",
            "python:3.11-slim-bookworm"
        ]
    );
    // And `fail_on` judges a live scan the same way.
    let e = case
        .call(json!({"image": "python:3.11-slim-bookworm", "fail_on": "critical"}))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("CRITICAL_VULNS_FOUND"));
    assert!(
        e.message
            .starts_with("python:3.11-slim-bookworm has 1 vulnerability at or above"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn stand_in_errors() {
    let not_found = Case::new().trivy(
        r#"echo '2024-12-10T09:40:02Z	FATAL	Fatal error	run error: image scan error: scan error: unable to initialize a scan service: unable to find the specified image "nope:1" in ["docker" "containerd" "podman" "remote"]: 4 errors occurred:' >&2
printf '\t* docker error: unable to inspect the image (nope:1): Error response from daemon: No such image: nope:1\n' >&2
exit 1"#,
    );
    let e = not_found
        .call(json!({"image": "nope:1"}))
        .await
        .unwrap_err();
    snapshot!("stand_in_image_not_found", error_json(&e));

    let failed = Case::new().trivy(
        "echo '2024-12-10T09:41:13Z\tFATAL\tFatal error\tinit error: DB error: failed to download \
         vulnerability DB: database download error: OCI repository error: 1 error occurred' >&2\nexit 1",
    );
    let e = failed.call(json!({"image": "app:1"})).await.unwrap_err();
    snapshot!("stand_in_scan_failed", error_json(&e));

    let garbage = Case::new().trivy("echo 'this is not json'");
    let e = garbage.call(json!({"image": "app:1"})).await.unwrap_err();
    snapshot!("stand_in_garbage_output", error_json(&e));
}

/// Whether `pid` (from a file the stand-in wrote) still runs: a zombie nobody reaped yet
/// counts as gone.
fn running(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => false,
        Ok(stat) => {
            // `pid (comm) state …`: the state follows the last `)`.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
        }
    }
}

/// Wait until the stand-in has written both pid files.
async fn started(case: &Case) -> (String, String) {
    let t0 = Instant::now();
    loop {
        if let (Some(a), Some(b)) = (case.written("shell.pid"), case.written("sleep.pid"))
            && a.ends_with('\n')
            && b.ends_with('\n')
        {
            return (a, b);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the stand-in did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (briefly) until neither process runs.
async fn gone(pids: &(String, String)) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if !running(&pids.0) && !running(&pids.1) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn cancel_kills_the_stand_in_and_its_children() {
    let case = Case::new().trivy(HANGS);
    let cancel = case.ctx.cancel.clone();
    let ctx = case.ctx.clone();
    let call = tokio::spawn(async move {
        let tool = ctx.registry.tool("scan_image").unwrap();
        tool.call(json!({"image": "app:1"}), ctx).await
    });
    let pids = started(&case).await;
    assert!(running(&pids.0) && running(&pids.1));
    let t0 = Instant::now();
    cancel.cancel();
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.class, ckflow::workflow::model::ErrorClass::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        gone(&pids).await,
        "the stand-in or its child survived the cancel"
    );
}

#[tokio::test]
async fn timeout_kills_the_stand_in() {
    let case = Case::new().trivy(HANGS);
    let t0 = Instant::now();
    // Trivy gets `--timeout 1s`; one that is still running a second later is killed.
    let e = case
        .call(json!({"image": "app:1", "timeout": "1s"}))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    snapshot!("stand_in_timeout", error_json(&e));
    let pids = started(&case).await;
    assert!(
        gone(&pids).await,
        "the stand-in or its child survived the timeout"
    );
}
