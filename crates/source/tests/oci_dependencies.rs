//! A module that imports another CUE module: `cue mod tidy` (the real CLI) writes the
//! dependency into `cue.mod/module.cue`, Pequod fetches it from the registry `CUE_REGISTRY`
//! names, by digest, and the engine evaluates the import with it. Failures name the
//! dependency and keep the kind of problem (not found, no registry, network).

mod support;

use oci_client::secrets::RegistryAuth;
use pequod_cue::{Engine, EngineConfig, ModuleSource};
use pequod_source::cue_registry::CueRegistry;
use pequod_source::{FetchError, SourceConfig, Sources};
use pequod_testenv::cue_cli::{self, write_files};
use pequod_testenv::registry::Registry;
use serde_json::json;
use support::{oci_ref, offline_kube_client, publish_cue};

const LIB_MODULE: &str =
    "module: \"example.com/labels@v0\"\nlanguage: version: \"v0.17.0\"\nsource: kind: \"self\"\n";
const LIB: &str =
    "package labels\n\n#Standard: {\"app.kubernetes.io/managed-by\": \"pequod\", team: string}\n";
const APP_MODULE: &str =
    "module: \"example.com/app@v0\"\nlanguage: version: \"v0.17.0\"\nsource: kind: \"self\"\n";
const APP: &str = r#"package app

import std "example.com/labels"

input: {metadata: {name: string, namespace: string}}
graph: nodes: [{
	id: "config"
	object: {
		apiVersion: "v1"
		kind:       "ConfigMap"
		metadata: {name: input.metadata.name, labels: std.#Standard & {team: "core"}}
	}
}]
"#;

#[tokio::test]
async fn a_dependency_declared_by_cue_mod_tidy_is_fetched_and_evaluated() {
    let registry = Registry::start();
    let addr = registry.addr.clone();
    let work = std::env::temp_dir().join(pequod_testenv::unique_name("pequod-deps"));
    let lib = work.join("labels");
    let app = work.join("app");
    write_files(
        &lib,
        &[("cue.mod/module.cue", LIB_MODULE), ("labels.cue", LIB)],
    );
    write_files(
        &app,
        &[("cue.mod/module.cue", APP_MODULE), ("app.cue", APP)],
    );
    cue_cli::run(&lib, &work, &addr, &["mod", "publish", "v0.1.0"]);
    cue_cli::run(&app, &work, &addr, &["mod", "tidy"]);
    let tidied = std::fs::read_to_string(app.join("cue.mod/module.cue")).expect("module.cue");
    assert!(tidied.contains("example.com/labels@v0"), "{tidied}");
    cue_cli::run(&app, &work, &addr, &["mod", "publish", "v0.2.0"]);

    let sources = Sources::new(SourceConfig {
        insecure_registries: vec![addr.clone()],
        cue_registry: CueRegistry::parse(&addr).expect("registry setting"),
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let app_ref = oci_ref(&format!("{addr}/example.com/app"), Some("v0.2.0"), None);
    let fetched = sources
        .fetch(&offline_kube_client(), "team-a", &app_ref)
        .await
        .expect("the module and its dependency");
    assert_eq!(fetched.deps.len(), 1, "{:?}", fetched.deps);
    let dep = &fetched.deps[0];
    assert_eq!(
        (dep.module.as_str(), dep.version.as_str()),
        ("example.com/labels@v0", "v0.1.0")
    );
    assert!(dep.digest.starts_with("sha256:"));
    assert_eq!(dep.files.get("labels.cue").map(String::as_str), Some(LIB));

    let module = ModuleSource {
        digest: fetched.digest.clone(),
        files: fetched.files.clone(),
        package: fetched.package.clone(),
        deps: vec![pequod_cue::Dependency {
            module: dep.module.clone(),
            version: dep.version.clone(),
            files: dep.files.clone(),
        }],
    };
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let input = json!({"metadata": {"name": "cfg", "namespace": "team-a"}});
    let rendered = engine.evaluate(&module, &input).await.expect("rendered");
    assert_eq!(
        rendered.nodes[0].object["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "pequod", "team": "core"})
    );

    // A version's digest is asked once: the next fetch of the same module costs the app's
    // manifest HEAD only, nothing for the dependency.
    let before = registry.requests().len();
    sources
        .fetch(&offline_kube_client(), "team-a", &app_ref)
        .await
        .expect("again");
    let requests: Vec<String> = registry.requests()[before..].to_vec();
    assert!(
        requests.iter().all(|r| r.contains("example.com/app")),
        "{requests:?}"
    );
    std::fs::remove_dir_all(work).expect("remove temp dir");
}

#[tokio::test]
async fn a_missing_or_unroutable_dependency_names_itself() {
    let registry = Registry::start();
    let addr = registry.addr.clone();
    let module_file = "module: \"example.com/app@v0\"\nlanguage: version: \"v0.17.0\"\n\
                       deps: \"example.com/labels@v0\": v: \"v0.9.0\"\n";
    let files = vec![
        ("cue.mod/module.cue".to_owned(), module_file.to_owned()),
        ("app.cue".to_owned(), "package app\n".to_owned()),
    ];
    publish_cue(
        &addr,
        "example.com/app",
        "v1.0.0",
        &files,
        &RegistryAuth::Anonymous,
    )
    .await;
    let app_ref = oci_ref(&format!("{addr}/example.com/app"), Some("v1.0.0"), None);
    let fetch = |cue_registry: &str| {
        let sources = Sources::new(SourceConfig {
            insecure_registries: vec![addr.clone()],
            cue_registry: CueRegistry::parse(cue_registry).expect("registry setting"),
            allow_local_sources: true,
            ..SourceConfig::default()
        });
        let app_ref = app_ref.clone();
        async move {
            sources
                .fetch(&offline_kube_client(), "team-a", &app_ref)
                .await
        }
    };

    let missing = fetch(&addr).await.expect_err("v0.9.0 was never published");
    assert!(
        matches!(missing.cause(), FetchError::ModuleNotFound { .. }),
        "{missing:?}"
    );
    let message = missing.to_string();
    assert!(
        message.contains("dependency example.com/labels@v0 v0.9.0")
            && message.contains("not found"),
        "{message}"
    );
    assert!(!missing.is_transient());

    let disabled = fetch(&format!("{addr},example.com=none"))
        .await
        .expect_err("no registry for example.com");
    assert!(
        matches!(disabled, FetchError::BadModuleFile { .. })
            && disabled
                .to_string()
                .contains("no registry serves dependency example.com/labels@v0"),
        "{disabled}"
    );

    // Nothing listens on port 9 of loopback: a network error, worth retrying.
    let unreachable = fetch("127.0.0.1:9")
        .await
        .expect_err("registry unreachable");
    assert!(unreachable.is_transient(), "{unreachable:?}");
}

/// A registry on the operator's own host is refused, before any connection, for the module
/// and for the registry its dependencies are routed to, unless local sources are allowed.
#[tokio::test]
async fn loopback_registries_are_refused_unless_local_sources_are_allowed() {
    let config = |allow_local_sources| SourceConfig {
        insecure_registries: vec!["127.0.0.1:9".into()],
        cue_registry: CueRegistry::parse("127.0.0.1:9").expect("registry setting"),
        allow_local_sources,
        ..SourceConfig::default()
    };
    let strict = Sources::new(config(false));
    let module = oci_ref("127.0.0.1:9/example.com/app", Some("v1.0.0"), None);
    match strict
        .fetch(&offline_kube_client(), "team-a", &module)
        .await
    {
        Err(e @ FetchError::SourceNotAllowed { .. }) => {
            assert!(!e.is_transient(), "{e}");
            assert!(
                e.to_string()
                    .contains("oci://127.0.0.1:9/example.com/app: source not allowed"),
                "{e}"
            );
        }
        other => panic!("a loopback registry: {other:?}"),
    }
    let files = std::collections::BTreeMap::from([(
        "cue.mod/module.cue".to_owned(),
        format!("{APP_MODULE}deps: \"example.com/labels@v0\": v: \"v0.1.0\"\n"),
    )]);
    let refused = strict
        .fetch_dependencies(&files, "app")
        .await
        .expect_err("a loopback dependency registry");
    assert!(
        matches!(refused.cause(), FetchError::SourceNotAllowed { .. }) && !refused.is_transient(),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("dependency example.com/labels@v0 v0.1.0"),
        "{refused}"
    );

    // Allowed: the registry is asked, and nothing listens on port 9.
    let local = Sources::new(config(true));
    let unreachable = local
        .fetch_dependencies(&files, "app")
        .await
        .expect_err("nothing listens");
    assert!(unreachable.is_transient(), "{unreachable:?}");
}
