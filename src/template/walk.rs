//! Walking a parsed Handlebars template: which paths it reads, which helpers it calls, and
//! where in the source text each of them sits.
//!
//! Handlebars' AST keeps no byte positions for parameters, so positions come from a small
//! scan of the source ([`opening_tags`]) that lists every tag which becomes an element of
//! the AST, in document order; the walk numbers the elements the same way and each site
//! is then looked up inside its tag's text.

use handlebars::template::{Parameter, Subexpression, TemplateElement};
use handlebars::{Path, PathSeg, Template};

/// How a path is anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// `a.b`: relative to the current context.
    Plain,
    /// `this`, `this.a`, `./a`: explicitly the current context.
    This,
    /// `../a`: a parent context.
    Up,
    /// `@index`, `@key`, `@first`, ...: a block-local variable.
    Local,
    /// `@root.a`: the root context, wherever it appears.
    Root,
}

/// One place where the template names something.
#[derive(Debug, Clone)]
pub(crate) enum SiteKind {
    /// A path read from the context.
    Ref {
        segments: Vec<String>,
        anchor: Anchor,
        /// Inside the body of `each` / `with`: the context is not the root.
        in_block: bool,
        /// The first parameter of `default`: may be missing.
        optional: bool,
        /// The helper this is a direct parameter of, and its index (hash values: none).
        parent: Option<(String, Option<usize>)>,
    },
    /// A helper call.
    Helper,
}

/// A path or helper name as written (`raw`), in the `tag`-th opening tag.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub raw: String,
    pub tag: usize,
    pub kind: SiteKind,
}

impl Site {
    /// True when the validator cannot check this reference against the root context.
    pub fn scoped(&self) -> bool {
        match &self.kind {
            SiteKind::Ref {
                anchor, in_block, ..
            } => match anchor {
                Anchor::Root => false,
                Anchor::Plain => *in_block,
                Anchor::This | Anchor::Up | Anchor::Local => true,
            },
            SiteKind::Helper => false,
        }
    }
}

/// Everything a walk over a template found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub sites: Vec<Site>,
    /// The template has partials or decorators, whose bodies cannot be followed.
    pub opaque: bool,
    tags: usize,
}

/// Helpers whose block body runs against another context.
const CONTEXT_CHANGERS: &[&str] = &["each", "with"];

impl Walk {
    /// Walk a whole template.
    pub fn of(t: &Template) -> Walk {
        let mut w = Walk::default();
        w.template(t, false);
        w
    }

    fn next_tag(&mut self) -> usize {
        self.tags += 1;
        self.tags - 1
    }

    fn template(&mut self, t: &Template, in_block: bool) {
        for el in &t.elements {
            match el {
                TemplateElement::Expression(ht)
                | TemplateElement::HtmlExpression(ht)
                | TemplateElement::HelperBlock(ht) => {
                    let tag = self.next_tag();
                    self.helper(
                        &ht.name, &ht.params, &ht.hash, ht.block, false, in_block, tag,
                    );
                    if ht.block {
                        let name = ht.name.as_name().unwrap_or_default();
                        let changes = CONTEXT_CHANGERS.contains(&name);
                        if let Some(body) = &ht.template {
                            self.template(body, in_block || changes);
                        }
                        if let Some(inverse) = &ht.inverse {
                            self.template(inverse, in_block);
                        }
                    }
                }
                TemplateElement::DecoratorExpression(dt)
                | TemplateElement::DecoratorBlock(dt)
                | TemplateElement::PartialExpression(dt)
                | TemplateElement::PartialBlock(dt) => {
                    let tag = self.next_tag();
                    self.opaque = true;
                    self.params(&dt.params, &dt.hash, None, in_block, tag);
                    if let Some(body) = &dt.template {
                        self.template(body, true);
                    }
                }
                _ => {}
            }
        }
    }

    /// A helper call or a bare path (`{{a.b}}`): `name` with its parameters.
    #[allow(clippy::too_many_arguments)]
    fn helper(
        &mut self,
        name: &Parameter,
        params: &[Parameter],
        hash: &std::collections::HashMap<String, Parameter>,
        block: bool,
        subexpression: bool,
        in_block: bool,
        tag: usize,
    ) {
        let is_call = block || subexpression || !params.is_empty() || !hash.is_empty();
        match name {
            Parameter::Path(p) if !is_call && !super::HELPERS.contains(&p.raw_text()) => {
                self.path(p, in_block, false, None, tag);
                return;
            }
            Parameter::Subexpression(s) => self.subexpression(s, in_block, tag),
            other => {
                let raw = other.as_name().unwrap_or_default().to_owned();
                self.sites.push(Site {
                    raw,
                    tag,
                    kind: SiteKind::Helper,
                });
            }
        }
        let helper_name = name.as_name().map(str::to_owned);
        self.params(params, hash, helper_name, in_block, tag);
    }

    fn params(
        &mut self,
        params: &[Parameter],
        hash: &std::collections::HashMap<String, Parameter>,
        helper: Option<String>,
        in_block: bool,
        tag: usize,
    ) {
        let is_default = helper.as_deref() == Some("default");
        for (i, p) in params.iter().enumerate() {
            let parent = helper.clone().map(|h| (h, Some(i)));
            self.param(p, in_block, is_default && i == 0, parent, tag);
        }
        // HashMap order is random: keep the walk deterministic.
        let mut keys: Vec<&String> = hash.keys().collect();
        keys.sort();
        for k in keys {
            let parent = helper.clone().map(|h| (h, None));
            self.param(&hash[k], in_block, false, parent, tag);
        }
    }

    fn param(
        &mut self,
        p: &Parameter,
        in_block: bool,
        optional: bool,
        parent: Option<(String, Option<usize>)>,
        tag: usize,
    ) {
        match p {
            Parameter::Path(path) => self.path(path, in_block, optional, parent, tag),
            Parameter::Subexpression(s) => self.subexpression(s, in_block, tag),
            _ => {}
        }
    }

    fn subexpression(&mut self, s: &Subexpression, in_block: bool, tag: usize) {
        if let TemplateElement::Expression(ht) = s.as_element() {
            self.helper(&ht.name, &ht.params, &ht.hash, false, true, in_block, tag);
        }
    }

    fn path(
        &mut self,
        p: &Path,
        in_block: bool,
        optional: bool,
        parent: Option<(String, Option<usize>)>,
        tag: usize,
    ) {
        let (segments, anchor) = path_segments(p);
        self.sites.push(Site {
            raw: p.raw_text().to_owned(),
            tag,
            kind: SiteKind::Ref {
                segments,
                anchor,
                in_block,
                optional,
                parent,
            },
        });
    }

    /// Byte offsets of every site in `src` (the text this walk's template was parsed from),
    /// in the order of [`Walk::sites`]; `None` where the scan could not place one.
    pub fn offsets(&self, src: &str) -> Vec<Option<usize>> {
        let tags = opening_tags(src);
        let mut cursors: Vec<usize> = tags.iter().map(|t| t.0).collect();
        self.sites
            .iter()
            .map(|site| {
                let &(start, end) = tags.get(site.tag)?;
                let cursor = &mut cursors[site.tag];
                let found = find_word(src, *cursor, end, &site.raw)
                    .or_else(|| find_word(src, start, end, &site.raw))?;
                *cursor = found + site.raw.len();
                Some(found)
            })
            .collect()
    }
}

/// Small extension to read a path's source text (`Path::raw` is crate-private).
pub(crate) trait RawText {
    fn raw_text(&self) -> &str;
}

impl RawText for Path {
    fn raw_text(&self) -> &str {
        match self {
            Path::Relative((_, raw)) => raw,
            Path::Local((_, _, raw)) => raw,
        }
    }
}

/// The named segments of a path and how it is anchored.
pub(crate) fn path_segments(p: &Path) -> (Vec<String>, Anchor) {
    match p {
        Path::Local((_, name, _)) => (vec![format!("@{name}")], Anchor::Local),
        Path::Relative((segs, raw)) => {
            let segments = segs
                .iter()
                .filter_map(|s| match s {
                    PathSeg::Named(n) => Some(n.clone()),
                    _ => None,
                })
                .collect();
            let anchor = if raw.starts_with("@root") {
                Anchor::Root
            } else if raw.contains("..") {
                Anchor::Up
            } else if raw == "this"
                || raw.starts_with("this.")
                || raw.starts_with("this/")
                || raw.starts_with("./")
            {
                Anchor::This
            } else if segs.iter().any(|s| !matches!(s, PathSeg::Named(_))) {
                // Some other parser rule we do not know about: do not guess.
                Anchor::Up
            } else {
                Anchor::Plain
            };
            (segments, anchor)
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || "-_$:@./[]".contains(c)
}

/// First occurrence of `word` in `src[from..to]` not glued to other path characters.
fn find_word(src: &str, from: usize, to: usize, word: &str) -> Option<usize> {
    if word.is_empty() || from >= to {
        return None;
    }
    let hay = src.get(from..to)?;
    let mut at = 0;
    while let Some(i) = hay[at..].find(word) {
        let pos = at + i;
        let before = hay[..pos].chars().next_back();
        let after = hay[pos + word.len()..].chars().next();
        if !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char) {
            return Some(from + pos);
        }
        at = pos + word.len().max(1);
        while !hay.is_char_boundary(at) {
            at += 1;
        }
    }
    None
}

/// Byte ranges of the tags that become AST elements (expressions, block openings, `else`
/// chains like `{{else if x}}`, raw blocks, partials, decorators), in document order.
/// Comments, closing tags, plain `{{else}}` and escaped `\{{` are skipped.
pub(crate) fn opening_tags(src: &str) -> Vec<(usize, usize)> {
    let bytes = src.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(rel) = src[i..].find("{{") {
        let start = i + rel;
        // A single backslash escapes the tag; two or more are literal backslashes.
        let backslashes = bytes[..start]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes == 1 {
            i = start + 2;
            continue;
        }
        let rest = &src[start..];
        if rest.starts_with("{{{{") {
            // raw block: the opening tag, then everything up to the closing `{{{{/x}}}}`
            let open_end = rest.find("}}}}").map_or(src.len(), |e| start + e + 4);
            tags.push((start, open_end));
            i = src[open_end..]
                .find("{{{{/")
                .and_then(|c| {
                    src[open_end + c..]
                        .find("}}}}")
                        .map(|e| open_end + c + e + 4)
                })
                .unwrap_or(src.len());
            continue;
        }
        if let Some(comment) = rest.strip_prefix("{{!--") {
            i = comment
                .find("--}}")
                .map_or(src.len(), |e| start + 5 + e + 4);
            continue;
        }
        if let Some(comment) = rest.strip_prefix("{{!") {
            i = comment.find("}}").map_or(src.len(), |e| start + 3 + e + 2);
            continue;
        }
        let end = tag_end(src, start + 2);
        i = end;
        let inner = src[start + 2..end]
            .trim_start_matches(|c: char| c.is_whitespace() || c == '~')
            .trim_end_matches('}')
            .trim_end()
            .trim_end_matches('~');
        if inner.starts_with('/') {
            continue;
        }
        let after_else = if let Some(r) = inner.strip_prefix('^') {
            Some(r)
        } else if let Some(r) = inner.strip_prefix("else") {
            (!r.starts_with(|c: char| c.is_alphanumeric() || "-_$:".contains(c))).then_some(r)
        } else {
            None
        };
        if after_else.is_some_and(|r| r.trim().is_empty()) {
            continue;
        }
        tags.push((start, end));
    }
    tags
}

/// End (exclusive) of the tag whose contents start at `from`: just after the first `}}`
/// outside a string literal (plus a third `}` for `{{{x}}}`).
fn tag_end(src: &str, from: usize) -> usize {
    let bytes = src.as_bytes();
    let mut quote: Option<u8> = None;
    let mut j = from;
    while j < bytes.len() {
        let b = bytes[j];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    j += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'"' || b == b'\'' {
                    quote = Some(b);
                } else if b == b'}' && bytes.get(j + 1) == Some(&b'}') {
                    let mut end = j + 2;
                    if bytes.get(end) == Some(&b'}') {
                        end += 1;
                    }
                    return end;
                }
            }
        }
        j += 1;
    }
    src.len()
}
