//! The tenant boundary against a real kube-apiserver: every node field a tenant controls is
//! hostile. Each test drives `reconcile` one pass at a time in its own namespace and checks
//! both the refusal (reason and message) and that nothing was written where it must not be.

mod support;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use pequod_api::{ApplyMode, GraphNode, GraphPhase, NodePhase, ResourceGraph};
use pequod_graph::KindPattern;
use pequod_graph_executor::{Config, Context, Scope, Selector, reconcile};
use pequod_testenv::{Profile, shared, unique_name};
use serde_json::{Value, json};
use support::{config_map, graph, node};

async fn setup(prefix: &str, scope: Scope) -> (Client, String, Arc<Context>) {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), prefix).await;
    let ctx = Context::new(
        client.clone(),
        Config {
            scope,
            ..Config::default()
        },
    );
    (client, ns, Arc::new(ctx))
}

fn namespaces_only() -> Scope {
    Scope {
        cluster_kinds: vec![KindPattern::parse("Namespace").expect("kind")],
        ..Scope::default()
    }
}

async fn create(
    client: &Client,
    ns: &str,
    name: &str,
    nodes: Vec<GraphNode>,
) -> Api<ResourceGraph> {
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), ns);
    graphs
        .create(&PostParams::default(), &graph(name, nodes))
        .await
        .expect("graph created");
    graphs
}

async fn passes(
    graphs: &Api<ResourceGraph>,
    name: &str,
    ctx: &Arc<Context>,
    n: usize,
) -> ResourceGraph {
    for _ in 0..n {
        let graph = graphs.get(name).await.expect("graph");
        reconcile(Arc::new(graph), ctx.clone())
            .await
            .expect("reconcile");
    }
    graphs.get(name).await.expect("graph")
}

/// (reason, message) of the graph's Stalled condition.
fn stalled(graph: &ResourceGraph) -> Option<(String, String)> {
    let status = graph.status.as_ref()?;
    pequod_api::conditions::find(&status.conditions, "Stalled")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

fn node_of(graph: &ResourceGraph, id: &str) -> (Option<NodePhase>, String) {
    let found = graph
        .status
        .as_ref()
        .and_then(|s| s.nodes.iter().find(|n| n.id == id));
    (
        found.map(|n| n.phase),
        found.and_then(|n| n.message.clone()).unwrap_or_default(),
    )
}

fn in_namespace(name: &str, namespace: &str) -> Value {
    let mut object = config_map(name, json!({"k": "v"}));
    object["metadata"]["namespace"] = json!(namespace);
    object
}

async fn config_map_exists(client: &Client, ns: &str, name: &str) -> bool {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get")
        .is_some()
}

async fn other_namespace(client: &Client, prefix: &str) -> String {
    shared(Profile::Minimal)
        .create_namespace(client, prefix)
        .await
}

#[tokio::test]
async fn ignore_fields_cannot_move_an_object_or_strip_its_marks() {
    let (client, ns, ctx) = setup("ignore", Scope::default()).await;
    let other = other_namespace(&client, "ignore-victim").await;
    let cases = [
        ("/metadata/namespace", "/metadata/namespace"),
        (
            "/metadata/labels",
            "/metadata/labels/platform.pequod.io/graph",
        ),
        (
            "/metadata/annotations/platform.pequod.io~1graph-uid",
            "/metadata/annotations/platform.pequod.io/graph-uid",
        ),
        ("/metadata", "/metadata/name"),
        ("/kind", "/kind"),
        ("", "is empty"),
        ("spec.replicas", "must start with '/'"),
    ];
    for (i, (pointer, says)) in cases.into_iter().enumerate() {
        let name = format!("escape-{i}");
        let mut escape = node("cm", in_namespace(&name, &other), &[]);
        escape.apply_policy.ignore_fields = vec![pointer.to_owned()];
        let graphs = create(&client, &ns, &name, vec![escape]).await;
        let graph = passes(&graphs, &name, &ctx, 2).await;
        let (reason, message) = stalled(&graph).expect("stalled");
        assert_eq!(reason, "InvalidGraph", "{pointer}: {message}");
        assert!(message.contains(says), "{pointer}: {message}");
        assert!(message.contains("node \"cm\""), "{message}");
        assert!(
            !config_map_exists(&client, &other, &name).await,
            "{pointer}"
        );
        assert!(!config_map_exists(&client, &ns, &name).await, "{pointer}");
    }
}

#[tokio::test]
async fn an_existing_namespace_grants_nothing_whatever_the_mode() {
    let (client, ns, ctx) = setup("existing-ns", namespaces_only()).await;
    let victim = other_namespace(&client, "victim").await;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": victim}});
    for (name, mode) in [
        ("by-create", ApplyMode::Create),
        ("by-adopt", ApplyMode::Adopt),
    ] {
        let mut claim = node("ns", namespace.clone(), &[]);
        claim.apply_policy.mode = mode;
        let nodes = vec![claim, node("inside", in_namespace(name, &victim), &[])];
        let graphs = create(&client, &ns, name, nodes).await;
        let graph = passes(&graphs, name, &ctx, 3).await;
        let (reason, message) = stalled(&graph).expect("stalled");
        assert_eq!(reason, "OutOfScope", "{name}");
        assert!(message.contains("never adopted"), "{name}: {message}");
        assert!(!config_map_exists(&client, &victim, name).await, "{name}");
        // Deleting the graph removes nothing of the victim's namespace.
        graphs
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        passes_until_gone(&graphs, name, &ctx).await;
    }
    // Mode Apply: the Namespace node fails (it is not the graph's), its objects never go in.
    let nodes = vec![
        node("ns", namespace.clone(), &[]),
        node("inside", in_namespace("by-apply", &victim), &[]),
    ];
    let graphs = create(&client, &ns, "by-apply", nodes).await;
    let graph = passes(&graphs, "by-apply", &ctx, 4).await;
    let (phase, message) = node_of(&graph, "ns");
    assert_eq!(phase, Some(NodePhase::Failed), "{message}");
    assert!(message.contains("not managed by this graph"), "{message}");
    assert_eq!(node_of(&graph, "inside").0, Some(NodePhase::Blocked));
    assert!(!config_map_exists(&client, &victim, "by-apply").await);
    graphs
        .delete("by-apply", &DeleteParams::default())
        .await
        .expect("delete");
    passes_until_gone(&graphs, "by-apply", &ctx).await;
    let namespaces = Api::<Namespace>::all(client.clone());
    let live = namespaces
        .get(&victim)
        .await
        .expect("victim namespace kept");
    assert!(live.metadata.deletion_timestamp.is_none());
    assert!(
        !live
            .labels()
            .contains_key(pequod_graph_executor::LABEL_GRAPH)
    );
}

/// Drives teardown of a deleted graph until its finalizer is released.
async fn passes_until_gone(graphs: &Api<ResourceGraph>, name: &str, ctx: &Arc<Context>) {
    for _ in 0..10 {
        let Some(graph) = graphs.get_opt(name).await.expect("get") else {
            return;
        };
        reconcile(Arc::new(graph), ctx.clone())
            .await
            .expect("reconcile");
    }
    panic!("{name} was not torn down in 10 passes");
}

#[tokio::test]
async fn a_namespace_the_graph_creates_may_be_filled_and_goes_with_it() {
    let (client, ns, ctx) = setup("own-ns", namespaces_only()).await;
    let created = unique_name("created");
    let nodes = vec![
        node(
            "ns",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": created}}),
            &[],
        ),
        node("inside", in_namespace("app", &created), &[]),
    ];
    let graphs = create(&client, &ns, "own", nodes).await;
    let graph = passes(&graphs, "own", &ctx, 4).await;
    assert_eq!(
        graph.status.as_ref().and_then(|s| s.phase),
        Some(GraphPhase::Ready),
        "{:?}",
        graph.status
    );
    assert!(config_map_exists(&client, &created, "app").await);
    let inventory = &graph.status.as_ref().expect("status").inventory;
    assert!(
        inventory
            .iter()
            .any(|e| e.kind == "Namespace" && e.name == created && e.uid.is_some()),
        "the created Namespace is in the inventory with its UID: {inventory:?}"
    );
}

#[tokio::test]
async fn cluster_scope_is_per_kind_and_per_namespace_label() {
    let (client, ns, ctx) = setup("kinds", namespaces_only()).await;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": unique_name("escalate")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]});
    let graphs = create(&client, &ns, "escalate", vec![node("crb", binding, &[])]).await;
    let graph = passes(&graphs, "escalate", &ctx, 2).await;
    let (reason, message) = stalled(&graph).expect("stalled");
    // Without a ServiceAccount, the RBAC rule speaks first; either way nothing is written.
    assert_eq!(reason, "RBACRequiresIdentity", "{message}");
    let mut as_account = graphs.get("escalate").await.expect("graph");
    as_account.spec.service_account_name = Some("default".into());
    as_account.metadata.managed_fields = None;
    graphs
        .replace("escalate", &PostParams::default(), &as_account)
        .await
        .expect("replace");
    let ctx_impersonating = Arc::new(
        Context::from_config(shared(Profile::Minimal).config(), ctx.config.clone())
            .expect("context"),
    );
    let graph = passes(&graphs, "escalate", &ctx_impersonating, 2).await;
    let (reason, message) = stalled(&graph).expect("stalled");
    assert_eq!(reason, "OutOfScope", "{message}");
    assert!(
        message.contains("cluster-scoped kinds granted to namespace"),
        "{message}"
    );

    // A selector: only namespaces labelled trusted=yes get cluster-scoped kinds.
    let selective = Scope {
        cluster_namespace_selector: Some(Selector::parse("trusted=yes").expect("selector")),
        ..namespaces_only()
    };
    let selective = Arc::new(Context::new(
        client.clone(),
        Config {
            scope: selective,
            ..Config::default()
        },
    ));
    let made = unique_name("made");
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": made}});
    let graphs = create(&client, &ns, "untrusted", vec![node("ns", namespace, &[])]).await;
    let graph = passes(&graphs, "untrusted", &selective, 2).await;
    let (reason, message) = stalled(&graph).expect("stalled");
    assert_eq!(reason, "OutOfScope", "{message}");
    assert!(message.contains(": none"), "{message}");
    let namespaces = Api::<Namespace>::all(client.clone());
    assert!(namespaces.get_opt(&made).await.expect("get").is_none());
    let label = json!({"metadata": {"labels": {"trusted": "yes"}}});
    namespaces
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label");
    // The graph is unchanged: a later pass (a resync) picks up the namespace's new trust.
    let graph = passes(&graphs, "untrusted", &selective, 2).await;
    assert_eq!(stalled(&graph), None, "{:?}", graph.status);
    assert!(namespaces.get_opt(&made).await.expect("get").is_some());
}

#[tokio::test]
async fn rbac_objects_need_an_identity() {
    let (client, ns, ctx) = setup("rbac", Scope::default()).await;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
    let graphs = create(&client, &ns, "role", vec![node("role", role, &[])]).await;
    let graph = passes(&graphs, "role", &ctx, 2).await;
    let (reason, message) = stalled(&graph).expect("stalled");
    assert_eq!(reason, "RBACRequiresIdentity");
    assert!(message.contains("spec.serviceAccountName"), "{message}");
    let allowed = Arc::new(Context::new(
        client.clone(),
        Config {
            scope: Scope {
                rbac_without_identity: true,
                ..Scope::default()
            },
            ..Config::default()
        },
    ));
    let graph = passes(&graphs, "role", &allowed, 2).await;
    assert_eq!(stalled(&graph), None, "{:?}", graph.status);
}

#[tokio::test]
async fn adopt_never_steals_and_the_victim_notices_a_takeover_at_once() {
    let (client, ns, ctx) = setup("steal", Scope::default()).await;
    let victim = create(
        &client,
        &ns,
        "victim",
        vec![node(
            "cm",
            config_map("shared", json!({"owner": "victim"})),
            &[],
        )],
    )
    .await;
    let graph = passes(&victim, "victim", &ctx, 2).await;
    assert_eq!(node_of(&graph, "cm").0, Some(NodePhase::Ready));

    let mut grab = node("cm", config_map("shared", json!({"owner": "thief"})), &[]);
    grab.apply_policy.mode = ApplyMode::Adopt;
    let thief = create(&client, &ns, "thief", vec![grab]).await;
    let graph = passes(&thief, "thief", &ctx, 2).await;
    let (phase, message) = node_of(&graph, "cm");
    assert_eq!(phase, Some(NodePhase::Failed), "{message}");
    assert!(
        message.contains(&format!("belongs to ResourceGraph {ns}/victim")),
        "{message}"
    );
    let live = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("shared")
        .await
        .expect("cm");
    assert_eq!(
        live.data
            .as_ref()
            .and_then(|d| d.get("owner"))
            .map(String::as_str),
        Some("victim")
    );
    // Deleting the thief leaves the victim's object.
    thief
        .delete("thief", &DeleteParams::default())
        .await
        .expect("delete");
    passes_until_gone(&thief, "thief", &ctx).await;
    assert!(config_map_exists(&client, &ns, "shared").await);

    // Someone with edit rights re-labels the object by hand: the victim's next pass says so.
    let relabel = json!({"metadata": {
        "labels": {"platform.pequod.io/graph": "someone-else"},
        "annotations": {"platform.pequod.io/graph-uid": "not-the-victim"}}});
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch("shared", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel");
    let graph = passes(&victim, "victim", &ctx, 1).await;
    let (phase, message) = node_of(&graph, "cm");
    assert_eq!(phase, Some(NodePhase::Failed), "{message}");
    assert!(message.contains("was taken over"), "{message}");
    assert_ne!(
        graph.status.as_ref().and_then(|s| s.phase),
        Some(GraphPhase::Ready)
    );
}

#[tokio::test]
async fn adopt_stays_in_the_graphs_namespace() {
    let (client, ns, ctx) = setup(
        "adopt-away",
        Scope {
            extra_namespaces: Vec::new(),
            ..Scope::default()
        },
    )
    .await;
    let other = other_namespace(&client, "adopt-other").await;
    let scope = Scope {
        extra_namespaces: vec![other.clone()],
        ..Scope::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Config {
            scope,
            ..ctx.config.clone()
        },
    ));
    Api::<ConfigMap>::namespaced(client.clone(), &other)
        .create(
            &PostParams::default(),
            &serde_json::from_value(in_namespace("theirs", &other)).expect("cm"),
        )
        .await
        .expect("pre-existing");
    let mut grab = node("cm", in_namespace("theirs", &other), &[]);
    grab.apply_policy.mode = ApplyMode::Adopt;
    let graphs = create(&client, &ns, "adopt-away", vec![grab]).await;
    let graph = passes(&graphs, "adopt-away", &ctx, 2).await;
    let (phase, message) = node_of(&graph, "cm");
    assert_eq!(phase, Some(NodePhase::Failed), "{message}");
    assert!(
        message.contains("only objects in the graph's own namespace"),
        "{message}"
    );
    let live = Api::<ConfigMap>::namespaced(client.clone(), &other)
        .get("theirs")
        .await
        .expect("cm");
    assert!(
        !live
            .labels()
            .contains_key(pequod_graph_executor::LABEL_GRAPH)
    );
}

#[tokio::test]
async fn a_forbidden_teardown_stalls_naming_the_identity_and_an_admin_can_abandon_it() {
    let (client, ns, _) = setup("undeletable", Scope::default()).await;
    let env = shared(Profile::Minimal);
    // The tenant's ServiceAccount may create ConfigMaps but never delete them, and has no
    // rights on Secrets at all.
    let trusting = Arc::new(Context::new(
        client.clone(),
        Config {
            scope: Scope {
                rbac_without_identity: true,
                ..Scope::default()
            },
            ..Config::default()
        },
    ));
    let rbac = vec![
        node(
            "sa",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant"}}),
            &[],
        ),
        node(
            "role",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "no-delete"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update"]}]}),
            &[],
        ),
        node(
            "binding",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "tenant-no-delete"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-delete"},
                "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns}]}),
            &[],
        ),
    ];
    let setup_graphs = create(&client, &ns, "rbac", rbac).await;
    passes(&setup_graphs, "rbac", &trusting, 3).await;

    let ctx = Arc::new(Context::from_config(env.config(), Config::default()).expect("context"));
    let mut tenant = graph(
        "tenant",
        vec![
            node("cm", config_map("kept", json!({"k": "v"})), &[]),
            node(
                "secret",
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "never"}, "stringData": {"k": "v"}}),
                &[],
            ),
        ],
    );
    tenant.spec.service_account_name = Some("tenant".into());
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    graphs
        .create(&PostParams::default(), &tenant)
        .await
        .expect("graph");
    let graph = passes(&graphs, "tenant", &ctx, 3).await;
    assert_eq!(node_of(&graph, "cm").0, Some(NodePhase::Ready));
    assert_eq!(node_of(&graph, "secret").0, Some(NodePhase::Failed));
    assert_eq!(
        graph.status.as_ref().map(|s| s.inventory.len()),
        Some(2),
        "both recorded before their apply"
    );

    graphs
        .delete("tenant", &DeleteParams::default())
        .await
        .expect("delete");
    let graph = passes(&graphs, "tenant", &ctx, 2).await;
    let (reason, message) = stalled(&graph).expect("stalled, not looping");
    assert_eq!(reason, "DeleteForbidden", "{message}");
    assert!(
        message.contains(&format!("system:serviceaccount:{ns}:tenant")),
        "{message}"
    );
    assert!(message.contains("ConfigMap kept"), "{message}");
    assert!(
        message.contains(pequod_graph_executor::ANNOTATION_ABANDON),
        "{message}"
    );
    let inventory = &graph.status.as_ref().expect("status").inventory;
    assert_eq!(
        inventory
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["kept"],
        "the Secret that was never created left the inventory"
    );

    // An admin abandons what is left: the finalizer goes, the object stays — even where the
    // graph's identity cannot be used at all (a context that cannot impersonate).
    let abandon =
        json!({"metadata": {"annotations": {pequod_graph_executor::ANNOTATION_ABANDON: "true"}}});
    graphs
        .patch("tenant", &PatchParams::default(), &Patch::Merge(&abandon))
        .await
        .expect("annotate");
    let no_identity = Arc::new(Context::new(client.clone(), Config::default()));
    passes_until_gone(&graphs, "tenant", &no_identity).await;
    assert!(config_map_exists(&client, &ns, "kept").await);
}

#[tokio::test]
async fn a_graph_too_deep_to_decode_stalls_alone_and_the_list_still_decodes() {
    let (client, ns, ctx) = setup("deep-graph", Scope::default()).await;
    create(
        &client,
        &ns,
        "fine",
        vec![node("cm", config_map("fine", json!({})), &[])],
    )
    .await;
    let mut deep = json!("leaf");
    for _ in 0..200 {
        deep = json!({ "x": deep });
    }
    let mut body = serde_json::to_value(graph(
        "deep",
        vec![node("cm", config_map("deep", json!({})), &[])],
    ))
    .expect("graph JSON");
    body["spec"]["nodes"][0]["object"]["data"] = json!({"k": "v"});
    body["spec"]["nodes"][0]["object"]["extra"] = deep;
    let resource = kube::core::ApiResource::erase::<ResourceGraph>(&());
    let raw = Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), &ns, &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(body).expect("object");
    match raw.create(&PostParams::default(), &object).await {
        // Stored; only this client cannot read so deep a value back.
        Ok(_) | Err(kube::Error::SerdeError(_)) => {}
        Err(e) => panic!("create: {e}"),
    }
    assert!(
        Api::<ResourceGraph>::namespaced(client.clone(), &ns)
            .list(&kube::api::ListParams::default())
            .await
            .is_err(),
        "a plain list fails on the deep graph"
    );
    let lenient =
        Api::<pequod_api::lenient::Lenient<ResourceGraph>>::namespaced(client.clone(), &ns)
            .list(&kube::api::ListParams::default())
            .await
            .expect("the lenient list decodes every graph");
    assert_eq!(lenient.items.len(), 2);
    let stored = lenient
        .items
        .into_iter()
        .find(|g| g.0.metadata.name.as_deref() == Some("deep"))
        .expect("deep")
        .0;
    reconcile(Arc::new(stored), ctx.clone())
        .await
        .expect("reconcile");
    let graph = lenient_get(&client, &ns, "deep").await;
    let (reason, message) = stalled(&graph).expect("stalled");
    assert_eq!(reason, "InvalidGraph");
    assert!(message.contains("cannot be decoded"), "{message}");
    let graph = passes(&Api::namespaced(client.clone(), &ns), "fine", &ctx, 2).await;
    assert_eq!(stalled(&graph), None);
}

async fn lenient_get(client: &Client, ns: &str, name: &str) -> ResourceGraph {
    Api::<pequod_api::lenient::Lenient<ResourceGraph>>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get")
        .0
}
