//! The dependency graph of a ResourceGraph: built from node specs, checked before anything is
//! written, with implicit edges, a stable topological order and dependency levels (waves).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt;

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef as _;

/// Identity of a Kubernetes object, independent of API version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group (empty for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects (or when the object does not say).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
    pub fn group_of(api_version: &str) -> &str {
        api_version.rsplit_once('/').map_or("", |(group, _)| group)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " {ns}/{}", self.name),
            None => write!(f, " {}", self.name),
        }
    }
}

/// What the core needs to know about a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node id, unique in the graph.
    pub id: String,
    /// The object the node renders.
    pub object: ObjectKey,
    /// Ids the node explicitly depends on.
    pub depends_on: Vec<String>,
    /// For a CustomResourceDefinition: the (group, kind) it defines.
    pub defines: Option<(String, String)>,
}

impl NodeSpec {
    /// Reads the identity (and, for a CRD, what it defines) from a rendered object.
    pub fn from_object(
        id: &str,
        object: &serde_json::Value,
        depends_on: Vec<String>,
    ) -> Result<Self, GraphError> {
        let text = |pointer: &str| object.pointer(pointer).and_then(serde_json::Value::as_str);
        let malformed = |reason: &str| GraphError::MalformedObject {
            node: id.to_owned(),
            reason: reason.to_owned(),
        };
        let api_version = text("/apiVersion").ok_or_else(|| malformed("no apiVersion"))?;
        let kind = text("/kind").ok_or_else(|| malformed("no kind"))?;
        let name = text("/metadata/name").ok_or_else(|| malformed("no metadata.name"))?;
        let group = ObjectKey::group_of(api_version);
        let defines = (group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition")
            .then(|| {
                Some((
                    text("/spec/group")?.to_owned(),
                    text("/spec/names/kind")?.to_owned(),
                ))
            })
            .flatten();
        Ok(Self {
            id: id.to_owned(),
            object: ObjectKey {
                group: group.to_owned(),
                kind: kind.to_owned(),
                namespace: text("/metadata/namespace").map(str::to_owned),
                name: name.to_owned(),
            },
            depends_on,
            defines,
        })
    }
}

/// Why a graph cannot be executed. Every variant names the nodes at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Two nodes share an id.
    #[error("node id {id:?} is used by more than one node")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// Two nodes render the same object.
    #[error("nodes {first:?} and {second:?} both render {object}")]
    DuplicateObject {
        /// The first node.
        first: String,
        /// The second node.
        second: String,
        /// The object.
        object: String,
    },
    /// A node depends on an id that is not in the graph.
    #[error("node {node:?} depends on {missing:?}, which is not a node of this graph")]
    UnknownDependency {
        /// The node.
        node: String,
        /// The missing id.
        missing: String,
    },
    /// The dependencies (explicit and implicit) form a cycle.
    #[error("dependency cycle between nodes {}", .nodes.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "))]
    Cycle {
        /// The nodes of the cycle, in declaration order.
        nodes: Vec<String>,
    },
    /// A node's object lacks what identifies it.
    #[error("node {node:?}: object has {reason}")]
    MalformedObject {
        /// The node.
        node: String,
        /// What is missing.
        reason: String,
    },
}

/// Why one node depends on another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// Listed in `dependsOn`.
    Explicit,
    /// The dependency is the Namespace the node's object lives in.
    Namespace,
    /// The dependency is the CRD that defines the node's kind.
    Definition,
}

/// A checked, acyclic dependency graph.
#[derive(Clone, Debug)]
pub struct Dag {
    nodes: Vec<NodeSpec>,
    index: HashMap<String, usize>,
    /// Edge dependency → dependent.
    graph: DiGraph<usize, EdgeKind>,
    order: Vec<usize>,
    level: Vec<u32>,
}

impl Dag {
    /// Builds the graph and checks it: unique ids, one node per object, known dependencies,
    /// no cycles. Implicit edges are added for Namespaces and CRDs rendered in the same graph.
    pub fn build(nodes: Vec<NodeSpec>) -> Result<Self, GraphError> {
        let mut index = HashMap::with_capacity(nodes.len());
        let mut objects: HashMap<&ObjectKey, &str> = HashMap::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            if index.insert(node.id.clone(), i).is_some() {
                return Err(GraphError::DuplicateId {
                    id: node.id.clone(),
                });
            }
            if let Some(first) = objects.insert(&node.object, &node.id) {
                return Err(GraphError::DuplicateObject {
                    first: first.to_owned(),
                    second: node.id.clone(),
                    object: node.object.to_string(),
                });
            }
        }
        let mut graph = DiGraph::with_capacity(nodes.len(), nodes.len());
        for i in 0..nodes.len() {
            graph.add_node(i);
        }
        let namespaces: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.object.group.is_empty() && n.object.kind == "Namespace")
            .map(|(i, n)| (n.object.name.as_str(), i))
            .collect();
        let definitions: HashMap<(&str, &str), usize> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.defines
                    .as_ref()
                    .map(|(g, k)| ((g.as_str(), k.as_str()), i))
            })
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            let add = |dependency: usize, kind: EdgeKind, graph: &mut DiGraph<usize, EdgeKind>| {
                let (from, to) = (NodeIndex::new(dependency), NodeIndex::new(i));
                if graph.find_edge(from, to).is_none() {
                    graph.add_edge(from, to, kind);
                }
            };
            for dependency in &node.depends_on {
                let Some(&d) = index.get(dependency) else {
                    return Err(GraphError::UnknownDependency {
                        node: node.id.clone(),
                        missing: dependency.clone(),
                    });
                };
                add(d, EdgeKind::Explicit, &mut graph);
            }
            if let Some(&ns) = node
                .object
                .namespace
                .as_deref()
                .and_then(|ns| namespaces.get(ns))
                && ns != i
            {
                add(ns, EdgeKind::Namespace, &mut graph);
            }
            if let Some(&crd) =
                definitions.get(&(node.object.group.as_str(), node.object.kind.as_str()))
                && crd != i
            {
                add(crd, EdgeKind::Definition, &mut graph);
            }
        }
        let order = stable_toposort(&graph).map_err(|()| GraphError::Cycle {
            nodes: cycle_members(&graph, &nodes),
        })?;
        let mut level = vec![0_u32; nodes.len()];
        for &i in &order {
            level[i] = graph
                .edges_directed(NodeIndex::new(i), Direction::Incoming)
                .map(|e| level[e.source().index()] + 1)
                .max()
                .unwrap_or(0);
        }
        Ok(Self {
            nodes,
            index,
            graph,
            order,
            level,
        })
    }

    /// The nodes in declaration order.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> Option<&NodeSpec> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    /// The nodes in a topological order, ties broken by declaration order.
    pub fn topological(&self) -> impl Iterator<Item = &NodeSpec> {
        self.order.iter().map(|&i| &self.nodes[i])
    }

    /// Direct dependencies of a node (explicit and implicit) with why each is one.
    pub fn dependencies(&self, id: &str) -> Vec<(&str, EdgeKind)> {
        self.neighbours(id, Direction::Incoming)
    }

    /// Direct dependents of a node.
    pub fn dependents(&self, id: &str) -> Vec<(&str, EdgeKind)> {
        self.neighbours(id, Direction::Outgoing)
    }

    fn neighbours(&self, id: &str, direction: Direction) -> Vec<(&str, EdgeKind)> {
        let Some(&i) = self.index.get(id) else {
            return Vec::new();
        };
        let mut out: Vec<(usize, EdgeKind)> = self
            .graph
            .edges_directed(NodeIndex::new(i), direction)
            .map(|e| {
                let other = if direction == Direction::Incoming {
                    e.source()
                } else {
                    e.target()
                };
                (other.index(), *e.weight())
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter()
            .map(|(i, kind)| (self.nodes[i].id.as_str(), kind))
            .collect()
    }

    /// Dependency level: 0 for nodes without dependencies, else one more than the deepest
    /// dependency. Objects are removed in decreasing level (dependents first).
    pub fn level(&self, id: &str) -> Option<u32> {
        self.index.get(id).map(|&i| self.level[i])
    }
}

/// Kahn's algorithm with the lowest declaration index first among the ready nodes.
fn stable_toposort(graph: &DiGraph<usize, EdgeKind>) -> Result<Vec<usize>, ()> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.edges_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for edge in graph.edges_directed(NodeIndex::new(i), Direction::Outgoing) {
            let t = edge.target().index();
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(Reverse(t));
            }
        }
    }
    if order.len() == indegree.len() {
        Ok(order)
    } else {
        Err(())
    }
}

/// The members of one cycle (the first strongly connected component with a cycle).
fn cycle_members(graph: &DiGraph<usize, EdgeKind>, nodes: &[NodeSpec]) -> Vec<String> {
    tarjan_scc(graph)
        .into_iter()
        .find(|scc| scc.len() > 1 || graph.find_edge(scc[0], scc[0]).is_some())
        .map(|scc| {
            let members: BTreeSet<usize> = scc.iter().map(|n| n.index()).collect();
            members.into_iter().map(|i| nodes[i].id.clone()).collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: &str, api_version: &str, kind: &str, ns: Option<&str>, deps: &[&str]) -> NodeSpec {
        let mut object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": id}});
        if let Some(ns) = ns {
            object["metadata"]["namespace"] = json!(ns);
        }
        NodeSpec::from_object(id, &object, deps.iter().map(|d| (*d).to_owned()).collect()).unwrap()
    }

    fn cm(id: &str, deps: &[&str]) -> NodeSpec {
        node(id, "v1", "ConfigMap", Some("apps"), deps)
    }

    #[test]
    fn orders_by_dependencies_then_declaration() {
        let dag = Dag::build(vec![
            cm("c", &["a"]),
            cm("b", &[]),
            cm("a", &[]),
            cm("d", &["c", "b"]),
        ])
        .unwrap();
        let order: Vec<&str> = dag.topological().map(|n| n.id.as_str()).collect();
        assert_eq!(order, ["b", "a", "c", "d"]);
        assert_eq!(dag.level("a"), Some(0));
        assert_eq!(dag.level("c"), Some(1));
        assert_eq!(dag.level("d"), Some(2));
        assert_eq!(
            dag.dependencies("d"),
            [("c", EdgeKind::Explicit), ("b", EdgeKind::Explicit)]
        );
    }

    #[test]
    fn errors_name_the_nodes() {
        assert_eq!(
            Dag::build(vec![cm("a", &[]), cm("a", &[])]).unwrap_err(),
            GraphError::DuplicateId { id: "a".into() }
        );
        assert_eq!(
            Dag::build(vec![cm("a", &["ghost"])]).unwrap_err(),
            GraphError::UnknownDependency {
                node: "a".into(),
                missing: "ghost".into()
            }
        );
        let same_object = vec![node("one", "v1", "ConfigMap", Some("apps"), &[]), {
            let mut n = node("two", "v1", "ConfigMap", Some("apps"), &[]);
            n.object.name = "one".into();
            n
        }];
        let err = Dag::build(same_object).unwrap_err();
        assert_eq!(
            err,
            GraphError::DuplicateObject {
                first: "one".into(),
                second: "two".into(),
                object: "ConfigMap apps/one".into()
            }
        );
        let err = Dag::build(vec![
            cm("x", &[]),
            cm("a", &["c"]),
            cm("b", &["a"]),
            cm("c", &["b"]),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            GraphError::Cycle {
                nodes: vec!["a".into(), "b".into(), "c".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "dependency cycle between nodes \"a\", \"b\", \"c\""
        );
        assert_eq!(
            Dag::build(vec![cm("self", &["self"])]).unwrap_err(),
            GraphError::Cycle {
                nodes: vec!["self".into()]
            }
        );
        let malformed = NodeSpec::from_object(
            "m",
            &json!({"apiVersion": "v1", "metadata": {"name": "m"}}),
            vec![],
        );
        assert_eq!(
            malformed.unwrap_err(),
            GraphError::MalformedObject {
                node: "m".into(),
                reason: "no kind".into()
            }
        );
    }

    #[test]
    fn namespaces_and_crds_come_before_what_lives_in_them() {
        let crd = NodeSpec::from_object(
            "crd",
            &json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "names": {"kind": "Widget"}},
            }),
            vec![],
        )
        .unwrap();
        let dag = Dag::build(vec![
            node("widget", "example.com/v1", "Widget", Some("ns"), &[]),
            node("config", "v1", "ConfigMap", Some("ns"), &[]),
            crd,
            node("ns", "v1", "Namespace", None, &[]),
            node("other", "v1", "ConfigMap", Some("elsewhere"), &[]),
        ])
        .unwrap();
        let order: Vec<&str> = dag.topological().map(|n| n.id.as_str()).collect();
        assert_eq!(order, ["crd", "ns", "widget", "config", "other"]);
        assert_eq!(
            dag.dependencies("widget"),
            [("crd", EdgeKind::Definition), ("ns", EdgeKind::Namespace)]
        );
        assert_eq!(dag.dependencies("config"), [("ns", EdgeKind::Namespace)]);
        assert!(dag.dependencies("other").is_empty());
        assert_eq!(
            dag.dependents("ns"),
            [
                ("widget", EdgeKind::Namespace),
                ("config", EdgeKind::Namespace)
            ]
        );
    }

    #[test]
    fn an_implicit_edge_can_close_a_cycle() {
        // The Namespace explicitly waits for a ConfigMap that lives in it.
        let err = Dag::build(vec![
            node("ns", "v1", "Namespace", None, &["cfg"]),
            node("cfg", "v1", "ConfigMap", Some("ns"), &[]),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            GraphError::Cycle {
                nodes: vec!["ns".into(), "cfg".into()]
            }
        );
    }
}
