//! `generate_dockerfile` through the registry, on copies of the sample projects under
//! `tests/projects/`: the Dockerfile each one gets (snapshotted, and clean by
//! validate_dockerfile), the tool's result with the temporary folder redacted, the
//! refusals, and the `fix: true` recovery route the containerize workflow takes after a
//! failed build.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ckflow::tools::{ToolContext, ToolError, ToolRegistry};
use ckflow::workflow::model::ErrorClass;
use serde_json::{Value, json};

fn projects() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/projects")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A temporary project folder holding a copy of the sample `name` (as `name/`).
struct Sandbox {
    dir: tempfile::TempDir,
    registry: Arc<ToolRegistry>,
}

impl Sandbox {
    fn with(name: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&projects().join(name), &dir.path().join(name));
        Sandbox {
            dir,
            registry: Arc::new(ToolRegistry::builtin()),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let reg = self.registry.get("generate_dockerfile").unwrap();
        // the arguments are what a workflow's `with:` may say
        let validator = reg.input_validator().expect("the input schema compiles");
        assert!(validator.is_valid(&args), "{args} is refused by the schema");
        let ctx = ToolContext::detached(self.registry.clone(), self.dir.path().to_path_buf());
        reg.tool.call(args, ctx).await
    }

    /// `v` as JSON text with the temporary folder replaced by `[TMP]`.
    fn redact(&self, v: &Value) -> Value {
        let root = self.dir.path().display().to_string();
        let text = serde_json::to_string(v).unwrap().replace(&root, "[TMP]");
        serde_json::from_str(&text).unwrap()
    }

    fn check_output(&self, r: &Value) {
        let out = self
            .registry
            .tool("generate_dockerfile")
            .unwrap()
            .output_schema();
        let schema = jsonschema::draft202012::new(&out).unwrap();
        assert!(schema.is_valid(r), "{r:#}");
    }
}

/// Generate for the sample `name`; the Dockerfile text and the redacted result.
async fn generate(name: &str) -> (String, Value) {
    let sb = Sandbox::with(name);
    let r = sb
        .call(json!({"path": name}))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    sb.check_output(&r);
    let path = sb.path(name).join("Dockerfile");
    assert_eq!(r["path"], path.display().to_string());
    let text = std::fs::read_to_string(&path).unwrap();
    // clean: no error, no warning (a HEALTHCHECK-less image may have an info)
    assert_eq!(r["errors"], 0, "{name}: {r:#}");
    assert_eq!(r["warnings"], 0, "{name}: {r:#}");
    assert_eq!(r["valid"], true);
    assert_eq!(r["generated"], true);
    // nothing left behind by the atomic write
    let names: Vec<String> = std::fs::read_dir(sb.path(name))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    (text, sb.redact(&r))
}

macro_rules! project {
    ($test:ident, $name:literal) => {
        #[tokio::test]
        async fn $test() {
            let (text, result) = generate($name).await;
            insta::assert_snapshot!(concat!(stringify!($test), "_dockerfile"), text);
            insta::assert_json_snapshot!(concat!(stringify!($test), "_result"), result);
        }
    };
}

project!(rust_axum, "rust-axum");
project!(go_api, "go-api");
project!(node_express, "node-express");
project!(node_ts_pnpm, "node-ts-pnpm");
project!(python_flask, "python-flask");
project!(python_poetry, "python-poetry");
project!(java_maven, "java-maven");
project!(gradle_kotlin, "gradle-kotlin");
project!(dotnet_web, "dotnet-web");

#[tokio::test]
async fn an_unknown_project_is_refused_with_the_way_out() {
    let sb = Sandbox::with("unknown");
    let e = sb.call(json!({"path": "unknown"})).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::InvalidInput);
    assert_eq!(e.code.as_deref(), Some("UNSUPPORTED_PROJECT"));
    assert!(!sb.path("unknown/Dockerfile").exists());
    insta::assert_snapshot!(
        "unknown_message",
        e.message
            .replace(&sb.dir.path().display().to_string(), "[TMP]")
    );
    // the way out: a base image
    let r = sb
        .call(json!({"path": "unknown", "base_image": "nginx:1.27-alpine", "port": 80}))
        .await
        .unwrap();
    sb.check_output(&r);
    assert_eq!(r["errors"], 0);
    let text = std::fs::read_to_string(sb.path("unknown/Dockerfile")).unwrap();
    insta::assert_snapshot!("unknown_with_base_image", text);
}

#[tokio::test]
async fn an_existing_dockerfile_is_kept() {
    let sb = Sandbox::with("with-dockerfile");
    let before = std::fs::read_to_string(sb.path("with-dockerfile/Dockerfile")).unwrap();
    let e = sb
        .call(json!({"path": "with-dockerfile"}))
        .await
        .unwrap_err();
    assert_eq!(e.code.as_deref(), Some("DOCKERFILE_EXISTS"));
    assert_eq!(
        std::fs::read_to_string(sb.path("with-dockerfile/Dockerfile")).unwrap(),
        before
    );
    // `output` is relative to the project folder, not to `path`
    let r = sb
        .call(json!({"path": "with-dockerfile", "output": "generated/Dockerfile"}))
        .await
        .unwrap();
    assert_eq!(
        r["path"],
        sb.path("generated/Dockerfile").display().to_string()
    );
    assert!(sb.path("generated/Dockerfile").is_file());
    // and overwrite replaces it
    sb.call(json!({"path": "with-dockerfile", "overwrite": true}))
        .await
        .unwrap();
    assert_ne!(
        std::fs::read_to_string(sb.path("with-dockerfile/Dockerfile")).unwrap(),
        before
    );
}

/// What a build fails on: a typo'd instruction, a COPY of several files to a destination
/// without `/`, and a few things validate_dockerfile reports.
const BROKEN: &str = "\
# syntax=docker/dockerfile:1
# The echo service, written by hand.
FROM golang:1.23 AS build
WORKDIR /src
COPPY go.mod main.go /src
RUN CGO_ENABLED=0 go build -o /out/echo .

FORM debian:latest
MAINTAINER ops@example.com
RUN apt-get update && apt-get install curl
COPY --from=build /out/echo /usr/local/bin/echo
USER 10001
EXPOSE 9090
CMD /usr/local/bin/echo --port 9090
";

#[tokio::test]
async fn fix_repairs_a_dockerfile_that_does_not_build() {
    let sb = Sandbox::with("with-dockerfile");
    let path = sb.path("with-dockerfile/Dockerfile");
    std::fs::write(&path, BROKEN).unwrap();
    // as the containerize workflow routes a failed build (`base_image` input left empty)
    let r = sb
        .call(json!({"path": "with-dockerfile", "fix": true, "base_image": ""}))
        .await
        .unwrap();
    sb.check_output(&r);
    let text = std::fs::read_to_string(&path).unwrap();
    insta::assert_snapshot!("fix_broken_dockerfile", text);
    insta::assert_json_snapshot!("fix_broken_result", sb.redact(&r));
    assert_eq!(r["valid"], true, "{r:#}");
    // every line is still there, comments included
    assert_eq!(text.lines().count(), BROKEN.lines().count());
    assert!(text.starts_with("# syntax=docker/dockerfile:1\n# The echo service"));

    // with a base image, the `latest` runtime image is replaced too
    std::fs::write(&path, BROKEN).unwrap();
    let r = sb
        .call(json!({"path": "with-dockerfile", "fix": true, "base_image": "debian:bookworm-slim"}))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nFROM debian:bookworm-slim\n"), "{text}");
    assert_eq!(r["base_image"], "debian:bookworm-slim");
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["rule"] != "DL3007")
    );

    // fixed: a second failure has nothing to fix, so the workflow does not build again
    let e = sb
        .call(json!({"path": "with-dockerfile", "fix": true}))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ToolError);
    assert_eq!(e.code.as_deref(), Some("NOTHING_TO_FIX"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}
