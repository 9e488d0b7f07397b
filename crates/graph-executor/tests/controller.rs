//! The executor as a running controller: readiness changes of managed objects reach the owning
//! graph through watches, not polling (the requeue interval here is an hour); its Events reach
//! the graph.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use pequod_api::ResourceGraph;
use pequod_graph_executor::Config;
use pequod_metrics::Metrics;
use pequod_testenv::{Profile, shared};
use support::{config_map, field_equals, graph, node};

mod support;
use serde_json::json;

async fn wait_for<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_dependency_becoming_ready_triggers_its_dependent_without_polling() {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), "events").await;
    let config = Config {
        progress_requeue: Duration::from_secs(3600),
        ..Config::default()
    };
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(pequod_graph_executor::run(
        env.config(),
        config,
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
        std::sync::Arc::default(),
    ));

    let cm = |name: &str| config_map(name, json!({"k": "v"}));
    let mut gate = node("gate", cm("gate"), &[]);
    gate.ready_when = vec![field_equals("data.ready", "yes")];
    let graph = graph("events", vec![gate, node("app", cm("app"), &["gate"])]);
    Api::<ResourceGraph>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &graph)
        .await
        .expect("graph");

    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    wait_for("the gate is applied", Duration::from_secs(60), || async {
        cms.get_opt("gate").await.ok().flatten().is_some()
    })
    .await;
    // Give the executor time to settle on "app waits for gate"; with an hour of requeue, only
    // an event can move it on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cms.get_opt("app").await.expect("get").is_none(),
        "app must wait for the gate"
    );

    let ready = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gate"}, "data": {"ready": "yes"}});
    cms.patch(
        "gate",
        &PatchParams::apply("gatekeeper"),
        &Patch::Apply(&ready),
    )
    .await
    .expect("gate ready");
    wait_for(
        "the dependent is applied after the gate's readiness event",
        Duration::from_secs(30),
        || async { cms.get_opt("app").await.ok().flatten().is_some() },
    )
    .await;
    // The shared registry sees the controller's reconciles and the graph's inventory.
    let managed = format!(r#"pequod_managed_resources{{namespace="{ns}",graph="events"}} 2"#);
    wait_for(
        "the inventory size is recorded",
        Duration::from_secs(30),
        || async { metrics.encode().contains(&managed) },
    )
    .await;
    let text = metrics.encode();
    assert!(
        text.contains(r#"pequod_reconcile_total{controller="graph-executor",result="success"}"#),
        "{text}"
    );
    // `run` publishes Events on the graph: each object applied, then the graph ready.
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let reasons = || async {
        let mut reasons: Vec<(String, String)> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reporting_controller.as_deref() == Some(pequod_graph_executor::REPORTER))
            .map(|e| {
                let related = e.related.and_then(|r| r.name).unwrap_or_default();
                (e.reason.unwrap_or_default(), related)
            })
            .collect();
        reasons.sort();
        reasons
    };
    wait_for("the Ready event", Duration::from_secs(30), || async {
        reasons().await.iter().any(|(reason, _)| reason == "Ready")
    })
    .await;
    let expected = [("Applied", "app"), ("Applied", "gate"), ("Ready", "")]
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(reasons().await, expected);
    // Shutdown lets the controller finish what it is doing and return.
    stop.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(30), controller)
        .await
        .expect("the controller stops on shutdown")
        .expect("join")
        .expect("run");
}
