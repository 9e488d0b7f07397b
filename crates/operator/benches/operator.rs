//! Operator figures on the full local control plane (one run, JSON on stdout):
//! 1. process start → `/readyz` 200 (CUE engine from the precompiled cache, caches synced);
//! 2. `create Transform` → `Ready=True` for the webservice module, against the floor of
//!    server-side applying the same Deployment + Service by hand and waiting for Available;
//! 3. 100 webservice Transforms created at once → all Ready, and the operator's RSS then.
//!
//! `cargo bench -p pequod-operator --bench operator`

#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "../../../e2e/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use pequod_api::{ResourceGraph, Transform};
use pequod_testenv::percentile;
use serde_json::json;
use support::{Operator, condition, create_transform, namespace, web_input};

const SEQUENTIAL: usize = 20;
const AT_ONCE: usize = 100;

fn spec() -> serde_json::Value {
    json!({"cueRef": {"type": "embedded", "ref": "webservice"}, "input": web_input(1)})
}

async fn is_ready(transforms: &Api<Transform>, name: &str) -> bool {
    transforms
        .get(name)
        .await
        .ok()
        .and_then(|t| condition(&t, "Ready"))
        .is_some_and(|c| c.0 == "True")
}

async fn until(mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !check().await {
        assert!(Instant::now() < deadline, "not converged within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Same objects, applied by hand: Deployment, wait Available, then Service (what the module's
/// ordering asks for), timed like a Transform.
async fn by_hand(client: &kube::Client, ns: &str, graph: &ResourceGraph, name: &str) -> Duration {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let mut deployment: Deployment =
        serde_json::from_value(graph.spec.nodes[0].object.clone()).unwrap();
    let mut service: Service = serde_json::from_value(graph.spec.nodes[1].object.clone()).unwrap();
    deployment.metadata.name = Some(name.into());
    service.metadata.name = Some(name.into());
    let apply = PatchParams::apply("bench-by-hand");
    let started = Instant::now();
    deployments
        .patch(name, &apply, &Patch::Apply(&deployment))
        .await
        .unwrap();
    until(async || {
        deployments
            .get(name)
            .await
            .ok()
            .and_then(|d| d.status)
            .is_some_and(|s| {
                s.observed_generation.is_some()
                    && s.conditions.unwrap_or_default().iter().any(|c| {
                        c.type_.as_deref() == Some("Available")
                            && c.status.as_deref() == Some("True")
                    })
            })
    })
    .await;
    services
        .patch(name, &apply, &Patch::Apply(&service))
        .await
        .unwrap();
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let (client, ns) = namespace("bench-operator").await;

    let mut starts = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let operator = Operator::start(&ns, &format!("start-{i}"), &["--leader-elect=false"]).await;
        starts.push(started.elapsed());
        assert!(operator.terminate().await.success());
    }
    starts.sort_unstable();

    let operator = Operator::start(&ns, "bench", &[]).await;
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let mut to_ready = Vec::new();
    let mut floor = Vec::new();
    for i in 0..SEQUENTIAL {
        let name = format!("seq-{i}");
        let started = Instant::now();
        create_transform(&client, &ns, &name, spec()).await;
        until(async || is_ready(&transforms, &name).await).await;
        to_ready.push(started.elapsed());
        let graph = Api::<ResourceGraph>::namespaced(client.clone(), &ns)
            .get(&name)
            .await
            .unwrap();
        floor.push(by_hand(&client, &ns, &graph, &format!("hand-{i}")).await);
    }
    to_ready.sort_unstable();
    floor.sort_unstable();

    let started = Instant::now();
    for i in 0..AT_ONCE {
        create_transform(&client, &ns, &format!("many-{i}"), spec()).await;
    }
    for i in 0..AT_ONCE {
        let name = format!("many-{i}");
        until(async || is_ready(&transforms, &name).await).await;
    }
    let all_ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_mib(operator.pid().unwrap());

    let p50 = percentile(&to_ready, 0.5);
    let p50_floor = percentile(&floor, 0.5);
    let report = json!({
        "start_to_ready_ms": {"min": ms(starts[0]), "median": ms(starts[1]), "max": ms(starts[2])},
        "webservice_create_to_ready_ms": {"samples": SEQUENTIAL, "p50": ms(p50), "p90": ms(percentile(&to_ready, 0.9))},
        "same_objects_by_hand_ms": {"p50": ms(p50_floor), "p90": ms(percentile(&floor, 0.9))},
        "ratio_p50_operator_vs_by_hand": p50.as_secs_f64() / p50_floor.as_secs_f64(),
        "transforms_at_once": AT_ONCE,
        "all_ready_s": all_ready.as_secs_f64(),
        "operator_rss_mib_with_all_converged": rss,
        "transforms_converged": SEQUENTIAL + AT_ONCE,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(operator.terminate().await.success());
}
