//! The connection to the Docker engine, made afresh by every call that needs one.
//!
//! The address is `DOCKER_HOST` (the step's environment first, then ckflow's), else
//! `unix:///var/run/docker.sock`; `unix://PATH`, a bare socket path, `tcp://HOST:PORT` and
//! `http://HOST:PORT` are understood. The API version is negotiated (`GET /version`), so an
//! engine older than bollard's default (this project's dev engine speaks 1.41) works. When
//! nothing answers within [`CONNECT_TIMEOUT`] the call fails with class `not_found`, code
//! `ENGINE_UNREACHABLE`: "cannot reach the Docker engine at ADDR: WHY".

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use indexmap::IndexMap;
use serde_json::Value;

use super::http::{self, Endpoint};
use super::{Redactor, classify_registry};
use crate::tools::{ToolContext, ToolError};
use crate::workflow::model::ErrorClass;

/// The default engine address.
pub(crate) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How long connecting and negotiating may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// bollard's per-request timeout (it bounds the wait for response headers only; steps
/// are bounded by their own timeout through the cancel token).
const REQUEST_TIMEOUT_SECS: u64 = 24 * 3600;

/// A connected engine.
#[derive(Clone)]
pub(crate) struct Engine {
    /// The bollard client, API version negotiated.
    pub docker: Docker,
    /// The address as configured, for messages.
    pub addr: String,
    /// Where raw requests go.
    pub endpoint: Endpoint,
    /// The negotiated API version (`1.41`).
    pub version: String,
}

/// The engine address for a call.
pub(crate) fn docker_host(env: &IndexMap<String, String>) -> String {
    env.get("DOCKER_HOST")
        .filter(|h| !h.is_empty())
        .cloned()
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_HOST.to_owned())
}

/// Parse an engine address.
pub(crate) fn parse_host(addr: &str) -> Result<Endpoint, String> {
    if let Some(p) = addr.strip_prefix("unix://") {
        if p.is_empty() {
            return Err("the socket path is empty".into());
        }
        return Ok(Endpoint::Unix(p.into()));
    }
    if addr.starts_with('/') {
        return Ok(Endpoint::Unix(addr.into()));
    }
    if let Some(rest) = addr
        .strip_prefix("tcp://")
        .or_else(|| addr.strip_prefix("http://"))
    {
        let hostport = rest.trim_end_matches('/');
        if hostport.is_empty() || hostport.contains('/') {
            return Err("expected tcp://HOST:PORT".into());
        }
        let hostport = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_owned()
        } else {
            format!("{hostport}:2375")
        };
        return Ok(Endpoint::Tcp(hostport));
    }
    let scheme = addr.split("://").next().unwrap_or(addr);
    Err(format!(
        "`{scheme}://` addresses are not supported (use unix:// or tcp://; TLS and ssh are not)"
    ))
}

/// Connect to the engine named by the call's environment and negotiate the API version.
pub(crate) async fn connect(ctx: &ToolContext) -> Result<Engine, ToolError> {
    let addr = docker_host(&ctx.env);
    let unreachable = |why: String| {
        ToolError::new(
            ErrorClass::NotFound,
            format!("cannot reach the Docker engine at {addr}: {why}"),
        )
        .with_code("ENGINE_UNREACHABLE")
        .with_details(serde_json::json!({"docker_host": addr}))
    };
    let endpoint = parse_host(&addr).map_err(unreachable)?;
    let docker = client(&endpoint).map_err(|e| unreachable(cause(&e)))?;
    let negotiated = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => return Err(ToolError::cancelled()),
        r = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()) => r,
    };
    let docker = match negotiated {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(unreachable(cause(&e))),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    let version = docker.client_version().to_string();
    Ok(Engine {
        docker,
        addr,
        endpoint,
        version,
    })
}

/// A bollard client for `endpoint` (not yet negotiated). Credentials headers are
/// re-encoded in the URL-safe base64 alphabet the engine decodes.
pub(crate) fn client(endpoint: &Endpoint) -> Result<Docker, BollardError> {
    let docker = match endpoint {
        Endpoint::Unix(p) => Docker::connect_with_unix(
            &p.to_string_lossy(),
            REQUEST_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )?,
        Endpoint::Tcp(a) => Docker::connect_with_http(
            &format!("tcp://{a}"),
            REQUEST_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )?,
    };
    Ok(docker.with_request_modifier(|mut req| {
        for name in ["x-registry-auth", "x-registry-config"] {
            if let Some(v) = req.headers_mut().get_mut(name)
                && let Ok(s) = v.to_str()
                && s.contains(['+', '/'])
                && let Ok(fixed) = s.replace('+', "-").replace('/', "_").parse()
            {
                *v = fixed;
            }
        }
        req
    }))
}

/// The innermost cause of an error, which is the informative one for connections
/// ("Connection refused (os error 111)").
pub(crate) fn cause(e: &BollardError) -> String {
    if let BollardError::SocketNotFoundError(p) = e {
        return format!("no socket at {p}");
    }
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

impl Engine {
    /// A raw request (see [`http`]) to `/v{version}{path}`; a failure to talk to the
    /// engine is `transient`.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<http::Response, ToolError> {
        let target = format!("/v{}{path}", self.version);
        http::request(&self.endpoint, method, &target, headers, body)
            .await
            .map_err(|e| {
                ToolError::new(
                    ErrorClass::Transient,
                    format!("talking to the Docker engine at {}: {e}", self.addr),
                )
                .with_code("TRANSIENT")
            })
    }
}

/// A bollard error as a tool failure. `not_found_code` names what was missing
/// (`IMAGE_NOT_FOUND`, …); registry messages are classified by [`classify_registry`].
pub(crate) fn engine_error(
    e: BollardError,
    what: &str,
    not_found_code: &str,
    red: &Redactor,
) -> ToolError {
    let (class, message) = match &e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let class = match status_code {
                404 => ErrorClass::NotFound,
                400 => ErrorClass::InvalidInput,
                401 | 403 => ErrorClass::AuthFailed,
                s if *s >= 500 => classify_registry(message).unwrap_or(ErrorClass::ToolError),
                _ => ErrorClass::ToolError,
            };
            (class, message.clone())
        }
        BollardError::DockerStreamError { error } => (
            classify_registry(error).unwrap_or(ErrorClass::ToolError),
            error.clone(),
        ),
        BollardError::RequestTimeoutError => (
            ErrorClass::Transient,
            "the engine did not answer in time".to_owned(),
        ),
        BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::IOError { .. } => (
            ErrorClass::Transient,
            format!("the connection to the engine broke: {}", cause(&e)),
        ),
        other => (ErrorClass::ToolError, other.to_string()),
    };
    with_class_code(
        ToolError::new(class, red.apply(&format!("{what}: {message}"))),
        not_found_code,
    )
}

/// Add the code that goes with a class (`AUTH_FAILED`, `TRANSIENT`, `not_found_code`).
pub(crate) fn with_class_code(e: ToolError, not_found_code: &str) -> ToolError {
    let code = match e.class {
        ErrorClass::NotFound => Some(not_found_code),
        ErrorClass::AuthFailed => Some("AUTH_FAILED"),
        ErrorClass::Transient => Some("TRANSIENT"),
        _ => None,
    };
    match code {
        Some(c) => e.with_code(c),
        None => e,
    }
}

/// The `message` of an engine error body, if it is one.
pub(crate) fn message_of(v: &Value) -> Option<String> {
    v.get("errorDetail")
        .and_then(|d| d.get("message"))
        .or_else(|| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("unix:///var/run/docker.sock").unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            parse_host("/run/d.sock").unwrap(),
            Endpoint::Unix("/run/d.sock".into())
        );
        assert_eq!(
            parse_host("tcp://10.0.0.1:2376").unwrap(),
            Endpoint::Tcp("10.0.0.1:2376".into())
        );
        assert_eq!(
            parse_host("http://dind/").unwrap(),
            Endpoint::Tcp("dind:2375".into())
        );
        assert!(parse_host("ssh://me@host").unwrap_err().contains("ssh://"));
        assert!(parse_host("unix://").is_err());
        assert!(parse_host("npipe:////./pipe/docker_engine").is_err());
    }
}
