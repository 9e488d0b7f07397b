//! Every fixture of the platform modules (`cue/<package>/fixtures/<case>/input.yaml`) renders
//! to its snapshot (`snapshot.json` beside it): the full graph, outputs and violations for a
//! render; the error kind with CUE paths and positions (never CUE's wording) for a failure.
//!
//! After a deliberate change, regenerate with
//! `PEQUOD_UPDATE_SNAPSHOTS=1 cargo test -p pequod-cue --test fixtures` and review the diff.

mod common;

use std::path::{Path, PathBuf};

use pequod_cue::{EvalError, Rendered};
use serde_json::{Value, json};

fn fixtures() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let root = common::platform_dir();
    for package in std::fs::read_dir(&root).expect("cue/ exists").flatten() {
        let dir = package.path().join("fixtures");
        let Ok(cases) = std::fs::read_dir(&dir) else {
            continue;
        };
        for case in cases.flatten() {
            let name = package.file_name().to_string_lossy().into_owned();
            out.push((name, case.path()));
        }
    }
    out.sort();
    out
}

fn snapshot_of(result: &Result<std::sync::Arc<Rendered>, EvalError>) -> Value {
    match result {
        Ok(rendered) => json!({
            "result": "Rendered",
            "nodes": serde_json::to_value(&rendered.nodes).expect("nodes serialize"),
            "outputs": rendered.outputs,
            "violations": rendered.violations.iter().map(|v| json!({
                "path": v.path, "severity": v.severity, "message": v.message,
            })).collect::<Vec<_>>(),
        }),
        Err(error) => {
            let kind = format!("{error:?}");
            let kind = kind
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or_default()
                .to_owned();
            json!({
                "result": kind,
                "errors": error.cue_errors().iter().map(|e| json!({
                    "path": e.path,
                    "positions": e.positions.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        }
    }
}

fn read_input(case: &Path) -> Value {
    let text = std::fs::read_to_string(case.join("input.yaml")).expect("input.yaml");
    yaml_serde::from_str(&text).expect("input.yaml is YAML")
}

#[tokio::test]
async fn platform_fixtures_match_their_snapshots() {
    let update = std::env::var_os("PEQUOD_UPDATE_SNAPSHOTS").is_some();
    let engine = common::engine();
    let cases = fixtures();
    assert!(cases.len() >= 10, "fixtures found: {}", cases.len());
    let mut failures = Vec::new();
    for (package, case) in &cases {
        let module = common::platform_module(package);
        let result = engine.evaluate(&module, &read_input(case)).await;
        let actual = snapshot_of(&result);
        let path = case.join("snapshot.json");
        let text = serde_json::to_string_pretty(&actual).expect("JSON") + "\n";
        if update {
            std::fs::write(&path, text).expect("write snapshot");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected)
                if serde_json::from_str::<Value>(&expected).ok() == Some(actual.clone()) => {}
            Ok(_) => failures.push(format!(
                "{}: differs from snapshot.json; got:\n{text}",
                case.display()
            )),
            Err(_) => failures.push(format!(
                "{}: no snapshot.json (set PEQUOD_UPDATE_SNAPSHOTS=1)",
                case.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_fixture_kind_is_covered() {
    // Passing and failing cases exist for each module, so a module that stops rendering (or
    // stops rejecting) shows up as a snapshot change rather than silently.
    for package in ["webservice", "database", "environment"] {
        let dir = common::platform_dir().join(package).join("fixtures");
        let kinds: Vec<String> = std::fs::read_dir(&dir)
            .expect("fixtures dir")
            .flatten()
            .filter_map(|case| std::fs::read_to_string(case.path().join("snapshot.json")).ok())
            .filter_map(|text| serde_json::from_str::<Value>(&text).ok())
            .map(|snapshot| snapshot["result"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            kinds.iter().any(|k| k == "Rendered"),
            "{package}: no passing fixture"
        );
        assert!(
            kinds.iter().any(|k| k == "Schema"),
            "{package}: no schema-failure fixture"
        );
    }
}
