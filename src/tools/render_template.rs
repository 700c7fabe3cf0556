//! `render_template`: renders a Handlebars template (inline or from a file) against
//! `values`, with the same strict, unescaped registry and helpers as workflow templates
//! (SPEC §1.1), and optionally writes the text to a file.

// `ToolError` is the error type the `Tool` trait fixes; boxing it here would only move
// the allocation around.
#![allow(clippy::result_large_err)]

use std::path::PathBuf;

use handlebars::RenderErrorReason;
use serde_json::{Map, Value, json};

use super::{Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::model::ErrorClass;

/// The `render_template` tool.
pub struct RenderTemplate;

impl Tool for RenderTemplate {
    fn name(&self) -> &str {
        "render_template"
    }

    fn description(&self) -> &str {
        "Renders a Handlebars template, inline or from a file, against `values` and returns the \
         text, optionally writing it to a file."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "A template (exactly one of `template` and `template_file`) and \
                            the values it is rendered with.",
            "additionalProperties": false,
            "properties": {
                "template": {
                    "type": "string",
                    "description": "The template text (strict Handlebars: a missing value is \
                                    an error; nothing is HTML-escaped)."
                },
                "template_file": {
                    "type": "string",
                    "description": "A file holding the template, relative to the project folder."
                },
                "values": {
                    "type": "object",
                    "description": "The template's context: `{{name}}` reads `values.name`.",
                    "default": {}
                },
                "output": {
                    "type": "string",
                    "description": "A file to write the rendered text to, relative to the \
                                    project folder; missing parent folders are created."
                }
            },
            "oneOf": [
                {"required": ["template"]},
                {"required": ["template_file"]}
            ]
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "The rendered text, and where it was written.",
            "required": ["content"],
            "properties": {
                "path": {
                    "type": "string",
                    "description": "The absolute path of the written file (only with `output`)."
                },
                "content": {"type": "string", "description": "The rendered text."}
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "MISSING_VARIABLE",
                "The template uses a value that `values` does not have (class `invalid_input`).",
            ),
            (
                "TEMPLATE_SYNTAX",
                "The template does not parse (class `invalid_input`).",
            ),
            (
                "RENDER_FAILED",
                "Rendering failed for another reason, e.g. an unknown helper (class \
                 `invalid_input`).",
            ),
            (
                "TEMPLATE_NOT_FOUND",
                "`template_file` does not exist or cannot be read (class `not_found`).",
            ),
            (
                "WRITE_FAILED",
                "The `output` file could not be written (class `tool_error`).",
            ),
        ]
    }

    fn destructive(&self) -> bool {
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(run(args, ctx))
    }
}

/// Where the template comes from.
enum Source {
    Inline(String),
    File(String),
}

/// Parsed `with:`.
struct Args {
    source: Source,
    values: Value,
    output: Option<String>,
}

impl Args {
    fn parse(v: &Value) -> Result<Args, ToolError> {
        let obj = v.as_object().ok_or_else(|| {
            ToolError::invalid("the arguments of `render_template` must be an object")
        })?;
        let string = |k: &str| -> Result<Option<String>, ToolError> {
            match obj.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ToolError::invalid(format!("`{k}` must be a string"))),
            }
        };
        if let Some(other) = obj.keys().find(|k| {
            !matches!(
                k.as_str(),
                "template" | "template_file" | "values" | "output"
            )
        }) {
            return Err(ToolError::invalid(format!(
                "unknown argument `{other}` (expected `template` or `template_file`, \
                 `values`, `output`)"
            )));
        }
        let source = match (string("template")?, string("template_file")?) {
            (Some(t), None) => Source::Inline(t),
            (None, Some(f)) => Source::File(f),
            (Some(_), Some(_)) => {
                return Err(ToolError::invalid(
                    "give either `template` or `template_file`, not both",
                ));
            }
            (None, None) => {
                return Err(ToolError::invalid(
                    "one of `template` or `template_file` is required",
                ));
            }
        };
        let values = match obj.get("values") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return Err(ToolError::invalid("`values` must be an object")),
        };
        Ok(Args {
            source,
            values,
            output: string("output")?,
        })
    }
}

async fn run(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let args = Args::parse(&args)?;
    if ctx.cancel.is_cancelled() {
        return Err(ToolError::cancelled());
    }
    let (template, origin) = match args.source {
        Source::Inline(t) => (t, "template".to_owned()),
        Source::File(f) => {
            let path = ctx.path("template_file", &f)?;
            let bytes = tokio::fs::read(&path).await.map_err(|e| {
                ToolError::new(
                    ErrorClass::NotFound,
                    format!("cannot read template file `{}`: {e}", path.display()),
                )
                .with_code("TEMPLATE_NOT_FOUND")
            })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ToolError::invalid(format!(
                    "template file `{}` is not UTF-8 text",
                    path.display()
                ))
                .with_code("TEMPLATE_SYNTAX")
            })?;
            (text, format!("template file `{}`", path.display()))
        }
    };
    let content = render(&template, &args.values).map_err(|e| {
        let message = format!("{origin}: {}", e.message);
        ToolError::invalid(message).with_code(e.code)
    })?;

    let mut result = Map::new();
    if let Some(out) = args.output {
        let path = absolute(ctx.path("output", &out)?);
        write(&path, &content).await.map_err(|e| {
            ToolError::new(
                ErrorClass::ToolError,
                format!("cannot write `{}`: {e}", path.display()),
            )
            .with_code("WRITE_FAILED")
        })?;
        result.insert(
            "path".into(),
            Value::String(path.to_string_lossy().into_owned()),
        );
    }
    result.insert("content".into(), Value::String(content));
    Ok(Value::Object(result))
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

async fn write(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::write(path, content).await
}

/// A rendering failure: an error code and a message.
struct RenderFailure {
    code: &'static str,
    message: String,
}

/// Render `template` as text with the shared strict registry, `values` as the context.
fn render(template: &str, values: &Value) -> Result<String, RenderFailure> {
    let registry = crate::template::registry();
    // Handlebars' parser has `unwrap`s its grammar should make unreachable; a template
    // from a user must never take the process down with it.
    let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        registry.render_template(template, values)
    }))
    .map_err(|_| RenderFailure {
        code: "TEMPLATE_SYNTAX",
        message: "invalid template: the Handlebars parser gave up on it".to_owned(),
    })?;
    rendered.map_err(|e| {
        let at = |line: Option<usize>, col: Option<usize>| match (line, col) {
            (Some(l), Some(c)) => format!("line {l}, column {c}: "),
            (Some(l), None) => format!("line {l}: "),
            _ => String::new(),
        };
        match e.reason() {
            RenderErrorReason::TemplateError(te) => {
                let (line, col) = te.pos().unzip();
                RenderFailure {
                    code: "TEMPLATE_SYNTAX",
                    message: format!("{}invalid template: {}", at(line, col), te.reason()),
                }
            }
            RenderErrorReason::MissingVariable(path) => RenderFailure {
                code: "MISSING_VARIABLE",
                message: format!(
                    "{}{} is not defined",
                    at(e.line_no, e.column_no),
                    path.as_deref()
                        .map_or("a value".to_owned(), |p| format!("`{p}`"))
                ),
            },
            RenderErrorReason::HelperNotFound(name) => RenderFailure {
                code: "RENDER_FAILED",
                message: format!("{}unknown helper `{name}`", at(e.line_no, e.column_no)),
            },
            other => RenderFailure {
                code: "RENDER_FAILED",
                message: format!("{}{other}", at(e.line_no, e.column_no)),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::tools::ToolRegistry;

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::detached(Arc::new(ToolRegistry::empty()), dir.to_path_buf())
    }

    async fn call(dir: &Path, args: Value) -> Result<Value, ToolError> {
        RenderTemplate.call(args, ctx(dir)).await
    }

    #[tokio::test]
    async fn inline_template() {
        let dir = tempfile::tempdir().unwrap();
        let r = call(
            dir.path(),
            json!({
                "template": "image: {{image}}:{{tag}} <&>\n{{#each ports}}- {{this}}\n{{/each}}{{json env}}",
                "values": {"image": "app", "tag": "v1", "ports": [80, 443], "env": {"A": "b"}}
            }),
        )
        .await
        .unwrap();
        assert_eq!(
            r,
            json!({"content": "image: app:v1 <&>\n- 80\n- 443\n{\"A\":\"b\"}"}),
            "no escaping, helpers available, no `path` without `output`"
        );
        let r = call(dir.path(), json!({"template": "plain"}))
            .await
            .unwrap();
        assert_eq!(r["content"], "plain", "values default to {{}}");
    }

    #[tokio::test]
    async fn file_template_written_to_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tpl")).unwrap();
        std::fs::write(
            dir.path().join("tpl/deploy.yaml.hbs"),
            "replicas: {{replicas}}\nname: {{default name \"web\"}}\n",
        )
        .unwrap();
        let r = call(
            dir.path(),
            json!({
                "template_file": "tpl/deploy.yaml.hbs",
                "values": {"replicas": 3},
                "output": "out/k8s/deploy.yaml"
            }),
        )
        .await
        .unwrap();
        let expected = "replicas: 3\nname: web\n";
        assert_eq!(r["content"], expected);
        let path = dir.path().join("out/k8s/deploy.yaml");
        assert_eq!(r["path"], path.to_str().unwrap());
        assert!(Path::new(r["path"].as_str().unwrap()).is_absolute());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);

        // An absolute template_file works too.
        let abs = dir.path().join("tpl/deploy.yaml.hbs");
        let r = call(
            dir.path(),
            json!({"template_file": abs.to_str().unwrap(), "values": {"replicas": 1}}),
        )
        .await
        .unwrap();
        assert_eq!(r["content"], "replicas: 1\nname: web\n");
    }

    #[tokio::test]
    async fn missing_variable_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let e = call(
            dir.path(),
            json!({"template": "a\nb {{image.tag}}", "values": {"image": {}}}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);
        assert_eq!(e.code.as_deref(), Some("MISSING_VARIABLE"));
        assert!(
            e.message.contains("`image.tag` is not defined"),
            "{}",
            e.message
        );
        assert!(e.message.contains("line 2"), "{}", e.message);
        assert!(!dir.path().join("never").exists());
    }

    #[tokio::test]
    async fn bad_syntax_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        for t in ["{{#if x}}never closed", "{{", "{{a b c}"] {
            let e = call(dir.path(), json!({"template": t, "values": {"x": 1}}))
                .await
                .unwrap_err();
            assert_eq!(e.class, ErrorClass::InvalidInput, "{t}");
            assert_eq!(
                e.code.as_deref(),
                Some("TEMPLATE_SYNTAX"),
                "{t}: {}",
                e.message
            );
        }
        let e = call(dir.path(), json!({"template": "{{nohelper 1}}"}))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);
        assert_eq!(e.code.as_deref(), Some("RENDER_FAILED"));
        assert!(e.message.contains("nohelper"), "{}", e.message);
    }

    #[tokio::test]
    async fn missing_template_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = call(dir.path(), json!({"template_file": "nope.hbs"}))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.code.as_deref(), Some("TEMPLATE_NOT_FOUND"));
        assert!(e.message.contains("nope.hbs"), "{}", e.message);
    }

    #[tokio::test]
    async fn write_failure_is_a_tool_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let e = call(
            dir.path(),
            json!({"template": "x", "output": "file/below/out.txt"}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.class, ErrorClass::ToolError);
        assert_eq!(e.code.as_deref(), Some("WRITE_FAILED"));
    }

    #[tokio::test]
    async fn exactly_one_of_template_and_template_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.hbs"), "x").unwrap();
        let validator = jsonschema::draft202012::new(&RenderTemplate.input_schema()).unwrap();
        for args in [
            json!({"template": "x", "template_file": "t.hbs"}),
            json!({"values": {}}),
        ] {
            assert!(!validator.is_valid(&args), "{args}");
            let e = call(dir.path(), args.clone()).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::InvalidInput, "{args}");
        }
        for args in [
            json!({"template": "x"}),
            json!({"template_file": "t.hbs", "values": {"a": 1}, "output": "o"}),
        ] {
            assert!(validator.is_valid(&args), "{args}");
        }
        for args in [
            json!({"template": "x", "values": [1]}),
            json!({"template": "x", "extra": 1}),
            json!({"template": 1}),
        ] {
            assert!(!validator.is_valid(&args), "{args}");
            let e = call(dir.path(), args.clone()).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::InvalidInput, "{args}");
        }
    }

    #[test]
    fn schemas_describe_every_property() {
        let input = RenderTemplate.input_schema();
        for (name, p) in input["properties"].as_object().unwrap() {
            assert!(p["description"].is_string(), "{name}");
        }
        jsonschema::draft202012::new(&RenderTemplate.output_schema()).unwrap();
    }
}
