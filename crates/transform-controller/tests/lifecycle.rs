//! A Transform's life against a real kube-apiserver, with the real CUE engine and the real
//! graph executor driven by hand: valuesFrom, no-op passes, status from the graph, events,
//! history, and delete → teardown → finalizer.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pequod_api::conditions::find;
use pequod_api::{
    CueRef, ResourceGraph, SourceType, Transform, TransformSpec, ValuesFromKind, ValuesFromSource,
};
use pequod_cue::{Engine, EngineConfig};
use pequod_testenv::{Profile, shared};
use pequod_transform_controller::{Context, FINALIZER, reconcile};
use serde_json::json;

fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| Engine::new(EngineConfig::default()).expect("engine"))
        .clone()
}

fn transform(
    name: &str,
    cue_ref: CueRef,
    input: serde_json::Value,
    values_from: Vec<ValuesFromSource>,
) -> Transform {
    Transform::new(
        name,
        TransformSpec {
            values_from,
            ..TransformSpec::new(cue_ref, Some(input))
        },
    )
}

fn cue_ref(source_type: SourceType, reference: &str) -> CueRef {
    CueRef::new(source_type, reference)
}

async fn pass(transforms: &Api<Transform>, name: &str, ctx: &Arc<Context>) -> Option<Transform> {
    let transform = transforms.get_opt(name).await.expect("get")?;
    reconcile(Arc::new(transform), ctx.clone())
        .await
        .expect("reconcile");
    transforms.get_opt(name).await.expect("get")
}

fn secret(name: &str, values: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.string_data = Some(BTreeMap::from([(
        "values.yaml".to_owned(),
        values.to_owned(),
    )]));
    s
}

fn condition(t: &Transform, type_: &str) -> (String, String, String) {
    let c = find(&t.status.as_ref().expect("status").conditions, type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn values_from_secret_rotation_re_renders_and_a_missing_source_stalls() {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), "values").await;
    let ctx = Arc::new(Context::new(client.clone(), engine()));
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &secret("web-values", "replicas: 2\n"),
        )
        .await
        .expect("secret");
    let from_secret = ValuesFromSource {
        kind: ValuesFromKind::Secret,
        name: "web-values".into(),
        values_key: Some("values.yaml".into()),
        target_path: None,
        optional: false,
    };
    let input = json!({"image": "docker.io/library/nginx:1.27", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}});
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let web = transform(
        "web",
        cue_ref(SourceType::Embedded, "webservice"),
        input,
        vec![from_secret.clone()],
    );
    transforms
        .create(&PostParams::default(), &web)
        .await
        .expect("create");
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);

    let first = pass(&transforms, "web", &ctx).await.expect("transform");
    let graph = graphs.get("web").await.expect("graph");
    assert_eq!(
        graph.spec.nodes[0].object["spec"]["replicas"], 2,
        "the Secret's value reached the module"
    );
    assert!(first.finalizers().contains(&FINALIZER.to_owned()));

    // Nothing changed: no render, no write, no status change.
    let again = pass(&transforms, "web", &ctx).await.expect("transform");
    assert_eq!(
        graphs
            .get("web")
            .await
            .expect("graph")
            .metadata
            .resource_version,
        graph.metadata.resource_version
    );
    assert_eq!(
        again.metadata.resource_version,
        first.metadata.resource_version
    );

    // Rotation: a new value re-renders into a new revision, recorded in history.
    let rotated = json!({"stringData": {"values.yaml": "replicas: 3\n"}});
    secrets
        .patch(
            "web-values",
            &PatchParams::default(),
            &Patch::Merge(&rotated),
        )
        .await
        .expect("rotate");
    let after = pass(&transforms, "web", &ctx).await.expect("transform");
    let graph = graphs.get("web").await.expect("graph");
    assert_eq!(
        (
            graph.spec.revision,
            graph.spec.nodes[0].object["spec"]["replicas"].clone()
        ),
        (2, json!(3))
    );
    let history: Vec<i64> = after
        .status
        .as_ref()
        .expect("status")
        .history
        .iter()
        .map(|h| h.revision)
        .collect();
    assert_eq!(history, [2, 1]);

    bad_values_keep_the_graph(&client, &ns, &ctx, from_secret).await;
}

/// Bad values (a rejected Secret value, a missing ConfigMap) stall the Transform and leave
/// revision 2 of the graph running.
async fn bad_values_keep_the_graph(
    client: &kube::Client,
    ns: &str,
    ctx: &Arc<Context>,
    from_secret: ValuesFromSource,
) {
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    let transforms = Api::<Transform>::namespaced(client.clone(), ns);
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), ns);
    // A Secret value the schema rejects is quoted by CUE: it must not reach status.
    let leaky = json!({"stringData": {"values.yaml": "replicas: sekret-value-42\n"}});
    secrets
        .patch("web-values", &PatchParams::default(), &Patch::Merge(&leaky))
        .await
        .expect("patch");
    let rejected = pass(&transforms, "web", ctx).await.expect("transform");
    let status_text = serde_json::to_string(&rejected.status).expect("json");
    assert_eq!(condition(&rejected, "Validated").1, "SchemaViolation");
    assert!(!status_text.contains("sekret-value-42"), "{status_text}");
    assert_eq!(
        graphs.get("web").await.expect("graph").spec.revision,
        2,
        "the last good graph stays"
    );

    // A required ConfigMap that does not exist: stalled with its name, graph untouched.
    let missing = ValuesFromSource {
        kind: ValuesFromKind::ConfigMap,
        name: "not-there".into(),
        values_key: None,
        target_path: None,
        optional: false,
    };
    let patch = json!({"spec": {"valuesFrom": [from_secret, missing]}});
    transforms
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let stalled = pass(&transforms, "web", ctx).await.expect("transform");
    let (status, reason, message) = condition(&stalled, "Validated");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ValuesFromFailed")
    );
    assert!(
        message.contains("ConfigMap not-there not found"),
        "{message}"
    );
    assert_eq!(condition(&stalled, "Stalled").0, "True");
    assert_eq!(graphs.get("web").await.expect("graph").spec.revision, 2);
}

const CONFIG_MODULE: &str = r#"
package demo

#Input: {
	metadata: {name: string, namespace: string}
	greeting: *"hello" | string
}
input: #Input
graph: nodes: [{
	id: "config"
	object: {
		apiVersion: "v1"
		kind:       "ConfigMap"
		metadata: {name: input.metadata.name, namespace: input.metadata.namespace}
		data: greeting: input.greeting
	}
}]
outputs: greeting: input.greeting
"#;

async fn execute(
    graphs: &Api<ResourceGraph>,
    name: &str,
    ctx: &Arc<pequod_graph_executor::Context>,
) {
    if let Some(graph) = graphs.get_opt(name).await.expect("graph") {
        pequod_graph_executor::reconcile(Arc::new(graph), ctx.clone())
            .await
            .expect("execute");
    }
}

/// A teardown the API server forbids (as the executor reports it on the graph) shows on the
/// Transform, which is what `kubectl get tf` users look at.
async fn a_forbidden_teardown_shows_on_the_transform(
    graphs: &Api<ResourceGraph>,
    transforms: &Api<Transform>,
    ctx: &Arc<Context>,
) {
    let stalled = json!({"status": {"conditions": [{
        "type": "Stalled", "status": "True", "reason": "DeleteForbidden",
        "message": "system:serviceaccount:t:sa may not delete: ConfigMap demo: forbidden",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    graphs
        .patch_status("demo", &PatchParams::default(), &Patch::Merge(&stalled))
        .await
        .expect("graph status");
    let stuck = pass(transforms, "demo", ctx).await.expect("transform");
    let (status, reason, message) = condition(&stuck, "Stalled");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "DeleteForbidden")
    );
    assert!(message.contains("may not delete"), "{message}");
}

#[tokio::test]
async fn status_follows_the_executor_and_delete_tears_the_graph_down_first() {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), "lifecycle").await;
    let mut ctx = Context::new(client.clone(), engine());
    ctx.recorder = Some(kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "pequod-test".into(),
            instance: None,
        },
    ));
    let ctx = Arc::new(ctx);
    let executor = Arc::new(pequod_graph_executor::Context::new(
        client.clone(),
        pequod_graph_executor::Config::default(),
    ));
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    let demo = transform(
        "demo",
        cue_ref(SourceType::Inline, CONFIG_MODULE),
        json!({"greeting": "hi"}),
        Vec::new(),
    );
    transforms
        .create(&PostParams::default(), &demo)
        .await
        .expect("create");

    let rendered = pass(&transforms, "demo", &ctx).await.expect("transform");
    assert_eq!(
        condition(&rendered, "Ready").0,
        "Unknown",
        "the executor has not run yet"
    );
    assert_eq!(condition(&rendered, "Reconciling").0, "True");
    for _ in 0..3 {
        execute(&graphs, "demo", &executor).await;
    }
    let ready = pass(&transforms, "demo", &ctx).await.expect("transform");
    let (status, _, message) = condition(&ready, "Ready");
    assert_eq!(status, "True", "{message}");
    let summary = ready.status.as_ref().expect("status");
    assert_eq!(summary.ready_nodes.as_deref(), Some("1/1"));
    assert_eq!(summary.outputs, Some(json!({"greeting": "hi"})));
    assert!(find(&summary.conditions, "Reconciling").is_none());

    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    let reasons: Vec<&str> = events
        .items
        .iter()
        .filter_map(|e| e.reason.as_deref())
        .collect();
    assert!(
        reasons.contains(&"Rendered") && reasons.contains(&"Ready"),
        "{reasons:?}"
    );

    // Delete: the Transform waits for its graph's teardown, then goes.
    transforms
        .delete("demo", &DeleteParams::default())
        .await
        .expect("delete");
    let deleting = pass(&transforms, "demo", &ctx)
        .await
        .expect("still there: finalizer");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let graph = graphs.get("demo").await.expect("graph being deleted");
    assert!(
        graph.metadata.deletion_timestamp.is_some(),
        "the graph was asked to go"
    );
    a_forbidden_teardown_shows_on_the_transform(&graphs, &transforms, &ctx).await;
    for _ in 0..3 {
        execute(&graphs, "demo", &executor).await;
    }
    assert!(
        graphs.get_opt("demo").await.expect("get").is_none(),
        "executor finished teardown"
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("demo")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        pass(&transforms, "demo", &ctx).await.is_none(),
        "finalizer removed, Transform gone"
    );
}

#[tokio::test]
async fn a_module_that_cannot_be_fetched_says_why_and_writes_no_graph() {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), "fetch").await;
    let ctx = Arc::new(Context::new(client.clone(), engine()));
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let cases = [
        (
            "no-embedded",
            cue_ref(SourceType::Embedded, "no-such-module"),
            "NotFound",
        ),
        (
            "no-configmap",
            cue_ref(SourceType::Configmap, "absent"),
            "NotFound",
        ),
        (
            "bad-oci-ref",
            cue_ref(SourceType::Oci, "not a reference"),
            "InvalidRef",
        ),
    ];
    for (name, source, reason) in cases {
        let t = transform(name, source, json!({}), Vec::new());
        transforms
            .create(&PostParams::default(), &t)
            .await
            .expect("create");
        let failed = pass(&transforms, name, &ctx).await.expect("transform");
        assert_eq!(condition(&failed, "Fetched").0, "False", "{name}");
        assert_eq!(condition(&failed, "Fetched").1, reason, "{name}");
        assert_eq!(condition(&failed, "Stalled").0, "True", "{name}");
    }
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    assert!(
        graphs
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn an_existing_object_needs_an_adopt_rule_and_a_stuck_graph_times_out() {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), "adopt").await;
    let ctx = Arc::new(Context::new(client.clone(), engine()));
    let executor = Arc::new(pequod_graph_executor::Context::new(
        client.clone(),
        pequod_graph_executor::Config::default(),
    ));
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let mut theirs = ConfigMap::default();
    theirs.metadata.name = Some("legacy".into());
    theirs.data = Some(BTreeMap::from([("greeting".to_owned(), "old".to_owned())]));
    config_maps
        .create(&PostParams::default(), &theirs)
        .await
        .expect("someone else's ConfigMap");

    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    let mut legacy = transform(
        "legacy",
        cue_ref(SourceType::Inline, CONFIG_MODULE),
        json!({"greeting": "new"}),
        Vec::new(),
    );
    legacy.spec.timeout = Some("2s".into());
    transforms
        .create(&PostParams::default(), &legacy)
        .await
        .expect("create");
    pass(&transforms, "legacy", &ctx).await;
    for _ in 0..2 {
        execute(&graphs, "legacy", &executor).await;
    }
    let refused = pass(&transforms, "legacy", &ctx).await.expect("transform");
    let (_, _, message) = condition(&refused, "Reconciling");
    assert!(message.contains("Adopt"), "{message}");

    // Not Ready within spec.timeout: Stalled, with the graph's own message.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let timed_out = pass(&transforms, "legacy", &ctx).await.expect("transform");
    let (status, reason, message) = condition(&timed_out, "Stalled");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Timeout"));
    assert!(
        message.contains("spec.timeout 2s") && message.contains("Adopt"),
        "{message}"
    );
    assert_eq!(condition(&timed_out, "Ready").0, "False");

    // An adopt rule for the kind: a new revision takes the object over.
    transforms
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"adopt": [{"kind": "ConfigMap", "name": "legacy"}]}})),
        )
        .await
        .expect("add the rule");
    pass(&transforms, "legacy", &ctx).await;
    let graph = graphs.get("legacy").await.expect("graph");
    assert_eq!(graph.spec.revision, 2, "the rule changes the graph");
    assert_eq!(
        graph.spec.nodes[0].apply_policy.mode,
        pequod_api::ApplyMode::Adopt
    );
    for _ in 0..3 {
        execute(&graphs, "legacy", &executor).await;
    }
    let adopted = pass(&transforms, "legacy", &ctx).await.expect("transform");
    let (status, _, message) = condition(&adopted, "Ready");
    assert_eq!(status, "True", "{message}");
    let live = config_maps.get("legacy").await.expect("ConfigMap");
    assert_eq!(
        live.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("new")
    );
}

/// A ConfigMap whose label value comes from the input: a value with spaces is refused by the
/// API server when the graph is written.
const LABEL_MODULE: &str = r#"
package demo

#Input: {
	metadata: {name: string, namespace: string}
	label: string
}
input: #Input
graph: nodes: [{
	id: "config"
	object: {
		apiVersion: "v1"
		kind:       "ConfigMap"
		metadata: {name: input.metadata.name, namespace: input.metadata.namespace, labels: tier: input.label}
	}
}]
"#;

#[tokio::test]
async fn a_graph_the_api_server_refuses_stalls_the_transform_without_the_secret_value() {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), "refused").await;
    let ctx = Arc::new(Context::new(client.clone(), engine()));
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &secret("label", "label: hunter22 is not a label\n"),
        )
        .await
        .expect("secret");
    let from_secret = ValuesFromSource {
        kind: ValuesFromKind::Secret,
        name: "label".into(),
        values_key: Some("values.yaml".into()),
        target_path: None,
        optional: false,
    };
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    transforms
        .create(
            &PostParams::default(),
            &transform(
                "labelled",
                cue_ref(SourceType::Inline, LABEL_MODULE),
                json!({}),
                vec![from_secret],
            ),
        )
        .await
        .expect("create");
    let refused = pass(&transforms, "labelled", &ctx)
        .await
        .expect("transform");
    let (status, reason, message) = condition(&refused, "Stalled");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidGraph"));
    assert!(
        message.contains("refused the rendered ResourceGraph (422)"),
        "{message}"
    );
    assert!(message.contains("Invalid value: [redacted]"), "{message}");
    assert!(!message.contains("hunter22"), "{message}");
    let serialized = serde_json::to_string(&refused.status).expect("status");
    assert!(!serialized.contains("hunter22"), "{serialized}");
    assert!(
        Api::<ResourceGraph>::namespaced(client.clone(), &ns)
            .get_opt("labelled")
            .await
            .expect("get")
            .is_none(),
        "nothing written"
    );
    // Permanent: the next pass says the same and writes nothing new.
    let again = pass(&transforms, "labelled", &ctx)
        .await
        .expect("transform");
    assert_eq!(condition(&again, "Stalled").1, "InvalidGraph");
}
