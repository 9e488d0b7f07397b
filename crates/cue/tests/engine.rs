//! The engine's contract beyond the platform fixtures: sandbox limits, module dependencies,
//! typed errors for every way a module or input can be wrong, and the memo.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use pequod_cue::{Dependency, Engine, EngineConfig, EvalError, ModuleSource};
use serde_json::json;

fn web_input() -> serde_json::Value {
    json!({
        "metadata": {"name": "web", "namespace": "apps"},
        "image": "docker.io/library/nginx:1.27",
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
    })
}

/// An engine with tight limits, so limit tests finish quickly.
fn limited_engine() -> Engine {
    Engine::new(EngineConfig {
        timeout: Duration::from_secs(2),
        memory_limit: 256 * 1024 * 1024,
        ..EngineConfig::default()
    })
    .expect("engine")
}

async fn next_evaluation_succeeds(engine: &Engine) {
    let rendered = engine
        .evaluate(&common::platform_module("webservice"), &web_input())
        .await
        .expect("the engine still evaluates after a failure");
    assert_eq!(rendered.nodes.len(), 2);
}

#[tokio::test]
async fn a_non_terminating_module_times_out_and_the_engine_recovers() {
    let engine = limited_engine();
    // ~10^8 comprehension steps: minutes of work, little memory.
    let module = common::inline_module(&[(
        "spin.cue",
        r#"package spin
import "list"
input: {}
graph: nodes: [for i in list.Range(0, 10000, 1) for j in list.Range(0, 10000, 1) if i*j < 0 {id: "x"}]
"#,
    )]);
    let started = std::time::Instant::now();
    let err = engine
        .evaluate(&module, &json!({}))
        .await
        .expect_err("must not finish");
    assert_eq!(err, EvalError::Timeout(Duration::from_secs(2)));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "deadline enforced: {:?}",
        started.elapsed()
    );
    assert!(err.is_transient());
    next_evaluation_succeeds(&engine).await;
}

#[tokio::test]
async fn a_memory_bomb_ends_in_out_of_memory_and_the_engine_recovers() {
    let engine = limited_engine();
    // Each level doubles a string: level 28 alone is 2.5 GiB.
    let mut source = String::from("package bomb\ninput: {}\n_s0: \"pequod-bomb\"\n");
    for level in 1..=28 {
        let prev = level - 1;
        let _ = writeln!(source, "_s{level}: _s{prev} + _s{prev}");
    }
    source.push_str(
        "graph: nodes: [{id: \"a\", object: {apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"a\", data: x: _s28}}]\n",
    );
    let module = common::inline_module(&[("bomb.cue", &source)]);
    let err = engine
        .evaluate(&module, &json!({}))
        .await
        .expect_err("must not fit in 256 MiB");
    assert_eq!(err, EvalError::OutOfMemory(256 * 1024 * 1024));
    next_evaluation_succeeds(&engine).await;
    let stats = engine.stats();
    assert!(
        stats.instances_discarded >= 1,
        "the failed instance was discarded: {stats:?}"
    );
}

#[tokio::test]
async fn a_module_with_a_dependency_module_evaluates_when_the_host_supplies_it() {
    let app_module = r#"module: "example.com/app@v0"
language: version: "v0.17.0"
deps: "example.com/lib@v0": v: "v0.1.0"
"#;
    let app = r#"package app
import lib "example.com/lib/labels"
input: {name: string}
graph: nodes: [{id: "config", object: {apiVersion: "v1", kind: "ConfigMap", metadata: {name: input.name, labels: lib.#Standard & {team: "core"}}}}]
"#;
    let lib_module = "module: \"example.com/lib@v0\"\nlanguage: version: \"v0.17.0\"\n";
    let lib =
        "package labels\n#Standard: {\"app.kubernetes.io/managed-by\": \"pequod\", team: string}\n";
    let files: BTreeMap<String, String> = [("cue.mod/module.cue", app_module), ("app.cue", app)]
        .into_iter()
        .map(|(p, c)| (p.to_owned(), c.to_owned()))
        .collect();
    let mut module = ModuleSource::from_files(files, ".");
    let engine = common::engine();

    let missing = engine
        .evaluate(&module, &json!({"name": "cfg"}))
        .await
        .expect_err("dependency not supplied");
    assert!(matches!(missing, EvalError::Load(_)), "{missing:?}");

    module.deps.push(Dependency {
        module: "example.com/lib@v0".into(),
        version: "v0.1.0".into(),
        files: [
            ("cue.mod/module.cue", lib_module),
            ("labels/labels.cue", lib),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_owned(), c.to_owned()))
        .collect(),
    });
    let rendered = engine
        .evaluate(&module, &json!({"name": "cfg"}))
        .await
        .expect("evaluates with the dependency");
    assert_eq!(
        rendered.nodes[0].object["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "pequod", "team": "core"})
    );
}

#[tokio::test]
async fn each_kind_of_bad_module_or_input_has_a_typed_error() {
    let engine = common::engine();
    let cm = r#"{apiVersion: "v1", kind: "ConfigMap", metadata: name: "a"}"#;

    let input_not_object = engine
        .evaluate(&common::platform_module("webservice"), &json!(["web"]))
        .await;
    assert!(
        matches!(input_not_object, Err(EvalError::InvalidInput(_))),
        "{input_not_object:?}"
    );
    let malformed = engine
        .evaluate_json(&common::platform_module("webservice"), b"{\"image\": ")
        .await;
    assert!(
        matches!(malformed, Err(EvalError::InvalidInput(_))),
        "{malformed:?}"
    );

    let no_graph = common::inline_module(&[("m.cue", "package m\ninput: {}\nother: 1\n")]);
    match engine.evaluate(&no_graph, &json!({})).await {
        Err(EvalError::Eval(errors)) => assert_eq!(errors[0].path, "graph"),
        other => panic!("missing graph: {other:?}"),
    }

    let not_concrete = common::inline_module(&[(
        "m.cue",
        "package m\ninput: {}\ngraph: nodes: [{id: \"a\", object: {apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: string}}]\n",
    )]);
    match engine.evaluate(&not_concrete, &json!({})).await {
        Err(EvalError::NotConcrete(errors)) => {
            assert!(
                errors.iter().any(|e| e.path.contains("metadata.name")),
                "{errors:?}"
            );
            assert!(
                errors
                    .iter()
                    .any(|e| e.positions.iter().any(|p| p.file == "m.cue" && p.line == 3)),
                "{errors:?}"
            );
        }
        other => panic!("non-concrete graph: {other:?}"),
    }

    let duplicate = common::inline_module(&[(
        "m.cue",
        &format!(
            "package m\ninput: {{}}\ngraph: nodes: [{{id: \"a\", object: {cm}}}, {{id: \"a\", object: {cm}}}]\n"
        ),
    )]);
    match engine.evaluate(&duplicate, &json!({})).await {
        Err(EvalError::InvalidGraph(message)) => {
            assert!(message.contains("duplicate node id \"a\""), "{message}");
        }
        other => panic!("duplicate ids: {other:?}"),
    }

    let syntax = common::inline_module(&[("m.cue", "package m\ngraph: nodes: [\n")]);
    let err = engine
        .evaluate(&syntax, &json!({}))
        .await
        .expect_err("syntax error");
    assert!(matches!(err, EvalError::Load(_)), "{err:?}");
    assert!(!err.is_transient());

    let conflict = common::inline_module(&[(
        "m.cue",
        "package m\n#Input: {replicas: int}\ninput: #Input\n_r: input.replicas & >5\ngraph: nodes: [{id: \"a\", object: {apiVersion: \"v1\", kind: \"ConfigMap\", metadata: name: \"a\", data: r: \"\\(_r)\"}}]\n",
    )]);
    match engine.evaluate(&conflict, &json!({"replicas": 2})).await {
        Err(EvalError::Eval(errors)) => assert!(
            errors
                .iter()
                .any(|e| e.positions.iter().any(|p| p.line == 4)),
            "{errors:?}"
        ),
        other => panic!("failed constraint: {other:?}"),
    }
}

#[tokio::test]
async fn the_same_module_and_input_never_evaluate_twice() {
    let engine = limited_engine();
    let module = common::platform_module("webservice");
    let first = engine
        .evaluate(&module, &web_input())
        .await
        .expect("renders");
    let again = engine
        .evaluate(&module, &web_input())
        .await
        .expect("renders");
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "answered from the memo"
    );
    let mut other = web_input();
    other["replicas"] = json!(2);
    let changed = engine.evaluate(&module, &other).await.expect("renders");
    assert_eq!(changed.nodes[0].object["spec"]["replicas"], 2);
    let stats = engine.stats();
    assert_eq!((stats.evaluations, stats.memo_hits), (2, 1), "{stats:?}");
    assert_eq!(
        stats.instances_created, 1,
        "the warm instance served both: {stats:?}"
    );

    // A deterministic failure is remembered too; a new module digest is a new evaluation.
    let mut bad = web_input();
    bad["replicas"] = json!("three");
    assert!(matches!(
        engine.evaluate(&module, &bad).await,
        Err(EvalError::Schema(_))
    ));
    assert!(matches!(
        engine.evaluate(&module, &bad).await,
        Err(EvalError::Schema(_))
    ));
    assert_eq!(engine.stats().evaluations, 3);
}

#[tokio::test]
async fn a_seed_directory_serves_the_precompiled_guest_when_the_cache_has_none() {
    // The default cache holds the guest once any engine started with it.
    let seeded = common::engine().preparation().cache_file.clone();
    let seed = seeded
        .as_deref()
        .and_then(std::path::Path::parent)
        .expect("the default engine caches its guest")
        .to_owned();
    let empty = std::env::temp_dir().join(format!("pequod-seedless-{}", std::process::id()));
    let engine = Engine::new(EngineConfig {
        cache_dir: Some(empty.clone()),
        seed_dir: Some(seed.clone()),
        ..EngineConfig::default()
    })
    .expect("engine from the seed");
    let preparation = engine.preparation();
    assert!(!preparation.compiled, "{preparation:?}");
    assert_eq!(
        preparation
            .cache_file
            .as_deref()
            .and_then(std::path::Path::parent),
        Some(seed.as_path()),
        "loaded from the seed, nothing written to the cache"
    );
    assert!(!empty.exists() || std::fs::read_dir(&empty).expect("dir").next().is_none());
    engine
        .evaluate(&common::platform_module("webservice"), &web_input())
        .await
        .expect("renders");
    let _ = std::fs::remove_dir_all(&empty);
}
