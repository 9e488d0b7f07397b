//! The executor against a real kube-apiserver: order, readiness gates, checks before writes,
//! failure isolation, conflicts, inventory, Kubernetes Events on transitions and a steady
//! state without writes. Each test works in its own namespace and drives `reconcile`
//! directly, one pass at a time.

mod support;

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use pequod_api::{ConflictPolicy, GraphNode, GraphPhase, NodePhase, ResourceGraph};
use pequod_graph_executor::{Config, Context, Scope, reconcile};
use pequod_testenv::{Profile, shared};
use serde_json::{Value, json};
use support::{config_map, exists, field_equals, graph, node};

async fn setup(prefix: &str) -> (Client, String, Arc<Context>) {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), prefix).await;
    let reporter = Reporter {
        controller: pequod_graph_executor::REPORTER.into(),
        instance: None,
    };
    let ctx = Context::new(client.clone(), Config::default())
        .with_recorder(Recorder::new(client.clone(), reporter));
    (client, ns, Arc::new(ctx))
}

/// The executor's events on graph `name`, oldest first: (reason, note, related object name,
/// times seen). Events of the same reason about the same objects fold into one series.
async fn events_of(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String, i32)> {
    let mut events: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some(pequod_graph_executor::REPORTER)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
        .into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.related.and_then(|r| r.name).unwrap_or_default(),
                e.series.map_or(1, |s| s.count),
            )
        })
        .collect()
}

/// Just the reasons and related object names of `events_of`.
async fn reasons_of(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    events_of(client, ns, name)
        .await
        .into_iter()
        .map(|(reason, _, related, _)| (reason, related))
        .collect()
}

/// The notes of the events with `reason`.
fn notes_of<'a>(events: &'a [(String, String, String, i32)], reason: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e.0 == reason)
        .map(|e| e.1.as_str())
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn create_graph(
    client: &Client,
    ns: &str,
    name: &str,
    nodes: Vec<GraphNode>,
) -> Api<ResourceGraph> {
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), ns);
    let graph = graph(name, nodes);
    graphs
        .create(&PostParams::default(), &graph)
        .await
        .expect("graph created");
    graphs
}

/// One reconcile pass on the current version of the graph.
async fn pass(
    graphs: &Api<ResourceGraph>,
    name: &str,
    ctx: &Arc<Context>,
) -> (ResourceGraph, Action) {
    let graph = graphs.get(name).await.expect("graph");
    let action = reconcile(Arc::new(graph), ctx.clone())
        .await
        .expect("reconcile");
    (graphs.get(name).await.expect("graph"), action)
}

fn phase_of(graph: &ResourceGraph, id: &str) -> Option<NodePhase> {
    graph
        .status
        .as_ref()?
        .nodes
        .iter()
        .find(|n| n.id == id)
        .map(|n| n.phase)
}

fn message_of(graph: &ResourceGraph, id: &str) -> String {
    graph
        .status
        .as_ref()
        .and_then(|s| s.nodes.iter().find(|n| n.id == id))
        .and_then(|n| n.message.clone())
        .unwrap_or_default()
}

async fn names(client: &Client, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&kube::api::ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| n != "kube-root-ca.crt")
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn applies_in_dependency_order_one_level_per_pass_then_stays_still() {
    let (client, ns, ctx) = setup("order").await;
    let nodes = vec![
        node("c", config_map("c", json!({"k": "c"})), &["b"]),
        node("b", config_map("b", json!({"k": "b"})), &["a"]),
        node("a", config_map("a", json!({"k": "a"})), &[]),
    ];
    let graphs = create_graph(&client, &ns, "order", nodes).await;

    let (graph, _) = pass(&graphs, "order", &ctx).await;
    assert_eq!(
        names(&client, &ns).await,
        ["a"],
        "only the root is applied first"
    );
    assert_eq!(phase_of(&graph, "b"), Some(NodePhase::Blocked));
    assert!(message_of(&graph, "b").contains("waiting for \"a\""));
    assert_eq!(
        graph.status.as_ref().and_then(|s| s.phase),
        Some(GraphPhase::Progressing)
    );

    pass(&graphs, "order", &ctx).await;
    assert_eq!(names(&client, &ns).await, ["a", "b"]);
    let (graph, action) = pass(&graphs, "order", &ctx).await;
    assert_eq!(names(&client, &ns).await, ["a", "b", "c"]);
    assert_eq!(
        graph.status.as_ref().and_then(|s| s.phase),
        Some(GraphPhase::Ready)
    );
    assert_eq!(action, Action::await_change());
    assert!(pequod_api::conditions::is_true(
        &graph.status.as_ref().expect("status").conditions,
        "Ready"
    ));

    // Events: each node once as it is applied, readiness once for the whole graph.
    let events = events_of(&client, &ns, "order").await;
    let expected = [
        ("Applied", "ConfigMap a applied", "a"),
        ("Applied", "ConfigMap b applied", "b"),
        ("Applied", "ConfigMap c applied", "c"),
        ("Ready", "all 3 nodes ready, revision 1", ""),
    ];
    let seen: Vec<(&str, &str, &str, i32)> = events
        .iter()
        .map(|(r, n, o, c)| (r.as_str(), n.as_str(), o.as_str(), *c))
        .collect();
    assert_eq!(
        seen,
        expected.map(|(r, n, o)| (r, n, o, 1)),
        "events on the graph"
    );

    // Inventory: every object with its UID and level.
    let inventory = &graph.status.as_ref().expect("status").inventory;
    let levels: Vec<(String, u32, bool)> = inventory
        .iter()
        .map(|e| (e.id.clone(), e.level, e.uid.is_some()))
        .collect();
    assert_eq!(
        levels,
        [
            ("a".into(), 0, true),
            ("b".into(), 1, true),
            ("c".into(), 2, true)
        ]
    );

    // Metrics: every apply per GVK, one DAG pass per reconcile, the inventory size.
    let applied =
        r#"pequod_apply_total{group="",version="v1",kind="ConfigMap",result="success"} 3"#;
    let managed = format!(r#"pequod_managed_resources{{namespace="{ns}",graph="order"}} 3"#);
    let text = ctx.metrics.encode();
    for series in [
        applied,
        &managed,
        "pequod_dag_execution_duration_seconds_count 3",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "no {series:?} in\n{text}"
        );
    }

    // Steady state: no write to the graph or to any object.
    let versions = |g: &ResourceGraph| g.resource_version();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let before: Vec<Option<String>> = futures_versions(&cms, &["a", "b", "c"]).await;
    let (after, _) = pass(&graphs, "order", &ctx).await;
    assert_eq!(
        versions(&after),
        versions(&graph),
        "steady state wrote the graph status"
    );
    assert_eq!(
        futures_versions(&cms, &["a", "b", "c"]).await,
        before,
        "steady state wrote an object"
    );
    assert!(
        ctx.metrics.encode().lines().any(|l| l == applied),
        "steady state applied"
    );
    assert_eq!(
        events_of(&client, &ns, "order").await,
        events,
        "steady state published an event"
    );
}

async fn futures_versions(cms: &Api<ConfigMap>, names: &[&str]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for name in names {
        out.push(cms.get(name).await.expect("cm").resource_version());
    }
    out
}

#[tokio::test]
async fn a_readiness_rule_gates_dependents_until_it_holds() {
    let (client, ns, ctx) = setup("gate").await;
    let mut gate = node("gate", config_map("gate", json!({"k": "v"})), &[]);
    gate.ready_when = vec![field_equals("data.ready", "yes")];
    let graphs = create_graph(
        &client,
        &ns,
        "gate",
        vec![gate, node("app", config_map("app", json!({})), &["gate"])],
    )
    .await;
    for _ in 0..3 {
        pass(&graphs, "gate", &ctx).await;
    }
    let (graph, _) = pass(&graphs, "gate", &ctx).await;
    assert_eq!(
        names(&client, &ns).await,
        ["gate"],
        "dependent waits for the rule"
    );
    assert_eq!(phase_of(&graph, "gate"), Some(NodePhase::Applied));
    assert!(
        message_of(&graph, "gate").contains("data.ready is not set"),
        "{}",
        message_of(&graph, "gate")
    );

    // Someone else (another field manager) makes the rule hold.
    let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gate"}, "data": {"ready": "yes"}});
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch(
            "gate",
            &PatchParams::apply("operator-of-gate"),
            &Patch::Apply(&patch),
        )
        .await
        .expect("patch");
    pass(&graphs, "gate", &ctx).await;
    assert_eq!(names(&client, &ns).await, ["app", "gate"]);
}

#[tokio::test]
async fn invalid_or_out_of_scope_graphs_stall_before_any_write() {
    let (client, ns, ctx) = setup("refuse").await;
    let cases = [
        (
            "cycle",
            vec![
                node("x", config_map("x", json!({})), &["y"]),
                node("y", config_map("y", json!({})), &["x"]),
            ],
            "InvalidGraph",
            "dependency cycle between nodes \"x\", \"y\"",
        ),
        (
            "unknown-dep",
            vec![node("x", config_map("x", json!({})), &["ghost"])],
            "InvalidGraph",
            "depends on \"ghost\"",
        ),
        (
            "other-namespace",
            vec![
                node("x", config_map("x", json!({})), &[]),
                node(
                    "y",
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y", "namespace": "kube-system"}}),
                    &[],
                ),
            ],
            "OutOfScope",
            "node \"y\": ConfigMap kube-system/y is in namespace \"kube-system\"",
        ),
        (
            "cluster-scoped",
            vec![
                node("x", config_map("x", json!({})), &[]),
                node(
                    "ns",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sneaky"}}),
                    &[],
                ),
            ],
            "OutOfScope",
            "cluster-scoped",
        ),
    ];
    for (name, nodes, reason, message) in cases {
        let graphs = create_graph(&client, &ns, name, nodes).await;
        let (graph, action) = pass(&graphs, name, &ctx).await;
        let status = graph.status.expect("status written");
        let stalled =
            pequod_api::conditions::find(&status.conditions, "Stalled").expect("Stalled condition");
        assert_eq!(stalled.reason, reason, "{name}");
        assert!(
            stalled.message.contains(message),
            "{name}: {}",
            stalled.message
        );
        assert_eq!(status.phase, Some(GraphPhase::Failed));
        assert!(status.inventory.is_empty(), "{name}: nothing recorded");
        assert_eq!(action, Action::await_change());
        assert!(
            names(&client, &ns).await.is_empty(),
            "{name}: nothing applied"
        );
        pass(&graphs, name, &ctx).await;
        let events = events_of(&client, &ns, name).await;
        assert_eq!(events.len(), 1, "{name}: stalled once: {events:?}");
        let (event_reason, note, _, count) = &events[0];
        assert_eq!((event_reason.as_str(), *count), (reason, 1), "{name}");
        assert!(note.contains(message), "{name}: {note}");
    }
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    assert!(namespaces.get_opt("sneaky").await.expect("get").is_none());

    // The same cluster-scoped graph is applied when the operator allows it.
    let scope = Scope::default().all_cluster_kinds();
    let allowing = Arc::new(Context::new(
        client.clone(),
        Config {
            scope,
            ..Config::default()
        },
    ));
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    pass(&graphs, "cluster-scoped", &allowing).await;
    assert!(namespaces.get_opt("sneaky").await.expect("get").is_some());
}

#[tokio::test]
async fn a_failed_node_blocks_only_its_dependents() {
    let (client, ns, ctx) = setup("isolate").await;
    // An object that exists and is not ours: the node fails (mode Apply, not Adopt).
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(config_map("taken", json!({"owner": "someone"}))).expect("cm"),
        )
        .await
        .expect("pre-existing object");
    let nodes = vec![
        node("taken", config_map("taken", json!({"k": "v"})), &[]),
        node(
            "after-taken",
            config_map("after-taken", json!({})),
            &["taken"],
        ),
        node("free", config_map("free", json!({})), &[]),
        node("after-free", config_map("after-free", json!({})), &["free"]),
    ];
    let graphs = create_graph(&client, &ns, "isolate", nodes).await;
    for _ in 0..3 {
        pass(&graphs, "isolate", &ctx).await;
    }
    let (graph, _) = pass(&graphs, "isolate", &ctx).await;
    assert_eq!(phase_of(&graph, "taken"), Some(NodePhase::Failed));
    assert!(
        message_of(&graph, "taken").contains("not managed by this graph"),
        "{}",
        message_of(&graph, "taken")
    );
    assert_eq!(phase_of(&graph, "after-taken"), Some(NodePhase::Blocked));
    assert!(message_of(&graph, "after-taken").contains("dependency \"taken\" failed"));
    assert_eq!(phase_of(&graph, "free"), Some(NodePhase::Ready));
    assert_eq!(phase_of(&graph, "after-free"), Some(NodePhase::Ready));
    assert_eq!(
        graph.status.as_ref().and_then(|s| s.phase),
        Some(GraphPhase::Failed)
    );
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("taken")
        .await
        .expect("cm");
    assert_eq!(
        cm.data.expect("data").get("owner").map(String::as_str),
        Some("someone"),
        "left untouched"
    );
    // Four passes failing the same way: said once.
    let events = events_of(&client, &ns, "isolate").await;
    assert_eq!(
        reasons_of(&client, &ns, "isolate").await,
        pairs(&[
            ("ApplyFailed", "taken"),
            ("Applied", "free"),
            ("Applied", "after-free")
        ]),
        "{events:?}"
    );
    assert!(
        events[0]
            .1
            .starts_with("ConfigMap taken: taken already exists")
    );
    assert!(events.iter().all(|e| e.3 == 1), "{events:?}");
}

#[tokio::test]
async fn a_conflict_fails_under_error_and_is_taken_over_under_force() {
    let (client, ns, ctx) = setup("conflict").await;
    let graphs = create_graph(
        &client,
        &ns,
        "conflict",
        vec![node("cfg", config_map("cfg", json!({"mode": "ours"})), &[])],
    )
    .await;
    pass(&graphs, "conflict", &ctx).await;

    // Another manager forces its own value of a field we own.
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"mode": "theirs"}});
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    cms.patch(
        "cfg",
        &PatchParams::apply("intruder").force(),
        &Patch::Apply(&theirs),
    )
    .await
    .expect("intruder");

    // A new render changes the field: without Force the apply conflicts.
    let set_nodes = |policy: ConflictPolicy| {
        let mut n = node("cfg", config_map("cfg", json!({"mode": "new"})), &[]);
        n.apply_policy.conflict_policy = policy;
        json!({"spec": {"nodes": [n]}})
    };
    graphs
        .patch(
            "conflict",
            &PatchParams::default(),
            &Patch::Merge(set_nodes(ConflictPolicy::Error)),
        )
        .await
        .expect("update");
    let (graph, _) = pass(&graphs, "conflict", &ctx).await;
    assert_eq!(phase_of(&graph, "cfg"), Some(NodePhase::Failed));
    assert!(
        message_of(&graph, "cfg").contains("conflict with another field manager"),
        "{}",
        message_of(&graph, "cfg")
    );
    assert!(message_of(&graph, "cfg").contains("conflictPolicy Force"));
    assert_eq!(
        cms.get("cfg").await.expect("cm").data.expect("data")["mode"],
        "theirs"
    );

    graphs
        .patch(
            "conflict",
            &PatchParams::default(),
            &Patch::Merge(set_nodes(ConflictPolicy::Force)),
        )
        .await
        .expect("update");
    let (graph, _) = pass(&graphs, "conflict", &ctx).await;
    assert_eq!(phase_of(&graph, "cfg"), Some(NodePhase::Ready));
    assert_eq!(
        cms.get("cfg").await.expect("cm").data.expect("data")["mode"],
        "new"
    );
}

#[tokio::test]
async fn an_immutable_change_fails_under_error_and_re_creates_under_force() {
    let (client, ns, ctx) = setup("immutable").await;
    let immutable = |data: &str| {
        let mut object = config_map("frozen", json!({"v": data}));
        object["immutable"] = json!(true);
        object
    };
    let graphs = create_graph(
        &client,
        &ns,
        "immutable",
        vec![node("cfg", immutable("one"), &[])],
    )
    .await;
    pass(&graphs, "immutable", &ctx).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let first = cms.get("frozen").await.expect("created").uid();

    let set_nodes = |policy: ConflictPolicy| {
        let mut n = node("cfg", immutable("two"), &[]);
        n.apply_policy.conflict_policy = policy;
        json!({"spec": {"nodes": [n]}})
    };
    graphs
        .patch(
            "immutable",
            &PatchParams::default(),
            &Patch::Merge(set_nodes(ConflictPolicy::Error)),
        )
        .await
        .expect("update");
    let (graph, _) = pass(&graphs, "immutable", &ctx).await;
    assert_eq!(phase_of(&graph, "cfg"), Some(NodePhase::Failed));
    let message = message_of(&graph, "cfg");
    assert!(
        message.contains("immutable") && message.contains("delete and re-create"),
        "{message}"
    );
    assert_eq!(cms.get("frozen").await.expect("cm").uid(), first);

    graphs
        .patch(
            "immutable",
            &PatchParams::default(),
            &Patch::Merge(set_nodes(ConflictPolicy::Force)),
        )
        .await
        .expect("update");
    let (graph, _) = pass(&graphs, "immutable", &ctx).await;
    assert_eq!(
        phase_of(&graph, "cfg"),
        Some(NodePhase::Ready),
        "{}",
        message_of(&graph, "cfg")
    );
    let recreated = cms.get("frozen").await.expect("re-created");
    assert_ne!(recreated.uid(), first, "a new object");
    assert_eq!(recreated.data.as_ref().expect("data")["v"], "two");
    let inventory_uid = graph
        .status
        .as_ref()
        .and_then(|s| s.inventory.iter().find(|e| e.id == "cfg"))
        .map(|e| e.uid.clone());
    assert_eq!(inventory_uid.flatten(), recreated.uid());
}

#[tokio::test]
async fn adopting_a_kubectl_applied_object_takes_its_fields_over() {
    let (client, ns, ctx) = setup("takeover").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    // As `kubectl apply` (client-side) leaves it: its manager and its last-applied annotation.
    let mut theirs: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "legacy",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "data": {"kept": "1", "dropped": "2"},
    }))
    .expect("ConfigMap");
    theirs = cms
        .create(
            &PostParams {
                field_manager: Some("kubectl-client-side-apply".into()),
                ..PostParams::default()
            },
            &theirs,
        )
        .await
        .expect("kubectl's ConfigMap");
    let mut adopt = node("cfg", config_map("legacy", json!({"kept": "1"})), &[]);
    adopt.apply_policy.mode = pequod_api::ApplyMode::Adopt;
    let graphs = create_graph(&client, &ns, "takeover", vec![adopt]).await;
    let (graph, _) = pass(&graphs, "takeover", &ctx).await;
    assert_eq!(
        phase_of(&graph, "cfg"),
        Some(NodePhase::Ready),
        "{}",
        message_of(&graph, "cfg")
    );
    let live = cms.get("legacy").await.expect("ConfigMap");
    assert_eq!(live.uid(), theirs.uid(), "taken over, not re-created");
    assert_eq!(
        live.data.clone().unwrap_or_default(),
        std::collections::BTreeMap::from([("kept".to_owned(), "1".to_owned())]),
        "the field the module does not render went with kubectl's ownership"
    );
    assert!(
        !live
            .annotations()
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );
    let managers: Vec<String> = live
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !managers.iter().any(|m| m.starts_with("kubectl")),
        "{managers:?}"
    );
}

async fn drive_until_ready(
    graphs: &Api<ResourceGraph>,
    name: &str,
    ctx: &Arc<Context>,
) -> ResourceGraph {
    for _ in 0..10 {
        let (graph, _) = pass(graphs, name, ctx).await;
        if graph.status.as_ref().and_then(|s| s.phase) == Some(GraphPhase::Ready) {
            return graph;
        }
    }
    panic!("{name} did not become Ready in 10 passes");
}

fn is_ours(cm: &ConfigMap) -> bool {
    cm.labels().contains_key(pequod_graph_executor::LABEL_GRAPH)
        || cm
            .annotations()
            .contains_key(pequod_graph_executor::ANNOTATION_GRAPH_UID)
}

#[tokio::test]
async fn removed_nodes_are_pruned_except_protected_and_orphaned_ones() {
    let (client, ns, ctx) = setup("prune").await;
    let mut orphan = node("orphan", config_map("orphan", json!({})), &[]);
    orphan.apply_policy.deletion_policy = pequod_api::DeletionPolicy::Orphan;
    let all = vec![
        node("keep", config_map("keep", json!({})), &[]),
        node("drop", config_map("drop", json!({})), &["keep"]),
        node("protect", config_map("protect", json!({})), &[]),
        orphan,
    ];
    let graphs = create_graph(&client, &ns, "prune", all).await;
    drive_until_ready(&graphs, "prune", &ctx).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let protect =
        json!({"metadata": {"annotations": {pequod_graph_executor::ANNOTATION_PRUNE: "disabled"}}});
    cms.patch("protect", &PatchParams::default(), &Patch::Merge(&protect))
        .await
        .expect("annotate");

    let keep_only = json!({"spec": {"nodes": [node("keep", config_map("keep", json!({})), &[])]}});
    graphs
        .patch("prune", &PatchParams::default(), &Patch::Merge(&keep_only))
        .await
        .expect("update");
    let graph = drive_until_ready(&graphs, "prune", &ctx).await;

    assert_eq!(
        names(&client, &ns).await,
        ["keep", "orphan", "protect"],
        "drop was pruned"
    );
    assert!(
        !is_ours(&cms.get("protect").await.expect("cm")),
        "protected object released"
    );
    assert!(
        !is_ours(&cms.get("orphan").await.expect("cm")),
        "orphaned object released"
    );
    assert!(is_ours(&cms.get("keep").await.expect("cm")));
    let inventory: Vec<&str> = graph
        .status
        .as_ref()
        .expect("status")
        .inventory
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(inventory, ["keep"]);
    let pruned = r#"pequod_prune_total{kind="ConfigMap"} 3"#;
    let text = ctx.metrics.encode();
    assert!(text.lines().any(|l| l == pruned), "{text}");

    let events = events_of(&client, &ns, "prune").await;
    let after_ready: Vec<(&str, &str)> = events
        .iter()
        .skip_while(|e| e.0 != "Ready")
        .skip(1)
        .map(|e| (e.0.as_str(), e.1.as_str()))
        .collect();
    assert_eq!(
        after_ready,
        [
            ("Pruned", "ConfigMap drop pruned: no longer rendered"),
            (
                "Orphaned",
                "ConfigMap protect left in place (platform.pequod.io/prune: disabled), released"
            ),
            (
                "Orphaned",
                "ConfigMap orphan left in place (deletionPolicy Orphan), released"
            ),
        ],
        "{events:?}"
    );
}

#[tokio::test]
async fn deleting_a_graph_tears_down_in_reverse_order_then_releases_the_finalizer() {
    let (client, ns, ctx) = setup("teardown").await;
    let mut orphan = node("orphan", config_map("orphan", json!({})), &[]);
    orphan.apply_policy.deletion_policy = pequod_api::DeletionPolicy::Orphan;
    let nodes = vec![
        node("a", config_map("a", json!({})), &[]),
        node("b", config_map("b", json!({})), &["a"]),
        node("c", config_map("c", json!({})), &["b"]),
        orphan,
    ];
    let graphs = create_graph(&client, &ns, "teardown", nodes).await;
    let graph = drive_until_ready(&graphs, "teardown", &ctx).await;
    assert!(
        graph
            .finalizers()
            .iter()
            .any(|f| f == pequod_graph_executor::FINALIZER)
    );

    graphs
        .delete("teardown", &kube::api::DeleteParams::default())
        .await
        .expect("delete accepted");
    let mut seen = Vec::new();
    for _ in 0..10 {
        let Some(graph) = graphs.get_opt("teardown").await.expect("get") else {
            break;
        };
        reconcile(Arc::new(graph), ctx.clone())
            .await
            .expect("reconcile");
        seen.push(names(&client, &ns).await);
    }
    assert!(
        graphs.get_opt("teardown").await.expect("get").is_none(),
        "finalizer released, graph gone"
    );
    assert_eq!(
        seen,
        [
            vec!["a".to_owned(), "b".into(), "orphan".into()],
            vec!["a".to_owned(), "orphan".into()],
            vec!["orphan".to_owned()],
        ],
        "one level per pass, dependents first; the orphan stays"
    );
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    assert!(!is_ours(&cms.get("orphan").await.expect("orphan kept")));
    let text = ctx.metrics.encode();
    assert!(
        !text.contains(r#"graph="teardown""#),
        "the graph's series go with it: {text}"
    );
}

#[tokio::test]
async fn drift_is_corrected_or_reported_and_ignored_fields_are_left_alone() {
    let (client, ns, ctx) = setup("drift").await;
    let mut scaled = node(
        "scaled",
        config_map("scaled", json!({"replicas": "2", "mode": "ours"})),
        &[],
    );
    scaled.apply_policy.ignore_fields = vec!["/data/replicas".into()];
    let graphs = create_graph(
        &client,
        &ns,
        "drift",
        vec![
            node("cfg", config_map("cfg", json!({"k": "ours"})), &[]),
            scaled,
        ],
    )
    .await;
    drive_until_ready(&graphs, "drift", &ctx).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let data = |cm: ConfigMap| cm.data.unwrap_or_default();
    assert!(
        !data(cms.get("scaled").await.expect("cm")).contains_key("replicas"),
        "ignored fields are not applied"
    );

    // Someone edits a field we own (an Update, like `kubectl edit`), and sets the ignored one.
    let edit = |k: &str| json!({"data": {"k": k}});
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(edit("theirs")),
    )
    .await
    .expect("edit");
    cms.patch(
        "scaled",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"replicas": "7"}})),
    )
    .await
    .expect("hpa");

    // Correct (the default): reverted on the next pass; the ignored field stays theirs.
    let (graph, _) = pass(&graphs, "drift", &ctx).await;
    assert_eq!(data(cms.get("cfg").await.expect("cm"))["k"], "ours");
    assert_eq!(data(cms.get("scaled").await.expect("cm"))["replicas"], "7");
    assert!(
        pequod_api::conditions::find(&graph.status.expect("status").conditions, "Drifted")
            .is_none()
    );

    // Report: left as is, with a Drifted condition naming the object and field.
    graphs
        .patch(
            "drift",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"driftPolicy": "Report"}})),
        )
        .await
        .expect("policy");
    cms.patch(
        "cfg",
        &PatchParams::default(),
        &Patch::Merge(edit("theirs-again")),
    )
    .await
    .expect("edit");
    let (graph, _) = pass(&graphs, "drift", &ctx).await;
    assert_eq!(data(cms.get("cfg").await.expect("cm"))["k"], "theirs-again");
    let status = graph.status.expect("status");
    let drifted =
        pequod_api::conditions::find(&status.conditions, "Drifted").expect("Drifted condition");
    assert_eq!(drifted.status, "True");
    assert!(
        drifted.message.contains("ConfigMap cfg: /data/k"),
        "{}",
        drifted.message
    );
    assert!(
        !drifted.message.contains("replicas"),
        "ignored fields are not drift: {}",
        drifted.message
    );
    let events = events_of(&client, &ns, "drift").await;
    let notes = |reason: &str| notes_of(&events, reason);
    assert_eq!(
        notes("DriftCorrected"),
        ["ConfigMap cfg: /data/k changed by another manager, corrected"],
        "{events:?}"
    );
    assert_eq!(notes("Drifted"), [drifted.message.as_str()], "{events:?}");
    let text = ctx.metrics.encode();
    for series in [
        r#"pequod_drift_total{policy="Correct"} 1"#,
        r#"pequod_drift_total{policy="Report"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "no {series:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn a_service_account_graph_is_limited_by_rbac() {
    let (client, ns, _ctx) = setup("impersonate").await;
    let env = shared(Profile::Minimal);
    let ctx = Arc::new(Context::from_config(env.config(), Config::default()).expect("context"));
    // The tenant's ServiceAccount may manage ConfigMaps, nothing else.
    let rbac: Vec<Value> = vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "configmaps", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "tenant-configmaps", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}]}),
    ];
    // The operator's own rights write this setup: RBAC without an identity must be allowed.
    let trusting = Config {
        scope: Scope {
            rbac_without_identity: true,
            ..Scope::default()
        },
        ..Config::default()
    };
    let admin = Arc::new(Context::new(client.clone(), trusting));
    let setup_graphs = create_graph(
        &client,
        &ns,
        "rbac",
        rbac.into_iter()
            .enumerate()
            .map(|(i, o)| node(&format!("r{i}"), o, &[]))
            .collect(),
    )
    .await;
    drive_until_ready(&setup_graphs, "rbac", &admin).await;

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "stolen"}, "stringData": {"k": "v"}});
    let graphs = create_graph(
        &client,
        &ns,
        "tenant",
        vec![
            node("cfg", config_map("tenant-cfg", json!({"k": "v"})), &[]),
            node("secret", secret, &[]),
        ],
    )
    .await;
    graphs
        .patch(
            "tenant",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"serviceAccountName": "tenant"}})),
        )
        .await
        .expect("set serviceAccountName");
    for _ in 0..3 {
        pass(&graphs, "tenant", &ctx).await;
    }
    let (graph, _) = pass(&graphs, "tenant", &ctx).await;
    assert_eq!(
        phase_of(&graph, "cfg"),
        Some(NodePhase::Ready),
        "{}",
        message_of(&graph, "cfg")
    );
    assert_eq!(phase_of(&graph, "secret"), Some(NodePhase::Failed));
    assert!(
        message_of(&graph, "secret").contains("forbidden"),
        "{}",
        message_of(&graph, "secret")
    );
    assert!(
        message_of(&graph, "secret").contains("system:serviceaccount:"),
        "{}",
        message_of(&graph, "secret")
    );
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
    assert!(secrets.get_opt("stolen").await.expect("get").is_none());

    // Without a client configuration, impersonation is refused before any write.
    let (graph, _) = pass(&graphs, "tenant", &admin).await;
    let stalled =
        pequod_api::conditions::find(&graph.status.expect("status").conditions, "Stalled")
            .cloned()
            .expect("Stalled");
    assert_eq!(stalled.reason, "ImpersonationUnavailable");
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    })
}

#[tokio::test]
async fn a_custom_resource_waits_for_its_crd_then_proceeds() {
    let (client, ns, _) = setup("crd-later").await;
    let scope = Scope::default().all_cluster_kinds();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Config {
            scope,
            ..Config::default()
        },
    ));
    let mut widget = node(
        "widget",
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}),
        &[],
    );
    widget.ready_when = vec![exists()];
    // The CR is declared first; the implicit edge orders it after the CRD that defines it.
    let graphs = create_graph(
        &client,
        &ns,
        "crd",
        vec![widget, node("crd", widget_crd(), &[])],
    )
    .await;
    let (graph, _) = pass(&graphs, "crd", &ctx).await;
    assert_eq!(
        phase_of(&graph, "widget"),
        Some(NodePhase::Blocked),
        "{}",
        message_of(&graph, "widget")
    );
    assert!(message_of(&graph, "widget").contains("waiting for \"crd\""));
    let graph = drive_until_ready(&graphs, "crd", &ctx).await;
    assert_eq!(phase_of(&graph, "widget"), Some(NodePhase::Ready));
    let widgets = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "example.com",
            "v1",
            "Widget",
        )),
    );
    assert_eq!(
        widgets.get("w").await.expect("widget").data["spec"]["size"],
        3
    );
}

#[tokio::test]
async fn a_custom_resource_of_an_unknown_kind_waits_pending_until_its_crd_is_installed() {
    let (client, ns, ctx) = setup("kind-later").await;
    let mut gadget = node(
        "gadget",
        json!({"apiVersion": "example.org/v1", "kind": "Gadget", "metadata": {"name": "g"}}),
        &[],
    );
    gadget.ready_when = vec![exists()];
    let graphs = create_graph(
        &client,
        &ns,
        "later",
        vec![
            gadget,
            node("cfg", config_map("cfg", json!({"k": "v"})), &[]),
        ],
    )
    .await;
    for _ in 0..2 {
        pass(&graphs, "later", &ctx).await;
    }
    let (graph, _) = pass(&graphs, "later", &ctx).await;
    assert_eq!(phase_of(&graph, "gadget"), Some(NodePhase::Pending));
    assert!(message_of(&graph, "gadget").contains("waiting for the API server to serve Gadget"));
    assert_eq!(
        phase_of(&graph, "cfg"),
        Some(NodePhase::Ready),
        "other nodes go on"
    );
    assert_ne!(
        graph.status.as_ref().and_then(|s| s.phase),
        Some(GraphPhase::Failed),
        "waiting is not failing"
    );

    // Someone installs the CRD; the graph proceeds.
    let mut crd = widget_crd();
    crd["metadata"]["name"] = json!("gadgets.example.org");
    crd["spec"]["group"] = json!("example.org");
    crd["spec"]["names"] = json!({"kind": "Gadget", "plural": "gadgets", "singular": "gadget"});
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_json::from_value(crd).expect("crd");
    pequod_testenv::install_crds(&client, &[crd])
        .await
        .expect("install");
    let graph = drive_until_ready(&graphs, "later", &ctx).await;
    assert_eq!(phase_of(&graph, "gadget"), Some(NodePhase::Ready));
}

#[tokio::test]
async fn write_only_fields_are_not_drift() {
    let (client, ns, ctx) = setup("write-only").await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"token": "t0ken"}});
    let graphs = create_graph(
        &client,
        &ns,
        "wo",
        vec![
            node("secret", secret, &[]),
            node("app", config_map("app", json!({"k": "v"})), &["secret"]),
        ],
    )
    .await;
    let graph = drive_until_ready(&graphs, "wo", &ctx).await;
    assert_eq!(
        phase_of(&graph, "app"),
        Some(NodePhase::Ready),
        "stringData (never read back) does not hold the dependent"
    );
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
    let before = secrets
        .get("creds")
        .await
        .expect("secret")
        .resource_version();
    let (after, _) = pass(&graphs, "wo", &ctx).await;
    assert_eq!(
        secrets
            .get("creds")
            .await
            .expect("secret")
            .resource_version(),
        before,
        "not re-applied"
    );
    assert_eq!(
        after.resource_version(),
        graph.resource_version(),
        "steady state"
    );
}
