//! What the real `cue mod publish` pushes, Pequod fetches and renders: the platform module
//! published by cuelang.org/go's own CLI to a registry on 127.0.0.1.

mod support;

use std::path::Path;
use std::process::Command;

use pequod_cue::{Engine, EngineConfig, ModuleSource};
use pequod_source::{SourceConfig, Sources};
use pequod_testenv::registry::Registry;
use serde_json::json;
use support::{oci_ref, offline_kube_client};

fn write_module(root: &Path) {
    let platform = pequod_source::embedded("webservice", None).expect("embedded module");
    for (path, content) in &platform.files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("dirs");
        let content = if path == "cue.mod/module.cue" {
            // `cue mod publish` wants to know where the files come from.
            format!("{content}source: kind: \"self\"\n")
        } else {
            content.clone()
        };
        std::fs::write(file, content).expect("write");
    }
}

#[tokio::test]
async fn a_module_published_by_cue_mod_publish_renders() {
    let registry = Registry::start();
    let addr = registry.addr.clone();
    let cue = pequod_testenv::cue_cli::cue();
    let dir = std::env::temp_dir().join(pequod_testenv::unique_name("pequod-cue-publish"));
    write_module(&dir.join("module"));
    let output = Command::new(&cue)
        .args(["mod", "publish", "v0.1.0"])
        .current_dir(dir.join("module"))
        .env("CUE_REGISTRY", format!("{addr}+insecure"))
        .env("CUE_CACHE_DIR", dir.join("cue-cache"))
        .env("HOME", &dir)
        .output()
        .expect("cue mod publish");
    assert!(
        output.status.success(),
        "cue mod publish: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // CUE's registry rules: repository = prefix + module path without the major version.
    let sources = Sources::new(SourceConfig {
        insecure_registries: vec![addr.clone()],
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let fetched = sources
        .fetch(
            &offline_kube_client(),
            "team-a",
            &oci_ref(
                &format!("{addr}/pequod.dev/platform"),
                Some("^0.1"),
                Some("webservice"),
            ),
        )
        .await
        .expect("fetched what cue published");
    assert_eq!(fetched.version.as_deref(), Some("v0.1.0"));
    assert!(fetched.files.contains_key("policy/policy.cue"));
    let module = ModuleSource {
        digest: fetched.digest.clone(),
        files: fetched.files.clone(),
        package: fetched.package.clone(),
        deps: Vec::new(),
    };
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let input = json!({
        "metadata": {"name": "web", "namespace": "team-a"},
        "image": "docker.io/library/nginx:1.27",
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
    });
    let rendered = engine.evaluate(&module, &input).await.expect("rendered");
    let ids: Vec<&str> = rendered.nodes.iter().map(|n| n.id.as_str()).collect();
    assert!(
        ids.contains(&"deployment") && ids.contains(&"service"),
        "{ids:?}"
    );
    std::fs::remove_dir_all(dir).expect("remove temp dir");
}
