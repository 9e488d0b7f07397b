//! The rendered graph as the executor sees it: [`pequod_graph::Dag`] checks (duplicate ids and
//! objects, unknown dependencies, cycles) with the implicit Namespace and CRD edges, and the DAG
//! drawn as Graphviz DOT or Mermaid with each node's readiness rules.

use std::fmt::Write as _;

use pequod_api::{GraphNode, ReadyRule, ReadyRuleType};
use pequod_graph::dag::EdgeKind;
use pequod_graph::{Dag, GraphError, NodeSpec};

/// Kinds served cluster-scoped by every API server (without a cluster to ask, these are the
/// objects that get no namespace). Other objects without one land in the graph's namespace,
/// as the executor places them.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
];

/// Builds and checks the DAG of `nodes`; objects without a namespace are placed in `namespace`
/// unless their kind is cluster-scoped.
pub fn dag(nodes: &[GraphNode], namespace: &str) -> Result<Dag, GraphError> {
    let specs = nodes
        .iter()
        .map(|node| {
            let mut spec = NodeSpec::from_object(&node.id, &node.object, node.depends_on.clone())?;
            let cluster_scoped = CLUSTER_SCOPED
                .iter()
                .any(|(g, k)| spec.object.group == *g && spec.object.kind == *k);
            if spec.object.namespace.is_none() && !cluster_scoped && !namespace.is_empty() {
                spec.object.namespace = Some(namespace.to_owned());
            }
            Ok(spec)
        })
        .collect::<Result<Vec<_>, GraphError>>()?;
    Dag::build(specs)
}

/// Output formats of `pequod graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Graphviz DOT (`| dot -Tsvg`).
    Dot,
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
}

/// A readiness rule in a few words.
pub fn rule_text(rule: &ReadyRule) -> String {
    let or = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.to_owned());
    match rule.rule_type {
        ReadyRuleType::Current => "Current".to_owned(),
        ReadyRuleType::Exists => "Exists".to_owned(),
        ReadyRuleType::DeploymentAvailable => "DeploymentAvailable".to_owned(),
        ReadyRuleType::JobComplete => "JobComplete".to_owned(),
        ReadyRuleType::ConditionMatch => format!(
            "{}={}",
            or(&rule.condition_type, "?"),
            or(&rule.condition_status, "True")
        ),
        ReadyRuleType::FieldEquals => {
            format!("{}={}", or(&rule.path, "?"), or(&rule.value, ""))
        }
    }
}

fn ready_text(node: &GraphNode) -> String {
    if node.ready_when.is_empty() {
        return "ready: Current".to_owned();
    }
    let rules: Vec<String> = node.ready_when.iter().map(rule_text).collect();
    format!("ready: {}", rules.join(", "))
}

fn edge_label(kind: EdgeKind) -> Option<&'static str> {
    match kind {
        EdgeKind::Explicit => None,
        EdgeKind::Namespace => Some("namespace"),
        EdgeKind::Definition => Some("CRD"),
    }
}

/// The node's label lines: id, object, readiness.
fn label_lines(dag: &Dag, node: &GraphNode) -> [String; 3] {
    let object = dag
        .node(&node.id)
        .map(|spec| spec.object.to_string())
        .unwrap_or_default();
    [node.id.clone(), object, ready_text(node)]
}

fn dot_quote(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Graphviz DOT; edges point from a dependency to its dependent (the apply order).
pub fn dot(name: &str, dag: &Dag, nodes: &[GraphNode]) -> String {
    let title = if name.is_empty() { "graph" } else { name };
    let mut out = format!("digraph {} {{\n", dot_quote(title));
    out.push_str("  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"sans-serif\"];\n");
    for node in nodes {
        let label = label_lines(dag, node)
            .iter()
            .map(|l| l.replace('\\', "\\\\").replace('"', "\\\""))
            .collect::<Vec<_>>()
            .join("\\n");
        let _ = writeln!(out, "  {} [label=\"{label}\"];", dot_quote(&node.id));
    }
    for node in nodes {
        for (dependency, kind) in dag.dependencies(&node.id) {
            let attrs = edge_label(kind)
                .map(|l| format!(" [style=dashed, label={}]", dot_quote(l)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} -> {}{attrs};",
                dot_quote(dependency),
                dot_quote(&node.id)
            );
        }
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart; node keys are `n0`, `n1`… (ids such as `end` are Mermaid keywords).
pub fn mermaid(dag: &Dag, nodes: &[GraphNode]) -> String {
    let key = |id: &str| {
        nodes
            .iter()
            .position(|n| n.id == id)
            .map_or_else(|| "unknown".to_owned(), |i| format!("n{i}"))
    };
    let mut out = String::from("flowchart TD\n");
    for (i, node) in nodes.iter().enumerate() {
        let label = label_lines(dag, node)
            .iter()
            .map(|l| l.replace('"', "#quot;"))
            .collect::<Vec<_>>()
            .join("<br/>");
        let _ = writeln!(out, "  n{i}[\"{label}\"]");
    }
    for node in nodes {
        for (dependency, kind) in dag.dependencies(&node.id) {
            let arrow = match edge_label(kind) {
                Some(label) => format!("-. {label} .->"),
                None => "-->".to_owned(),
            };
            let _ = writeln!(out, "  {} {arrow} {}", key(dependency), key(&node.id));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: &str, object: &serde_json::Value, depends_on: &[&str]) -> GraphNode {
        serde_json::from_value(json!({
            "id": id,
            "object": object,
            "dependsOn": depends_on,
        }))
        .expect("a node")
    }

    #[test]
    fn implicit_namespace_edges_are_dashed_and_explicit_ones_plain() {
        let nodes = vec![
            node(
                "ns",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
                &[],
            ),
            node(
                "app",
                &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}}),
                &[],
            ),
            node(
                "svc",
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "team"}}),
                &["app"],
            ),
        ];
        let dag = dag(&nodes, "team").expect("a DAG");
        let dot = dot("web", &dag, &nodes);
        assert!(
            dot.contains("\"ns\" -> \"app\" [style=dashed, label=\"namespace\"];"),
            "{dot}"
        );
        assert!(dot.contains("\"app\" -> \"svc\";"), "{dot}");
        assert!(dot.contains("ready: Current"), "{dot}");
        let mermaid = mermaid(&dag, &nodes);
        assert!(mermaid.contains("n0 -. namespace .-> n1"), "{mermaid}");
        assert!(mermaid.contains("n1 --> n2"), "{mermaid}");
    }

    #[test]
    fn cycles_are_refused() {
        let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        let nodes = vec![node("a", &cm("a"), &["b"]), node("b", &cm("b"), &["a"])];
        assert!(matches!(dag(&nodes, "x"), Err(GraphError::Cycle { .. })));
    }
}
