//! On the full control plane (controllers, scheduler, kwok nodes): a Deployment really rolls
//! out, and its dependents wait until it is Available.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use pequod_api::{GraphPhase, ResourceGraph};
use pequod_graph_executor::{Config, Context, reconcile};
use pequod_testenv::{Profile, shared};
use support::{graph, node};

mod support;
use serde_json::json;

fn available(deployment: &Deployment) -> bool {
    deployment
        .status
        .as_ref()
        .is_some_and(|s| s.available_replicas == Some(2))
}

#[tokio::test]
async fn a_deployment_gates_its_dependents_until_it_is_available() {
    let env = shared(Profile::Full);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), "rollout-gate").await;
    let ctx = Arc::new(Context::new(client.clone(), Config::default()));
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}}},
    });
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let graph = graph(
        "web",
        vec![
            node("deployment", deployment, &[]),
            node("service", service, &["deployment"]),
        ],
    );
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    graphs
        .create(&PostParams::default(), &graph)
        .await
        .expect("graph");
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let services = Api::<Service>::namespaced(client.clone(), &ns);

    let started = Instant::now();
    let mut gated_passes = 0;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "graph not Ready within 120 s"
        );
        let graph = graphs.get("web").await.expect("graph");
        if graph.status.as_ref().and_then(|s| s.phase) == Some(GraphPhase::Ready) {
            break;
        }
        reconcile(Arc::new(graph), ctx.clone())
            .await
            .expect("reconcile");
        let rolling = deployments
            .get_opt("web")
            .await
            .expect("get")
            .is_some_and(|d| !available(&d));
        if rolling && services.get_opt("web").await.expect("get").is_none() {
            gated_passes += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        gated_passes > 0,
        "the rollout was never observed in progress"
    );
    assert!(available(
        &deployments.get("web").await.expect("deployment")
    ));
    assert!(services.get_opt("web").await.expect("get").is_some());
}
