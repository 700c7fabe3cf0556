//! Diagnostics: what is wrong with a workflow file, where, and how to fix it.
//!
//! The library only produces data (code, message, file, line, column, path, help); the CLI
//! renders it with a source snippet (miette) and the MCP server returns it as JSON. Codes are
//! stable: tests, docs and users' scripts rely on them.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A stable diagnostic code. Each has a row in `docs/language.md#diagnostics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Code {
    /// The file could not be read.
    #[serde(rename = "E000")]
    Io,
    /// The text is not YAML or JSON.
    #[serde(rename = "E001")]
    Syntax,
    /// The document is too large or nested too deeply.
    #[serde(rename = "E002")]
    TooLarge,
    /// A value has the wrong type or shape (JSON Schema).
    #[serde(rename = "E010")]
    Schema,
    /// A required field is missing.
    #[serde(rename = "E011")]
    MissingField,
    /// A key the language does not know.
    #[serde(rename = "E012")]
    UnknownField,
    /// `apiVersion` is not `ckflow/v1`.
    #[serde(rename = "E013")]
    ApiVersion,
    /// An unquoted `{{template}}` that YAML read as a mapping.
    #[serde(rename = "E014")]
    UnquotedTemplate,
    /// A mapping with the same key twice.
    #[serde(rename = "E015")]
    DuplicateKey,
    /// Two steps with the same id.
    #[serde(rename = "E020")]
    DuplicateStep,
    /// `needs` names a step that does not exist.
    #[serde(rename = "E021")]
    UnknownNeed,
    /// A step needs itself.
    #[serde(rename = "E022")]
    SelfNeed,
    /// The steps' needs form a cycle.
    #[serde(rename = "E023")]
    Cycle,
    /// A step needs a step of the other section (main DAG vs `finally`).
    #[serde(rename = "E024")]
    CrossSectionNeed,
    /// `tool` names no registry tool.
    #[serde(rename = "E030")]
    UnknownTool,
    /// `with` does not fit the tool's input schema.
    #[serde(rename = "E031")]
    ToolInput,
    /// A template does not parse.
    #[serde(rename = "E040")]
    TemplateSyntax,
    /// A template names a step that is not upstream of the step using it.
    #[serde(rename = "E041")]
    TemplateStepRef,
    /// A template names an input that is not declared.
    #[serde(rename = "E042")]
    TemplateInputRef,
    /// A template calls a helper that does not exist.
    #[serde(rename = "E043")]
    UnknownHelper,
    /// A template uses a variable that does not exist where it is used.
    #[serde(rename = "E044")]
    TemplateVariable,
    /// An input's default (or enum value) is not of its type.
    #[serde(rename = "E050")]
    InputDefault,
    /// A value given for an input is missing, undeclared or of the wrong type.
    #[serde(rename = "E051")]
    InputValue,
    /// A duration does not parse.
    #[serde(rename = "E060")]
    Duration,
    /// An `on_failure` rule names an unknown step or tool.
    #[serde(rename = "E070")]
    RuleReference,
    /// A retry or rule limit that can never work (`max_attempts: 0`, …).
    #[serde(rename = "E071")]
    BadLimit,
}

impl Code {
    /// The code as written in diagnostics (`E023`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "E000",
            Code::Syntax => "E001",
            Code::TooLarge => "E002",
            Code::Schema => "E010",
            Code::MissingField => "E011",
            Code::UnknownField => "E012",
            Code::ApiVersion => "E013",
            Code::UnquotedTemplate => "E014",
            Code::DuplicateKey => "E015",
            Code::DuplicateStep => "E020",
            Code::UnknownNeed => "E021",
            Code::SelfNeed => "E022",
            Code::Cycle => "E023",
            Code::CrossSectionNeed => "E024",
            Code::UnknownTool => "E030",
            Code::ToolInput => "E031",
            Code::TemplateSyntax => "E040",
            Code::TemplateStepRef => "E041",
            Code::TemplateInputRef => "E042",
            Code::UnknownHelper => "E043",
            Code::TemplateVariable => "E044",
            Code::InputDefault => "E050",
            Code::InputValue => "E051",
            Code::Duration => "E060",
            Code::RuleReference => "E070",
            Code::BadLimit => "E071",
        }
    }

    /// A short slug for the code (`cycle`), shown next to it.
    pub fn slug(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::Syntax => "syntax",
            Code::TooLarge => "too-large",
            Code::Schema => "schema",
            Code::MissingField => "missing-field",
            Code::UnknownField => "unknown-field",
            Code::ApiVersion => "api-version",
            Code::UnquotedTemplate => "unquoted-template",
            Code::DuplicateKey => "duplicate-key",
            Code::DuplicateStep => "duplicate-step",
            Code::UnknownNeed => "unknown-need",
            Code::SelfNeed => "self-need",
            Code::Cycle => "cycle",
            Code::CrossSectionNeed => "cross-section-need",
            Code::UnknownTool => "unknown-tool",
            Code::ToolInput => "tool-input",
            Code::TemplateSyntax => "template-syntax",
            Code::TemplateStepRef => "template-step-ref",
            Code::TemplateInputRef => "template-input-ref",
            Code::UnknownHelper => "unknown-helper",
            Code::TemplateVariable => "template-variable",
            Code::InputDefault => "input-default",
            Code::InputValue => "input-value",
            Code::Duration => "duration",
            Code::RuleReference => "rule-reference",
            Code::BadLimit => "bad-limit",
        }
    }

    /// Every code, for docs and tests.
    pub const ALL: [Code; 26] = [
        Code::Io,
        Code::Syntax,
        Code::TooLarge,
        Code::Schema,
        Code::MissingField,
        Code::UnknownField,
        Code::ApiVersion,
        Code::UnquotedTemplate,
        Code::DuplicateKey,
        Code::DuplicateStep,
        Code::UnknownNeed,
        Code::SelfNeed,
        Code::Cycle,
        Code::CrossSectionNeed,
        Code::UnknownTool,
        Code::ToolInput,
        Code::TemplateSyntax,
        Code::TemplateStepRef,
        Code::TemplateInputRef,
        Code::UnknownHelper,
        Code::TemplateVariable,
        Code::InputDefault,
        Code::InputValue,
        Code::Duration,
        Code::RuleReference,
        Code::BadLimit,
    ];
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text of a workflow file, shared by every diagnostic that points into it.
#[derive(Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (a path, or `<mcp>` for text sent by a client).
    pub name: String,
    /// The whole text.
    pub text: String,
}

/// One problem in a workflow file.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// Stable code (`E023`).
    pub code: Code,
    /// What is wrong.
    pub message: String,
    /// The file's name as given.
    pub file: String,
    /// 1-based line (0 when the problem has no place, e.g. an unreadable file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Where in the document: `steps[3].with.tag` (empty for the whole document).
    pub path: String,
    /// How to fix it, when there is something useful to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Byte offset of the place, for snippets.
    #[serde(skip)]
    pub offset: usize,
    /// Byte length of the underlined span (at least 1).
    #[serde(skip)]
    pub len: usize,
    /// The source text, for rendering.
    #[serde(skip)]
    pub source: Option<Arc<SourceFile>>,
}

impl Diagnostic {
    /// The one-line form: `file:line:column: E023 message [path]`.
    pub fn short(&self) -> String {
        let place = if self.path.is_empty() {
            String::new()
        } else {
            format!(" [{}]", self.path)
        };
        format!(
            "{}:{}:{}: {} {}{}",
            self.file, self.line, self.column, self.code, self.message, place
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// Every problem found in one workflow; what validation returns instead of a workflow.
#[derive(Debug, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `word`, when it is close enough to suggest.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for c in candidates {
        let d = levenshtein(&word.to_lowercase(), &c.to_lowercase());
        let limit = (word.len().max(c.len()) / 3).max(1);
        if d <= limit && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((c, d));
        }
    }
    best.map(|(c, _)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_words_only() {
        assert_eq!(
            did_you_mean("neds", ["needs", "name", "tool"]),
            Some("needs")
        );
        assert_eq!(did_you_mean("xyz", ["needs", "name", "tool"]), None);
        assert_eq!(did_you_mean("timout", ["timeout", "tool"]), Some("timeout"));
    }

    #[test]
    fn every_code_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }
}
