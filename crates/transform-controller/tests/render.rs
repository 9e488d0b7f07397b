//! Transform → ResourceGraph against a real kube-apiserver, with the real CUE engine.

use std::sync::{Arc, OnceLock};

use kube::api::{Api, Patch, PatchParams, PostParams};
use pequod_api::conditions::find;
use pequod_api::{CueRef, ResourceGraph, SourceType, Transform, TransformSpec};
use pequod_cue::{Engine, EngineConfig};
use pequod_testenv::{Profile, shared};
use pequod_transform_controller::{Context, reconcile};
use serde_json::json;

fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| Engine::new(EngineConfig::default()).expect("engine"))
        .clone()
}

fn webservice(name: &str, input: serde_json::Value) -> Transform {
    Transform::new(
        name,
        TransformSpec::new(CueRef::new(SourceType::Embedded, "webservice"), Some(input)),
    )
}

async fn pass(transforms: &Api<Transform>, name: &str, ctx: &Arc<Context>) -> Transform {
    let transform = transforms.get(name).await.expect("transform");
    reconcile(Arc::new(transform), ctx.clone())
        .await
        .expect("reconcile");
    transforms.get(name).await.expect("transform")
}

struct Fixture {
    ns: String,
    ctx: Arc<Context>,
    transforms: Api<Transform>,
    graphs: Api<ResourceGraph>,
}

/// A namespace with a rendered `web` Transform (embedded webservice, valid input).
async fn rendered_web(prefix: &str) -> Fixture {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), prefix).await;
    let ctx = Arc::new(Context::new(client.clone(), engine()));
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let good = json!({"image": "docker.io/library/nginx:1.27", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}});
    transforms
        .create(&PostParams::default(), &webservice("web", good))
        .await
        .expect("create");
    pass(&transforms, "web", &ctx).await;
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    Fixture {
        ns,
        ctx,
        transforms,
        graphs,
    }
}

#[tokio::test]
async fn a_transform_renders_its_graph_and_bumps_the_revision_only_on_change() {
    let f = rendered_web("render").await;
    let status = f
        .transforms
        .get("web")
        .await
        .expect("transform")
        .status
        .expect("status");
    assert_eq!(
        find(&status.conditions, "Rendered").map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(
        status.outputs,
        Some(json!({"url": format!("http://web.{}.svc", f.ns)}))
    );
    let graph = f
        .graphs
        .get("web")
        .await
        .expect("graph written under the Transform's name");
    assert_eq!(graph.spec.revision, 1);
    assert_eq!(
        graph
            .spec
            .nodes
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>(),
        ["deployment", "service"]
    );
    assert_eq!(
        graph.spec.nodes[0].object["metadata"]["namespace"],
        f.ns.as_str(),
        "the Transform's namespace reached the module"
    );
    assert_eq!(
        graph
            .metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].kind.as_str()),
        Some("Transform")
    );

    pass(&f.transforms, "web", &f.ctx).await;
    assert_eq!(
        f.graphs.get("web").await.expect("graph").spec.revision,
        1,
        "same render, same revision"
    );

    let scaled = json!({"spec": {"input": {"image": "docker.io/library/nginx:1.27", "replicas": 3, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}}});
    f.transforms
        .patch("web", &PatchParams::default(), &Patch::Merge(&scaled))
        .await
        .expect("update");
    pass(&f.transforms, "web", &f.ctx).await;
    let graph = f.graphs.get("web").await.expect("graph");
    assert_eq!(graph.spec.revision, 2);
    assert_eq!(graph.spec.nodes[0].object["spec"]["replicas"], 3);
}

#[tokio::test]
async fn schema_and_policy_violations_leave_the_running_graph_untouched() {
    let f = rendered_web("violations").await;
    let graph = f.graphs.get("web").await.expect("graph");

    let bad =
        json!({"spec": {"input": {"image": "docker.io/library/nginx:1.27", "replicas": "three"}}});
    f.transforms
        .patch("web", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .expect("update");
    let status = pass(&f.transforms, "web", &f.ctx)
        .await
        .status
        .expect("status");
    let validated = find(&status.conditions, "Validated").expect("Validated");
    assert_eq!(
        (validated.status.as_str(), validated.reason.as_str()),
        ("False", "SchemaViolation")
    );
    assert!(
        status.violations.iter().any(|v| v.path == "input.replicas"
            && v.position
                .as_deref()
                .is_some_and(|p| p.starts_with("webservice/webservice.cue:"))),
        "{:?}",
        status.violations
    );
    assert_eq!(
        find(&status.conditions, "Stalled").map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(
        f.graphs.get("web").await.expect("graph").spec,
        graph.spec,
        "the last good graph keeps running"
    );

    let blocked = json!({"spec": {"input": {"image": "evil.example/miner:1", "replicas": 2}}});
    f.transforms
        .patch("web", &PatchParams::default(), &Patch::Merge(&blocked))
        .await
        .expect("update");
    let status = pass(&f.transforms, "web", &f.ctx)
        .await
        .status
        .expect("status");
    assert_eq!(
        find(&status.conditions, "Validated").map(|c| c.reason.as_str()),
        Some("PolicyViolation")
    );
    assert!(status.violations.iter().any(|v| v.path == "input.image"));
    assert_eq!(f.graphs.get("web").await.expect("graph").spec, graph.spec);
}
