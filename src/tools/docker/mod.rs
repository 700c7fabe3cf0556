//! Docker tools (SPEC §5): `build_image`, `tag_image`, `push_image`, `pull_image`,
//! `check_registry_auth` and `run_container`, all through the Docker Engine API.
//!
//! Who talks to whom: each call connects to the engine itself ([`engine::connect`]:
//! `DOCKER_HOST` or the default socket, API version negotiated), so a workflow without
//! Docker steps never touches Docker, and neither does `ckflow validate`. Most calls go
//! through bollard; the three that carry registry credentials (push, pull and login) use
//! the small client in [`http`] (see there why). Credentials are found as the docker CLI
//! finds them ([`auth`]) and never reach a progress line, a result or an error message:
//! every text a tool emits passes its [`Redactor`]. Image references are checked against
//! the distribution grammar ([`reference`]) before any call, and build contexts honour
//! `.dockerignore` ([`ignore`]).

// `ToolError` is the error type the `Tool` trait fixes; boxing it would only move the
// allocation around.
#![allow(clippy::result_large_err)]

pub mod auth;
mod build;
mod check_auth;
mod engine;
mod http;
pub mod ignore;
mod images;
pub mod reference;
mod run;

use serde_json::{Map, Value};

pub use build::BuildImage;
pub use check_auth::CheckRegistryAuth;
pub use images::{PullImage, PushImage, TagImage};
pub use run::RunContainer;

use super::{Progress, ToolContext, ToolError, ToolRegistry};
use crate::workflow::model::ErrorClass;

/// Add the Docker tools to a registry.
pub fn register(r: &mut ToolRegistry) {
    r.register(BuildImage);
    r.register(TagImage);
    r.register(PushImage);
    r.register(PullImage);
    r.register(CheckRegistryAuth);
    r.register(RunContainer);
}

/// Replaces every secret in a text with `***`: the step's secret inputs and every
/// credential the call resolved.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// The context's secrets.
    pub fn new(ctx: &ToolContext) -> Redactor {
        let mut r = Redactor::default();
        for s in ctx.secrets.iter() {
            r.add(s);
        }
        r
    }

    /// One more secret (empty ones are ignored).
    pub fn add(&mut self, s: &str) {
        if !s.is_empty() && !self.secrets.iter().any(|x| x == s) {
            self.secrets.push(s.to_owned());
            // Longer first, so that a secret containing another is replaced whole.
            self.secrets.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }

    /// `s` without any secret.
    pub fn apply(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// The class of a registry or engine message, when it says something recognisable:
/// credentials refused (`auth_failed`), the thing is missing (`not_found`), or a passing
/// network fault (`transient`: connection refused or reset, timeouts, EOF, HTTP 5xx, 429).
pub(crate) fn classify_registry(message: &str) -> Option<ErrorClass> {
    let m = message.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    // Docker Hub's answer for a repository that does not exist (or is private).
    if m.contains("pull access denied") {
        return Some(ErrorClass::NotFound);
    }
    if any(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "incorrect username or password",
        "denied: requested access",
        "access denied",
        "access to the resource is denied",
        "401 unauthorized",
        "403 forbidden",
        "authentication failed",
    ]) {
        return Some(ErrorClass::AuthFailed);
    }
    if any(&[
        "manifest unknown",
        "not found",
        "does not exist",
        "no such image",
        "name unknown",
    ]) {
        return Some(ErrorClass::NotFound);
    }
    if any(&[
        "connection refused",
        "connection reset",
        "broken pipe",
        "i/o timeout",
        "timeout",
        "timed out",
        "deadline exceeded",
        "tls handshake",
        "eof",
        "no such host",
        "temporary failure",
        "server misbehaving",
        "network is unreachable",
        "500 internal server error",
        "502 bad gateway",
        "503 service unavailable",
        "504 gateway timeout",
        "toomanyrequests",
        "too many requests",
    ]) {
        return Some(ErrorClass::Transient);
    }
    None
}

/// Splits text arriving in pieces into lines (without `\n` or a trailing `\r`).
#[derive(Default)]
pub(crate) struct Lines {
    pending: String,
}

impl Lines {
    /// Add text; `emit` gets every line it completes.
    pub fn push(&mut self, text: &str, mut emit: impl FnMut(&str)) {
        self.pending.push_str(text);
        while let Some(i) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=i).collect();
            emit(line.trim_end_matches('\n').trim_end_matches('\r'));
        }
    }

    /// The last, unfinished line, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            emit(line.trim_end_matches('\r'));
        }
    }
}

/// Report one output line.
pub(crate) fn output(ctx: &ToolContext, red: &Redactor, stream: &'static str, line: &str) {
    (ctx.progress)(Progress::Output {
        stream,
        line: red.apply(line),
    });
}

/// Report the progress of a part (a layer).
pub(crate) fn part(ctx: &ToolContext, id: &str, status: &str, detail: Option<&Value>) {
    let num = |k: &str| {
        detail
            .and_then(|d| d.get(k))
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)
    };
    (ctx.progress)(Progress::Part {
        id: id.to_owned(),
        status: status.to_owned(),
        current: num("current"),
        total: num("total"),
    });
}

/// `with:` of a Docker tool, checked key by key.
pub(crate) struct Args<'a> {
    tool: &'static str,
    obj: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    /// The arguments of `tool`, which may only use `known` keys.
    pub fn new(tool: &'static str, v: &'a Value, known: &[&str]) -> Result<Args<'a>, ToolError> {
        let obj = v.as_object().ok_or_else(|| {
            ToolError::invalid(format!("the arguments of `{tool}` must be an object"))
        })?;
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            return Err(ToolError::invalid(format!(
                "`{tool}` has no argument `{k}` (it takes {})",
                list.join(", ")
            )));
        }
        Ok(Args { tool, obj })
    }

    /// Whether `key` is given (and not null).
    pub fn has(&self, key: &str) -> bool {
        self.obj.get(key).is_some_and(|v| !v.is_null())
    }

    /// An optional string.
    pub fn str(&self, key: &str) -> Result<Option<String>, ToolError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.contains('\0') => Err(ToolError::invalid(format!(
                "`{key}` must not contain a NUL character"
            ))),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ToolError::invalid(format!("`{key}` must be a string"))),
        }
    }

    /// A required, non-empty string.
    pub fn required(&self, key: &str) -> Result<String, ToolError> {
        match self.str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(ToolError::invalid(format!("`{key}` must not be empty"))),
            None => Err(ToolError::invalid(format!("`{}` needs `{key}`", self.tool))),
        }
    }

    /// An optional boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ToolError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ToolError::invalid(format!("`{key}` must be true or false"))),
        }
    }

    /// The raw value.
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// A list of strings (a single string counts as a list of one).
    pub fn strings(&self, key: &str) -> Result<Vec<String>, ToolError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) if !s.contains('\0') => Ok(s.clone()),
                    _ => Err(ToolError::invalid(format!("`{key}[{i}]` must be a string"))),
                })
                .collect(),
            Some(_) => Err(ToolError::invalid(format!(
                "`{key}` must be a list of strings"
            ))),
        }
    }

    /// A map of strings; numbers and booleans become text.
    pub fn string_map(&self, key: &str) -> Result<Vec<(String, String)>, ToolError> {
        let Some(v) = self.value(key) else {
            return Ok(Vec::new());
        };
        let map = v
            .as_object()
            .ok_or_else(|| ToolError::invalid(format!("`{key}` must be an object")))?;
        map.iter()
            .map(|(k, v)| {
                if k.is_empty() || k.contains('\0') {
                    return Err(ToolError::invalid(format!("`{key}` has an empty name")));
                }
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(ToolError::invalid(format!(
                            "`{key}.{k}` must be a string, number or boolean"
                        )));
                    }
                };
                if text.contains('\0') {
                    return Err(ToolError::invalid(format!(
                        "`{key}.{k}` must not contain a NUL character"
                    )));
                }
                Ok((k.clone(), text))
            })
            .collect()
    }

    /// The `auth` argument: `{username, password}` or `{identity_token}`.
    pub fn auth(&self) -> Result<Option<auth::Credentials>, ToolError> {
        let Some(v) = self.value("auth") else {
            return Ok(None);
        };
        let obj = v.as_object().ok_or_else(|| {
            ToolError::invalid("`auth` must be an object: {username, password} or {identity_token}")
        })?;
        let mut c = auth::Credentials::default();
        for (k, v) in obj {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                _ => return Err(ToolError::invalid(format!("`auth.{k}` must be a string"))),
            };
            match k.as_str() {
                "username" => c.username = Some(s),
                "password" => c.password = Some(s),
                "identity_token" => c.identity_token = Some(s),
                other => {
                    return Err(ToolError::invalid(format!(
                        "`auth` has no field `{other}` (it takes `username`, `password` or \
                         `identity_token`)"
                    )));
                }
            }
        }
        let has_token = c.identity_token.as_deref().is_some_and(|t| !t.is_empty());
        let has_user = c.username.as_deref().is_some_and(|u| !u.is_empty());
        if !has_token && !has_user {
            return Err(ToolError::invalid(
                "`auth` needs `username` and `password`, or `identity_token`",
            ));
        }
        Ok(Some(c))
    }
}

/// The JSON Schema of the `auth` argument.
pub(crate) fn auth_schema() -> Value {
    serde_json::json!({
        "type": "object",
        "description": "Registry credentials for this call, usually from secret inputs \
                        (`{username: \"{{inputs.user}}\", password: \"{{inputs.token}}\"}`); \
                        they win over `~/.docker/config.json`. Never printed or returned.",
        "additionalProperties": false,
        "properties": {
            "username": {"type": "string", "description": "The account name."},
            "password": {"type": "string", "description": "The password or access token."},
            "identity_token": {
                "type": "string",
                "description": "An identity (refresh) token instead of a username and password."
            }
        }
    })
}

/// The default rule shared by push and pull: a `transient` failure is retried twice more
/// after the step's own retries.
pub(crate) fn retry_transient_rule() -> crate::workflow::model::Rule {
    use crate::workflow::model::{Rule, Then};
    Rule::on_tool_error("", "transient", None, Then::Retry, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_messages_are_classified() {
        for (m, c) in [
            ("no basic auth credentials", Some(ErrorClass::AuthFailed)),
            (
                "unauthorized: authentication required",
                Some(ErrorClass::AuthFailed),
            ),
            (
                "login attempt to http://127.0.0.1:5001/v2/ failed with status: 401 Unauthorized",
                Some(ErrorClass::AuthFailed),
            ),
            (
                "manifest for 127.0.0.1:5000/nosuch:1 not found: manifest unknown",
                Some(ErrorClass::NotFound),
            ),
            (
                "An image does not exist locally with the tag: 127.0.0.1:5000/nosuch",
                Some(ErrorClass::NotFound),
            ),
            (
                "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused",
                Some(ErrorClass::Transient),
            ),
            (
                "received unexpected HTTP status: 503 Service Unavailable",
                Some(ErrorClass::Transient),
            ),
            ("something else entirely", None),
        ] {
            assert_eq!(classify_registry(m), c, "{m}");
        }
    }

    #[test]
    fn redactor_replaces_longest_first() {
        let mut r = Redactor::default();
        r.add("abc");
        r.add("abcdef");
        r.add("");
        assert_eq!(r.apply("x abcdef y abc"), "x *** y ***");
    }

    #[test]
    fn lines_join_pieces() {
        let mut l = Lines::default();
        let mut seen = Vec::new();
        l.push("Step 1/2 : RUN", |x| seen.push(x.to_owned()));
        l.push(" true\n\nok\r\nrest", |x| seen.push(x.to_owned()));
        l.finish(|x| seen.push(x.to_owned()));
        assert_eq!(seen, ["Step 1/2 : RUN true", "", "ok", "rest"]);
    }
}
