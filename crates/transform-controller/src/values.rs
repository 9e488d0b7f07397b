//! The module's input: `spec.input`, then each `valuesFrom` ConfigMap/Secret in order (later
//! wins), then `metadata {name, namespace}` of the Transform.
//!
//! Secret values are read here and handed to the engine only: errors name the object and key,
//! never a value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt as _};
use pequod_api::{Transform, ValuesFromKind, ValuesFromSource};
use serde_json::{Map, Value, json};

/// Why the input could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// A required ConfigMap or Secret does not exist (yet).
    #[error("{kind} {name} not found (set optional: true to render without it)")]
    Missing {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A required key is absent from an existing ConfigMap or Secret.
    #[error("{kind} {name} has no key {key:?}")]
    MissingKey {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The key.
        key: String,
    },
    /// A `valuesKey` holds something that is not a YAML/JSON object.
    #[error("{kind} {name} key {key:?} is not a YAML or JSON object: {reason}")]
    NotAnObject {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The key.
        key: String,
        /// What the parser said (a position, never the content).
        reason: String,
    },
    /// A `targetPath` is empty or crosses a non-object value.
    #[error("targetPath {path:?}: {reason}")]
    BadTargetPath {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the object failed (transient).
    #[error("reading {kind} {name}: {source}")]
    Read {
        /// `ConfigMap` or `Secret`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl ValuesError {
    /// Errors that a retry may fix without anyone editing the Transform (the API was down).
    pub fn is_transient(&self) -> bool {
        matches!(self, ValuesError::Read { .. })
    }
}

/// The data of one ConfigMap or Secret, as strings; `None` when it does not exist.
type Data = Option<BTreeMap<String, String>>;

fn kind_name(kind: ValuesFromKind) -> &'static str {
    match kind {
        ValuesFromKind::ConfigMap => "ConfigMap",
        ValuesFromKind::Secret => "Secret",
    }
}

async fn read(
    client: &Client,
    namespace: &str,
    source: &ValuesFromSource,
) -> Result<Data, ValuesError> {
    let kind = kind_name(source.kind);
    let failed = |e| ValuesError::Read {
        kind,
        name: source.name.clone(),
        source: e,
    };
    Ok(match source.kind {
        ValuesFromKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(&source.name)
            .await
            .map_err(failed)?
            .map(|cm| {
                let mut data = cm.data.unwrap_or_default();
                for (key, bytes) in cm.binary_data.unwrap_or_default() {
                    data.insert(key, String::from_utf8_lossy(&bytes.0).into_owned());
                }
                data
            }),
        ValuesFromKind::Secret => Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(&source.name)
            .await
            .map_err(failed)?
            .map(|secret| {
                let mut data: BTreeMap<String, String> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                data.extend(secret.string_data.unwrap_or_default());
                data
            }),
    })
}

/// The module's input and the Secret values in it.
pub struct Resolved {
    /// The merged input.
    pub input: Value,
    /// Every value read from a Secret: messages are redacted of these.
    pub secrets: Vec<String>,
}

/// The input the module sees, reading every `valuesFrom` object from the API.
pub async fn resolve(client: &Client, transform: &Transform) -> Result<Resolved, ValuesError> {
    let namespace = transform.namespace().unwrap_or_default();
    let mut layers = Vec::with_capacity(transform.spec.values_from.len());
    let mut secrets = Vec::new();
    for source in &transform.spec.values_from {
        let data = read(client, &namespace, source).await?;
        if source.kind == ValuesFromKind::Secret {
            secrets.extend(
                data.iter()
                    .flat_map(|d| d.values().flat_map(|v| secret_values(v))),
            );
        }
        layers.push((source, data));
    }
    let input = merge_input(transform, &layers)?;
    Ok(Resolved { input, secrets })
}

/// A Secret value and, when it is YAML, every string inside it.
fn secret_values(text: &str) -> Vec<String> {
    fn strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut out = vec![text.to_owned()];
    if let Ok(value) = yaml_serde::from_str::<Value>(text) {
        strings(&value, &mut out);
    }
    out
}

/// Merges `spec.input` with the `valuesFrom` layers (in order, later wins) and adds
/// `metadata {name, namespace}`. Pure: `layers` holds what was read.
pub fn merge_input(
    transform: &Transform,
    layers: &[(&ValuesFromSource, Data)],
) -> Result<Value, ValuesError> {
    let mut input = transform
        .spec
        .input
        .clone()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    for (source, data) in layers {
        if let Some(layer) = layer_value(source, data.as_ref())? {
            place(&mut input, source.target_path.as_deref(), layer)?;
        }
    }
    input["metadata"] = json!({
        "name": transform.name_any(),
        "namespace": transform.namespace().unwrap_or_default(),
    });
    Ok(input)
}

/// What one `valuesFrom` entry contributes; `None` when an optional source is absent.
fn layer_value(
    source: &ValuesFromSource,
    data: Option<&BTreeMap<String, String>>,
) -> Result<Option<Value>, ValuesError> {
    let kind = kind_name(source.kind);
    let Some(data) = data else {
        return if source.optional {
            Ok(None)
        } else {
            Err(ValuesError::Missing {
                kind,
                name: source.name.clone(),
            })
        };
    };
    let Some(key) = &source.values_key else {
        // Every key becomes a string field.
        let fields: Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        return Ok(Some(Value::Object(fields)));
    };
    let Some(text) = data.get(key) else {
        return if source.optional {
            Ok(None)
        } else {
            Err(ValuesError::MissingKey {
                kind,
                name: source.name.clone(),
                key: key.clone(),
            })
        };
    };
    if source.target_path.is_some() {
        // Placed at a path: a structured value when it parses as one, else the string.
        return Ok(Some(
            parse_structured(text).unwrap_or_else(|| Value::String(text.clone())),
        ));
    }
    let not_object = |reason: String| ValuesError::NotAnObject {
        kind,
        name: source.name.clone(),
        key: key.clone(),
        reason,
    };
    let value: Value = yaml_serde::from_str(text).map_err(|e| {
        // The location only: a Secret's content must not reach a condition.
        not_object(e.location().map_or_else(
            || "does not parse".to_owned(),
            |l| format!("does not parse at line {} column {}", l.line(), l.column()),
        ))
    })?;
    match value {
        Value::Object(_) => Ok(Some(value)),
        Value::Null => Ok(None),
        _ => Err(not_object("the top level is not a mapping".into())),
    }
}

/// A YAML/JSON mapping or list parsed from `text`, if it is one.
fn parse_structured(text: &str) -> Option<Value> {
    yaml_serde::from_str::<Value>(text)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
}

/// Deep-merges `layer` into `input` at `target_path` (dotted), or at the root.
fn place(input: &mut Value, target_path: Option<&str>, layer: Value) -> Result<(), ValuesError> {
    let Some(path) = target_path else {
        deep_merge(input, layer);
        return Ok(());
    };
    let bad = |reason: &str| ValuesError::BadTargetPath {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(bad("empty segment"));
    }
    let mut here = input;
    for segment in &segments {
        let Value::Object(map) = here else {
            return Err(bad("crosses a value that is not an object"));
        };
        here = map
            .entry((*segment).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if here.is_object() && layer.is_object() {
        deep_merge(here, layer);
    } else {
        *here = layer;
    }
    Ok(())
}

/// Objects merge key by key; anything else in `layer` replaces what was there.
fn deep_merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Object(base), Value::Object(layer)) => {
            for (key, value) in layer {
                match base.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pequod_api::{CueRef, SourceType, TransformSpec};

    fn transform(input: Value, values_from: Vec<ValuesFromSource>) -> Transform {
        let mut t = Transform::new(
            "web",
            TransformSpec {
                values_from,
                ..TransformSpec::new(CueRef::new(SourceType::Embedded, "webservice"), Some(input))
            },
        );
        t.metadata.namespace = Some("team-a".into());
        t
    }

    fn source(kind: ValuesFromKind, name: &str) -> ValuesFromSource {
        ValuesFromSource {
            kind,
            name: name.into(),
            values_key: Some("values.yaml".into()),
            target_path: None,
            optional: false,
        }
    }

    #[allow(clippy::unnecessary_wraps)] // the shape `merge_input` takes
    fn data(pairs: &[(&str, &str)]) -> Data {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn later_layers_win_and_objects_merge_deeply() {
        let a = source(ValuesFromKind::ConfigMap, "a");
        let b = source(ValuesFromKind::Secret, "b");
        let t = transform(
            json!({"image": "x", "db": {"host": "h", "port": 1}}),
            vec![a.clone(), b.clone()],
        );
        let layers = [
            (
                &a,
                data(&[("values.yaml", "replicas: 2\ndb:\n  port: 2\n")]),
            ),
            (
                &b,
                data(&[(
                    "values.yaml",
                    "{\"replicas\": 3, \"db\": {\"password\": \"s\"}}",
                )]),
            ),
        ];
        let input = merge_input(&t, &layers).expect("merge");
        assert_eq!(
            input,
            json!({"image": "x", "replicas": 3, "db": {"host": "h", "port": 2, "password": "s"},
                   "metadata": {"name": "web", "namespace": "team-a"}})
        );
    }

    #[test]
    fn target_path_places_a_key_and_no_values_key_takes_every_key() {
        let mut at_path = source(ValuesFromKind::Secret, "db");
        at_path.values_key = Some("password".into());
        at_path.target_path = Some("database.password".into());
        let mut all_keys = source(ValuesFromKind::ConfigMap, "env");
        all_keys.values_key = None;
        let t = transform(
            json!({"database": {"user": "app"}}),
            vec![at_path.clone(), all_keys.clone()],
        );
        let layers = [
            (&at_path, data(&[("password", "hunter2")])),
            (&all_keys, data(&[("LOG", "debug"), ("MODE", "fast")])),
        ];
        let input = merge_input(&t, &layers).expect("merge");
        assert_eq!(
            input["database"],
            json!({"user": "app", "password": "hunter2"})
        );
        assert_eq!(input["LOG"], json!("debug"));
        assert_eq!(input["MODE"], json!("fast"));
    }

    #[test]
    fn optional_sources_and_keys_are_skipped_required_ones_fail_by_name() {
        let mut optional = source(ValuesFromKind::ConfigMap, "maybe");
        optional.optional = true;
        let required = source(ValuesFromKind::Secret, "must");
        let t = transform(json!({"a": 1}), vec![optional.clone(), required.clone()]);
        let merged = merge_input(
            &t,
            &[
                (&optional, None),
                (&required, data(&[("values.yaml", "b: 2")])),
            ],
        )
        .expect("optional missing object");
        assert_eq!(merged["b"], json!(2));
        let merged = merge_input(&t, &[(&optional, data(&[]))]).expect("optional missing key");
        assert_eq!(merged["a"], json!(1));
        let missing = merge_input(&t, &[(&required, None)]).expect_err("required missing");
        assert_eq!(
            missing.to_string(),
            "Secret must not found (set optional: true to render without it)"
        );
        let no_key =
            merge_input(&t, &[(&required, data(&[("other", "x")]))]).expect_err("required key");
        assert_eq!(no_key.to_string(), "Secret must has no key \"values.yaml\"");
    }

    #[test]
    fn bad_content_is_reported_without_the_content() {
        let s = source(ValuesFromKind::Secret, "creds");
        let t = transform(json!({}), vec![s.clone()]);
        let error = merge_input(&t, &[(&s, data(&[("values.yaml", "top-secret-value")]))])
            .expect_err("a scalar is not an object");
        assert!(!error.to_string().contains("top-secret"), "{error}");
        let error =
            merge_input(&t, &[(&s, data(&[("values.yaml", "a: [b\n")]))]).expect_err("syntax");
        assert!(error.to_string().contains("line"), "{error}");
        let mut bad_path = s.clone();
        bad_path.target_path = Some("a..b".into());
        let error =
            merge_input(&t, &[(&bad_path, data(&[("values.yaml", "x")]))]).expect_err("path");
        assert!(error.to_string().contains("empty segment"), "{error}");
    }

    #[test]
    fn metadata_always_comes_from_the_transform() {
        let s = source(ValuesFromKind::ConfigMap, "sneaky");
        let t = transform(json!({"metadata": {"name": "other"}}), vec![s.clone()]);
        let input = merge_input(
            &t,
            &[(
                &s,
                data(&[("values.yaml", "metadata: {namespace: kube-system}")]),
            )],
        )
        .expect("merge");
        assert_eq!(
            input["metadata"],
            json!({"name": "web", "namespace": "team-a"})
        );
    }
}
