//! The Docker tools against a real engine and real registries (`scripts/services.sh` starts
//! them: the engine, `127.0.0.1:5000` without auth, `127.0.0.1:5001` with htpasswd auth,
//! and the `ckflow-base:1` image), plus the parsers that need no engine.
//!
//! When no engine answers, the engine tests print why and pass without doing anything,
//! unless `CKFLOW_REQUIRE_DOCKER=1`, which makes them fail instead ([`services`] decides).
//! Every test uses its own run id, workspace and image names, so they run in parallel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveImageOptions};
use ckflow::tools::docker::auth::{Credentials, DockerConfig, parse_helper_output};
use ckflow::tools::docker::ignore::Matcher;
use ckflow::tools::docker::reference::Reference;
use ckflow::tools::{Progress, ToolContext, ToolError, ToolRegistry};
use ckflow::workflow::model::{ErrorClass, Then};
use serde_json::{Value, json};

// ---- the services ------------------------------------------------------------------------

/// What the engine tests talk to.
struct Services {
    registry: String,
    auth_registry: String,
    user: String,
    password: String,
    base: String,
}

/// The services, or why they are not there. Asked once per test binary.
fn services() -> Option<&'static Services> {
    static S: OnceLock<Result<Services, String>> = OnceLock::new();
    let r = S.get_or_init(|| {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
        let s = Services {
            registry: var("CKFLOW_TEST_REGISTRY", "127.0.0.1:5000"),
            auth_registry: var("CKFLOW_TEST_AUTH_REGISTRY", "127.0.0.1:5001"),
            user: var("CKFLOW_TEST_REGISTRY_USER", "ckflow"),
            password: var("CKFLOW_TEST_REGISTRY_PASSWORD", "ckflow-secret"),
            base: var("CKFLOW_BASE_IMAGE", "ckflow-base:1"),
        };
        let host = var("DOCKER_HOST", "unix:///var/run/docker.sock");
        let ping = http_get_engine(&host, "/_ping")
            .map_err(|e| format!("no Docker engine at {host} ({e})"))?;
        if !ping.ends_with("OK") {
            return Err(format!(
                "the engine at {host} does not answer /_ping with OK"
            ));
        }
        let image = http_get_engine(&host, &format!("/images/{}/json", s.base))
            .map_err(|e| format!("asking the engine for {}: {e}", s.base))?;
        if !image.starts_with("HTTP/1.1 200") && !image.starts_with("HTTP/1.0 200") {
            return Err(format!(
                "the base image {} is missing (run scripts/services.sh)",
                s.base
            ));
        }
        for r in [&s.registry, &s.auth_registry] {
            std::net::TcpStream::connect_timeout(
                &r.parse().map_err(|_| format!("bad registry {r}"))?,
                Duration::from_secs(2),
            )
            .map_err(|e| format!("no registry at {r} ({e})"))?;
        }
        Ok(s)
    });
    match r {
        Ok(s) => Some(s),
        Err(why) if std::env::var("CKFLOW_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("CKFLOW_REQUIRE_DOCKER=1 but {why}")
        }
        Err(why) => {
            // Once per binary, past libtest's capture so that it shows in a plain
            // `cargo test`; every skipped test also says it (seen with --nocapture).
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "tests/docker.rs: Docker tests skipped: {why} (scripts/services.sh starts the \
                     services; CKFLOW_REQUIRE_DOCKER=1 makes this a failure)"
                );
            });
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Skip the test (with the reason printed) when the services are not there.
macro_rules! need_services {
    () => {
        match services() {
            Some(s) => s,
            None => return,
        }
    };
}

/// A plain `GET` to the engine (no client library: this decides whether to test at all).
fn http_get_engine(host: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let req = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
    let mut out = String::new();
    if let Some(p) = host.strip_prefix("unix://") {
        let mut s = std::os::unix::net::UnixStream::connect(p)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(req.as_bytes())?;
        s.read_to_string(&mut out)?;
    } else {
        let addr = host
            .trim_start_matches("tcp://")
            .trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(req.as_bytes())?;
        s.read_to_string(&mut out)?;
    }
    Ok(out)
}

/// A bollard client for the test's own questions to the engine.
async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A test's context: its own run id, project folder and workspace; progress recorded.
struct Case {
    ctx: ToolContext,
    seen: Arc<Mutex<Vec<Progress>>>,
    _dir: tempfile::TempDir,
}

impl Case {
    fn new(name: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(ToolRegistry::builtin());
        let mut ctx = ToolContext::detached(registry, dir.path().to_path_buf());
        ctx.workspace = dir.path().join("workspace");
        ctx.run_id = unique(name);
        ctx.step_id = name.to_owned();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        ctx.progress = Arc::new(move |p| sink.lock().unwrap().push(p));
        Case {
            ctx,
            seen,
            _dir: dir,
        }
    }

    fn dir(&self) -> &Path {
        &self.ctx.project_dir
    }

    async fn call(&self, tool: &str, args: Value) -> Result<Value, ToolError> {
        let t = self.ctx.registry.tool(tool).expect("a registered tool");
        t.call(args, self.ctx.clone()).await
    }

    /// The output lines reported on `stream`.
    fn lines(&self, stream: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| match p {
                Progress::Output { stream: s, line } if *s == stream => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// The part (layer) progress reported: (id, status).
    fn parts(&self) -> Vec<(String, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| match p {
                Progress::Part { id, status, .. } => Some((id.clone(), status.clone())),
                _ => None,
            })
            .collect()
    }

    /// Everything reported, as text (to look for secrets).
    fn everything(&self) -> String {
        format!("{:?}", self.seen.lock().unwrap())
    }

    /// The containers the engine has with this run's label (running or not).
    async fn containers(&self) -> Vec<String> {
        let filters = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![format!("ckflow.run_id={}", self.ctx.run_id)],
        )]);
        docker()
            .await
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            }))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    /// Wait (up to `within`) until this run has no container left.
    async fn assert_no_container(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let left = self.containers().await;
            if left.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < within,
                "containers left behind after {within:?}: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/docker")
        .join(name)
}

/// Remove local images by name, ignoring the ones already gone.
async fn remove_images(names: &[&str]) {
    let d = docker().await;
    for n in names {
        let _ = d
            .remove_image(
                n,
                Some(RemoveImageOptions {
                    force: true,
                    ..RemoveImageOptions::default()
                }),
                None,
            )
            .await;
    }
}

/// Local images a test made; removed when it ends, passed or not.
#[derive(Default)]
struct Images(Vec<String>);

impl Images {
    fn add(&mut self, name: &str) -> String {
        self.0.push(name.to_owned());
        name.to_owned()
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        if names.is_empty() {
            return;
        }
        // The test's runtime may be gone (a panic): a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            rt.block_on(remove_images(&refs));
        })
        .join();
    }
}

/// Tag the base image as `target` (a cheap image to push).
async fn tag_base(case: &Case, s: &Services, target: &str) {
    case.call("tag_image", json!({"source": s.base, "target": target}))
        .await
        .unwrap();
}

/// A `config.json` folder with `config`.
fn docker_config(case: &Case, config: Value) -> PathBuf {
    let dir = case.dir().join("docker-config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

fn b64(s: &str) -> String {
    ckflow::tools::docker::auth::encode_std(s.as_bytes())
}

// ---- parsers (no engine needed) ----------------------------------------------------------

#[test]
fn reference_grammar() {
    let ok = |s: &str| Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    let r = ok("127.0.0.1:5000/team/app:1.0");
    assert_eq!(r.domain.as_deref(), Some("127.0.0.1:5000"));
    assert_eq!(r.path, "team/app");
    assert_eq!(r.tag.as_deref(), Some("1.0"));
    assert_eq!(r.registry(), "127.0.0.1:5000");

    let hex = "a".repeat(64);
    let r = ok(&format!("ghcr.io/o/i:v1@sha256:{hex}"));
    assert_eq!(r.tag.as_deref(), Some("v1"));
    assert_eq!(r.digest, Some(format!("sha256:{hex}")));
    assert_eq!(r.to_string(), format!("ghcr.io/o/i:v1@sha256:{hex}"));

    let r = ok("app");
    assert_eq!(
        (r.domain.clone(), r.registry()),
        (None, "docker.io".to_owned())
    );
    assert_eq!(r.full_name(), "docker.io/library/app");
    assert_eq!(r.tag_or_latest(), Some("latest"));
    assert_eq!(ok("index.docker.io/me/app").registry(), "docker.io");
    assert_eq!(ok("me/app").full_name(), "docker.io/me/app");
    assert_eq!(ok("localhost/app").domain.as_deref(), Some("localhost"));
    // `localhost:5000` alone is the repository `localhost` with tag `5000`.
    let r = ok("localhost:5000");
    assert_eq!(
        (r.path.as_str(), r.tag.as_deref()),
        ("localhost", Some("5000"))
    );
    assert_eq!(ok("[::1]:5000/app:x").domain.as_deref(), Some("[::1]:5000"));
    assert_eq!(
        ok("Registry.Example.COM/app").domain.as_deref(),
        Some("Registry.Example.COM")
    );
    // an upper-case first component is a domain, as in Docker
    assert_eq!(ok("Upper/app").domain.as_deref(), Some("Upper"));
    for s in [
        "ab-c__d/e---f/g_h.i:tag_1.2-3",
        "0/1",
        &format!("app:{}", "t".repeat(128)),
        "my-registry:443/x/y/z",
    ] {
        ok(s);
    }

    for (s, why) in [
        ("", "empty"),
        ("me/App", "lowercase"),
        ("docker.io/Me/app", "lowercase"),
        ("app:", "empty"),
        ("app:-x", "start with"),
        ("app:a b", "contains"),
        (&format!("app:{}", "t".repeat(129)), "longer than 128"),
        ("app@sha256:abc", "64"),
        ("app@md5:0000", "sha256"),
        (&format!("app@sha256:{}", "A".repeat(64)), "lowercase hex"),
        ("a//b", "empty"),
        ("a/b/", "empty"),
        ("-a/b", "start and end"),
        ("a/b-", "start and end"),
        ("a/b..c", "separate"),
        ("a/b___c", "separate"),
        ("host:port/app", "port"),
        ("-bad.io/app", "registry host"),
        ("https://ghcr.io/app", "URL"),
        (&format!("{}/x", "a".repeat(256)), "255"),
    ] {
        let e = Reference::parse(s).expect_err(s);
        assert!(e.contains(why), "{s}: {e}");
    }
}

#[test]
fn dockerignore_matcher() {
    let m = |text: &str| Matcher::parse(text).unwrap();
    // exact, directory contents, comments, leading slash, cleaning
    let x = m("# comment\n  secret.txt  \n/build/\n./a//b/../c\n\n#not-a-pattern\n");
    for (p, excluded) in [
        ("secret.txt", true),
        ("dir/secret.txt", false),
        ("build", true),
        ("build/out/x.o", true),
        ("builder", false),
        ("a/c", true),
        ("a/c/d", true),
        ("#not-a-pattern", false),
        ("src/main.rs", false),
    ] {
        assert_eq!(x.excludes(p), excluded, "{p}");
    }
    // `*`, `?`, classes, escapes
    let x = m("*.log\nsrc/*/gen\nfile?.txt\n[abc]x\n[^0-9]y\nlit\\*star\n");
    for (p, excluded) in [
        ("debug.log", true),
        ("sub/debug.log", false),
        ("src/a/gen", true),
        ("src/a/b/gen", false),
        ("src/a/gen/deep", true),
        ("file1.txt", true),
        ("file12.txt", false),
        ("file/.txt", false),
        ("bx", true),
        ("dx", false),
        ("zy", true),
        ("5y", false),
        ("lit*star", true),
        ("litXstar", false),
    ] {
        assert_eq!(x.excludes(p), excluded, "{p}");
    }
    // `**`
    let x = m("**/*.tmp\ndocs/**/draft.md\ncache/**\n**/node_modules\n");
    for (p, excluded) in [
        ("a.tmp", true),
        ("x/y/z.tmp", true),
        ("docs/draft.md", true),
        ("docs/a/b/draft.md", true),
        ("docs/a/b/final.md", false),
        ("cache/x", true),
        ("cache", false),
        ("node_modules", true),
        ("web/node_modules/react/index.js", true),
    ] {
        assert_eq!(x.excludes(p), excluded, "{p}");
    }
    // `!` exceptions; the last match wins
    let x = m("*.md\n!README.md\nREADME.md\n!keep/**\nkeep/drop.md\n");
    assert!(x.excludes("a.md"));
    assert!(x.excludes("README.md"), "a later pattern excludes it again");
    assert!(!x.excludes("keep/a.md"));
    assert!(x.excludes("keep/drop.md"));
    // excluded directories are entered only for an exception below them
    let x = m("docs\n!docs/keep.md\nvendor\n");
    assert!(x.excludes("docs") && x.must_descend("docs"));
    assert!(!x.excludes("docs/keep.md") && x.excludes("docs/other.md"));
    assert!(x.excludes("vendor") && !x.must_descend("vendor"));
    // everything, then a few back
    let x = m("*\n!src\n!Cargo.toml\n");
    assert!(x.excludes("README.md") && !x.excludes("src/lib.rs") && !x.excludes("Cargo.toml"));
    // a UTF-8 BOM is dropped; `!` alone is an error, as is an unclosed class
    assert!(m("\u{feff}x\n").excludes("x"));
    assert!(Matcher::parse("a\n!\n").unwrap_err().contains("line 2"));
    assert!(Matcher::parse("[abc\n").is_err());
    assert!(
        Matcher::from_patterns(["a", "!a/b"])
            .unwrap()
            .excludes("a/c")
    );
}

#[test]
fn config_json_parsing() {
    let cfg = DockerConfig::parse(
        &json!({
            "auths": {
                "127.0.0.1:5001": {"auth": b64("ckflow:ckflow-secret")},
                "https://index.docker.io/v1/": {"auth": b64("hubuser:pa:ss")},
                "https://ghcr.io/v2/": {"username": "gh", "password": "tok"},
                "quay.io": {"identitytoken": "refresh-me"},
                "empty.io": {}
            },
            "credHelpers": {"gcr.io": "gcloud", "docker.io": "desktop"},
            "credsStore": "pass",
            "psFormat": "ignored"
        })
        .to_string(),
    )
    .unwrap();
    let c = cfg.auth_for("127.0.0.1:5001").unwrap();
    assert_eq!(c.username.as_deref(), Some("ckflow"));
    assert_eq!(c.password.as_deref(), Some("ckflow-secret"));
    // Hub under any alias; a password may contain `:`
    for alias in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
        assert_eq!(
            cfg.auth_for(alias).unwrap().password.as_deref(),
            Some("pa:ss"),
            "{alias}"
        );
    }
    // keys with a scheme and a path match by host
    assert_eq!(
        cfg.auth_for("ghcr.io").unwrap().username.as_deref(),
        Some("gh")
    );
    assert_eq!(
        cfg.auth_for("quay.io").unwrap().identity_token.as_deref(),
        Some("refresh-me")
    );
    assert!(cfg.auth_for("empty.io").unwrap().is_empty());
    assert!(cfg.auth_for("127.0.0.1:5000").is_none());
    assert_eq!(cfg.helper_for("gcr.io"), Some("gcloud"));
    assert_eq!(cfg.helper_for("index.docker.io"), Some("desktop"));
    assert_eq!(cfg.helper_for("ghcr.io"), None);
    assert_eq!(cfg.creds_store.as_deref(), Some("pass"));
    // Debug never shows a secret
    let debug = format!("{cfg:?}");
    assert!(
        !debug.contains("ckflow-secret")
            && !debug.contains("tok\"")
            && !debug.contains("refresh-me"),
        "{debug}"
    );

    assert_eq!(DockerConfig::parse("{}").unwrap(), DockerConfig::default());
    for (bad, why) in [
        ("[]", "object"),
        ("{", "JSON"),
        (r#"{"auths": {"r.io": {"auth": "!!"}}}"#, "auths.r.io.auth"),
        (
            r#"{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}"#,
            "user:password",
        ),
        (r#"{"credHelpers": {"r.io": "../evil"}}"#, "helper name"),
        (r#"{"credsStore": 3}"#, "credsStore"),
    ] {
        let e = DockerConfig::parse(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
        assert!(!e.contains("nocolon") && !e.contains("!!"), "{e}");
    }

    let c = parse_helper_output(r#"{"ServerURL":"r.io","Username":"u","Secret":"s"}"#).unwrap();
    assert_eq!(
        c,
        Credentials {
            username: Some("u".into()),
            password: Some("s".into()),
            identity_token: None
        }
    );
    let c = parse_helper_output(r#"{"Username":"<token>","Secret":"t"}"#).unwrap();
    assert_eq!(c.identity_token.as_deref(), Some("t"));
    assert!(parse_helper_output("not json").is_err());
}

#[test]
fn tools_are_described_with_rules() {
    let reg = ToolRegistry::builtin();
    for name in [
        "build_image",
        "tag_image",
        "push_image",
        "pull_image",
        "check_registry_auth",
        "run_container",
        "validate_dockerfile",
    ] {
        let t = reg
            .tool(name)
            .unwrap_or_else(|| panic!("{name} is registered"));
        let input = t.input_schema();
        jsonschema::draft202012::new(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        jsonschema::draft202012::new(&t.output_schema()).unwrap();
        for (p, s) in input["properties"].as_object().unwrap() {
            assert!(s["description"].is_string(), "{name}.{p} is described");
        }
        for (p, s) in t.output_schema()["properties"].as_object().unwrap() {
            assert!(
                s["description"].is_string(),
                "{name} result {p} is described"
            );
        }
        assert!(!t.host_exec(), "{name} runs nothing on the host");
        assert!(!t.error_codes().is_empty());
        for rule in t.default_rules() {
            if let Some(route) = &rule.route {
                assert!(
                    reg.get(&route.tool).is_some(),
                    "{name} routes to a registered tool"
                );
            }
        }
    }
    assert!(!reg.tool("check_registry_auth").unwrap().destructive());
    assert!(reg.tool("push_image").unwrap().destructive());
    {
        let rules = reg.tool("build_image").unwrap().default_rules();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.matcher.tool, ["build_image"]);
        assert_eq!(r.matcher.error, ["build_failed"]);
        let route = r.route.as_ref().unwrap();
        assert_eq!(route.tool, "validate_dockerfile");
        assert_eq!(route.with["path"], "{{failed.error.details.dockerfile}}");
        assert_eq!((r.then, r.max), (Then::Fail, 1));
    }

    // transient push and pull failures are retried twice more
    for name in ["push_image", "pull_image"] {
        let rules = reg.tool(name).unwrap().default_rules();
        let r = &rules[0];
        assert_eq!(r.matcher.error, ["transient"]);
        assert!(r.route.is_none());
        assert_eq!((r.then, r.max), (Then::Retry, 2));
    }
    // a push refused for credentials goes to the credentials check, then fails
    let rules = reg.tool("push_image").unwrap().default_rules();
    let r = &rules[1];
    assert_eq!(
        (r.matcher.tool.as_slice(), r.matcher.error.as_slice()),
        (
            &["push_image".to_owned()][..],
            &["auth_failed".to_owned()][..]
        )
    );
    let route = r.route.as_ref().unwrap();
    assert_eq!(route.tool, "check_registry_auth");
    assert_eq!(route.with["registry"], "{{failed.error.details.registry}}");
    assert_eq!((r.then, r.max), (Then::Fail, 1));
}

// ---- no engine needed: checks that come first ----------------------------------------------

/// A context whose engine address leads nowhere.
fn nowhere(name: &str) -> Case {
    let mut c = Case::new(name);
    c.ctx.env.insert(
        "DOCKER_HOST".into(),
        "unix:///nonexistent/ckflow-docker.sock".into(),
    );
    c
}

#[tokio::test]
async fn an_unreachable_engine_is_not_found() {
    let c = nowhere("unreachable");
    let e = c
        .call("tag_image", json!({"source": "a:1", "target": "b:1"}))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::NotFound);
    assert_eq!(e.code.as_deref(), Some("ENGINE_UNREACHABLE"));
    assert!(
        e.message.starts_with(
            "cannot reach the Docker engine at unix:///nonexistent/ckflow-docker.sock: "
        ),
        "{}",
        e.message
    );
    let mut c = Case::new("refused");
    c.ctx
        .env
        .insert("DOCKER_HOST".into(), "tcp://127.0.0.1:1".into());
    let e = c
        .call("run_container", json!({"image": "x", "run": "true"}))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("ENGINE_UNREACHABLE"));
    assert!(
        e.message.contains("tcp://127.0.0.1:1") && e.message.to_lowercase().contains("refused"),
        "{}",
        e.message
    );
    c.ctx
        .env
        .insert("DOCKER_HOST".into(), "ssh://me@host".into());
    let e = c
        .call("pull_image", json!({"image": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("ENGINE_UNREACHABLE"));
    assert!(e.message.contains("not supported"), "{}", e.message);
}

#[tokio::test]
async fn bad_arguments_fail_before_any_call() {
    // The engine address leads nowhere: `invalid_input` proves nothing was called.
    let c = nowhere("invalid");
    let hex = "0".repeat(64);
    for (tool, args, code) in [
        (
            "push_image",
            json!({"image": "Bad/Name:1"}),
            Some("INVALID_REFERENCE"),
        ),
        (
            "push_image",
            json!({"image": format!("app@sha256:{hex}")}),
            Some("INVALID_REFERENCE"),
        ),
        (
            "push_image",
            json!({"image": "app:1", "auth": {"password": "x"}}),
            None,
        ),
        (
            "pull_image",
            json!({"image": "app:-bad"}),
            Some("INVALID_REFERENCE"),
        ),
        (
            "pull_image",
            json!({"image": "app", "platform": "linux//amd64"}),
            Some("INVALID_PLATFORM"),
        ),
        (
            "tag_image",
            json!({"source": "app:1", "target": format!("b@sha256:{hex}")}),
            Some("INVALID_REFERENCE"),
        ),
        (
            "tag_image",
            json!({"source": "UP:1", "target": "b"}),
            Some("INVALID_REFERENCE"),
        ),
        (
            "build_image",
            json!({"context": fixture("app"), "tags": ["ok:1", "Not Ok"]}),
            Some("INVALID_REFERENCE"),
        ),
        (
            "run_container",
            json!({"image": "app", "run": "x", "command": ["y"]}),
            None,
        ),
        (
            "run_container",
            json!({"image": "app", "memory": "2m"}),
            Some("INVALID_LIMIT"),
        ),
        (
            "run_container",
            json!({"image": "app", "cpus": 0}),
            Some("INVALID_LIMIT"),
        ),
        (
            "run_container",
            json!({"image": "app", "workdir": "rel"}),
            None,
        ),
        (
            "run_container",
            json!({"image": "app", "mounts": [{"source": "/etc", "target": "/x"}]}),
            Some("MOUNT_OUTSIDE_PROJECT"),
        ),
        (
            "run_container",
            json!({"image": "app", "mounts": [{"source": ".", "target": "/workspace"}]}),
            None,
        ),
        (
            "check_registry_auth",
            json!({"registry": ""}),
            Some("INVALID_REGISTRY"),
        ),
        (
            "check_registry_auth",
            json!({"registry": "bad host!"}),
            Some("INVALID_REGISTRY"),
        ),
        ("push_image", json!({"image": "app", "bogus": 1}), None),
    ] {
        let e = c.call(tool, args.clone()).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput, "{tool} {args}: {e}");
        assert_eq!(e.code.as_deref(), code, "{tool} {args}: {e}");
    }
    let e = c
        .call(
            "run_container",
            json!({"image": "app", "mounts": [{"source": "nope", "target": "/x"}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::NotFound, Some("MOUNT_NOT_FOUND"))
    );
    let e = c
        .call("build_image", json!({"context": "no-such-dir"}))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("CONTEXT_NOT_FOUND"));
    let e = c
        .call(
            "build_image",
            json!({"context": fixture("app"), "dockerfile": "Nope"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("DOCKERFILE_NOT_FOUND"));
}

// ---- the engine ----------------------------------------------------------------------------

#[tokio::test]
async fn build_tag_push_remove_pull_run() {
    let s = need_services!();
    let c = Case::new("roundtrip");
    let mut images = Images::default();
    let local = images.add(&format!("ckflow-test-app:{}", unique("t")));
    let remote = images.add(&format!("{}/ckflow-test/app:{}", s.registry, unique("t")));

    // build: COPY and RUN, with a .dockerignore
    let built = c
        .call(
            "build_image",
            json!({
                "context": fixture("app"),
                "tags": [local],
                "build_args": {"NONCE": unique("nonce")},
                "labels": {"ckflow.test": "roundtrip"},
                "no_cache": true
            }),
        )
        .await
        .unwrap();
    let id = built["image_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sha256:"), "{built}");
    assert_eq!(built["tags"], json!([local]));
    let log = c.lines("stdout");
    assert!(
        log.iter().any(|l| l == "Step 1/6 : FROM ckflow-base:1"),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("Step 4/6 : RUN echo")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l == "made by RUN"),
        "the RUN's output is streamed: {log:?}"
    );

    // tag for the registry, by id
    let tagged = c
        .call("tag_image", json!({"source": id, "target": remote}))
        .await
        .unwrap();
    assert_eq!(tagged, json!({"target": remote, "image_id": id}));

    // push, with per-layer progress
    let pushed = c
        .call("push_image", json!({"image": remote}))
        .await
        .unwrap();
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{pushed}"
    );
    assert_eq!(pushed["registry"], s.registry.as_str());
    let parts = c.parts();
    assert!(
        parts
            .iter()
            .any(|(id, st)| !id.is_empty() && st == "Preparing"),
        "{parts:?}"
    );
    // Every layer ends pushed, or already there (another run may have pushed the same).
    for (id, _) in parts.iter().filter(|(_, st)| st == "Preparing") {
        assert!(
            parts.iter().any(|(i, st)| i == id
                && (st == "Pushed"
                    || st == "Layer already exists"
                    || st.starts_with("Mounted from"))),
            "layer {id}: {parts:?}"
        );
    }

    // gone locally, then pulled back: layers are downloaded again
    remove_images(&[&local, &remote]).await;
    assert!(docker().await.inspect_image(&remote).await.is_err());
    let before = c.parts().len();
    let pulled = c
        .call("pull_image", json!({"image": remote}))
        .await
        .unwrap();
    assert_eq!(pulled["image_id"], id.as_str(), "the same image comes back");
    assert_eq!(pulled["digest"], digest.as_str());
    let parts = c.parts()[before..].to_vec();
    assert!(
        parts.iter().any(|(_, st)| st == "Pull complete"),
        "the layers built here are downloaded again: {parts:?}"
    );

    // run it: COPY'd files are there, the .dockerignore'd ones are not
    let ran = c
        .call(
            "run_container",
            json!({"image": remote, "run": "/app/hello.sh; cat /app/built.txt; cd /app && ls -A . notes"}),
        )
        .await
        .unwrap();
    let out = ran["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("hello from the ckflow test image\nmade by RUN\n"),
        "{out}"
    );
    for present in ["Dockerfile", "hello.sh", ".dockerignore", "keep.md"] {
        assert!(out.lines().any(|l| l == present), "{present} in {out}");
    }
    for absent in ["secret.txt", "debug.log", "draft.md"] {
        assert!(
            !out.contains(absent),
            "{absent} must not be in the image: {out}"
        );
    }
    assert_eq!(ran["exit_code"], 0);
    // the image's own command, by id
    let ran = c.call("run_container", json!({"image": id})).await.unwrap();
    assert_eq!(ran["stdout"], "hello from the ckflow test image\n");
    c.assert_no_container(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pulling_a_missing_image_is_not_found() {
    let s = need_services!();
    let c = Case::new("pull-missing");
    let e = c
        .call(
            "pull_image",
            json!({"image": format!("{}/ckflow-test/nothing:here", s.registry)}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::NotFound, Some("IMAGE_NOT_FOUND")),
        "{e}"
    );
    assert_eq!(e.details.unwrap()["registry"], s.registry.as_str());
    // pushing what is not there locally
    let e = c
        .call(
            "push_image",
            json!({"image": format!("{}/ckflow-test/{}", s.registry, unique("none"))}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("IMAGE_NOT_FOUND"), "{e}");
    // a registry that does not answer is transient (retried by the default rule)
    let e = c
        .call(
            "pull_image",
            json!({"image": "127.0.0.1:1/ckflow-test/x:1"}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::Transient, Some("TRANSIENT")),
        "{e}"
    );
}

#[tokio::test]
async fn push_with_credentials_from_auths() {
    let s = need_services!();
    let mut c = Case::new("auths");
    let cfg = docker_config(
        &c,
        json!({"auths": {format!("http://{}", s.auth_registry): {"auth": b64(&format!("{}:{}", s.user, s.password))}}}),
    );
    c.ctx
        .env
        .insert("DOCKER_CONFIG".into(), cfg.display().to_string());
    let image = format!("{}/ckflow-test/base:{}", s.auth_registry, unique("auths"));
    let _images = Images(vec![image.clone()]);
    tag_base(&c, s, &image).await;
    let pushed = c.call("push_image", json!({"image": image})).await.unwrap();
    assert!(pushed["digest"].as_str().unwrap().starts_with("sha256:"));
    let check = c
        .call("check_registry_auth", json!({"registry": s.auth_registry}))
        .await
        .unwrap();
    assert_eq!(check["authenticated"], true, "{check}");
    assert_eq!(check["source"], "config");
    // and back
    remove_images(&[&image]).await;
    let pulled = c.call("pull_image", json!({"image": image})).await.unwrap();
    assert!(pulled["image_id"].as_str().unwrap().starts_with("sha256:"));
    assert!(!c.everything().contains(&s.password));
}

#[tokio::test]
async fn push_with_step_auth_and_none() {
    let s = need_services!();
    let c = Case::new("step-auth");
    let image = format!("{}/ckflow-test/base:{}", s.auth_registry, unique("step"));
    let _images = Images(vec![image.clone()]);
    tag_base(&c, s, &image).await;
    // no credentials at all: refused, and the message says how to fix it
    let e = c
        .call("push_image", json!({"image": image}))
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::AuthFailed, Some("AUTH_FAILED")),
        "{e}"
    );
    assert!(e.message.contains("no credentials for"), "{}", e.message);
    assert_eq!(e.details.as_ref().unwrap()["credentials_from"], "none");
    let check = c
        .call("check_registry_auth", json!({"registry": s.auth_registry}))
        .await
        .unwrap();
    assert_eq!(
        (check["authenticated"].clone(), check["source"].clone()),
        (json!(false), json!("none")),
        "{check}"
    );
    // the step's own credentials
    let auth = json!({"username": s.user, "password": s.password});
    c.call("push_image", json!({"image": image, "auth": auth}))
        .await
        .unwrap();
    let check = c
        .call(
            "check_registry_auth",
            json!({"registry": format!("https://{}/v2/", s.auth_registry), "auth": auth}),
        )
        .await
        .unwrap();
    assert_eq!(
        (check["authenticated"].clone(), check["source"].clone()),
        (json!(true), json!("step")),
        "{check}"
    );
    assert_eq!(check["registry"], s.auth_registry.as_str());
    // a registry without auth accepts anyone
    let check = c
        .call("check_registry_auth", json!({"registry": s.registry}))
        .await
        .unwrap();
    assert_eq!(check["authenticated"], true, "{check}");
    assert!(!c.everything().contains(&s.password));
}

#[tokio::test]
async fn a_wrong_password_is_auth_failed_secret_free_and_routed() {
    let s = need_services!();
    let mut c = Case::new("wrong-password");
    let wrong = "Wr0ng-Pa55word-Never-Shown";
    let cfg = docker_config(
        &c,
        json!({"auths": {s.auth_registry.clone(): {"username": s.user, "password": wrong}}}),
    );
    c.ctx
        .env
        .insert("DOCKER_CONFIG".into(), cfg.display().to_string());
    let image = format!("{}/ckflow-test/base:{}", s.auth_registry, unique("wrong"));
    let _images = Images(vec![image.clone()]);
    tag_base(&c, s, &image).await;
    let e = c
        .call("push_image", json!({"image": image}))
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::AuthFailed, Some("AUTH_FAILED")),
        "{e}"
    );
    let details = e.details.clone().unwrap();
    assert_eq!(details["registry"], s.auth_registry.as_str());
    assert_eq!(details["image"], image.as_str());
    assert_eq!(details["credentials_from"], "config");
    let all = format!("{e:?} {e} {}", serde_json::to_string(&e).unwrap());
    assert!(!all.contains(wrong), "the password leaked: {all}");
    assert!(!all.contains(&b64(&format!("{}:{wrong}", s.user))), "{all}");

    // the default rule: auth_failed of push_image goes to check_registry_auth
    let push = c.ctx.registry.tool("push_image").unwrap();
    let rule = push
        .default_rules()
        .into_iter()
        .find(|r| r.matcher.error.iter().any(|x| x == e.class.as_str()))
        .expect("a default rule for auth_failed");
    let route = rule.route.unwrap();
    assert_eq!(route.tool, "check_registry_auth");
    // what the route's templates render to, given the failure (SPEC §1.3 `failed`)
    let failed = json!({"failed": {
        "step": "push", "tool": "push_image", "attempts": 1,
        "error": serde_json::to_value(&e).unwrap()
    }});
    let args = ckflow::template::render_value(&Value::Object(route.with), &failed).unwrap();
    assert_eq!(args, json!({"registry": s.auth_registry}));
    let check = c.call(&route.tool, args).await.unwrap();
    assert_eq!(check["authenticated"], false, "{check}");
    assert_eq!(check["source"], "config");
    assert!(
        check["message"].as_str().unwrap().contains("401"),
        "{check}"
    );
    // a wrong password given by the step, as a secret input would be
    let mut c2 = Case::new("wrong-step-password");
    c2.ctx.secrets = Arc::new(vec![wrong.to_owned()]);
    let auth = json!({"username": s.user, "password": wrong});
    let e = c2
        .call("push_image", json!({"image": image, "auth": auth}))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::AuthFailed);
    let check = c2
        .call(
            "check_registry_auth",
            json!({"registry": s.auth_registry, "auth": auth}),
        )
        .await
        .unwrap();
    let all = format!("{e:?} {check} {} {}", c.everything(), c2.everything());
    assert!(!all.contains(wrong), "the password leaked: {all}");
}

/// `credsStore`: a helper script on PATH. Credential helpers come from ckflow's own PATH
/// (a workflow cannot choose it), so this runs in a child process of the test binary with
/// the helper's folder on PATH.
#[tokio::test]
async fn push_with_a_creds_store_helper() {
    let s = need_services!();
    let c = Case::new("creds-store");
    let bin = c.dir().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-ckflowtest");
    let log = c.dir().join("helper.log");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server\necho \"$server\" >> '{log}'\n\
             if [ \"$server\" = '{reg}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{pw}\"}}' \"$server\"\n\
             else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            log = log.display(),
            reg = s.auth_registry,
            user = s.user,
            pw = s.password
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = docker_config(&c, json!({"credsStore": "ckflowtest"}));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "creds_store_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PATH", path)
        .env("DOCKER_CONFIG", &cfg)
        .env("CKFLOW_DOCKER_TEST_CHILD", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the child failed:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
    assert!(!text.contains(&s.password), "{text}");
    let asked = std::fs::read_to_string(&log).unwrap();
    assert!(asked.lines().any(|l| l == s.auth_registry), "{asked}");
}

/// The child of [`push_with_a_creds_store_helper`]; does nothing on its own.
#[tokio::test]
async fn creds_store_child() {
    if std::env::var("CKFLOW_DOCKER_TEST_CHILD").is_err() {
        return;
    }
    let s = need_services!();
    let c = Case::new("creds-store-child");
    let image = format!("{}/ckflow-test/base:{}", s.auth_registry, unique("store"));
    let _images = Images(vec![image.clone()]);
    tag_base(&c, s, &image).await;
    let pushed = c.call("push_image", json!({"image": image})).await.unwrap();
    assert!(pushed["digest"].as_str().unwrap().starts_with("sha256:"));
    let check = c
        .call("check_registry_auth", json!({"registry": s.auth_registry}))
        .await
        .unwrap();
    assert_eq!(
        (check["authenticated"].clone(), check["source"].clone()),
        (json!(true), json!("credsStore")),
        "{check}"
    );
    // a registry the helper does not know falls back to `auths` (none here): anonymous
    let check = c
        .call("check_registry_auth", json!({"registry": s.registry}))
        .await
        .unwrap();
    assert_eq!(check["source"], "none", "{check}");
}

#[tokio::test]
async fn a_broken_dockerfile_is_dockerfile_invalid() {
    let _s = need_services!();
    let c = Case::new("broken");
    let e = c
        .call("build_image", json!({"context": fixture("broken")}))
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::BuildFailed, Some("DOCKERFILE_INVALID")),
        "{e}"
    );
    assert!(
        e.message.contains("unknown instruction: FROOM"),
        "{}",
        e.message
    );
    assert_eq!(e.details.unwrap()["line"], 3);
}

#[tokio::test]
async fn a_failing_run_is_build_failed() {
    let _s = need_services!();
    let c = Case::new("failing");
    let e = c
        .call(
            "build_image",
            json!({"context": fixture("failing"), "tags": [format!("ckflow-test-never:{}", unique("t"))]}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::BuildFailed, Some("BUILD_FAILED")),
        "{e}"
    );
    assert!(e.message.contains("RUN false"), "{}", e.message);
    let d = e.details.clone().unwrap();
    assert_eq!(d["instruction"], "RUN false");
    assert_eq!(d["step"], "2/3");
    assert_eq!(d["exit_code"], 1);
    assert!(
        d["log"].as_str().unwrap().contains("Step 2/3 : RUN false"),
        "{d}"
    );
    // the default rule routes it to validate_dockerfile with the absolute Dockerfile path
    let rule = ToolRegistry::builtin()
        .tool("build_image")
        .unwrap()
        .default_rules()[0]
        .clone();
    let route = rule.route.unwrap();
    let failed = json!({"failed": {
        "step": "build", "tool": "build_image", "attempts": 1,
        "error": serde_json::to_value(&e).unwrap()
    }});
    let args = ckflow::template::render_value(&Value::Object(route.with), &failed).unwrap();
    let path = args["path"].as_str().unwrap().to_owned();
    assert!(
        std::path::Path::new(&path).is_absolute() && path.ends_with("Dockerfile"),
        "{args}"
    );
    let report = c.call(&route.tool, args).await.unwrap();
    assert!(report["findings"].is_array(), "{report}");
    // streamed as it ran
    assert!(
        c.lines("stdout")
            .iter()
            .any(|l| l == "Step 1/3 : FROM ckflow-base:1")
    );
    // its intermediate container is gone (`forcerm`)
    let log = d["log"].as_str().unwrap();
    let id = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("---> Running in "))
        .expect("the log names the RUN's container")
        .trim()
        .to_owned();
    assert!(
        docker().await.inspect_container(&id, None).await.is_err(),
        "{id} was left"
    );
}

#[tokio::test]
async fn a_private_base_image_is_pulled_with_config_credentials() {
    let s = need_services!();
    let mut c = Case::new("private-base");
    // A base image of its own in the registry with auth, absent locally.
    let mut images = Images::default();
    let base = images.add(&format!(
        "{}/ckflow-test/private-base:{}",
        s.auth_registry,
        unique("t")
    ));
    tag_base(&c, s, &base).await;
    let auth = json!({"username": s.user, "password": s.password});
    c.call("push_image", json!({"image": base, "auth": auth}))
        .await
        .unwrap();
    remove_images(&[&base]).await;
    let marker = unique("private");
    let ctx_dir = c.dir().join("ctx");
    std::fs::create_dir_all(&ctx_dir).unwrap();
    std::fs::write(
        ctx_dir.join("Dockerfile"),
        format!("FROM {base}\nRUN echo built-on-{marker}\n"),
    )
    .unwrap();
    // Without credentials the `FROM` pull is refused.
    let e = c
        .call("build_image", json!({"context": ctx_dir}))
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::AuthFailed, Some("AUTH_FAILED")),
        "{e}"
    );
    assert_eq!(e.details.unwrap()["instruction"], format!("FROM {base}"));
    // With them (config.json `auths`), the builder pulls it.
    let cfg = docker_config(
        &c,
        json!({"auths": {s.auth_registry.clone(): {"auth": b64(&format!("{}:{}", s.user, s.password))}}}),
    );
    c.ctx
        .env
        .insert("DOCKER_CONFIG".into(), cfg.display().to_string());
    let built = c
        .call("build_image", json!({"context": ctx_dir}))
        .await
        .unwrap();
    images.add(built["image_id"].as_str().unwrap());
    assert_eq!(built["tags"], json!([]));
    assert!(
        c.lines("stdout")
            .iter()
            .any(|l| *l == format!("built-on-{marker}"))
    );
    assert!(!c.everything().contains(&s.password));
}

#[tokio::test]
async fn cancelling_a_build_leaves_no_container() {
    let s = need_services!();
    let c = Case::new("build-cancel");
    let marker = unique("marker");
    let ctx_dir = c.dir().join("ctx");
    std::fs::create_dir_all(&ctx_dir).unwrap();
    std::fs::write(
        ctx_dir.join("Dockerfile"),
        format!("FROM {}\nRUN sleep 30 # {marker}\n", s.base),
    )
    .unwrap();
    let cancel = c.ctx.cancel.clone();
    let task = tokio::spawn({
        let ctx = c.ctx.clone();
        let tool = ctx.registry.tool("build_image").unwrap();
        async move { tool.call(json!({"context": ctx_dir}), ctx).await }
    });
    let d = docker().await;
    let running = || async {
        d.list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_iter()
        .filter(|x| {
            x.command
                .as_deref()
                .is_some_and(|cmd| cmd.contains(&marker))
        })
        .count()
    };
    let start = Instant::now();
    while running().await == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the build never started its RUN"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    let e = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Cancelled);
    let start = Instant::now();
    while running().await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the build's container was left behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_missing_image_is_pulled_before_running() {
    let s = need_services!();
    let c = Case::new("run-pull");
    // Its own name for the base image in the plain registry, gone locally.
    let image = format!("{}/ckflow-test/run-pull:{}", s.registry, unique("t"));
    let _images = Images(vec![image.clone()]);
    tag_base(&c, s, &image).await;
    c.call("push_image", json!({"image": image})).await.unwrap();
    remove_images(&[&image]).await;
    let r = c
        .call(
            "run_container",
            json!({"image": image, "run": "echo pulled and ran"}),
        )
        .await
        .unwrap();
    assert_eq!(r["stdout"], "pulled and ran\n");
    assert!(
        c.lines("stdout")
            .iter()
            .any(|l| l.starts_with("Digest: sha256:")),
        "{:?}",
        c.lines("stdout")
    );
    let e = c
        .call(
            "run_container",
            json!({"image": format!("{}/ckflow-test/absent:1", s.registry), "run": "true"}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::NotFound, Some("IMAGE_NOT_FOUND")),
        "{e}"
    );
    c.assert_no_container(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_sandbox_defaults() {
    let s = need_services!();
    let c = Case::new("sandbox");
    let script = r#"
        echo "net: $(ls /sys/class/net | tr '\n' ' ')"
        if touch /rootfs-probe 2>/dev/null; then echo "root: writable"; else echo "root: read-only"; fi
        echo tmp > /tmp/probe && echo "tmp: writable"
        grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status | tr -s '\t ' ' '
        echo "mem: $(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
        echo "pids: $(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)"
        echo "ws: $CKFLOW_WORKSPACE $(pwd)"
        echo hello > /workspace/from-container.txt
        wget -q -T 2 -O /dev/null http://1.1.1.1/ 2>&1 || echo "connect: failed"
        echo to-stderr >&2
    "#;
    let r = c
        .call(
            "run_container",
            json!({"image": s.base, "run": script, "workdir": "/workspace"}),
        )
        .await
        .unwrap();
    let out = r["stdout"].as_str().unwrap();
    for want in [
        "net: lo \n",
        "root: read-only\n",
        "tmp: writable\n",
        "CapEff: 0000000000000000\n",
        "CapBnd: 0000000000000000\n",
        "NoNewPrivs: 1\n",
        &format!("mem: {}\n", 512 << 20),
        "pids: 256\n",
        "ws: /workspace /workspace\n",
        "connect: failed\n",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    assert_eq!(r["stderr"], "to-stderr\n");
    assert_eq!(
        std::fs::read_to_string(c.ctx.workspace.join("from-container.txt")).unwrap(),
        "hello\n"
    );
    // streamed as it ran
    assert!(c.lines("stdout").iter().any(|l| l == "tmp: writable"));
    assert_eq!(c.lines("stderr"), ["to-stderr"]);
    c.assert_no_container(Duration::from_secs(5)).await;

    // a step may loosen it
    std::fs::write(c.dir().join("data.txt"), "from the project\n").unwrap();
    let r = c
        .call(
            "run_container",
            json!({
                "image": s.base,
                "command": ["sh", "-c", "ls /sys/class/net | grep -c . ; touch /home/app/x && echo root-rw; cat /data/data.txt; echo $GREETING; id -u"],
                "network": "bridge",
                "read_only": false,
                "user": "1000:1000",
                "env": {"GREETING": "hi"},
                "mounts": [{"source": "data.txt", "target": "/data/data.txt"}]
            }),
        )
        .await
        .unwrap();
    let out = r["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("2\nroot-rw\nfrom the project\nhi\n1000\n"),
        "{out}"
    );
}

#[tokio::test]
async fn exit_codes_and_output_capture() {
    let s = need_services!();
    let c = Case::new("exit");
    let e = c
        .call(
            "run_container",
            json!({"image": s.base, "run": "echo out; echo 'it broke' >&2; exit 3"}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::ExitCode, Some("EXIT_3"))
    );
    assert_eq!(e.message, "exit code 3: it broke");
    let d = e.details.unwrap();
    assert_eq!(
        (
            d["exit_code"].clone(),
            d["stdout"].clone(),
            d["stderr"].clone()
        ),
        (json!(3), json!("out\n"), json!("it broke\n"))
    );
    // capture is capped at 1 MiB with a mark, the stream still carries everything
    let before = c.lines("stdout").len();
    let r = c
        .call(
            "run_container",
            json!({"image": s.base, "run": "head -c 1100000 /dev/zero | tr '\\0' a"}),
        )
        .await
        .unwrap();
    let out = r["stdout"].as_str().unwrap();
    assert!(
        out.ends_with(&format!("\n…[truncated {} bytes]", 1_100_000 - (1 << 20))),
        "{}",
        &out[out.len() - 60..]
    );
    let streamed: usize = c.lines("stdout")[before..].iter().map(String::len).sum();
    assert_eq!(streamed, 1_100_000);
    // secrets never come back
    let mut c2 = Case::new("exit-secret");
    c2.ctx.secrets = Arc::new(vec!["s3cr3t-value".into()]);
    let r = c2
        .call(
            "run_container",
            json!({"image": s.base, "run": "echo s3cr3t-value", "env": {"X": "s3cr3t-value"}}),
        )
        .await
        .unwrap();
    assert_eq!(r["stdout"], "***\n");
    c.assert_no_container(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_memory_limit_stops_a_hungry_process() {
    let s = need_services!();
    let c = Case::new("oom");
    let e = c
        .call(
            "run_container",
            json!({"image": s.base, "memory": "32m", "run": "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::ExitCode, Some("OOM_KILLED")),
        "{e}"
    );
    let d = e.details.clone().unwrap();
    assert_eq!(
        (d["exit_code"].clone(), d["oom_killed"].clone()),
        (json!(137), json!(true)),
        "{d}"
    );
    assert!(e.message.contains("32m"), "{}", e.message);
    c.assert_no_container(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_pids_limit_stops_a_fork_bomb() {
    let s = need_services!();
    let c = Case::new("pids");
    let r = c
        .call(
            "run_container",
            json!({"image": s.base, "pids": 16, "run": "i=0; while [ $i -lt 40 ]; do sleep 3 & i=$((i+1)); done; echo all-started"}),
        )
        .await;
    let text = match &r {
        Ok(v) => format!("{}{}", v["stdout"], v["stderr"]),
        Err(e) => format!("{e:?}"),
    };
    assert!(text.contains("can't fork"), "{text}");
    assert!(
        !text.contains("all-started"),
        "40 processes started under a limit of 16: {text}"
    );
    c.assert_no_container(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cancel_kills_and_removes_the_container() {
    let s = need_services!();
    let c = Case::new("cancel");
    let cancel = c.ctx.cancel.clone();
    let task = tokio::spawn({
        let ctx = c.ctx.clone();
        let tool = ctx.registry.tool("run_container").unwrap();
        async move {
            tool.call(json!({"image": s.base, "run": "sleep 30"}), ctx)
                .await
        }
    });
    // running: the container exists
    let start = Instant::now();
    while c.containers().await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the container never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(start.elapsed())).await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    let e = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("cancel returns promptly")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Cancelled);
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    // removed before the call returned
    assert!(c.containers().await.is_empty());
}

#[tokio::test]
async fn a_dropped_call_leaves_no_container() {
    let s = need_services!();
    let c = Case::new("dropped");
    let tool = c.ctx.registry.tool("run_container").unwrap();
    let mut fut = tool.call(json!({"image": s.base, "run": "sleep 30"}), c.ctx.clone());
    let start = Instant::now();
    loop {
        tokio::select! {
            r = &mut fut => panic!("the container ended early: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if !c.containers().await.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the container never appeared"
        );
    }
    drop(fut);
    c.assert_no_container(Duration::from_secs(10)).await;
}

// ---- the example workflow ----------------------------------------------------------------

#[test]
fn the_example_workflow_validates_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_ckflow");
    let file = "examples/docker/build-test-push.yaml";
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin)
        .args([
            "--state-dir",
            &state.path().display().to_string(),
            "validate",
            file,
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let Some(s) = services() else { return };
    let has_run = std::process::Command::new(bin)
        .args(["run", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_run {
        eprintln!("skipped running the example: this ckflow has no `run` yet");
        return;
    }
    let tag = unique("example");
    let _images = Images(vec![
        format!("ckflow-example-greet:{tag}"),
        format!("{}/ckflow-example/greet:{tag}", s.registry),
    ]);
    let out = std::process::Command::new(bin)
        .args([
            "--state-dir",
            &state.path().display().to_string(),
            "run",
            file,
            "--json",
        ])
        .args([
            "-i",
            &format!("registry={}", s.registry),
            "-i",
            &format!("tag={tag}"),
        ])
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ckflow run failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "succeeded", "{report}");
    let digest = &report["steps"]["push"]["outputs"]["digest"];
    assert!(
        digest.as_str().is_some_and(|d| d.starts_with("sha256:")),
        "{report}"
    );
}
