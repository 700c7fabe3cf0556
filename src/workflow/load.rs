//! Loading: workflow text (YAML or JSON) into a JSON value where every node keeps its place.
//!
//! The YAML event parser (yaml-rust2) is driven by hand rather than through serde so that
//! each node's line and column are recorded against its JSON pointer (`/steps/3/with/tag`).
//! Validation then reports schema and semantic problems at the right place. The builder is
//! iterative and bounded (size, depth, node count), so no input can overflow the stack or
//! exhaust memory through alias expansion. YAML-only shapes that JSON cannot express are
//! turned into diagnostics here: duplicate keys, non-string keys and the unquoted-template
//! mistake (`tag: {{inputs.tag}}`, which YAML reads as a nested mapping).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diagnostic::{Code, Diagnostic, SourceFile};

/// Largest workflow file accepted, in bytes.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 128;
/// Most nodes a document may expand to (aliases included).
pub const MAX_NODES: usize = 2_000_000;

/// A place in the source text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Byte offset.
    pub offset: usize,
    /// Byte length of the node's first token (at least 1).
    pub len: usize,
}

/// Where a node and, for a mapping entry, its key stand.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSpan {
    /// The value's place.
    pub value: Pos,
    /// The key's place, for mapping entries.
    pub key: Option<Pos>,
}

/// A loaded document: the value, the places of its nodes, and the source.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The source text, shared with diagnostics.
    pub source: Arc<SourceFile>,
    /// The document as JSON.
    pub value: Value,
    /// JSON pointer (`""` for the root) -> place.
    pub spans: HashMap<String, NodeSpan>,
    /// Problems found while loading that do not stop validation (duplicate keys, unquoted
    /// templates): reported together with everything validation finds.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// The place of the node at `pointer`, or of its nearest ancestor that has one.
    pub fn pos(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(s) = self.spans.get(p) {
                return s.value;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Pos::default(),
            }
        }
    }

    /// The place of the key of the entry at `pointer` (its value's place if it has no key).
    pub fn key_pos(&self, pointer: &str) -> Pos {
        match self.spans.get(pointer) {
            Some(NodeSpan { key: Some(k), .. }) => *k,
            _ => self.pos(pointer),
        }
    }

    /// The human path (`steps[3].with.tag`) of a JSON pointer in this document.
    pub fn path_of(&self, pointer: &str) -> String {
        pointer_to_path(&self.value, pointer)
    }

    /// A diagnostic at the value of `pointer`.
    pub fn diag(&self, code: Code, pointer: &str, message: impl Into<String>) -> Diagnostic {
        let pos = self.pos(pointer);
        self.diag_at(code, pos, pointer, message)
    }

    /// A diagnostic at the key of `pointer`.
    pub fn diag_key(&self, code: Code, pointer: &str, message: impl Into<String>) -> Diagnostic {
        let pos = self.key_pos(pointer);
        self.diag_at(code, pos, pointer, message)
    }

    /// A diagnostic at an explicit place.
    pub fn diag_at(
        &self,
        code: Code,
        pos: Pos,
        pointer: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            file: self.source.name.clone(),
            line: pos.line,
            column: pos.column,
            path: self.path_of(pointer),
            help: None,
            offset: pos.offset,
            len: pos.len.max(1),
            source: Some(self.source.clone()),
        }
    }
}

/// Escape one JSON-pointer segment.
pub fn escape_segment(s: &str) -> String {
    if s.contains(['~', '/']) {
        s.replace('~', "~0").replace('/', "~1")
    } else {
        s.to_owned()
    }
}

fn unescape_segment(s: &str) -> String {
    if s.contains('~') {
        s.replace("~1", "/").replace("~0", "~")
    } else {
        s.to_owned()
    }
}

/// Turn `/steps/3/with/tag` into `steps[3].with.tag`, using the value to tell array indices
/// from keys.
pub fn pointer_to_path(root: &Value, pointer: &str) -> String {
    let mut out = String::new();
    let mut cur = Some(root);
    for raw in pointer.split('/').skip(1) {
        let seg = unescape_segment(raw);
        match cur {
            Some(Value::Array(a)) => {
                out.push('[');
                out.push_str(&seg);
                out.push(']');
                cur = seg.parse::<usize>().ok().and_then(|i| a.get(i));
            }
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                let plain = !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    out.push_str(&seg);
                } else {
                    out.push_str(&serde_json::to_string(&seg).unwrap_or_default());
                }
                cur = match other {
                    Some(Value::Object(m)) => m.get(&seg),
                    _ => None,
                };
            }
        }
    }
    out
}

/// Load workflow text. `name` is what diagnostics call the file.
pub fn load_str(name: &str, text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let source = Arc::new(SourceFile {
        name: name.to_owned(),
        text: text.to_owned(),
    });
    load_source(source)
}

/// Load workflow bytes (a file's content): checks size and UTF-8 first.
pub fn load_bytes(name: &str, bytes: &[u8]) -> Result<Loaded, Vec<Diagnostic>> {
    let whole = |code, message: String, line, column, offset| Diagnostic {
        code,
        message,
        file: name.to_owned(),
        line,
        column,
        path: String::new(),
        help: None,
        offset,
        len: 1,
        source: None,
    };
    if bytes.len() > MAX_BYTES {
        return Err(vec![whole(
            Code::TooLarge,
            format!(
                "the file is {} bytes; workflow files may be at most {} bytes",
                bytes.len(),
                MAX_BYTES
            ),
            1,
            1,
            0,
        )]);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(name, text),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
            Err(vec![whole(
                Code::Syntax,
                format!(
                    "the file is not UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                ),
                line,
                column,
                e.valid_up_to(),
            )])
        }
    }
}

/// Load from a shared source.
pub fn load_source(source: Arc<SourceFile>) -> Result<Loaded, Vec<Diagnostic>> {
    let text = source.text.as_str();
    let diag = |code, message: String, pos: Pos| Diagnostic {
        code,
        message,
        file: source.name.clone(),
        line: pos.line,
        column: pos.column,
        path: String::new(),
        help: None,
        offset: pos.offset,
        len: pos.len.max(1),
        source: Some(source.clone()),
    };
    if text.len() > MAX_BYTES {
        return Err(vec![diag(
            Code::TooLarge,
            format!(
                "the text is {} bytes; at most {} are accepted",
                text.len(),
                MAX_BYTES
            ),
            Pos {
                line: 1,
                column: 1,
                offset: 0,
                len: 1,
            },
        )]);
    }
    if text.trim().is_empty() {
        return Err(vec![diag(
            Code::Syntax,
            "the workflow is empty".into(),
            Pos {
                line: 1,
                column: 1,
                offset: 0,
                len: 1,
            },
        )]);
    }
    if let Some((offset, c)) = text
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        let line = text[..offset].matches('\n').count() + 1;
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..offset].chars().count() + 1;
        return Err(vec![diag(
            Code::Syntax,
            format!(
                "the file holds binary data: control character U+{:04X} is not allowed in YAML or JSON",
                u32::from(c)
            ),
            Pos {
                line,
                column,
                offset,
                len: c.len_utf8(),
            },
        )]);
    }
    let mut b = Builder::new(text);
    let mut parser = Parser::new_from_str(text);
    loop {
        let (ev, mark) = match parser.next_token() {
            Ok(x) => x,
            Err(e) => {
                let pos = b.pos(e.marker(), 1);
                let mut d = if e.info().contains("recursion limit") {
                    diag(
                        Code::TooLarge,
                        format!("the document nests too deeply ({})", e.info()),
                        pos,
                    )
                } else {
                    diag(
                        Code::Syntax,
                        format!("not valid YAML or JSON: {}", e.info()),
                        pos,
                    )
                };
                let line_text = text.lines().nth(pos.line.saturating_sub(1)).unwrap_or("");
                if line_text.contains("{{") {
                    d.help = Some(
                        "a value that starts with a template must be quoted: \"{{...}}\"".into(),
                    );
                }
                b.diags.push(d);
                break;
            }
        };
        if matches!(ev, Event::StreamEnd) {
            break;
        }
        b.on_event(ev, mark);
        if b.fatal {
            break;
        }
    }
    let b_fatal = b.fatal;
    let Builder {
        diags, root, spans, ..
    } = b;
    let mut diags: Vec<Diagnostic> = diags
        .into_iter()
        .map(|mut d| {
            if d.source.is_none() {
                d.source = Some(source.clone());
                d.file = source.name.clone();
            }
            d
        })
        .collect();
    let Some(value) = root else {
        if diags.is_empty() {
            diags.push(diag(
                Code::Syntax,
                "the workflow is empty".into(),
                Pos {
                    line: 1,
                    column: 1,
                    offset: 0,
                    len: 1,
                },
            ));
        }
        return Err(diags);
    };
    let mut value = value;
    strip_template_markers(&mut value);
    let mut loaded = Loaded {
        source: source.clone(),
        value,
        spans,
        diagnostics: Vec::new(),
    };
    for d in &mut diags {
        if d.path.starts_with('/') {
            d.path = loaded.path_of(&d.path);
        }
    }
    if b_fatal {
        return Err(diags);
    }
    loaded.diagnostics = diags;
    Ok(loaded)
}

enum Frame {
    Seq {
        items: Vec<Value>,
        pointer: String,
        start: Pos,
        anchor: usize,
    },
    Map {
        map: Map<String, Value>,
        pointer: String,
        start: Pos,
        anchor: usize,
        /// The key waiting for its value, with its place.
        key: Option<(KeySlot, Pos)>,
        /// Keys merged in through `<<`, which explicit keys may override.
        merged: Vec<String>,
    },
}

enum KeySlot {
    /// A usable string key.
    Str(String),
    /// A key that is not a string (already reported); for the unquoted-template shape,
    /// the template text it stands for.
    Bad(Option<String>),
    /// `<<`: the value is merged.
    Merge,
}

struct Builder<'a> {
    text: &'a str,
    stack: Vec<Frame>,
    /// Depth of nested complex keys being skipped (a mapping used as a key).
    key_depth: usize,
    key_value: Vec<Value>,
    root: Option<Value>,
    spans: HashMap<String, NodeSpan>,
    anchors: HashMap<usize, Value>,
    diags: Vec<Diagnostic>,
    nodes: usize,
    documents: usize,
    fatal: bool,
    /// Line starts, for turning character markers into byte offsets.
    line_starts: Vec<usize>,
}

impl<'a> Builder<'a> {
    fn new(text: &'a str) -> Builder<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Builder {
            text,
            stack: Vec::new(),
            key_depth: 0,
            key_value: Vec::new(),
            root: None,
            spans: HashMap::new(),
            anchors: HashMap::new(),
            diags: Vec::new(),
            nodes: 0,
            documents: 0,
            fatal: false,
            line_starts,
        }
    }

    /// Convert a parser marker (0-based line index from 1, column in characters from 0)
    /// into a [`Pos`] with a byte offset.
    fn pos(&self, m: &Marker, len: usize) -> Pos {
        let line = m.line().max(1);
        let column = m.col() + 1;
        let start = self
            .line_starts
            .get(line - 1)
            .copied()
            .unwrap_or(self.text.len());
        let rest = &self.text[start.min(self.text.len())..];
        let byte_in_line: usize = rest.chars().take(m.col()).map(char::len_utf8).sum();
        Pos {
            line,
            column,
            offset: start + byte_in_line,
            len: len.max(1),
        }
    }

    fn fail(&mut self, code: Code, message: String, pos: Pos) {
        self.diags.push(Diagnostic {
            code,
            message,
            file: String::new(),
            line: pos.line,
            column: pos.column,
            path: String::new(),
            help: None,
            offset: pos.offset,
            len: pos.len,
            source: None,
        });
        self.fatal = true;
    }

    fn child_pointer(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq { items, pointer, .. }) => Some(format!("{pointer}/{}", items.len())),
            Some(Frame::Map {
                key: Some((KeySlot::Str(k), _)),
                pointer,
                ..
            }) => Some(format!("{pointer}/{}", escape_segment(k))),
            Some(Frame::Map { key: Some(_), .. }) => None,
            // In key position: keys get no pointer of their own.
            Some(Frame::Map { key: None, .. }) => None,
        }
    }

    fn in_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn count_node(&mut self, pos: Pos) -> bool {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.fail(
                Code::TooLarge,
                format!(
                    "the document expands to more than {MAX_NODES} nodes (are aliases nested?)"
                ),
                pos,
            );
            return false;
        }
        true
    }

    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::StreamStart | Event::Nothing | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    let pos = self.pos(&mark, 3);
                    self.fail(
                        Code::Syntax,
                        "a workflow file holds one document; a second one starts here".into(),
                        pos,
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let len = text.len() + if style == TScalarStyle::Plain { 0 } else { 2 };
                let pos = self.pos(&mark, len);
                if !self.count_node(pos) {
                    return;
                }
                if self.key_depth > 0 {
                    let v = scalar_value(&text, style, tag.as_ref());
                    self.complete_in_key(v, anchor);
                    return;
                }
                if self.in_key_position() {
                    let slot = if text == "<<" && style == TScalarStyle::Plain {
                        KeySlot::Merge
                    } else {
                        match scalar_value(&text, style, tag.as_ref()) {
                            Value::String(s) => KeySlot::Str(s),
                            // Numbers, booleans and null as keys: use their text, as YAML
                            // users expect (`200: ok`), keeping JSON's string keys.
                            Value::Null => {
                                KeySlot::Str(if text.is_empty() { "null".into() } else { text })
                            }
                            other => KeySlot::Str(other.to_string()),
                        }
                    };
                    self.set_key(slot, pos);
                    return;
                }
                let v = scalar_value(&text, style, tag.as_ref());
                self.complete(v, pos, anchor);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                let pos = self.pos(&mark, 1);
                if !self.count_node(pos) {
                    return;
                }
                if self.stack.len() + self.key_depth >= MAX_DEPTH {
                    self.fail(
                        Code::TooLarge,
                        format!("the document nests deeper than {MAX_DEPTH} levels"),
                        pos,
                    );
                    return;
                }
                if self.key_depth > 0 || self.in_key_position() {
                    // A collection used as a mapping key: the unquoted template shape.
                    self.key_depth += 1;
                    self.key_value.push(if is_map {
                        Value::Object(Map::new())
                    } else {
                        Value::Array(Vec::new())
                    });
                    return;
                }
                let pointer = self.child_pointer().unwrap_or_default();
                self.stack.push(if is_map {
                    Frame::Map {
                        map: Map::new(),
                        pointer,
                        start: pos,
                        anchor,
                        key: None,
                        merged: Vec::new(),
                    }
                } else {
                    Frame::Seq {
                        items: Vec::new(),
                        pointer,
                        start: pos,
                        anchor,
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if self.key_depth > 0 {
                    self.key_depth -= 1;
                    let v = self.key_value.pop().unwrap_or(Value::Null);
                    self.complete_in_key(v, 0);
                    return;
                }
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let (v, start, anchor) = match frame {
                    Frame::Seq {
                        items,
                        start,
                        anchor,
                        ..
                    } => (Value::Array(items), start, anchor),
                    Frame::Map {
                        map, start, anchor, ..
                    } => (Value::Object(map), start, anchor),
                };
                self.complete(v, start, anchor);
            }
            Event::Alias(id) => {
                let pos = self.pos(&mark, 1);
                let Some(v) = self.anchors.get(&id).cloned() else {
                    self.fail(Code::Syntax, "an alias names an unknown anchor".into(), pos);
                    return;
                };
                let size = count_nodes(&v);
                self.nodes += size;
                if !self.count_node(pos) {
                    return;
                }
                if self.key_depth > 0 {
                    self.complete_in_key(v, 0);
                } else if self.in_key_position() {
                    let slot = match v {
                        Value::String(s) => KeySlot::Str(s),
                        _ => KeySlot::Bad(None),
                    };
                    self.set_key(slot, pos);
                } else {
                    self.complete(v, pos, 0);
                }
            }
        }
    }

    /// A value finished inside a complex key.
    fn complete_in_key(&mut self, v: Value, _anchor: usize) {
        if self.key_depth == 0 {
            // The complex key itself is complete.
            let pos = match self.stack.last() {
                Some(Frame::Map { .. }) => self.last_pos(),
                _ => Pos::default(),
            };
            let slot = self.complex_key(v, pos);
            self.set_key(slot, pos);
            return;
        }
        match self.key_value.last_mut() {
            Some(Value::Array(a)) => a.push(v),
            Some(Value::Object(m)) => {
                // Inside a key we only need the shape: store alternating key/value as
                // "k" -> v, with the key stringified.
                let pending = m.remove("\u{0}pending");
                match pending {
                    None => {
                        let k = match &v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        m.insert("\u{0}pending".into(), Value::String(k));
                    }
                    Some(Value::String(k)) => {
                        m.insert(k, v);
                    }
                    Some(_) => {}
                }
            }
            _ => {}
        }
    }

    fn last_pos(&self) -> Pos {
        match self.stack.last() {
            Some(Frame::Map { start, .. }) | Some(Frame::Seq { start, .. }) => *start,
            None => Pos::default(),
        }
    }

    /// A mapping used as a key: `{{inputs.tag}}` unquoted is read by YAML as the mapping
    /// `{ {inputs.tag: null}: null }`. Recognise it and say "quote the template".
    fn complex_key(&mut self, v: Value, pos: Pos) -> KeySlot {
        // The key is the inner mapping `{inputs.tag: null}`; the outer mapping is the frame on
        // top of the stack. Record a hint; the frame's value will become the template text.
        if let Value::Object(inner) = &v
            && inner.len() == 1
            && inner.values().all(Value::is_null)
        {
            let expr = inner.keys().next().cloned().unwrap_or_default();
            let template = format!("{{{{{expr}}}}}");
            let pointer = match self.stack.last() {
                Some(Frame::Map { pointer, .. }) => pointer.clone(),
                _ => String::new(),
            };
            self.diags.push(Diagnostic {
                code: Code::UnquotedTemplate,
                message: format!("YAML read the unquoted template {template} as a mapping"),
                file: String::new(),
                line: pos.line,
                column: pos.column,
                path: pointer,
                help: Some(format!("quote the template: \"{template}\"")),
                offset: pos.offset,
                len: template.len(),
                source: None,
            });
            return KeySlot::Bad(Some(template));
        }
        self.diags.push(Diagnostic {
            code: Code::Schema,
            message: "mapping keys must be plain strings".into(),
            file: String::new(),
            line: pos.line,
            column: pos.column,
            path: String::new(),
            help: None,
            offset: pos.offset,
            len: pos.len.max(1),
            source: None,
        });
        KeySlot::Bad(None)
    }

    fn set_key(&mut self, slot: KeySlot, pos: Pos) {
        let mut dup = None;
        if let Some(Frame::Map {
            map,
            key,
            merged,
            pointer,
            ..
        }) = self.stack.last_mut()
        {
            if let KeySlot::Str(k) = &slot
                && map.contains_key(k)
                && !merged.contains(k)
            {
                dup = Some((k.clone(), format!("{pointer}/{}", escape_segment(k))));
            }
            *key = Some((slot, pos));
        }
        if let Some((k, pointer)) = dup {
            self.diags.push(Diagnostic {
                code: Code::DuplicateKey,
                message: format!("the key `{k}` appears twice in this mapping"),
                file: String::new(),
                line: pos.line,
                column: pos.column,
                path: pointer,
                help: Some("YAML keeps only one of them; remove or rename the other".into()),
                offset: pos.offset,
                len: pos.len,
                source: None,
            });
        }
    }

    /// A node is complete: record its place and put it into its parent.
    fn complete(&mut self, v: Value, pos: Pos, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, v.clone());
        }
        let pointer = self.child_pointer();
        match self.stack.last_mut() {
            None => {
                self.spans.insert(
                    String::new(),
                    NodeSpan {
                        value: pos,
                        key: None,
                    },
                );
                self.root = Some(v);
            }
            Some(Frame::Seq { items, .. }) => {
                if let Some(p) = pointer {
                    self.spans.insert(
                        p,
                        NodeSpan {
                            value: pos,
                            key: None,
                        },
                    );
                }
                items.push(v);
            }
            Some(Frame::Map {
                map, key, merged, ..
            }) => {
                let Some((slot, kpos)) = key.take() else {
                    return;
                };
                match slot {
                    KeySlot::Str(k) => {
                        if let Some(p) = pointer {
                            self.spans.insert(
                                p,
                                NodeSpan {
                                    value: pos,
                                    key: Some(kpos),
                                },
                            );
                        }
                        merged.retain(|m| m != &k);
                        map.insert(k, v);
                    }
                    KeySlot::Merge => {
                        let sources = match v {
                            Value::Array(a) => a,
                            other => vec![other],
                        };
                        for s in sources {
                            if let Value::Object(m) = s {
                                for (k, val) in m {
                                    if !map.contains_key(&k) {
                                        merged.push(k.clone());
                                        map.insert(k, val);
                                    }
                                }
                            }
                        }
                    }
                    KeySlot::Bad(template) => {
                        // The unquoted-template case: the outer mapping's value is null and
                        // the whole mapping stands for the template string. Mark it so the
                        // mapping becomes that string again and later checks see the template.
                        map.insert(
                            "\u{0}template".into(),
                            template.map(Value::String).unwrap_or(Value::Null),
                        );
                    }
                }
            }
        }
    }
}

/// Replace the unquoted-template placeholders (mappings holding only the marker key) by a
/// string so that later checks do not report the same mistake twice.
pub(crate) fn strip_template_markers(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() == 1
                && let Some(t) = m.get("\u{0}template")
            {
                *v = match t {
                    Value::String(s) => Value::String(s.clone()),
                    _ => Value::String(String::new()),
                };
                return;
            }
            m.shift_remove("\u{0}template");
            for (_, x) in m.iter_mut() {
                strip_template_markers(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_template_markers),
        _ => {}
    }
}

fn count_nodes(v: &Value) -> usize {
    let mut n = 0;
    let mut stack = vec![v];
    while let Some(x) = stack.pop() {
        n += 1;
        match x {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    n
}

/// Resolve a scalar the way YAML 1.2's core schema does (plain scalars only).
fn scalar_value(text: &str, style: TScalarStyle, tag: Option<&yaml_rust2::parser::Tag>) -> Value {
    if let Some(t) = tag
        && t.suffix == "str"
    {
        return Value::String(text.to_owned());
    }
    if style != TScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.' {
        match Yaml::from_str(text) {
            Yaml::Integer(i) => return Value::from(i),
            Yaml::Real(r) => {
                if let Ok(f) = r.parse::<f64>()
                    && f.is_finite()
                    && let Some(n) = serde_json::Number::from_f64(f)
                {
                    return Value::Number(n);
                }
            }
            _ => {}
        }
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_pointers() {
        let l = load_str(
            "w.yaml",
            "a: 1\nsteps:\n  - id: x\n    with: {tag: \"é{{y}}\"}\n",
        )
        .unwrap();
        let p = l.pos("/steps/0/with/tag");
        assert_eq!((p.line, p.column), (4, 17));
        assert_eq!(&l.source.text[p.offset..p.offset + 1], "\"");
        assert_eq!(l.key_pos("/steps/0/id").line, 3);
        assert_eq!(l.path_of("/steps/0/with/tag"), "steps[0].with.tag");
        assert_eq!(l.value["a"], Value::from(1));
    }

    #[test]
    fn multibyte_offsets_are_bytes() {
        let l = load_str("w.yaml", "é: ü\nb: 2\n").unwrap();
        let p = l.pos("/b");
        assert_eq!((p.line, p.column), (2, 4));
        assert_eq!(&l.source.text[p.offset..p.offset + 1], "2");
    }

    #[test]
    fn json_is_accepted() {
        let l = load_str("w.json", r#"{"a": [1, 2.5, "x", true, null]}"#).unwrap();
        assert_eq!(l.value["a"], serde_json::json!([1, 2.5, "x", true, null]));
    }

    #[test]
    fn unquoted_template_is_named() {
        let l = load_str("w.yaml", "with:\n  tag: {{inputs.tag}}\n").unwrap();
        let e = &l.diagnostics;
        assert_eq!(e[0].code, Code::UnquotedTemplate);
        assert_eq!(e[0].path, "with.tag");
        assert_eq!(
            l.value["with"]["tag"],
            Value::String("{{inputs.tag}}".into())
        );
        assert!(e[0].help.as_deref().unwrap().contains("\"{{inputs.tag}}\""));
        assert_eq!(e[0].line, 2);
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let e = load_str("w.yaml", "a: 1\na: 2\n").unwrap().diagnostics;
        assert_eq!(e[0].code, Code::DuplicateKey);
        assert_eq!(e[0].line, 2);
    }

    #[test]
    fn merge_keys_work() {
        let l = load_str("w.yaml", "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n").unwrap();
        assert_eq!(l.value["c"], serde_json::json!({"x": 1, "y": 3}));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(10_000) + &"]".repeat(10_000);
        let e = load_str("w.yaml", &text).unwrap_err();
        assert_eq!(e[0].code, Code::TooLarge);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            t.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = load_str("w.yaml", &t).unwrap_err();
        assert_eq!(e[0].code, Code::TooLarge);
    }

    #[test]
    fn second_document_is_refused() {
        let e = load_str("w.yaml", "a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e[0].code, Code::Syntax);
    }
}
