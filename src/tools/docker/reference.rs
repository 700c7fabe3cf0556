//! Image references (`127.0.0.1:5000/team/app:1.2@sha256:…`), parsed by the grammar of
//! the distribution project (`github.com/distribution/reference`), so that a bad name is an
//! `invalid_input` failure before ckflow talks to any engine or registry.
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ domain "/" ] path-component { "/" path-component }
//! domain           := host [ ":" port ]           host: domain-name | "[" IPv6 "]"
//! domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! path-component   := [a-z0-9]+ { separator [a-z0-9]+ }   separator: "." | "_" | "__" | "-"+
//! tag              := [\w][\w.-]{0,127}
//! digest           := "sha256:" [a-f0-9]{64}
//! ```
//!
//! As in Docker, the part before the first `/` is a domain only if it holds a `.` or a `:`,
//! is `localhost`, or has an upper-case letter; otherwise the whole name is a path on Docker
//! Hub (`app` is `docker.io/library/app`). A name is at most 255 characters.

use std::fmt;

/// Docker Hub's canonical domain.
pub const DOCKER_HUB: &str = "docker.io";

/// The longest name (domain and path) the grammar allows.
const NAME_MAX: usize = 255;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The domain as written (`127.0.0.1:5000`, `ghcr.io`), if the name has one.
    pub domain: Option<String>,
    /// The repository path as written (`team/app`, `app`).
    pub path: String,
    /// The tag, if given.
    pub tag: Option<String>,
    /// The digest (`sha256:…`), if given.
    pub digest: Option<String>,
}

impl Reference {
    /// Parse `s`; the error says what is wrong, for an `invalid_input` message.
    pub fn parse(s: &str) -> Result<Reference, String> {
        if s.is_empty() {
            return Err("the image reference is empty".into());
        }
        if s.contains("://") {
            return Err(format!(
                "`{s}` looks like a URL; an image reference is `[host[:port]/]path[:tag][@digest]`"
            ));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "`{}` contains {:?}, which no image reference may",
                s.escape_debug(),
                c
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                check_digest(d).map_err(|m| format!("`{s}`: {m}"))?;
                (r, Some(d.to_owned()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                let tag = &rest[i + 1..];
                check_tag(tag).map_err(|m| format!("`{s}`: {m}"))?;
                (&rest[..i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(format!("`{s}` has no repository name"));
        }
        if name.len() > NAME_MAX {
            return Err(format!(
                "`{}…`: a repository name is at most {NAME_MAX} characters",
                prefix(name, 40)
            ));
        }
        let (domain, path) = split_domain(name);
        if let Some(d) = domain {
            check_domain(d).map_err(|m| format!("`{s}`: {m}"))?;
        }
        check_path(path).map_err(|m| format!("`{s}`: {m}"))?;
        Ok(Reference {
            domain: domain.map(str::to_owned),
            path: path.to_owned(),
            tag,
            digest,
        })
    }

    /// The registry the image lives in: the domain, or `docker.io` for Docker Hub (and its
    /// aliases `index.docker.io` and `registry-1.docker.io`).
    pub fn registry(&self) -> String {
        match &self.domain {
            None => DOCKER_HUB.to_owned(),
            Some(d) if is_docker_hub(d) => DOCKER_HUB.to_owned(),
            Some(d) => d.clone(),
        }
    }

    /// The repository as written: `[domain/]path`, without tag or digest.
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The fully qualified repository: `docker.io/library/app` for `app`.
    pub fn full_name(&self) -> String {
        let registry = self.registry();
        if registry == DOCKER_HUB && !self.path.contains('/') {
            format!("{DOCKER_HUB}/library/{}", self.path)
        } else {
            format!("{registry}/{}", self.path)
        }
    }

    /// The tag, or `latest` when the reference has neither a tag nor a digest.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }
}

impl fmt::Display for Reference {
    /// The reference as written (domain, path, tag and digest).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Whether `domain` names Docker Hub.
pub fn is_docker_hub(domain: &str) -> bool {
    matches!(
        domain.to_ascii_lowercase().as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Whether `s` is an image id rather than a reference: `sha256:` and 64 hex digits, or
/// 12 to 64 hex digits (a short id; such a string may also be a valid repository name,
/// and the engine decides which it is).
pub fn is_image_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let full = s.starts_with("sha256:");
    (if full {
        hex.len() == 64
    } else {
        (12..=64).contains(&hex.len())
    }) && hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Check a registry host as given to `check_registry_auth`: `host[:port]`.
pub fn check_registry_host(s: &str) -> Result<(), String> {
    check_domain(s)
}

/// Split a name into its domain (if the first component is one) and its path.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_domain(d: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("the registry `{d}` has an unclosed `[`"));
        };
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("`[{v6}]` is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            p if p.starts_with(':') => (None, Some(&p[1..])),
            _ => return Err(format!("the registry `{d}` is not `host[:port]`")),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err(format!("the registry `{d}` has no host"));
        }
        for comp in host.split('.') {
            let ok = !comp.is_empty()
                && comp.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !comp.starts_with('-')
                && !comp.ends_with('-');
            if !ok {
                return Err(format!(
                    "`{host}` is not a valid registry host (letters, digits, `-` and `.`)"
                ));
            }
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("the port of `{d}` must be a number"));
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository name must be lowercase (`{path}`)"));
    }
    for comp in path.split('/') {
        check_path_component(comp).map_err(|m| format!("`{path}`: {m}"))?;
    }
    Ok(())
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separators `.`, `_`, `__` and `-`+.
fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("a path component is empty (`//`, or a leading or trailing `/`)".into());
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(format!(
            "`{c}` must start and end with a lowercase letter or a digit"
        ));
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(format!(
                "`{c}` has `{sep}` between words; only `.`, `_`, `__` or dashes may separate them"
            ));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        None => Err("the tag after `:` is empty".into()),
        Some(first) if !word(first) => Err(format!(
            "the tag `{tag}` must start with a letter, a digit or `_`"
        )),
        _ if tag.len() > 128 => Err(format!(
            "the tag `{}…` is longer than 128 characters",
            prefix(tag, 20)
        )),
        _ => match chars.find(|&c| !(word(c) || c == '.' || c == '-')) {
            Some(c) => Err(format!(
                "the tag `{tag}` contains `{c}` (allowed: letters, digits, `_`, `.`, `-`)"
            )),
            None => Ok(()),
        },
    }
}

/// At most `n` characters of `s`.
fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

fn check_digest(d: &str) -> Result<(), String> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err(format!(
            "the digest `{d}` must be `sha256:` followed by 64 hex digits"
        ));
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "the digest `{d}` must be `sha256:` followed by 64 lowercase hex digits"
        ));
    }
    Ok(())
}
