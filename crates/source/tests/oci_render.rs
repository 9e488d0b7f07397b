//! The platform module published to a real registry in CUE's module format, fetched by a
//! version constraint and rendered by the real CUE engine.

mod support;

use oci_client::secrets::RegistryAuth;
use pequod_cue::{Engine, EngineConfig, ModuleSource};
use pequod_source::{SourceConfig, Sources};
use pequod_testenv::registry::Registry;
use serde_json::json;
use support::{oci_ref, offline_kube_client, publish_cue};

#[tokio::test]
async fn a_published_platform_module_renders_from_the_registry() {
    let registry = Registry::start();
    let addr = registry.addr.clone();
    let platform = pequod_source::embedded("webservice", None).expect("embedded module");
    let mut files: Vec<(String, String)> = platform.files.clone().into_iter().collect();
    let digest = publish_cue(
        &addr,
        "pequod/platform",
        "v0.1.0",
        &files,
        &RegistryAuth::Anonymous,
    )
    .await;
    // A newer release with another default port: a constraint follows it.
    for (path, content) in &mut files {
        if path == "webservice/webservice.cue" {
            *content = content.replace("port: *8080 |", "port: *9090 |");
        }
    }
    let newer = publish_cue(
        &addr,
        "pequod/platform",
        "v0.1.1",
        &files,
        &RegistryAuth::Anonymous,
    )
    .await;

    let sources = Sources::new(SourceConfig {
        insecure_registries: vec![addr.clone()],
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let kube = offline_kube_client();
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let input = json!({
        "metadata": {"name": "web", "namespace": "team-a"},
        "image": "docker.io/library/nginx:1.27",
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
    });
    for (version, expected_digest, port) in [("v0.1.0", &digest, 8080), ("^0.1", &newer, 9090)] {
        let fetched = sources
            .fetch(
                &kube,
                "team-a",
                &oci_ref(
                    &format!("{addr}/pequod/platform"),
                    Some(version),
                    Some("webservice"),
                ),
            )
            .await
            .expect("fetched");
        assert_eq!(&fetched.digest, expected_digest);
        let module = ModuleSource {
            digest: fetched.digest.clone(),
            files: fetched.files.clone(),
            package: fetched.package.clone(),
            deps: Vec::new(),
        };
        let rendered = engine
            .evaluate(&module, &input)
            .await
            .unwrap_or_else(|e| panic!("rendering {version}: {e:?}"));
        let ids: Vec<&str> = rendered.nodes.iter().map(|n| n.id.as_str()).collect();
        assert!(
            ids.contains(&"deployment") && ids.contains(&"service"),
            "{ids:?}"
        );
        let deployment = rendered
            .nodes
            .iter()
            .find(|n| n.id == "deployment")
            .expect("deployment");
        assert_eq!(
            deployment.object["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            json!(port),
            "{version}"
        );
        assert_eq!(deployment.object["metadata"]["namespace"], json!("team-a"));
    }
}
