//! The executor's figures, measured against the real control plane in one run:
//!
//! 1. API requests per steady-state reconcile: writes (target 0) and reads per node.
//! 2. Readiness propagation: from a dependency becoming ready (another manager's write) to the
//!    dependent's object existing, through the running controller's watches, p50/p99.
//! 3. 100 graphs × 4 nodes to all Ready on the full profile (kwok nodes roll the Deployments
//!    out), against a plain loop that server-side applies the same 400 objects directly.
//!
//! Run with `cargo bench -p pequod-graph-executor --bench executor` (`-- --graphs N` to scale).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt as _};
use pequod_api::{GraphPhase, ResourceGraph};
use pequod_graph_executor::{Config, Context, reconcile};
use pequod_testenv::{Profile, TestEnv};
use serde_json::{Value, json};
use support::{field_equals, graph, node};

#[path = "../tests/support/mod.rs"]
mod support;

fn cm(name: &str) -> Value {
    support::config_map(name, json!({"k": name}))
}

#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    writes: AtomicU64,
}

fn counting_client(inner: Client, counts: Arc<Counts>) -> Client {
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let write = !matches!(*request.method(), http::Method::GET | http::Method::HEAD);
        let counter = if write { &counts.writes } else { &counts.reads };
        counter.fetch_add(1, Ordering::Relaxed);
        async move { inner.send(request).await }
    });
    Client::new(service, "default")
}

/// The four objects of one application: config, secret, a 1-replica Deployment, a Service.
fn app_objects(name: &str) -> Vec<(String, Value, Vec<&'static str>)> {
    vec![
        ("config".into(), cm(&format!("{name}-config")), vec![]),
        (
            "secret".into(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{name}-secret")}, "stringData": {"token": "x"}}),
            vec![],
        ),
        (
            "deployment".into(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}}}),
            vec!["config", "secret"],
        ),
        (
            "service".into(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}),
            vec!["deployment"],
        ),
    ]
}

async fn wait_ready(graphs: &Api<ResourceGraph>, name: &str, ctx: &Arc<Context>) {
    for _ in 0..20 {
        let graph = graphs.get(name).await.expect("graph");
        if graph.status.as_ref().and_then(|s| s.phase) == Some(GraphPhase::Ready) {
            return;
        }
        reconcile(Arc::new(graph), ctx.clone())
            .await
            .expect("reconcile");
    }
    panic!("{name} not Ready");
}

/// 1. Requests per steady-state reconcile of a 4-node graph.
async fn steady_state(env: &TestEnv, client: &Client) -> Value {
    let ns = env.create_namespace(client, "bench-steady").await;
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    let nodes = vec![
        node("a", cm("a"), &[]),
        node("b", cm("b"), &["a"]),
        node("c", cm("c"), &["a"]),
        node("d", cm("d"), &["b", "c"]),
    ];
    graphs
        .create(&PostParams::default(), &graph("steady", nodes))
        .await
        .expect("graph");
    wait_ready(
        &graphs,
        "steady",
        &Arc::new(Context::new(client.clone(), Config::default())),
    )
    .await;
    let counts = Arc::new(Counts::default());
    let counted = Arc::new(Context::new(
        counting_client(client.clone(), counts.clone()),
        Config::default(),
    ));
    let passes = 20_u64;
    for _ in 0..passes {
        let graph = graphs.get("steady").await.expect("graph");
        reconcile(Arc::new(graph), counted.clone())
            .await
            .expect("reconcile");
    }
    let writes = counts.writes.load(Ordering::Relaxed);
    let reads = counts.reads.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    let per_node = reads as f64 / (passes * 4) as f64;
    json!({"passes": passes, "writes_per_reconcile": writes / passes, "reads_per_node": per_node})
}

/// 2. Readiness propagation through the running controller.
async fn propagation(env: &TestEnv, client: &Client, samples: usize) -> Value {
    let ns = env.create_namespace(client, "bench-propagation").await;
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let rule = field_equals("data.ready", "yes");
    for i in 0..samples {
        let mut gate = node("gate", cm(&format!("gate-{i}")), &[]);
        gate.ready_when = vec![rule.clone()];
        let app = node("app", cm(&format!("app-{i}")), &["gate"]);
        graphs
            .create(
                &PostParams::default(),
                &graph(&format!("p{i}"), vec![gate, app]),
            )
            .await
            .expect("graph");
    }
    // Every gate applied and every dependent waiting.
    let started = Instant::now();
    while cms
        .list(&kube::api::ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|c| c.name_any().starts_with("gate-"))
        .count()
        < samples
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "gates not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let ready = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("gate-{i}")}, "data": {"ready": "yes"}});
        let t0 = Instant::now();
        cms.patch(
            &format!("gate-{i}"),
            &PatchParams::apply("bench-gatekeeper"),
            &Patch::Apply(&ready),
        )
        .await
        .expect("gate");
        while cms
            .get_opt(&format!("app-{i}"))
            .await
            .expect("get")
            .is_none()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "dependent {i} never applied"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    json!({
        "samples": samples,
        "p50_ms": pequod_testenv::percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        "p99_ms": pequod_testenv::percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
    })
}

/// 3. Many graphs to Ready with the controller, against a plain SSA loop of the same objects.
async fn scale(env: &TestEnv, client: &Client, graphs_count: usize) -> Value {
    let ns = env.create_namespace(client, "bench-scale").await;
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    for i in 0..graphs_count {
        let name = format!("app{i}");
        let nodes = app_objects(&name)
            .into_iter()
            .map(|(id, object, deps)| node(&id, object, &deps))
            .collect();
        graphs
            .create(&PostParams::default(), &graph(&name, nodes))
            .await
            .expect("graph");
    }
    loop {
        let ready = graphs
            .list(&kube::api::ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|g| g.status.as_ref().and_then(|s| s.phase) == Some(GraphPhase::Ready))
            .count();
        if ready == graphs_count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{ready}/{graphs_count} Ready after 15 min"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let executor = started.elapsed();

    // The reference: the same objects applied directly, 4 at a time, no readiness waits.
    let plain_ns = env.create_namespace(client, "bench-plain").await;
    let objects: Vec<Value> = (0..graphs_count)
        .flat_map(|i| {
            app_objects(&format!("app{i}"))
                .into_iter()
                .map(|(_, o, _)| o)
        })
        .collect();
    let started = Instant::now();
    futures::stream::iter(objects)
        .map(|object| {
            let client = client.clone();
            let ns = plain_ns.clone();
            async move {
                let api_version = object["apiVersion"].as_str().unwrap_or_default();
                let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
                let gvk = GroupVersionKind::gvk(
                    group,
                    version,
                    object["kind"].as_str().unwrap_or_default(),
                );
                let api = Api::<DynamicObject>::namespaced_with(
                    client,
                    &ns,
                    &ApiResource::from_gvk(&gvk),
                );
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                api.patch(
                    &name,
                    &PatchParams::apply("bench-plain"),
                    &Patch::Apply(&object),
                )
                .await
                .expect("apply");
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    let plain = started.elapsed();
    json!({
        "graphs": graphs_count,
        "objects": graphs_count * 4,
        "executor_to_all_ready_s": executor.as_secs_f64(),
        "plain_ssa_loop_s": plain.as_secs_f64(),
        "ratio": executor.as_secs_f64() / plain.as_secs_f64(),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value_of = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // `cargo test --benches` runs a tiny pass without `--bench`.
    let quick = !args.iter().any(|a| a == "--bench");
    let graphs_count = value_of("--graphs", if quick { 2 } else { 100 });
    let samples = value_of("--samples", if quick { 3 } else { 30 });

    let env = TestEnv::start(Profile::Full).expect("control plane");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        let client = env.client();
        pequod_testenv::install_crds(&client, &pequod_api::crd::all())
            .await
            .expect("CRDs");
        let steady = steady_state(&env, &client).await;
        let config = Config {
            progress_requeue: Duration::from_secs(3600),
            ..Config::default()
        };
        let controller = tokio::spawn(pequod_graph_executor::run(
            env.config(),
            config,
            std::sync::Arc::default(),
            std::future::pending(),
            std::sync::Arc::default(),
        ));
        let propagation = propagation(&env, &client, samples).await;
        let scale = scale(&env, &client, graphs_count).await;
        controller.abort();
        json!({"steady_state": steady, "readiness_propagation": propagation, "scale": scale})
    });
    let text = serde_json::to_string_pretty(&result).expect("JSON");
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
}
