//! From the guest's answer to a typed render: errors by phase, and the `graph` value checked to
//! be a list of well-formed nodes (unique DNS-label ids, complete objects, known readiness
//! rules) before anyone tries to apply it.

use std::collections::HashSet;

use pequod_api::{GraphNode, Severity, Violation};
use serde::Deserialize;

use crate::protocol::{GuestError, Response};
use crate::{CueError, EvalError, Rendered};

/// Maps the guest's response to the render or the typed error.
pub fn interpret(response: Response) -> Result<Rendered, EvalError> {
    if let Some(errors) = response.errors.filter(|e| !e.is_empty()) {
        return Err(classify(errors));
    }
    let graph = response
        .graph
        .ok_or_else(|| EvalError::InvalidGraph("the guest returned no graph".into()))?;
    let nodes = nodes(graph)?;
    let violations = violations(response.violations)?;
    let outputs = response.outputs.filter(|o| !o.is_null());
    if let Some(outputs) = &outputs {
        let depth = pequod_api::lenient::depth(outputs);
        if depth > pequod_api::lenient::MAX_DEPTH {
            return Err(EvalError::InvalidGraph(format!(
                "outputs are nested {depth} levels deep; at most {} are allowed",
                pequod_api::lenient::MAX_DEPTH
            )));
        }
    }
    Ok(Rendered {
        nodes,
        outputs,
        violations,
    })
}

fn classify(errors: Vec<GuestError>) -> EvalError {
    let phase = errors[0].phase.clone();
    let incomplete = errors.iter().any(|e| e.incomplete);
    if phase == "input" {
        let message = errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        return EvalError::InvalidInput(message);
    }
    let errors: Vec<CueError> = errors
        .into_iter()
        .map(|e| CueError {
            path: e.path,
            message: e.message,
            positions: e.positions,
        })
        .collect();
    match phase.as_str() {
        "schema" => EvalError::Schema(errors),
        "load" => EvalError::Load(errors),
        "export" if incomplete => EvalError::NotConcrete(errors),
        _ => EvalError::Eval(errors),
    }
}

/// Checks node ids the way the ResourceGraph CRD does, so a render the API server would reject
/// fails here with the node named.
pub fn is_dns_label(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphValue {
    nodes: Vec<serde_json::Value>,
}

fn nodes(graph: serde_json::Value) -> Result<Vec<GraphNode>, EvalError> {
    let invalid = EvalError::InvalidGraph;
    let graph: GraphValue = serde_json::from_value(graph)
        .map_err(|e| invalid(format!("graph must be {{nodes: [...]}}: {e}")))?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(graph.nodes.len());
    for (index, mut raw) in graph.nodes.into_iter().enumerate() {
        let id = raw
            .get("id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let at = match &id {
            Some(id) => format!("graph.nodes[{index}] (id {id:?})"),
            None => format!("graph.nodes[{index}]"),
        };
        let id = id.ok_or_else(|| invalid(format!("{at}: missing string field `id`")))?;
        if !is_dns_label(&id) {
            return Err(invalid(format!(
                "{at}: id must be a DNS label (lowercase letters, digits and '-', at most 63)"
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(invalid(format!("{at}: duplicate node id {id:?}")));
        }
        // Older modules give the object as a YAML string.
        if let Some(text) = raw.get("object").and_then(serde_json::Value::as_str) {
            let parsed: serde_json::Value = yaml_serde::from_str(text)
                .map_err(|e| invalid(format!("{at}: object is a string but not YAML: {e}")))?;
            raw["object"] = parsed;
        }
        let node: GraphNode =
            serde_json::from_value(raw).map_err(|e| invalid(format!("{at}: {e}")))?;
        check_object(&at, &node.object)?;
        out.push(node);
    }
    Ok(out)
}

fn check_object(at: &str, object: &serde_json::Value) -> Result<(), EvalError> {
    let field = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if !object.is_object() {
        return Err(EvalError::InvalidGraph(format!(
            "{at}: object must be a Kubernetes object"
        )));
    }
    for (pointer, name) in [
        ("/apiVersion", "apiVersion"),
        ("/kind", "kind"),
        ("/metadata/name", "metadata.name"),
    ] {
        if field(pointer).is_none() {
            return Err(EvalError::InvalidGraph(format!(
                "{at}: object has no {name}"
            )));
        }
    }
    let depth = pequod_api::lenient::depth(object);
    if depth > pequod_api::lenient::MAX_OBJECT_DEPTH {
        return Err(EvalError::InvalidGraph(format!(
            "{at}: object is nested {depth} levels deep; at most {} are allowed",
            pequod_api::lenient::MAX_OBJECT_DEPTH
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleViolation {
    #[serde(default)]
    path: String,
    message: String,
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(default)]
    position: Option<String>,
}

fn violations(value: Option<serde_json::Value>) -> Result<Vec<Violation>, EvalError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list: Vec<ModuleViolation> = serde_json::from_value(value).map_err(|e| {
        EvalError::InvalidGraph(format!(
            "violations must be a list of {{path, message, severity: \"Error\"|\"Warning\"}}: {e}"
        ))
    })?;
    Ok(list
        .into_iter()
        .map(|v| Violation {
            path: v.path,
            message: v.message,
            severity: v.severity.unwrap_or(Severity::Error),
            position: v.position,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(graph: serde_json::Value) -> Response {
        Response {
            graph: Some(graph),
            ..Response::default()
        }
    }

    fn cm(name: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
    }

    #[test]
    fn well_formed_graph_becomes_typed_nodes() {
        let rendered = interpret(Response {
            graph: Some(json!({"nodes": [
                {"id": "config", "object": cm("c")},
                {"id": "app", "object": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n", "dependsOn": ["config"],
                 "readyWhen": [{"type": "Exists"}]},
            ]})),
            outputs: Some(json!({"url": "http://x"})),
            violations: Some(json!([{"path": "input.image", "message": "registry not allowed"}])),
            errors: None,
        })
        .unwrap();
        assert_eq!(rendered.nodes.len(), 2);
        assert_eq!(
            rendered.nodes[1].object["metadata"]["name"], "a",
            "YAML object parsed"
        );
        assert_eq!(rendered.nodes[1].depends_on, ["config"]);
        assert_eq!(
            rendered.violations[0].severity,
            Severity::Error,
            "severity defaults to Error"
        );
        assert_eq!(rendered.outputs, Some(json!({"url": "http://x"})));
    }

    #[test]
    fn objects_and_outputs_nested_too_deep_are_refused() {
        let nest = |levels: usize| {
            let mut value = serde_json::json!("leaf");
            for _ in 1..levels {
                value = serde_json::json!({ "x": value });
            }
            value
        };
        let limit = pequod_api::lenient::MAX_OBJECT_DEPTH;
        let with_data = |levels: usize| {
            let mut object = cm("deep");
            // The object itself is one level.
            object["data"] = nest(levels - 1);
            response(serde_json::json!({"nodes": [{"id": "a", "object": object}]}))
        };
        assert!(interpret(with_data(limit)).is_ok());
        let refused = interpret(with_data(limit + 1)).expect_err("too deep");
        assert!(
            refused.to_string().contains("nested 49 levels"),
            "{refused}"
        );
        let mut deep_outputs = response(serde_json::json!({"nodes": []}));
        deep_outputs.outputs = Some(nest(pequod_api::lenient::MAX_DEPTH + 1));
        assert!(interpret(deep_outputs).is_err());
        let mut outputs = response(serde_json::json!({"nodes": []}));
        outputs.outputs = Some(nest(pequod_api::lenient::MAX_DEPTH));
        assert!(interpret(outputs).is_ok());
    }

    #[test]
    fn malformed_graphs_are_invalid_graph_errors_naming_the_node() {
        let cases = [
            (json!([]), "graph must be {nodes: [...]}"),
            (
                json!({"nodes": [{"object": cm("a")}]}),
                "graph.nodes[0]: missing string field `id`",
            ),
            (
                json!({"nodes": [{"id": "a", "object": cm("a")}, {"id": "a", "object": cm("b")}]}),
                "duplicate node id \"a\"",
            ),
            (
                json!({"nodes": [{"id": "Web_1", "object": cm("a")}]}),
                "id must be a DNS label",
            ),
            (
                json!({"nodes": [{"id": "a", "object": {"kind": "ConfigMap", "metadata": {"name": "a"}}}]}),
                "object has no apiVersion",
            ),
            (
                json!({"nodes": [{"id": "a", "object": cm("a"), "readyWhen": [{"type": "Eventually"}]}]}),
                "graph.nodes[0] (id \"a\"): unknown variant",
            ),
        ];
        for (graph, expected) in cases {
            match interpret(response(graph)) {
                Err(EvalError::InvalidGraph(message)) => {
                    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
                }
                other => panic!("expected InvalidGraph containing {expected:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn errors_map_to_their_phase() {
        let error = |phase: &str, incomplete: bool| Response {
            errors: Some(vec![GuestError {
                phase: phase.into(),
                path: "input.replicas".into(),
                message: "conflicting values".into(),
                positions: Vec::new(),
                incomplete,
            }]),
            ..Response::default()
        };
        assert!(matches!(
            interpret(error("schema", false)),
            Err(EvalError::Schema(_))
        ));
        assert!(matches!(
            interpret(error("load", false)),
            Err(EvalError::Load(_))
        ));
        assert!(matches!(
            interpret(error("eval", false)),
            Err(EvalError::Eval(_))
        ));
        assert!(matches!(
            interpret(error("export", true)),
            Err(EvalError::NotConcrete(_))
        ));
        assert!(matches!(
            interpret(error("input", false)),
            Err(EvalError::InvalidInput(_))
        ));
    }
}
