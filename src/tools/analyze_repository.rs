//! `analyze_repository` (SPEC §5): what a folder holds (language, build system, entry
//! point, ports, test command, an existing Dockerfile), read from the files that are really
//! there and never guessed from the folder's name. `generate_dockerfile` builds on the
//! [`Analysis`] that [`analyze`] returns.
//!
//! **The walk.** A breadth-first listing of the folder: folders nested at most
//! [`MAX_DEPTH`] deep, at most [`MAX_FILES`] entries, sorted by name so results are stable.
//! Dependency and output folders (`node_modules`, `target`, `vendor`, `dist`, `build`,
//! `obj`, `venv`, `__pycache__`) and hidden folders (`.git`, `.venv`, …) are skipped.
//! Symbolic links to folders are never followed (so no loops); a link to a file counts only
//! when its target is inside the folder. At most [`MAX_READ`] bytes of a file are read; a
//! file that is not UTF-8 text is skipped with a note, never an error.
//!
//! **Detectors.** One per family reads the build manifests at the folder's root: Cargo
//! (`Cargo.toml`), Go (`go.mod`), Maven (`pom.xml`) and Gradle (`build.gradle[.kts]`,
//! `settings.gradle[.kts]`), .NET (`*.csproj`, `*.fsproj`, or the projects a `*.sln`
//! lists), Python (`pyproject.toml`, `requirements*.txt`, `setup.py`, `setup.cfg`,
//! `Pipfile`) and Node (`package.json`). TOML, `go.mod`, XML and JSON are read by small
//! careful parsers of this module (serde_json for JSON): a malformed manifest gives a note,
//! the detector keeps what it could read.
//!
//! **The main language** when the root holds manifests of several families: a compiled
//! family's manifest (Cargo, Go, Maven/Gradle, .NET) wins over Python and Node ones, which
//! are usually tooling beside it; within the same tier the family with the most source
//! files wins, then the order Rust, Go, Java/Kotlin, .NET, Python, Node. `languages` lists
//! the main language, then the other manifests' languages, then every language whose
//! source files were seen (most files first). Manifests only in subfolders do not classify
//! the folder: `reason` names them, so the caller can point `path` at one.
//!
//! **Ports** come from: an existing Dockerfile (`EXPOSE`, `ENV PORT=…`, addresses in
//! `CMD`/`ENTRYPOINT`), `.env` files (`PORT=`, `HTTP_PORT=`, `ASPNETCORE_URLS=`, …), a
//! `Procfile`, the family's config (`server.port` in Spring's `application.properties` /
//! `application.yml`, Ktor's `application.conf`, .NET's `launchSettings.json` and
//! `appsettings.json`, `package.json` start scripts, `Rocket.toml`) and the main family's
//! source files, tests and tool configs left out. In code a line names a port by a listen
//! address (`"0.0.0.0:8080"`, `":8081"`, `[::]:80`, `localhost:3000` on a line that
//! listens or binds), `listen(3000)`, a `port` assignment or argument (`port=5000`,
//! `port: 3000`, `port := "8081"`, the well-known database ports excluded), an environment
//! fallback (`process.env.PORT || 3000`, `getenv("PORT", "8000")`, `${PORT:-8080}`) or a
//! `--port`/`--bind` flag; Rust files are read up to their `#[cfg(test)]` module. Heuristic matches below 80 are ignored (they are backlogs and
//! radixes, not ports). A recognised framework's default port is used only when nothing
//! names one, and the evidence says so.

// `ToolError` is the error type the `Tool` trait fixes; boxing it here would only move
// the allocation around.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::{Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::model::ErrorClass;

/// How many folders deep the walk goes below the analysed folder.
pub const MAX_DEPTH: usize = 4;
/// How many directory entries the walk looks at before it stops.
pub const MAX_FILES: usize = 10_000;
/// How many bytes of one file are read.
pub const MAX_READ: usize = 256 * 1024;
/// How many source files are searched for ports or tests (shallowest first).
const MAX_SOURCES: usize = 400;
/// How many notes an analysis keeps.
const MAX_NOTES: usize = 40;

/// Folders the walk never enters (hidden folders are skipped too).
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    "target",
    "vendor",
    "dist",
    "build",
    "obj",
    "venv",
    "__pycache__",
];

/// The names an existing Dockerfile may have at the folder's root, in the order looked at.
const DOCKERFILES: &[&str] = &["Dockerfile", "dockerfile", "Containerfile", "containerfile"];

/// Every value `language` and `languages` may hold.
const LANGUAGES: &[&str] = &[
    "rust",
    "go",
    "javascript",
    "typescript",
    "python",
    "java",
    "kotlin",
    "csharp",
    "fsharp",
];

/// Every value `build_system` may hold.
const BUILD_SYSTEMS: &[&str] = &[
    "cargo", "go", "npm", "yarn", "pnpm", "bun", "pip", "poetry", "uv", "pipenv", "maven",
    "gradle", "dotnet",
];

/// The build manifests looked for at the root, for `reason`.
const MANIFESTS: &[&str] = &[
    "Cargo.toml",
    "go.mod",
    "package.json",
    "pyproject.toml",
    "requirements.txt",
    "setup.py",
    "setup.cfg",
    "Pipfile",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
];

/// The `analyze_repository` tool.
pub struct AnalyzeRepository;

impl Tool for AnalyzeRepository {
    fn name(&self) -> &str {
        "analyze_repository"
    }

    fn description(&self) -> &str {
        "Reads a folder's build manifests, code and config (read-only, never guessing from \
         its name) and reports its language, build system, entry point, ports, test command \
         and existing Dockerfile."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The folder to analyse.",
            "additionalProperties": false,
            "properties": {
                "path": {
                    "type": "string",
                    "description": "The folder, relative to the project folder (or absolute).",
                    "default": "."
                }
            }
        })
    }

    fn output_schema(&self) -> Value {
        let nullable = |values: &[&str]| {
            let mut v: Vec<Value> = values.iter().map(|s| json!(s)).collect();
            v.push(Value::Null);
            v
        };
        let text = |d: &str| json!({"type": ["string", "null"], "description": d});
        let list =
            |d: &str| json!({"type": "array", "items": {"type": "string"}, "description": d});
        json!({
            "type": "object",
            "description": "What the folder holds; `null` or empty where the files do not say.",
            "additionalProperties": false,
            "required": [
                "classified", "language", "languages", "build_system", "name", "manifest",
                "entrypoint", "framework", "version", "ports", "test_command", "dockerfile",
                "evidence", "notes", "reason"
            ],
            "properties": {
                "classified": {
                    "type": "boolean",
                    "description": "Whether a build manifest at the folder's root gave a \
                                    language and a build system."
                },
                "language": {
                    "type": ["string", "null"],
                    "enum": nullable(LANGUAGES),
                    "description": "The main language (`null` when not classified)."
                },
                "languages": {
                    "type": "array",
                    "items": {"type": "string", "enum": LANGUAGES},
                    "description": "Every language found, the main one first."
                },
                "build_system": {
                    "type": ["string", "null"],
                    "enum": nullable(BUILD_SYSTEMS),
                    "description": "The build system or package manager of the main language."
                },
                "name": text("The project's name (crate, Go module's last element, package, \
                              artifact, assembly) when a manifest names it."),
                "manifest": text("The build manifest the analysis rests on, relative to the \
                                  folder (`Cargo.toml`, `src/Api/Api.csproj`, …)."),
                "entrypoint": text("What runs: the binary (Rust), the main package (Go `.` or \
                                    `./cmd/x`), the script (`server.js`, `app.py`), a Python \
                                    module for `python -m` (no `.py`), an ASGI/WSGI object \
                                    (`app.main:app`), the jar or install script (Maven, \
                                    Gradle), the assembly (`Api.dll`)."),
                "framework": text("The framework recognised (`axum`, `express`, `flask`, \
                                   `fastapi`, `django`, `spring-boot`, `ktor`, `aspnetcore`, …)."),
                "version": text("The language or runtime version the project asks for: \
                                 `rust-version`, Go's `go` line, Node's major, Python's \
                                 `major.minor`, Java's release, .NET's target framework."),
                "ports": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "description": "The ports the code or config listens on, sorted, without \
                                    duplicates; a framework default only when nothing names one."
                },
                "test_command": text("The command that runs the tests, when tests were found \
                                      (`cargo test`, `go test ./...`, `npm test`, `pytest`, …)."),
                "dockerfile": text("The existing Dockerfile at the folder's root, relative to it."),
                "evidence": list("Why: `file: what it showed` (with `:line` for ports), and \
                                  `default:` lines for assumed defaults."),
                "notes": list("Problems met on the way: malformed manifests, files skipped as \
                               not UTF-8, a walk cut short."),
                "reason": text("Why the folder could not be classified, with what was looked for.")
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "PATH_NOT_FOUND",
                "`path` does not exist or is not a folder (class `not_found`).",
            ),
            (
                "PATH_OUTSIDE_PROJECT",
                "`path` leads out of the project folder and the session workspace while the \
                 context is confined (MCP clients; class `invalid_input`).",
            ),
            (
                "PATH_UNREADABLE",
                "The folder exists but cannot be listed, e.g. no permission (class \
                 `tool_error`).",
            ),
        ]
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(run(args, ctx))
    }
}

async fn run(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let path = match &args {
        Value::Null => ".".to_owned(),
        Value::Object(obj) => {
            if let Some(other) = obj.keys().find(|k| k.as_str() != "path") {
                return Err(ToolError::invalid(format!(
                    "unknown argument `{other}` of `analyze_repository` (expected `path`)"
                )));
            }
            match obj.get("path") {
                None | Some(Value::Null) => ".".to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(ToolError::invalid(
                        "`path` must be a string: a folder relative to the project",
                    ));
                }
            }
        }
        _ => {
            return Err(ToolError::invalid(
                "the arguments of `analyze_repository` must be an object",
            ));
        }
    };
    let dir = ctx.path("path", &path)?;
    let cancel = ctx.cancel.clone();
    let task = tokio::task::spawn_blocking(move || analyze_with(&dir, &cancel));
    let analysis = tokio::select! {
        joined = task => joined.map_err(|e| {
            ToolError::new(ErrorClass::ToolError, format!("the analysis stopped: {e}"))
        })?,
        () = ctx.cancel.cancelled() => return Err(ToolError::cancelled()),
    };
    let analysis = analysis.map_err(|mut e| {
        if e.class == ErrorClass::NotFound {
            e.message = format!("`path` {path:?}: {}", e.message);
        }
        e
    })?;
    serde_json::to_value(&analysis).map_err(|e| {
        ToolError::new(
            ErrorClass::ToolError,
            format!("cannot serialise the analysis: {e}"),
        )
    })
}

/// What `analyze_repository` found in a folder: the contract `generate_dockerfile` builds
/// on. Every field comes from files that are really there; `None`/empty when unknown.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Analysis {
    /// Whether the folder was classified (a language and build system were found).
    pub classified: bool,
    /// The main language: `rust`, `go`, `javascript`, `typescript`, `python`, `java`,
    /// `kotlin`, `csharp`, `fsharp`; `None` for a folder it cannot classify.
    pub language: Option<String>,
    /// Every language found, the main one first.
    pub languages: Vec<String>,
    /// `cargo`, `go`, `npm`, `yarn`, `pnpm`, `bun`, `pip`, `poetry`, `uv`, `pipenv`,
    /// `maven`, `gradle`, `dotnet`.
    pub build_system: Option<String>,
    /// The project's name (package, module, crate, artifact), when a manifest names it.
    /// For Go, the last element of the module path (`github.com/acme/api` → `api`).
    pub name: Option<String>,
    /// What runs: the binary (Rust), the main package (Go, `./cmd/api`), the script or
    /// module (Node `server.js`, Python `app.py` or `app.main:app`), the jar or assembly.
    /// Python: ending in `.py` is a script, containing `:` an ASGI/WSGI object, otherwise a
    /// module for `python -m`. Gradle with the `application` plugin and no Spring Boot: the
    /// `installDist` start script (`build/install/NAME/bin/NAME`).
    pub entrypoint: Option<String>,
    /// The framework when one is recognised (`express`, `flask`, `fastapi`, `django`,
    /// `spring-boot`, `aspnetcore`, `actix-web`, `axum`, …).
    pub framework: Option<String>,
    /// The language/runtime version the project asks for (`1.22`, `20`, `3.12`, `21`,
    /// `net8.0`), when it says.
    pub version: Option<String>,
    /// Ports the code or config listens on, sorted, without duplicates.
    pub ports: Vec<u16>,
    /// The command that runs the tests (`cargo test`, `go test ./...`, `npm test`, …).
    pub test_command: Option<String>,
    /// The existing Dockerfile, relative to the folder.
    pub dockerfile: Option<String>,
    /// The files that led to each conclusion, relative to the folder.
    pub evidence: Vec<String>,
    /// Why the folder could not be classified (when `classified` is false).
    pub reason: Option<String>,
    /// The build manifest the analysis rests on, relative to the folder (`Cargo.toml`,
    /// `src/Api/Api.csproj`, `app/build.gradle.kts`); its folder is the project to build.
    pub manifest: Option<String>,
    /// Problems met on the way (malformed manifests, files skipped as not UTF-8, a walk cut
    /// short); none of them stops the analysis.
    pub notes: Vec<String>,
}

/// Analyse the folder `dir` (absolute, or relative to the current directory).
///
/// Fails with class `not_found` / `PATH_NOT_FOUND` when `dir` does not exist or is not a
/// folder; a folder it cannot classify is an [`Analysis`] with `classified: false`.
pub fn analyze(dir: &Path) -> Result<Analysis, ToolError> {
    analyze_with(dir, &CancellationToken::new())
}

/// [`analyze`], stopping with class `cancelled` soon after `cancel` fires.
pub fn analyze_with(dir: &Path, cancel: &CancellationToken) -> Result<Analysis, ToolError> {
    analyze_limited(dir, cancel, Limits::DEFAULT)
}

// ---------------------------------------------------------------------------------------
// The analysis

/// A detector: what one family's manifests at the root say, if there are any.
type Detector = fn(&mut Scan<'_>) -> Result<Option<Build>, ToolError>;

fn analyze_limited(
    dir: &Path,
    cancel: &CancellationToken,
    limits: Limits,
) -> Result<Analysis, ToolError> {
    let root = open_root(dir)?;
    let tree = walk(&root, limits, cancel)?;
    let mut s = Scan {
        tree: &tree,
        cancel,
        notes: Vec::new(),
    };
    for n in &tree.notes {
        s.note(n.clone());
    }
    let detectors: [Detector; 6] = [
        detect_rust,
        detect_go,
        detect_jvm,
        detect_dotnet,
        detect_python,
        detect_node,
    ];
    let mut builds = Vec::new();
    for detect in detectors {
        s.check()?;
        if let Some(b) = detect(&mut s)? {
            builds.push(b);
        }
    }

    let mut a = Analysis {
        dockerfile: DOCKERFILES
            .iter()
            .find(|n| tree.has(n))
            .map(|n| (*n).to_owned()),
        ..Analysis::default()
    };
    let mut ports = Ports::default();
    let mut evidence = Vec::new();
    let mut languages = Vec::new();
    if let Some(df) = &a.dockerfile {
        evidence.push(format!("{df}: an existing Dockerfile"));
        dockerfile_ports(&mut s, df, &mut ports);
    }
    env_ports(&mut s, "", &mut ports);
    procfile_ports(&mut s, &mut ports);

    match choose_main(&builds, &tree) {
        Some(i) => {
            let main = builds.remove(i);
            if !main.dir.is_empty() {
                env_ports(&mut s, &main.dir, &mut ports);
            }
            for (p, why) in &main.ports {
                ports.add(*p, why.clone());
            }
            source_ports(&mut s, main.family, &main.dir, &mut ports)?;
            if ports.found.is_empty()
                && let Some((p, why)) = &main.default_port
            {
                ports.add(*p, format!("default: {why}"));
            }
            languages.push(main.language.to_owned());
            let mut main_evidence = main.evidence;
            main_evidence.append(&mut evidence);
            evidence = main_evidence;
            for other in &builds {
                languages.push(other.language.to_owned());
                evidence.push(format!(
                    "{}: also a {} ({}) project, not the main one (compiled languages' \
                     manifests first, then the most source files)",
                    other.manifest, other.language, other.build_system
                ));
            }
            a.classified = true;
            a.language = Some(main.language.to_owned());
            a.build_system = Some(main.build_system.to_owned());
            a.manifest = Some(main.manifest);
            a.name = main.name;
            a.entrypoint = main.entrypoint;
            a.framework = main.framework;
            a.version = main.version;
            a.test_command = main.test_command;
        }
        None => {
            for f in subfolder_manifests(&tree) {
                if let Some(l) = manifest_language(file_name(&f)) {
                    languages.push(l.to_owned());
                }
            }
            a.reason = Some(unclassified_reason(&tree));
        }
    }
    for (lang, _) in tree.language_counts() {
        languages.push(lang.to_owned());
    }
    a.languages = dedup(languages);
    let (list, port_evidence) = ports.finish();
    a.ports = list;
    evidence.extend(port_evidence);
    a.evidence = dedup(evidence);
    a.notes = s.notes;
    Ok(a)
}

/// The index in `builds` of the main one, by the rule of the module doc.
fn choose_main(builds: &[Build], tree: &Tree) -> Option<usize> {
    builds
        .iter()
        .enumerate()
        .max_by_key(|(_, b)| {
            (
                b.family.compiled(),
                tree.count_ext(b.family.extensions()),
                std::cmp::Reverse(b.family),
            )
        })
        .map(|(i, _)| i)
}

fn unclassified_reason(tree: &Tree) -> String {
    if tree.files.is_empty() && tree.dirs.is_empty() {
        return "the folder is empty".to_owned();
    }
    let mut reason = format!(
        "no build manifest at the folder's root (looked for {}, *.csproj, *.fsproj, *.sln)",
        MANIFESTS.join(", ")
    );
    let subs = subfolder_manifests(tree);
    if !subs.is_empty() {
        let shown: Vec<&str> = subs.iter().take(6).map(String::as_str).collect();
        let more = subs.len().saturating_sub(shown.len());
        reason.push_str(&format!(
            "; manifests in subfolders: {}{}; point `path` at one of those folders",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    let counts = tree.language_counts();
    if counts.is_empty() {
        reason.push_str("; no source files of a known language either");
    } else {
        let seen: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
        reason.push_str(&format!("; source files seen: {}", seen.join(", ")));
    }
    reason
}

fn subfolder_manifests(tree: &Tree) -> Vec<String> {
    tree.files
        .iter()
        .filter(|f| f.contains('/') && manifest_language(file_name(f)).is_some())
        .cloned()
        .collect()
}

fn manifest_language(name: &str) -> Option<&'static str> {
    Some(match name {
        "Cargo.toml" => "rust",
        "go.mod" => "go",
        "package.json" => "javascript",
        "pyproject.toml" | "requirements.txt" | "setup.py" | "setup.cfg" | "Pipfile" => "python",
        "pom.xml"
        | "build.gradle"
        | "build.gradle.kts"
        | "settings.gradle"
        | "settings.gradle.kts" => "java",
        _ if name.ends_with(".csproj") || name.ends_with(".sln") => "csharp",
        _ if name.ends_with(".fsproj") => "fsharp",
        _ => return None,
    })
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The walk

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_depth: usize,
    max_files: usize,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        max_depth: MAX_DEPTH,
        max_files: MAX_FILES,
    };
}

/// The files and folders the walk saw, relative to the root, with `/` separators.
#[derive(Debug)]
struct Tree {
    root: PathBuf,
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
    notes: Vec<String>,
}

fn open_root(dir: &Path) -> Result<PathBuf, ToolError> {
    let not_found = |what: String| {
        ToolError::new(ErrorClass::NotFound, format!("`{}` {what}", dir.display()))
            .with_code("PATH_NOT_FOUND")
    };
    let root = std::fs::canonicalize(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_found("does not exist".to_owned())
        } else {
            not_found(format!("cannot be opened: {e}"))
        }
    })?;
    if !root.is_dir() {
        return Err(not_found("is not a folder".to_owned()));
    }
    Ok(root)
}

fn walk(root: &Path, limits: Limits, cancel: &CancellationToken) -> Result<Tree, ToolError> {
    let mut tree = Tree {
        root: root.to_path_buf(),
        files: BTreeSet::new(),
        dirs: BTreeSet::new(),
        notes: Vec::new(),
    };
    let mut queue = VecDeque::from([(String::new(), 0usize)]);
    let mut seen = 0usize;
    'walk: while let Some((rel, depth)) = queue.pop_front() {
        if cancel.is_cancelled() {
            return Err(ToolError::cancelled());
        }
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let listing = match std::fs::read_dir(&abs) {
            Ok(l) => l,
            Err(e) if rel.is_empty() => {
                return Err(ToolError::new(
                    ErrorClass::ToolError,
                    format!("cannot list the folder `{}`: {e}", root.display()),
                )
                .with_code("PATH_UNREADABLE"));
            }
            Err(e) => {
                tree.notes.push(format!("{rel}/: cannot be listed: {e}"));
                continue;
            }
        };
        // Sorted by name, so that results and the file cap are stable.
        let entries: BTreeMap<String, std::fs::FileType> = listing
            .filter_map(Result::ok)
            .filter_map(|e| {
                // Names that are not UTF-8 cannot be manifests or sources we know.
                let name = e.file_name().into_string().ok()?;
                Some((name, e.file_type().ok()?))
            })
            .collect();
        for (name, kind) in entries {
            if seen >= limits.max_files {
                tree.notes.push(format!(
                    "the walk stopped after {} entries; later files were not looked at",
                    limits.max_files
                ));
                break 'walk;
            }
            seen += 1;
            let child = join(&rel, &name);
            if kind.is_dir() {
                if name.starts_with('.') || SKIP_DIRS.contains(&name.as_str()) {
                    continue;
                }
                tree.dirs.insert(child.clone());
                if depth < limits.max_depth {
                    queue.push_back((child, depth + 1));
                }
            } else if kind.is_file() {
                tree.files.insert(child);
            } else if kind.is_symlink() {
                // A link to a file inside the folder counts as that file; links to folders
                // are never followed and links out of the folder are ignored.
                let target = abs.join(&name);
                if let (Ok(real), Ok(meta)) =
                    (std::fs::canonicalize(&target), std::fs::metadata(&target))
                    && meta.is_file()
                    && real.starts_with(root)
                {
                    tree.files.insert(child);
                }
            }
        }
    }
    Ok(tree)
}

impl Tree {
    fn has(&self, rel: &str) -> bool {
        self.files.contains(rel)
    }

    fn has_dir(&self, rel: &str) -> bool {
        self.dirs.contains(rel)
    }

    /// The files directly in `dir` (`""`: the root), as full relative paths.
    fn files_in<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.files.iter().filter(move |f| parent_of(f) == dir)
    }

    /// The folders directly in `dir`, as full relative paths.
    fn dirs_in<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.dirs.iter().filter(move |f| parent_of(f) == dir)
    }

    fn count_ext(&self, exts: &[&str]) -> usize {
        self.files
            .iter()
            .filter(|f| extension(f).is_some_and(|e| exts.contains(&e)))
            .count()
    }

    /// Languages of the source files seen, most files first.
    fn language_counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for f in &self.files {
            if let Some(l) = extension(f).and_then(ext_language) {
                *counts.entry(l).or_default() += 1;
            }
        }
        let mut v: Vec<(&'static str, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

fn file_name(rel: &str) -> &str {
    rel.rsplit_once('/').map_or(rel, |(_, n)| n)
}

fn extension(rel: &str) -> Option<&str> {
    file_name(rel).rsplit_once('.').map(|(_, e)| e)
}

fn stem(rel: &str) -> &str {
    let n = file_name(rel);
    n.rsplit_once('.').map_or(n, |(s, _)| s)
}

fn ext_language(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "rs" => "rust",
        "go" => "go",
        "js" | "mjs" | "cjs" | "jsx" => "javascript",
        "ts" | "tsx" | "mts" | "cts" => "typescript",
        "py" => "python",
        "java" => "java",
        "kt" => "kotlin",
        "cs" => "csharp",
        "fs" => "fsharp",
        _ => return None,
    })
}

/// Whether `rel` is a test (tests often start servers on other ports).
fn is_test_path(rel: &str) -> bool {
    let name = file_name(rel);
    let test_dir = rel.split('/').rev().skip(1).any(|c| {
        matches!(
            c,
            "test" | "tests" | "__tests__" | "spec" | "testdata" | "e2e" | "Tests"
        )
    });
    test_dir
        || name.ends_with("_test.go")
        || (name.starts_with("test_") && name.ends_with(".py"))
        || name.ends_with("_test.py")
        || name == "conftest.py"
        || name.contains(".test.")
        || name.contains(".spec.")
        || ["Test", "Tests"].iter().any(|t| {
            stem(name).ends_with(t) && matches!(extension(name), Some("cs" | "java" | "kt"))
        })
}

/// Whether `rel` configures a tool (bundler, test runner) rather than being the app.
fn is_tool_config(rel: &str) -> bool {
    let name = file_name(rel);
    name.contains(".config.")
        || name.starts_with("webpack.")
        || name.starts_with("jest.")
        || name.starts_with("karma.conf")
        || matches!(
            name,
            "gulpfile.js" | "Gruntfile.js" | "noxfile.py" | "setup.py" | "tasks.py" | "fabfile.py"
        )
}

// ---------------------------------------------------------------------------------------
// Reading files

/// The walk's result while detectors read it, with the notes they leave.
struct Scan<'a> {
    tree: &'a Tree,
    cancel: &'a CancellationToken,
    notes: Vec<String>,
}

impl Scan<'_> {
    fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        if self.notes.contains(&n) {
            return;
        }
        match self.notes.len() {
            l if l < MAX_NOTES => self.notes.push(n),
            l if l == MAX_NOTES => self.notes.push("more notes were left out".to_owned()),
            _ => {}
        }
    }

    fn check(&self) -> Result<(), ToolError> {
        if self.cancel.is_cancelled() {
            Err(ToolError::cancelled())
        } else {
            Ok(())
        }
    }

    /// The text of `rel`, if the walk saw it and it is UTF-8 text (a note otherwise).
    fn read(&mut self, rel: &str) -> Option<String> {
        if !self.tree.has(rel) {
            return None;
        }
        match read_capped(&self.tree.root.join(rel)) {
            Ok((bytes, truncated)) => match decode(bytes, truncated) {
                Some(text) => {
                    if truncated {
                        self.note(format!(
                            "{rel}: only the first {} KiB were read",
                            MAX_READ / 1024
                        ));
                    }
                    Some(text)
                }
                None => {
                    self.note(format!("{rel}: not UTF-8 text, skipped"));
                    None
                }
            },
            Err(e) => {
                self.note(format!("{rel}: cannot be read: {e}"));
                None
            }
        }
    }

    /// `rel` read as TOML; problems become notes.
    fn toml(&mut self, rel: &str) -> Toml {
        let Some(text) = self.read(rel) else {
            return Toml::default();
        };
        let (doc, problems) = Toml::parse(&text);
        for p in problems.into_iter().take(5) {
            self.note(format!("{rel}: {p}"));
        }
        doc
    }

    /// `rel` read as XML; problems become notes.
    fn xml(&mut self, rel: &str) -> Element {
        let Some(text) = self.read(rel) else {
            return Element::default();
        };
        let (doc, problems) = parse_xml(&text);
        for p in problems.into_iter().take(5) {
            self.note(format!("{rel}: {p}"));
        }
        doc
    }

    /// `rel` read as JSON (comments and trailing commas allowed); problems become notes.
    fn json(&mut self, rel: &str) -> Option<Value> {
        let text = self.read(rel)?;
        match serde_json::from_str::<Value>(&text)
            .or_else(|e| serde_json::from_str::<Value>(&strip_json_comments(&text)).map_err(|_| e))
        {
            Ok(v) => Some(v),
            Err(e) => {
                self.note(format!("{rel}: not valid JSON ({e}); ignored"));
                None
            }
        }
    }

    /// Non-test, non-tool-config source files of `family` under `dir`, shallowest first.
    fn sources(&self, family: Family, dir: &str) -> Vec<String> {
        let exts = family.extensions();
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut files: Vec<String> = self
            .tree
            .files
            .iter()
            .filter(|f| f.starts_with(&prefix))
            .filter(|f| extension(f).is_some_and(|e| exts.contains(&e)))
            .filter(|f| !is_test_path(f) && !is_tool_config(f))
            .cloned()
            .collect();
        files.sort_by_key(|f| (f.matches('/').count(), f.clone()));
        files.truncate(MAX_SOURCES);
        files
    }
}

fn read_capped(path: &Path) -> std::io::Result<(Vec<u8>, bool)> {
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    file.take(MAX_READ as u64 + 1).read_to_end(&mut buf)?;
    let truncated = buf.len() > MAX_READ;
    buf.truncate(MAX_READ);
    Ok((buf, truncated))
}

/// UTF-8 text without NUL bytes; a character cut by the read limit is dropped.
fn decode(bytes: Vec<u8>, truncated: bool) -> Option<String> {
    if bytes.contains(&0) {
        return None;
    }
    match String::from_utf8(bytes) {
        Ok(s) => Some(s),
        Err(e) if truncated && e.utf8_error().error_len().is_none() => {
            let valid = e.utf8_error().valid_up_to();
            let mut bytes = e.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).ok()
        }
        Err(_) => None,
    }
}

// ---------------------------------------------------------------------------------------
// Families and what a detector reports

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Rust,
    Go,
    Jvm,
    Dotnet,
    Python,
    Node,
}

impl Family {
    fn compiled(self) -> bool {
        matches!(
            self,
            Family::Rust | Family::Go | Family::Jvm | Family::Dotnet
        )
    }

    fn extensions(self) -> &'static [&'static str] {
        match self {
            Family::Rust => &["rs"],
            Family::Go => &["go"],
            Family::Jvm => &["java", "kt"],
            Family::Dotnet => &["cs", "fs"],
            Family::Python => &["py"],
            Family::Node => &["js", "mjs", "cjs", "jsx", "ts", "tsx", "mts", "cts"],
        }
    }
}

/// What one detector found at the root.
struct Build {
    family: Family,
    language: &'static str,
    build_system: &'static str,
    manifest: String,
    /// The folder of the project that runs (`""`: the root; a Gradle module, a .NET project
    /// listed by a solution).
    dir: String,
    name: Option<String>,
    entrypoint: Option<String>,
    framework: Option<String>,
    version: Option<String>,
    test_command: Option<String>,
    /// The framework's default port and why, used when nothing names a port.
    default_port: Option<(u16, String)>,
    /// Ports from the family's own config files, with evidence.
    ports: Vec<(u16, String)>,
    evidence: Vec<String>,
}

impl Build {
    fn new(
        family: Family,
        language: &'static str,
        build_system: &'static str,
        manifest: &str,
    ) -> Build {
        Build {
            family,
            language,
            build_system,
            manifest: manifest.to_owned(),
            dir: String::new(),
            name: None,
            entrypoint: None,
            framework: None,
            version: None,
            test_command: None,
            default_port: None,
            ports: Vec::new(),
            evidence: Vec::new(),
        }
    }

    fn ev(&mut self, e: impl Into<String>) {
        self.evidence.push(e.into());
    }

    fn port(&mut self, port: u16, why: String) {
        self.ports.push((port, why));
    }
}

// ---------------------------------------------------------------------------------------
// Rust

const RUST_FRAMEWORKS: &[&str] = &[
    "actix-web",
    "axum",
    "rocket",
    "warp",
    "poem",
    "salvo",
    "tide",
];

fn detect_rust(s: &mut Scan<'_>) -> Result<Option<Build>, ToolError> {
    if !s.tree.has("Cargo.toml") {
        return Ok(None);
    }
    let mut b = Build::new(Family::Rust, "rust", "cargo", "Cargo.toml");
    let toml = s.toml("Cargo.toml");
    let name = toml.str(&["package", "name"]);
    if let Some(n) = &name {
        b.ev(format!("Cargo.toml: package `{n}`"));
    }
    b.name.clone_from(&name);
    let workspace = toml.has_table(&["workspace"]);
    let members = toml.str_array(&["workspace", "members"]);
    if workspace {
        b.ev(if members.is_empty() {
            "Cargo.toml: a workspace".to_owned()
        } else {
            format!("Cargo.toml: a workspace of {}", members.join(", "))
        });
    }
    b.version = toml
        .str(&["package", "rust-version"])
        .or_else(|| toml.str(&["workspace", "package", "rust-version"]));
    if let Some(v) = &b.version {
        b.ev(format!("Cargo.toml: rust-version {v}"));
    }
    if let Some(ed) = toml
        .str(&["package", "edition"])
        .or_else(|| toml.str(&["workspace", "package", "edition"]))
    {
        b.ev(format!("Cargo.toml: edition {ed}"));
    }
    let mut deps = toml.child_keys(&["dependencies"]);
    deps.extend(toml.child_keys(&["workspace", "dependencies"]));

    let bins = toml.all_str(&["bin", "name"]);
    if let Some(first) = bins.first() {
        let pick = name
            .as_ref()
            .filter(|n| bins.contains(n))
            .unwrap_or(first)
            .clone();
        b.ev(format!("Cargo.toml: [[bin]] `{pick}`"));
        b.entrypoint = Some(pick);
    } else if s.tree.has("src/main.rs")
        && let Some(n) = &name
    {
        b.ev(format!("src/main.rs: the binary `{n}`"));
        b.entrypoint = Some(n.clone());
    } else if let Some(bin) = s
        .tree
        .files_in("src/bin")
        .find(|f| extension(f) == Some("rs"))
    {
        b.ev(format!("{bin}: a binary"));
        b.entrypoint = Some(stem(bin).to_owned());
    } else if workspace {
        if let Some((member, bin, member_deps)) = workspace_binary(s, &members) {
            b.ev(format!("{member}/Cargo.toml: the binary `{bin}`"));
            b.entrypoint = Some(bin);
            deps.extend(member_deps);
        }
    } else {
        b.ev("Cargo.toml: a library (no src/main.rs, src/bin/ or [[bin]])");
    }

    if let Some(fw) = RUST_FRAMEWORKS
        .iter()
        .find(|f| deps.iter().any(|d| d.as_str() == **f))
    {
        b.ev(format!("Cargo.toml: dependency `{fw}`"));
        b.framework = Some((*fw).to_owned());
        if *fw == "rocket" {
            b.default_port = Some((8000, "Rocket listens on 8000 by default".to_owned()));
        }
    }
    if let Some(text) = s.read("Rocket.toml") {
        for (i, line) in text.lines().enumerate() {
            for p in line_ports(line) {
                b.port(p, format!("Rocket.toml:{}: port {p}", i + 1));
            }
        }
    }

    let tests_dir = s
        .tree
        .files
        .iter()
        .find(|f| (f.starts_with("tests/") || f.contains("/tests/")) && extension(f) == Some("rs"))
        .cloned();
    let found = match tests_dir {
        Some(f) => Some(f),
        None => {
            let mut hit = None;
            for f in s.sources(Family::Rust, "") {
                s.check()?;
                if s.read(&f).is_some_and(|t| {
                    t.contains("#[test]") || t.contains("#[cfg(test)]") || t.contains("::test]")
                }) {
                    hit = Some(f);
                    break;
                }
            }
            hit
        }
    };
    if let Some(f) = found {
        b.ev(format!("{f}: tests"));
        b.test_command = Some(if workspace {
            "cargo test --workspace".to_owned()
        } else {
            "cargo test".to_owned()
        });
    }
    Ok(Some(b))
}

/// The first workspace member with a binary: (member folder, binary, dependencies).
fn workspace_binary(s: &mut Scan<'_>, members: &[String]) -> Option<(String, String, Vec<String>)> {
    let mut dirs = Vec::new();
    for m in members {
        let m = m.trim_end_matches('/');
        if let Some(parent) = m.strip_suffix("/*") {
            dirs.extend(s.tree.dirs_in(parent).cloned());
        } else {
            dirs.push(m.to_owned());
        }
    }
    for dir in dirs {
        let manifest = join(&dir, "Cargo.toml");
        if !s.tree.has(&manifest) {
            continue;
        }
        let toml = s.toml(&manifest);
        let deps = toml.child_keys(&["dependencies"]);
        if let Some(bin) = toml.all_str(&["bin", "name"]).into_iter().next() {
            return Some((dir, bin, deps));
        }
        if s.tree.has(&join(&dir, "src/main.rs"))
            && let Some(n) = toml.str(&["package", "name"])
        {
            return Some((dir, n, deps));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Go

const GO_FRAMEWORKS: &[(&str, &str)] = &[
    ("github.com/gin-gonic/gin", "gin"),
    ("github.com/labstack/echo", "echo"),
    ("github.com/gofiber/fiber", "fiber"),
    ("github.com/go-chi/chi", "chi"),
    ("github.com/gorilla/mux", "gorilla-mux"),
];

#[derive(Debug, Default, PartialEq)]
struct GoMod {
    module: Option<String>,
    go: Option<String>,
    requires: Vec<String>,
}

fn parse_go_mod(text: &str) -> GoMod {
    let mut m = GoMod::default();
    let mut in_require = false;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if in_require {
            if line == ")" {
                in_require = false;
            } else if let Some(p) = line.split_whitespace().next() {
                m.requires.push(p.to_owned());
            }
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("module"), Some(path)) => m.module = Some(path.trim_matches('"').to_owned()),
            (Some("go"), Some(v)) => m.go = Some(v.to_owned()),
            (Some("require"), Some("(")) => in_require = true,
            (Some("require"), Some(p)) => m.requires.push(p.to_owned()),
            _ => {}
        }
    }
    m
}

/// The name a module path gives: its last element, a `/vN` suffix left out.
fn go_module_name(path: &str) -> String {
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > 1
        && parts.last().is_some_and(|l| {
            l.len() > 1 && l.starts_with('v') && l[1..].bytes().all(|c| c.is_ascii_digit())
        })
    {
        parts.pop();
    }
    parts
        .last()
        .map_or_else(|| path.to_owned(), |p| (*p).to_owned())
}

fn is_package_main(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l == "package main" || l.starts_with("package main ") || l.starts_with("package main\t")
    })
}

/// The first non-test `.go` file directly in `dir` that is `package main`.
fn go_main_in(s: &mut Scan<'_>, dir: &str) -> Option<String> {
    let files: Vec<String> = s
        .tree
        .files_in(dir)
        .filter(|f| extension(f) == Some("go") && !f.ends_with("_test.go"))
        .cloned()
        .collect();
    files
        .into_iter()
        .find(|f| s.read(f).is_some_and(|t| is_package_main(&t)))
}

fn detect_go(s: &mut Scan<'_>) -> Result<Option<Build>, ToolError> {
    if !s.tree.has("go.mod") {
        return Ok(None);
    }
    let mut b = Build::new(Family::Go, "go", "go", "go.mod");
    let gm = match s.read("go.mod") {
        Some(text) => {
            let gm = parse_go_mod(&text);
            if gm.module.is_none() {
                s.note("go.mod: no `module` line");
            }
            gm
        }
        None => GoMod::default(),
    };
    if let Some(m) = &gm.module {
        b.ev(format!("go.mod: module {m}"));
        b.name = Some(go_module_name(m));
    }
    if let Some(v) = &gm.go {
        b.ev(format!("go.mod: go {v}"));
        b.version = Some(v.clone());
    }
    if let Some((path, fw)) = GO_FRAMEWORKS
        .iter()
        .find(|(p, _)| gm.requires.iter().any(|r| r.starts_with(p)))
    {
        b.ev(format!("go.mod: requires {path}"));
        b.framework = Some((*fw).to_owned());
        if *fw == "gin" {
            b.default_port = Some((8080, "gin's Run() listens on :8080 by default".to_owned()));
        }
    }

    if let Some(f) = go_main_in(s, "") {
        b.ev(format!("{f}: package main"));
        b.entrypoint = Some(".".to_owned());
    } else {
        let cmds: Vec<String> = s.tree.dirs_in("cmd").cloned().collect();
        let mut mains = Vec::new();
        for dir in cmds {
            if let Some(f) = go_main_in(s, &dir) {
                mains.push((dir, f));
            }
        }
        let pick = mains
            .iter()
            .find(|(d, _)| Some(file_name(d)) == b.name.as_deref())
            .or(mains.first())
            .cloned();
        if let Some((dir, f)) = pick {
            b.ev(format!("{f}: package main"));
            if mains.len() > 1 {
                let all: Vec<&str> = mains.iter().map(|(d, _)| d.as_str()).collect();
                b.ev(format!("cmd/: several commands ({})", all.join(", ")));
            }
            b.entrypoint = Some(format!("./{dir}"));
        }
    }

    let tests = s
        .tree
        .files
        .iter()
        .filter(|f| f.ends_with("_test.go"))
        .count();
    if let Some(first) = s.tree.files.iter().find(|f| f.ends_with("_test.go")) {
        b.ev(format!(
            "{first}: tests ({tests} _test.go file{})",
            if tests == 1 { "" } else { "s" }
        ));
        b.test_command = Some("go test ./...".to_owned());
    }
    Ok(Some(b))
}

// ---------------------------------------------------------------------------------------
// Node

const NODE_FRAMEWORKS: &[(&str, &str)] = &[
    ("next", "next"),
    ("@nestjs/core", "nest"),
    ("fastify", "fastify"),
    ("express", "express"),
    ("koa", "koa"),
    ("@hapi/hapi", "hapi"),
    ("hono", "hono"),
];

const NODE_LOCKS: &[(&str, &str)] = &[
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
    ("bun.lock", "bun"),
    ("bun.lockb", "bun"),
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
];

const NODE_ENTRIES: &[&str] = &[
    "server.js",
    "app.js",
    "index.js",
    "main.js",
    "src/server.js",
    "src/index.js",
    "src/app.js",
    "src/main.js",
    "server.ts",
    "index.ts",
    "src/server.ts",
    "src/index.ts",
    "src/main.ts",
];

fn detect_node(s: &mut Scan<'_>) -> Result<Option<Build>, ToolError> {
    if !s.tree.has("package.json") {
        return Ok(None);
    }
    let mut b = Build::new(Family::Node, "javascript", "npm", "package.json");
    let pkg = match s.read("package.json") {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                s.note("package.json: not a JSON object; its fields were ignored");
                Map::new()
            }
            Err(e) => {
                s.note(format!(
                    "package.json: not valid JSON ({e}); its fields were ignored"
                ));
                Map::new()
            }
        },
    };
    let field = |k: &str| pkg.get(k).and_then(Value::as_str).map(str::to_owned);
    let deps = |k: &str| -> Vec<String> {
        pkg.get(k)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let scripts: Map<String, Value> = pkg
        .get("scripts")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let script = |k: &str| scripts.get(k).and_then(Value::as_str).map(str::to_owned);
    let dependencies = deps("dependencies");
    let dev = deps("devDependencies");

    if let Some(n) = field("name") {
        b.ev(format!("package.json: package `{n}`"));
        b.name = Some(n);
    }
    let locks: Vec<(&str, &str)> = NODE_LOCKS
        .iter()
        .copied()
        .filter(|(f, _)| s.tree.has(f))
        .collect();
    if let Some(&(file, pm)) = locks.first() {
        b.build_system = pm;
        b.ev(format!("{file}: the lock file of {pm}"));
        if locks.iter().any(|(_, other)| *other != pm) {
            let all: Vec<&str> = locks.iter().map(|(f, _)| *f).collect();
            s.note(format!(
                "several lock files ({}); {file} was taken",
                all.join(", ")
            ));
        }
    } else if let Some(pm) = field("packageManager")
        .as_deref()
        .and_then(|v| v.split('@').next())
        .and_then(|n| ["npm", "yarn", "pnpm", "bun"].into_iter().find(|k| *k == n))
    {
        b.build_system = pm;
        b.ev(format!("package.json: packageManager {pm}"));
    } else {
        b.ev("package.json: no lock file, npm assumed");
    }
    let pm = b.build_system;

    if s.tree.has("tsconfig.json") {
        b.language = "typescript";
        b.ev("tsconfig.json: TypeScript");
    } else if dependencies.iter().chain(&dev).any(|d| d == "typescript") {
        b.language = "typescript";
        b.ev("package.json: dependency `typescript`");
    }

    if let Some(v) = pkg
        .get("engines")
        .and_then(|e| e.get("node"))
        .and_then(Value::as_str)
    {
        if let Some(major) = first_number(v) {
            b.ev(format!("package.json: engines.node {v}"));
            b.version = Some(major);
        }
    } else if let Some((file, text)) = [".nvmrc", ".node-version"]
        .into_iter()
        .find_map(|f| s.read(f).map(|t| (f, t)))
        && let Some(major) = first_number(text.trim())
    {
        b.ev(format!("{file}: node {}", text.trim()));
        b.version = Some(major);
    }

    if let Some((dep, fw)) = NODE_FRAMEWORKS
        .iter()
        .find(|(d, _)| dependencies.iter().any(|x| x == *d))
    {
        b.ev(format!("package.json: dependency `{dep}`"));
        b.framework = Some((*fw).to_owned());
        if *fw == "next" {
            b.default_port = Some((3000, "`next start` listens on 3000 by default".to_owned()));
        }
    }

    // The entry point: the file the start script runs, `main`, or a conventional file.
    let start = script("start");
    if let Some(e) = start.as_deref().and_then(|st| script_entry(st, s.tree)) {
        b.ev(format!("package.json: scripts.start runs {e}"));
        b.entrypoint = Some(e);
    } else if let Some(main) = field("main").map(|m| m.trim_start_matches("./").to_owned()) {
        let built = ["dist/", "build/", "lib/", "out/"]
            .iter()
            .any(|d| main.starts_with(d));
        if s.tree.has(&main) || built {
            b.ev(format!("package.json: main {main}"));
            b.entrypoint = Some(main);
        } else {
            s.note(format!("package.json: main `{main}` does not exist"));
        }
    }
    if b.entrypoint.is_none() {
        if b.framework.as_deref() == Some("nest") && s.tree.has("src/main.ts") {
            b.ev("src/main.ts: Nest's entry, built to dist/main.js");
            b.entrypoint = Some("dist/main.js".to_owned());
        } else if let Some(f) = NODE_ENTRIES.iter().find(|f| s.tree.has(f)) {
            b.ev(format!("{f}: a conventional entry file"));
            b.entrypoint = Some((*f).to_owned());
        }
    }

    if let Some(t) = script("test") {
        if t.contains("no test specified") {
            b.ev("package.json: scripts.test is npm's placeholder");
        } else {
            b.ev(format!("package.json: scripts.test `{t}`"));
            b.test_command = Some(match pm {
                "bun" => "bun run test".to_owned(),
                other => format!("{other} test"),
            });
        }
    }

    for key in ["start", "serve"] {
        let Some(cmd) = script(key) else { continue };
        let mut found = line_ports(&cmd);
        if cmd.contains("next ") {
            found.extend(flag_value_ports(&cmd, "-p"));
        }
        for p in dedup_ports(found) {
            b.port(p, format!("package.json: scripts.{key} port {p}"));
        }
    }
    Ok(Some(b))
}

/// The file a start script runs with node (or a node runner), if it names one.
fn script_entry(script: &str, tree: &Tree) -> Option<String> {
    let last = script.rsplit("&&").next().unwrap_or(script);
    let last = last.rsplit(';').next().unwrap_or(last);
    let mut words = last
        .split_whitespace()
        .skip_while(|w| w.contains('=') && !w.starts_with('-'));
    let runner = words.next()?;
    if !["node", "nodemon", "ts-node", "ts-node-dev", "tsx", "bun"].contains(&runner) {
        return None;
    }
    words
        .filter(|w| !w.starts_with('-'))
        .map(|w| {
            w.trim_matches(|c| c == '"' || c == '\'')
                .trim_start_matches("./")
        })
        .find(|w| {
            tree.has(w)
                || ["js", "mjs", "cjs", "ts", "mts"]
                    .iter()
                    .any(|e| extension(w) == Some(*e))
        })
        .map(str::to_owned)
}

/// The first run of digits in `v` (a major version: `>=18.0` → `18`, `v20.1` → `20`).
fn first_number(v: &str) -> Option<String> {
    let start = v.find(|c: char| c.is_ascii_digit())?;
    let digits: String = v[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(digits)
}

// ---------------------------------------------------------------------------------------
// Python

const PY_ENTRIES: &[&str] = &[
    "main.py",
    "app.py",
    "wsgi.py",
    "asgi.py",
    "server.py",
    "api.py",
    "app/main.py",
    "app/__init__.py",
    "app/app.py",
    "src/main.py",
    "src/app.py",
    "api/main.py",
];

fn detect_python(s: &mut Scan<'_>) -> Result<Option<Build>, ToolError> {
    let mut reqs: Vec<String> = s
        .tree
        .files_in("")
        .filter(|f| f.starts_with("requirements") && f.ends_with(".txt"))
        .cloned()
        .collect();
    reqs.sort_by_key(|f| (f.as_str() != "requirements.txt", f.clone()));
    let tree = s.tree;
    let has = |f: &str| tree.has(f);
    let (pyproject, setup_py, setup_cfg, pipfile) = (
        has("pyproject.toml"),
        has("setup.py"),
        has("setup.cfg"),
        has("Pipfile"),
    );
    if !pyproject && reqs.is_empty() && !setup_py && !setup_cfg && !pipfile {
        return Ok(None);
    }
    let py = if pyproject {
        s.toml("pyproject.toml")
    } else {
        Toml::default()
    };
    let poetry = py.has_table(&["tool", "poetry"]);
    let pep621 = py.has_table(&["project"]);
    let manifest = if pyproject && (poetry || pep621) {
        "pyproject.toml".to_owned()
    } else if pipfile {
        "Pipfile".to_owned()
    } else if let Some(r) = reqs.first() {
        r.clone()
    } else if setup_py {
        "setup.py".to_owned()
    } else if setup_cfg {
        "setup.cfg".to_owned()
    } else {
        "pyproject.toml".to_owned()
    };
    let mut b = Build::new(Family::Python, "python", "pip", &manifest);
    if pyproject && !poetry && !pep621 {
        s.note(
            "pyproject.toml: no [project] or [tool.poetry] table (only tool settings); \
             nothing to install from it",
        );
    }

    if poetry {
        b.build_system = "poetry";
        b.ev("pyproject.toml: [tool.poetry]");
    } else if has("poetry.lock") {
        b.build_system = "poetry";
        b.ev("poetry.lock: the lock file of poetry");
    } else if has("uv.lock") {
        b.build_system = "uv";
        b.ev("uv.lock: the lock file of uv");
    } else if py.has_table(&["tool", "uv"]) {
        b.build_system = "uv";
        b.ev("pyproject.toml: [tool.uv]");
    } else if pipfile {
        b.build_system = "pipenv";
        b.ev("Pipfile: pipenv");
    } else if pep621 {
        b.ev("pyproject.toml: [project], installable with pip");
    } else if let Some(r) = reqs.first() {
        b.ev(format!("{r}: pip requirements"));
    } else {
        b.ev(format!("{manifest}: installable with pip"));
    }

    // Name.
    let setup_text = if setup_py { s.read("setup.py") } else { None };
    b.name = py
        .str(&["project", "name"])
        .or_else(|| py.str(&["tool", "poetry", "name"]))
        .or_else(|| setup_text.as_deref().and_then(|t| py_kwarg(t, "name")));
    if let Some(n) = &b.name {
        b.ev(format!("{manifest}: package `{n}`"));
    }

    // Dependencies, normalised (`Flask_Login[x]>=1` → `flask-login`).
    let mut deps: BTreeSet<String> = BTreeSet::new();
    for r in &reqs {
        if let Some(text) = s.read(r) {
            deps.extend(text.lines().filter_map(requirement_name));
        }
    }
    let mut pep508 = py.str_array(&["project", "dependencies"]);
    for (path, raw) in &py.entries {
        let in_group = path.first().is_some_and(|p| p == "dependency-groups")
            || (path.len() > 2 && path[0] == "project" && path[1] == "optional-dependencies");
        if in_group {
            pep508.extend(strings_in(raw));
        }
    }
    deps.extend(pep508.iter().filter_map(|d| requirement_name(d)));
    for path in py.paths() {
        if path.len() > 3
            && path[0] == "tool"
            && path[1] == "poetry"
            && let Some(i) = path
                .iter()
                .position(|p| p == "dependencies" || p == "dev-dependencies")
            && let Some(name) = path.get(i + 1)
        {
            deps.extend(requirement_name(name));
        }
    }
    let mut pipfile_python = None;
    if pipfile {
        let pf = s.toml("Pipfile");
        for k in pf
            .child_keys(&["packages"])
            .into_iter()
            .chain(pf.child_keys(&["dev-packages"]))
        {
            deps.extend(requirement_name(&k));
        }
        pipfile_python = pf.str(&["requires", "python_version"]);
    }
    if let Some(t) = &setup_text
        && let Some(i) = t.find("install_requires")
        && let Some(open) = t[i..].find('[')
        && let Some(close) = t[i + open..].find(']')
    {
        deps.extend(
            strings_in(&t[i + open..i + open + close])
                .iter()
                .filter_map(|d| requirement_name(d)),
        );
    }
    deps.remove("python");

    // Version: a pinned .python-version, then what the manifests require.
    let version_sources: Vec<(String, Option<String>)> = vec![
        (
            ".python-version".to_owned(),
            s.read(".python-version")
                .and_then(|t| t.lines().next().map(str::to_owned)),
        ),
        (
            "runtime.txt".to_owned(),
            s.read("runtime.txt").map(|t| t.trim().to_owned()),
        ),
        ("Pipfile: python_version".to_owned(), pipfile_python),
        (
            "pyproject.toml: requires-python".to_owned(),
            py.str(&["project", "requires-python"]),
        ),
        (
            "pyproject.toml: python".to_owned(),
            py.get(&["tool", "poetry", "dependencies", "python"])
                .and_then(|raw| unquote(raw).or_else(|| inline_get(raw, "version"))),
        ),
    ];
    if let Some((src, v, mm)) = version_sources.into_iter().find_map(|(src, v)| {
        let v = v?;
        let mm = major_minor(&v)?;
        Some((src, v, mm))
    }) {
        b.ev(if src.contains(':') {
            format!("{src} {}", v.trim())
        } else {
            format!("{src}: {}", v.trim())
        });
        b.version = Some(mm);
    }

    // Framework: from the dependencies, else from imports in the shallow sources.
    let frameworks = ["django", "fastapi", "flask"];
    let mut framework = frameworks
        .iter()
        .find(|f| deps.contains(**f))
        .map(|f| (*f, format!("{manifest}: dependency `{f}`")));
    if framework.is_none() {
        for f in s.sources(Family::Python, "").into_iter().take(30) {
            if f.matches('/').count() > 1 {
                break;
            }
            let Some(text) = s.read(&f) else { continue };
            if let Some(fw) = frameworks.iter().find(|fw| {
                text.contains(&format!("import {fw}")) || text.contains(&format!("from {fw}"))
            }) {
                framework = Some((*fw, format!("{f}: imports {fw}")));
                break;
            }
        }
    }
    if let Some((fw, why)) = &framework {
        b.ev(why.clone());
        b.framework = Some((*fw).to_owned());
    }

    // Entry point.
    let src_layout = pyproject && (poetry || pep621);
    match framework.map(|(f, _)| f) {
        Some("django") => {
            if has("manage.py") {
                b.ev("manage.py: Django's management script");
                b.entrypoint = Some("manage.py".to_owned());
            }
            b.default_port = Some((8000, "Django's runserver listens on 8000".to_owned()));
        }
        Some(fw @ ("fastapi" | "flask")) => {
            let ctor = if fw == "fastapi" { "FastAPI" } else { "Flask" };
            if let Some(app) = find_app_object(s, ctor)? {
                let module = py_module(&app.file, src_layout);
                let target = format!("{module}:{}", app.var);
                if fw == "flask" && app.runs_itself {
                    b.ev(format!(
                        "{}: `{}` runs itself under __main__",
                        app.file, app.var
                    ));
                    b.entrypoint = Some(app.file.clone());
                } else {
                    b.ev(format!(
                        "{}: the {ctor} {} `{}`",
                        app.file,
                        if app.factory { "factory" } else { "app" },
                        app.var
                    ));
                    b.entrypoint = Some(target);
                }
            }
            b.default_port = Some(if fw == "fastapi" {
                (8000, "uvicorn listens on 8000 by default".to_owned())
            } else {
                (
                    5000,
                    "Flask's development server listens on 5000".to_owned(),
                )
            });
        }
        _ => {
            let packages: Vec<String> = s
                .tree
                .dirs_in("")
                .chain(s.tree.dirs_in("src"))
                .filter(|d| s.tree.has(&join(d, "__main__.py")))
                .cloned()
                .collect();
            if let Some(pkg) = packages.first() {
                b.ev(format!("{pkg}/__main__.py: run with python -m"));
                b.entrypoint = Some(file_name(pkg).to_owned());
            } else if let Some(f) = ["main.py", "app.py", "run.py", "server.py", "manage.py"]
                .iter()
                .find(|f| has(f))
            {
                b.ev(format!("{f}: a conventional entry script"));
                b.entrypoint = Some((*f).to_owned());
            }
        }
    }

    // Tests.
    let runner = match b.build_system {
        "poetry" => "poetry run ",
        "uv" => "uv run ",
        "pipenv" => "pipenv run ",
        _ => "",
    };
    let test_file = s
        .tree
        .files
        .iter()
        .find(|f| {
            extension(f) == Some("py")
                && (file_name(f).starts_with("test_") || file_name(f).ends_with("_test.py"))
        })
        .cloned();
    let pytest_why = if deps.contains("pytest") {
        Some(format!("{manifest}: dependency `pytest`"))
    } else if has("pytest.ini") {
        Some("pytest.ini: pytest settings".to_owned())
    } else if py.has_table(&["tool", "pytest"]) {
        Some("pyproject.toml: [tool.pytest]".to_owned())
    } else if has("conftest.py") {
        Some("conftest.py: pytest fixtures".to_owned())
    } else if s.tree.has_dir("tests") {
        Some("tests/: a test folder".to_owned())
    } else {
        test_file.as_ref().map(|f| format!("{f}: a test module"))
    };
    if let Some(why) = pytest_why {
        b.ev(why);
        b.test_command = Some(format!("{runner}pytest"));
    } else if b.framework.as_deref() == Some("django") && has("manage.py") {
        b.test_command = Some(format!("{runner}python manage.py test"));
    }
    Ok(Some(b))
}

/// The normalised distribution name a requirement line or PEP 508 string starts with.
fn requirement_name(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with('-') || line.contains("://") {
        return None;
    }
    let name: String = line
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (!name.is_empty()).then(|| name.to_ascii_lowercase().replace('_', "-"))
}

/// `3.12` from `>=3.12`, `^3.12.1`, `python-3.12.4`, `3.12`; `3` alone from `3`.
fn major_minor(v: &str) -> Option<String> {
    let start = v.find(|c: char| c.is_ascii_digit())?;
    let mut parts = v[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|p| !p.is_empty());
    let major = parts.next()?;
    Some(match parts.next() {
        Some(minor) if v[start + major.len()..].starts_with('.') => format!("{major}.{minor}"),
        _ => major.to_owned(),
    })
}

/// The string a `name="…"` keyword argument gives in Python source.
fn py_kwarg(text: &str, key: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(key).map(|i| i + from) {
        from = i + key.len();
        if i > 0 && ident_byte(b[i - 1]) {
            continue;
        }
        let rest = text[from..].trim_start();
        if let Some(rest) = rest.strip_prefix('=')
            && !rest.starts_with('=')
            && let Some(s) = strings_in(rest.trim_start().split(['\n', ',']).next().unwrap_or(""))
                .into_iter()
                .next()
        {
            return Some(s);
        }
    }
    None
}

/// The module path of a Python file (`app/main.py` → `app.main`; `src/` dropped when the
/// package is installed from a manifest).
fn py_module(rel: &str, src_layout: bool) -> String {
    let p = rel.strip_suffix(".py").unwrap_or(rel);
    let p = if src_layout {
        p.strip_prefix("src/").unwrap_or(p)
    } else {
        p
    };
    let p = p.strip_suffix("/__init__").unwrap_or(p);
    p.replace('/', ".")
}

struct AppObject {
    file: String,
    var: String,
    factory: bool,
    runs_itself: bool,
}

/// The module-level `x = CTOR(` (or a `create_app` factory) in the likely files.
fn find_app_object(s: &mut Scan<'_>, ctor: &str) -> Result<Option<AppObject>, ToolError> {
    let mut files: Vec<String> = PY_ENTRIES
        .iter()
        .filter(|f| s.tree.has(f))
        .map(|f| (*f).to_owned())
        .collect();
    for f in s.sources(Family::Python, "").into_iter().take(60) {
        if !files.contains(&f) && f.matches('/').count() <= 2 {
            files.push(f);
        }
    }
    let call = format!("{ctor}(");
    for f in files {
        s.check()?;
        let Some(text) = s.read(&f) else { continue };
        if !text.contains(&call) {
            continue;
        }
        let runs_itself = text.contains("__main__") && text.contains(".run(");
        for line in text.lines() {
            if line.starts_with(char::is_whitespace) {
                continue;
            }
            let Some((lhs, rhs)) = line.split_once('=') else {
                continue;
            };
            let var = lhs.split(':').next().unwrap_or("").trim();
            if rhs.trim_start().starts_with(&call) && !var.is_empty() && var.bytes().all(ident_byte)
            {
                return Ok(Some(AppObject {
                    file: f,
                    var: var.to_owned(),
                    factory: false,
                    runs_itself,
                }));
            }
        }
        if text.contains("def create_app(") {
            return Ok(Some(AppObject {
                file: f,
                var: "create_app".to_owned(),
                factory: true,
                runs_itself,
            }));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// Java and Kotlin: Maven, Gradle

fn detect_jvm(s: &mut Scan<'_>) -> Result<Option<Build>, ToolError> {
    let gradle = [
        "build.gradle.kts",
        "build.gradle",
        "settings.gradle.kts",
        "settings.gradle",
    ]
    .iter()
    .any(|f| s.tree.has(f));
    if s.tree.has("pom.xml") {
        let b = detect_maven(s);
        if gradle {
            s.note("both pom.xml and Gradle build files: Maven was taken");
        }
        return Ok(Some(b));
    }
    if gradle {
        return Ok(Some(detect_gradle(s)));
    }
    Ok(None)
}

fn detect_maven(s: &mut Scan<'_>) -> Build {
    let mut b = Build::new(Family::Jvm, "java", "maven", "pom.xml");
    let doc = s.xml("pom.xml");
    let empty = Element::default();
    let project = doc.child("project").unwrap_or_else(|| {
        if !doc.children.is_empty() || !doc.text.trim().is_empty() {
            s.note("pom.xml: no <project> element");
        }
        &empty
    });
    let mut props: HashMap<String, String> = project
        .child("properties")
        .map(|p| {
            p.children
                .iter()
                .map(|c| (c.name.clone(), c.text.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let parent = project.child("parent");
    let artifact = project.text_of("artifactId");
    let version = project
        .text_of("version")
        .or_else(|| parent.and_then(|p| p.text_of("version")));
    if let Some(v) = &version {
        props.insert("project.version".to_owned(), v.clone());
    }
    if let Some(a) = &artifact {
        props.insert("project.artifactId".to_owned(), a.clone());
    }
    let resolve = |v: &str| resolve_props(v, &props);
    if let Some(a) = &artifact {
        b.ev(format!("pom.xml: artifactId {a}"));
    }
    b.name.clone_from(&artifact);

    let java = [
        "java.version",
        "maven.compiler.release",
        "maven.compiler.source",
        "maven.compiler.target",
    ]
    .iter()
    .find_map(|k| props.get(*k).map(|v| (*k, resolve(v))))
    .or_else(|| {
        let mut plugins = Vec::new();
        project.find_all("plugin", &mut plugins);
        plugins
            .iter()
            .find(|p| p.text_of("artifactId").as_deref() == Some("maven-compiler-plugin"))
            .and_then(|p| p.child("configuration"))
            .and_then(|c| c.text_of("release").or_else(|| c.text_of("source")))
            .map(|v| ("maven-compiler-plugin", resolve(&v)))
    });
    if let Some((key, v)) = java
        && let Some(n) = java_release(&v)
    {
        b.ev(format!("pom.xml: {key} {v}"));
        b.version = Some(n);
    }

    let mut group_ids = Vec::new();
    project.find_all("groupId", &mut group_ids);
    let groups: Vec<String> = group_ids.iter().map(|g| g.text.trim().to_owned()).collect();
    let parent_artifact = parent.and_then(|p| p.text_of("artifactId"));
    if parent_artifact.as_deref() == Some("spring-boot-starter-parent") {
        b.ev("pom.xml: parent spring-boot-starter-parent");
        b.framework = Some("spring-boot".to_owned());
    } else if groups.iter().any(|g| g == "org.springframework.boot") {
        b.ev("pom.xml: org.springframework.boot dependencies");
        b.framework = Some("spring-boot".to_owned());
    } else if let Some((g, fw)) = [("io.quarkus", "quarkus"), ("io.micronaut", "micronaut")]
        .iter()
        .find(|(g, _)| groups.iter().any(|x| x.starts_with(g)))
    {
        b.ev(format!("pom.xml: {g} dependencies"));
        b.framework = Some((*fw).to_owned());
    }
    if b.framework.is_some() {
        b.default_port = Some((
            8080,
            format!(
                "{} listens on 8080 by default",
                b.framework.as_deref().unwrap_or("the framework")
            ),
        ));
    }

    let mut artifact_ids = Vec::new();
    project.find_all("artifactId", &mut artifact_ids);
    if s.tree.has_dir("src/main/kotlin") {
        b.language = "kotlin";
        b.ev("src/main/kotlin: Kotlin sources");
    } else if artifact_ids
        .iter()
        .any(|a| a.text.trim() == "kotlin-maven-plugin")
    {
        b.language = "kotlin";
        b.ev("pom.xml: kotlin-maven-plugin");
    }

    let packaging = project
        .text_of("packaging")
        .unwrap_or_else(|| "jar".to_owned());
    if packaging == "pom" {
        let modules: Vec<String> = project
            .child("modules")
            .map(|m| {
                m.children_named("module")
                    .map(|c| c.text.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        b.ev(format!(
            "pom.xml: an aggregator of modules {}",
            modules.join(", ")
        ));
    } else {
        let final_name = project
            .child("build")
            .and_then(|bd| bd.text_of("finalName"))
            .map(|f| resolve(&f))
            .or_else(|| {
                artifact.as_ref().map(|a| match &version {
                    Some(v) => format!("{a}-{}", resolve(v)),
                    None => a.clone(),
                })
            });
        if let Some(f) = final_name {
            let ext = if packaging == "war" { "war" } else { "jar" };
            b.ev(format!("pom.xml: packaging {packaging}"));
            b.entrypoint = Some(format!("target/{f}.{ext}"));
        }
    }

    if s.tree.has_dir("src/test") {
        b.ev("src/test: tests");
        b.test_command = Some(if s.tree.has("mvnw") {
            "./mvnw test".to_owned()
        } else {
            "mvn test".to_owned()
        });
    }
    jvm_config_ports(s, "", &mut b);
    b
}

/// `${x}` replaced from `props` (one level).
fn resolve_props(v: &str, props: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let key = &rest[i + 2..i + end];
        match props.get(key) {
            Some(val) => out.push_str(val),
            None => out.push_str(&rest[i..=i + end]),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    out
}

/// `17` from `17`, `1.8` → `8`, `VERSION_1_8` → `8`, `JVM_21` → `21`.
fn java_release(v: &str) -> Option<String> {
    let nums: Vec<&str> = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .collect();
    match nums.as_slice() {
        ["1", minor, ..] => Some((*minor).to_owned()),
        [major, ..] => Some((*major).to_owned()),
        [] => None,
    }
}

fn detect_gradle(s: &mut Scan<'_>) -> Build {
    let root_build = ["build.gradle.kts", "build.gradle"]
        .into_iter()
        .find(|f| s.tree.has(f));
    let settings = ["settings.gradle.kts", "settings.gradle"]
        .into_iter()
        .find(|f| s.tree.has(f));
    let mut b = Build::new(
        Family::Jvm,
        "java",
        "gradle",
        root_build.or(settings).unwrap_or("build.gradle"),
    );
    let settings_text = settings.and_then(|f| s.read(f)).unwrap_or_default();
    let root_name = settings_text
        .lines()
        .find(|l| l.contains("rootProject.name"))
        .and_then(|l| strings_in(l).into_iter().next());
    let includes: Vec<String> = settings_text
        .lines()
        .filter(|l| l.trim_start().starts_with("include"))
        .flat_map(strings_in)
        .map(|m| m.trim_start_matches(':').replace(':', "/"))
        .collect();
    let root_text = root_build.and_then(|f| s.read(f)).unwrap_or_default();
    let is_app = |t: &str| {
        t.contains("org.springframework.boot")
            || t.contains("mainClass")
            || gradle_application_plugin(t)
            || t.contains("io.ktor")
    };

    // The module that runs: the root when it is the app or there are no modules.
    let mut chosen: (String, Option<String>, String) = (
        String::new(),
        root_build.map(str::to_owned),
        root_text.clone(),
    );
    if !is_app(&root_text) && !includes.is_empty() {
        let mut modules = Vec::new();
        for m in &includes {
            if let Some(f) = ["build.gradle.kts", "build.gradle"]
                .iter()
                .map(|f| join(m, f))
                .find(|f| s.tree.has(f))
            {
                let text = s.read(&f).unwrap_or_default();
                modules.push((m.clone(), Some(f), text));
            }
        }
        let pick = modules
            .iter()
            .position(|(_, _, t)| is_app(t))
            .or_else(|| modules.iter().position(|(m, _, _)| m == "app"))
            .unwrap_or(0);
        if pick < modules.len() {
            chosen = modules.swap_remove(pick);
        }
    }
    let (dir, build_file, text) = chosen;
    if let Some(f) = &build_file {
        b.manifest.clone_from(f);
    }
    b.dir.clone_from(&dir);

    b.name = if dir.is_empty() {
        root_name.clone()
    } else {
        Some(file_name(&dir).to_owned())
    };
    match (&root_name, settings) {
        (Some(n), Some(f)) => b.ev(format!("{f}: rootProject.name {n}")),
        _ if dir.is_empty() => s.note(
            "no rootProject.name in settings.gradle(.kts): Gradle would name the project \
             after its folder, which is not guessed here",
        ),
        _ => {}
    }
    if !dir.is_empty() {
        b.ev(format!("{}: the application module `{dir}`", b.manifest));
    }

    if s.tree.has_dir(&join(&dir, "src/main/kotlin")) {
        b.language = "kotlin";
        b.ev(format!("{}: Kotlin sources", join(&dir, "src/main/kotlin")));
    } else if text.contains("kotlin(\"jvm\")") || text.contains("org.jetbrains.kotlin.jvm") {
        b.language = "kotlin";
        b.ev(format!("{}: the Kotlin JVM plugin", b.manifest));
    }

    let manifest = b.manifest.clone();
    if let Some((what, v)) = gradle_java_version(&text).or_else(|| gradle_java_version(&root_text))
    {
        b.ev(format!("{manifest}: {what}"));
        b.version = Some(v);
    }
    let spring = text.contains("org.springframework.boot");
    for (needle, fw) in [
        ("org.springframework.boot", "spring-boot"),
        ("io.ktor", "ktor"),
        ("io.quarkus", "quarkus"),
        ("io.micronaut", "micronaut"),
    ] {
        if text.contains(needle) {
            b.ev(format!("{manifest}: {needle}"));
            b.framework = Some(fw.to_owned());
            if fw != "ktor" {
                b.default_port = Some((8080, format!("{fw} listens on 8080 by default")));
            }
            break;
        }
    }

    let project_version = text
        .lines()
        .chain(root_text.lines())
        .map(str::trim)
        .find(|l| l.starts_with("version ") || l.starts_with("version="))
        .and_then(|l| strings_in(l).into_iter().next());
    let main_class = text
        .lines()
        .find(|l| l.contains("mainClass"))
        .and_then(|l| strings_in(l).into_iter().next());
    if let Some(m) = &main_class {
        b.ev(format!("{manifest}: mainClass {m}"));
    }
    let libs = join(&dir, "build/libs");
    let name = b.name.clone();
    b.entrypoint = match name {
        None => None,
        Some(n) if !spring && (gradle_application_plugin(&text) || main_class.is_some()) => {
            b.ev(format!("{manifest}: the application plugin (installDist)"));
            Some(format!("{}/{n}/bin/{n}", join(&dir, "build/install")))
        }
        Some(n) => Some(match &project_version {
            Some(v) => format!("{libs}/{n}-{v}.jar"),
            None => format!("{libs}/{n}.jar"),
        }),
    };

    if s.tree.has_dir(&join(&dir, "src/test")) {
        b.ev(format!("{}: tests", join(&dir, "src/test")));
        b.test_command = Some(if s.tree.has("gradlew") {
            "./gradlew test".to_owned()
        } else {
            "gradle test".to_owned()
        });
    }
    jvm_config_ports(s, &dir, &mut b);
    b
}

fn gradle_application_plugin(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l == "application"
            || l.contains("id(\"application\")")
            || l.contains("id 'application'")
            || l.contains("id \"application\"")
            || l.contains("plugin: 'application'")
            || l.contains("plugin: \"application\"")
    })
}

/// The Java release a Gradle build asks for, with what said it.
fn gradle_java_version(text: &str) -> Option<(String, String)> {
    for key in [
        "jvmToolchain(",
        "JavaLanguageVersion.of(",
        "JavaVersion.VERSION_",
        "sourceCompatibility",
        "jvmTarget",
    ] {
        if let Some(line) = text.lines().find(|l| l.contains(key))
            && let Some(i) = line.find(key)
            && let Some(v) = java_release(&line[i + key.len()..])
        {
            return Some((line.trim().to_owned(), v));
        }
    }
    None
}

/// Ports in Spring, Quarkus, Micronaut and Ktor config under `<dir>/src/main/resources`.
fn jvm_config_ports(s: &mut Scan<'_>, dir: &str, b: &mut Build) {
    const KEYS: &[&str] = &[
        "server.port",
        "quarkus.http.port",
        "micronaut.server.port",
        "ktor.deployment.port",
    ];
    let res = join(dir, "src/main/resources");
    let props = join(&res, "application.properties");
    if let Some(text) = s.read(&props) {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some(sep) = line.find(['=', ':']) else {
                continue;
            };
            let key = line[..sep].trim();
            if KEYS.contains(&key)
                && let Some(p) = config_port(line[sep + 1..].trim())
            {
                b.port(p, format!("{props}:{}: {key}={p}", i + 1));
            }
        }
    }
    for name in ["application.yml", "application.yaml"] {
        let rel = join(&res, name);
        let Some(text) = s.read(&rel) else { continue };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = match <serde_yaml::Value as serde::Deserialize>::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    s.note(format!("{rel}: not valid YAML ({e})"));
                    break;
                }
            };
            for key in KEYS {
                let path: Vec<&str> = key.split('.').collect();
                let port = yaml_get(&value, &path).and_then(|v| match v {
                    serde_yaml::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                    serde_yaml::Value::String(t) => config_port(t),
                    _ => None,
                });
                if let Some(p) = port.filter(|p| *p > 0) {
                    b.port(p, format!("{rel}: {key} {p}"));
                }
            }
        }
    }
    let conf = join(&res, "application.conf");
    if let Some(text) = s.read(&conf) {
        for (i, line) in text.lines().enumerate() {
            for p in line_ports(line) {
                b.port(p, format!("{conf}:{}: port {p}", i + 1));
            }
        }
    }
}

/// A port from a config value: `8080`, `"8080"`, `${PORT:8080}`, `${PORT:-8080}`.
fn config_port(v: &str) -> Option<u16> {
    let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
    let v = match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner.split_once(':')?.1.trim_start_matches('-'),
        None => v,
    };
    v.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

/// A value at a dotted path, matching keys written nested or flattened (`server.port`).
fn yaml_get<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a serde_yaml::Value> {
    if path.is_empty() {
        return Some(v);
    }
    let map = v.as_mapping()?;
    (1..=path.len()).find_map(|k| {
        let key = path[..k].join(".");
        map.get(key.as_str())
            .and_then(|child| yaml_get(child, &path[k..]))
    })
}

// ---------------------------------------------------------------------------------------
// .NET

struct DotnetProject {
    path: String,
    web: bool,
    test: bool,
    tfm: Option<String>,
    assembly: Option<String>,
}

fn read_dotnet_project(s: &mut Scan<'_>, rel: &str) -> DotnetProject {
    let doc = s.xml(rel);
    let empty = Element::default();
    let project = doc.child("Project").unwrap_or(&empty);
    let sdk = project
        .attr("Sdk")
        .map(str::to_owned)
        .or_else(|| {
            project
                .child("Sdk")
                .and_then(|e| e.attr("Name"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let property = |name: &str| {
        project
            .children_named("PropertyGroup")
            .find_map(|g| g.text_of(name))
    };
    let mut refs = Vec::new();
    project.find_all("PackageReference", &mut refs);
    let test = property("IsTestProject").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || sdk.starts_with("MSTest.Sdk")
        || refs
            .iter()
            .any(|r| r.attr("Include") == Some("Microsoft.NET.Test.Sdk"));
    let tfm = property("TargetFramework").or_else(|| {
        property("TargetFrameworks").and_then(|v| {
            v.split(';')
                .map(str::trim)
                .rfind(|t| !t.is_empty())
                .map(str::to_owned)
        })
    });
    DotnetProject {
        path: rel.to_owned(),
        web: sdk == "Microsoft.NET.Sdk.Web",
        test,
        tfm,
        assembly: property("AssemblyName"),
    }
}

fn is_dotnet_project(f: &str) -> bool {
    matches!(extension(f), Some("csproj" | "fsproj"))
}

fn detect_dotnet(s: &mut Scan<'_>) -> Result<Option<Build>, ToolError> {
    let root_projects: Vec<String> = s
        .tree
        .files_in("")
        .filter(|f| is_dotnet_project(f))
        .cloned()
        .collect();
    let solutions: Vec<String> = s
        .tree
        .files_in("")
        .filter(|f| extension(f) == Some("sln"))
        .cloned()
        .collect();
    if root_projects.is_empty() && solutions.is_empty() {
        return Ok(None);
    }
    let mut candidates = root_projects;
    let mut via = None;
    if candidates.is_empty() {
        for sln in &solutions {
            let Some(text) = s.read(sln) else { continue };
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("Project("))
            {
                if let Some(p) = line
                    .split(',')
                    .nth(1)
                    .map(|p| p.trim().trim_matches('"').replace('\\', "/"))
                    && is_dotnet_project(&p)
                    && s.tree.has(&p)
                    && !candidates.contains(&p)
                {
                    candidates.push(p);
                }
            }
            via = Some(sln.clone());
        }
    }
    let manifest = candidates
        .first()
        .or(solutions.first())
        .cloned()
        .unwrap_or_default();
    let mut b = Build::new(Family::Dotnet, "csharp", "dotnet", &manifest);
    let mut projects = Vec::new();
    for c in candidates.iter().take(20) {
        s.check()?;
        projects.push(read_dotnet_project(s, c));
    }
    projects.sort_by_key(|p| (p.test, !p.web, p.path.clone()));
    let Some(main) = projects.first() else {
        if let Some(sln) = &via {
            s.note(format!("{sln}: none of the projects it lists was found"));
        }
        return Ok(Some(b));
    };
    b.manifest.clone_from(&main.path);
    b.dir = parent_of(&main.path).to_owned();
    if let Some(sln) = &via {
        b.ev(format!("{sln}: lists {}", main.path));
    }
    if extension(&main.path) == Some("fsproj") {
        b.language = "fsharp";
    }
    let name = main
        .assembly
        .clone()
        .unwrap_or_else(|| stem(&main.path).to_owned());
    b.ev(format!("{}: assembly {name}", main.path));
    b.entrypoint = Some(format!("{name}.dll"));
    b.name = Some(name);
    if let Some(t) = &main.tfm {
        b.ev(format!("{}: target framework {t}", main.path));
        b.version = Some(t.clone());
    }
    if main.web {
        b.ev(format!("{}: Microsoft.NET.Sdk.Web", main.path));
        b.framework = Some("aspnetcore".to_owned());
        let modern = main
            .tfm
            .as_deref()
            .and_then(|t| t.strip_prefix("net"))
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|m| (8..100).contains(&m));
        b.default_port = Some(if modern {
            (
                8080,
                "ASP.NET Core images listen on 8080 (ASPNETCORE_HTTP_PORTS) since .NET 8"
                    .to_owned(),
            )
        } else {
            (
                80,
                "ASP.NET Core images before .NET 8 listen on 80".to_owned(),
            )
        });
    }

    // Tests: any test project in the folder.
    let mut test_project = projects.iter().find(|p| p.test).map(|p| p.path.clone());
    if test_project.is_none() {
        let others: Vec<String> = s
            .tree
            .files
            .iter()
            .filter(|f| is_dotnet_project(f) && !candidates.contains(f))
            .take(20)
            .cloned()
            .collect();
        for f in others {
            if read_dotnet_project(s, &f).test {
                test_project = Some(f);
                break;
            }
        }
    }
    if let Some(t) = test_project {
        b.ev(format!("{t}: a test project"));
        b.test_command = Some("dotnet test".to_owned());
    }

    // Ports: launch profiles and Kestrel settings.
    let launch = join(&b.dir, "Properties/launchSettings.json");
    if let Some(v) = s.json(&launch)
        && let Some(profiles) = v.get("profiles").and_then(Value::as_object)
    {
        for (pname, profile) in profiles {
            if profile.get("commandName").and_then(Value::as_str) != Some("Project") {
                continue;
            }
            if let Some(urls) = profile.get("applicationUrl").and_then(Value::as_str) {
                for p in urls.split(';').filter_map(url_port) {
                    b.port(
                        p,
                        format!("{launch}: profile `{pname}` applicationUrl port {p}"),
                    );
                }
            }
            if let Some(env) = profile
                .get("environmentVariables")
                .and_then(Value::as_object)
            {
                for (k, val) in env {
                    for p in val
                        .as_str()
                        .map(|v| env_var_ports(k, v))
                        .unwrap_or_default()
                    {
                        b.port(p, format!("{launch}: profile `{pname}` {k} port {p}"));
                    }
                }
            }
        }
    }
    let appsettings = join(&b.dir, "appsettings.json");
    if let Some(v) = s.json(&appsettings) {
        let mut urls: Vec<(String, String)> = Vec::new();
        if let Some(u) = v.get("Urls").and_then(Value::as_str) {
            urls.push(("Urls".to_owned(), u.to_owned()));
        }
        if let Some(eps) = v
            .get("Kestrel")
            .and_then(|k| k.get("Endpoints"))
            .and_then(Value::as_object)
        {
            for (name, ep) in eps {
                if let Some(u) = ep.get("Url").and_then(Value::as_str) {
                    urls.push((format!("Kestrel.Endpoints.{name}.Url"), u.to_owned()));
                }
            }
        }
        for (key, u) in urls {
            for p in u.split(';').filter_map(url_port) {
                b.port(p, format!("{appsettings}: {key} port {p}"));
            }
        }
    }
    Ok(Some(b))
}

/// The port of a URL such as `http://localhost:5080` or `http://+:80`.
fn url_port(url: &str) -> Option<u16> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = authority.rsplit_once(']').map_or(authority, |(_, p)| p);
    match host_port.rsplit_once(':') {
        Some((_, p)) => p.parse::<u16>().ok().filter(|p| *p > 0),
        None => match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Ports

/// Ports with the evidence for each.
#[derive(Default)]
struct Ports {
    found: Vec<(u16, String)>,
}

impl Ports {
    fn add(&mut self, port: u16, why: String) {
        if port > 0 {
            self.found.push((port, why));
        }
    }

    fn finish(self) -> (Vec<u16>, Vec<String>) {
        let ports: BTreeSet<u16> = self.found.iter().map(|(p, _)| *p).collect();
        (
            ports.into_iter().collect(),
            self.found.into_iter().map(|(_, w)| w).collect(),
        )
    }
}

/// Environment variables that name the port an app listens on.
const PORT_VARS: &[&str] = &[
    "PORT",
    "HTTP_PORT",
    "SERVER_PORT",
    "APP_PORT",
    "LISTEN_PORT",
    "WEB_PORT",
    "API_PORT",
];

/// Ports an environment variable assignment names (`PORT=3000`, `ASPNETCORE_URLS=…`).
fn env_var_ports(key: &str, value: &str) -> Vec<u16> {
    let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
    match key {
        "ASPNETCORE_URLS" => value.split(';').filter_map(url_port).collect(),
        "ASPNETCORE_HTTP_PORTS" | "ASPNETCORE_HTTPS_PORTS" => value
            .split([';', ','])
            .filter_map(|p| p.trim().parse::<u16>().ok())
            .filter(|p| *p > 0)
            .collect(),
        k if PORT_VARS.contains(&k) => config_port(value).into_iter().collect(),
        _ => Vec::new(),
    }
}

fn env_ports(s: &mut Scan<'_>, dir: &str, ports: &mut Ports) {
    for name in [".env", ".env.example", ".env.sample", ".env.defaults"] {
        let rel = join(dir, name);
        let Some(text) = s.read(&rel) else { continue };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.split(" #").next().unwrap_or(value);
            for p in env_var_ports(key.trim(), value) {
                ports.add(p, format!("{rel}:{}: {} {p}", i + 1, key.trim()));
            }
        }
    }
}

fn procfile_ports(s: &mut Scan<'_>, ports: &mut Ports) {
    let Some(text) = s.read("Procfile") else {
        return;
    };
    for (i, line) in text.lines().enumerate() {
        for p in line_ports(line) {
            ports.add(p, format!("Procfile:{}: port {p}", i + 1));
        }
    }
}

fn dockerfile_ports(s: &mut Scan<'_>, rel: &str, ports: &mut Ports) {
    let Some(text) = s.read(rel) else { return };
    let mut vars: HashMap<String, String> = HashMap::new();
    for (line_no, inst) in dockerfile_instructions(&text) {
        let (word, rest) = inst
            .split_once(char::is_whitespace)
            .map_or((inst.as_str(), ""), |(w, r)| (w, r.trim()));
        match word.to_ascii_uppercase().as_str() {
            "ARG" | "ENV" => {
                let env = word.eq_ignore_ascii_case("ENV");
                for (k, v) in dockerfile_assignments(rest) {
                    if env {
                        for p in env_var_ports(&k, &v) {
                            ports.add(p, format!("{rel}:{line_no}: ENV {k}={p}"));
                        }
                    }
                    vars.insert(k, v);
                }
            }
            "EXPOSE" => {
                for w in rest.split_whitespace() {
                    let w = expand_var(w, &vars);
                    let w = w.split('/').next().unwrap_or("");
                    if let Ok(p) = w.parse::<u16>()
                        && p > 0
                    {
                        ports.add(p, format!("{rel}:{line_no}: EXPOSE {p}"));
                    }
                }
            }
            "CMD" | "ENTRYPOINT" => {
                for p in line_ports(rest) {
                    ports.add(p, format!("{rel}:{line_no}: {word} port {p}"));
                }
            }
            _ => {}
        }
    }
}

/// A Dockerfile's instructions with continuations joined, comments left out, each with
/// its first line's number.
fn dockerfile_instructions(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (body, more) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        match &mut current {
            Some((_, acc)) => {
                acc.push(' ');
                acc.push_str(body);
            }
            None => current = Some((i + 1, body.to_owned())),
        }
        if !more && let Some(done) = current.take() {
            out.push(done);
        }
    }
    out.extend(current);
    out
}

/// `K=V K2="V 2"` or the legacy `K V`.
fn dockerfile_assignments(rest: &str) -> Vec<(String, String)> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        return match rest.split_once(char::is_whitespace) {
            Some((k, v)) => vec![(k.to_owned(), v.trim().to_owned())],
            None if !rest.is_empty() => vec![(rest.to_owned(), String::new())],
            None => Vec::new(),
        };
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                _ => value.push(c),
            }
            chars.next();
        }
        out.push((key.trim().to_owned(), value));
    }
    out
}

/// `$X`, `${X}`, `${X:-default}` from `vars`.
fn expand_var(word: &str, vars: &HashMap<String, String>) -> String {
    let Some(name) = word.strip_prefix('$') else {
        return word.to_owned();
    };
    let (name, suffix) = match name.strip_prefix('{').and_then(|n| n.split_once('}')) {
        Some((inner, suffix)) => (inner, suffix),
        None => {
            let end = name.find(|c: char| !ident_char(c)).unwrap_or(name.len());
            (&name[..end], &name[end..])
        }
    };
    let (name, default) = match name.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (name, None),
    };
    let value = vars
        .get(name)
        .filter(|v| !v.is_empty())
        .map(String::as_str)
        .or(default)
        .unwrap_or("");
    format!("{value}{suffix}")
}

/// Ports named in the main family's sources.
fn source_ports(
    s: &mut Scan<'_>,
    family: Family,
    dir: &str,
    ports: &mut Ports,
) -> Result<(), ToolError> {
    for f in s.sources(family, dir) {
        s.check()?;
        let Some(text) = s.read(&f) else { continue };
        let mut seen = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            // Rust's unit tests live in the source file, in a module that comes last.
            if family == Family::Rust && line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            for p in line_ports(line) {
                if seen.insert(p) {
                    ports.add(p, format!("{f}:{}: port {p}", i + 1));
                }
            }
        }
    }
    Ok(())
}

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Identifiers (lower case, `_` removed) whose assignment or argument is a port.
const PORT_IDENTS: &[&str] = &[
    "port",
    "httpport",
    "serverport",
    "appport",
    "defaultport",
    "listenport",
    "webport",
    "apiport",
];

/// Well-known database and broker ports: a `port = …` naming one is not the app's.
const DATASTORE_PORTS: &[u16] = &[1433, 1521, 3306, 5432, 5672, 6379, 9042, 9200, 11211, 27017];

/// A number standing alone at byte `i` of `b`: (value, end).
fn number_at(b: &[u8], i: usize) -> Option<(u32, usize)> {
    if i > 0 && (ident_byte(b[i - 1]) || b[i - 1] == b'.') {
        return None;
    }
    let mut j = i;
    let mut v: u32 = 0;
    while j < b.len() && b[j].is_ascii_digit() && j - i < 6 {
        v = v * 10 + u32::from(b[j] - b'0');
        j += 1;
    }
    if j == i {
        return None;
    }
    let next = b.get(j).copied();
    if next.is_some_and(ident_byte)
        || (next == Some(b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit))
    {
        return None;
    }
    Some((v, j))
}

fn as_port(v: u32, min: u16) -> Option<u16> {
    u16::try_from(v).ok().filter(|p| *p >= min && *p > 0)
}

/// The ports a line of code or config names, by the heuristics of the module doc.
fn line_ports(line: &str) -> Vec<u16> {
    let t = line.trim_start();
    if ["//", "#", "/*", "*", "--", "<!--", ";"]
        .iter()
        .any(|c| t.starts_with(c))
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    addr_ports(line, &mut out);
    listen_ports(line, &mut out);
    named_ports(line, &mut out);
    env_fallback_ports(line, &mut out);
    out.extend(flag_value_ports(line, "--port"));
    bind_flag_ports(line, &mut out);
    dedup_ports(out)
}

fn dedup_ports(v: Vec<u16>) -> Vec<u16> {
    let mut seen = BTreeSet::new();
    v.into_iter().filter(|p| seen.insert(*p)).collect()
}

/// `"0.0.0.0:8080"`, `":8081"`, `[::]:80`, `*:5000`, `+:80`; `localhost:3000` and
/// `127.0.0.1:3000` only on a line that listens, binds or serves.
fn addr_ports(line: &str, out: &mut Vec<u16>) {
    let b = line.as_bytes();
    let lower = line.to_ascii_lowercase();
    let listens = ["listen", "bind", "serve", "run(", "urls", "start("]
        .iter()
        .any(|k| lower.contains(k));
    let mut i = 0;
    while i < b.len() {
        if b[i] != b':' {
            i += 1;
            continue;
        }
        let Some((v, end)) = number_at(b, i + 1) else {
            i += 1;
            continue;
        };
        let before = &line[..i];
        let host = if before.ends_with("[::]") {
            "[::]"
        } else {
            let start = before
                .bytes()
                .rposition(|c| {
                    !(c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'*' | b'+'))
                })
                .map_or(0, |p| p + 1);
            &before[start..]
        };
        let ok = match host {
            "0.0.0.0" | "[::]" | "*" | "+" => true,
            "" => {
                // `":8080"`: a quote opens right before the colon and closes after the number.
                let open = before.bytes().last();
                matches!(open, Some(b'"' | b'\'' | b'`')) && b.get(end).copied() == open
            }
            "localhost" | "127.0.0.1" => {
                listens && u16::try_from(v).is_ok_and(|p| !DATASTORE_PORTS.contains(&p))
            }
            _ => false,
        };
        if ok && let Some(p) = as_port(v, 1) {
            out.push(p);
        }
        i = end;
    }
}

/// `listen(3000` and `.listen(3000`.
fn listen_ports(line: &str, out: &mut Vec<u16>) {
    for key in ["listen(", "Listen("] {
        for (i, _) in line.match_indices(key) {
            if i > 0 && ident_byte(line.as_bytes()[i - 1]) {
                continue;
            }
            let rest = &line[i + key.len()..];
            let skipped = rest.len() - rest.trim_start().len();
            let at = i + key.len() + skipped;
            if let Some((v, _)) = number_at(line.as_bytes(), at)
                && let Some(p) = as_port(v, 80)
            {
                out.push(p);
            }
        }
    }
}

/// `port = 5000`, `port=5000`, `port: 3000`, `"port": 3000`, `port := "8081"`.
fn named_ports(line: &str, out: &mut Vec<u16>) {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !ident_byte(b[i]) || (i > 0 && ident_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident_byte(b[i]) {
            i += 1;
        }
        let ident = line[start..i].to_ascii_lowercase().replace('_', "");
        if !PORT_IDENTS.contains(&ident.as_str()) {
            continue;
        }
        let mut j = i;
        if matches!(b.get(j), Some(b'"' | b'\'')) {
            j += 1;
        }
        while b.get(j).is_some_and(|c| *c == b' ' || *c == b'\t') {
            j += 1;
        }
        match (b.get(j), b.get(j + 1)) {
            (Some(b':'), Some(b'=')) => j += 2,
            (Some(b':'), Some(b':')) | (Some(b'='), Some(b'=' | b'>')) => continue,
            (Some(b':' | b'='), _) => j += 1,
            _ => continue,
        }
        while b.get(j).is_some_and(|c| *c == b' ' || *c == b'\t') {
            j += 1;
        }
        if matches!(b.get(j), Some(b'"' | b'\'')) {
            j += 1;
        }
        if let Some((v, _)) = number_at(b, j)
            && let Some(p) = as_port(v, 80)
            && !DATASTORE_PORTS.contains(&p)
        {
            out.push(p);
        }
    }
}

/// `process.env.PORT || 3000`, `getenv("PORT", "8000")`, `${PORT:-8080}`,
/// `env::var("PORT").unwrap_or("8080")`: the first number after a port variable.
fn env_fallback_ports(line: &str, out: &mut Vec<u16>) {
    let b = line.as_bytes();
    for var in PORT_VARS {
        for (i, _) in line.match_indices(var) {
            let end = i + var.len();
            if (i > 0 && ident_byte(b[i - 1])) || b.get(end).is_some_and(|c| ident_byte(*c)) {
                continue;
            }
            let mut j = end;
            while j < b.len() && j < end + 48 {
                let c = b[j];
                if c == b';' || (c == b'=' && j > 0 && b[j - 1] != b':') {
                    break;
                }
                if c.is_ascii_digit()
                    && let Some((v, after)) = number_at(b, j)
                {
                    if let Some(p) = as_port(v, 80) {
                        if !DATASTORE_PORTS.contains(&p) {
                            out.push(p);
                        }
                        break;
                    }
                    j = after;
                    continue;
                }
                j += 1;
            }
        }
    }
}

/// `FLAG 8000`, `FLAG=8000`, `"FLAG", "8000"`.
fn flag_value_ports(line: &str, flag: &str) -> Vec<u16> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    for (i, _) in line.match_indices(flag) {
        if i > 0 && !matches!(b[i - 1], b' ' | b'"' | b'\'' | b'\t' | b'[') {
            continue;
        }
        let mut j = i + flag.len();
        if !matches!(b.get(j), Some(b' ' | b'=' | b'"' | b'\'' | b',' | b'\t')) {
            continue;
        }
        while matches!(b.get(j), Some(b' ' | b'=' | b'"' | b'\'' | b',' | b'\t')) {
            j += 1;
        }
        if let Some((v, _)) = number_at(b, j)
            && let Some(p) = as_port(v, 1)
        {
            out.push(p);
        }
    }
    out
}

/// `--bind 0.0.0.0:8000`, `-b :8000` (gunicorn, uvicorn).
fn bind_flag_ports(line: &str, out: &mut Vec<u16>) {
    for flag in ["--bind", "-b"] {
        let b = line.as_bytes();
        for (i, _) in line.match_indices(flag) {
            if i > 0 && !matches!(b[i - 1], b' ' | b'"' | b'\'' | b'\t') {
                continue;
            }
            let rest = &line[i + flag.len()..];
            if !rest.starts_with([' ', '=', '"', '\'', ',']) {
                continue;
            }
            let rest = rest.trim_start_matches([' ', '=', '"', '\'', ',']);
            let token = rest.split([' ', '"', '\'']).next().unwrap_or("");
            if let Some((_, p)) = token.rsplit_once(':')
                && let Ok(p) = p.parse::<u16>()
                && p > 0
            {
                out.push(p);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A line-based TOML reader: enough for Cargo.toml, pyproject.toml and Pipfile

/// A TOML document as (dotted key path, raw value) pairs, with every table header seen.
#[derive(Debug, Default)]
struct Toml {
    entries: Vec<(Vec<String>, String)>,
    tables: Vec<Vec<String>>,
}

impl Toml {
    /// The document and the problems met (a line is skipped, never a panic).
    fn parse(text: &str) -> (Toml, Vec<String>) {
        let mut doc = Toml::default();
        let mut problems = Vec::new();
        let mut table: Vec<String> = Vec::new();
        let mut lines = text.lines().enumerate();
        while let Some((i, raw)) = lines.next() {
            let line = strip_toml_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                let inner = line
                    .strip_prefix("[[")
                    .and_then(|l| l.strip_suffix("]]"))
                    .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')));
                match inner.map(split_key) {
                    Some(k) if !k.is_empty() => {
                        table = k;
                        doc.tables.push(table.clone());
                    }
                    _ => problems.push(format!("line {}: malformed table header `{line}`", i + 1)),
                }
                continue;
            }
            let Some(eq) = find_outside_quotes(line, b'=') else {
                problems.push(format!("line {}: expected `key = value`", i + 1));
                continue;
            };
            let key = split_key(&line[..eq]);
            let mut value = line[eq + 1..].trim().to_owned();
            if key.is_empty() || value.is_empty() {
                problems.push(format!("line {}: expected `key = value`", i + 1));
                continue;
            }
            if let Some(delim) = ["\"\"\"", "'''"].into_iter().find(|d| value.starts_with(d)) {
                let mut closed = value.len() >= 6 && value[3..].contains(delim);
                while !closed {
                    match lines.next() {
                        Some((_, more)) => {
                            value.push('\n');
                            value.push_str(more);
                            closed = more.contains(delim);
                        }
                        None => {
                            problems.push(format!("line {}: unterminated string", i + 1));
                            break;
                        }
                    }
                }
            } else {
                while nesting(&value) > 0 {
                    match lines.next() {
                        Some((_, more)) => {
                            value.push('\n');
                            value.push_str(strip_toml_comment(more).trim());
                        }
                        None => {
                            problems.push(format!("line {}: unclosed `[` or `{{`", i + 1));
                            break;
                        }
                    }
                }
            }
            let mut path = table.clone();
            path.extend(key);
            doc.entries.push((path, value));
        }
        (doc, problems)
    }

    fn get(&self, path: &[&str]) -> Option<&str> {
        self.entries
            .iter()
            .find(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
            .map(|(_, v)| v.as_str())
    }

    fn str(&self, path: &[&str]) -> Option<String> {
        self.get(path).and_then(unquote)
    }

    /// Every string at `path` (e.g. the name of each `[[bin]]`).
    fn all_str(&self, path: &[&str]) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(p, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
            .filter_map(|(_, v)| unquote(v))
            .collect()
    }

    fn str_array(&self, path: &[&str]) -> Vec<String> {
        self.get(path).map(strings_in).unwrap_or_default()
    }

    /// Every key path and table header.
    fn paths(&self) -> impl Iterator<Item = &Vec<String>> {
        self.entries.iter().map(|(p, _)| p).chain(&self.tables)
    }

    fn has_table(&self, prefix: &[&str]) -> bool {
        self.paths().any(|p| starts_with(p, prefix))
    }

    /// The keys directly under `prefix`, in order, without duplicates.
    fn child_keys(&self, prefix: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.paths() {
            if p.len() > prefix.len()
                && starts_with(p, prefix)
                && let Some(k) = p.get(prefix.len())
                && !out.contains(k)
            {
                out.push(k.clone());
            }
        }
        out
    }
}

fn starts_with(path: &[String], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
}

/// Calls `f(index)` for every byte outside quoted strings until `f` says stop.
fn scan_quotes(s: &str, mut f: impl FnMut(usize) -> bool) {
    let b = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(b'"') if c == b'\\' => {
                i += 2;
                continue;
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None => {
                if !f(i) {
                    return;
                }
            }
        }
        i += 1;
    }
}

fn strip_toml_comment(line: &str) -> &str {
    let mut cut = line.len();
    scan_quotes(line, |i| {
        if line.as_bytes()[i] == b'#' {
            cut = i;
            false
        } else {
            true
        }
    });
    &line[..cut]
}

fn find_outside_quotes(s: &str, ch: u8) -> Option<usize> {
    let mut at = None;
    scan_quotes(s, |i| {
        if s.as_bytes()[i] == ch {
            at = Some(i);
            false
        } else {
            true
        }
    });
    at
}

/// How many `[`/`{` are open at the end of `s` (outside strings).
fn nesting(s: &str) -> i64 {
    let mut depth = 0i64;
    scan_quotes(s, |i| {
        match s.as_bytes()[i] {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth -= 1,
            _ => {}
        }
        true
    });
    depth
}

/// `a."b.c".d` → `["a", "b.c", "d"]`; empty when a part is empty.
fn split_key(key: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut last = 0;
    let mut cuts = Vec::new();
    scan_quotes(key, |i| {
        if key.as_bytes()[i] == b'.' {
            cuts.push(i);
        }
        true
    });
    for c in cuts.into_iter().chain([key.len()]) {
        let part = key[last..c].trim();
        let part = part
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .or_else(|| part.strip_prefix('\'').and_then(|p| p.strip_suffix('\'')))
            .unwrap_or(part);
        if part.is_empty() {
            return Vec::new();
        }
        parts.push(part.to_owned());
        last = (c + 1).min(key.len());
    }
    parts
}

/// The quoted string starting at byte `i`: (content, index after the closing quote).
fn read_string(s: &str, i: usize) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let quote = *b.get(i)?;
    let mut out = String::new();
    let mut j = i + 1;
    let mut from = j;
    while j < b.len() {
        match b[j] {
            c if c == quote => {
                out.push_str(&s[from..j]);
                return Some((out, j + 1));
            }
            b'\\' if quote == b'"' => {
                out.push_str(&s[from..j]);
                let escaped = match b.get(j + 1) {
                    Some(b'n') => Some('\n'),
                    Some(b't') => Some('\t'),
                    Some(b'"') => Some('"'),
                    Some(b'\\') => Some('\\'),
                    Some(_) => None,
                    None => return None,
                };
                match escaped {
                    Some(c) => {
                        out.push(c);
                        j += 2;
                    }
                    // Any other escape is kept as written.
                    None => {
                        out.push('\\');
                        j += 1;
                    }
                }
                from = j;
            }
            _ => j += 1,
        }
    }
    None
}

/// The value if it is exactly one string (basic, literal, or multi-line).
fn unquote(raw: &str) -> Option<String> {
    let raw = raw.trim();
    for d in ["\"\"\"", "'''"] {
        if raw.len() >= 6
            && let Some(inner) = raw.strip_prefix(d).and_then(|r| r.strip_suffix(d))
        {
            return Some(inner.trim_start_matches('\n').to_owned());
        }
    }
    if !(raw.starts_with('"') || raw.starts_with('\'')) {
        return None;
    }
    let (s, end) = read_string(raw, 0)?;
    raw[end..].trim().is_empty().then_some(s)
}

/// Every quoted string in `raw`, in order.
fn strings_in(raw: &str) -> Vec<String> {
    let b = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'"' | b'\'') {
            match read_string(raw, i) {
                Some((s, end)) => {
                    out.push(s);
                    i = end;
                }
                None => break,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// `key` of an inline table `{ version = "^3.11", … }`.
fn inline_get(raw: &str, key: &str) -> Option<String> {
    let inner = raw.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut cuts = Vec::new();
    let mut depth = 0i32;
    scan_quotes(inner, |i| {
        match inner.as_bytes()[i] {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth -= 1,
            b',' if depth == 0 => cuts.push(i),
            _ => {}
        }
        true
    });
    let mut last = 0;
    for c in cuts.into_iter().chain([inner.len()]) {
        let part = &inner[last..c];
        last = (c + 1).min(inner.len());
        if let Some(eq) = find_outside_quotes(part, b'=')
            && split_key(&part[..eq]).iter().map(String::as_str).eq([key])
        {
            return unquote(&part[eq + 1..]);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// A small XML reader: enough for pom.xml and *.csproj

#[derive(Debug, Default, Clone)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child `name`, when not empty.
    fn text_of(&self, name: &str) -> Option<String> {
        self.child(name)
            .map(|c| c.text.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every descendant named `name`.
    fn find_all<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.find_all(name, out);
        }
    }
}

/// A document element holding the top-level elements, and the problems met.
fn parse_xml(text: &str) -> (Element, Vec<String>) {
    let mut stack = vec![Element {
        name: "#document".to_owned(),
        ..Element::default()
    }];
    let mut problems = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let Some(lt) = text[i..].find('<').map(|p| p + i) else {
            push_text(&mut stack, &text[i..]);
            break;
        };
        push_text(&mut stack, &text[i..lt]);
        let tail = &text[lt..];
        let skip = [("<!--", "-->"), ("<?", "?>"), ("<!", ">")]
            .iter()
            .find(|(open, _)| tail.starts_with(open) && !tail.starts_with("<![CDATA["));
        if let Some((open, close)) = skip {
            match tail.find(close) {
                Some(e) if e >= open.len() => {
                    i = lt + e + close.len();
                    continue;
                }
                _ => {
                    problems.push(format!("unterminated `{open}` at byte {lt}"));
                    break;
                }
            }
        }
        if let Some(cdata) = tail.strip_prefix("<![CDATA[") {
            match cdata.find("]]>") {
                Some(e) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&cdata[..e]);
                    }
                    i = lt + 9 + e + 3;
                    continue;
                }
                None => {
                    problems.push(format!("unterminated CDATA at byte {lt}"));
                    break;
                }
            }
        }
        let Some(gt) = find_outside_quotes(tail, b'>') else {
            problems.push(format!("unterminated tag at byte {lt}"));
            break;
        };
        let inner = &tail[1..gt];
        i = lt + gt + 1;
        if let Some(close) = inner.strip_prefix('/') {
            let name = close.trim();
            match stack
                .iter()
                .rposition(|e| e.name == name)
                .filter(|p| *p > 0)
            {
                Some(pos) => {
                    while stack.len() > pos {
                        let Some(el) = stack.pop() else { break };
                        if stack.len() > pos {
                            problems.push(format!("<{}> is not closed", el.name));
                        }
                        if let Some(parent) = stack.last_mut() {
                            parent.children.push(el);
                        }
                    }
                }
                None => problems.push(format!("unexpected </{name}>")),
            }
            continue;
        }
        let self_closing = inner.ends_with('/');
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        let (name, attrs) = inner
            .split_once(char::is_whitespace)
            .map_or((inner, ""), |(n, a)| (n, a));
        if name.is_empty() {
            problems.push(format!("a tag without a name at byte {lt}"));
            continue;
        }
        let el = Element {
            name: name.to_owned(),
            attrs: parse_attrs(attrs),
            ..Element::default()
        };
        if self_closing {
            if let Some(top) = stack.last_mut() {
                top.children.push(el);
            }
        } else {
            stack.push(el);
        }
    }
    while stack.len() > 1 {
        let Some(el) = stack.pop() else { break };
        problems.push(format!("<{}> is not closed", el.name));
        if let Some(parent) = stack.last_mut() {
            parent.children.push(el);
        }
    }
    (stack.pop().unwrap_or_default(), problems)
}

fn push_text(stack: &mut [Element], text: &str) {
    if let Some(top) = stack.last_mut()
        && !text.trim().is_empty()
    {
        top.text.push_str(&unescape_xml(text));
    }
}

fn unescape_xml(t: &str) -> String {
    t.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn parse_attrs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        match read_string(after, 0).filter(|_| after.starts_with(['"', '\''])) {
            Some((value, end)) => {
                out.push((key, unescape_xml(&value)));
                rest = after[end..].trim_start();
            }
            None => break,
        }
    }
    out
}

/// JSON with `//` and `/* */` comments and trailing commas removed (launchSettings,
/// appsettings and tsconfig allow them).
fn strip_json_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut from = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match (c, b.get(i + 1)) {
            (b'"', _) => in_string = true,
            (b'/', Some(b'/')) => {
                out.push_str(&text[from..i]);
                i = text[i..].find('\n').map_or(b.len(), |e| i + e);
                from = i;
                continue;
            }
            (b'/', Some(b'*')) => {
                out.push_str(&text[from..i]);
                i = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                from = i;
                continue;
            }
            (b',', _) => {
                let next = text[i + 1..].trim_start();
                if next.starts_with('}') || next.starts_with(']') {
                    out.push_str(&text[from..i]);
                    from = i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&text[from.min(text.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::tools::ToolRegistry;

    /// A folder holding `files` (path, text).
    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            write(dir.path(), path, text.as_bytes());
        }
        dir
    }

    fn write(root: &Path, path: &str, bytes: &[u8]) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn analysis(files: &[(&str, &str)]) -> Analysis {
        let dir = project(files);
        analyze(dir.path()).unwrap()
    }

    fn has_evidence(a: &Analysis, needle: &str) -> bool {
        a.evidence.iter().any(|e| e.contains(needle))
    }

    // --- parsers ---------------------------------------------------------------------

    #[test]
    fn toml_reads_tables_arrays_strings_and_comments() {
        let (doc, problems) = Toml::parse(
            r#"
# a comment
[package]
name = "demo" # trailing comment
description = "has # and = inside"
rust-version = '1.80'
keywords = [
  "a", # first
  "b",
]

[[bin]]
name = "one"
[[bin]]
name = "two"

[dependencies]
serde = { version = "1", features = ["derive"] }
[dependencies.axum]
version = "0.7"
[target.'cfg(unix)'.dependencies]
libc = "0.2"
"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(doc.str(&["package", "name"]).as_deref(), Some("demo"));
        assert_eq!(
            doc.str(&["package", "description"]).as_deref(),
            Some("has # and = inside")
        );
        assert_eq!(
            doc.str(&["package", "rust-version"]).as_deref(),
            Some("1.80")
        );
        assert_eq!(doc.str_array(&["package", "keywords"]), ["a", "b"]);
        assert_eq!(doc.all_str(&["bin", "name"]), ["one", "two"]);
        assert_eq!(doc.child_keys(&["dependencies"]), ["serde", "axum"]);
        assert_eq!(
            doc.child_keys(&["target", "cfg(unix)", "dependencies"]),
            ["libc"]
        );
        assert!(doc.has_table(&["target"]));
        assert!(!doc.has_table(&["workspace"]));
        assert_eq!(
            inline_get(doc.get(&["dependencies", "serde"]).unwrap(), "version").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn toml_reports_malformed_lines_and_keeps_the_rest() {
        let (doc, problems) = Toml::parse(
            "[package\nname = \"x\"\njust words\n= 3\nlist = [1, 2\n[ok]\nk = \"\"\"multi\nline\"\"\"\n",
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("line 1"), "{problems:?}");
        assert_eq!(doc.str(&["name"]).as_deref(), Some("x"));
        // The unclosed array swallows the rest of the file, as TOML would read it.
        assert!(doc.get(&["list"]).is_some());
        let (doc, problems) = Toml::parse("k = \"\"\"multi\nline\"\"\"\nafter = 'yes'\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(doc.str(&["k"]).as_deref(), Some("multi\nline"));
        assert_eq!(doc.str(&["after"]).as_deref(), Some("yes"));
    }

    #[test]
    fn toml_strings_unescape_and_reject_non_strings() {
        assert_eq!(unquote(r#""a\"b\\c\n""#).as_deref(), Some("a\"b\\c\n"));
        assert_eq!(unquote(r#""C:\path""#).as_deref(), Some("C:\\path"));
        assert_eq!(unquote("'lit\\eral'").as_deref(), Some("lit\\eral"));
        assert_eq!(unquote("42"), None);
        assert_eq!(unquote(r#""a" "b""#), None);
        assert_eq!(unquote("\"unterminated"), None);
        assert_eq!(strings_in(r#"["x", 'y', 3, "z\"q"]"#), ["x", "y", "z\"q"]);
        assert_eq!(split_key(r#"a."b.c" . d"#), ["a", "b.c", "d"]);
        assert!(split_key("a..b").is_empty());
    }

    #[test]
    fn xml_reads_elements_attributes_comments_and_cdata() {
        let (doc, problems) = parse_xml(
            r#"<?xml version="1.0"?>
<!-- <project> in a comment is not an element -->
<project a="1" b='x &amp; y'>
  <artifactId>demo</artifactId>
  <relativePath/>
  <description><![CDATA[a <b> c]]></description>
  <properties><java.version>17</java.version></properties>
</project>"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let p = doc.child("project").unwrap();
        assert_eq!(p.attr("a"), Some("1"));
        assert_eq!(p.attr("b"), Some("x & y"));
        assert_eq!(p.text_of("artifactId").as_deref(), Some("demo"));
        assert_eq!(p.text_of("description").as_deref(), Some("a <b> c"));
        assert!(p.child("relativePath").is_some());
        let mut found = Vec::new();
        p.find_all("java.version", &mut found);
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn xml_survives_malformed_input() {
        for text in [
            "<project><a>1</b></project>",
            "<project><a>1",
            "<project attr=\"unterminated>",
            "<!-- never closed",
            "</>< >",
            "<a><![CDATA[ never",
            "\u{0}\u{1}<<>>",
        ] {
            let (_, problems) = parse_xml(text);
            assert!(!problems.is_empty(), "{text:?} gave no problem");
        }
        let (doc, _) = parse_xml("<project><artifactId>x</artifactId><open></project>");
        assert_eq!(
            doc.child("project")
                .and_then(|p| p.text_of("artifactId"))
                .as_deref(),
            Some("x")
        );
    }

    #[test]
    fn go_mod_parses_module_version_and_requires() {
        let gm = parse_go_mod(
            "// comment\nmodule github.com/acme/api/v2 // trailing\n\ngo 1.22.3\n\nrequire (\n\tgithub.com/gin-gonic/gin v1.10.0\n\tgolang.org/x/sync v0.7.0 // indirect\n)\nrequire github.com/go-chi/chi/v5 v5.0.12\n",
        );
        assert_eq!(gm.module.as_deref(), Some("github.com/acme/api/v2"));
        assert_eq!(gm.go.as_deref(), Some("1.22.3"));
        assert_eq!(
            gm.requires,
            [
                "github.com/gin-gonic/gin",
                "golang.org/x/sync",
                "github.com/go-chi/chi/v5"
            ]
        );
        assert_eq!(go_module_name("github.com/acme/api/v2"), "api");
        assert_eq!(go_module_name("example.com/v2"), "example.com");
        assert_eq!(go_module_name("hello"), "hello");
        assert_eq!(parse_go_mod("garbage\x7f\n(\n"), GoMod::default());
    }

    #[test]
    fn small_value_readers() {
        assert_eq!(major_minor(">=3.11,<4").as_deref(), Some("3.11"));
        assert_eq!(major_minor("^3.12.1").as_deref(), Some("3.12"));
        assert_eq!(major_minor("python-3.10.4").as_deref(), Some("3.10"));
        assert_eq!(major_minor("3").as_deref(), Some("3"));
        assert_eq!(major_minor("latest"), None);
        assert_eq!(first_number(">=18.0.0").as_deref(), Some("18"));
        assert_eq!(first_number("v20.11.1").as_deref(), Some("20"));
        assert_eq!(first_number("lts/*"), None);
        assert_eq!(java_release("1.8").as_deref(), Some("8"));
        assert_eq!(java_release("VERSION_1_8").as_deref(), Some("8"));
        assert_eq!(java_release("(21)").as_deref(), Some("21"));
        assert_eq!(java_release("x"), None);
        assert_eq!(
            requirement_name("Flask_Login[extra]>=0.6 ; python_version>'3'").as_deref(),
            Some("flask-login")
        );
        assert_eq!(requirement_name("  # comment"), None);
        assert_eq!(requirement_name("-r base.txt"), None);
        assert_eq!(requirement_name("git+https://x/y.git#egg=z"), None);
        assert_eq!(config_port("${PORT:8085}"), Some(8085));
        assert_eq!(config_port("${PORT:-9000}"), Some(9000));
        assert_eq!(config_port("\"8080\""), Some(8080));
        assert_eq!(config_port("${PORT}"), None);
        assert_eq!(config_port("0"), None);
        assert_eq!(config_port("70000"), None);
        assert_eq!(url_port("http://localhost:5080"), Some(5080));
        assert_eq!(url_port("https://[::1]:7001/"), Some(7001));
        assert_eq!(url_port("http://+:80"), Some(80));
        assert_eq!(url_port("https://example.com"), Some(443));
        assert_eq!(url_port("localhost:99"), None);
        assert_eq!(py_module("src/pkg/main.py", true), "pkg.main");
        assert_eq!(py_module("app/__init__.py", false), "app");
        assert_eq!(
            py_kwarg("setup(\n  name = 'pkg-x',\n)", "name").as_deref(),
            Some("pkg-x")
        );
        assert_eq!(py_kwarg("setup(fullname='a')", "name"), None);
    }

    #[test]
    fn json_comments_and_trailing_commas_are_stripped() {
        let text = "{\n  // a comment\n  \"a\": \"http://x\", /* block */\n  \"b\": [1, 2,],\n}";
        let v: Value = serde_json::from_str(&strip_json_comments(text)).unwrap();
        assert_eq!(v, json!({"a": "http://x", "b": [1, 2]}));
    }

    // --- ports -----------------------------------------------------------------------

    #[test]
    fn ports_found_in_lines_of_code_and_config() {
        let cases: &[(&str, &[u16])] = &[
            (
                r#"let l = TcpListener::bind("0.0.0.0:8080").await?;"#,
                &[8080],
            ),
            (r#"http.ListenAndServe(":8081", mux)"#, &[8081]),
            (r#"r.Run(":9000")"#, &[9000]),
            ("app.listen(3000, () => {})", &[3000]),
            ("const port = process.env.PORT || 3000;", &[3000]),
            ("const port = Number(process.env.PORT ?? 4000);", &[4000]),
            (
                "const port = parseInt(process.env.PORT, 10) || 3001;",
                &[3001],
            ),
            (r#"app.run(host="0.0.0.0", port=5000)"#, &[5000]),
            (r#"port = int(os.environ.get("PORT", 8000))"#, &[8000]),
            (r#"port := getenv("PORT", "8082")"#, &[8082]),
            (
                r#"let port = env::var("PORT").unwrap_or_else(|_| "8083".into());"#,
                &[8083],
            ),
            (r#"    port := "8084""#, &[8084]),
            ("await app.listen({ port: 3002, host: '0.0.0.0' })", &[3002]),
            (r#"  "port": 3003,"#, &[3003]),
            ("uvicorn main:app --host 0.0.0.0 --port 8001", &[8001]),
            (r#"CMD ["uvicorn", "app:app", "--port", "8002"]"#, &[8002]),
            ("web: gunicorn -b :8005 app:app", &[8005]),
            ("gunicorn --bind=0.0.0.0:8006 wsgi", &[8006]),
            ("server.port=${PORT:8087}", &[8087]),
            ("exec app --listen ${HTTP_PORT:-8088}", &[8088]),
            ("HttpServer::new(f).bind((\"0.0.0.0\", 8089))", &[]),
            (".bind(\"[::]:8090\")", &[8090]),
            ("app.Urls.Add(\"http://*:5005\");", &[5005]),
            (
                "builder.WebHost.UseUrls(\"http://localhost:5006\");",
                &[5006],
            ),
            (
                "embeddedServer(Netty, port = 8091, host = \"0.0.0.0\")",
                &[8091],
            ),
            // not ports
            (
                "const DATABASE_URL = \"postgres://localhost:5432/db\";",
                &[],
            ),
            ("redis = Redis(host='localhost', port=6379)", &[]),
            ("s.listen(5)", &[]),
            ("const timeout = 3000;", &[]),
            (r#"{"timeout":5000, "at": "12:30"}"#, &[]),
            ("image: \"nginx:1.25\"", &[]),
            ("log.Println(\"listening on :8081\")", &[]),
            ("// app.listen(4000)", &[]),
            ("# app.run(port=4001)", &[]),
            ("DATABASES = {'default': {'PORT': 5432}}", &[]),
            ("if port == 8080 {", &[]),
            ("const MAX_PORT = 65535;", &[]),
            ("passport: 3000", &[]),
            ("git checkout -b feature", &[]),
            ("addr := \":\" + os.Getenv(\"PORT\")", &[]),
        ];
        for (line, want) in cases {
            assert_eq!(line_ports(line), *want, "{line}");
        }
    }

    #[test]
    fn dockerfile_ports_resolve_args_and_skip_ranges() {
        let dir = project(&[(
            "Dockerfile",
            "# EXPOSE 1111\nARG APP_PORT=7000\nFROM x AS a\nENV PORT 7001\nENV A=1 \\\n    HTTP_PORT=\"7002\"\nEXPOSE ${APP_PORT} 7003/udp 7100-7200 $MISSING ${NONE:-7004}\nexpose 7005\nCMD [\"serve\", \"--port\", \"7006\"]\n",
        )]);
        let a = analyze(dir.path()).unwrap();
        assert_eq!(a.ports, [7000, 7001, 7002, 7003, 7004, 7005, 7006]);
        assert_eq!(a.dockerfile.as_deref(), Some("Dockerfile"));
        assert!(!a.classified);
        assert!(
            has_evidence(&a, "Dockerfile:7: EXPOSE 7000"),
            "{:?}",
            a.evidence
        );
        assert!(
            has_evidence(&a, "Dockerfile:5: ENV HTTP_PORT=7002"),
            "{:?}",
            a.evidence
        );
    }

    #[test]
    fn containerfile_and_env_files_give_ports() {
        let a = analysis(&[
            ("Containerfile", "FROM x\n"),
            (
                ".env",
                "# PORT=1\nexport PORT=\"3100\" # dev\nDB_PORT=5432\nASPNETCORE_URLS=http://+:5100;https://+:5101\n",
            ),
            (
                ".env.example",
                "HTTP_PORT=3101\nASPNETCORE_HTTP_PORTS=8080;8081\n",
            ),
            ("Procfile", "web: uvicorn app:app --port 3102\n"),
        ]);
        assert_eq!(a.dockerfile.as_deref(), Some("Containerfile"));
        assert_eq!(a.ports, [3100, 3101, 3102, 5100, 5101, 8080, 8081]);
        assert!(has_evidence(&a, ".env:2: PORT 3100"), "{:?}", a.evidence);
    }

    #[test]
    fn tests_and_tool_configs_are_not_searched_for_ports() {
        let a = analysis(&[
            ("package.json", r#"{"name": "x"}"#),
            ("index.js", "require('http').createServer().listen(3000)\n"),
            ("test/server.test.js", "app.listen(4001)\n"),
            ("src/app.spec.js", "app.listen(4002)\n"),
            (
                "vite.config.js",
                "export default { server: { port: 5173 } }\n",
            ),
        ]);
        assert_eq!(a.ports, [3000]);
    }

    // --- detectors -------------------------------------------------------------------

    #[test]
    fn rust_bins_library_and_rocket_default() {
        let a = analysis(&[
            (
                "Cargo.toml",
                "[package]\nname = \"svc\"\nedition = \"2024\"\n\n[[bin]]\nname = \"svc-api\"\npath = \"src/api.rs\"\n\n[dependencies]\nrocket = \"0.5\"\n",
            ),
            ("src/api.rs", "fn main() {}\n"),
        ]);
        assert_eq!(a.language.as_deref(), Some("rust"));
        assert_eq!(a.build_system.as_deref(), Some("cargo"));
        assert_eq!(a.entrypoint.as_deref(), Some("svc-api"));
        assert_eq!(a.framework.as_deref(), Some("rocket"));
        assert_eq!(a.version, None, "edition alone is no rust-version");
        assert!(has_evidence(&a, "edition 2024"));
        assert_eq!(a.ports, [8000]);
        assert!(has_evidence(&a, "default: Rocket"), "{:?}", a.evidence);
        assert_eq!(a.test_command, None, "no test anywhere");

        let lib = analysis(&[
            ("Cargo.toml", "[package]\nname = \"lib\"\n"),
            ("src/lib.rs", "#[cfg(test)]\nmod tests {}\n"),
        ]);
        assert!(lib.classified);
        assert_eq!(lib.entrypoint, None);
        assert!(has_evidence(&lib, "a library"));
        assert_eq!(lib.test_command.as_deref(), Some("cargo test"));

        let inline_tests = analysis(&[
            ("Cargo.toml", "[package]\nname = \"s\"\n"),
            (
                "src/main.rs",
                "fn main() { bind(\"0.0.0.0:8080\") }\n#[cfg(test)]\nmod tests {\n    const A: &str = \"0.0.0.0:9999\";\n}\n",
            ),
        ]);
        assert_eq!(
            inline_tests.ports,
            [8080],
            "ports in the test module are not the app's"
        );
        assert_eq!(inline_tests.test_command.as_deref(), Some("cargo test"));

        let rocket_toml = analysis(&[
            (
                "Cargo.toml",
                "[package]\nname = \"r\"\n[dependencies]\nrocket = \"0.5\"\n",
            ),
            ("src/main.rs", "fn main() {}\n"),
            ("Rocket.toml", "[default]\nport = 8800\n"),
        ]);
        assert_eq!(rocket_toml.ports, [8800]);
        assert_eq!(rocket_toml.entrypoint.as_deref(), Some("r"));
    }

    #[test]
    fn rust_workspace_finds_the_member_binary() {
        let a = analysis(&[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\n  \"crates/*\",\n]\n[workspace.package]\nrust-version = \"1.82\"\n",
            ),
            ("crates/core/Cargo.toml", "[package]\nname = \"core\"\n"),
            ("crates/core/src/lib.rs", ""),
            (
                "crates/server/Cargo.toml",
                "[package]\nname = \"server\"\n[dependencies]\nactix-web = \"4\"\n",
            ),
            (
                "crates/server/src/main.rs",
                "HttpServer::new(app).bind((\"0.0.0.0\", 9090))?.run()\n",
            ),
            ("crates/server/tests/it.rs", "#[test] fn t() {}\n"),
        ]);
        assert_eq!(a.name, None);
        assert_eq!(a.entrypoint.as_deref(), Some("server"));
        assert_eq!(a.framework.as_deref(), Some("actix-web"));
        assert_eq!(a.version.as_deref(), Some("1.82"));
        assert_eq!(a.test_command.as_deref(), Some("cargo test --workspace"));
        assert!(has_evidence(
            &a,
            "crates/server/Cargo.toml: the binary `server`"
        ));
    }

    #[test]
    fn go_cmd_entry_gin_default_and_no_tests() {
        let a = analysis(&[
            (
                "go.mod",
                "module github.com/acme/shop\n\ngo 1.21\n\nrequire github.com/gin-gonic/gin v1.9.1\n",
            ),
            ("cmd/migrate/main.go", "package main\nfunc main() {}\n"),
            (
                "cmd/shop/main.go",
                "package main\n\nfunc main() { r.Run() }\n",
            ),
            ("internal/x.go", "package internal\n"),
        ]);
        assert_eq!(a.name.as_deref(), Some("shop"));
        assert_eq!(a.entrypoint.as_deref(), Some("./cmd/shop"));
        assert_eq!(a.framework.as_deref(), Some("gin"));
        assert_eq!(a.version.as_deref(), Some("1.21"));
        assert_eq!(a.ports, [8080]);
        assert_eq!(a.test_command, None);
        assert!(has_evidence(&a, "several commands"));
    }

    #[test]
    fn node_package_managers_and_test_scripts() {
        let yarn = analysis(&[
            (
                "package.json",
                r#"{"name": "y", "scripts": {"test": "echo \"Error: no test specified\" && exit 1", "start": "NODE_ENV=production node ./src/server.js"}, "engines": {"node": "^18.19"}}"#,
            ),
            ("yarn.lock", ""),
            ("package-lock.json", "{}"),
            ("src/server.js", ""),
        ]);
        assert_eq!(yarn.build_system.as_deref(), Some("yarn"));
        assert_eq!(yarn.test_command, None);
        assert_eq!(yarn.entrypoint.as_deref(), Some("src/server.js"));
        assert_eq!(yarn.version.as_deref(), Some("18"));
        assert!(yarn.notes.iter().any(|n| n.contains("several lock files")));

        let pm = analysis(&[
            (
                "package.json",
                r#"{"packageManager": "bun@1.1.0", "main": "missing.js", "scripts": {"test": "bun test"}}"#,
            ),
            ("index.js", ""),
        ]);
        assert_eq!(pm.build_system.as_deref(), Some("bun"));
        assert_eq!(pm.test_command.as_deref(), Some("bun run test"));
        assert_eq!(pm.entrypoint.as_deref(), Some("index.js"));
        assert!(pm.notes.iter().any(|n| n.contains("main `missing.js`")));

        let none = analysis(&[("package.json", "{}")]);
        assert_eq!(none.build_system.as_deref(), Some("npm"));
        assert!(has_evidence(&none, "no lock file, npm assumed"));
    }

    #[test]
    fn node_frameworks_typescript_and_next_ports() {
        let next = analysis(&[(
            "package.json",
            r#"{"dependencies": {"next": "14", "react": "18"}, "devDependencies": {"typescript": "5"}, "scripts": {"start": "next start"}}"#,
        )]);
        assert_eq!(next.framework.as_deref(), Some("next"));
        assert_eq!(next.language.as_deref(), Some("typescript"));
        assert_eq!(next.ports, [3000]);
        assert!(has_evidence(&next, "default: `next start`"));
        assert_eq!(next.entrypoint, None);

        let next_p = analysis(&[(
            "package.json",
            r#"{"dependencies": {"next": "14"}, "scripts": {"start": "next start -p 4100"}}"#,
        )]);
        assert_eq!(next_p.ports, [4100]);

        let nest = analysis(&[
            (
                "package.json",
                r#"{"dependencies": {"@nestjs/core": "10", "express": "4"}}"#,
            ),
            ("tsconfig.json", "{ // comments are fine\n}"),
            (
                "src/main.ts",
                "await app.listen(process.env.PORT ?? 3005);\n",
            ),
        ]);
        assert_eq!(nest.framework.as_deref(), Some("nest"));
        assert_eq!(nest.entrypoint.as_deref(), Some("dist/main.js"));
        assert_eq!(nest.ports, [3005]);
    }

    #[test]
    fn python_uv_project_with_requires_python() {
        let a = analysis(&[
            (
                "pyproject.toml",
                "[project]\nname = \"svc\"\nrequires-python = \">=3.12\"\ndependencies = [\n  \"fastapi>=0.110\",\n  \"uvicorn[standard]\",\n]\n\n[dependency-groups]\ndev = [\"pytest>=8\"]\n",
            ),
            ("uv.lock", "version = 1\n"),
            ("src/svc/__init__.py", ""),
            (
                "src/svc/main.py",
                "from fastapi import FastAPI\n\napp = FastAPI()\n",
            ),
        ]);
        assert_eq!(a.build_system.as_deref(), Some("uv"));
        assert_eq!(a.name.as_deref(), Some("svc"));
        assert_eq!(a.version.as_deref(), Some("3.12"));
        assert_eq!(a.framework.as_deref(), Some("fastapi"));
        assert_eq!(a.entrypoint.as_deref(), Some("svc.main:app"));
        assert_eq!(a.test_command.as_deref(), Some("uv run pytest"));
        assert_eq!(a.ports, [8000]);
        assert!(has_evidence(&a, "default: uvicorn"));
    }

    #[test]
    fn python_django_flask_module_and_factory() {
        let django = analysis(&[
            ("requirements.txt", "Django==5.0\npsycopg[binary]\n"),
            ("manage.py", "#!/usr/bin/env python\n"),
            (
                "mysite/settings.py",
                "DATABASES = {'default': {'PORT': 5432}}\n",
            ),
        ]);
        assert_eq!(django.framework.as_deref(), Some("django"));
        assert_eq!(django.entrypoint.as_deref(), Some("manage.py"));
        assert_eq!(
            django.test_command.as_deref(),
            Some("python manage.py test")
        );
        assert_eq!(django.ports, [8000]);

        let flask = analysis(&[
            ("requirements.txt", "flask\n"),
            (
                "wsgi.py",
                "from flask import Flask\napp = Flask(__name__)\n",
            ),
        ]);
        assert_eq!(flask.entrypoint.as_deref(), Some("wsgi:app"));
        assert_eq!(flask.ports, [5000]);
        assert_eq!(flask.test_command, None);

        let factory = analysis(&[
            (
                "setup.py",
                "from setuptools import setup\nsetup(name=\"web\", install_requires=[\"Flask>=3\"])\n",
            ),
            (
                "web/__init__.py",
                "from flask import Flask\n\ndef create_app():\n    app = Flask(__name__)\n    return app\n",
            ),
        ]);
        assert_eq!(factory.name.as_deref(), Some("web"));
        assert_eq!(factory.framework.as_deref(), Some("flask"));
        assert_eq!(factory.entrypoint.as_deref(), Some("web:create_app"));

        let module = analysis(&[
            (
                "Pipfile",
                "[packages]\nrequests = \"*\"\n[requires]\npython_version = \"3.11\"\n",
            ),
            ("tool/__main__.py", "print('hi')\n"),
            ("tests/test_tool.py", ""),
        ]);
        assert_eq!(module.build_system.as_deref(), Some("pipenv"));
        assert_eq!(module.entrypoint.as_deref(), Some("tool"));
        assert_eq!(module.version.as_deref(), Some("3.11"));
        assert_eq!(module.test_command.as_deref(), Some("pipenv run pytest"));
        assert_eq!(module.framework, None);
    }

    #[test]
    fn pyproject_without_a_known_section_is_python_with_a_note() {
        let a = analysis(&[
            ("pyproject.toml", "[tool.black]\nline-length = 100\n"),
            ("main.py", "import sys\n"),
        ]);
        assert!(a.classified);
        assert_eq!(a.language.as_deref(), Some("python"));
        assert_eq!(a.build_system.as_deref(), Some("pip"));
        assert_eq!(a.entrypoint.as_deref(), Some("main.py"));
        assert!(
            a.notes
                .iter()
                .any(|n| n.contains("no [project] or [tool.poetry]")),
            "{:?}",
            a.notes
        );
    }

    #[test]
    fn maven_quarkus_yaml_port_and_aggregator() {
        let a = analysis(&[
            (
                "pom.xml",
                "<project><artifactId>q</artifactId><version>${revision}</version><packaging>war</packaging>\
                 <properties><revision>2.1</revision><maven.compiler.release>17</maven.compiler.release></properties>\
                 <dependencies><dependency><groupId>io.quarkus</groupId><artifactId>quarkus-rest</artifactId></dependency></dependencies>\
                 <build><plugins><plugin><artifactId>kotlin-maven-plugin</artifactId></plugin></plugins></build></project>",
            ),
            (
                "src/main/resources/application.yml",
                "quarkus:\n  http:\n    port: ${PORT:8085}\n---\nserver.port: 8086\n",
            ),
            ("mvnw", "#!/bin/sh\n"),
            ("src/test/java/.keep", ""),
        ]);
        assert_eq!(a.language.as_deref(), Some("kotlin"));
        assert_eq!(a.framework.as_deref(), Some("quarkus"));
        assert_eq!(a.version.as_deref(), Some("17"));
        assert_eq!(a.entrypoint.as_deref(), Some("target/q-2.1.war"));
        assert_eq!(a.ports, [8085, 8086]);
        assert_eq!(a.test_command.as_deref(), Some("./mvnw test"));

        let agg = analysis(&[(
            "pom.xml",
            "<project><artifactId>parent</artifactId><packaging>pom</packaging><modules><module>api</module></modules>\
             <properties><java.version>1.8</java.version></properties></project>",
        )]);
        assert_eq!(agg.entrypoint, None);
        assert_eq!(agg.version.as_deref(), Some("8"));
        assert!(has_evidence(&agg, "aggregator of modules api"));
        assert_eq!(agg.ports, Vec::<u16>::new());
    }

    #[test]
    fn gradle_multi_module_spring_boot() {
        let a = analysis(&[
            (
                "settings.gradle.kts",
                "rootProject.name = \"shop\"\ninclude(\"lib\", \"app\")\n",
            ),
            ("lib/build.gradle.kts", "plugins { `java-library` }\n"),
            (
                "app/build.gradle.kts",
                "plugins {\n  id(\"org.springframework.boot\") version \"3.3.0\"\n  java\n}\nversion = \"0.0.1\"\njava { toolchain { languageVersion = JavaLanguageVersion.of(17) } }\n",
            ),
            (
                "app/src/main/resources/application.properties",
                "server.port = 9091\n",
            ),
            ("app/src/test/java/.keep", ""),
            ("gradlew", ""),
        ]);
        assert_eq!(a.build_system.as_deref(), Some("gradle"));
        assert_eq!(a.manifest.as_deref(), Some("app/build.gradle.kts"));
        assert_eq!(a.language.as_deref(), Some("java"));
        assert_eq!(a.name.as_deref(), Some("app"));
        assert_eq!(a.framework.as_deref(), Some("spring-boot"));
        assert_eq!(a.version.as_deref(), Some("17"));
        assert_eq!(
            a.entrypoint.as_deref(),
            Some("app/build/libs/app-0.0.1.jar")
        );
        assert_eq!(a.ports, [9091]);
        assert_eq!(a.test_command.as_deref(), Some("./gradlew test"));
    }

    #[test]
    fn dotnet_solution_with_web_and_test_projects() {
        let a = analysis(&[
            (
                "Shop.sln",
                "Project(\"{FAE04EC0}\") = \"Api.Tests\", \"tests\\Api.Tests\\Api.Tests.csproj\", \"{1}\"\nEndProject\nProject(\"{FAE04EC0}\") = \"Api\", \"src\\Api\\Api.csproj\", \"{2}\"\nEndProject\n",
            ),
            (
                "src/Api/Api.csproj",
                "<Project Sdk=\"Microsoft.NET.Sdk.Web\"><PropertyGroup><TargetFrameworks>net7.0;net8.0</TargetFrameworks></PropertyGroup></Project>",
            ),
            (
                "tests/Api.Tests/Api.Tests.csproj",
                "<Project Sdk=\"Microsoft.NET.Sdk\"><ItemGroup><PackageReference Include=\"Microsoft.NET.Test.Sdk\" Version=\"17\" /></ItemGroup></Project>",
            ),
            (
                "src/Api/Properties/launchSettings.json",
                "{\"profiles\": {\"https\": {\"commandName\": \"Project\", \"applicationUrl\": \"https://localhost:7001;http://localhost:5001\"}, \"IIS\": {\"commandName\": \"IISExpress\", \"applicationUrl\": \"http://localhost:1234\"}}}",
            ),
            (
                "src/Api/appsettings.json",
                "{\n  // Kestrel\n  \"Kestrel\": {\"Endpoints\": {\"Http\": {\"Url\": \"http://0.0.0.0:5002\"}}},\n}",
            ),
        ]);
        assert_eq!(a.manifest.as_deref(), Some("src/Api/Api.csproj"));
        assert_eq!(a.name.as_deref(), Some("Api"));
        assert_eq!(a.entrypoint.as_deref(), Some("Api.dll"));
        assert_eq!(a.version.as_deref(), Some("net8.0"));
        assert_eq!(a.framework.as_deref(), Some("aspnetcore"));
        assert_eq!(a.test_command.as_deref(), Some("dotnet test"));
        assert_eq!(a.ports, [5001, 5002, 7001]);

        let old = analysis(&[(
            "Web.csproj",
            "<Project Sdk=\"Microsoft.NET.Sdk.Web\"><PropertyGroup><TargetFramework>net6.0</TargetFramework><AssemblyName>Old.Web</AssemblyName></PropertyGroup></Project>",
        )]);
        assert_eq!(old.entrypoint.as_deref(), Some("Old.Web.dll"));
        assert_eq!(old.ports, [80]);
        let new = analysis(&[(
            "Web.fsproj",
            "<Project Sdk=\"Microsoft.NET.Sdk.Web\"><PropertyGroup><TargetFramework>net9.0</TargetFramework></PropertyGroup></Project>",
        )]);
        assert_eq!(new.language.as_deref(), Some("fsharp"));
        assert_eq!(new.ports, [8080]);
        assert!(has_evidence(
            &new,
            "default: ASP.NET Core images listen on 8080"
        ));
    }

    // --- polyglot, unclassified ------------------------------------------------------

    #[test]
    fn a_compiled_manifest_wins_over_tooling_beside_it() {
        let a = analysis(&[
            ("Cargo.toml", "[package]\nname = \"core\"\n"),
            ("src/main.rs", ""),
            ("package.json", r#"{"name": "ui"}"#),
            ("web/a.js", ""),
            ("web/b.js", ""),
            ("web/c.ts", ""),
        ]);
        assert_eq!(a.language.as_deref(), Some("rust"));
        assert_eq!(a.languages, ["rust", "javascript", "typescript"]);
        assert!(has_evidence(
            &a,
            "package.json: also a javascript (npm) project"
        ));
    }

    #[test]
    fn between_python_and_node_the_most_sources_win() {
        let a = analysis(&[
            ("requirements.txt", "django\n"),
            ("manage.py", ""),
            ("shop/models.py", ""),
            ("shop/views.py", ""),
            ("package.json", r#"{"devDependencies": {"webpack": "5"}}"#),
            ("webpack.config.js", ""),
        ]);
        assert_eq!(a.language.as_deref(), Some("python"));
        assert_eq!(a.languages, ["python", "javascript"]);
    }

    #[test]
    fn unclassified_folders_say_what_was_looked_for() {
        let empty = tempfile::tempdir().unwrap();
        let a = analyze(empty.path()).unwrap();
        assert!(!a.classified);
        assert_eq!(a.language, None);
        assert_eq!(a.reason.as_deref(), Some("the folder is empty"));

        let mono = analysis(&[
            ("README.md", "# mono"),
            ("backend/go.mod", "module x\n"),
            ("backend/main.go", "package main\n"),
            ("web/package.json", "{}"),
        ]);
        assert!(!mono.classified);
        let reason = mono.reason.unwrap();
        assert!(reason.contains("looked for Cargo.toml, go.mod"), "{reason}");
        assert!(
            reason.contains("backend/go.mod, web/package.json"),
            "{reason}"
        );
        assert!(reason.contains("1 go"), "{reason}");
        assert_eq!(mono.languages, ["go", "javascript"]);

        let scripts = analysis(&[("run.py", "print(1)\n")]);
        assert!(!scripts.classified);
        assert!(
            scripts
                .reason
                .unwrap()
                .contains("source files seen: 1 python")
        );
        assert_eq!(scripts.languages, ["python"]);
    }

    // --- hostile input ---------------------------------------------------------------

    #[test]
    fn malformed_package_json_is_a_note_not_an_error() {
        let a = analysis(&[
            ("package.json", "{ \"name\": \"x\", "),
            ("package-lock.json", "{}"),
            ("server.js", "app.listen(3000)\n"),
        ]);
        assert!(a.classified);
        assert_eq!(a.build_system.as_deref(), Some("npm"));
        assert_eq!(a.name, None);
        assert_eq!(a.entrypoint.as_deref(), Some("server.js"));
        assert_eq!(a.ports, [3000]);
        assert!(
            a.notes
                .iter()
                .any(|n| n.starts_with("package.json: not valid JSON")),
            "{:?}",
            a.notes
        );
        let array = analysis(&[("package.json", "[1, 2]")]);
        assert!(array.notes.iter().any(|n| n.contains("not a JSON object")));
    }

    #[test]
    fn binary_and_non_utf8_files_are_skipped() {
        let dir = project(&[("main.go", "package main\n")]);
        write(
            dir.path(),
            "package.json",
            &[0x89, b'P', b'N', b'G', 0, 0, 0xff, 0xfe],
        );
        write(dir.path(), "go.mod", b"module bin\n");
        write(dir.path(), "other.go", &[b'p', 0xff, 0xfe, b'\n']);
        let a = analyze(dir.path()).unwrap();
        assert_eq!(a.language.as_deref(), Some("go"));
        assert!(
            a.notes
                .iter()
                .any(|n| n == "package.json: not UTF-8 text, skipped"),
            "{:?}",
            a.notes
        );
        assert!(
            a.notes
                .iter()
                .any(|n| n == "other.go: not UTF-8 text, skipped"),
            "{:?}",
            a.notes
        );
    }

    #[test]
    fn large_files_are_read_only_in_part() {
        let mut text = String::from("[package]\nname = \"big\"\n");
        text.push_str(&"# é padding\n".repeat(MAX_READ / 10));
        let a = analysis(&[("Cargo.toml", &text), ("src/main.rs", "")]);
        assert_eq!(a.name.as_deref(), Some("big"));
        assert!(
            a.notes.iter().any(|n| n.contains("only the first 256 KiB")),
            "{:?}",
            a.notes
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_and_links_out_of_the_folder_are_not_followed() {
        use std::os::unix::fs::symlink;
        let outside = project(&[("secret/Cargo.toml", "[package]\nname = \"outside\"\n")]);
        let dir = project(&[("go.mod", "module inside\n"), ("real/x.go", "package x\n")]);
        symlink(dir.path(), dir.path().join("loop")).unwrap();
        symlink(dir.path().join("real"), dir.path().join("real/again")).unwrap();
        symlink(outside.path().join("secret"), dir.path().join("secret")).unwrap();
        symlink(
            outside.path().join("secret/Cargo.toml"),
            dir.path().join("Cargo.toml"),
        )
        .unwrap();
        symlink(dir.path().join("real/x.go"), dir.path().join("linked.go")).unwrap();
        symlink(dir.path().join("nowhere"), dir.path().join("dangling")).unwrap();
        let a = analyze(dir.path()).unwrap();
        assert_eq!(a.language.as_deref(), Some("go"), "{a:?}");
        assert_eq!(a.name.as_deref(), Some("inside"));
        assert!(!a.languages.contains(&"rust".to_owned()));
        assert!(!a.evidence.iter().any(|e| e.contains("outside")));

        let tree = walk(
            &dir.path().canonicalize().unwrap(),
            Limits::DEFAULT,
            &CancellationToken::new(),
        )
        .unwrap();
        assert!(tree.has("linked.go"), "a link to a file inside counts");
        assert!(!tree.has("Cargo.toml"), "a link out of the folder does not");
        assert!(!tree.has_dir("loop") && !tree.has_dir("real/again"));
    }

    #[test]
    fn the_walk_is_bounded_in_depth_and_size() {
        let dir = project(&[
            ("a/b/c/d/shallow.py", ""),
            ("a/b/c/d/e/deep.py", ""),
            ("node_modules/x/package.json", "{}"),
            (".git/config", ""),
            ("target/debug/x.rs", ""),
        ]);
        let root = dir.path().canonicalize().unwrap();
        let tree = walk(&root, Limits::DEFAULT, &CancellationToken::new()).unwrap();
        assert!(tree.has("a/b/c/d/shallow.py"));
        assert!(tree.has_dir("a/b/c/d/e"));
        assert!(!tree.has("a/b/c/d/e/deep.py"));
        assert!(!tree.files.iter().any(|f| f.starts_with("node_modules")
            || f.starts_with(".git")
            || f.starts_with("target")));

        let wide = tempfile::tempdir().unwrap();
        for i in 0..30 {
            write(wide.path(), &format!("f{i:02}.py"), b"");
        }
        let small = Limits {
            max_depth: 4,
            max_files: 10,
        };
        let a = analyze_limited(wide.path(), &CancellationToken::new(), small).unwrap();
        assert!(
            a.notes
                .iter()
                .any(|n| n.contains("the walk stopped after 10 entries")),
            "{:?}",
            a.notes
        );
        assert!(a.reason.unwrap().contains("10 python"));
    }

    #[test]
    fn missing_paths_and_files_are_not_found() {
        let dir = project(&[("file.txt", "x")]);
        for p in [dir.path().join("nope"), dir.path().join("file.txt")] {
            let e = analyze(&p).unwrap_err();
            assert_eq!(e.class, ErrorClass::NotFound, "{e}");
            assert_eq!(e.code.as_deref(), Some("PATH_NOT_FOUND"));
            assert!(e.message.contains(&p.display().to_string()), "{e}");
        }
    }

    #[test]
    fn a_cancelled_analysis_stops() {
        let dir = project(&[("go.mod", "module x\n")]);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let e = analyze_with(dir.path(), &cancel).unwrap_err();
        assert_eq!(e.class, ErrorClass::Cancelled);
    }

    // --- the tool --------------------------------------------------------------------

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::detached(Arc::new(ToolRegistry::empty()), dir.to_path_buf())
    }

    #[test]
    fn schemas_are_valid_and_describe_every_property() {
        let tool = AnalyzeRepository;
        let input = jsonschema::draft202012::new(&tool.input_schema()).unwrap();
        assert!(input.is_valid(&json!({})));
        assert!(input.is_valid(&json!({"path": "services/api"})));
        assert!(!input.is_valid(&json!({"path": 3})));
        assert!(!input.is_valid(&json!({"paht": "."})));
        for schema in [tool.input_schema(), tool.output_schema()] {
            let props = schema["properties"].as_object().unwrap();
            for (name, p) in props {
                assert!(p["description"].is_string(), "`{name}` has no description");
            }
        }
        let out = tool.output_schema();
        let fields: Vec<&String> = out["properties"].as_object().unwrap().keys().collect();
        let produced = serde_json::to_value(Analysis::default()).unwrap();
        let mut keys: Vec<&String> = produced.as_object().unwrap().keys().collect();
        let mut want = fields.clone();
        keys.sort();
        want.sort();
        assert_eq!(keys, want, "the output schema lists exactly the fields");
        assert!(tool.description().len() < 300);
        assert!(!tool.host_exec() && !tool.destructive());
    }

    #[tokio::test]
    async fn the_tool_resolves_paths_and_its_output_matches_the_schema() {
        let dir = project(&[
            ("svc/go.mod", "module example.com/svc\n\ngo 1.22\n"),
            (
                "svc/main.go",
                "package main\nfunc main() { http.ListenAndServe(\":8080\", nil) }\n",
            ),
        ]);
        let tool = AnalyzeRepository;
        let out = tool
            .call(json!({"path": "svc"}), ctx(dir.path()))
            .await
            .unwrap();
        assert_eq!(out["language"], "go");
        assert_eq!(out["entrypoint"], ".");
        assert_eq!(out["ports"], json!([8080]));
        let output = jsonschema::draft202012::new(&tool.output_schema()).unwrap();
        assert!(output.is_valid(&out), "{out:#}");
        let unclassified = tool.call(json!({}), ctx(dir.path())).await.unwrap();
        assert!(output.is_valid(&unclassified), "{unclassified:#}");
        assert_eq!(unclassified["classified"], false);
        let null_args = tool
            .call(Value::Null, ctx(&dir.path().join("svc")))
            .await
            .unwrap();
        assert_eq!(null_args["language"], "go");
    }

    #[tokio::test]
    async fn the_tool_rejects_bad_arguments_and_names_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let tool = AnalyzeRepository;
        for (args, needle) in [
            (json!({"path": 1}), "`path` must be a string"),
            (json!({"dir": "."}), "unknown argument `dir`"),
            (json!(["."]), "must be an object"),
        ] {
            let e = tool.call(args, ctx(dir.path())).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::InvalidInput);
            assert!(e.message.contains(needle), "{e}");
        }
        let e = tool
            .call(json!({"path": "missing"}), ctx(dir.path()))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.code.as_deref(), Some("PATH_NOT_FOUND"));
        assert!(e.message.starts_with("`path` \"missing\": "), "{e}");
        let codes: Vec<&str> = tool.error_codes().iter().map(|(c, _)| *c).collect();
        assert!(codes.contains(&"PATH_NOT_FOUND"));

        let outside = tempfile::tempdir().unwrap();
        let confined = ctx(dir.path()).confined();
        let path = outside.path().display().to_string();
        let e = tool
            .call(json!({ "path": path }), confined)
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);
        assert_eq!(e.code.as_deref(), Some("PATH_OUTSIDE_PROJECT"));
        assert!(codes.contains(&"PATH_OUTSIDE_PROJECT"));
    }

    #[tokio::test]
    async fn the_tool_returns_cancelled_when_cancelled() {
        let dir = project(&[("go.mod", "module x\n")]);
        let c = ctx(dir.path());
        c.cancel.cancel();
        let e = AnalyzeRepository.call(json!({}), c).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Cancelled);
    }
}
