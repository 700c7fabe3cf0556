//! `analyze_repository` as a workflow step calls it: through the built-in registry, with
//! `with:` checked against the tool's input schema, on the small real projects under
//! `tests/projects/` (one per language family, plus an unclassifiable folder and one with
//! its own Dockerfile). Each result is an insta snapshot; the facts a Dockerfile depends on
//! are also asserted beside it, so a snapshot accepted by mistake still fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ckflow::{ToolContext, ToolRegistry};
use serde_json::{Value, json};

fn projects() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/projects")
}

/// Call the tool with `args`, the projects folder as the project folder.
async fn call(args: Value) -> Result<Value, ckflow::ToolError> {
    let registry = Arc::new(ToolRegistry::builtin());
    let entry = registry
        .get("analyze_repository")
        .expect("analyze_repository is a built-in tool");
    let validator = entry.input_validator().expect("the input schema compiles");
    assert!(validator.is_valid(&args), "`with:` {args} is rejected");
    let tool = entry.tool.clone();
    let ctx = ToolContext::detached(registry.clone(), projects());
    tool.call(args, ctx).await
}

/// What a project must give, besides its snapshot.
struct Expect {
    project: &'static str,
    language: Option<&'static str>,
    build_system: Option<&'static str>,
    framework: Option<&'static str>,
    entrypoint: Option<&'static str>,
    version: Option<&'static str>,
    ports: &'static [u16],
    test_command: Option<&'static str>,
    dockerfile: Option<&'static str>,
}

const EXPECT: &[Expect] = &[
    Expect {
        project: "dotnet-web",
        language: Some("csharp"),
        build_system: Some("dotnet"),
        framework: Some("aspnetcore"),
        entrypoint: Some("WebApi.dll"),
        version: Some("net8.0"),
        ports: &[5080],
        test_command: None,
        dockerfile: None,
    },
    Expect {
        project: "go-api",
        language: Some("go"),
        build_system: Some("go"),
        framework: None,
        entrypoint: Some("."),
        version: Some("1.22"),
        ports: &[8081],
        test_command: Some("go test ./..."),
        dockerfile: None,
    },
    Expect {
        project: "gradle-kotlin",
        language: Some("kotlin"),
        build_system: Some("gradle"),
        framework: Some("ktor"),
        entrypoint: Some("build/install/ktor-hello/bin/ktor-hello"),
        version: Some("21"),
        ports: &[8083],
        test_command: Some("gradle test"),
        dockerfile: None,
    },
    Expect {
        project: "java-maven",
        language: Some("java"),
        build_system: Some("maven"),
        framework: Some("spring-boot"),
        entrypoint: Some("target/demo-0.0.1-SNAPSHOT.jar"),
        version: Some("21"),
        ports: &[8082],
        test_command: Some("mvn test"),
        dockerfile: None,
    },
    Expect {
        project: "node-express",
        language: Some("javascript"),
        build_system: Some("npm"),
        framework: Some("express"),
        entrypoint: Some("server.js"),
        version: Some("20"),
        ports: &[3000],
        test_command: Some("npm test"),
        dockerfile: None,
    },
    Expect {
        project: "node-ts-pnpm",
        language: Some("typescript"),
        build_system: Some("pnpm"),
        framework: Some("fastify"),
        entrypoint: Some("dist/index.js"),
        version: Some("20"),
        ports: &[4000],
        test_command: Some("pnpm test"),
        dockerfile: None,
    },
    Expect {
        project: "python-flask",
        language: Some("python"),
        build_system: Some("pip"),
        framework: Some("flask"),
        entrypoint: Some("app.py"),
        version: Some("3.12"),
        ports: &[5000],
        test_command: Some("pytest"),
        dockerfile: None,
    },
    Expect {
        project: "python-poetry",
        language: Some("python"),
        build_system: Some("poetry"),
        framework: Some("fastapi"),
        entrypoint: Some("app.main:app"),
        version: Some("3.11"),
        ports: &[8001],
        test_command: Some("poetry run pytest"),
        dockerfile: None,
    },
    Expect {
        project: "rust-axum",
        language: Some("rust"),
        build_system: Some("cargo"),
        framework: Some("axum"),
        entrypoint: Some("hello-axum"),
        version: Some("1.78"),
        ports: &[8080],
        test_command: Some("cargo test"),
        dockerfile: None,
    },
    Expect {
        project: "unknown",
        language: None,
        build_system: None,
        framework: None,
        entrypoint: None,
        version: None,
        ports: &[],
        test_command: None,
        dockerfile: None,
    },
    Expect {
        project: "with-dockerfile",
        language: Some("go"),
        build_system: Some("go"),
        framework: None,
        entrypoint: Some("."),
        version: Some("1.23"),
        ports: &[9090],
        test_command: None,
        dockerfile: Some("Dockerfile"),
    },
];

async fn check(project: &str) {
    let e = EXPECT
        .iter()
        .find(|e| e.project == project)
        .unwrap_or_else(|| panic!("no expectation for {project}"));
    let out = call(json!({"path": project}))
        .await
        .unwrap_or_else(|err| panic!("{project}: {err}"));
    let text = |k: &str| out[k].as_str();
    assert_eq!(
        out["classified"],
        e.language.is_some(),
        "{project}: classified"
    );
    assert_eq!(text("language"), e.language, "{project}: language");
    assert_eq!(
        text("build_system"),
        e.build_system,
        "{project}: build_system"
    );
    assert_eq!(text("framework"), e.framework, "{project}: framework");
    assert_eq!(text("entrypoint"), e.entrypoint, "{project}: entrypoint");
    assert_eq!(text("version"), e.version, "{project}: version");
    assert_eq!(out["ports"], json!(e.ports), "{project}: ports");
    assert_eq!(
        text("test_command"),
        e.test_command,
        "{project}: test_command"
    );
    assert_eq!(text("dockerfile"), e.dockerfile, "{project}: dockerfile");
    assert_eq!(
        out["notes"],
        json!([]),
        "{project}: a clean project leaves no note"
    );

    let registry = ToolRegistry::builtin();
    let schema = registry
        .tool("analyze_repository")
        .map(|t| t.output_schema())
        .expect("registered");
    let output = jsonschema::draft202012::new(&schema).expect("the output schema compiles");
    assert!(
        output.is_valid(&out),
        "{project}: output breaks its schema: {out:#}"
    );
    insta::assert_json_snapshot!(project, out);
}

#[tokio::test]
async fn rust_axum() {
    check("rust-axum").await;
}

#[tokio::test]
async fn go_api() {
    check("go-api").await;
}

#[tokio::test]
async fn node_express() {
    check("node-express").await;
}

#[tokio::test]
async fn node_ts_pnpm() {
    check("node-ts-pnpm").await;
}

#[tokio::test]
async fn python_flask() {
    check("python-flask").await;
}

#[tokio::test]
async fn python_poetry() {
    check("python-poetry").await;
}

#[tokio::test]
async fn java_maven() {
    check("java-maven").await;
}

#[tokio::test]
async fn gradle_kotlin() {
    check("gradle-kotlin").await;
}

#[tokio::test]
async fn dotnet_web() {
    check("dotnet-web").await;
}

#[tokio::test]
async fn unknown_is_not_classified() {
    check("unknown").await;
}

#[tokio::test]
async fn with_dockerfile() {
    check("with-dockerfile").await;
}

/// A project folder without an expectation (and so without a snapshot) fails here.
#[test]
fn every_project_has_an_expectation() {
    let mut dirs: Vec<String> = std::fs::read_dir(projects())
        .expect("tests/projects exists")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    dirs.sort();
    let mut expected: Vec<&str> = EXPECT.iter().map(|e| e.project).collect();
    expected.sort_unstable();
    assert_eq!(dirs, expected);
}

#[tokio::test]
async fn a_missing_folder_is_not_found() {
    let err = call(json!({"path": "no-such-project"}))
        .await
        .expect_err("a missing folder is an error");
    let root = projects().display().to_string();
    let text = serde_json::to_string(&err)
        .expect("the error serialises")
        .replace(&root, "[PROJECTS]");
    let err: Value = serde_json::from_str(&text).expect("still JSON");
    insta::assert_json_snapshot!("not_found", err);
}
