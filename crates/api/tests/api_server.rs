//! The CRDs against a real kube-apiserver: install, round-trip, server-side validation, the
//! status subresource, printer columns and the OpenAPI descriptions behind `kubectl explain`.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, CustomResourceExt as _};
use pequod_api::{
    CueRef, GraphModule, GraphNode, ResourceGraph, ResourceGraphSpec, SourceRef, SourceType,
    Transform, TransformSpec, TransformStatus,
};
use pequod_testenv::{Profile, TestEnv, shared};
use serde_json::json;

async fn setup(prefix: &str) -> (&'static TestEnv, Client, String) {
    let env = shared(Profile::Minimal);
    let (client, ns) = env.prepare(&pequod_api::crd::all(), prefix).await;
    (env, client, ns)
}

fn transform(name: &str) -> Transform {
    Transform::new(
        name,
        TransformSpec {
            cue_ref: CueRef {
                source_type: SourceType::Embedded,
                reference: "webservice".into(),
                path: None,
                version: None,
                pull_secret_ref: None,
                interval: None,
            },
            input: Some(json!({"name": "hello", "image": "nginx:1.27", "extra": {"kept": true}})),
            values_from: Vec::new(),
            service_account_name: None,
            suspend: false,
            deletion_policy: pequod_api::DeletionPolicy::Delete,
            drift_policy: pequod_api::DriftPolicy::Correct,
            adopt: Vec::new(),
            timeout: Some("5m".into()),
        },
    )
}

fn graph(name: &str) -> ResourceGraph {
    let node = |id: &str, deps: &[&str]| GraphNode {
        id: id.into(),
        object: json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": id},
            "data": {"k": "v"},
        }),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        ready_when: Vec::new(),
        apply_policy: pequod_api::ApplyPolicy::default(),
    };
    ResourceGraph::new(
        name,
        ResourceGraphSpec {
            source_ref: SourceRef {
                api_version: "platform.pequod.io/v1alpha1".into(),
                kind: "Transform".into(),
                name: name.into(),
            },
            revision: 1,
            render_hash: "sha256:abc".into(),
            module: GraphModule {
                reference: "webservice".into(),
                digest: "sha256:def".into(),
            },
            service_account_name: None,
            drift_policy: pequod_api::DriftPolicy::Correct,
            suspend: false,
            nodes: vec![node("config", &[]), node("app", &["config"])],
        },
    )
}

/// Creates an arbitrary JSON object through the dynamic API, returning the server's error text.
async fn create_raw(
    client: &Client,
    ns: &str,
    kind: &str,
    body: serde_json::Value,
) -> Result<(), String> {
    let gvk = GroupVersionKind::gvk("platform.pequod.io", "v1alpha1", kind);
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
    let object: DynamicObject = serde_json::from_value(body).expect("valid DynamicObject JSON");
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn crds_become_established_with_their_names() {
    let (_env, client, _ns) = setup("established").await;
    let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(client);
    for name in [
        "transforms.platform.pequod.io",
        "resourcegraphs.platform.pequod.io",
    ] {
        let crd = crds.get(name).await.expect("CRD exists");
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} is not Established: {conditions:?}"
        );
    }
    let tf = crds
        .get("transforms.platform.pequod.io")
        .await
        .expect("CRD");
    assert_eq!(tf.spec.names.short_names, Some(vec!["tf".to_owned()]));
    let rg = crds
        .get("resourcegraphs.platform.pequod.io")
        .await
        .expect("CRD");
    assert_eq!(rg.spec.names.short_names, Some(vec!["rg".to_owned()]));
}

#[tokio::test]
async fn valid_objects_round_trip_through_typed_clients() {
    let (_env, client, ns) = setup("roundtrip").await;
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let sent = transform("web");
    let created = transforms
        .create(&PostParams::default(), &sent)
        .await
        .expect("Transform accepted");
    assert_eq!(created.spec, sent.spec);
    let read = transforms.get("web").await.expect("Transform read back");
    assert_eq!(read.spec, sent.spec);
    assert_eq!(
        read.spec
            .input
            .as_ref()
            .and_then(|i| i.pointer("/extra/kept")),
        Some(&json!(true)),
        "unknown input fields are preserved"
    );

    let graphs = Api::<ResourceGraph>::namespaced(client, &ns);
    let sent = graph("web");
    graphs
        .create(&PostParams::default(), &sent)
        .await
        .expect("ResourceGraph accepted");
    let read = graphs.get("web").await.expect("ResourceGraph read back");
    assert_eq!(read.spec, sent.spec);
    assert_eq!(
        read.spec.nodes[0].object["data"]["k"], "v",
        "embedded object kept whole"
    );
}

#[tokio::test]
async fn invalid_transforms_are_rejected_with_the_validation_message() {
    let (_env, client, ns) = setup("invalid-tf").await;
    let base = |spec: serde_json::Value| {
        json!({
            "apiVersion": "platform.pequod.io/v1alpha1",
            "kind": "Transform",
            "metadata": {"name": "bad"},
            "spec": spec,
        })
    };
    let cases = [
        (
            "missing cueRef",
            json!({"input": {}}),
            "spec.cueRef: Required value",
        ),
        (
            "unknown source type",
            json!({"cueRef": {"type": "s3", "ref": "x"}}),
            "spec.cueRef.type: Unsupported value: \"s3\"",
        ),
        (
            "empty ref",
            json!({"cueRef": {"type": "embedded", "ref": ""}}),
            "spec.cueRef.ref",
        ),
        (
            "version without oci/git",
            json!({"cueRef": {"type": "configmap", "ref": "mod", "version": "^1"}}),
            "cueRef.version (a semver constraint) is only allowed with type oci or git",
        ),
        (
            "input is not an object",
            json!({"cueRef": {"type": "embedded", "ref": "webservice"}, "input": "text"}),
            "spec.input: Invalid value: \"string\"",
        ),
        (
            "serviceAccountName naming another namespace",
            json!({"cueRef": {"type": "embedded", "ref": "webservice"}, "serviceAccountName": "kube-system:default"}),
            "spec.serviceAccountName",
        ),
        (
            "valuesFrom name with a slash",
            json!({"cueRef": {"type": "embedded", "ref": "webservice"}, "valuesFrom": [{"kind": "Secret", "name": "other/secret"}]}),
            "spec.valuesFrom[0].name",
        ),
        (
            "bad duration",
            json!({"cueRef": {"type": "oci", "ref": "r/m", "interval": "soon"}}),
            "spec.cueRef.interval",
        ),
    ];
    for (case, spec, expected) in cases {
        let err = create_raw(&client, &ns, "Transform", base(spec))
            .await
            .expect_err(&format!("{case}: must be rejected"));
        assert!(
            err.contains(expected),
            "{case}: expected {expected:?} in {err}"
        );
    }
    // The same body with a valid ref is accepted, so the cases above failed for their reason.
    create_raw(
        &client,
        &ns,
        "Transform",
        base(json!({"cueRef": {"type": "oci", "ref": "r/m", "version": "^1"}})),
    )
    .await
    .expect("valid oci Transform with a version");
}

#[tokio::test]
async fn spec_durations_are_bounded_by_the_crd() {
    let (_env, client, ns) = setup("bounds-tf").await;
    let base = |spec: serde_json::Value| {
        json!({
            "apiVersion": "platform.pequod.io/v1alpha1",
            "kind": "Transform",
            "metadata": {"name": "bad"},
            "spec": spec,
        })
    };
    let interval = |text: &str| json!({"cueRef": {"type": "oci", "ref": "r/m", "interval": text}});
    let timeout =
        |text: &str| json!({"cueRef": {"type": "embedded", "ref": "webservice"}, "timeout": text});
    let bounds = [
        (
            "interval below 10s",
            interval("9s"),
            "cueRef.interval must be between 10s and 168h",
        ),
        (
            "interval of 1ms",
            interval("1ms"),
            "cueRef.interval must be between 10s and 168h",
        ),
        (
            "interval above 168h",
            interval("168h1s"),
            "cueRef.interval must be between 10s and 168h",
        ),
        (
            "overflowing interval",
            interval("5124095576030000h"),
            "spec.cueRef.interval",
        ),
        (
            "huge interval text",
            interval(&"9".repeat(40)),
            "spec.cueRef.interval",
        ),
        (
            "timeout below 1s",
            timeout("999ms"),
            "spec.timeout must be between 1s and 168h",
        ),
        (
            "timeout above 168h",
            timeout("169h"),
            "spec.timeout must be between 1s and 168h",
        ),
        (
            "overflowing timeout",
            timeout("99999999999999999999h"),
            "spec.timeout",
        ),
    ];
    for (case, spec, expected) in bounds {
        let err = create_raw(&client, &ns, "Transform", base(spec))
            .await
            .expect_err(&format!("{case}: must be rejected"));
        assert!(
            err.contains(expected),
            "{case}: expected {expected:?} in {err}"
        );
    }
    // The bounds themselves are accepted.
    for (i, spec) in [
        interval("10s"),
        interval("168h"),
        timeout("1s"),
        timeout("168h"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = base(spec);
        body["metadata"]["name"] = json!(format!("edge-{i}"));
        create_raw(&client, &ns, "Transform", body)
            .await
            .expect("a duration at the bound is accepted");
    }
}

#[tokio::test]
async fn invalid_graphs_are_rejected_with_the_validation_message() {
    let (_env, client, ns) = setup("invalid-rg").await;
    let with_nodes = |nodes: serde_json::Value| {
        let mut body = serde_json::to_value(graph("bad")).expect("graph JSON");
        body["spec"]["nodes"] = nodes;
        body
    };
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let cases = [
        (
            "duplicate node ids",
            json!([{"id": "a", "object": cm("a")}, {"id": "a", "object": cm("b")}]),
            "spec.nodes[1]: Duplicate value",
        ),
        (
            "node id not a DNS label",
            json!([{"id": "Bad_Id", "object": cm("a")}]),
            "node id must be a DNS label",
        ),
        (
            "object without kind",
            json!([{"id": "a", "object": {"apiVersion": "v1", "metadata": {"name": "a"}}}]),
            "spec.nodes[0].object.kind: Required value",
        ),
        (
            "ConditionMatch without conditionType",
            json!([{"id": "a", "object": cm("a"), "readyWhen": [{"type": "ConditionMatch"}]}]),
            "a ConditionMatch rule needs conditionType",
        ),
    ];
    for (case, nodes, expected) in cases {
        let err = create_raw(&client, &ns, "ResourceGraph", with_nodes(nodes))
            .await
            .expect_err(&format!("{case}: must be rejected"));
        assert!(
            err.contains(expected),
            "{case}: expected {expected:?} in {err}"
        );
    }
}

#[tokio::test]
async fn status_is_written_only_through_the_status_subresource() {
    let (_env, client, ns) = setup("status").await;
    let transforms = Api::<Transform>::namespaced(client, &ns);
    let mut sent = transform("web");
    sent.status = Some(TransformStatus {
        render_hash: Some("smuggled".into()),
        ..TransformStatus::default()
    });
    let created = transforms
        .create(&PostParams::default(), &sent)
        .await
        .expect("created");
    assert_eq!(
        created.status.and_then(|s| s.render_hash),
        None,
        "status ignored on create"
    );

    let params = PatchParams::apply("status-test");
    let patch = json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "metadata": {"name": "web"},
        "spec": serde_json::to_value(&sent.spec).expect("spec JSON"),
        "status": {"renderHash": "through-main-resource"},
    });
    let after = transforms
        .patch("web", &params, &Patch::Apply(&patch))
        .await
        .expect("apply on main resource");
    assert_eq!(
        after.status.and_then(|s| s.render_hash),
        None,
        "status ignored on the main resource"
    );

    let status = json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "status": {"renderHash": "sha256:good", "readyNodes": "0/2"},
    });
    let after = transforms
        .patch_status(
            "web",
            &PatchParams::apply("status-test"),
            &Patch::Apply(&status),
        )
        .await
        .expect("status subresource accepts status");
    let status = after.status.expect("status written");
    assert_eq!(status.render_hash.as_deref(), Some("sha256:good"));
    assert_eq!(status.ready_nodes.as_deref(), Some("0/2"));
}

#[tokio::test]
async fn printer_columns_come_back_from_the_table_api() {
    let (_env, client, ns) = setup("table").await;
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    transforms
        .create(&PostParams::default(), &transform("web"))
        .await
        .expect("created");
    let status = json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "status": {"readyNodes": "1/2", "resolvedCueRef": {"url": "embedded://webservice", "version": "1.0.0", "digest": "sha256:x", "fetchedAt": "2026-01-01T00:00:00Z"}},
    });
    transforms
        .patch_status(
            "web",
            &PatchParams::apply("table-test"),
            &Patch::Apply(&status),
        )
        .await
        .expect("status");

    let (columns, table) = table_of(&client, &ns, "transforms").await;
    assert_eq!(
        columns,
        [
            "Name", "Module", "Version", "Ready", "Nodes", "Age", "Status"
        ]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "web");
    assert_eq!(cells[1], "embedded://webservice", "the module as resolved");
    assert_eq!(cells[2], "1.0.0");
    assert_eq!(cells[4], "1/2");

    let (columns, _) = table_of(&client, &ns, "resourcegraphs").await;
    assert_eq!(columns, ["Name", "Phase", "Revision", "Ready", "Age"]);
}

/// The Table API answer for a resource list (what `kubectl get` prints), with its column names.
async fn table_of(client: &Client, ns: &str, plural: &str) -> (Vec<String>, serde_json::Value) {
    let request = http::Request::get(format!(
        "/apis/platform.pequod.io/v1alpha1/namespaces/{ns}/{plural}"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .expect("request");
    let table: serde_json::Value = client.request(request).await.expect("Table API answers");
    let columns = table["columnDefinitions"]
        .as_array()
        .expect("columnDefinitions")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    (columns, table)
}

#[tokio::test]
async fn openapi_publishes_field_descriptions_for_kubectl_explain() {
    let (_env, client, _ns) = setup("explain").await;
    let request = http::Request::get("/openapi/v3/apis/platform.pequod.io/v1alpha1")
        .body(Vec::new())
        .expect("request");
    let doc: serde_json::Value = client.request(request).await.expect("OpenAPI v3 document");
    let schema = &doc["components"]["schemas"]["io.pequod.platform.v1alpha1.Transform"];
    let cue_ref = &schema["properties"]["spec"]["properties"]["cueRef"];
    let text = cue_ref["description"].as_str().unwrap_or_default();
    assert!(
        text.contains("Where the CUE module comes from"),
        "cueRef description: {text:?}"
    );
    let ref_text = cue_ref["properties"]["ref"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        ref_text.contains("module reference"),
        "cueRef.ref description: {ref_text:?}"
    );
    assert!(
        schema["description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("A Transform renders"),
        "kind description: {}",
        schema["description"]
    );
    // The CRD kube-rs generates is what the server serves.
    assert_eq!(Transform::crd_name(), "transforms.platform.pequod.io");
}
