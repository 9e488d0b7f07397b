//! The `pequod` binary on the repository's own modules (`cue/`): render, vet and graph, with
//! the fixtures' inputs. No cluster needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo_cue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cue")
}

fn fixture(package: &str, case: &str) -> PathBuf {
    repo_cue()
        .join(package)
        .join("fixtures")
        .join(case)
        .join("input.yaml")
}

fn pequod(args: &[&str]) -> Output {
    warm_up();
    run(args)
}

/// The first run on a machine compiles the CUE guest (tens of seconds) and caches it: one
/// test does that while the others wait, rather than all compiling at once.
fn warm_up() {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        let _ = run(&["vet", &package_dir("webservice")]);
    });
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pequod"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("pequod runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn package_dir(package: &str) -> String {
    repo_cue().join(package).display().to_string()
}

fn fixture_arg(package: &str, case: &str) -> String {
    fixture(package, case).display().to_string()
}

#[test]
fn render_prints_the_objects_as_yaml_documents() {
    let out = pequod(&[
        "render",
        &package_dir("webservice"),
        "--input",
        &fixture_arg("webservice", "basic"),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kinds: Vec<String> = stdout
        .split("\n---\n")
        .map(|doc| doc.trim_start_matches("---\n"))
        .map(|doc| {
            let value: serde_json::Value = yaml_serde::from_str(doc).expect("a YAML document");
            assert_eq!(value["metadata"]["namespace"], "apps");
            value["kind"].as_str().expect("a kind").to_owned()
        })
        .collect();
    assert_eq!(kinds, ["Deployment", "Service"]);
    assert!(
        text(&out.stderr).contains("url: http://web.apps.svc"),
        "outputs on stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn render_flags_set_the_metadata_and_graph_prints_nodes() {
    let out = pequod(&[
        "render",
        &package_dir("webservice"),
        "-i",
        &fixture_arg("webservice", "basic"),
        "--name",
        "shop",
        "--namespace",
        "retail",
        "--graph",
        "--timings",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timings: engine start "),
        "{}",
        text(&out.stderr)
    );
    let graph: serde_json::Value = yaml_serde::from_slice(&out.stdout).expect("YAML");
    let nodes = graph["nodes"].as_array().expect("nodes");
    assert_eq!(nodes[0]["id"], "deployment");
    assert_eq!(nodes[0]["object"]["metadata"]["name"], "shop");
    assert_eq!(nodes[0]["object"]["metadata"]["namespace"], "retail");
    assert_eq!(nodes[0]["readyWhen"][0]["type"], "DeploymentAvailable");
    assert_eq!(nodes[1]["dependsOn"][0], "deployment");
}

#[test]
fn render_reads_json_from_stdin_when_the_input_is_a_dash() {
    warm_up();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pequod"))
        .args(["render", &package_dir("webservice"), "-i", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pequod runs");
    let input = br#"{"metadata": {"name": "api", "namespace": "x"}, "image": "docker.io/library/nginx:1.27", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}"#;
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input).expect("write");
    let out = child.wait_with_output().expect("pequod ends");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("name: api"));
}

#[test]
fn a_schema_error_exits_1_with_the_cue_position() {
    let out = pequod(&[
        "render",
        &package_dir("webservice"),
        "--input",
        &fixture_arg("webservice", "port-out-of-range"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing rendered");
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("out of bound"))
        .unwrap_or_else(|| panic!("an out-of-bound error: {stderr}"));
    // file:line:col: path: message, the file as the user can open it.
    let (file, rest) = line.split_once(".cue:").expect("a .cue position");
    assert!(
        Path::new(&format!("{file}.cue")).is_file(),
        "{file}.cue exists"
    );
    let mut parts = rest.splitn(3, ':');
    let line_no: u32 = parts.next().and_then(|l| l.parse().ok()).expect("a line");
    let column: u32 = parts.next().and_then(|c| c.parse().ok()).expect("a column");
    assert!(line_no > 0 && column > 0);
    assert!(
        parts.next().is_some_and(|m| m.starts_with(" input.port: ")),
        "{line}"
    );
}

#[test]
fn error_violations_block_the_render_unless_ignored() {
    let dir = package_dir("webservice");
    let input = fixture_arg("webservice", "policy-violations");
    let out = pequod(&["render", &dir, "--input", &input]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("policy error: input.image: "), "{stderr}");
    assert!(
        stderr.contains("policy warning: input.replicas: "),
        "{stderr}"
    );

    let out = pequod(&["render", &dir, "--input", &input, "--ignore-violations"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kind: Deployment"));
}

#[test]
fn vet_says_ok_or_names_the_problems() {
    let out = pequod(&[
        "vet",
        &package_dir("environment"),
        "--input",
        &fixture_arg("environment", "tls-and-quota"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok"), "{}", text(&out.stdout));

    let out = pequod(&[
        "vet",
        &package_dir("environment"),
        "--input",
        &fixture_arg("environment", "missing-host"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("environment.cue:") && stderr.contains("input.host"),
        "{stderr}"
    );
}

/// A scratch module whose graph has a cycle: CUE accepts it, the DAG check does not.
#[test]
fn vet_and_graph_refuse_a_cycle() {
    let dir = std::env::temp_dir().join(format!("pequod-cli-cycle-{}", std::process::id()));
    let package = dir.join("app");
    std::fs::create_dir_all(dir.join("cue.mod")).expect("mkdir");
    std::fs::create_dir_all(&package).expect("mkdir");
    std::fs::write(
        dir.join("cue.mod/module.cue"),
        "module: \"example.com/cycle@v0\"\nlanguage: version: \"v0.17.0\"\n",
    )
    .expect("write");
    std::fs::write(
        package.join("app.cue"),
        r#"package app

input: {metadata: {name: string, namespace: string}}
_cm: {
	apiVersion: "v1"
	kind:       "ConfigMap"
}
graph: nodes: [
	{id: "a", object: _cm & {metadata: name: "a"}, dependsOn: ["b"]},
	{id: "b", object: _cm & {metadata: name: "b"}, dependsOn: ["a"]},
]
"#,
    )
    .expect("write");
    let package = package.display().to_string();
    for command in ["vet", "graph"] {
        let out = pequod(&[command, &package, "--name", "x", "--namespace", "y"]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("dependency cycle"), "{command}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graph_draws_explicit_and_implicit_edges() {
    let dir = package_dir("environment");
    let input = fixture_arg("environment", "tls-and-quota");
    let out = pequod(&["graph", &dir, "--input", &input]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph "), "{dot}");
    assert!(dot.contains("\"deployment\" -> \"service\";"), "{dot}");
    assert!(
        dot.contains("\"namespace\" -> \"service\" [style=dashed, label=\"namespace\"];"),
        "{dot}"
    );
    assert!(dot.contains("ready: DeploymentAvailable"), "{dot}");

    let out = pequod(&["graph", &dir, "--input", &input, "--format", "mermaid"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mermaid = text(&out.stdout);
    assert!(mermaid.starts_with("flowchart TD\n"), "{mermaid}");
    assert!(mermaid.contains(" -. namespace .-> "), "{mermaid}");
    assert!(mermaid.contains(" --> "), "{mermaid}");
}

#[test]
fn bad_paths_and_inputs_are_clear_errors() {
    let out = pequod(&["render", "/nonexistent/module"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/module"));

    let out = pequod(&[
        "render",
        &package_dir("webservice"),
        "--input",
        "/nonexistent/input.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/input.yaml"));

    let out = pequod(&["render", &package_dir("webservice"), "--format", "x"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
