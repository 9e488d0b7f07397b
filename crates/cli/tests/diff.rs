//! `pequod diff` against a real kube-apiserver: new objects, nothing once they are applied as
//! the executor applies them, then the changed fields of a new input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use pequod_graph_executor::{ANNOTATION_GRAPH_UID, LABEL_GRAPH, LABEL_GRAPH_NAMESPACE, LABEL_NODE};
use pequod_testenv::{Profile, shared};
use serde_json::{Value, json};

fn webservice() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cue/webservice")
}

fn basic_input() -> PathBuf {
    webservice().join("fixtures/basic/input.yaml")
}

fn pequod(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pequod"))
        .args(args)
        .output()
        .expect("pequod runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the graph executor would apply for each node (no ResourceGraph exists: empty UID).
async fn apply_like_the_executor(client: &kube::Client, namespace: &str, graph: &Value) {
    for node in graph["nodes"].as_array().expect("nodes") {
        let mut object = node["object"].clone();
        let id = node["id"].as_str().expect("id");
        object["metadata"]["labels"][LABEL_GRAPH] = json!("web");
        object["metadata"]["labels"][LABEL_GRAPH_NAMESPACE] = json!(namespace);
        object["metadata"]["labels"][LABEL_NODE] = json!(id);
        object["metadata"]["annotations"] = json!({ ANNOTATION_GRAPH_UID: "" });
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().expect("kind"));
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .expect("served");
        let name = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
            .patch(
                &name,
                &PatchParams::apply(pequod_api::FIELD_MANAGER),
                &Patch::Apply(&object),
            )
            .await
            .expect("applied");
    }
}

#[tokio::test]
async fn diff_shows_new_objects_then_nothing_then_the_changed_fields() {
    let env = shared(Profile::Minimal);
    let (client, namespace) = env.prepare(&pequod_api::crd::all(), "cli-diff").await;
    let kubeconfig = env.kubeconfig().display().to_string();
    let dir = webservice().display().to_string();
    let input = basic_input().display().to_string();
    let diff = |input: &str| {
        pequod(&[
            "diff",
            &dir,
            "--input",
            input,
            "--name",
            "web",
            "--namespace",
            &namespace,
            "--kubeconfig",
            &kubeconfig,
            "--exit-code",
        ])
    };

    let out = diff(&input);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("new Deployment {namespace}/web (node deployment)")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("new Service {namespace}/web (node service)")),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("2 new, 0 changed, 0 unchanged"));

    let render = pequod(&[
        "render",
        &dir,
        "--input",
        &input,
        "--namespace",
        &namespace,
        "--graph",
    ]);
    assert!(render.status.success(), "{}", text(&render.stderr));
    let graph: Value = yaml_serde::from_slice(&render.stdout).expect("graph YAML");
    apply_like_the_executor(&client, &namespace, &graph).await;

    let out = diff(&input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "nothing to change");
    assert!(text(&out.stderr).contains("0 new, 0 changed, 2 unchanged"));

    let scaled = std::env::temp_dir().join(format!("pequod-cli-diff-{}.yaml", std::process::id()));
    let basic = std::fs::read_to_string(basic_input()).expect("fixture");
    std::fs::write(&scaled, format!("{basic}replicas: 3\n")).expect("write input");
    let out = diff(&scaled.display().to_string());
    let _ = std::fs::remove_file(&scaled);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "changed Deployment {namespace}/web (node deployment)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n-  replicas: 1\n+  replicas: 3\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Service"),
        "the Service is unchanged: {stdout}"
    );
}

#[test]
fn diff_without_a_namespace_is_a_clear_error() {
    let dir = webservice().display().to_string();
    let out = pequod(&["diff", &dir, "--name", "web"]);
    assert_eq!(out.status.code(), Some(1));
    // The input has no image: the schema error comes first, with its position.
    assert!(
        text(&out.stderr).contains("input.image"),
        "{}",
        text(&out.stderr)
    );

    let out = pequod(&[
        "diff",
        &dir,
        "--input",
        &basic_input().display().to_string(),
        "--namespace",
        "",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--name and --namespace"),
        "{}",
        text(&out.stderr)
    );
}
