//! End-to-end: `pequod-operator` run as a real process with its flags, against the full local
//! control plane (kube-apiserver, controller-manager, scheduler, kwok node), driven the way a
//! user drives it: `kubectl apply`-style writes, `kubectl wait`, reading objects back.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pequod_api::{ResourceGraph, Transform};
use serde_json::json;
use support::{
    Operator, condition, create_transform, eventually, kubectl_wait_ready, lease_holder, namespace,
    web_input,
};

const MINUTE: Duration = Duration::from_secs(60);

/// A gate ConfigMap that is ready only once someone sets `data.ready: "yes"`, and an app
/// ConfigMap behind it.
const GATED_MODULE: &str = r#"
package gated

#Input: metadata: {name: string, namespace: string}
input: #Input
graph: nodes: [
	{
		id: "gate"
		object: {
			apiVersion: "v1"
			kind:       "ConfigMap"
			metadata: {name: "\(input.metadata.name)-gate", namespace: input.metadata.namespace}
			data: owner: "pequod"
		}
		readyWhen: [{type: "FieldEquals", path: "data.ready", value: "yes"}]
	},
	{
		id: "app"
		dependsOn: ["gate"]
		object: {
			apiVersion: "v1"
			kind:       "ConfigMap"
			metadata: {name: "\(input.metadata.name)-app", namespace: input.metadata.namespace}
			data: k: "v"
		}
	},
]
"#;

/// A small site module (Deployment, and a Service unless `with_service` is false), for the
/// inline and ConfigMap sources.
fn site_module(with_service: bool) -> String {
    let service = if with_service {
        r#"{
		id: "service"
		dependsOn: ["deployment"]
		object: {
			apiVersion: "v1"
			kind:       "Service"
			metadata: {name: input.metadata.name, namespace: input.metadata.namespace}
			spec: {selector: _labels, ports: [{port: 80}]}
		}
	},"#
    } else {
        ""
    };
    format!(
        r#"package site

#Input: {{
	metadata: {{name: string, namespace: string}}
	replicas: *1 | int & >=0 & <=10
}}
input: #Input
_labels: {{"app.kubernetes.io/name": input.metadata.name}}
graph: nodes: [
	{{
		id: "deployment"
		object: {{
			apiVersion: "apps/v1"
			kind:       "Deployment"
			metadata: {{name: input.metadata.name, namespace: input.metadata.namespace}}
			spec: {{
				replicas: input.replicas
				selector: matchLabels: _labels
				template: {{
					metadata: labels: _labels
					spec: containers: [{{name: "web", image: "docker.io/library/nginx:1.27"}}]
				}}
			}}
		}}
	}},
	{service}
]
"#
    )
}

fn available(deployment: &Deployment) -> bool {
    deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            })
        })
}

#[tokio::test]
async fn a_webservice_from_each_source_converges_updates_in_place_and_tears_down() {
    let (client, ns) = namespace("e2e-sources").await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let module_cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("site-module".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("site.cue".to_owned(), site_module(true))])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &module_cm)
        .await
        .expect("module ConfigMap");
    let embedded =
        json!({"cueRef": {"type": "embedded", "ref": "webservice"}, "input": web_input(2)});
    let inline =
        json!({"cueRef": {"type": "inline", "ref": site_module(true)}, "input": {"replicas": 1}});
    let configmap =
        json!({"cueRef": {"type": "configmap", "ref": "site-module"}, "input": {"replicas": 1}});
    for (name, spec) in [
        ("web", embedded),
        ("inline", inline),
        ("from-cm", configmap),
    ] {
        create_transform(&client, &ns, name, spec).await;
    }
    for name in ["web", "inline", "from-cm"] {
        kubectl_wait_ready(&ns, name, 2 * MINUTE)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", operator.log_tail()));
        // Ready means rolled out: the Deployment is Available and the Service exists.
        let deployment = deployments.get(name).await.expect("deployment");
        assert!(
            available(&deployment),
            "{name} Ready before its Deployment is Available"
        );
        assert!(
            Api::<Service>::namespaced(client.clone(), &ns)
                .get_opt(name)
                .await
                .expect("get")
                .is_some()
        );
        let web = transforms.get(name).await.expect("transform");
        let status = web.status.expect("status");
        assert_eq!(status.ready_nodes.as_deref(), Some("2/2"));
        assert_eq!(status.history.len(), 1);
    }

    // Input change: updated in place, same UID.
    let uid = deployments.get("web").await.expect("deployment").uid();
    let patch = json!({"spec": {"input": web_input(3)}});
    transforms
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    eventually("web scaled to 3 in place", MINUTE, &[&operator], || async {
        let d = deployments.get("web").await.ok()?;
        (d.spec.replicas == Some(3)).then_some(())
    })
    .await;
    assert_eq!(deployments.get("web").await.expect("deployment").uid(), uid);

    module_edit_prunes_the_dropped_node(&client, &ns, &operator).await;
    schema_violation_keeps_the_graph(&client, &ns, &operator).await;
    local_sources_are_refused(&client, &ns, &operator).await;

    // Delete: ordered teardown, finalizers removed, nothing left.
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    transforms
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("web and its objects gone", MINUTE, &[&operator], || async {
        let gone = transforms.get_opt("web").await.ok()?.is_none()
            && deployments.get_opt("web").await.ok()?.is_none()
            && services.get_opt("web").await.ok()?.is_none()
            && Api::<ResourceGraph>::namespaced(client.clone(), &ns)
                .get_opt("web")
                .await
                .ok()?
                .is_none();
        gone.then_some(())
    })
    .await;
    assert!(operator.terminate().await.success(), "SIGTERM exits 0");
}

/// The module loses its Service node (the ConfigMap is edited): the Service is pruned, the
/// Deployment stays.
async fn module_edit_prunes_the_dropped_node(client: &kube::Client, ns: &str, operator: &Operator) {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    // Module change: the Service node disappears → pruned.
    let new_module = json!({"data": {"site.cue": site_module(false)}});
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            "site-module",
            &PatchParams::default(),
            &Patch::Merge(&new_module),
        )
        .await
        .expect("edit module");
    let services = Api::<Service>::namespaced(client.clone(), ns);
    eventually("from-cm's Service pruned", MINUTE, &[operator], || async {
        services
            .get_opt("from-cm")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        deployments.get_opt("from-cm").await.expect("get").is_some(),
        "only the dropped node goes"
    );
}

/// A schema violation: `Validated=False` with the CUE path, the graph and objects untouched.
async fn schema_violation_keeps_the_graph(client: &kube::Client, ns: &str, operator: &Operator) {
    let transforms = Api::<Transform>::namespaced(client.clone(), ns);
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), ns);
    let before = graphs.get("inline").await.expect("graph").spec;
    let bad = json!({"spec": {"input": {"replicas": "three"}}});
    transforms
        .patch("inline", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .expect("patch");
    let transform = eventually("inline Validated=False", MINUTE, &[operator], || async {
        let t = transforms.get("inline").await.ok()?;
        (condition(&t, "Validated")?.0 == "False").then_some(t)
    })
    .await;
    let (_, reason, _) = condition(&transform, "Validated").expect("Validated");
    assert_eq!(reason, "SchemaViolation");
    let violations = transform.status.expect("status").violations;
    assert!(
        violations
            .iter()
            .any(|v| v.path == "input.replicas" && v.position.is_some()),
        "{violations:?}"
    );
    assert_eq!(
        graphs.get("inline").await.expect("graph").spec,
        before,
        "the running graph is untouched"
    );
}

/// Without `--allow-local-sources`, a Git module on the operator's own disk or on loopback is
/// refused: `Fetched=False`, permanently, and nothing is rendered.
async fn local_sources_are_refused(client: &kube::Client, ns: &str, operator: &Operator) {
    let transforms = Api::<Transform>::namespaced(client.clone(), ns);
    for (name, reference) in [
        ("from-disk", "file:///etc#main"),
        ("from-loopback", "git://127.0.0.1:9418/platform#main"),
    ] {
        let spec = json!({"cueRef": {"type": "git", "ref": reference}, "input": {}});
        create_transform(client, ns, name, spec).await;
        let (_, reason, message) = eventually(
            &format!("{name} Fetched=False"),
            MINUTE,
            &[operator],
            || async {
                let t = transforms.get(name).await.ok()?;
                condition(&t, "Fetched").filter(|(status, ..)| status == "False")
            },
        )
        .await;
        assert!(message.contains("source not allowed"), "{name}: {message}");
        assert_eq!(reason, "SourceNotAllowed", "{name}");
        assert!(
            Api::<ResourceGraph>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await
                .expect("get")
                .is_none(),
            "{name}: nothing rendered"
        );
    }
}

#[tokio::test]
async fn a_rotated_secret_re_renders_and_suspend_stops_all_changes() {
    let (client, ns) = namespace("e2e-values").await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("web-values".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "values.yaml".to_owned(),
            "replicas: 1\n".to_owned(),
        )])),
        ..Default::default()
    };
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let mut input = web_input(1);
    input.as_object_mut().expect("object").remove("replicas");
    let spec = json!({
        "cueRef": {"type": "embedded", "ref": "webservice"},
        "input": input,
        "valuesFrom": [{"kind": "Secret", "name": "web-values", "valuesKey": "values.yaml"}],
    });
    create_transform(&client, &ns, "web", spec).await;
    kubectl_wait_ready(&ns, "web", 2 * MINUTE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    let replicas = || async { deployments.get("web").await.ok()?.spec.replicas };

    let rotated = json!({"stringData": {"values.yaml": "replicas: 2\n"}});
    secrets
        .patch(
            "web-values",
            &PatchParams::default(),
            &Patch::Merge(&rotated),
        )
        .await
        .expect("rotate");
    eventually(
        "the rotated Secret re-rendered",
        MINUTE,
        &[&operator],
        || async { (replicas().await? == 2).then_some(()) },
    )
    .await;

    // Suspended: a change is not rendered and the graph keeps its revision; resumed, it is.
    let transforms = Api::<Transform>::namespaced(client.clone(), &ns);
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    let revision = graphs.get("web").await.expect("graph").spec.revision;
    suspend(&transforms, &graphs, "web", true, &operator).await;
    let three = json!({"stringData": {"values.yaml": "replicas: 3\n"}});
    secrets
        .patch("web-values", &PatchParams::default(), &Patch::Merge(&three))
        .await
        .expect("patch");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        graphs.get("web").await.expect("graph").spec.revision,
        revision
    );
    assert_eq!(replicas().await, Some(2), "suspended: not rendered");
    suspend(&transforms, &graphs, "web", false, &operator).await;
    eventually("resumed and applied", MINUTE, &[&operator], || async {
        (replicas().await? == 3).then_some(())
    })
    .await;

    // Suspended, the executor leaves the objects alone too: a hand edit stays until resumed.
    suspend(&transforms, &graphs, "web", true, &operator).await;
    let hand_edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    deployments
        .patch(
            "web",
            &hand_edit,
            &Patch::Merge(&json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("a hand edit");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(replicas().await, Some(5), "suspended: drift not corrected");
    suspend(&transforms, &graphs, "web", false, &operator).await;
    eventually("resumed: drift corrected", MINUTE, &[&operator], || async {
        (replicas().await? == 3).then_some(())
    })
    .await;
}

/// Sets `spec.suspend` and waits until the graph says so (a suspended Transform writes no
/// status; its graph carries the flag to the executor).
async fn suspend(
    transforms: &Api<Transform>,
    graphs: &Api<ResourceGraph>,
    name: &str,
    suspended: bool,
    operator: &Operator,
) {
    transforms
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": suspended}})),
        )
        .await
        .expect("suspend or resume");
    eventually(
        &format!("graph suspend = {suspended}"),
        MINUTE,
        &[operator],
        || async { (graphs.get(name).await.ok()?.spec.suspend == suspended).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn the_environment_module_builds_a_namespace_with_quota_policy_app_and_url() {
    let (client, ns) = namespace("e2e-env").await;
    let operator = Operator::start(&ns, "solo", &["--cluster-scoped-kinds=Namespace"]).await;
    let environment = pequod_testenv::unique_name("team");
    let spec = json!({
        "cueRef": {"type": "embedded", "ref": "environment"},
        "input": {
            "environment": environment,
            "host": "team.example.com",
            "app": {"image": "docker.io/library/nginx:1.27", "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}},
        },
    });
    create_transform(&client, &ns, "env", spec).await;
    kubectl_wait_ready(&ns, "env", 3 * MINUTE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(&environment)
            .await
            .expect("get")
            .is_some()
    );
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), &environment)
        .list(&ListParams::default())
        .await
        .expect("quotas");
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &environment)
        .list(&ListParams::default())
        .await
        .expect("policies");
    let apps = Api::<Deployment>::namespaced(client.clone(), &environment)
        .list(&ListParams::default())
        .await
        .expect("apps");
    assert_eq!(
        (
            quotas.items.len(),
            !policies.items.is_empty(),
            apps.items.len()
        ),
        (1, true, 1)
    );
    assert!(available(&apps.items[0]));
    let transform = Api::<Transform>::namespaced(client.clone(), &ns)
        .get("env")
        .await
        .expect("transform");
    let url = transform
        .status
        .and_then(|s| s.outputs)
        .map(|o| o["url"].clone());
    assert_eq!(url, Some(json!("http://team.example.com")));
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_the_other_finishes_the_work_after_a_kill() {
    let (client, ns) = namespace("e2e-leader").await;
    let timings = [
        "--lease-duration=4s",
        "--renew-deadline=3s",
        "--retry-period=500ms",
    ];
    let first = Operator::start(&ns, "first", &timings).await;
    let second = Operator::start(&ns, "second", &timings).await;
    let holder = eventually("a leader", MINUTE, &[&first, &second], || {
        lease_holder(&client, &ns)
    })
    .await;
    let (leader, standby) = if holder == "first" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(leader.metric("pequod_leader").await, Some(1.0));
    assert_eq!(
        standby.metric("pequod_leader").await,
        Some(0.0),
        "exactly one leader"
    );

    create_transform(
        &client,
        &ns,
        "before",
        json!({"cueRef": {"type": "embedded", "ref": "webservice"}, "input": web_input(1)}),
    )
    .await;
    kubectl_wait_ready(&ns, "before", 2 * MINUTE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", leader.log_tail()));

    // A crash mid-work: the leader has applied the gate of a gated graph and is waiting for it
    // when it dies by SIGKILL; the gate opens afterwards, so only the standby can finish.
    let spec = json!({"cueRef": {"type": "inline", "ref": GATED_MODULE}});
    create_transform(&client, &ns, "after", spec).await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    eventually(
        "the leader applied the gate",
        MINUTE,
        &[&leader],
        || async { config_maps.get_opt("after-gate").await.ok()?.map(|_| ()) },
    )
    .await;
    leader.kill().await;
    let open = json!({"data": {"ready": "yes"}});
    config_maps
        .patch("after-gate", &PatchParams::default(), &Patch::Merge(&open))
        .await
        .expect("open the gate");
    kubectl_wait_ready(&ns, "after", 2 * MINUTE)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", standby.log_tail()));
    assert!(
        config_maps
            .get_opt("after-app")
            .await
            .expect("get")
            .is_some()
    );
    assert_eq!(
        lease_holder(&client, &ns).await.as_deref(),
        Some(standby.identity.as_str())
    );
    assert_eq!(standby.metric("pequod_leader").await, Some(1.0));

    // A clean stop hands the Lease over at once: no holder left behind.
    assert!(standby.terminate().await.success());
    assert_eq!(lease_holder(&client, &ns).await, None);
}
