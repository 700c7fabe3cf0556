//! `ckflow init`: a `workflows/` folder with a first workflow, never overwriting a file.

use std::path::Path;

use super::exit;

/// Arguments of `ckflow init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also copy the shipped `containerize` workflow into `workflows/` to edit.
    #[arg(long)]
    pub containerize: bool,
}

/// The first workflow `ckflow init` writes.
pub const FIRST: &str = r#"# Your first workflow: `ckflow run hello -i who=you`. The language: docs/language.md.
apiVersion: ckflow/v1
name: hello
description: Say hello, then show what the previous step printed.
inputs:
  who: {type: string, default: world, description: Whom to greet}
steps:
  - id: greet
    tool: shell
    with: {run: "echo hello, {{inputs.who}}"}
  - id: show
    tool: noop
    needs: [greet]
    outputs: {said: "{{steps.greet.outputs.stdout}}"}
"#;

/// Run it in the working directory.
pub fn run(a: Args) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    match init(&cwd, a.containerize) {
        Ok(written) => {
            for w in &written {
                eprintln!("wrote {w}");
            }
            if written.is_empty() {
                eprintln!("nothing to do: the files are already there");
            }
            eprintln!("next: ckflow workflows; ckflow run hello");
            exit::OK
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            exit::FAILED
        }
    }
}

/// Create `dir/workflows/` with `hello.yaml` (and `containerize.yaml`); files that exist
/// are left alone. Returns what was written, relative to `dir`.
pub fn init(dir: &Path, containerize: bool) -> Result<Vec<String>, String> {
    let wf = dir.join("workflows");
    std::fs::create_dir_all(&wf).map_err(|e| format!("cannot create {}: {e}", wf.display()))?;
    let mut files = vec![("hello.yaml", FIRST)];
    if containerize && let Some(s) = crate::workflow::catalog::shipped("containerize") {
        files.push(("containerize.yaml", s.text));
    }
    let mut written = Vec::new();
    for (name, text) in files {
        let p = wf.join(name);
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", p.display())),
        };
        std::io::Write::write_all(&mut f, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        written.push(format!("workflows/{name}"));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_valid_workflows_and_never_overwrites() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(
            init(t.path(), true).unwrap(),
            vec!["workflows/hello.yaml", "workflows/containerize.yaml"]
        );
        let registry = crate::ToolRegistry::builtin();
        for f in ["hello.yaml", "containerize.yaml"] {
            let p = t.path().join("workflows").join(f);
            assert!(
                crate::Workflow::from_path_with(&p, &registry).is_ok(),
                "{f}"
            );
        }
        std::fs::write(t.path().join("workflows/hello.yaml"), "mine").unwrap();
        assert!(init(t.path(), false).unwrap().is_empty());
        assert_eq!(
            std::fs::read_to_string(t.path().join("workflows/hello.yaml")).unwrap(),
            "mine"
        );
    }
}
