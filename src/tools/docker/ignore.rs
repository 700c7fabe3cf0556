//! `.dockerignore`: which files of a build context are not sent to the engine, with Docker's
//! own semantics (moby's `patternmatcher` and `ignorefile`), so a context ckflow sends holds
//! exactly what `docker build` would send.
//!
//! - One pattern per line; lines starting with `#` are comments, blank lines are skipped,
//!   surrounding spaces are trimmed, a UTF-8 BOM on the first line is dropped.
//! - Patterns are cleaned like paths (`./a//b/` is `a/b`, a leading `/` is dropped) and
//!   match paths relative to the context, with `/` as separator.
//! - `*` matches any run of characters but `/`, `?` one character but `/`, `[a-z]` and
//!   `[^a-z]` a class, `\x` the character `x`. `**` matches any number of directories
//!   (`**/x`, `a/**/b`, `a/**`).
//! - A pattern that matches a directory excludes everything under it.
//! - `!pattern` re-includes what an earlier pattern excluded; the last matching pattern
//!   wins.
//!
//! [`Matcher::excludes`] is moby's `MatchesOrParentMatches`, and
//! [`Matcher::must_descend`] its rule for walking into an excluded directory: only when an
//! exception pattern starts with that directory's path.

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern text, without `!`.
    text: String,
    /// `!pattern`: re-include what matches.
    exclusion: bool,
    kind: Kind,
}

/// How a pattern matches, as moby classifies it (the shortcuts give the same answers as
/// the general matcher except where moby's own shortcuts differ, which they reproduce).
#[derive(Debug, Clone)]
enum Kind {
    /// No wildcard: the path equals the pattern.
    Exact,
    /// `prefix**`: the path starts with the text before `**`.
    Prefix(String),
    /// `**suffix` without other wildcards: the path ends with the text after `**`, or
    /// `**/x` matches `x`.
    Suffix(String),
    /// Anything else.
    Glob(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A character that must be there.
    Lit(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    One,
    /// `**` in the middle: any run of whole directories, `(.*/)?`.
    AnyDirs,
    /// `**` at the end: anything, `.*`.
    AnyTail,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Read the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let (invert, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if invert && body.is_empty() {
                return Err(format!(
                    "line {}: `!` alone is not a pattern (write `!path`)",
                    i + 1
                ));
            }
            let mut cleaned = clean(body);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            patterns.push(
                Pattern::compile(cleaned, invert).map_err(|m| format!("line {}: {m}", i + 1))?,
            );
        }
        Ok(Matcher { patterns })
    }

    /// A matcher from patterns (each may start with `!`), as if they were lines of a file.
    pub fn from_patterns<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<Matcher, String> {
        let text: Vec<&str> = patterns.into_iter().collect();
        Matcher::parse(&text.join("\n"))
    }

    /// Add a `!path` exception (how `docker build` keeps the Dockerfile and `.dockerignore`
    /// in the context whatever the patterns say).
    pub fn keep(&mut self, path: &str) {
        if let Ok(p) = Pattern::compile(clean(path), true) {
            self.patterns.push(p);
        }
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded: the last pattern
    /// that matches it or one of its parent directories decides.
    pub fn excludes(&self, path: &str) -> bool {
        let path = clean(path);
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for p in &self.patterns {
            // An inclusion cannot change an excluded path, nor an exception an included one.
            if p.exclusion != excluded {
                continue;
            }
            let mut hit = p.matches(&path);
            if !hit {
                for i in 1..=parents.len() {
                    if p.matches(&parents[..i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// For an excluded directory: whether some exception pattern starts with its path, so
    /// that files below it may still be included and the walk must go in.
    pub fn must_descend(&self, dir: &str) -> bool {
        let dir_slash = format!("{}/", clean(dir));
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&dir_slash))
    }
}

impl Pattern {
    fn compile(text: String, exclusion: bool) -> Result<Pattern, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut toks = Vec::new();
        // moby's classification: exact until a wildcard; `**` at the very end of an exact
        // pattern makes a prefix match, `**` at the very start a suffix match.
        #[derive(PartialEq)]
        enum K {
            Exact,
            Prefix,
            Suffix,
            Glob,
        }
        let mut kind = K::Exact;
        let mut i = 0;
        while i < chars.len() {
            let at_start = i == 0;
            let c = chars[i];
            i += 1;
            match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        if kind == K::Exact {
                            kind = K::Prefix;
                        } else {
                            kind = K::Glob;
                        }
                        toks.push(Tok::AnyTail);
                    } else {
                        kind = K::Glob;
                        toks.push(Tok::AnyDirs);
                    }
                    if at_start {
                        kind = K::Suffix;
                    }
                }
                '*' => {
                    kind = K::Glob;
                    toks.push(Tok::Star);
                }
                '?' => {
                    kind = K::Glob;
                    toks.push(Tok::One);
                }
                '\\' => {
                    // The shortcuts compare the raw text, so an escape needs the matcher.
                    kind = K::Glob;
                    match chars.get(i) {
                        Some(&next) => {
                            i += 1;
                            toks.push(Tok::Lit(next));
                        }
                        None => toks.push(Tok::Lit('\\')),
                    }
                }
                '[' => {
                    kind = K::Glob;
                    let (tok, used) = class(&chars[i..])
                        .ok_or_else(|| format!("`{text}`: a `[` is not closed by `]`"))?;
                    i += used;
                    toks.push(tok);
                }
                other => toks.push(Tok::Lit(other)),
            }
        }
        let kind = match kind {
            K::Exact => Kind::Exact,
            K::Prefix => Kind::Prefix(text[..text.len() - 2].to_owned()),
            // `**` then only literal characters; anything else was demoted to a glob
            K::Suffix if toks[1..].iter().all(|t| matches!(t, Tok::Lit(_))) => {
                Kind::Suffix(text[2..].to_owned())
            }
            K::Suffix | K::Glob => Kind::Glob(toks),
        };
        Ok(Pattern {
            text,
            exclusion,
            kind,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..])
            }
            Kind::Glob(toks) => {
                let p: Vec<char> = path.chars().collect();
                glob(toks, &p)
            }
        }
    }
}

/// Parse a class after its `[`; gives the token and how many characters it used (with `]`).
fn class(chars: &[char]) -> Option<(Tok, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        i += 1;
        if c == ']' && !first {
            return Some((Tok::Class { negated, ranges }, i));
        }
        first = false;
        if c == '\\' {
            c = *chars.get(i)?;
            i += 1;
        }
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let mut hi = chars[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *chars.get(i)?;
                i += 1;
            }
            ranges.push((c, hi));
        } else {
            ranges.push((c, c));
        }
    }
}

/// Whether `toks` match all of `p` (backtracking; patterns and paths are short).
fn glob(toks: &[Tok], p: &[char]) -> bool {
    let Some((t, rest)) = toks.split_first() else {
        return p.is_empty();
    };
    match t {
        Tok::Lit(c) => p.first() == Some(c) && glob(rest, &p[1..]),
        Tok::One => p.first().is_some_and(|&c| c != '/') && glob(rest, &p[1..]),
        Tok::Class { negated, ranges } => {
            p.first()
                .is_some_and(|&c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                && glob(rest, &p[1..])
        }
        Tok::Star => {
            let run = p.iter().take_while(|&&c| c != '/').count();
            (0..=run).rev().any(|n| glob(rest, &p[n..]))
        }
        Tok::AnyTail => true,
        Tok::AnyDirs => {
            // zero directories, or everything up to and including any later `/`
            glob(rest, p)
                || p.iter()
                    .enumerate()
                    .filter(|&(_, &c)| c == '/')
                    .any(|(i, _)| glob(rest, &p[i + 1..]))
        }
    }
}

/// Go's `filepath.Clean` for `/`-separated paths: no `.` components, no doubled or
/// trailing `/`, `..` folded where it can be; empty becomes `.`.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|&l| l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_go_filepath_clean() {
        for (i, o) in [
            ("", "."),
            ("a/b/", "a/b"),
            ("./a//b/./c", "a/b/c"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("/", "/"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }

    #[test]
    fn kinds() {
        let k = |s: &str| Pattern::compile(s.into(), false).unwrap().kind;
        assert!(matches!(k("a/b"), Kind::Exact));
        assert!(matches!(k("a/**"), Kind::Prefix(p) if p == "a/"));
        assert!(matches!(k("**/a"), Kind::Suffix(s) if s == "/a"));
        assert!(matches!(k("**"), Kind::Suffix(s) if s.is_empty()));
        assert!(matches!(k("**/*.go"), Kind::Glob(_)));
        assert!(matches!(k("a/**/b"), Kind::Glob(_)));
    }
}
