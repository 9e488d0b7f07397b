//! Fuzzing (proptest) of what a graph's author controls, as the executor reads it: rendered
//! objects, `ignoreFields`, `dependsOn`, write modes, and the operator's kind patterns.
//!
//! Every property runs `PEQUOD_FUZZ_CASES` cases (2000 when unset, so `cargo xtask test` stays
//! quick; `cargo xtask fuzz` runs a million). Invariants:
//!
//! - `fuzz_graph_sent_object`: whatever `check_ignore_fields` accepts, the object as sent still
//!   has the rendered `apiVersion`, `kind` and `metadata.name`, exactly the namespace decided,
//!   and all of Pequod's ownership marks; a list is accepted iff every entry is, and refusals
//!   name the node.
//! - `fuzz_graph_boundary`: `Boundary::refusal` lets through exactly what the tenant rules
//!   allow (computed here independently): RBAC only with an identity, cluster-scoped kinds only
//!   when granted, a Namespace only with mode Apply, namespaced objects only in the graph's own,
//!   listed or self-created Namespaces.
//! - `fuzz_graph_kind_pattern`: `KindPattern::parse` never panics, and a pattern reads back
//!   from its display as the same pattern.
//! - `fuzz_graph_adoption`: `adoption_refusal` allows only unmarked (or own) objects in the
//!   graph's namespace.
//! - `fuzz_graph_dag`: `Dag::build` either names a real defect (duplicate id or object, unknown
//!   dependency, cycle) or gives a topological order consistent with every explicit and
//!   implicit dependency, with consistent levels.
//! - `fuzz_graph_pipeline`: the executor's validation steps in its order (ignoreFields, object
//!   as sent, identity, boundary, DAG) never panic, and an accepted graph writes only where
//!   the boundary allows, keeping every mark.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use pequod_graph::scope::{
    ANNOTATION_GRAPH_UID, LABEL_GRAPH, LABEL_GRAPH_NAMESPACE, LABEL_NODE, MAX_IGNORE_FIELDS, Owner,
    adoption_refusal, check_ignore_fields, is_namespace, is_rbac, sent_object,
};
use pequod_graph::{Boundary, Dag, GraphError, KindPattern, NodeSpec, ObjectKey, WriteMode};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Map, Value};

/// Cases per property: `PEQUOD_FUZZ_CASES` (underscores allowed), else 2000.
fn cases() -> u32 {
    std::env::var("PEQUOD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(2000)
}

/// Runs `test` on `cases()` values of `strategy` and prints how many ran and how long it took
/// (`cargo xtask fuzz` shows these lines). A panic inside `test` is a failure, shrunk.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let ran = Cell::new(0_u64);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    });
    eprintln!(
        "fuzz {name}: {} cases in {:.1?}",
        ran.get(),
        started.elapsed()
    );
    if let Err(error) = result {
        panic!("{name}: {error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Generators

/// Text a tenant might write: short and colliding, or anything printable, or with controls.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-c]{1,2}",
        2 => "\\PC{0,12}",
        1 => "[\\x00-\\x7f]{0,6}",
        1 => Just(String::new()),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ]
}

/// Any JSON value, at most `depth` levels of containers.
fn json(depth: u32) -> impl Strategy<Value = Value> {
    scalar().prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field that is usually a string from `s`, sometimes absent, sometimes any JSON.
fn field(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => s.prop_map(|s| Some(Value::String(s))),
        1 => Just(None),
        1 => json(1).prop_map(Some),
    ]
}

fn api_version() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "v1",
            "apps/v1",
            "apiextensions.k8s.io/v1",
            "rbac.authorization.k8s.io/v1",
            "example.com/v1",
            "/",
            "a/b/c",
            "",
        ])
        .prop_map(str::to_owned),
        text(),
    ]
}

fn kind() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "Namespace",
            "ConfigMap",
            "CustomResourceDefinition",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "Widget",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

fn namespace_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["team", "other", "kube-system", "a", "b"]).prop_map(str::to_owned),
        1 => text(),
    ]
}

/// Label or annotation keys, Pequod's marks among them.
fn mark_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            LABEL_GRAPH,
            LABEL_GRAPH_NAMESPACE,
            LABEL_NODE,
            ANNOTATION_GRAPH_UID,
            "app",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

fn string_map() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        4 => prop::collection::btree_map(mark_key(), text(), 0..4).prop_map(|m| {
            Some(Value::Object(m.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
        }),
        1 => Just(None),
        1 => json(1).prop_map(Some),
    ]
}

fn insert(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

/// A rendered object: mostly Kubernetes-shaped with hostile parts, sometimes anything.
fn object() -> impl Strategy<Value = Value> {
    let metadata = prop_oneof![
        6 => (field(text()), field(namespace_name()), string_map(), string_map()).prop_map(
            |(name, namespace, labels, annotations)| {
                let mut map = Map::new();
                insert(&mut map, "name", name);
                insert(&mut map, "namespace", namespace);
                insert(&mut map, "labels", labels);
                insert(&mut map, "annotations", annotations);
                Some(Value::Object(map))
            }
        ),
        1 => Just(None),
        1 => json(2).prop_map(Some),
    ];
    let spec = prop_oneof![
        (
            field(prop::sample::select(vec!["example.com", ""]).prop_map(str::to_owned)),
            field(kind())
        )
            .prop_map(|(group, kind)| {
                let mut names = Map::new();
                insert(&mut names, "kind", kind);
                let mut spec = Map::new();
                insert(&mut spec, "group", group);
                spec.insert("names".into(), Value::Object(names));
                Some(Value::Object(spec))
            }),
        json(2).prop_map(Some),
        Just(None),
    ];
    prop_oneof![
        8 => (field(api_version()), field(kind()), metadata, spec, prop::option::of(json(2)))
            .prop_map(|(api_version, kind, metadata, spec, data)| {
                let mut map = Map::new();
                insert(&mut map, "apiVersion", api_version);
                insert(&mut map, "kind", kind);
                insert(&mut map, "metadata", metadata);
                insert(&mut map, "spec", spec);
                insert(&mut map, "data", data);
                Value::Object(map)
            }),
        1 => json(3),
    ]
}

/// JSON pointer segments that aim at what matters, and noise.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "metadata",
            "labels",
            "annotations",
            "namespace",
            "name",
            "apiVersion",
            "kind",
            "spec",
            "data",
            "0",
            "01",
            "+0",
            "-",
            "",
            "platform.pequod.io~1graph",
            "platform.pequod.io~1graph-namespace",
            "platform.pequod.io~1node",
            "platform.pequod.io~1graph-uid",
            "platform.pequod.io~1graph~1",
            "~0",
            "~1",
            "~",
            "~2",
        ])
        .prop_map(str::to_owned),
        "[a-z~0-9/.]{0,6}",
        "\\PC{0,6}",
    ]
}

fn pointer() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(segment(), 0..5)
            .prop_map(|segments| format!("/{}", segments.join("/"))),
        1 => "\\PC{0,12}",
        1 => Just(String::new()),
    ]
}

fn ignore_fields() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        20 => prop::collection::vec(pointer(), 0..5),
        1 => prop::collection::vec(Just("/spec/x".to_owned()), MAX_IGNORE_FIELDS..=MAX_IGNORE_FIELDS + 1),
    ]
}

fn write_mode() -> impl Strategy<Value = WriteMode> {
    prop::sample::select(vec![WriteMode::Apply, WriteMode::Create, WriteMode::Adopt])
}

fn object_key() -> impl Strategy<Value = ObjectKey> {
    (
        prop_oneof![
            3 => prop::sample::select(vec!["", "rbac.authorization.k8s.io", "example.com", "apps"]).prop_map(str::to_owned),
            1 => text(),
        ],
        kind(),
        prop::option::of(namespace_name()),
        namespace_name(),
    )
        .prop_map(|(group, kind, namespace, name)| ObjectKey {
            group,
            kind,
            namespace,
            name,
        })
}

fn kind_pattern_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "*",
            "*.",
            "Namespace",
            "Namespace.",
            "*.rbac.authorization.k8s.io",
            "ClusterRole.rbac.authorization.k8s.io",
            "Widget.example.com",
            " Namespace ",
            "*.*",
            ".",
            "",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z*.\\- ]{0,10}",
        "\\PC{0,10}",
    ]
}

// ---------------------------------------------------------------------------------------------
// Oracles

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The kinds the properties treat as cluster-scoped (what the API server would say).
fn cluster_scoped(api_version: &str, kind: &str) -> bool {
    let group = ObjectKey::group_of(api_version);
    matches!(
        (group, kind),
        ("", "Namespace")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | (
                "rbac.authorization.k8s.io",
                "ClusterRole" | "ClusterRoleBinding"
            )
    )
}

/// The object as sent keeps its identity, the decided namespace and every ownership mark.
fn check_sent(
    rendered: &Value,
    sent: &Value,
    node: &str,
    namespace: Option<&str>,
    owner: &Owner<'_>,
) -> Result<(), TestCaseError> {
    prop_assert!(sent.is_object(), "not an object: {sent}");
    prop_assert!(sent["metadata"].is_object(), "metadata lost: {sent}");
    for pointer in ["/apiVersion", "/kind", "/metadata/name"] {
        if let Some(value) = str_at(rendered, pointer) {
            prop_assert_eq!(str_at(sent, pointer), Some(value), "{} lost", pointer);
        }
    }
    prop_assert_eq!(str_at(sent, "/metadata/namespace"), namespace);
    if namespace.is_none() {
        prop_assert!(sent["metadata"].get("namespace").is_none());
    }
    let labels = &sent["metadata"]["labels"];
    prop_assert_eq!(labels[LABEL_GRAPH].as_str(), Some(owner.name));
    prop_assert_eq!(
        labels[LABEL_GRAPH_NAMESPACE].as_str(),
        Some(owner.namespace)
    );
    prop_assert_eq!(labels[LABEL_NODE].as_str(), Some(node));
    prop_assert_eq!(
        sent["metadata"]["annotations"][ANNOTATION_GRAPH_UID].as_str(),
        Some(owner.uid)
    );
    let identified = ["/apiVersion", "/kind", "/metadata/name"]
        .iter()
        .all(|p| str_at(rendered, p).is_some());
    match NodeSpec::from_object(node, sent, Vec::new()) {
        Ok(spec) => {
            prop_assert!(identified, "identity invented: {rendered} -> {sent}");
            prop_assert_eq!(spec.object.namespace.as_deref(), namespace);
            prop_assert_eq!(
                spec.object.name.as_str(),
                str_at(rendered, "/metadata/name").unwrap_or_default()
            );
        }
        Err(error) => {
            prop_assert!(!identified, "identity lost: {rendered} -> {sent}: {error}");
            prop_assert!(
                matches!(error, GraphError::MalformedObject { .. }),
                "{}",
                error
            );
            prop_assert!(error.to_string().contains(&format!("{node:?}")), "{error}");
        }
    }
    Ok(())
}

/// What the tenant rules allow, computed from the rules rather than from `Boundary`.
struct Rules<'a> {
    namespace: &'a str,
    /// The kind patterns (as written) that `KindPattern::parse` accepted.
    patterns: &'a [String],
    extra: &'a [String],
    /// (key, mode) of every node, for the Namespaces the graph creates itself.
    nodes: &'a [(ObjectKey, WriteMode)],
    impersonating: bool,
    rbac_without_identity: bool,
}

impl Rules<'_> {
    fn granted(&self, key: &ObjectKey) -> bool {
        self.patterns.iter().any(|p| pattern_matches(p, key))
    }

    fn allows(&self, key: &ObjectKey, cluster: bool, mode: WriteMode) -> bool {
        let rbac = key.group == "rbac.authorization.k8s.io"
            && ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
                .contains(&key.kind.as_str());
        if rbac && !self.impersonating && !self.rbac_without_identity {
            return false;
        }
        let namespace_kind = key.group.is_empty() && key.kind == "Namespace";
        if cluster {
            return self.granted(key) && (!namespace_kind || mode == WriteMode::Apply);
        }
        let Some(namespace) = key.namespace.as_deref() else {
            return false;
        };
        let namespace_granted = self.granted(&ObjectKey {
            group: String::new(),
            kind: "Namespace".into(),
            namespace: None,
            name: String::new(),
        });
        namespace == self.namespace
            || self.extra.iter().any(|n| n == namespace)
            || namespace_granted
                && self.nodes.iter().any(|(k, m)| {
                    k.group.is_empty()
                        && k.kind == "Namespace"
                        && k.name == namespace
                        && *m == WriteMode::Apply
                })
    }
}

/// What a kind pattern as written grants: `*` everything, `Kind` that core kind, `Kind.group`
/// that kind, `*.group` every kind of the group.
fn pattern_matches(text: &str, key: &ObjectKey) -> bool {
    let text = text.trim();
    if text == "*" {
        return true;
    }
    let (kind, group) = text.split_once('.').unwrap_or((text, ""));
    (kind == "*" || kind == key.kind) && group == key.group
}

/// Edges (dependency → dependent) as `Dag` documents them: explicit `dependsOn`, the
/// Namespace node an object lives in, the CRD node defining its kind (one node per name: the
/// last one declared, as two nodes for one object are refused anyway).
fn edges(nodes: &[NodeSpec]) -> Option<BTreeSet<(usize, usize)>> {
    let ids: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut namespaces = HashMap::new();
    let mut definitions = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        if node.object.group.is_empty() && node.object.kind == "Namespace" {
            namespaces.insert(node.object.name.as_str(), i);
        }
        if let Some((group, kind)) = &node.defines {
            definitions.insert((group.as_str(), kind.as_str()), i);
        }
    }
    let mut out = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        for dependency in &node.depends_on {
            out.insert((*ids.get(dependency.as_str())?, i));
        }
        if let Some(&ns) = node
            .object
            .namespace
            .as_deref()
            .and_then(|n| namespaces.get(n))
            && ns != i
        {
            out.insert((ns, i));
        }
        if let Some(&crd) =
            definitions.get(&(node.object.group.as_str(), node.object.kind.as_str()))
            && crd != i
        {
            out.insert((crd, i));
        }
    }
    Some(out)
}

/// Whether `edges` over `n` nodes has a cycle (repeatedly removing nodes without incoming
/// edges, the plain way).
fn has_cycle(n: usize, edges: &BTreeSet<(usize, usize)>) -> bool {
    let mut alive: BTreeSet<usize> = (0..n).collect();
    loop {
        let sources: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&v| !edges.iter().any(|&(a, b)| b == v && alive.contains(&a)))
            .collect();
        if sources.is_empty() {
            return !alive.is_empty();
        }
        for v in sources {
            alive.remove(&v);
        }
    }
}

/// `Dag::build` either names a real defect or orders every dependency first.
fn check_dag(nodes: &[NodeSpec]) -> Result<(), TestCaseError> {
    let duplicate_id = (0..nodes.len()).any(|i| nodes[..i].iter().any(|m| m.id == nodes[i].id));
    let duplicate_object =
        (0..nodes.len()).any(|i| nodes[..i].iter().any(|m| m.object == nodes[i].object));
    let edges = edges(nodes);
    let cyclic = edges.as_ref().is_some_and(|e| has_cycle(nodes.len(), e));
    match Dag::build(nodes.to_vec()) {
        Err(GraphError::DuplicateId { id }) => {
            prop_assert!(nodes.iter().filter(|n| n.id == id).count() >= 2);
        }
        Err(GraphError::DuplicateObject {
            first,
            second,
            object,
        }) => {
            let first = nodes.iter().find(|n| n.id == first).expect("first named");
            let second = nodes.iter().find(|n| n.id == second).expect("second named");
            prop_assert_eq!(&first.object, &second.object);
            prop_assert_eq!(first.object.to_string(), object);
        }
        Err(GraphError::UnknownDependency { node, missing }) => {
            prop_assert!(nodes.iter().all(|n| n.id != missing));
            prop_assert!(
                nodes
                    .iter()
                    .any(|n| n.id == node && n.depends_on.contains(&missing))
            );
        }
        Err(GraphError::Cycle { nodes: members }) => {
            prop_assert!(!duplicate_id && !duplicate_object);
            prop_assert!(cyclic, "no cycle in {nodes:?}");
            prop_assert!(!members.is_empty());
            let edges = edges.expect("known dependencies");
            let index: BTreeSet<usize> = members
                .iter()
                .map(|m| {
                    nodes
                        .iter()
                        .position(|n| &n.id == m)
                        .expect("member is a node")
                })
                .collect();
            for &v in &index {
                prop_assert!(
                    edges.iter().any(|&(a, b)| b == v && index.contains(&a)),
                    "{} has no dependency inside the cycle {:?}",
                    nodes[v].id,
                    members
                );
            }
        }
        Err(other) => prop_assert!(false, "unexpected error {other}"),
        Ok(dag) => {
            prop_assert!(!duplicate_id && !duplicate_object && !cyclic);
            let edges = edges.expect("known dependencies");
            let order: Vec<&str> = dag.topological().map(|n| n.id.as_str()).collect();
            prop_assert_eq!(order.len(), nodes.len());
            let position: HashMap<&str, usize> =
                order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            prop_assert_eq!(position.len(), nodes.len(), "order repeats a node");
            for &(from, to) in &edges {
                prop_assert!(
                    position[nodes[from].id.as_str()] < position[nodes[to].id.as_str()],
                    "{} is ordered after its dependent {}",
                    nodes[from].id,
                    nodes[to].id
                );
            }
            for node in nodes {
                let dependencies = dag.dependencies(&node.id);
                let index = |id: &str| nodes.iter().position(|n| n.id == id).expect("node");
                let reported: BTreeSet<(usize, usize)> = dependencies
                    .iter()
                    .map(|(d, _)| (index(d), index(&node.id)))
                    .collect();
                let wanted: BTreeSet<(usize, usize)> = edges
                    .iter()
                    .copied()
                    .filter(|&(_, to)| to == index(&node.id))
                    .collect();
                prop_assert_eq!(reported, wanted, "dependencies of {}", node.id);
                let level = dependencies
                    .iter()
                    .map(|(d, _)| dag.level(d).expect("level") + 1)
                    .max()
                    .unwrap_or(0);
                prop_assert_eq!(dag.level(&node.id), Some(level));
            }
        }
    }
    Ok(())
}

fn node_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]).prop_map(str::to_owned),
        1 => text(),
    ]
}

/// Nodes as `Dag::build` gets them: from rendered objects when they have an identity, else
/// keys made up directly (so every shape of key reaches the DAG).
fn node_specs() -> impl Strategy<Value = Vec<NodeSpec>> {
    prop::collection::vec(
        (
            node_id(),
            prop::collection::vec(node_id(), 0..3),
            prop_oneof![object().prop_map(Ok), object_key().prop_map(Err)],
            prop::option::of((
                prop::sample::select(vec!["", "example.com", "apps"]).prop_map(str::to_owned),
                kind(),
            )),
        )
            .prop_map(|(id, depends_on, object, defines)| match object {
                Ok(object) => {
                    NodeSpec::from_object(&id, &object, depends_on.clone()).unwrap_or(NodeSpec {
                        id,
                        object: ObjectKey {
                            group: String::new(),
                            kind: "ConfigMap".into(),
                            namespace: Some("team".into()),
                            name: "x".into(),
                        },
                        depends_on,
                        defines,
                    })
                }
                Err(object) => NodeSpec {
                    id,
                    object,
                    depends_on,
                    defines,
                },
            }),
        0..8,
    )
}

// ---------------------------------------------------------------------------------------------
// Properties

#[test]
fn fuzz_graph_sent_object() {
    let strategy = (
        object(),
        node_id(),
        ignore_fields(),
        prop::option::of(namespace_name()),
        (text(), namespace_name(), text()),
    );
    fuzz(
        "graph/sent_object",
        strategy,
        |(rendered, node, ignore, namespace, (name, graph_ns, uid))| {
            let owner = Owner {
                name: &name,
                namespace: &graph_ns,
                uid: &uid,
            };
            let checked = check_ignore_fields(&node, &ignore);
            let each_ok = ignore.len() <= MAX_IGNORE_FIELDS
                && ignore
                    .iter()
                    .all(|p| check_ignore_fields(&node, std::slice::from_ref(p)).is_ok());
            prop_assert_eq!(checked.is_ok(), each_ok, "{:?}", ignore);
            match checked {
                Ok(()) => {
                    let sent = sent_object(&rendered, &node, namespace.as_deref(), &owner, &ignore);
                    check_sent(&rendered, &sent, &node, namespace.as_deref(), &owner)?;
                }
                Err(error) => {
                    prop_assert_eq!(error.reason(), "InvalidGraph");
                    prop_assert!(
                        error.to_string().contains(&format!("node {node:?}")),
                        "{}",
                        error
                    );
                    // Even unchecked pointers cannot take the namespace or the marks away.
                    let sent = sent_object(&rendered, &node, namespace.as_deref(), &owner, &ignore);
                    prop_assert_eq!(str_at(&sent, "/metadata/namespace"), namespace.as_deref());
                    prop_assert_eq!(
                        sent["metadata"]["labels"][LABEL_GRAPH].as_str(),
                        Some(owner.name)
                    );
                }
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_graph_boundary() {
    let strategy = (
        object_key(),
        any::<bool>(),
        write_mode(),
        namespace_name(),
        prop::collection::vec(kind_pattern_text(), 0..3),
        prop::collection::vec(namespace_name(), 0..2),
        prop::collection::vec((object_key(), write_mode()), 0..4),
        any::<(bool, bool)>(),
        node_id(),
    );
    fuzz(
        "graph/boundary",
        strategy,
        |(
            key,
            cluster,
            mode,
            namespace,
            patterns,
            extra,
            nodes,
            (impersonating, rbac_without_identity),
            node,
        )| {
            let accepted: Vec<String> = patterns
                .iter()
                .filter(|p| KindPattern::parse(p).is_ok())
                .cloned()
                .collect();
            let kinds: Vec<KindPattern> = accepted
                .iter()
                .filter_map(|p| KindPattern::parse(p).ok())
                .collect();
            let boundary = Boundary {
                namespace: namespace.clone(),
                cluster_kinds: kinds.clone(),
                extra_namespaces: extra.clone(),
                impersonating,
                rbac_without_identity,
                ..Boundary::default()
            }
            .with_own_namespaces(nodes.iter().map(|(k, m)| (k, *m)));
            let rules = Rules {
                namespace: &namespace,
                patterns: &accepted,
                extra: &extra,
                nodes: &nodes,
                impersonating,
                rbac_without_identity,
            };
            let refusal = boundary.refusal(&node, &key, cluster, mode);
            prop_assert_eq!(
                refusal.is_none(),
                rules.allows(&key, cluster, mode),
                "{:?} cluster={} {:?} patterns={:?}: {:?}",
                key,
                cluster,
                mode,
                patterns,
                refusal
            );
            if let Some(refusal) = refusal {
                prop_assert!(matches!(
                    refusal.reason(),
                    "OutOfScope" | "RBACRequiresIdentity"
                ));
                prop_assert_eq!(
                    refusal.reason() == "RBACRequiresIdentity",
                    is_rbac(&key) && !impersonating && !rbac_without_identity
                );
                prop_assert!(
                    refusal.to_string().contains(&format!("node {node:?}")),
                    "{}",
                    refusal
                );
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_graph_kind_pattern() {
    fuzz(
        "graph/kind_pattern",
        (kind_pattern_text(), object_key()),
        |(text, key)| {
            if let Ok(pattern) = KindPattern::parse(&text) {
                let shown = pattern.to_string();
                let again = KindPattern::parse(&shown);
                prop_assert!(
                    again.is_ok(),
                    "{:?} shows as {:?}, which does not parse",
                    text,
                    shown
                );
                let again = again.expect("parsed");
                prop_assert_eq!(
                    pattern.matches(&key),
                    again.matches(&key),
                    "{:?} shows as {:?}, which means something else for {:?}",
                    text,
                    shown,
                    key
                );
                prop_assert_eq!(
                    pattern.matches(&key),
                    pattern_matches(&text, &key),
                    "{:?} against {:?}",
                    text,
                    key
                );
                if is_namespace(&key) && pattern.matches(&key) {
                    prop_assert!(matches!(
                        text.trim(),
                        "*" | "*." | "Namespace" | "Namespace."
                    ));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_graph_adoption() {
    let strategy = (
        (text(), namespace_name(), text()),
        prop::option::of(namespace_name()),
        prop::collection::btree_map(mark_key(), text(), 0..4),
        prop::collection::btree_map(mark_key(), text(), 0..4),
    );
    fuzz(
        "graph/adoption",
        strategy,
        |((name, namespace, uid), live, labels, annotations)| {
            let owner = Owner {
                name: &name,
                namespace: &namespace,
                uid: &uid,
            };
            let refusal = adoption_refusal(&owner, live.as_deref(), &labels, &annotations);
            let ours = annotations.get(ANNOTATION_GRAPH_UID) == Some(&uid);
            let marked =
                annotations.contains_key(ANNOTATION_GRAPH_UID) || labels.contains_key(LABEL_GRAPH);
            let allowed = (ours || !marked) && live.as_deref() == Some(namespace.as_str());
            prop_assert_eq!(refusal.is_none(), allowed, "{:?}", refusal);
            Ok(())
        },
    );
}

#[test]
fn fuzz_graph_dag() {
    fuzz("graph/dag", node_specs(), |nodes| check_dag(&nodes));
}

/// A node as rendered: id, object, `ignoreFields`, `dependsOn`, mode.
type Rendered = (String, Value, Vec<String>, Vec<String>, WriteMode);

/// Per node: its identity, its object as sent, whether it is cluster-scoped.
type Sent = (Vec<NodeSpec>, Vec<Value>, Vec<bool>);

/// The first steps of the executor's `validate`: each node's ignoreFields checked, its
/// namespace decided, its object as sent built and checked, its identity read. `None` when
/// the graph is refused on the way (as the executor would refuse it).
fn objects_as_sent(
    nodes: &[Rendered],
    namespace: &str,
    owner: &Owner<'_>,
) -> Result<Option<Sent>, TestCaseError> {
    let mut specs = Vec::new();
    let mut sent = Vec::new();
    let mut cluster = Vec::new();
    for (id, rendered, ignore, depends_on, _) in nodes {
        if check_ignore_fields(id, ignore).is_err() {
            return Ok(None);
        }
        let api_version = rendered["apiVersion"].as_str().unwrap_or_default();
        let kind = rendered["kind"].as_str().unwrap_or_default();
        let namespaced = !cluster_scoped(api_version, kind);
        let resolved = namespaced.then(|| {
            str_at(rendered, "/metadata/namespace")
                .unwrap_or(namespace)
                .to_owned()
        });
        let desired = sent_object(rendered, id, resolved.as_deref(), owner, ignore);
        check_sent(rendered, &desired, id, resolved.as_deref(), owner)?;
        let Ok(spec) = NodeSpec::from_object(id, &desired, depends_on.clone()) else {
            return Ok(None);
        };
        specs.push(spec);
        sent.push(desired);
        cluster.push(!namespaced);
    }
    Ok(Some((specs, sent, cluster)))
}

#[test]
fn fuzz_graph_pipeline() {
    let node = (
        node_id(),
        object(),
        ignore_fields(),
        prop::collection::vec(node_id(), 0..3),
        write_mode(),
    );
    let strategy = (
        prop::collection::vec(node, 0..6),
        namespace_name(),
        prop::collection::vec(kind_pattern_text(), 0..2),
        prop::collection::vec(namespace_name(), 0..2),
        any::<(bool, bool)>(),
    );
    fuzz(
        "graph/pipeline",
        strategy,
        |(nodes, namespace, patterns, extra, (impersonating, rbac_without_identity))| {
            let owner = Owner {
                name: "g",
                namespace: &namespace,
                uid: "u",
            };
            let accepted: Vec<String> = patterns
                .iter()
                .filter(|p| KindPattern::parse(p).is_ok())
                .cloned()
                .collect();
            let kinds: Vec<KindPattern> = accepted
                .iter()
                .filter_map(|p| KindPattern::parse(p).ok())
                .collect();
            let Some((specs, sent, cluster)) = objects_as_sent(&nodes, &namespace, &owner)? else {
                return Ok(());
            };
            let modes: Vec<(ObjectKey, WriteMode)> = specs
                .iter()
                .zip(&nodes)
                .map(|(s, n)| (s.object.clone(), n.4))
                .collect();
            let boundary = Boundary {
                namespace: namespace.clone(),
                cluster_kinds: kinds.clone(),
                extra_namespaces: extra.clone(),
                impersonating,
                rbac_without_identity,
                ..Boundary::default()
            }
            .with_own_namespaces(modes.iter().map(|(k, m)| (k, *m)));
            let rules = Rules {
                namespace: &namespace,
                patterns: &accepted,
                extra: &extra,
                nodes: &modes,
                impersonating,
                rbac_without_identity,
            };
            for ((spec, (_, mode)), cluster) in specs.iter().zip(&modes).zip(&cluster) {
                let refused = boundary
                    .refusal(&spec.id, &spec.object, *cluster, *mode)
                    .is_some();
                prop_assert_eq!(!refused, rules.allows(&spec.object, *cluster, *mode));
                if refused {
                    return Ok(());
                }
            }
            // Accepted by the boundary: every object lands where the tenant may write.
            for (object, cluster) in sent.iter().zip(&cluster) {
                match str_at(object, "/metadata/namespace") {
                    Some(ns) => prop_assert!(
                        !cluster
                            && (ns == namespace
                                || extra.iter().any(|e| e == ns)
                                || boundary.own_namespaces.contains(ns)),
                        "{} written to {}",
                        object,
                        ns
                    ),
                    None => prop_assert!(*cluster),
                }
            }
            check_dag(&specs)
        },
    );
}
