//! `tag_image`, `push_image` and `pull_image`.
//!
//! References are checked ([`Reference::parse`]) before anything else happens. Push and
//! pull resolve credentials ([`auth::resolve`]), talk to the engine through [`http`] and
//! report each layer as [`Progress::Part`](crate::tools::Progress::Part) (`Preparing`,
//! `Pushing` 1.2/3.4 MB, `Pushed`, `Downloading`, `Pull complete`, …) and every other
//! status as an output line. Their failures carry `registry` and `image` in `details`, so a
//! routing rule can name the registry (`{{failed.error.details.registry}}`).

use bollard::query_parameters::TagImageOptions;
use serde_json::{Value, json};

use super::auth::{self, Resolved};
use super::engine::{self, Engine, engine_error, message_of, with_class_code};
use super::http::encode_query;
use super::reference::{Reference, is_image_id};
use super::{Args, Redactor, auth_schema, classify_registry, output, part, retry_transient_rule};
use crate::tools::{Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::model::{ErrorClass, Rule, Then};

/// Wait for `fut`, or fail with `cancelled` as soon as the call is cancelled.
pub(crate) async fn or_cancel<T>(
    ctx: &ToolContext,
    fut: impl Future<Output = Result<T, ToolError>>,
) -> Result<T, ToolError> {
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(ToolError::cancelled()),
        r = fut => r,
    }
}

/// An `invalid_input` failure for a bad reference.
pub(crate) fn invalid_reference(key: &str, why: String) -> ToolError {
    ToolError::invalid(format!("`{key}`: {why}")).with_code("INVALID_REFERENCE")
}

/// Check an argument that may be an image reference or an image id.
pub(crate) fn check_image(key: &str, s: &str) -> Result<(), ToolError> {
    if is_image_id(s) {
        return Ok(());
    }
    Reference::parse(s)
        .map(|_| ())
        .map_err(|m| invalid_reference(key, m))
}

/// Check a platform: `os[/arch[/variant]]`.
pub(crate) fn check_platform(p: &str) -> Result<(), ToolError> {
    let parts: Vec<&str> = p.split('/').collect();
    let ok = (1..=3).contains(&parts.len())
        && parts.iter().all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ToolError::invalid(format!(
            "`platform`: `{p}` is not `os[/arch[/variant]]` (e.g. `linux/amd64`)"
        ))
        .with_code("INVALID_PLATFORM"))
    }
}

/// The image's id (`sha256:…`), by reference or id.
pub(crate) async fn image_id(
    engine: &Engine,
    image: &str,
    red: &Redactor,
) -> Result<String, ToolError> {
    let info =
        engine.docker.inspect_image(image).await.map_err(|e| {
            engine_error(e, &format!("inspecting `{image}`"), "IMAGE_NOT_FOUND", red)
        })?;
    info.id.ok_or_else(|| {
        ToolError::new(
            ErrorClass::ToolError,
            format!("the engine gave no id for `{image}`"),
        )
    })
}

// ---- tag_image ---------------------------------------------------------------------------

/// The `tag_image` tool.
pub struct TagImage;

impl Tool for TagImage {
    fn name(&self) -> &str {
        "tag_image"
    }

    fn description(&self) -> &str {
        "Gives a local image another name (`[registry/]repository:tag`), like `docker tag`."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The image to name and its new name.",
            "additionalProperties": false,
            "required": ["source", "target"],
            "properties": {
                "source": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A local image: a reference (`app:1.0`) or an id \
                                    (`sha256:…`, such as `build_image`'s `image_id`)."
                },
                "target": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The new name, `[registry[:port]/]repository[:tag]` \
                                    (tag `latest` when left out; no digest)."
                }
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "The new name.",
            "required": ["target", "image_id"],
            "properties": {
                "target": {
                    "type": "string",
                    "description": "The new reference with its tag (`127.0.0.1:5000/app:1.0`)."
                },
                "image_id": {"type": "string", "description": "The image's id (`sha256:…`)."}
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "INVALID_REFERENCE",
                "`source` or `target` is not a valid image reference (class `invalid_input`); \
                 checked before any call.",
            ),
            (
                "IMAGE_NOT_FOUND",
                "There is no local image `source` (class `not_found`).",
            ),
            (
                "ENGINE_UNREACHABLE",
                "No Docker engine answers at `DOCKER_HOST` (class `not_found`).",
            ),
        ]
    }

    fn destructive(&self) -> bool {
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(tag(args, ctx))
    }
}

async fn tag(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let a = Args::new("tag_image", &args, &["source", "target"])?;
    let source = a.required("source")?;
    check_image("source", &source)?;
    let target = a.required("target")?;
    let t = Reference::parse(&target).map_err(|m| invalid_reference("target", m))?;
    if t.digest.is_some() {
        return Err(invalid_reference(
            "target",
            format!("`{target}` has a digest; a tag target is `repository:tag`"),
        ));
    }
    let tag = t.tag.clone().unwrap_or_else(|| "latest".into());
    let red = Redactor::new(&ctx);
    let engine = engine::connect(&ctx).await?;
    let opts = TagImageOptions {
        repo: Some(t.name()),
        tag: Some(tag.clone()),
    };
    or_cancel(&ctx, async {
        engine
            .docker
            .tag_image(&source, Some(opts))
            .await
            .map_err(|e| {
                engine_error(
                    e,
                    &format!("tagging `{source}` as `{target}`"),
                    "IMAGE_NOT_FOUND",
                    &red,
                )
            })
    })
    .await?;
    let full = format!("{}:{tag}", t.name());
    let id = or_cancel(&ctx, image_id(&engine, &full, &red)).await?;
    Ok(json!({"target": full, "image_id": id}))
}

// ---- push_image --------------------------------------------------------------------------

/// The `push_image` tool.
pub struct PushImage;

impl Tool for PushImage {
    fn name(&self) -> &str {
        "push_image"
    }

    fn description(&self) -> &str {
        "Pushes a local image to its registry, with credentials from the step or \
         `~/.docker/config.json`, reporting each layer's progress."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The image to push.",
            "additionalProperties": false,
            "required": ["image"],
            "properties": {
                "image": {
                    "type": "string",
                    "minLength": 1,
                    "description": "`[registry[:port]/]repository[:tag]` of a local image; the \
                                    registry is the reference's domain (Docker Hub without \
                                    one), the tag `latest` when left out."
                },
                "auth": auth_schema()
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "What the registry now holds.",
            "required": ["digest", "image", "registry"],
            "properties": {
                "digest": {
                    "type": "string",
                    "description": "The manifest digest the registry reported (`sha256:…`)."
                },
                "image": {
                    "type": "string",
                    "description": "The reference pushed, with its tag."
                },
                "registry": {
                    "type": "string",
                    "description": "The registry host (`docker.io` for Docker Hub)."
                }
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        registry_codes()
    }

    fn default_rules(&self) -> Vec<Rule> {
        let mut with = serde_json::Map::new();
        with.insert(
            "registry".into(),
            json!("{{failed.error.details.registry}}"),
        );
        vec![
            retry_transient_rule(),
            Rule::on_tool_error(
                "push_image",
                "auth_failed",
                Some(("check_registry_auth", with)),
                Then::Fail,
                1,
            ),
        ]
    }

    fn destructive(&self) -> bool {
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(push(args, ctx))
    }
}

/// The error codes push and pull share.
fn registry_codes() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "INVALID_REFERENCE",
            "`image` is not a valid image reference (class `invalid_input`); checked before \
             any call.",
        ),
        (
            "AUTH_FAILED",
            "The registry refused the credentials, or wanted some and got none (class \
             `auth_failed`); details hold `registry`, `image` and `credentials_from` (`config`, \
             `credHelper`, `credsStore`, `step` or `none`).",
        ),
        (
            "IMAGE_NOT_FOUND",
            "The image is not there: not local (push) or not in the registry (pull) (class \
             `not_found`).",
        ),
        (
            "TRANSIENT",
            "A passing fault: connection refused or reset, a timeout, HTTP 5xx or 429 from \
             the registry (class `transient`).",
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

/// What a push or pull is about, for messages and details.
struct Target {
    op: &'static str,
    image: String,
    registry: String,
}

impl Target {
    fn details(&self, resolved: Option<&Resolved>) -> Value {
        let mut d = json!({"registry": self.registry, "image": self.image});
        if let Some(r) = resolved {
            d["credentials_from"] = json!(r.source.as_str());
        }
        d
    }

    /// A failure the engine or registry reported with `message`.
    fn failure(
        &self,
        message: &str,
        status: Option<u16>,
        resolved: &Resolved,
        red: &Redactor,
    ) -> ToolError {
        let class = classify_registry(message).unwrap_or(match status {
            Some(404) => ErrorClass::NotFound,
            Some(400) => ErrorClass::InvalidInput,
            Some(s) if s >= 500 => ErrorClass::ToolError,
            _ => ErrorClass::ToolError,
        });
        let mut text = format!("{} `{}` failed: {message}", self.op, self.image);
        if class == ErrorClass::AuthFailed {
            text.push_str(&match resolved.source {
                auth::Source::None => format!(
                    " (no credentials for {}: add them to ~/.docker/config.json or give the \
                     step `auth`)",
                    self.registry
                ),
                s => format!(" (credentials from {})", s.as_str()),
            });
        }
        with_class_code(ToolError::new(class, red.apply(&text)), "IMAGE_NOT_FOUND")
            .with_details(self.details(Some(resolved)))
    }

    fn attach(&self, e: ToolError, resolved: Option<&Resolved>) -> ToolError {
        if e.details.is_some() {
            return e;
        }
        let d = self.details(resolved);
        e.with_details(d)
    }
}

/// Credentials for a push or pull, with every secret added to `red`.
async fn credentials(
    target: &Target,
    step: Option<auth::Credentials>,
    ctx: &ToolContext,
    red: &mut Redactor,
) -> Result<Resolved, ToolError> {
    if let Some(c) = &step {
        for s in c.secrets() {
            red.add(&s);
        }
    }
    let resolved = auth::resolve(&target.registry, step, &auth::step_env(ctx))
        .await
        .map_err(|e| target.attach(e, None))?;
    for s in resolved.secrets() {
        red.add(&s);
    }
    Ok(resolved)
}

/// Read a push or pull progress stream; gives the digest it reported.
async fn follow(
    engine: &Engine,
    path: &str,
    target: &Target,
    resolved: &Resolved,
    ctx: &ToolContext,
    red: &Redactor,
) -> Result<Option<String>, ToolError> {
    let header = resolved.header();
    let resp = or_cancel(
        ctx,
        engine.raw("POST", path, &[("X-Registry-Auth", &header)], None),
    )
    .await
    .map_err(|e| target.attach(e, Some(resolved)))?;
    if !(200..300).contains(&resp.status) {
        let status = resp.status;
        let msg = or_cancel(ctx, async { Ok(resp.error_message().await) }).await?;
        return Err(target.failure(&msg, Some(status), resolved, red));
    }
    let mut lines = resp.json_lines();
    let mut digest = None;
    loop {
        let next = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ToolError::cancelled()),
            n = lines.next() => n,
        };
        let v = match next {
            Ok(Some(v)) => v,
            Ok(None) => break,
            Err(e) => {
                return Err(ToolError::new(
                    ErrorClass::Transient,
                    red.apply(&format!(
                        "{} `{}`: the engine's progress stream broke: {e}",
                        target.op, target.image
                    )),
                )
                .with_code("TRANSIENT")
                .with_details(target.details(Some(resolved))));
            }
        };
        if let Some(msg) = message_of(&v) {
            return Err(target.failure(&msg, None, resolved, red));
        }
        if let Some(d) = v
            .get("aux")
            .and_then(|a| a.get("Digest"))
            .and_then(Value::as_str)
        {
            digest = Some(d.to_owned());
        }
        let status = v.get("status").and_then(Value::as_str).unwrap_or("");
        if let Some(d) = status.strip_prefix("Digest: ") {
            digest = Some(d.trim().to_owned());
        }
        match v.get("id").and_then(Value::as_str) {
            Some(id) if !status.is_empty() && !status.starts_with("Pulling from") => {
                part(ctx, id, status, v.get("progressDetail"));
            }
            Some(id) if !status.is_empty() => {
                output(ctx, red, "stdout", &format!("{id}: {status}"));
            }
            _ if !status.is_empty() => output(ctx, red, "stdout", status),
            _ => {}
        }
    }
    Ok(digest)
}

async fn push(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let a = Args::new("push_image", &args, &["image", "auth"])?;
    let image = a.required("image")?;
    let r = Reference::parse(&image).map_err(|m| invalid_reference("image", m))?;
    if r.digest.is_some() {
        return Err(invalid_reference(
            "image",
            format!("`{image}` has a digest; push a tag (`repository:tag`)"),
        ));
    }
    let step_auth = a.auth()?;
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    let target = Target {
        op: "push of",
        image: format!("{}:{tag}", r.name()),
        registry: r.registry(),
    };
    let mut red = Redactor::new(&ctx);
    let engine = engine::connect(&ctx)
        .await
        .map_err(|e| target.attach(e, None))?;
    let resolved = credentials(&target, step_auth, &ctx, &mut red).await?;
    let path = format!("/images/{}/push?tag={}", r.name(), encode_query(&tag));
    let digest = follow(&engine, &path, &target, &resolved, &ctx, &red).await?;
    let Some(digest) = digest else {
        return Err(ToolError::new(
            ErrorClass::ToolError,
            format!("push of `{}`: the engine reported no digest", target.image),
        )
        .with_details(target.details(Some(&resolved))));
    };
    Ok(json!({"digest": digest, "image": target.image, "registry": target.registry}))
}

// ---- pull_image --------------------------------------------------------------------------

/// The `pull_image` tool.
pub struct PullImage;

impl Tool for PullImage {
    fn name(&self) -> &str {
        "pull_image"
    }

    fn description(&self) -> &str {
        "Pulls an image from its registry, with credentials from the step or \
         `~/.docker/config.json`, reporting each layer's progress."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "The image to pull.",
            "additionalProperties": false,
            "required": ["image"],
            "properties": {
                "image": {
                    "type": "string",
                    "minLength": 1,
                    "description": "`[registry[:port]/]repository[:tag][@sha256:…]`; the tag \
                                    is `latest` when neither a tag nor a digest is given."
                },
                "platform": {
                    "type": "string",
                    "description": "The platform to pull for a multi-platform image, \
                                    `os[/arch[/variant]]` (e.g. `linux/arm64`); default: the \
                                    engine's."
                },
                "auth": auth_schema()
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "description": "The pulled image.",
            "required": ["image_id", "digest", "image"],
            "properties": {
                "image_id": {"type": "string", "description": "The local image id (`sha256:…`)."},
                "digest": {
                    "type": "string",
                    "description": "The manifest digest (`sha256:…`); empty if the registry \
                                    reported none."
                },
                "image": {"type": "string", "description": "The reference pulled."}
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        let mut c = registry_codes();
        c.push((
            "INVALID_PLATFORM",
            "`platform` is not `os[/arch[/variant]]` (class `invalid_input`).",
        ));
        c
    }

    fn default_rules(&self) -> Vec<Rule> {
        vec![retry_transient_rule()]
    }

    fn destructive(&self) -> bool {
        // It may move a local tag to different content.
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(pull(args, ctx))
    }
}

async fn pull(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let a = Args::new("pull_image", &args, &["image", "platform", "auth"])?;
    let image = a.required("image")?;
    let r = Reference::parse(&image).map_err(|m| invalid_reference("image", m))?;
    let platform = a.str("platform")?.filter(|p| !p.is_empty());
    if let Some(p) = &platform {
        check_platform(p)?;
    }
    let step_auth = a.auth()?;
    // By digest when there is one (the tag is then only a label), else by tag.
    let (shown, api_tag) = match (&r.digest, r.tag_or_latest()) {
        (Some(d), _) => (format!("{}@{d}", r.name()), d.clone()),
        (None, t) => {
            let t = t.unwrap_or("latest").to_owned();
            (format!("{}:{t}", r.name()), t)
        }
    };
    let target = Target {
        op: "pull of",
        image: shown.clone(),
        registry: r.registry(),
    };
    let mut red = Redactor::new(&ctx);
    let engine = engine::connect(&ctx)
        .await
        .map_err(|e| target.attach(e, None))?;
    let resolved = credentials(&target, step_auth, &ctx, &mut red).await?;
    let mut path = format!(
        "/images/create?fromImage={}&tag={}",
        encode_query(&r.name()),
        encode_query(&api_tag)
    );
    if let Some(p) = &platform {
        path.push_str(&format!("&platform={}", encode_query(p)));
    }
    let digest = follow(&engine, &path, &target, &resolved, &ctx, &red).await?;
    let info =
        or_cancel(&ctx, async {
            engine.docker.inspect_image(&shown).await.map_err(|e| {
                engine_error(e, &format!("inspecting `{shown}`"), "IMAGE_NOT_FOUND", &red)
            })
        })
        .await?;
    let digest = digest
        .or_else(|| {
            let prefix = format!("{}@", r.name());
            info.repo_digests
                .iter()
                .flatten()
                .find_map(|d| d.strip_prefix(&prefix).map(str::to_owned))
        })
        .unwrap_or_default();
    Ok(json!({
        "image_id": info.id.unwrap_or_default(),
        "digest": digest,
        "image": shown,
    }))
}
