//! Free-form fields (`spec.input`, `status.outputs`) decoded so that one object can never stop
//! the others from decoding.
//!
//! The API server stores any nesting a tenant writes, but serde_json refuses values nested
//! deeper than 128 levels, counted from the start of the whole response: one deep `input` made
//! the LIST of every Transform fail, so no Transform in any namespace was reconciled. These
//! fields are read as raw JSON first (serde_json skips a raw value without recursion) and only
//! then parsed on their own; a value that cannot be parsed is replaced by a marker that the
//! controller reports on that one object (`Stalled`, reason `InvalidSpec`).
//!
//! The API server also mirrors every field an object sets in its `metadata.managedFields`, one
//! level deeper: [`Lenient`] wraps a kind for watches and lists so that `managedFields` (which
//! no controller here reads) is skipped without recursion, and the rest is decoded as usual.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Deepest free-form value (`spec.input`, `status.outputs`) Pequod accepts; a scalar is 1.
pub const MAX_DEPTH: usize = 32;
/// Deepest object a graph node may render (a scalar is 1): Kubernetes objects nest far less,
/// and a graph nested deeper could not be listed back from the API server.
pub const MAX_OBJECT_DEPTH: usize = 48;
/// Largest `spec.input` Pequod accepts, in bytes of JSON.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// The key of the marker object that stands for a value that could not be decoded.
pub const UNDECODABLE: &str = "$pequod.undecodable";

/// `deserialize_with` for an optional free-form object: the value, or the marker naming why it
/// could not be decoded.
pub fn free_form<'de, D>(deserializer: D) -> Result<Option<Value>, D::Error>
where
    D: Deserializer<'de>,
{
    let Some(raw) = Option::<Box<RawValue>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    Ok(Some(match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null) => return Ok(None),
        Ok(value) => value,
        Err(error) => marker(&format!(
            "{} bytes that cannot be decoded ({error}); values may nest at most {MAX_DEPTH} levels",
            raw.get().len()
        )),
    }))
}

/// `deserialize_with` for a required free-form object (a graph node's object): the value, or
/// the marker naming why it could not be decoded.
pub fn object<'de, D>(deserializer: D) -> Result<Value, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    Ok(serde_json::from_str::<Value>(raw.get()).unwrap_or_else(|error| {
        marker(&format!(
            "{} bytes that cannot be decoded ({error}); objects may nest at most {MAX_OBJECT_DEPTH} levels",
            raw.get().len()
        ))
    }))
}

fn marker(why: &str) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(UNDECODABLE.into(), Value::from(why));
    Value::Object(map)
}

/// Why a free-form value is not acceptable (could not be decoded, nested deeper than
/// [`MAX_DEPTH`], or larger than `max_bytes`), or `None` when it is.
pub fn problem(value: &Value, max_bytes: usize) -> Option<String> {
    if let Some(why) = value.get(UNDECODABLE).and_then(Value::as_str) {
        return Some(why.to_owned());
    }
    let depth = depth(value);
    if depth > MAX_DEPTH {
        return Some(format!(
            "nested {depth} levels deep; at most {MAX_DEPTH} levels are allowed"
        ));
    }
    let size = value.to_string().len();
    (size > max_bytes).then(|| format!("{size} bytes of JSON; at most {max_bytes} are allowed"))
}

/// An object of kind `K` read for a watch or a list: its `metadata.managedFields` dropped
/// unread, so that an object whose fields nest deeper than serde_json decodes (its managed
/// fields one level deeper still) never fails the list of all the others.
#[derive(Clone, Debug, PartialEq)]
pub struct Lenient<K>(pub K);

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = deserializer.deserialize_map(WithoutManagedFields { top: true })?;
        serde_json::from_str(&text)
            .map(Lenient)
            .map_err(serde::de::Error::custom)
    }
}

/// Re-writes an object as JSON text with `metadata.managedFields` left out (skipped by
/// serde_json without recursion); every other value is copied raw.
struct WithoutManagedFields {
    /// At the object's top level (where `metadata` is), not inside `metadata`.
    top: bool,
}

impl<'de> Visitor<'de> for WithoutManagedFields {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let mut out = String::from("{");
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if !self.top && key == "managedFields" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(&key).map_err(serde::de::Error::custom)?);
            out.push(':');
            if self.top && key == "metadata" {
                out.push_str(&map.next_value_seed(MetadataSeed)?);
            } else {
                out.push_str(map.next_value::<Box<RawValue>>()?.get());
            }
        }
        out.push('}');
        Ok(out)
    }
}

struct MetadataSeed;

impl<'de> serde::de::DeserializeSeed<'de> for MetadataSeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_map(WithoutManagedFields { top: false })
    }
}

impl<K: kube::Resource> kube::Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// Depth of a JSON value (a scalar is 1), counted without recursion.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1_usize)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "free_form")]
        input: Option<Value>,
        other: u32,
    }

    #[derive(Deserialize)]
    struct Items {
        items: Vec<Lenient<crate::Transform>>,
    }

    #[derive(Deserialize)]
    struct List {
        items: Vec<Holder>,
    }

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn a_value_too_deep_to_parse_becomes_a_marker_and_the_rest_still_decodes() {
        let text = format!(
            r#"{{"items": [{{"input": {{"a": {}}}, "other": 1}}, {{"input": {{"b": 2}}, "other": 2}}]}}"#,
            nested(500)
        );
        let list: List = serde_json::from_str(&text).expect("the list decodes");
        assert_eq!(list.items.len(), 2);
        let broken = list.items[0].input.as_ref().expect("marker");
        assert!(
            problem(broken, MAX_INPUT_BYTES).is_some_and(|p| p.contains("cannot be decoded")),
            "{broken}"
        );
        assert_eq!(list.items[0].other, 1);
        assert_eq!(list.items[1].input, Some(serde_json::json!({"b": 2})));
        assert_eq!(problem(&serde_json::json!({"b": 2}), MAX_INPUT_BYTES), None);
    }

    #[test]
    fn a_list_with_deep_managed_fields_decodes_every_item() {
        let deep = nested(300);
        let item = |name: &str, input: &str, managed: &str| {
            format!(
                r#"{{"apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
                "metadata": {{"name": "{name}", "namespace": "ns", "labels": {{"a": "b"}},
                    "managedFields": [{{"manager": "kubectl", "fieldsV1": {managed}}}]}},
                "spec": {{"cueRef": {{"type": "embedded", "ref": "webservice"}}, "input": {input}}}}}"#
            )
        };
        let text = format!(
            r#"{{"items": [{}, {}]}}"#,
            item(
                "deep",
                &format!(r#"{{"x": {deep}}}"#),
                &format!(r#"{{"f:spec": {deep}}}"#)
            ),
            item("fine", r#"{"replicas": 2}"#, r#"{"f:spec": {}}"#),
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_err(),
            "too deep for serde_json as it is"
        );
        let list: Items = serde_json::from_str(&text).expect("every item decodes");
        let [deep, fine] = &list.items[..] else {
            panic!("two items")
        };
        assert_eq!(deep.0.metadata.name.as_deref(), Some("deep"));
        assert_eq!(deep.0.metadata.managed_fields, None);
        assert!(
            deep.0
                .spec
                .problem()
                .is_some_and(|p| p.contains("cannot be decoded"))
        );
        assert_eq!(fine.0.spec.input, Some(serde_json::json!({"replicas": 2})));
        assert_eq!(
            fine.0.metadata.labels.as_ref().map(|l| l["a"].as_str()),
            Some("b")
        );
        assert_eq!(fine.0.spec.problem(), None);
    }

    #[test]
    fn depth_and_size_bounds_at_the_edge() {
        let at = |levels: usize| -> Value {
            serde_json::from_str(&format!(r#"{{"a": {}}}"#, nested(levels - 2))).expect("json")
        };
        assert_eq!(depth(&at(MAX_DEPTH)), MAX_DEPTH);
        assert_eq!(problem(&at(MAX_DEPTH), MAX_INPUT_BYTES), None);
        let deeper = problem(&at(MAX_DEPTH + 1), MAX_INPUT_BYTES).expect("too deep");
        assert!(deeper.contains("33 levels"), "{deeper}");
        let big = serde_json::json!({"k": "x".repeat(100)});
        let size = big.to_string().len();
        assert_eq!(problem(&big, size), None);
        assert!(problem(&big, size - 1).is_some_and(|p| p.contains("bytes of JSON")));
        let holder: Holder = serde_json::from_str(r#"{"input": null, "other": 3}"#).expect("null");
        assert_eq!(holder.input, None);
        let absent: Holder = serde_json::from_str(r#"{"other": 3}"#).expect("absent");
        assert_eq!(absent.input, None);
    }
}
