//! Registry credentials, found the way the docker CLI finds them, and kept out of sight.
//!
//! For a registry, the first source that has credentials wins:
//! 1. the step's own `auth` argument (`{username, password}` or `{identity_token}`, usually
//!    from secret inputs) — source `step`;
//! 2. `credHelpers.<registry>` in `config.json`: `docker-credential-<helper> get` —
//!    source `credHelper`;
//! 3. `credsStore`: the same protocol with the default helper — source `credsStore`
//!    (a helper that does not know the registry passes on to the next source);
//! 4. `auths.<registry>` in `config.json`: `auth` (base64 `user:password`), or `username`
//!    and `password`, or `identitytoken` — source `config`;
//! 5. nothing — source `none` (anonymous).
//!
//! `config.json` is `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`
//! (`DOCKER_CONFIG` may come from the step's environment). Keys match like the CLI's:
//! exactly, or by host once a scheme and a path are stripped (`https://r.io/v1/` is `r.io`);
//! Docker Hub is `docker.io`, `index.docker.io`, `registry-1.docker.io` or
//! `https://index.docker.io/v1/`. Helpers are looked up on ckflow's own `PATH`, never on
//! one a workflow sets, so a workflow cannot make ckflow run a program of its choosing.
//!
//! [`Credentials`] prints as `***`; callers add every secret to the tool's redactor.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::reference::is_docker_hub;
use crate::tools::ToolError;
use crate::workflow::model::ErrorClass;

/// The server address the CLI and the engine use for Docker Hub credentials.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A username and password, or an identity (refresh) token. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// The account name.
    pub username: Option<String>,
    /// The password (or access token used as a password).
    pub password: Option<String>,
    /// An OAuth refresh token the registry issued.
    pub identity_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl Credentials {
    /// Whether there is anything to send.
    pub fn is_empty(&self) -> bool {
        self.username.as_deref().unwrap_or("").is_empty()
            && self.password.as_deref().unwrap_or("").is_empty()
            && self.identity_token.as_deref().unwrap_or("").is_empty()
    }

    /// The values to redact from every message (passwords, tokens and their encodings).
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = self.password.as_deref().filter(|p| !p.is_empty()) {
            out.push(p.to_owned());
            let user = self.username.as_deref().unwrap_or("");
            out.push(encode_std(format!("{user}:{p}").as_bytes()));
        }
        if let Some(t) = self.identity_token.as_deref().filter(|t| !t.is_empty()) {
            out.push(t.to_owned());
        }
        out
    }

    /// The engine's `AuthConfig` JSON for `server`.
    pub fn auth_config(&self, server: &str) -> Value {
        let mut v = json!({"serveraddress": server});
        if let Some(t) = self.identity_token.as_deref().filter(|t| !t.is_empty()) {
            v["identitytoken"] = json!(t);
        } else {
            if let Some(u) = &self.username {
                v["username"] = json!(u);
            }
            if let Some(p) = &self.password {
                v["password"] = json!(p);
            }
        }
        v
    }
}

/// Where credentials came from (`check_registry_auth`'s `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `auths` in `config.json`.
    Config,
    /// `credHelpers.<registry>`.
    CredHelper,
    /// `credsStore`.
    CredsStore,
    /// The step's `auth` argument.
    Step,
    /// No credentials: anonymous.
    None,
}

impl Source {
    /// The name used in results and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::CredHelper => "credHelper",
            Source::CredsStore => "credsStore",
            Source::Step => "step",
            Source::None => "none",
        }
    }
}

/// Credentials for one registry, and where they came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The registry host (`docker.io` for Docker Hub).
    pub registry: String,
    /// The server address to hand the engine (`https://index.docker.io/v1/` for Hub).
    pub server: String,
    /// Where the credentials came from.
    pub source: Source,
    /// The credentials, unless the source is `none`.
    pub credentials: Option<Credentials>,
    /// The helper asked, for messages (`docker-credential-pass`).
    pub helper: Option<String>,
}

impl Resolved {
    /// The `X-Registry-Auth` header value: URL-safe base64 of the `AuthConfig` JSON
    /// (`{}` when anonymous).
    pub fn header(&self) -> String {
        let body = match &self.credentials {
            Some(c) => c.auth_config(&self.server).to_string(),
            None => "{}".to_owned(),
        };
        encode_url(body.as_bytes())
    }

    /// Every secret in these credentials, for redaction.
    pub fn secrets(&self) -> Vec<String> {
        let mut s = self
            .credentials
            .as_ref()
            .map(Credentials::secrets)
            .unwrap_or_default();
        s.push(self.header());
        s
    }
}

/// One entry of `auths`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthEntry {
    /// The decoded credentials.
    pub credentials: Credentials,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.credentials.fmt(f)
    }
}

/// The parts of `config.json` that concern credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    /// `auths`: registry key → credentials.
    pub auths: BTreeMap<String, AuthEntry>,
    /// `credHelpers`: registry key → helper suffix.
    pub cred_helpers: BTreeMap<String, String>,
    /// `credsStore`: the default helper suffix.
    pub creds_store: Option<String>,
}

impl DockerConfig {
    /// Parse the text of a `config.json`. Unknown keys are ignored; a malformed
    /// credential is an error that names the registry, never the value.
    pub fn parse(text: &str) -> Result<DockerConfig, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
        let Value::Object(root) = v else {
            return Err("the top level is not a JSON object".into());
        };
        let mut cfg = DockerConfig::default();
        if let Some(auths) = root.get("auths") {
            let Value::Object(auths) = auths else {
                return Err("`auths` is not an object".into());
            };
            for (key, entry) in auths {
                let Value::Object(e) = entry else {
                    return Err(format!("`auths.{key}` is not an object"));
                };
                let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
                let mut c = Credentials {
                    username: s("username").filter(|x| !x.is_empty()),
                    password: s("password").filter(|x| !x.is_empty()),
                    identity_token: s("identitytoken").filter(|x| !x.is_empty()),
                };
                if let Some(auth) = s("auth").filter(|a| !a.is_empty()) {
                    let bad = || format!("`auths.{key}.auth` is not base64 of `user:password`");
                    let raw = decode(&auth).ok_or_else(bad)?;
                    let text = String::from_utf8(raw).map_err(|_| bad())?;
                    let (user, pass) = text.split_once(':').ok_or_else(bad)?;
                    c.username = Some(user.to_owned());
                    c.password = Some(pass.to_owned());
                }
                cfg.auths.insert(key.clone(), AuthEntry { credentials: c });
            }
        }
        if let Some(helpers) = root.get("credHelpers") {
            let Value::Object(helpers) = helpers else {
                return Err("`credHelpers` is not an object".into());
            };
            for (key, h) in helpers {
                let h = h
                    .as_str()
                    .ok_or_else(|| format!("`credHelpers.{key}` is not a string"))?;
                check_helper_name(h).map_err(|m| format!("`credHelpers.{key}`: {m}"))?;
                cfg.cred_helpers.insert(key.clone(), h.to_owned());
            }
        }
        match root.get("credsStore") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => {
                check_helper_name(s).map_err(|m| format!("`credsStore`: {m}"))?;
                cfg.creds_store = Some(s.clone());
            }
            Some(_) => return Err("`credsStore` is not a string".into()),
        }
        Ok(cfg)
    }

    /// The `auths` entry for `registry`, if any.
    pub fn auth_for(&self, registry: &str) -> Option<&Credentials> {
        let wanted = host_aliases(registry);
        if let Some(e) = self.auths.get(registry) {
            return Some(&e.credentials);
        }
        self.auths
            .iter()
            .find(|(k, _)| wanted.contains(&key_host(k)))
            .map(|(_, e)| &e.credentials)
    }

    /// The `credHelpers` entry for `registry`, if any.
    pub fn helper_for(&self, registry: &str) -> Option<&str> {
        let wanted = host_aliases(registry);
        if let Some(h) = self.cred_helpers.get(registry) {
            return Some(h);
        }
        self.cred_helpers
            .iter()
            .find(|(k, _)| wanted.contains(&key_host(k)))
            .map(|(_, h)| h.as_str())
    }
}

/// The step environment registry auth may read `DOCKER_CONFIG` from: the step's own, except
/// in a confined context (an MCP client's run, [`crate::ToolContext::roots`]), where a
/// client must not point ckflow at a `config.json` of its making; there only ckflow's own
/// environment counts.
pub fn step_env(ctx: &crate::ToolContext) -> std::borrow::Cow<'_, IndexMap<String, String>> {
    if ctx.roots.is_some() {
        std::borrow::Cow::Owned(IndexMap::new())
    } else {
        std::borrow::Cow::Borrowed(&ctx.env)
    }
}

/// The folder holding `config.json`: `DOCKER_CONFIG` (the step's environment first, then
/// ckflow's), else `$HOME/.docker`.
pub fn config_dir(env: &IndexMap<String, String>) -> Option<PathBuf> {
    if let Some(d) = env.get("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker"))
}

/// Load `<dir>/config.json`; a missing file is an empty config.
pub fn load_config(dir: Option<&Path>) -> Result<DockerConfig, ToolError> {
    let Some(dir) = dir else {
        return Ok(DockerConfig::default());
    };
    let path = dir.join("config.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => DockerConfig::parse(&text).map_err(|m| {
            ToolError::invalid(format!("the Docker config `{}`: {m}", path.display()))
                .with_code("DOCKER_CONFIG_INVALID")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
        Err(e) => Err(ToolError::invalid(format!(
            "cannot read the Docker config `{}`: {e}",
            path.display()
        ))
        .with_code("DOCKER_CONFIG_INVALID")),
    }
}

/// Find the credentials for `registry` (a host such as `127.0.0.1:5001` or `docker.io`).
pub async fn resolve(
    registry: &str,
    step: Option<Credentials>,
    env: &IndexMap<String, String>,
) -> Result<Resolved, ToolError> {
    let registry = if is_docker_hub(registry) {
        super::reference::DOCKER_HUB.to_owned()
    } else {
        registry.to_owned()
    };
    let server = server_address(&registry);
    let mut out = Resolved {
        registry: registry.clone(),
        server: server.clone(),
        source: Source::None,
        credentials: None,
        helper: None,
    };
    if let Some(c) = step {
        out.source = Source::Step;
        out.credentials = Some(c);
        return Ok(out);
    }
    let cfg = load_config(config_dir(env).as_deref())?;
    if let Some(h) = cfg.helper_for(&registry) {
        out.helper = Some(format!("docker-credential-{h}"));
        if let Some(c) = run_helper(h, &server, &registry).await? {
            out.source = Source::CredHelper;
            out.credentials = Some(c);
        }
        // A registry with its own helper never falls back to other sources, as in the CLI.
        return Ok(out);
    }
    if let Some(h) = &cfg.creds_store
        && let Some(c) = run_helper(h, &server, &registry).await?
    {
        out.helper = Some(format!("docker-credential-{h}"));
        out.source = Source::CredsStore;
        out.credentials = Some(c);
        return Ok(out);
    }
    if let Some(c) = cfg.auth_for(&registry).filter(|c| !c.is_empty()) {
        out.source = Source::Config;
        out.credentials = Some(c.clone());
    }
    Ok(out)
}

/// What the engine and helpers call a registry: Hub's legacy URL, else the host.
pub fn server_address(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_SERVER.to_owned()
    } else {
        registry.to_owned()
    }
}

/// The host of a config key: scheme and path stripped (`https://r.io/v1/` → `r.io`).
pub fn key_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k).to_ascii_lowercase()
}

/// The hosts a key may name for `registry` (Hub has several).
fn host_aliases(registry: &str) -> Vec<String> {
    if is_docker_hub(registry) {
        vec![
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![registry.to_ascii_lowercase()]
    }
}

fn check_helper_name(h: &str) -> Result<(), String> {
    if h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "`{h}` is not a credential helper name (letters, digits, `-`, `_`, `.`)"
        ));
    }
    Ok(())
}

/// Run `docker-credential-<helper> get` with `server` on stdin. `Ok(None)`: the helper has
/// nothing for this server.
async fn run_helper(
    helper: &str,
    server: &str,
    registry: &str,
) -> Result<Option<Credentials>, ToolError> {
    use tokio::io::AsyncWriteExt;
    let program = format!("docker-credential-{helper}");
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || helper.starts_with('.')
    {
        // Like docker's CLI: a helper is a name looked up on PATH, never a path.
        return Err(ToolError::new(
            ErrorClass::AuthFailed,
            format!(
                "the credential helper `{}` for {registry} is not a plain name (letters, \
                 digits, `-`, `_`, `.`); refused",
                program.escape_debug()
            ),
        )
        .with_code("CREDENTIAL_HELPER_FAILED")
        .with_details(json!({"registry": registry})));
    }
    let fail = |why: String| {
        ToolError::new(
            ErrorClass::AuthFailed,
            format!("the credential helper `{program}` failed for {registry}: {why}"),
        )
        .with_code("CREDENTIAL_HELPER_FAILED")
        .with_details(json!({"registry": registry, "helper": program}))
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail("it is not on PATH".into()),
            _ => fail(format!("cannot start it ({e})")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is not an error here; its output says.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("no answer within {}s", HELPER_TIMEOUT.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let said = format!("{stdout} {}", String::from_utf8_lossy(&out.stderr));
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let first = said.lines().map(str::trim).find(|l| !l.is_empty());
        return Err(fail(match first {
            Some(l) => format!("{} ({l})", out.status),
            None => out.status.to_string(),
        }));
    }
    parse_helper_output(&stdout)
        .map(Some)
        .map_err(|m| fail(m.into()))
}

/// The JSON a helper prints: `{"ServerURL", "Username", "Secret"}`; a `Username` of
/// `<token>` makes `Secret` an identity token.
pub fn parse_helper_output(text: &str) -> Result<Credentials, &'static str> {
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|_| "it printed something that is not the helper protocol's JSON")?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let user = s("Username").unwrap_or_default();
    let secret = s("Secret").unwrap_or_default();
    if user == "<token>" {
        return Ok(Credentials {
            username: None,
            password: None,
            identity_token: Some(secret),
        });
    }
    Ok(Credentials {
        username: Some(user),
        password: Some(secret),
        identity_token: None,
    })
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn encode_std(data: &[u8]) -> String {
    encode_with(data, STD)
}

/// URL-safe base64 with padding, as the engine decodes `X-Registry-Auth`.
pub fn encode_url(data: &[u8]) -> String {
    encode_with(
        data,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    )
}

fn encode_with(data: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode base64 in either alphabet, with or without padding; `None` if it is not base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character cannot encode a byte.
    if text.len() % 4 == 1 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "ckflow:ckflow-secret",
        ] {
            let e = encode_std(s.as_bytes());
            assert_eq!(decode(&e).unwrap(), s.as_bytes(), "{s}");
        }
        assert_eq!(encode_std(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode_std(b"fo"), "Zm8=");
        assert_eq!(encode_std(&[0xfb, 0xff]), "+/8=");
        assert_eq!(encode_url(&[0xfb, 0xff]), "-_8=");
        assert_eq!(decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode("e30=").unwrap(), b"{}");
        assert!(decode("a").is_none());
        assert!(decode("a*b=").is_none());
    }

    #[test]
    fn credentials_debug_hides_everything() {
        let c = Credentials {
            username: Some("me".into()),
            password: Some("hunter2".into()),
            identity_token: None,
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("me\""), "{d}");
    }
}
