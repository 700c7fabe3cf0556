//! The workflow language: the serde model, loading with positions, the JSON Schema and the
//! semantic checks that turn a document into a checked [`Workflow`].
//!
//! Stages are types: text becomes a [`load::Loaded`] document, and only validation makes a
//! [`Workflow`] out of it, so nothing downstream (planning, the engine, MCP) can be handed an
//! unchecked file.

pub mod catalog;
pub mod check;
pub mod diagnostic;
pub mod duration;
pub mod load;
pub mod model;
pub mod schema;

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

pub use diagnostic::{Code, Diagnostic, Diagnostics, SourceFile};
pub use model::WorkflowDoc;

use crate::tools::ToolRegistry;

/// A checked workflow: it passed the JSON Schema and every semantic check against a
/// registry. Built only by [`Workflow::from_path`], [`Workflow::from_str`] and friends.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The typed document.
    pub doc: WorkflowDoc,
    /// The loaded document with positions (for diagnostics about inputs given at run time).
    pub loaded: Arc<load::Loaded>,
}

impl Workflow {
    /// Load and check a file against the built-in registry.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join("ckflow-doc-from-path");
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let file = dir.join("hello.yaml");
    /// std::fs::write(&file, "apiVersion: ckflow/v1\nname: hello\nsteps:\n  - {id: a, tool: noop}\n").unwrap();
    /// let wf = ckflow::Workflow::from_path(&file).unwrap();
    /// assert_eq!(wf.doc.name, "hello");
    /// ```
    pub fn from_path(path: impl AsRef<Path>) -> Result<Workflow, Diagnostics> {
        Workflow::from_path_with(path, &ToolRegistry::builtin())
    }

    /// Load and check a file against `registry`.
    pub fn from_path_with(
        path: impl AsRef<Path>,
        registry: &ToolRegistry,
    ) -> Result<Workflow, Diagnostics> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            Diagnostics(vec![Diagnostic {
                code: Code::Io,
                message: format!("cannot read the workflow file: {e}"),
                file: name.clone(),
                line: 0,
                column: 0,
                path: String::new(),
                help: None,
                offset: 0,
                len: 0,
                source: None,
            }])
        })?;
        let loaded = load::load_bytes(&name, &bytes).map_err(Diagnostics)?;
        Workflow::from_loaded(loaded, registry)
    }

    /// Check workflow text (YAML or JSON); `name` is what diagnostics call it.
    ///
    /// ```
    /// let bad = "apiVersion: ckflow/v1\nname: x\nsteps:\n  - {id: a, tool: noop, needs: [b]}\n";
    /// let diags = ckflow::Workflow::from_str("x.yaml", bad).unwrap_err();
    /// assert_eq!(diags.0[0].code.as_str(), "E021");
    /// assert_eq!((diags.0[0].line, diags.0[0].path.as_str()), (4, "steps[0].needs[0]"));
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(name: &str, text: &str) -> Result<Workflow, Diagnostics> {
        Workflow::from_str_with(name, text, &ToolRegistry::builtin())
    }

    /// Check workflow text against `registry`.
    pub fn from_str_with(
        name: &str,
        text: &str,
        registry: &ToolRegistry,
    ) -> Result<Workflow, Diagnostics> {
        let loaded = load::load_str(name, text).map_err(Diagnostics)?;
        Workflow::from_loaded(loaded, registry)
    }

    /// Check a loaded document.
    pub fn from_loaded(
        mut loaded: load::Loaded,
        registry: &ToolRegistry,
    ) -> Result<Workflow, Diagnostics> {
        let mut diags = std::mem::take(&mut loaded.diagnostics);
        let (schema_diags, repaired) = schema::check(&loaded);
        let schema_ok = schema_diags.is_empty();
        diags.extend(schema_diags);
        let typed: Option<WorkflowDoc> = if schema_ok {
            match serde_json::from_value(loaded.value.clone()) {
                Ok(doc) => Some(doc),
                Err(e) => {
                    diags.push(loaded.diag(Code::Schema, "", e.to_string()));
                    None
                }
            }
        } else {
            // The schema found problems; check what still makes sense on the rest.
            serde_json::from_value(repaired).ok()
        };
        if let Some(doc) = &typed {
            diags.extend(check::check(&loaded, doc, registry));
        }
        if !diags.is_empty() {
            diags.sort_by_key(|d| (d.line, d.column, d.code));
            diags.dedup_by(|a, b| {
                a.line == b.line
                    && a.column == b.column
                    && a.code == b.code
                    && a.message == b.message
            });
            return Err(Diagnostics(diags));
        }
        let doc = typed.expect("no diagnostics means the document converted");
        Ok(Workflow {
            doc,
            loaded: Arc::new(loaded),
        })
    }

    /// The workflow's source text.
    pub fn source(&self) -> &str {
        &self.loaded.source.text
    }

    /// The name diagnostics use for the file.
    pub fn file_name(&self) -> &str {
        &self.loaded.source.name
    }

    /// A stable hash of the source text (FNV-1a, hex), recorded with runs.
    pub fn source_hash(&self) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.source().as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }

    /// Check given input values against the declared inputs and fill in defaults.
    /// Undeclared, missing required, wrongly typed and not-allowed values are diagnostics
    /// (code `E051`) placed at the input's declaration.
    pub fn resolve_inputs(
        &self,
        given: &IndexMap<String, Value>,
    ) -> Result<serde_json::Map<String, Value>, Diagnostics> {
        let mut out = serde_json::Map::new();
        let mut diags = Vec::new();
        let here = |name: &str| format!("/inputs/{}", load::escape_segment(name));
        for (k, _) in given {
            if !self.doc.inputs.contains_key(k) {
                let mut d = self.loaded.diag(
                    Code::InputValue,
                    if self.doc.inputs.is_empty() {
                        ""
                    } else {
                        "/inputs"
                    },
                    format!("`{k}` is not an input of `{}`", self.doc.name),
                );
                d.help = Some(
                    match diagnostic::did_you_mean(k, self.doc.inputs.keys().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if self.doc.inputs.is_empty() => {
                            "this workflow declares no inputs".into()
                        }
                        None => format!(
                            "its inputs: {}",
                            self.doc
                                .inputs
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    },
                );
                diags.push(d);
            }
        }
        for (name, spec) in &self.doc.inputs {
            let value = match given.get(name) {
                Some(v) => Some(v.clone()),
                None => spec.default.clone(),
            };
            match value {
                None if spec.required => {
                    diags.push(self.loaded.diag_key(
                        Code::InputValue,
                        &here(name),
                        format!(
                            "the required input `{name}` has no value (give it with `-i {name}=…`)"
                        ),
                    ));
                }
                None => {}
                Some(v) => {
                    let v = coerce(spec.ty, v);
                    if !spec.ty.accepts(&v) {
                        let shown = if spec.secret {
                            "(secret)".to_owned()
                        } else {
                            v.to_string()
                        };
                        diags.push(self.loaded.diag_key(
                            Code::InputValue,
                            &here(name),
                            format!(
                                "the input `{name}` must be of type `{}`, got {shown}",
                                spec.ty.as_str()
                            ),
                        ));
                        continue;
                    }
                    if let Some(allowed) = &spec.allowed
                        && !allowed.contains(&v)
                    {
                        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                        diags.push(self.loaded.diag_key(
                            Code::InputValue,
                            &here(name),
                            format!("the input `{name}` must be one of {}", list.join(", ")),
                        ));
                        continue;
                    }
                    out.insert(name.clone(), v);
                }
            }
        }
        if diags.is_empty() {
            Ok(out)
        } else {
            Err(Diagnostics(diags))
        }
    }

    /// The values of the secret inputs among `inputs` (to redact them everywhere).
    pub fn secret_values(&self, inputs: &serde_json::Map<String, Value>) -> Vec<String> {
        let mut out = Vec::new();
        for (name, spec) in &self.doc.inputs {
            if spec.secret
                && let Some(v) = inputs.get(name)
            {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if !s.is_empty() {
                    out.push(s);
                }
            }
        }
        out
    }
}

/// Text given on the command line (`-i replicas=3`) becomes the declared type when it reads
/// as one; values of the right type pass unchanged.
fn coerce(ty: model::InputType, v: Value) -> Value {
    use model::InputType as T;
    let Value::String(s) = &v else { return v };
    match ty {
        T::String => v,
        T::Integer => s.trim().parse::<i64>().map(Value::from).unwrap_or(v),
        T::Number => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(v),
        T::Boolean => match s.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v,
        },
        T::Array | T::Object => match serde_json::from_str::<Value>(s) {
            Ok(parsed) if ty.accepts(&parsed) => parsed,
            _ => v,
        },
    }
}
