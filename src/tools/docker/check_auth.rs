//! `check_registry_auth`: are the credentials ckflow would use for a registry accepted?
//!
//! It resolves credentials exactly as `push_image` does ([`auth::resolve`]) and asks the
//! engine to log in (`POST /auth`, which calls the registry's `/v2/` endpoint). A refusal is
//! a result (`authenticated: false` and the registry's message), not a failure, so it can
//! serve as the recovery step of `push_image`'s `auth_failed` rule and leave a readable
//! account in the run record. Only bad arguments, an unreadable `config.json`, a failing
//! credential helper and an unreachable engine are failures.

use serde_json::{Value, json};

use super::auth::{self, key_host};
use super::engine;
use super::images::or_cancel;
use super::reference::{DOCKER_HUB, check_registry_host, is_docker_hub};
use super::{Args, Redactor, auth_schema};
use crate::tools::{Tool, ToolContext, ToolError, ToolFuture};

/// The `check_registry_auth` tool.
pub struct CheckRegistryAuth;

impl Tool for CheckRegistryAuth {
    fn name(&self) -> &str {
        "check_registry_auth"
    }

    fn description(&self) -> &str {
        "Checks whether a registry accepts the credentials ckflow would use for it (the \
         step's `auth`, config.json `credHelpers`, `credsStore` or `auths`), by logging in \
         through the Docker engine; never returns a secret."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The registry to check.",
            "additionalProperties": false,
            "required": ["registry"],
            "properties": {
                "registry": {
                    "type": "string",
                    "description": "The registry host, `host[:port]` (`127.0.0.1:5001`, \
                                    `ghcr.io`, `docker.io`); a URL such as \
                                    `https://index.docker.io/v1/` is reduced to its host."
                },
                "auth": auth_schema()
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "What the registry said about the credentials.",
            "required": ["registry", "authenticated", "source", "message"],
            "properties": {
                "registry": {
                    "type": "string",
                    "description": "The registry host checked (`docker.io` for Docker Hub)."
                },
                "authenticated": {
                    "type": "boolean",
                    "description": "Whether the registry accepted the request (with no \
                                    credentials: whether it allows anonymous access)."
                },
                "source": {
                    "type": "string",
                    "enum": ["config", "credHelper", "credsStore", "step", "none"],
                    "description": "Where the credentials came from: config.json `auths`, \
                                    `credHelpers`, `credsStore`, the step's `auth`, or none."
                },
                "message": {
                    "type": "string",
                    "description": "The engine's or registry's answer, for people (secrets \
                                    removed)."
                }
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "INVALID_REGISTRY",
                "`registry` is empty or not `host[:port]` (class `invalid_input`).",
            ),
            (
                "CREDENTIAL_HELPER_FAILED",
                "A `docker-credential-*` helper named in config.json is missing or failed \
                 (class `auth_failed`).",
            ),
            (
                "DOCKER_CONFIG_INVALID",
                "`config.json` cannot be read or parsed (class `invalid_input`).",
            ),
            (
                "ENGINE_UNREACHABLE",
                "No Docker engine answers at `DOCKER_HOST` (class `not_found`).",
            ),
        ]
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(check(args, ctx))
    }
}

/// The registry host from what a user or a routing rule gave.
fn registry_host(given: &str) -> Result<String, ToolError> {
    let host = key_host(given.trim());
    let bad = |why: String| {
        ToolError::invalid(format!("`registry`: {why}")).with_code("INVALID_REGISTRY")
    };
    if host.is_empty() {
        return Err(bad(
            "it is empty (a routing rule may have found no registry in the failure)".into(),
        ));
    }
    check_registry_host(&host).map_err(bad)?;
    Ok(if is_docker_hub(&host) {
        DOCKER_HUB.to_owned()
    } else {
        host
    })
}

async fn check(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let a = Args::new("check_registry_auth", &args, &["registry", "auth"])?;
    let registry = registry_host(&a.str("registry")?.unwrap_or_default())?;
    let step = a.auth()?;
    let mut red = Redactor::new(&ctx);
    if let Some(c) = &step {
        for s in c.secrets() {
            red.add(&s);
        }
    }
    let resolved = auth::resolve(&registry, step, &auth::step_env(&ctx)).await?;
    for s in resolved.secrets() {
        red.add(&s);
    }
    let engine = engine::connect(&ctx).await?;
    let body = match &resolved.credentials {
        Some(c) => c.auth_config(&resolved.server),
        None => json!({"serveraddress": resolved.server}),
    }
    .to_string();
    let resp = or_cancel(
        &ctx,
        engine.raw("POST", "/auth", &[], Some(body.as_bytes())),
    )
    .await?;
    let ok = (200..300).contains(&resp.status);
    let message = if ok {
        let text = or_cancel(&ctx, async {
            resp.text(64 << 10).await.map_err(|e| {
                ToolError::new(
                    crate::workflow::model::ErrorClass::Transient,
                    format!("reading the engine's answer: {e}"),
                )
                .with_code("TRANSIENT")
            })
        })
        .await?;
        // Only `Status` is kept: the answer may hold an identity token.
        let status = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("Status").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "Login Succeeded".into());
        match resolved.source {
            auth::Source::None => format!(
                "{status}: {registry} accepts requests without credentials (none are \
                 configured for it)"
            ),
            s => format!("{status} with the credentials from {}", s.as_str()),
        }
    } else {
        let said = or_cancel(&ctx, async { Ok(resp.error_message().await) }).await?;
        match resolved.source {
            auth::Source::None => format!(
                "{said} (no credentials for {registry}: add them to ~/.docker/config.json, \
                 `docker login {registry}`, or give the step `auth`)"
            ),
            s => format!("{said} (credentials from {})", s.as_str()),
        }
    };
    Ok(json!({
        "registry": registry,
        "authenticated": ok,
        "source": resolved.source.as_str(),
        "message": red.apply(&message),
    }))
}
