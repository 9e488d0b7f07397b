//! Compatibility with the real `cue` CLI: for every shipped module and fixture, `pequod render
//! --graph` prints the same graph nodes as `cue export` of the same module with the same input
//! (unified at `input`).

use std::path::{Path, PathBuf};
use std::process::Command;

use pequod_api::GraphNode;
use serde_json::Value;

const CASES: &[(&str, &str)] = &[
    ("webservice", "basic"),
    ("webservice", "ingress-and-env"),
    ("webservice", "policy-violations"),
    ("database", "postgres"),
    ("database", "mysql-with-storage-class"),
    ("environment", "basic"),
    ("environment", "tls-and-quota"),
];

fn repo_cue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cue")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable").flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

fn nodes(value: &Value, what: &str) -> Vec<GraphNode> {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: graph nodes: {e}"))
}

#[test]
fn pequod_render_and_cue_export_render_the_same_nodes() {
    let cue = pequod_testenv::cue_cli::cue();
    let copy = std::env::temp_dir().join(format!("pequod-cli-cue-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&repo_cue(), &copy);
    for (package, fixture) in CASES {
        let what = format!("{package}/{fixture}");
        let input = repo_cue()
            .join(package)
            .join("fixtures")
            .join(fixture)
            .join("input.yaml");
        let yaml = std::fs::read_to_string(&input).expect("fixture");
        let value: Value = yaml_serde::from_str(&yaml).expect("fixture YAML");
        std::fs::write(copy.join("input.json"), value.to_string()).expect("input.json");

        let exported = Command::new(&cue)
            .current_dir(&copy)
            .args(["export", &format!("./{package}"), "input.json"])
            .args(["-l", "input:", "--out", "json"])
            .output()
            .expect("cue runs");
        assert!(
            exported.status.success(),
            "{what}: cue export: {}",
            String::from_utf8_lossy(&exported.stderr)
        );
        let exported: Value = serde_json::from_slice(&exported.stdout).expect("cue JSON");
        let by_cue = nodes(&exported["graph"]["nodes"], &format!("{what} (cue)"));

        let rendered = Command::new(env!("CARGO_BIN_EXE_pequod"))
            .arg("render")
            .arg(repo_cue().join(package))
            .arg("--input")
            .arg(&input)
            .args(["--graph", "--ignore-violations"])
            .output()
            .expect("pequod runs");
        assert!(
            rendered.status.success(),
            "{what}: pequod render: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let rendered: Value = yaml_serde::from_slice(&rendered.stdout).expect("pequod YAML");
        let by_pequod = nodes(&rendered["nodes"], &format!("{what} (pequod)"));
        assert!(!by_pequod.is_empty(), "{what}: no nodes");
        assert_eq!(by_pequod, by_cue, "{what}: pequod and cue export differ");
    }
    let _ = std::fs::remove_dir_all(&copy);
}
