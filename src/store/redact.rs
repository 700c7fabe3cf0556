//! Keeping secret inputs out of the store. The engine hands the store values it has already
//! redacted; [`redact`] is the same rule in one call, for the input map of a run record: the
//! secret inputs become `***`, and their values are masked wherever else they appear (another
//! input that embeds the token, a number that is a PIN).

use serde_json::{Map, Value};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// A copy of `values` with the inputs named in `secret_names` replaced by `***`, and the
/// values of those inputs masked inside every other string (and object key) as well.
/// Secret values that are empty are left alone elsewhere (masking "" would mask everything).
pub fn redact<S: AsRef<str>>(
    values: &Map<String, Value>,
    secret_names: &[S],
) -> Map<String, Value> {
    let mut secrets: Vec<String> = Vec::new();
    for name in secret_names {
        if let Some(v) = values.get(name.as_ref()) {
            collect_secret_text(v, &mut secrets);
        }
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    secrets.dedup();

    values
        .iter()
        .map(|(k, v)| {
            let secret = secret_names.iter().any(|n| n.as_ref() == k);
            let v = if secret {
                Value::String(MASK.to_owned())
            } else {
                mask_value(v, &secrets)
            };
            (k.clone(), v)
        })
        .collect()
}

/// The texts of a secret value: a string, the decimal form of a number, and recursively the
/// items of an array or object.
fn collect_secret_text(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| collect_secret_text(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_secret_text(i, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

fn mask_str(s: &str, secrets: &[String]) -> String {
    let mut out = s.to_owned();
    for x in secrets {
        if out.contains(x.as_str()) {
            out = out.replace(x.as_str(), MASK);
        }
    }
    out
}

fn mask_value(v: &Value, secrets: &[String]) -> Value {
    if secrets.is_empty() {
        return v.clone();
    }
    match v {
        Value::String(s) => Value::String(mask_str(s, secrets)),
        Value::Number(n) if secrets.iter().any(|x| *x == n.to_string()) => {
            Value::String(MASK.to_owned())
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| mask_value(i, secrets)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, x)| (mask_str(k, secrets), mask_value(x, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_by_name_and_by_value() {
        let values = json!({
            "token": "s3cr3t-tok",
            "pin": 4711,
            "url": "https://user:s3cr3t-tok@example.com",
            "list": ["a", "s3cr3t-tok"],
            "nested": {"s3cr3t-tok": 4711},
            "tag": "latest",
        });
        let out = redact(values.as_object().unwrap(), &["token", "pin"]);
        assert_eq!(
            Value::Object(out),
            json!({
                "token": "***",
                "pin": "***",
                "url": "https://user:***@example.com",
                "list": ["a", "***"],
                "nested": {"***": "***"},
                "tag": "latest",
            })
        );
    }

    #[test]
    fn empty_and_absent_secrets_change_nothing_else() {
        let values = json!({"token": "", "tag": "latest"});
        let out = redact(values.as_object().unwrap(), &["token", "missing"]);
        assert_eq!(Value::Object(out), json!({"token": "***", "tag": "latest"}));
    }
}
