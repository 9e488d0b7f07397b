//! Crash safety: the executor is "killed" after its N-th API request (every later request
//! fails, so nothing after that instant happens) during apply, prune and teardown, for 24 seeded
//! points each; then a fresh executor must converge. At every instant, every object carrying
//! the graph's label is in the inventory, and no object the graph still renders is deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use pequod_api::{GraphNode, GraphPhase, ResourceGraph};
use pequod_graph_executor::{Config, Context, LABEL_GRAPH, reconcile};
use pequod_testenv::{Profile, shared};
use support::graph;

mod support;

/// A ConfigMap node whose data names it.
fn node(id: &str, deps: &[&str]) -> GraphNode {
    support::node(id, support::config_map(id, json!({"k": id})), deps)
}
use serde_json::json;

/// A client that works for `allowed` requests, then fails every request, like a dead process.
fn crashing_client(inner: Client, allowed: usize) -> Client {
    let sent = Arc::new(AtomicUsize::new(0));
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let n = sent.fetch_add(1, Ordering::SeqCst);
        async move {
            if n >= allowed {
                return Err(kube::Error::Service("executor crashed".into()));
            }
            inner.send(request).await
        }
    });
    Client::new(service, "default")
}

/// Objects labelled as this graph's, by name.
async fn labelled(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let cms = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let mut names: Vec<String> = cms
        .list(&ListParams::default().labels(&format!("{LABEL_GRAPH}={name}")))
        .await
        .expect("list")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

async fn assert_no_orphans(
    client: &Client,
    graphs: &Api<ResourceGraph>,
    ns: &str,
    name: &str,
    when: &str,
) {
    let Some(graph) = graphs.get_opt(name).await.expect("get") else {
        return;
    };
    let inventory: Vec<String> = graph
        .status
        .map(|s| s.inventory.into_iter().map(|e| e.name).collect())
        .unwrap_or_default();
    for object in labelled(client, ns, name).await {
        assert!(
            inventory.contains(&object),
            "{when}: {object} exists but the inventory {inventory:?} does not know it"
        );
    }
}

/// Reconciles with a healthy client until the graph is Ready (or gone), at most 12 passes.
async fn converge(
    graphs: &Api<ResourceGraph>,
    name: &str,
    ctx: &Arc<Context>,
) -> Option<ResourceGraph> {
    for _ in 0..12 {
        let graph = graphs.get_opt(name).await.expect("get")?;
        let current = graph
            .status
            .as_ref()
            .is_some_and(|s| s.observed_generation == graph.metadata.generation);
        if graph.metadata.deletion_timestamp.is_none()
            && current
            && graph.status.as_ref().and_then(|s| s.phase) == Some(GraphPhase::Ready)
        {
            return Some(graph);
        }
        if let Err(e) = reconcile(Arc::new(graph), ctx.clone()).await {
            eprintln!("converge: reconcile failed: {e:?}");
        }
    }
    graphs.get_opt(name).await.expect("get")
}

/// Runs passes with a client that dies after `allowed` requests (counted across passes).
async fn crash_during(graphs: &Api<ResourceGraph>, name: &str, client: &Client, allowed: usize) {
    let crashing = Arc::new(Context::new(
        crashing_client(client.clone(), allowed),
        Config::default(),
    ));
    for _ in 0..6 {
        let Ok(Some(graph)) = graphs.get_opt(name).await else {
            return;
        };
        if reconcile(Arc::new(graph), crashing.clone()).await.is_err() {
            return;
        }
    }
}

/// The facts one seeded scenario works with.
struct Scenario<'a> {
    client: &'a Client,
    graphs: &'a Api<ResourceGraph>,
    ns: &'a str,
    name: &'a str,
    healthy: &'a Arc<Context>,
    seed: usize,
}

async fn crash_in_apply(scenario: &Scenario<'_>) {
    let Scenario {
        client,
        graphs,
        ns,
        name,
        healthy,
        seed,
    } = *scenario;
    // Apply.
    crash_during(graphs, name, client, seed).await;
    assert_no_orphans(
        client,
        graphs,
        ns,
        name,
        &format!("seed {seed}, crash in apply"),
    )
    .await;
    let ready = converge(graphs, name, healthy).await.expect("graph exists");
    assert_eq!(
        ready.status.as_ref().and_then(|s| s.phase),
        Some(GraphPhase::Ready),
        "seed {seed}: apply converges"
    );
    assert_eq!(labelled(client, ns, name).await, ["a", "b", "c", "d"]);
}

async fn crash_in_prune(scenario: &Scenario<'_>) {
    let Scenario {
        client,
        graphs,
        ns,
        name,
        healthy,
        seed,
    } = *scenario;
    // Prune: c and d are no longer rendered.
    let keep = json!({"spec": {"nodes": [node("a", &[]), node("b", &["a"])]}});
    graphs
        .patch(name, &PatchParams::default(), &Patch::Merge(&keep))
        .await
        .expect("update");
    crash_during(graphs, name, client, seed).await;
    assert_no_orphans(
        client,
        graphs,
        ns,
        name,
        &format!("seed {seed}, crash in prune"),
    )
    .await;
    assert!(
        labelled(client, ns, name)
            .await
            .starts_with(&["a".to_owned(), "b".to_owned()]),
        "seed {seed}: rendered objects never deleted"
    );
    let ready = converge(graphs, name, healthy).await.expect("graph exists");
    assert_eq!(
        labelled(client, ns, name).await,
        ["a", "b"],
        "seed {seed}: prune converges: {:?} {:#?}",
        ready.metadata.generation,
        ready.status
    );
    let inventory: Vec<String> = ready
        .status
        .expect("status")
        .inventory
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(inventory, ["a", "b"]);
}

async fn crash_in_teardown(scenario: &Scenario<'_>) {
    let Scenario {
        client,
        graphs,
        ns,
        name,
        healthy,
        seed,
    } = *scenario;
    // Teardown.
    graphs
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    crash_during(graphs, name, client, seed).await;
    assert_no_orphans(
        client,
        graphs,
        ns,
        name,
        &format!("seed {seed}, crash in teardown"),
    )
    .await;
    assert!(
        converge(graphs, name, healthy).await.is_none(),
        "seed {seed}: teardown converges, finalizer released"
    );
    assert!(
        labelled(client, ns, name).await.is_empty(),
        "seed {seed}: nothing left behind"
    );
}

#[tokio::test]
async fn killed_at_any_request_the_executor_converges_without_orphans_or_wrong_deletes() {
    let env = shared(Profile::Minimal);
    let client = env.client();
    pequod_testenv::install_crds(&client, &pequod_api::crd::all())
        .await
        .expect("CRDs");
    let healthy = Arc::new(Context::new(client.clone(), Config::default()));
    for seed in 1..=24 {
        let ns = env
            .create_namespace(&client, &format!("crash-{seed}"))
            .await;
        let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
        let name = "g";
        graphs
            .create(
                &PostParams::default(),
                &graph(
                    name,
                    vec![
                        node("a", &[]),
                        node("b", &["a"]),
                        node("c", &["b"]),
                        node("d", &[]),
                    ],
                ),
            )
            .await
            .expect("graph");

        let scenario = Scenario {
            client: &client,
            graphs: &graphs,
            ns: &ns,
            name,
            healthy: &healthy,
            seed,
        };
        crash_in_apply(&scenario).await;
        crash_in_prune(&scenario).await;
        crash_in_teardown(&scenario).await;
    }
}
