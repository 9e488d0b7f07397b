//! End-to-end with remote modules: `pequod-operator` as a process on the full control plane,
//! modules published by the real `cue mod publish` to Debian's `docker-registry` and committed
//! to a `git daemon`, both on 127.0.0.1. Versions are pinned, floated and followed; registry
//! failures end in conditions a user can act on while the running graph stays as it was.
//! Being on 127.0.0.1, they need the operator's `--allow-local-sources`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use pequod_api::{ResourceGraph, Transform};
use pequod_testenv::cue_cli::{self, write_files};
use pequod_testenv::git::GitServer;
use pequod_testenv::registry::Registry;
use serde_json::json;
use support::{Operator, condition, create_transform, eventually, namespace};

const MINUTE: Duration = Duration::from_secs(60);

/// A module whose one ConfigMap says which version rendered it.
fn site_files(module: &str, version: &str) -> Vec<(String, String)> {
    vec![
        (
            "cue.mod/module.cue".into(),
            format!("module: {module:?}\nlanguage: version: \"v0.17.0\"\nsource: kind: \"self\"\n"),
        ),
        (
            "site.cue".into(),
            format!(
                r#"package site

#Input: metadata: {{name: string, namespace: string}}
input: #Input
graph: nodes: [{{
	id: "config"
	object: {{
		apiVersion: "v1"
		kind:       "ConfigMap"
		metadata: {{name: "\(input.metadata.name)-site", namespace: input.metadata.namespace}}
		data: version: {version:?}
	}}
}}]
"#
            ),
        ),
    ]
}

/// `cue mod publish` of the site module at `version` (its major decides the module path).
fn publish_site(registry: &str, work: &Path, version: &str) {
    let major = version.split('.').next().unwrap_or("v0");
    let dir = work.join(format!("site-{version}"));
    let files = site_files(&format!("example.com/site@{major}"), version);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    write_files(&dir, &files);
    cue_cli::run(&dir, work, registry, &["mod", "publish", version]);
}

fn work_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(pequod_testenv::unique_name(name))
}

fn oci(reference: &str, version: Option<&str>) -> serde_json::Value {
    let mut cue_ref = json!({"type": "oci", "ref": reference, "interval": "10s"});
    if let Some(version) = version {
        cue_ref["version"] = json!(version);
    }
    json!({"cueRef": cue_ref, "input": {}})
}

/// The `version` the Transform's ConfigMap was rendered from, once it exists.
async fn rendered_version(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&format!("{name}-site"))
        .await
        .ok()??
        .data?
        .remove("version")
}

async fn transform(client: &kube::Client, ns: &str, name: &str) -> Option<Transform> {
    Api::<Transform>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()?
}

/// Waits until `name` is Ready with its ConfigMap at `version`.
async fn wait_rendered(
    client: &kube::Client,
    ns: &str,
    name: &str,
    version: &str,
    operator: &Operator,
) {
    eventually(
        &format!("{name} Ready at {version}"),
        MINUTE,
        &[operator],
        || async {
            let ready = transform(client, ns, name)
                .await
                .and_then(|t| condition(&t, "Ready"))
                .is_some_and(|(status, ..)| status == "True");
            (ready && rendered_version(client, ns, name).await.as_deref() == Some(version))
                .then_some(())
        },
    )
    .await;
}

/// Waits for `Fetched=False` with `reason`; returns the message.
async fn wait_fetch_failure(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    operator: &Operator,
) -> String {
    eventually(
        &format!("{name} Fetched=False/{reason}"),
        MINUTE,
        &[operator],
        || async {
            let (status, actual, message) =
                condition(&transform(client, ns, name).await?, "Fetched")?;
            (status == "False" && actual == reason).then_some(message)
        },
    )
    .await
}

#[tokio::test]
async fn oci_modules_by_version_constraint_digest_and_with_a_dependency() {
    let registry = Registry::start();
    let addr = registry.addr.clone();
    let work = work_dir("pequod-e2e-oci");
    publish_site(&addr, &work, "v1.2.0");

    let (client, ns) = namespace("e2e-oci").await;
    let operator = Operator::start(
        &ns,
        "oci",
        &[
            "--allow-local-sources",
            &format!("--insecure-registries={addr}"),
            &format!("--cue-registry={addr}"),
        ],
    )
    .await;
    let repository = format!("{addr}/example.com/site");
    create_transform(&client, &ns, "exact", oci(&repository, Some("v1.2.0"))).await;
    create_transform(&client, &ns, "floating", oci(&repository, Some("^1"))).await;
    wait_rendered(&client, &ns, "exact", "v1.2.0", &operator).await;
    wait_rendered(&client, &ns, "floating", "v1.2.0", &operator).await;
    let resolved = transform(&client, &ns, "exact")
        .await
        .and_then(|t| t.status?.resolved_cue_ref)
        .expect("status.resolvedCueRef");
    assert_eq!(resolved.url, format!("oci://{repository}"));
    assert_eq!(resolved.version.as_deref(), Some("v1.2.0"));
    assert!(resolved.digest.starts_with("sha256:"), "{resolved:?}");

    // By digest: exactly that manifest, never polled.
    let pinned = format!("{repository}@{}", resolved.digest);
    create_transform(&client, &ns, "pinned", oci(&pinned, None)).await;
    wait_rendered(&client, &ns, "pinned", "v1.2.0", &operator).await;

    // A patch release inside ^1 is picked up at the next poll; the exact pin stays.
    publish_site(&addr, &work, "v1.2.1");
    wait_rendered(&client, &ns, "floating", "v1.2.1", &operator).await;
    // v2.0.0 is outside ^1: several polls later, nothing moved.
    publish_site(&addr, &work, "v2.0.0");
    let requests_before = registry.requests().len();
    eventually("three more polls", MINUTE, &[&operator], || async {
        let polls = registry.requests()[requests_before..]
            .iter()
            .filter(|r| r.contains("/tags/list"))
            .count();
        (polls >= 3).then_some(())
    })
    .await;
    for (name, version) in [
        ("floating", "v1.2.1"),
        ("exact", "v1.2.0"),
        ("pinned", "v1.2.0"),
    ] {
        assert_eq!(
            rendered_version(&client, &ns, name).await.as_deref(),
            Some(version),
            "{name}"
        );
    }
    let graph = Api::<ResourceGraph>::namespaced(client.clone(), &ns)
        .get("floating")
        .await
        .expect("graph");
    assert_eq!(
        graph.spec.revision, 2,
        "v1.2.0, then v1.2.1; nothing for v2.0.0"
    );

    dependency_module(&client, &ns, &addr, &work, &operator).await;
    std::fs::remove_dir_all(work).expect("remove work dir");
}

/// A module importing a package of another module: the operator fetches the dependency from
/// the registry `--cue-registry` names and renders with it.
async fn dependency_module(
    client: &kube::Client,
    ns: &str,
    addr: &str,
    work: &Path,
    operator: &Operator,
) {
    let lib = work.join("labels");
    write_files(
        &lib,
        &[
            (
                "cue.mod/module.cue",
                "module: \"example.com/labels@v0\"\nlanguage: version: \"v0.17.0\"\nsource: kind: \"self\"\n",
            ),
            (
                "labels.cue",
                "package labels\n\n#Standard: {\"app.kubernetes.io/managed-by\": \"pequod\", tier: string}\n",
            ),
        ],
    );
    cue_cli::run(&lib, work, addr, &["mod", "publish", "v0.1.0"]);
    let app = work.join("app");
    write_files(
        &app,
        &[
            (
                "cue.mod/module.cue",
                "module: \"example.com/app@v0\"\nlanguage: version: \"v0.17.0\"\nsource: kind: \"self\"\n",
            ),
            (
                "app.cue",
                r#"package app

import std "example.com/labels"

#Input: metadata: {name: string, namespace: string}
input: #Input
graph: nodes: [{
	id: "config"
	object: {
		apiVersion: "v1"
		kind:       "ConfigMap"
		metadata: {name: "\(input.metadata.name)-site", namespace: input.metadata.namespace, labels: std.#Standard & {tier: "web"}}
		data: version: "app"
	}
}]
"#,
            ),
        ],
    );
    cue_cli::run(&app, work, addr, &["mod", "tidy"]);
    cue_cli::run(&app, work, addr, &["mod", "publish", "v0.1.0"]);
    create_transform(
        client,
        ns,
        "with-dep",
        oci(&format!("{addr}/example.com/app"), Some("v0.1.0")),
    )
    .await;
    wait_rendered(client, ns, "with-dep", "app", operator).await;
    let labels = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("with-dep-site")
        .await
        .expect("ConfigMap")
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("pequod")
    );
    assert_eq!(labels.get("tier").map(String::as_str), Some("web"));
}

#[tokio::test]
async fn registry_failures_are_named_and_the_running_graph_stays() {
    let mut registry = Registry::start();
    let addr = registry.addr.clone();
    let work = work_dir("pequod-e2e-oci-failures");
    publish_site(&addr, &work, "v1.0.0");
    let locked = Registry::start_with_auth("platform", "s3cret");
    let (client, ns) = namespace("e2e-oci-fail").await;
    let operator = Operator::start(
        &ns,
        "oci-failures",
        &[
            "--allow-local-sources",
            &format!("--insecure-registries={addr},{}", locked.addr),
        ],
    )
    .await;
    let repository = format!("{addr}/example.com/site");

    // A tag nobody published.
    create_transform(&client, &ns, "missing", oci(&repository, Some("v9.9.9"))).await;
    let message = wait_fetch_failure(&client, &ns, "missing", "NotFound", &operator).await;
    assert!(message.contains("v9.9.9"), "{message}");

    // Wrong credentials for a registry that wants them.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "wrong"},
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": "platform", "password": "guess"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
    let mut spec = oci(&format!("{}/example.com/site", locked.addr), Some("v1.0.0"));
    spec["cueRef"]["pullSecretRef"] = json!({"name": "wrong"});
    create_transform(&client, &ns, "denied", spec).await;
    let message = wait_fetch_failure(&client, &ns, "denied", "Unauthorized", &operator).await;
    assert!(!message.contains("guess"), "no secret in status: {message}");

    // A running Transform whose registry goes away: the condition says so, the graph and its
    // objects stay; when the registry returns, the Transform recovers by itself.
    create_transform(&client, &ns, "running", oci(&repository, Some("^1"))).await;
    wait_rendered(&client, &ns, "running", "v1.0.0", &operator).await;
    let graphs = Api::<ResourceGraph>::namespaced(client.clone(), &ns);
    let before = graphs.get("running").await.expect("graph");
    registry.stop();
    let message = wait_fetch_failure(&client, &ns, "running", "NetworkError", &operator).await;
    assert!(message.contains(&addr), "names the registry: {message}");
    let during = transform(&client, &ns, "running").await.expect("Transform");
    assert_eq!(
        condition(&during, "Reconciling").map(|(s, r, _)| (s, r)),
        Some(("True".to_owned(), "NetworkError".to_owned())),
        "retried by itself: progressing, not stalled"
    );
    assert_ne!(
        condition(&during, "Stalled").map(|(s, ..)| s).as_deref(),
        Some("True")
    );
    let after = graphs.get("running").await.expect("graph still there");
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(after.spec, before.spec);
    assert_eq!(
        rendered_version(&client, &ns, "running").await.as_deref(),
        Some("v1.0.0"),
        "the objects stay"
    );
    registry.restart();
    eventually("Fetched=True again", MINUTE, &[&operator], || async {
        let (status, ..) = condition(&transform(&client, &ns, "running").await?, "Fetched")?;
        (status == "True").then_some(())
    })
    .await;
    wait_rendered(&client, &ns, "running", "v1.0.0", &operator).await;
    std::fs::remove_dir_all(work).expect("remove work dir");
}

#[tokio::test]
async fn a_git_branch_that_advances_re_renders() {
    let git = GitServer::start();
    git.create("platform");
    let files = |version: &str| site_files("example.com/site@v1", version);
    let commit = |version: &str| {
        let files = files(version);
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        git.commit("platform", &files, version)
    };
    let first = commit("one");
    let (client, ns) = namespace("e2e-git").await;
    let operator = Operator::start(&ns, "git", &["--allow-local-sources"]).await;
    let spec = json!({
        "cueRef": {"type": "git", "ref": format!("{}#main", git.url("platform")), "interval": "10s"},
        "input": {},
    });
    create_transform(&client, &ns, "branch", spec).await;
    wait_rendered(&client, &ns, "branch", "one", &operator).await;
    let version = |t: Option<Transform>| t.and_then(|t| t.status?.resolved_cue_ref?.version);
    assert!(
        version(transform(&client, &ns, "branch").await).is_some_and(|v| v.contains(&first)),
        "the commit is recorded"
    );
    let second = commit("two");
    wait_rendered(&client, &ns, "branch", "two", &operator).await;
    assert!(version(transform(&client, &ns, "branch").await).is_some_and(|v| v.contains(&second)));
}
