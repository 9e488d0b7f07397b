//! The full profile really runs workloads: a Deployment rolls out to Available on the kwok
//! fake node, garbage collection removes owned objects, and a namespace delete completes.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use pequod_testenv::{Profile, shared};

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    }))
    .expect("deployment manifest")
}

fn is_available(d: Option<&Deployment>) -> bool {
    d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
        s.available_replicas == Some(2)
            && s.conditions.as_ref().is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
                })
            })
    })
}

#[tokio::test]
async fn deployment_becomes_available_and_gc_removes_its_pods() {
    let env = shared(Profile::Full);
    let client = env.client();
    let ns = env.create_namespace(&client, "rollout").await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("web"))
        .await
        .expect("created");

    let available = await_condition(deployments.clone(), "web", is_available);
    tokio::time::timeout(Duration::from_secs(120), available)
        .await
        .expect("Deployment Available within 120s")
        .expect("watch");

    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let running = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    assert_eq!(running.items.len(), 2);
    assert!(
        running
            .items
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(pequod_testenv::FAKE_NODE))
    );

    // Deleting the Deployment in the background leaves the ReplicaSet and Pods to the garbage
    // collector: they only disappear if it runs.
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("deleted");
    let gone = async {
        loop {
            let left = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .expect("pods");
            if left.items.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), gone)
        .await
        .expect("GC removed the pods");
}

#[tokio::test]
async fn namespace_delete_completes() {
    let env = shared(Profile::Full);
    let client = env.client();
    let ns = env.create_namespace(&client, "ns-delete").await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("doomed"))
        .await
        .expect("created");

    let namespaces = Api::<Namespace>::all(client);
    let uid = namespaces
        .get(&ns)
        .await
        .expect("namespace")
        .metadata
        .uid
        .expect("uid");
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete accepted");
    let deleted = await_condition(namespaces, &ns, conditions::is_deleted(&uid));
    tokio::time::timeout(Duration::from_secs(180), deleted)
        .await
        .expect("namespace finalized within 180s")
        .expect("watch");
}
