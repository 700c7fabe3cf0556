//! `validate_dockerfile`: parses a Dockerfile (SPEC §5) and checks it against rules of the
//! kind hadolint checks, without talking to Docker.
//!
//! The parser knows comments, parser directives (`# syntax=`, `# escape=`), line
//! continuations with the escape character, heredocs (`<<EOF` … `EOF`, skipped over and
//! kept as the instruction's bodies), instructions in any case, and the JSON-array (exec)
//! form. A Dockerfile that does not parse (unknown instruction, no `FROM`, an instruction
//! without arguments, a malformed JSON array, …) makes the tool fail with `invalid_input` /
//! `DOCKERFILE_INVALID`; one that parses gives `findings`, each with a rule id (hadolint's
//! `DL…` where it has one, `CK…` for ckflow's own), a severity, the instruction's first
//! line, a message and a fix hint. It is `build_image`'s default recovery route.

// `ToolError` is the error type the `Tool` trait fixes; boxing it here would only move
// the allocation around.
#![allow(clippy::result_large_err)]

use serde::Serialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::model::ErrorClass;

/// The `validate_dockerfile` tool.
pub struct ValidateDockerfile;

impl Tool for ValidateDockerfile {
    fn name(&self) -> &str {
        "validate_dockerfile"
    }

    fn description(&self) -> &str {
        "Parses a Dockerfile and checks it against hadolint-style rules (untagged images, \
         root user, apt-get hygiene, secrets in ENV, …), returning findings with line \
         numbers and fixes."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The Dockerfile to check: exactly one of `path` and `content`.",
            "additionalProperties": false,
            "properties": {
                "path": {
                    "type": "string",
                    "description": "A Dockerfile, relative to the project folder; a folder \
                                    means `<folder>/Dockerfile`."
                },
                "content": {
                    "type": "string",
                    "description": "The Dockerfile's text."
                }
            },
            "oneOf": [
                {"required": ["path"]},
                {"required": ["content"]}
            ]
        })
    }

    fn output_schema(&self) -> Value {
        let ids: Vec<&str> = CHECKS.iter().map(|c| c.0).collect();
        json!({
            "type": "object",
            "description": "What the rules found, and whether the Dockerfile is free of errors.",
            "required": ["findings", "errors", "warnings", "valid"],
            "properties": {
                "findings": {
                    "type": "array",
                    "description": "The findings, by line.",
                    "items": {
                        "type": "object",
                        "required": ["rule", "severity", "line", "message", "fix"],
                        "properties": {
                            "rule": {
                                "type": "string",
                                "description": "The rule's id.",
                                "enum": ids
                            },
                            "severity": {
                                "type": "string",
                                "enum": ["error", "warning", "info"],
                                "description": "How bad it is; only `error` makes the \
                                                Dockerfile invalid."
                            },
                            "line": {
                                "type": "integer",
                                "description": "The first line (1-based) of the instruction."
                            },
                            "message": {"type": "string", "description": "What is wrong."},
                            "fix": {"type": "string", "description": "How to fix it."}
                        }
                    }
                },
                "errors": {"type": "integer", "description": "How many findings are errors."},
                "warnings": {
                    "type": "integer",
                    "description": "How many findings are warnings."
                },
                "valid": {
                    "type": "boolean",
                    "description": "Whether there is no error (warnings and infos allowed)."
                }
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "DOCKERFILE_INVALID",
                "The Dockerfile does not parse: unknown instruction, an instruction before \
                 `FROM` other than `ARG`, empty file, an instruction without arguments, a \
                 malformed JSON array, an unterminated heredoc (class `invalid_input`); the \
                 message names the line, details hold `line` and `findings` (rule `DL1000`).",
            ),
            (
                "DOCKERFILE_NOT_FOUND",
                "`path` does not exist or cannot be read (class `not_found`).",
            ),
        ]
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(run(args, ctx))
    }
}

async fn run(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let obj = args.as_object().ok_or_else(|| {
        ToolError::invalid("the arguments of `validate_dockerfile` must be an object")
    })?;
    if let Some(other) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "path" | "content"))
    {
        return Err(ToolError::invalid(format!(
            "unknown argument `{other}` (expected `path` or `content`)"
        )));
    }
    let string = |k: &str| -> Result<Option<String>, ToolError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ToolError::invalid(format!("`{k}` must be a string"))),
        }
    };
    let (text, path) = match (string("path")?, string("content")?) {
        (Some(_), Some(_)) => {
            return Err(ToolError::invalid(
                "give either `path` or `content`, not both",
            ));
        }
        (None, None) => {
            return Err(ToolError::invalid("one of `path` or `content` is required"));
        }
        (None, Some(c)) => (c, None),
        (Some(p), None) => {
            let mut path = ctx.path("path", &p)?;
            if path.is_dir() {
                path = path.join("Dockerfile");
            }
            let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
                ToolError::new(
                    ErrorClass::NotFound,
                    format!("cannot read the Dockerfile `{}`: {e}", path.display()),
                )
                .with_code("DOCKERFILE_NOT_FOUND")
            })?;
            (text, Some(path.display().to_string()))
        }
    };
    if ctx.cancel.is_cancelled() {
        return Err(ToolError::cancelled());
    }
    let findings = validate(&text).map_err(|errs| {
        let first = &errs[0];
        let name = path.as_deref().unwrap_or("the Dockerfile");
        let more = match errs.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        ToolError::invalid(format!(
            "{name} is invalid: line {}: {}{more}",
            first.line, first.message
        ))
        .with_code("DOCKERFILE_INVALID")
        .with_details(json!({"line": first.line, "findings": errs}))
    })?;
    Ok(report(&findings))
}

/// The tool's result for `findings`.
pub fn report(findings: &[Finding]) -> Value {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let errors = count(Severity::Error);
    json!({
        "findings": findings,
        "errors": errors,
        "warnings": count(Severity::Warning),
        "valid": errors == 0,
    })
}

/// Parse and lint: the findings, or the syntax errors.
pub fn validate(text: &str) -> Result<Vec<Finding>, Vec<Finding>> {
    let df = parse(text)?;
    Ok(lint(&df))
}

// ---------------------------------------------------------------------------------------
// Findings and rules

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Makes the Dockerfile invalid.
    Error,
    /// Should be fixed.
    Warning,
    /// Worth knowing.
    Info,
}

/// One thing a rule found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The rule's id (`DL3006`, `CK001`, `DL1000` for syntax errors).
    pub rule: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The instruction's first line, 1-based.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

use Severity::{Error as E, Info as I, Warning as W};

/// Every rule: id, severity, fix hint.
pub const CHECKS: &[(&str, Severity, &str)] = &[
    (
        "DL1000",
        E,
        "Fix the syntax at this line; see the Dockerfile reference.",
    ),
    ("DL3000", E, "Use an absolute path, e.g. `WORKDIR /app`."),
    (
        "DL3002",
        W,
        "Switch to a non-root user at the end of the last stage, e.g. `USER app`.",
    ),
    (
        "DL3003",
        W,
        "Use `WORKDIR /dir` instead of `cd dir` in RUN.",
    ),
    (
        "DL3004",
        E,
        "Do not use sudo; run the step as root (before USER) or switch with `USER`.",
    ),
    (
        "DL3005",
        W,
        "Do not upgrade all packages; use a newer base image or pin the packages you need.",
    ),
    (
        "DL3006",
        W,
        "Pin the base image's version, e.g. `FROM debian:bookworm-slim`.",
    ),
    (
        "DL3007",
        W,
        "Use a specific tag (or a digest) instead of `latest`.",
    ),
    (
        "DL3009",
        I,
        "Add `&& rm -rf /var/lib/apt/lists/*` to the RUN that runs apt-get.",
    ),
    (
        "DL3011",
        E,
        "Expose ports between 0 and 65535, e.g. `EXPOSE 8080/tcp`.",
    ),
    (
        "DL3012",
        E,
        "Keep a single HEALTHCHECK per stage; only the last one counts.",
    ),
    (
        "DL3014",
        W,
        "Use `apt-get install -y` so the build does not wait for an answer.",
    ),
    (
        "DL3015",
        I,
        "Use `apt-get install --no-install-recommends` to keep the image small.",
    ),
    (
        "DL3020",
        E,
        "Use COPY for local files and folders; ADD is for URLs and tar archives.",
    ),
    (
        "DL3021",
        E,
        "End the destination with `/` when COPY has more than one source.",
    ),
    (
        "DL3022",
        W,
        "Name an earlier stage (`FROM … AS name`) and copy `--from=name`.",
    ),
    (
        "DL3023",
        E,
        "Copy from an earlier stage; a stage cannot copy from itself.",
    ),
    ("DL3024", E, "Give every stage a distinct name."),
    (
        "DL3025",
        W,
        "Use the JSON form, e.g. `CMD [\"app\", \"serve\"]`, so signals reach the process.",
    ),
    (
        "DL3027",
        W,
        "Use `apt-get` (stable interface) instead of `apt` in scripts.",
    ),
    (
        "DL3042",
        W,
        "Use `pip install --no-cache-dir` to keep the image small.",
    ),
    (
        "DL3045",
        W,
        "Set `WORKDIR` before copying to a relative destination, or use an absolute one.",
    ),
    (
        "DL4000",
        W,
        "Replace MAINTAINER with `LABEL org.opencontainers.image.authors=\"…\"`.",
    ),
    (
        "DL4003",
        W,
        "Keep one CMD per stage; only the last one counts.",
    ),
    (
        "DL4004",
        E,
        "Keep one ENTRYPOINT per stage; only the last one counts.",
    ),
    (
        "DL4006",
        W,
        "Add `SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]` (or `set -o pipefail &&`) \
         before a RUN with a pipe, so a failing command fails the step.",
    ),
    (
        "CK001",
        W,
        "Add a non-root user and `USER` it in the last stage; without USER the container \
         runs as root.",
    ),
    (
        "CK002",
        W,
        "Download the script, check its checksum, then run it; do not pipe curl/wget into \
         a shell.",
    ),
    (
        "CK003",
        E,
        "Do not bake secrets into the image; pass them at build time with \
         `RUN --mount=type=secret` or at run time as environment.",
    ),
    (
        "CK005",
        I,
        "Add a `HEALTHCHECK CMD …` to the last stage so the engine knows when it is healthy.",
    ),
];

fn finding(rule: &'static str, line: usize, message: impl Into<String>) -> Finding {
    let (id, severity, fix) =
        CHECKS
            .iter()
            .find(|c| c.0 == rule)
            .copied()
            .unwrap_or((rule, Severity::Error, ""));
    Finding {
        rule: id,
        severity,
        line,
        message: message.into(),
        fix: fix.to_owned(),
    }
}

fn syntax(line: usize, message: impl Into<String>) -> Finding {
    finding("DL1000", line, message)
}

// ---------------------------------------------------------------------------------------
// Parser

/// The instructions Dockerfiles know.
pub(crate) const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// Parser directives (`syntax`, `escape`, `check`), keys in lower case.
    pub directives: Vec<(String, String)>,
    /// The escape character (`\` or a backtick).
    pub escape: char,
    /// The instructions in order.
    pub instructions: Vec<Instruction>,
}

/// A heredoc's body.
#[derive(Debug, Clone, PartialEq)]
pub struct Heredoc {
    /// The delimiter word.
    pub name: String,
    /// The lines between the instruction and the delimiter.
    pub body: String,
}

/// One instruction, its continuation lines joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// The first line, 1-based.
    pub line: usize,
    /// The instruction in upper case.
    pub keyword: String,
    /// Everything after the keyword, trimmed.
    pub args: String,
    /// Heredoc bodies (RUN, COPY, ADD).
    pub heredocs: Vec<Heredoc>,
}

impl Instruction {
    /// Leading `--name[=value]` flags and the rest.
    pub fn flags(&self) -> (Vec<(String, String)>, &str) {
        split_flags(&self.args)
    }

    /// The JSON-array form, if the arguments (after flags) are one: `Some(Err)` when
    /// they start with `[` but are not a JSON array of strings.
    pub fn exec_form(&self) -> Option<Result<Vec<String>, String>> {
        exec_form(self.flags().1)
    }
}

fn split_flags(args: &str) -> (Vec<(String, String)>, &str) {
    let mut flags = Vec::new();
    let mut rest = args.trim_start();
    while let Some(f) = rest.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let (name, value) = f[..end].split_once('=').unwrap_or((&f[..end], ""));
        flags.push((name.to_ascii_lowercase(), value.to_owned()));
        rest = f[end..].trim_start();
    }
    (flags, rest)
}

fn exec_form(rest: &str) -> Option<Result<Vec<String>, String>> {
    let rest = rest.trim();
    if !rest.starts_with('[') {
        return None;
    }
    Some(serde_json::from_str::<Vec<String>>(rest).map_err(|e| e.to_string()))
}

/// A parser directive on a line at the top: `# key=value`.
pub(crate) fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim().to_ascii_lowercase();
    matches!(k.as_str(), "syntax" | "escape" | "check").then(|| (k, v.trim().to_owned()))
}

/// The heredocs an instruction's arguments open: (delimiter, strip leading tabs).
pub(crate) fn heredoc_starts(args: &str) -> Vec<(String, bool)> {
    let b = args.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'<' && b[i + 1] == b'<' && (i == 0 || b[i - 1] != b'<') {
            let mut j = i + 2;
            if j < b.len() && b[j] == b'<' {
                // a here-string `<<<`
                i = j + 1;
                continue;
            }
            let strip = j < b.len() && b[j] == b'-';
            if strip {
                j += 1;
            }
            let quote = (j < b.len() && (b[j] == b'"' || b[j] == b'\'')).then(|| b[j]);
            if quote.is_some() {
                j += 1;
            }
            let start = j;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let ok = j > start
                && !b[start].is_ascii_digit()
                && quote.is_none_or(|q| j < b.len() && b[j] == q);
            if ok {
                out.push((args[start..j].to_owned(), strip));
            }
            i = j.max(i + 2);
        } else {
            i += 1;
        }
    }
    out
}

/// Parse `text`; the syntax errors (rule `DL1000`) if it does not parse.
pub fn parse(text: &str) -> Result<Dockerfile, Vec<Finding>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut errs = Vec::new();
    let mut directives = Vec::new();
    let mut escape = '\\';
    let mut i = 0;
    while i < lines.len() {
        let Some((k, v)) = directive(lines[i]) else {
            break;
        };
        if k == "escape" {
            match v.as_str() {
                "\\" => escape = '\\',
                "`" => escape = '`',
                _ => errs.push(syntax(
                    i + 1,
                    format!("invalid escape directive `{v}`: use `\\` or a backtick"),
                )),
            }
        }
        directives.push((k, v));
        i += 1;
    }

    let mut instructions = Vec::new();
    while i < lines.len() {
        let t = lines[i].trim();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut logical = String::new();
        loop {
            let cur = lines[i].trim_end();
            i += 1;
            match cur.strip_suffix(escape) {
                Some(head) => {
                    logical.push_str(head);
                    // comment and blank lines inside a continuation are dropped
                    while i < lines.len() {
                        let t = lines[i].trim();
                        if t.is_empty() || t.starts_with('#') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    if i >= lines.len() {
                        break;
                    }
                }
                None => {
                    logical.push_str(cur);
                    break;
                }
            }
        }
        let logical = logical.trim();
        let (word, args) = logical
            .split_once(char::is_whitespace)
            .unwrap_or((logical, ""));
        let keyword = word.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if !KEYWORDS.contains(&keyword.as_str()) {
            errs.push(syntax(start, format!("unknown instruction `{word}`")));
            continue;
        }
        let mut heredocs = Vec::new();
        let opens = match keyword.as_str() {
            "RUN" | "COPY" | "ADD" => heredoc_starts(&args),
            "ONBUILD" => {
                let inner = args.split_whitespace().next().unwrap_or("");
                if ["RUN", "COPY", "ADD"].contains(&inner.to_ascii_uppercase().as_str()) {
                    heredoc_starts(&args)
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        for (name, strip) in opens {
            let mut body = Vec::new();
            let mut closed = false;
            while i < lines.len() {
                let l = lines[i];
                i += 1;
                let cmp = if strip { l.trim_start_matches('\t') } else { l };
                if cmp == name {
                    closed = true;
                    break;
                }
                body.push(l);
            }
            if !closed {
                errs.push(syntax(
                    start,
                    format!("the heredoc `<<{name}` is never closed by a line `{name}`"),
                ));
            }
            heredocs.push(Heredoc {
                name,
                body: body.join("\n"),
            });
        }
        instructions.push(Instruction {
            line: start,
            keyword,
            args,
            heredocs,
        });
    }

    check_syntax(&instructions, &mut errs);
    if errs.is_empty() {
        Ok(Dockerfile {
            directives,
            escape,
            instructions,
        })
    } else {
        errs.sort_by_key(|f| f.line);
        Err(errs)
    }
}

fn check_syntax(ins: &[Instruction], errs: &mut Vec<Finding>) {
    if ins.is_empty() {
        if errs.is_empty() {
            errs.push(syntax(1, "the Dockerfile has no instructions"));
        }
        return;
    }
    let mut seen_from = false;
    for i in ins {
        let kw = i.keyword.as_str();
        if kw == "FROM" {
            seen_from = true;
        } else if !seen_from && kw != "ARG" {
            errs.push(syntax(
                i.line,
                format!("{kw} before the first FROM (only ARG may come before it)"),
            ));
        }
        if i.args.is_empty() {
            errs.push(syntax(i.line, format!("{kw} needs arguments")));
            continue;
        }
        check_instruction(kw, i, errs);
    }
    if !seen_from {
        errs.push(syntax(
            ins[0].line,
            "the Dockerfile has no FROM instruction",
        ));
    }
}

fn check_instruction(kw: &str, i: &Instruction, errs: &mut Vec<Finding>) {
    let (flags, rest) = i.flags();
    match kw {
        "FROM" => {
            let w: Vec<&str> = rest.split_whitespace().collect();
            let ok = match w.len() {
                1 => true,
                3 => w[1].eq_ignore_ascii_case("as"),
                _ => false,
            };
            if !ok {
                errs.push(syntax(
                    i.line,
                    "FROM takes an image and an optional `AS name`".to_owned(),
                ));
            }
        }
        "CMD" | "ENTRYPOINT" | "RUN" | "VOLUME" | "COPY" | "ADD" | "SHELL" => {
            match exec_form(rest) {
                Some(Err(e)) => errs.push(syntax(
                    i.line,
                    format!("{kw} has a malformed JSON array: {e}"),
                )),
                None if kw == "SHELL" => errs.push(syntax(
                    i.line,
                    "SHELL needs the JSON form, e.g. `SHELL [\"/bin/sh\", \"-c\"]`",
                )),
                Some(Ok(v)) if v.is_empty() && kw != "CMD" => {
                    errs.push(syntax(i.line, format!("{kw} has an empty JSON array")))
                }
                Some(Ok(v)) if (kw == "COPY" || kw == "ADD") && v.len() < 2 => errs.push(syntax(
                    i.line,
                    format!("{kw} needs a source and a destination"),
                )),
                None if (kw == "COPY" || kw == "ADD")
                    && i.heredocs.is_empty()
                    && rest.split_whitespace().count() < 2 =>
                {
                    errs.push(syntax(
                        i.line,
                        format!("{kw} needs a source and a destination"),
                    ))
                }
                _ => {}
            }
            if rest.is_empty() && !flags.is_empty() {
                errs.push(syntax(i.line, format!("{kw} has flags but no arguments")));
            }
        }
        "HEALTHCHECK" => {
            let first = rest.split_whitespace().next().unwrap_or("");
            if first.eq_ignore_ascii_case("NONE") {
                if rest.split_whitespace().count() > 1 {
                    errs.push(syntax(i.line, "HEALTHCHECK NONE takes no arguments"));
                }
            } else if !first.eq_ignore_ascii_case("CMD") {
                errs.push(syntax(i.line, "HEALTHCHECK needs `CMD …` or `NONE`"));
            } else {
                let cmd = rest[3..].trim();
                if cmd.is_empty() {
                    errs.push(syntax(i.line, "HEALTHCHECK CMD needs a command"));
                } else if let Some(Err(e)) = exec_form(cmd) {
                    errs.push(syntax(
                        i.line,
                        format!("HEALTHCHECK CMD has a malformed JSON array: {e}"),
                    ));
                }
            }
        }
        "ENV" => {
            let w = words(&i.args);
            if !w[0].contains('=') && w.len() < 2 {
                errs.push(syntax(
                    i.line,
                    format!("ENV `{}` needs a value (`ENV NAME=value`)", w[0]),
                ));
            }
        }
        "ONBUILD" => {
            let (inner, inner_args) = i
                .args
                .split_once(char::is_whitespace)
                .unwrap_or((&i.args, ""));
            let up = inner.to_ascii_uppercase();
            if !KEYWORDS.contains(&up.as_str()) {
                errs.push(syntax(
                    i.line,
                    format!("unknown instruction `{inner}` after ONBUILD"),
                ));
            } else if matches!(up.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                errs.push(syntax(i.line, format!("ONBUILD cannot trigger {up}")));
            } else if inner_args.trim().is_empty() {
                errs.push(syntax(i.line, format!("ONBUILD {up} needs arguments")));
            }
        }
        _ => {}
    }
}

/// Split on whitespace outside quotes, removing the quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

// ---------------------------------------------------------------------------------------
// Rules

/// What a stage has seen so far.
#[derive(Default)]
struct Stage {
    name: Option<String>,
    workdir: bool,
    user: Option<(String, usize)>,
    cmds: usize,
    entrypoints: usize,
    healthchecks: usize,
    pipefail: bool,
    pip_no_cache: bool,
}

/// The shell script of a RUN (or a healthcheck): the command and any heredoc bodies.
fn script(i: &Instruction, rest: &str) -> String {
    let mut s = match exec_form(rest) {
        Some(Ok(v)) => v.join(" "),
        _ => rest.to_owned(),
    };
    for h in &i.heredocs {
        s.push('\n');
        s.push_str(&h.body);
    }
    s
}

/// Pipelines of commands of words: `a | b && c` → `[[a], [b]], [[c]]`.
fn pipelines(script: &str) -> Vec<Vec<Vec<String>>> {
    let flat = script
        .replace("||", "\n")
        .replace("&&", "\n")
        .replace(';', "\n");
    flat.lines()
        .map(|p| {
            p.split('|')
                .map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// A command's words without a leading `sudo` (and its plain flags).
fn program(cmd: &[String]) -> &[String] {
    if cmd.first().is_some_and(|w| w == "sudo") {
        let skip = 1 + cmd[1..].iter().take_while(|w| w.starts_with('-')).count();
        &cmd[skip..]
    } else {
        cmd
    }
}

fn is_absolute(p: &str) -> bool {
    let b = p.as_bytes();
    p.starts_with('/')
        || p.starts_with('$')
        || (b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && matches!(b[2], b'\\' | b'/'))
}

pub(crate) fn is_archive(p: &str) -> bool {
    let p = p.to_ascii_lowercase();
    [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz", ".tar.zst",
        ".tzst",
    ]
    .iter()
    .any(|s| p.ends_with(s))
}

pub(crate) fn is_url(p: &str) -> bool {
    p.starts_with("http://") || p.starts_with("https://") || p.starts_with("git@")
}

fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "TOKEN", "API_KEY", "PRIVATE_KEY"]
        .iter()
        .any(|s| n.contains(s))
}

/// Run every rule over a parsed Dockerfile; findings sorted by line.
pub fn lint(df: &Dockerfile) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    // `(name, had a WORKDIR)` of earlier stages, by index
    let mut shell_pipefail = false;
    for i in &df.instructions {
        let (flags, rest) = i.flags();
        let line = i.line;
        if i.keyword == "FROM" {
            let w: Vec<&str> = rest.split_whitespace().collect();
            let image = w.first().copied().unwrap_or("");
            let name = (w.len() == 3).then(|| w[2].to_ascii_lowercase());
            let parent = stages
                .iter()
                .find(|s| s.name.as_deref() == Some(&image.to_ascii_lowercase()));
            let mut st = Stage {
                workdir: parent.is_some_and(|p| p.workdir),
                pipefail: parent.is_some_and(|p| p.pipefail),
                ..Stage::default()
            };
            shell_pipefail = st.pipefail;
            if let Some(n) = &name
                && stages.iter().any(|s| s.name.as_ref() == Some(n))
            {
                out.push(finding(
                    "DL3024",
                    line,
                    format!("the stage name `{n}` is used twice"),
                ));
            }
            if parent.is_none() && !image.contains('$') && image != "scratch" {
                let last = image.rsplit('/').next().unwrap_or(image);
                if !image.contains('@') {
                    match last.split_once(':') {
                        None => out.push(finding(
                            "DL3006",
                            line,
                            format!("the image `{image}` has no tag"),
                        )),
                        Some((_, "latest")) => out.push(finding(
                            "DL3007",
                            line,
                            format!("the image `{image}` uses the `latest` tag"),
                        )),
                        _ => {}
                    }
                }
            }
            st.name = name;
            stages.push(st);
            continue;
        }
        let Some(idx) = stages.len().checked_sub(1) else {
            // ARG before FROM
            check_arg_env(i, &mut out);
            continue;
        };
        match i.keyword.as_str() {
            "ARG" | "ENV" => {
                check_arg_env(i, &mut out);
                if i.keyword == "ENV" {
                    let w = words(&i.args);
                    if w.iter()
                        .any(|w| w.to_ascii_uppercase().starts_with("PIP_NO_CACHE_DIR"))
                    {
                        stages[idx].pip_no_cache = true;
                    }
                }
            }
            "MAINTAINER" => out.push(finding("DL4000", line, "MAINTAINER is deprecated")),
            "WORKDIR" => {
                if !is_absolute(rest.trim_matches('"')) {
                    out.push(finding(
                        "DL3000",
                        line,
                        format!("WORKDIR `{rest}` is relative"),
                    ));
                }
                stages[idx].workdir = true;
            }
            "USER" => stages[idx].user = Some((rest.to_owned(), line)),
            "SHELL" => {
                shell_pipefail = rest.contains("pipefail");
                stages[idx].pipefail = shell_pipefail;
            }
            "EXPOSE" => {
                for p in rest.split_whitespace() {
                    if p.contains('$') {
                        continue;
                    }
                    let port = p.split('/').next().unwrap_or(p);
                    let ok = port
                        .split('-')
                        .all(|n| n.parse::<u32>().is_ok_and(|n| n <= 65535));
                    if !ok {
                        out.push(finding(
                            "DL3011",
                            line,
                            format!("`{p}` is not a valid port (0-65535)"),
                        ));
                    }
                }
            }
            "CMD" | "ENTRYPOINT" => {
                let st = &mut stages[idx];
                let count = if i.keyword == "CMD" {
                    st.cmds += 1;
                    st.cmds
                } else {
                    st.entrypoints += 1;
                    st.entrypoints
                };
                if count == 2 {
                    let rule = if i.keyword == "CMD" {
                        "DL4003"
                    } else {
                        "DL4004"
                    };
                    out.push(finding(
                        rule,
                        line,
                        format!("more than one {} in the stage", i.keyword),
                    ));
                }
                if exec_form(rest).is_none() {
                    out.push(finding(
                        "DL3025",
                        line,
                        format!("{} uses the shell form", i.keyword),
                    ));
                }
            }
            "HEALTHCHECK" => {
                stages[idx].healthchecks += 1;
                if stages[idx].healthchecks == 2 {
                    out.push(finding(
                        "DL3012",
                        line,
                        "more than one HEALTHCHECK in the stage",
                    ));
                }
            }
            "COPY" | "ADD" => {
                let args: Vec<String> = match exec_form(rest) {
                    Some(Ok(v)) => v,
                    _ => rest.split_whitespace().map(str::to_owned).collect(),
                };
                let (dest, sources) = args
                    .split_last()
                    .map_or(("", &[][..]), |(d, s)| (d.as_str(), s));
                let sources: Vec<&String> =
                    sources.iter().filter(|s| !s.starts_with("<<")).collect();
                if !stages[idx].workdir && !is_absolute(dest) {
                    out.push(finding(
                        "DL3045",
                        line,
                        format!(
                            "{} to the relative destination `{dest}` without a WORKDIR",
                            i.keyword
                        ),
                    ));
                }
                if sources.len() > 1 && !dest.ends_with('/') && !dest.contains('$') {
                    out.push(finding(
                        "DL3021",
                        line,
                        format!(
                            "{} has {} sources but the destination `{dest}` does not end with `/`",
                            i.keyword,
                            sources.len()
                        ),
                    ));
                }
                if i.keyword == "ADD"
                    && let Some(s) = sources.iter().find(|s| !is_url(s) && !is_archive(s))
                {
                    out.push(finding(
                        "DL3020",
                        line,
                        format!("ADD for the local file `{s}`"),
                    ));
                }
                if let Some((_, from)) = flags.iter().find(|(n, _)| n == "from") {
                    let from_l = from.to_ascii_lowercase();
                    let own = stages[idx].name.as_deref() == Some(&from_l)
                        || from.parse::<usize>().is_ok_and(|n| n == idx);
                    let earlier = stages[..idx]
                        .iter()
                        .any(|s| s.name.as_deref() == Some(&from_l))
                        || from.parse::<usize>().is_ok_and(|n| n < idx);
                    let image = from.contains([':', '/', '@', '$']);
                    if own {
                        out.push(finding(
                            "DL3023",
                            line,
                            format!("COPY --from={from} copies from its own stage"),
                        ));
                    } else if !earlier && !image {
                        out.push(finding(
                            "DL3022",
                            line,
                            format!(
                                "--from={from} names no earlier stage (it would pull an image \
                                 called `{from}`)"
                            ),
                        ));
                    }
                }
            }
            "RUN" => {
                let exec = matches!(exec_form(rest), Some(Ok(_)));
                let s = script(i, rest);
                lint_run(
                    line,
                    &s,
                    exec,
                    shell_pipefail,
                    stages[idx].pip_no_cache,
                    &mut out,
                );
            }
            _ => {}
        }
    }
    if let Some(last) = df.instructions.iter().rposition(|i| i.keyword == "FROM") {
        let from_line = df.instructions[last].line;
        let st = stages.last().expect("a FROM makes a stage");
        match &st.user {
            None => out.push(finding(
                "CK001",
                from_line,
                "the last stage has no USER: the container runs as root",
            )),
            Some((u, l)) => {
                let name = u.split(':').next().unwrap_or(u);
                if name == "root" || name == "0" {
                    out.push(finding(
                        "DL3002",
                        *l,
                        "the last USER of the last stage is root",
                    ));
                }
            }
        }
        if st.healthchecks == 0 {
            out.push(finding(
                "CK005",
                from_line,
                "the last stage has no HEALTHCHECK",
            ));
        }
    }
    out.sort_by(|a, b| a.line.cmp(&b.line).then(a.rule.cmp(b.rule)));
    out
}

fn check_arg_env(i: &Instruction, out: &mut Vec<Finding>) {
    let w = words(&i.args);
    let pairs: Vec<(String, String)> = if i.keyword == "ENV" && !w[0].contains('=') {
        vec![(w[0].clone(), w[1..].join(" "))]
    } else {
        w.iter()
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    };
    for (k, v) in pairs {
        if is_secret_name(&k) && !v.is_empty() && !v.starts_with('$') {
            out.push(finding(
                "CK003",
                i.line,
                format!("{} `{k}` holds a literal secret", i.keyword),
            ));
        }
    }
}

fn lint_run(
    line: usize,
    script: &str,
    exec: bool,
    shell_pipefail: bool,
    pip_no_cache: bool,
    out: &mut Vec<Finding>,
) {
    let pls = pipelines(script);
    let mut once = std::collections::BTreeSet::new();
    let mut push = |rule: &'static str, msg: String, out: &mut Vec<Finding>| {
        if once.insert(rule) {
            out.push(finding(rule, line, msg));
        }
    };
    let mut apt = false;
    for pl in &pls {
        if pl.len() > 1 && !exec && !shell_pipefail && !script.contains("pipefail") {
            push(
                "DL4006",
                "RUN with a pipe but without `set -o pipefail`".to_owned(),
                out,
            );
        }
        let mut fetch = false;
        for cmd in pl {
            if cmd[0] == "sudo" {
                push("DL3004", "RUN uses sudo".to_owned(), out);
            }
            let p = program(cmd);
            let Some(first) = p.first() else { continue };
            let first = first.as_str();
            let sub = p
                .iter()
                .skip(1)
                .find(|w| !w.starts_with('-'))
                .map(String::as_str);
            if fetch && matches!(first, "sh" | "bash" | "zsh" | "dash" | "ash") {
                push("CK002", format!("RUN pipes a download into `{first}`"), out);
            }
            if first == "curl" || first == "wget" {
                fetch = true;
            }
            if first == "cd" {
                push("DL3003", "RUN uses `cd`".to_owned(), out);
            }
            if first == "apt" {
                push("DL3027", "RUN uses `apt`".to_owned(), out);
            }
            if first == "apt-get" {
                if matches!(sub, Some("install" | "update")) {
                    apt = true;
                }
                if matches!(sub, Some("upgrade" | "dist-upgrade")) {
                    push(
                        "DL3005",
                        format!("RUN runs `apt-get {}`", sub.unwrap_or_default()),
                        out,
                    );
                }
                if sub == Some("install") {
                    let yes = p.iter().any(|w| {
                        w == "--yes"
                            || w == "--assume-yes"
                            || (w.starts_with('-') && !w.starts_with("--") && w.contains('y'))
                    });
                    if !yes {
                        push("DL3014", "apt-get install without `-y`".to_owned(), out);
                    }
                    let norec = p.iter().any(|w| {
                        w == "--no-install-recommends" || w.contains("Install-Recommends=false")
                    });
                    if !norec {
                        push(
                            "DL3015",
                            "apt-get install without `--no-install-recommends`".to_owned(),
                            out,
                        );
                    }
                }
            }
            let pip = p.iter().position(|w| {
                w == "pip" || w == "pip3" || w.ends_with("/pip") || w.ends_with("/pip3")
            });
            if let Some(at) = pip
                && p[at + 1..].iter().any(|w| w == "install")
                && !pip_no_cache
                && !p.iter().any(|w| w == "--no-cache-dir")
            {
                push(
                    "DL3042",
                    "pip install without `--no-cache-dir`".to_owned(),
                    out,
                );
            }
        }
    }
    if apt && !script.contains("/var/lib/apt/lists") {
        push(
            "DL3009",
            "RUN leaves the apt lists behind (`/var/lib/apt/lists`)".to_owned(),
            out,
        );
    }
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

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dockerfiles")
    }

    fn rules(text: &str) -> Vec<&'static str> {
        validate(text)
            .unwrap_or_else(|e| panic!("{text:?} does not parse: {e:?}"))
            .into_iter()
            .map(|f| f.rule)
            .collect()
    }

    /// A Dockerfile no error or warning rule fires on.
    const CLEAN: &str = "\
FROM debian:bookworm-slim AS base
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl \\
    && rm -rf /var/lib/apt/lists/*
RUN useradd app && pip install --no-cache-dir requests
COPY a.txt b.txt ./
ADD https://example.com/x.tar.gz /opt/
ADD vendor.tar.gz /opt/
ENV APP_MODE=prod PASSWORD_FILE=
ARG TOKEN
USER app
EXPOSE 8080 9000-9010/udp
HEALTHCHECK CMD [\"true\"]
ENTRYPOINT [\"/app/run\"]
CMD [\"serve\"]
";

    #[test]
    fn clean_dockerfile_has_no_findings() {
        let f = validate(CLEAN).unwrap();
        assert!(f.is_empty(), "{f:#?}");
    }

    /// Every rule with a Dockerfile that triggers it.
    const CASES: &[(&str, &str)] = &[
        ("DL3000", "FROM a:1\nWORKDIR app\n"),
        ("DL3002", "FROM a:1\nUSER app\nUSER root\n"),
        ("DL3002", "FROM a:1\nUSER 0:0\n"),
        ("DL3003", "FROM a:1\nRUN cd /tmp && make\n"),
        ("DL3004", "FROM a:1\nRUN sudo make install\n"),
        (
            "DL3005",
            "FROM a:1\nRUN apt-get update && apt-get upgrade -y\n",
        ),
        ("DL3006", "FROM debian\n"),
        ("DL3006", "FROM registry:5000/team/app\n"),
        ("DL3007", "FROM debian:latest\n"),
        (
            "DL3009",
            "FROM a:1\nRUN apt-get update && apt-get install -y --no-install-recommends x\n",
        ),
        ("DL3011", "FROM a:1\nEXPOSE 80 70000\n"),
        ("DL3011", "FROM a:1\nEXPOSE http\n"),
        (
            "DL3012",
            "FROM a:1\nHEALTHCHECK CMD true\nHEALTHCHECK NONE\n",
        ),
        (
            "DL3014",
            "FROM a:1\nRUN apt-get install --no-install-recommends x\n",
        ),
        ("DL3015", "FROM a:1\nRUN apt-get install -y x\n"),
        ("DL3020", "FROM a:1\nADD app.py /app/\n"),
        ("DL3021", "FROM a:1\nCOPY a b /app\n"),
        (
            "DL3022",
            "FROM a:1 AS one\nFROM b:1\nCOPY --from=builder /x /y\n",
        ),
        ("DL3022", "FROM a:1\nCOPY --from=3 /x /y\n"),
        ("DL3023", "FROM a:1 AS one\nCOPY --from=one /x /y\n"),
        ("DL3024", "FROM a:1 AS one\nFROM b:1 AS One\n"),
        ("DL3025", "FROM a:1\nCMD python app.py\n"),
        ("DL3025", "FROM a:1\nENTRYPOINT /app/run\n"),
        ("DL3027", "FROM a:1\nRUN apt install -y x\n"),
        ("DL3042", "FROM a:1\nRUN pip install requests\n"),
        ("DL3042", "FROM a:1\nRUN python3 -m pip install requests\n"),
        ("DL3045", "FROM a:1\nCOPY app.py app/\n"),
        ("DL4000", "FROM a:1\nMAINTAINER me\n"),
        ("DL4003", "FROM a:1\nCMD [\"a\"]\nCMD [\"b\"]\n"),
        (
            "DL4004",
            "FROM a:1\nENTRYPOINT [\"a\"]\nENTRYPOINT [\"b\"]\n",
        ),
        ("DL4006", "FROM a:1\nRUN cat x | grep y\n"),
        ("CK001", "FROM a:1\nRUN true\n"),
        ("CK002", "FROM a:1\nRUN curl -fsSL https://x/i.sh | sh\n"),
        (
            "CK002",
            "FROM a:1\nRUN wget -qO- https://x/i.sh | sudo -E bash -s\n",
        ),
        ("CK003", "FROM a:1\nENV DB_PASSWORD=hunter2\n"),
        ("CK003", "FROM a:1\nENV GITHUB_TOKEN ghp_123\n"),
        ("CK003", "ARG API_KEY=abc\nFROM a:1\n"),
        ("CK003", "FROM a:1\nARG PRIVATE_KEY=\"-----BEGIN\"\n"),
        ("CK005", "FROM a:1\nUSER app\n"),
    ];

    #[test]
    fn every_rule_fires() {
        for (rule, text) in CASES {
            assert!(
                rules(text).contains(rule),
                "{rule} on {text:?}: {:?}",
                rules(text)
            );
        }
        for (id, _, fix) in CHECKS {
            assert!(!fix.is_empty());
            assert!(
                *id == "DL1000" || CASES.iter().any(|(r, _)| r == id),
                "{id} has a case"
            );
        }
        assert!(CHECKS.len() >= 16, "at least 15 rules besides syntax");
    }

    #[test]
    fn rules_do_not_fire_on_their_fixes() {
        // the negative side of the trickier rules
        let ok = [
            ("DL3006", "FROM scratch\n"),
            ("DL3006", "ARG V=1\nFROM debian:${V}\n"),
            ("DL3006", "FROM a:1 AS base\nFROM base\n"),
            ("DL3007", "FROM debian@sha256:abc\n"),
            (
                "DL3009",
                "FROM a:1\nRUN apt-get update && apt-get install -y x && rm -rf /var/lib/apt/lists/*\n",
            ),
            ("DL3020", "FROM a:1\nADD https://x/y.bin /y\n"),
            (
                "DL3022",
                "FROM a:1 AS one\nFROM b:1\nCOPY --from=one /x /y\nCOPY --from=0 /x /y\nCOPY --from=nginx:1.27 /x /y\n",
            ),
            (
                "DL3045",
                "FROM a:1 AS base\nWORKDIR /app\nFROM base\nCOPY x y\n",
            ),
            (
                "DL4006",
                "FROM a:1\nRUN set -o pipefail && cat x | grep y\n",
            ),
            (
                "DL4006",
                "FROM a:1\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN cat x | grep y\n",
            ),
            ("DL4006", "FROM a:1\nRUN a || b\n"),
            (
                "DL3042",
                "FROM a:1\nENV PIP_NO_CACHE_DIR=1\nRUN pip install x\n",
            ),
            (
                "CK003",
                "FROM a:1\nENV TOKEN_URL=$BASE ARG_X=1\nARG SECRET\n",
            ),
            ("DL3002", "FROM a:1\nUSER root\nRUN x\nUSER app\n"),
        ];
        for (rule, text) in ok {
            assert!(!rules(text).contains(&rule), "{rule} on {text:?}");
        }
    }

    #[test]
    fn parser_joins_continuations_and_skips_comments() {
        let df = parse(
            "# a comment\nFROM a:1\nRUN apt-get update \\\n  # inside\n\n  && echo hi\nrun true\n",
        )
        .unwrap();
        assert!(df.directives.is_empty(), "a plain comment is no directive");
        let kws: Vec<_> = df
            .instructions
            .iter()
            .map(|i| (i.line, i.keyword.as_str()))
            .collect();
        assert_eq!(kws, [(2, "FROM"), (3, "RUN"), (7, "RUN")]);
        assert_eq!(df.instructions[1].args, "apt-get update   && echo hi");
        assert_eq!(
            df.instructions[2].args, "true",
            "instructions are case-insensitive"
        );
    }

    #[test]
    fn parser_directives_and_escape() {
        let df = parse(
            "# syntax=docker/dockerfile:1\n# escape=`\n\nFROM a:1\nRUN dir C:\\ `\n  && echo\n# escape=\\\n",
        )
        .unwrap();
        assert_eq!(
            df.directives,
            [
                ("syntax".to_owned(), "docker/dockerfile:1".to_owned()),
                ("escape".to_owned(), "`".to_owned())
            ]
        );
        assert_eq!(df.escape, '`');
        assert_eq!(df.instructions.len(), 2);
        assert_eq!(df.instructions[1].args, "dir C:\\   && echo");
        let e = parse("# escape=x\nFROM a:1\n").unwrap_err();
        assert!(e[0].message.contains("escape"));
        // a directive after an instruction is a comment
        let df = parse("FROM a:1\n# escape=`\nRUN a \\\n b\n").unwrap();
        assert_eq!(df.instructions[1].args, "a  b");
    }

    #[test]
    fn parser_heredocs() {
        let text = "FROM a:1\nRUN <<EOF\napt-get update\nFROM not-an-instruction\nEOF\nCOPY <<-\"CONF\" <<END /etc/\n\tx = 1\n\tCONF\ny\nEND\nRUN cat <<<word\nUSER app\n";
        let df = parse(text).unwrap();
        let kws: Vec<_> = df
            .instructions
            .iter()
            .map(|i| (i.line, i.keyword.as_str()))
            .collect();
        assert_eq!(
            kws,
            [
                (1, "FROM"),
                (2, "RUN"),
                (6, "COPY"),
                (11, "RUN"),
                (12, "USER")
            ]
        );
        assert_eq!(df.instructions[1].heredocs[0].name, "EOF");
        assert_eq!(
            df.instructions[1].heredocs[0].body,
            "apt-get update\nFROM not-an-instruction"
        );
        assert_eq!(df.instructions[2].heredocs.len(), 2);
        assert_eq!(df.instructions[2].heredocs[1].body, "y");
        assert!(
            df.instructions[3].heredocs.is_empty(),
            "`<<<` is a here-string"
        );
        // heredoc bodies are checked like the command
        assert!(rules("FROM a:1\nRUN <<EOF\nsudo make\nEOF\n").contains(&"DL3004"));
        let e = parse("FROM a:1\nRUN <<EOF\necho\n").unwrap_err();
        assert!(e[0].message.contains("never closed"), "{e:?}");
    }

    #[test]
    fn exec_and_shell_form() {
        let df = parse("FROM a:1\nCMD [\"a\", \"b c\"]\nCMD a b\nRUN --mount=type=cache,target=/x [\"make\"]\n").unwrap();
        let i = &df.instructions;
        assert_eq!(
            i[1].exec_form(),
            Some(Ok(vec!["a".to_owned(), "b c".to_owned()]))
        );
        assert_eq!(i[2].exec_form(), None);
        let (flags, rest) = i[3].flags();
        assert_eq!(
            flags,
            [("mount".to_owned(), "type=cache,target=/x".to_owned())]
        );
        assert_eq!(rest, "[\"make\"]");
        assert_eq!(i[3].exec_form(), Some(Ok(vec!["make".to_owned()])));
    }

    #[test]
    fn syntax_errors() {
        let cases = [
            ("", "no instructions"),
            ("# only a comment\n\n", "no instructions"),
            ("FROM a:1\nFRM b\n", "unknown instruction `FRM`"),
            ("RUN true\nFROM a:1\n", "before the first FROM"),
            ("ARG V=1\n", "no FROM"),
            ("FROM a:1\nRUN\n", "RUN needs arguments"),
            ("FROM a:1\nCMD [\"a\", b]\n", "malformed JSON array"),
            ("FROM a:1\nENTRYPOINT [\"a\"\n", "malformed JSON array"),
            ("FROM a:1\nSHELL /bin/sh -c\n", "SHELL needs the JSON form"),
            ("FROM a b\n", "optional `AS name`"),
            ("FROM a:1\nCOPY x\n", "source and a destination"),
            ("FROM a:1\nHEALTHCHECK curl x\n", "`CMD …` or `NONE`"),
            ("FROM a:1\nENV A\n", "needs a value"),
            ("FROM a:1\nONBUILD FROM b\n", "ONBUILD cannot trigger FROM"),
            ("FROM a:1\nONBUILD BOGUS x\n", "unknown instruction `BOGUS`"),
        ];
        for (text, want) in cases {
            let e = parse(text).expect_err(text);
            assert!(
                e.iter()
                    .all(|f| f.rule == "DL1000" && f.severity == Severity::Error),
                "{e:?}"
            );
            assert!(
                e.iter().any(|f| f.message.contains(want)),
                "{text:?}: want {want:?}, got {e:?}"
            );
        }
        let e = parse("FROM a:1\nRUN x\nFRM b\n").unwrap_err();
        assert_eq!(e[0].line, 3);
    }

    #[tokio::test]
    async fn tool_reports_syntax_errors_as_dockerfile_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let e = ValidateDockerfile
            .call(json!({"content": "FROM a:1\nFRM b\n"}), ctx(dir.path()))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::InvalidInput);
        assert_eq!(e.code.as_deref(), Some("DOCKERFILE_INVALID"));
        assert!(e.message.contains("line 2"), "{}", e.message);
        assert!(e.message.contains("FRM"), "{}", e.message);
        let d = e.details.unwrap();
        assert_eq!(d["line"], 2);
        assert_eq!(d["findings"][0]["rule"], "DL1000");
    }

    #[tokio::test]
    async fn tool_arguments() {
        let dir = tempfile::tempdir().unwrap();
        for args in [
            json!({}),
            json!({"path": "a", "content": "b"}),
            json!({"content": 1}),
            json!({"content": "FROM a", "other": 1}),
        ] {
            let e = ValidateDockerfile
                .call(args.clone(), ctx(dir.path()))
                .await
                .unwrap_err();
            assert_eq!(e.class, ErrorClass::InvalidInput, "{args}");
        }
        let e = ValidateDockerfile
            .call(json!({"path": "missing/Dockerfile"}), ctx(dir.path()))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.code.as_deref(), Some("DOCKERFILE_NOT_FOUND"));
        // a folder means its Dockerfile
        std::fs::write(dir.path().join("Dockerfile"), CLEAN).unwrap();
        let r = ValidateDockerfile
            .call(json!({"path": "."}), ctx(dir.path()))
            .await
            .unwrap();
        assert_eq!(
            r,
            json!({"findings": [], "errors": 0, "warnings": 0, "valid": true})
        );
    }

    #[tokio::test]
    async fn good_fixture_is_valid() {
        let r = ValidateDockerfile
            .call(json!({"path": "good.Dockerfile"}), ctx(&fixtures()))
            .await
            .unwrap();
        assert_eq!(r["valid"], true, "{r:#}");
        assert_eq!(r["errors"], 0, "{r:#}");
        assert_eq!(r["warnings"], 0, "{r:#}");
        let schema = jsonschema::draft202012::new(&ValidateDockerfile.output_schema()).unwrap();
        assert!(schema.is_valid(&r));
    }

    #[tokio::test]
    async fn bad_fixture_has_many_findings() {
        let path = fixtures().join("bad.Dockerfile");
        let r = ValidateDockerfile
            .call(
                json!({"path": path.display().to_string()}),
                ctx(Path::new("/")),
            )
            .await
            .unwrap();
        assert_eq!(r["valid"], false);
        let schema = jsonschema::draft202012::new(&ValidateDockerfile.output_schema()).unwrap();
        assert!(schema.is_valid(&r), "{r:#}");
        let found: Vec<(String, u64)> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["rule"].as_str().unwrap().to_owned(),
                    f["line"].as_u64().unwrap(),
                )
            })
            .collect();
        for (rule, line) in [
            ("DL3006", 1),
            ("DL4000", 2),
            ("CK003", 3),
            ("CK003", 4),
            ("DL3005", 5),
            ("DL3014", 6),
            ("DL3015", 6),
            ("DL3009", 6),
            ("CK002", 7),
            ("DL4006", 7),
            ("DL3004", 8),
            ("DL3042", 8),
            ("DL3003", 9),
            ("DL3045", 10),
            ("DL3020", 11),
            ("DL3000", 12),
            ("DL3011", 13),
            ("DL3022", 14),
            ("DL3025", 15),
            ("DL4003", 16),
            ("DL4004", 18),
            ("DL3002", 24),
            ("DL3007", 21),
            ("DL3024", 22),
            ("DL3023", 23),
            ("DL3021", 23),
            ("CK005", 22),
        ] {
            assert!(
                found.contains(&(rule.to_owned(), line)),
                "{rule} at line {line}: {found:?}"
            );
        }
        assert!(r["errors"].as_u64().unwrap() >= 8);
        assert!(r["warnings"].as_u64().unwrap() >= 10);
    }

    #[test]
    fn tool_is_described() {
        let t = ValidateDockerfile;
        jsonschema::draft202012::new(&t.input_schema()).unwrap();
        for (p, s) in t.input_schema()["properties"].as_object().unwrap() {
            assert!(s["description"].is_string(), "{p}");
        }
        for (p, s) in t.output_schema()["properties"].as_object().unwrap() {
            assert!(s["description"].is_string(), "{p}");
        }
        assert!(!t.host_exec());
        assert!(!t.destructive());
    }
}
