//! Building ResourceGraphs in tests and benchmarks.

#![allow(dead_code)] // each test binary uses a different part

use pequod_api::{
    ApplyPolicy, GraphModule, GraphNode, ReadyRule, ReadyRuleType, ResourceGraph,
    ResourceGraphSpec, SourceRef,
};
use serde_json::{Value, json};

/// A ConfigMap object with `data`.
pub fn config_map(name: &str, data: Value) -> Value {
    let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    object["data"] = data;
    object
}

/// A node with default readiness and apply policy.
pub fn node(id: &str, object: Value, deps: &[&str]) -> GraphNode {
    GraphNode {
        id: id.into(),
        object,
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        ready_when: Vec::new(),
        apply_policy: ApplyPolicy::default(),
    }
}

/// Ready when the field at the dotted `path` has `value`.
pub fn field_equals(path: &str, value: &str) -> ReadyRule {
    ReadyRule {
        rule_type: ReadyRuleType::FieldEquals,
        condition_type: None,
        condition_status: None,
        path: Some(path.into()),
        value: Some(value.into()),
    }
}

/// Ready as soon as it exists.
pub fn exists() -> ReadyRule {
    ReadyRule {
        rule_type: ReadyRuleType::Exists,
        condition_type: None,
        condition_status: None,
        path: None,
        value: None,
    }
}

/// A graph as the transform-controller would write it for a Transform of the same name.
pub fn graph(name: &str, nodes: Vec<GraphNode>) -> ResourceGraph {
    ResourceGraph::new(
        name,
        ResourceGraphSpec {
            source_ref: SourceRef {
                api_version: "platform.pequod.io/v1alpha1".into(),
                kind: "Transform".into(),
                name: name.into(),
            },
            revision: 1,
            render_hash: "sha256:test".into(),
            module: GraphModule {
                reference: "test".into(),
                digest: "sha256:test".into(),
            },
            service_account_name: None,
            drift_policy: pequod_api::DriftPolicy::Correct,
            suspend: false,
            nodes,
        },
    )
}
