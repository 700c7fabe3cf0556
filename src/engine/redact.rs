//! Keeping secret input values out of everything a run shows: events, output lines, error
//! messages and the report. The engine applies one [`Redactor`] where events and the
//! report are produced; run state keeps the real values (a later step may need the token).

use serde_json::Value;

use crate::tools::ToolError;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Replaces every occurrence of the secret values with `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor for these values (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The secret values.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Redact a string in place.
    pub fn string(&self, s: &mut String) {
        if self.secrets.iter().any(|x| s.contains(x.as_str())) {
            let mut out = std::mem::take(s);
            for x in &self.secrets {
                if out.contains(x.as_str()) {
                    out = out.replace(x.as_str(), MASK);
                }
            }
            *s = out;
        }
    }

    /// A redacted copy of a string.
    pub fn str(&self, s: &str) -> String {
        let mut s = s.to_owned();
        self.string(&mut s);
        s
    }

    /// Redact every string (and object key) inside a JSON value, in place.
    pub fn value(&self, v: &mut Value) {
        if self.is_empty() {
            return;
        }
        match v {
            Value::String(s) => self.string(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(map) => {
                if map
                    .keys()
                    .any(|k| self.secrets.iter().any(|x| k.contains(x.as_str())))
                {
                    let old = std::mem::take(map);
                    for (mut k, mut x) in old {
                        self.string(&mut k);
                        self.value(&mut x);
                        map.insert(k, x);
                    }
                } else {
                    map.values_mut().for_each(|x| self.value(x));
                }
            }
            Value::Number(n) => {
                // A numeric secret (a PIN) is still a secret.
                let text = n.to_string();
                if self.secrets.contains(&text) {
                    *v = Value::String(MASK.into());
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    /// Redact a tool error's message, code and details in place.
    pub fn error(&self, e: &mut ToolError) {
        if self.is_empty() {
            return;
        }
        self.string(&mut e.message);
        if let Some(c) = &mut e.code {
            self.string(c);
        }
        if let Some(d) = &mut e.details {
            self.value(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_longest_first_everywhere() {
        let r = Redactor::new(["abc".to_owned(), "abcdef".to_owned(), String::new()]);
        assert_eq!(r.str("x abcdef y abc"), "x *** y ***");
        let mut v = json!({"k": ["abcdef", {"abc": 1}], "n": 7});
        r.value(&mut v);
        assert_eq!(v, json!({"k": ["***", {"***": 1}], "n": 7}));
    }

    #[test]
    fn numeric_secrets() {
        let r = Redactor::new(["1234".to_owned()]);
        let mut v = json!({"pin": 1234, "other": 12345});
        r.value(&mut v);
        assert_eq!(v, json!({"pin": "***", "other": 12345}));
    }
}
