//! Drift: which fields of what we applied someone else has changed since.
//!
//! Only fields present in the desired object are compared, so defaults the API server adds and
//! fields other managers own by design (listed in `ignoreFields`) never count as drift.

use serde_json::Value;

/// JSON pointers (`/spec/replicas`) of desired fields whose live value differs.
pub fn drifted_fields(desired: &Value, live: &Value, ignore: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    walk(desired, Some(live), &mut String::new(), ignore, &mut out);
    out
}

fn walk(
    desired: &Value,
    live: Option<&Value>,
    pointer: &mut String,
    ignore: &[String],
    out: &mut Vec<String>,
) {
    if ignore.iter().any(|i| i == pointer) || pointer == "/status" {
        return;
    }
    match (desired, live) {
        // The API server drops empty maps, lists and nulls: absent is the same value.
        (Value::Null, None) => {}
        (Value::Object(want), None) if want.is_empty() => {}
        (Value::Array(want), None) if want.is_empty() => {}
        (Value::Object(want), Some(Value::Object(have))) => {
            for (key, value) in want {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                walk(value, have.get(key), pointer, ignore, out);
                pointer.truncate(len);
            }
        }
        (Value::Array(want), Some(Value::Array(have))) if want.len() == have.len() => {
            for (index, value) in want.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&index.to_string());
                walk(value, have.get(index), pointer, ignore, out);
                pointer.truncate(len);
            }
        }
        (want, have) => {
            if have != Some(want) {
                out.push(if pointer.is_empty() {
                    "/".to_owned()
                } else {
                    pointer.clone()
                });
            }
        }
    }
}

/// Removes the fields at `pointers` (so they are left to other managers).
pub fn remove_fields(value: &mut Value, pointers: &[String]) {
    for pointer in pointers {
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            continue;
        };
        let key = last.replace("~1", "/").replace("~0", "~");
        match value.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.remove(&key);
            }
            Some(Value::Array(items)) => {
                if let Ok(index) = key.parse::<usize>()
                    && index < items.len()
                {
                    items.remove(index);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_changed_desired_fields_only() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 2, "template": {"containers": [{"name": "c", "image": "i:1"}]}}});
        let live = json!({"metadata": {"name": "a", "labels": {"x": "1", "added": "by-server"}, "resourceVersion": "9"},
            "spec": {"replicas": 5, "template": {"containers": [{"name": "c", "image": "i:2", "imagePullPolicy": "Always"}]}},
            "status": {"replicas": 5}});
        assert_eq!(
            drifted_fields(&desired, &live, &[]),
            ["/spec/replicas", "/spec/template/containers/0/image"]
        );
        assert_eq!(
            drifted_fields(&desired, &live, &["/spec/replicas".into()]),
            ["/spec/template/containers/0/image"]
        );
        assert!(drifted_fields(&desired, &desired, &[]).is_empty());
        let removed = json!({"metadata": {"name": "a"}});
        assert_eq!(
            drifted_fields(
                &json!({"metadata": {"name": "a"}, "data": {"k": "v"}}),
                &removed,
                &[]
            ),
            ["/data"]
        );
    }

    #[test]
    fn removes_ignored_fields() {
        let mut object = json!({"spec": {"replicas": 2, "paused": false}, "metadata": {"annotations": {"a/b": "x"}}});
        remove_fields(
            &mut object,
            &[
                "/spec/replicas".into(),
                "/metadata/annotations/a~1b".into(),
                "/nothing/here".into(),
            ],
        );
        assert_eq!(
            object,
            json!({"spec": {"paused": false}, "metadata": {"annotations": {}}})
        );
    }
}
