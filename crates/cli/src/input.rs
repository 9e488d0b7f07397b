//! The module's input: a YAML or JSON file (or `-` for stdin), with `metadata {name,
//! namespace}` set like the operator sets them from the Transform.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// Reads the input document. `None` is an empty input (`{}`).
pub fn read(path: Option<&Path>) -> anyhow::Result<Value> {
    let Some(path) = path else {
        return Ok(json!({}));
    };
    let (text, name) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the input from stdin")?;
        (text, "stdin".to_owned())
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading input {}", path.display()))?;
        (text, path.display().to_string())
    };
    parse(&text).with_context(|| format!("input {name}"))
}

/// Parses YAML (JSON is YAML too); empty text is an empty input.
pub fn parse(text: &str) -> anyhow::Result<Value> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    let value: Value = yaml_serde::from_str(text).map_err(|e| match e.location() {
        Some(l) => anyhow::anyhow!(
            "does not parse at line {} column {}: {e}",
            l.line(),
            l.column()
        ),
        None => anyhow::anyhow!("does not parse: {e}"),
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(json!({})),
        _ => bail!("the top level must be a mapping of input fields"),
    }
}

/// Sets `metadata.name` / `metadata.namespace` from the flags (the Transform's name and
/// namespace in the operator); values already in the input stay unless a flag overrides them.
/// Like the operator, both are always present: a missing one becomes `""`.
pub fn with_metadata(mut input: Value, name: Option<&str>, namespace: Option<&str>) -> Value {
    if !input["metadata"].is_object() {
        input["metadata"] = json!({});
    }
    let metadata = &mut input["metadata"];
    for (field, flag) in [("name", name), ("namespace", namespace)] {
        if let Some(value) = flag {
            metadata[field] = Value::from(value);
        } else if !metadata[field].is_string() {
            metadata[field] = Value::from("");
        }
    }
    input
}

/// `metadata.name` and `metadata.namespace` of a merged input.
pub fn identity(input: &Value) -> (String, String) {
    let text = |field: &str| {
        input["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (text("name"), text("namespace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_missing_fields_become_empty() {
        let input = parse("metadata: {name: web}\nimage: x").expect("parses");
        let merged = with_metadata(input.clone(), None, Some("apps"));
        assert_eq!(
            merged["metadata"],
            json!({"name": "web", "namespace": "apps"})
        );
        let merged = with_metadata(input, Some("api"), None);
        assert_eq!(merged["metadata"], json!({"name": "api", "namespace": ""}));
        assert_eq!(merged["image"], "x");
    }

    #[test]
    fn only_mappings_are_inputs() {
        assert_eq!(parse("").expect("empty"), json!({}));
        assert_eq!(parse("{\"a\": 1}").expect("json"), json!({"a": 1}));
        assert!(parse("- a\n- b").is_err());
        let err = parse("a: [1, 2").expect_err("bad yaml");
        assert!(err.to_string().contains("line"), "{err}");
    }
}
