//! Workflows by NAME (SPEC §5): the project's `workflows/NAME.{yaml,yml,json}` first, else
//! a workflow shipped inside the ckflow binary (such as `containerize`). The CLI (`ckflow
//! run NAME`, `ckflow workflows`), the MCP server (`ExecuteWorkflow`, `ListWorkflows`) and
//! the `workflow` tool all resolve names here, so they agree on what a name means.
//!
//! A name never leaves `workflows/`: paths, `..`, absolute names and symlinks that point
//! outside the folder are refused.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{Diagnostic, Diagnostics, Workflow};
use crate::ToolRegistry;

/// A workflow built into the binary.
#[derive(Debug)]
pub struct Shipped {
    /// Its NAME.
    pub name: &'static str,
    /// Its YAML text.
    pub text: &'static str,
}

impl Shipped {
    /// What diagnostics and run records call the file.
    pub fn file_name(&self) -> String {
        format!("shipped:workflows/{}.yaml", self.name)
    }
}

/// The workflows shipped inside the binary; a project's `workflows/NAME.yaml` overrides
/// the one of the same name.
pub const SHIPPED: &[Shipped] = &[Shipped {
    name: "containerize",
    text: include_str!("../../workflows/containerize.yaml"),
}];

/// The extensions a workflow file may have, in the order names are tried.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Where a NAME resolved to.
#[derive(Debug, Clone)]
pub enum Found {
    /// A file of the project's `workflows/` (its real path).
    File(PathBuf),
    /// A workflow shipped in the binary.
    Shipped(&'static Shipped),
}

impl Found {
    /// Load and check it.
    pub fn load(&self, registry: &ToolRegistry) -> Result<Workflow, Diagnostics> {
        match self {
            Found::File(p) => Workflow::from_path_with(p, registry),
            Found::Shipped(s) => Workflow::from_str_with(&s.file_name(), s.text, registry),
        }
    }

    /// `project` or `shipped`.
    pub fn origin(&self) -> &'static str {
        match self {
            Found::File(_) => "project",
            Found::Shipped(_) => "shipped",
        }
    }

    /// The file as people should see it: relative to the project, or `shipped:…`.
    pub fn display(&self, project: &Path) -> String {
        match self {
            Found::File(p) => p
                .strip_prefix(project)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| p.display().to_string()),
            Found::Shipped(s) => s.file_name(),
        }
    }
}

/// Why a workflow name does not resolve.
#[derive(Debug, Clone, PartialEq)]
pub enum NameError {
    /// The name is not a plain name (a path, `..`, odd characters): refused.
    Refused(String),
    /// No such workflow.
    NotFound(String),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Refused(m) | NameError::NotFound(m) => f.write_str(m),
        }
    }
}

/// Whether `name` is a plain workflow name: 1 to 128 of `A-Z a-z 0-9 _ -`, starting with a
/// letter or digit. Nothing that could be a path gets through.
pub fn is_plain_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The shipped workflow called `name`.
pub fn shipped(name: &str) -> Option<&'static Shipped> {
    SHIPPED.iter().find(|s| s.name == name)
}

/// `NAME` → `<project>/workflows/NAME.{yaml,yml,json}`, else the shipped workflow of that
/// name; refuses anything that would leave `workflows/`.
pub fn resolve(project: &Path, name: &str) -> Result<Found, NameError> {
    if !is_plain_name(name) {
        return Err(NameError::Refused(format!(
            "`{}` is not a workflow name: a NAME is a file of the project's workflows/ folder \
             or a shipped workflow (letters, digits, `-`, `_`; no paths, no `..`, no \
             extension)",
            name.escape_debug()
        )));
    }
    let dir = project.join("workflows");
    if let Ok(real_dir) = dir.canonicalize()
        && let Some(found) = resolve_in(&dir, &real_dir, name)
    {
        return found.map(Found::File);
    }
    if let Some(s) = shipped(name) {
        return Ok(Found::Shipped(s));
    }
    let known: Vec<String> = list(project).into_iter().map(|(n, _)| n).collect();
    Err(NameError::NotFound(format!(
        "no workflow `{name}`: there is no {} and no shipped workflow of that name \
         (known: {})",
        Path::new("workflows")
            .join(format!("{name}.yaml"))
            .display(),
        known.join(", ")
    )))
}

/// The first `dir/NAME.EXT` that exists, checked to stay inside `real_dir` (the canonical
/// `dir`); `None` when there is none.
fn resolve_in(dir: &Path, real_dir: &Path, name: &str) -> Option<Result<PathBuf, NameError>> {
    for ext in EXTENSIONS {
        let candidate = dir.join(format!("{name}.{ext}"));
        if std::fs::symlink_metadata(&candidate).is_err() {
            continue;
        }
        return Some(match candidate.canonicalize() {
            Ok(real) if !real.starts_with(real_dir) => Err(NameError::Refused(format!(
                "workflows/{name}.{ext} is a link to a file outside workflows/; refused"
            ))),
            Ok(real) if real.is_file() => Ok(real),
            Ok(_) => Err(NameError::NotFound(format!(
                "workflows/{name}.{ext} is not a file"
            ))),
            Err(e) => Err(NameError::NotFound(format!(
                "workflows/{name}.{ext} cannot be read: {e}"
            ))),
        });
    }
    None
}

/// The project's workflow files (names refused for leaving `workflows/` are left out), then
/// the shipped workflows the project does not override; sorted by name.
pub fn list(project: &Path) -> Vec<(String, Found)> {
    let mut out: std::collections::BTreeMap<String, Found> = SHIPPED
        .iter()
        .map(|s| (s.name.to_owned(), Found::Shipped(s)))
        .collect();
    let dir = project.join("workflows");
    if let (Ok(real_dir), Ok(entries)) = (dir.canonicalize(), std::fs::read_dir(&dir)) {
        let mut stems = std::collections::BTreeSet::new();
        for entry in entries.filter_map(Result::ok) {
            let file = entry.file_name();
            if let Some((stem, ext)) = file.to_str().and_then(|f| f.rsplit_once('.'))
                && EXTENSIONS.contains(&ext)
                && is_plain_name(stem)
            {
                stems.insert(stem.to_owned());
            }
        }
        for stem in stems {
            if let Some(Ok(path)) = resolve_in(&dir, &real_dir, &stem) {
                out.insert(stem, Found::File(path));
            }
        }
    }
    out.into_iter().collect()
}

/// One entry of `ckflow workflows` and `ListWorkflows`: name, origin, file, description and
/// inputs (secret defaults masked), or the first problem of a workflow that does not load.
pub fn describe(project: &Path, name: &str, found: &Found, registry: &ToolRegistry) -> Value {
    let file = found.display(project);
    match found.load(registry) {
        Ok(wf) => {
            let inputs: Map<String, Value> = wf
                .doc
                .inputs
                .iter()
                .map(|(k, spec)| {
                    let mut v = serde_json::to_value(spec).unwrap_or(Value::Null);
                    if spec.secret
                        && let Some(d) = v.get_mut("default")
                    {
                        *d = json!(crate::store::MASK);
                    }
                    (k.clone(), v)
                })
                .collect();
            json!({
                "name": name,
                "origin": found.origin(),
                "workflow": wf.doc.name,
                "file": file,
                "description": wf.doc.description,
                "inputs": inputs,
                "steps": wf.doc.steps.len() + wf.doc.finally.len(),
                "valid": true,
            })
        }
        Err(d) => json!({
            "name": name,
            "origin": found.origin(),
            "file": file,
            "valid": false,
            "problems": d.0.len(),
            "first_problem": d.0.first().map(Diagnostic::short),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_workflow_is_valid() {
        let registry = ToolRegistry::builtin();
        for s in SHIPPED {
            let wf = Found::Shipped(s).load(&registry);
            assert!(
                wf.is_ok(),
                "{} does not validate: {:?}",
                s.name,
                wf.err()
                    .map(|d| d.0.iter().map(Diagnostic::short).collect::<Vec<_>>())
            );
            assert_eq!(wf.map(|w| w.doc.name).ok().as_deref(), Some(s.name));
        }
    }

    #[test]
    fn project_file_overrides_shipped_and_shipped_is_the_fallback() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        assert!(matches!(
            resolve(root, "containerize"),
            Ok(Found::Shipped(s)) if s.name == "containerize"
        ));
        std::fs::create_dir(root.join("workflows")).unwrap();
        std::fs::write(root.join("workflows/containerize.yaml"), "x").unwrap();
        std::fs::write(root.join("workflows/other.yml"), "x").unwrap();
        match resolve(root, "containerize") {
            Ok(Found::File(p)) => assert!(p.ends_with("workflows/containerize.yaml")),
            other => panic!("expected the project file, got {other:?}"),
        }
        let names: Vec<(String, &str)> = list(root)
            .into_iter()
            .map(|(n, f)| (n, f.origin()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("containerize".to_owned(), "project"),
                ("other".to_owned(), "project")
            ]
        );
    }

    #[test]
    fn names_that_could_leave_workflows_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for bad in ["../x", "/etc/passwd", "a/b", ".hidden", "", "x.yaml", "a b"] {
            assert!(
                matches!(resolve(root, bad), Err(NameError::Refused(_))),
                "{bad:?} was not refused"
            );
        }
        std::fs::create_dir(root.join("workflows")).unwrap();
        std::fs::write(root.join("outside.yaml"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("outside.yaml"), root.join("workflows/evil.yaml"))
            .unwrap();
        assert!(matches!(resolve(root, "evil"), Err(NameError::Refused(_))));
        assert!(list(root).iter().all(|(n, _)| n != "evil"));
        match resolve(root, "nope") {
            Err(NameError::NotFound(m)) => assert!(m.contains("containerize"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
