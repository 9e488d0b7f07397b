//! The docs run as written: every `sh` block of `docs/tutorial.md` runs, in order, in one bash
//! session against the full local control plane with the operator binary this build made; and
//! every sample the docs mention exists and is accepted by the API server.
//!
//! Blocks fenced ```` ```sh setup ```` or ```` ```sh teardown ```` are the reader's own
//! environment steps (start or stop the control plane, build the operator): the harness
//! provides the same environment, so they are skipped. Any other shell-like fence (`bash`,
//! `shell`, `sh <word>`) fails the test, so that no command block silently escapes it.

mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

/// The whole tutorial may take this long (it waits for rollouts and a Namespace deletion).
const TUTORIAL_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// A fenced code block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// The info string after the opening fence (`sh`, `sh setup`, `text`).
    info: String,
    /// Line of the opening fence (1-based).
    line: usize,
    /// The block's text.
    body: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The fenced code blocks of `markdown`, in order.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block {
                        info: info.trim().to_owned(),
                        line: i + 1,
                        body: String::new(),
                    });
                }
            }
            Some(mut block) => {
                if trimmed.starts_with("```") {
                    out.push(block);
                } else {
                    block.body.push_str(line);
                    block.body.push('\n');
                    open = Some(block);
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed code fence");
    out
}

/// What the test does with a block: run it, skip it (reader only), or leave it (not shell).
#[derive(Debug, PartialEq, Eq)]
enum Role {
    Run,
    ReaderOnly,
    NotShell,
}

fn role(info: &str) -> Result<Role, String> {
    let mut words = info.split_whitespace();
    let language = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    match (language, rest.as_slice()) {
        ("sh", []) => Ok(Role::Run),
        ("sh", ["setup" | "teardown"]) => Ok(Role::ReaderOnly),
        ("sh" | "bash" | "shell" | "console" | "zsh", _) => Err(format!(
            "fence `{info}`: use ```sh (runs in CI) or ```sh setup / ```sh teardown (reader only)"
        )),
        _ => Ok(Role::NotShell),
    }
}

/// The tutorial as one bash script: the `sh` blocks in order, each announced on stderr with
/// its line, so a failure points at the block.
fn tutorial_script(markdown: &str) -> (String, usize) {
    let mut script = String::from(
        "set -euo pipefail\n\
         # Whatever happens, the operator started in the background does not outlive the run.\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    let mut count = 0;
    for block in blocks(markdown) {
        let role =
            role(&block.info).unwrap_or_else(|e| panic!("docs/tutorial.md:{}: {e}", block.line));
        if role != Role::Run {
            continue;
        }
        count += 1;
        let _ = writeln!(
            script,
            "echo '>>> docs/tutorial.md:{} (block {count})' >&2",
            block.line
        );
        script.push_str(&block.body);
    }
    (script, count)
}

#[test]
fn fences_are_classified_and_the_tutorial_has_blocks_to_run() {
    let markdown = std::fs::read_to_string(repo_root().join("docs/tutorial.md")).expect("read");
    let (script, count) = tutorial_script(&markdown);
    assert!(count >= 10, "only {count} runnable blocks");
    assert!(script.contains("kubectl apply -n \"$NS\" -f config/samples/"));
    assert!(
        !script.contains("cargo xtask testenv"),
        "reader-only steps are skipped"
    );
    assert_eq!(role("sh"), Ok(Role::Run));
    assert_eq!(role("sh setup"), Ok(Role::ReaderOnly));
    assert_eq!(role("sh teardown"), Ok(Role::ReaderOnly));
    assert_eq!(role("text"), Ok(Role::NotShell));
    assert!(role("bash").is_err(), "would escape the test");
    assert!(role("sh later").is_err());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test]
async fn the_tutorial_runs_as_written_against_the_local_control_plane() {
    let root = repo_root();
    let markdown = std::fs::read_to_string(root.join("docs/tutorial.md")).expect("read");
    let (script, count) = tutorial_script(&markdown);
    let env = support::env();
    let kubectl = env.kubectl().expect("the full profile has kubectl");
    let kubectl_dir = kubectl.parent().expect("kubectl's directory");
    let path = format!(
        "{}:{}",
        kubectl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The samples test installs the CRDs too, in parallel; installing them first (server-side,
    // idempotent) keeps the tutorial's `kubectl apply` from racing it into AlreadyExists.
    pequod_testenv::install_crds(&env.client(), &pequod_api::crd::all())
        .await
        .expect("CRDs");
    let namespace = pequod_testenv::unique_name("tutorial");
    let log = env.dir().join(format!("operator-{namespace}.log"));
    let started = Instant::now();
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&root)
        .env("KUBECONFIG", env.kubeconfig())
        .env("PATH", path)
        .env("NS", &namespace)
        .env("OPERATOR", env!("CARGO_BIN_EXE_pequod-operator"))
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("OPERATOR_LOG", &log)
        .env("NO_COLOR", "1")
        // Its own process group: whatever the script leaves behind is killed with it.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bash");
    let group = child.id().expect("pid");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let output = async {
        let (mut out, mut err) = (String::new(), String::new());
        let (read_out, read_err) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        read_out.expect("stdout");
        read_err.expect("stderr");
        let status = child.wait().await.expect("wait");
        (status, out, err)
    };
    let result = tokio::time::timeout(TUTORIAL_TIMEOUT, output).await;
    // The operator and anything else the script started in the background.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let elapsed = started.elapsed();
    let operator_log = std::fs::read_to_string(&log).unwrap_or_default();
    let Ok((status, out, err)) = result else {
        panic!(
            "the tutorial did not finish within {TUTORIAL_TIMEOUT:?}\noperator log:\n{}",
            tail(&operator_log, 40)
        );
    };
    assert!(
        status.success(),
        "the tutorial failed ({status}) after {elapsed:.1?}\n--- stdout:\n{}\n--- stderr:\n{}\n--- operator log:\n{}",
        tail(&out, 60),
        tail(&err, 60),
        tail(&operator_log, 40)
    );
    eprintln!("the tutorial's {count} blocks ran in {elapsed:.1?}\n--- output:\n{out}");
}

/// `config/samples/*.yaml` paths in `text`.
fn sample_paths(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "config/samples/";
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let tail = &rest[at + PREFIX.len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if let Some(stem) = name.strip_suffix(".yaml")
            && !stem.is_empty()
        {
            out.insert(format!("{PREFIX}{name}"));
        }
        rest = &tail[end..];
    }
    out
}

/// The Markdown files whose sample references are checked: README.md and docs/**/*.md.
fn doc_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("docs").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut out = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn every_sample_the_docs_mention_exists_and_applies_with_a_server_side_dry_run() {
    let root = repo_root();
    let mut mentioned = BTreeSet::new();
    for file in doc_files(&root) {
        let text = std::fs::read_to_string(&file).expect("read doc");
        for sample in sample_paths(&text) {
            assert!(
                root.join(&sample).is_file(),
                "{} mentions {sample}, which does not exist",
                file.display()
            );
            mentioned.insert(sample);
        }
    }
    let shipped: BTreeSet<String> = std::fs::read_dir(root.join("config/samples"))
        .expect("config/samples")
        .flatten()
        .map(|e| e.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|path| Some(format!("config/samples/{}", path.file_name()?.to_str()?)))
        .collect();
    let undocumented: Vec<&String> = shipped.difference(&mentioned).collect();
    assert!(
        undocumented.is_empty(),
        "samples no doc mentions: {undocumented:?}"
    );

    let (_client, namespace) = support::namespace("docs-samples").await;
    let env = support::env();
    let kubectl = env.kubectl().expect("the full profile has kubectl");
    for sample in &mentioned {
        let output = tokio::process::Command::new(kubectl)
            .current_dir(&root)
            .env("KUBECONFIG", env.kubeconfig())
            .args(["apply", "--dry-run=server", "-n", &namespace, "-f", sample])
            .output()
            .await
            .expect("kubectl");
        assert!(
            output.status.success(),
            "{sample} does not apply: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            said.contains("(server dry run)"),
            "{sample}: unexpected answer {said}"
        );
    }
}

#[test]
fn sample_paths_are_found_in_prose_links_and_commands() {
    let text = "see [x](../config/samples/a-b.yaml), `kubectl apply -f config/samples/c_d.yaml`\n\
                and config/samples/ as a whole, config/samples/e.yml is not yaml";
    let found: Vec<String> = sample_paths(text).into_iter().collect();
    assert_eq!(
        found,
        ["config/samples/a-b.yaml", "config/samples/c_d.yaml"]
    );
}

/// GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && let Some(heading) = line.strip_prefix('#') {
            out.insert(anchor(heading.trim_start_matches('#')));
        }
    }
    out
}

/// Relative link targets `](target)` of a Markdown file (outside code blocks).
fn relative_links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Inline code is not a link: keep only what lies outside backticks.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            let target = &tail[..end];
            if !target.contains("://") && !target.starts_with("mailto:") {
                out.push(target.to_owned());
            }
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = repo_root();
    let mut broken = Vec::new();
    for file in doc_files(&root) {
        let text = std::fs::read_to_string(&file).expect("read doc");
        let dir = file.parent().expect("a directory");
        for link in relative_links(&text) {
            let (path, fragment) = link.split_once('#').unwrap_or((link.as_str(), ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", file.display()));
                continue;
            }
            let is_markdown = target.extension().is_some_and(|e| e == "md");
            if !fragment.is_empty() && is_markdown {
                let headings = anchors(&std::fs::read_to_string(&target).expect("read target"));
                if !headings.contains(fragment) {
                    broken.push(format!("{}: {link} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor(" `cueRef`: which module"), "cueref-which-module");
    assert_eq!(
        anchor(" Testing modules with the `pequod` CLI"),
        "testing-modules-with-the-pequod-cli"
    );
    assert_eq!(anchor(" Logs and health"), "logs-and-health");
    assert_eq!(
        relative_links("see [a](b.md#c), [w](https://x.example) and `[x](y)`"),
        ["b.md#c"]
    );
}

/// The operations guide's configuration table lists every flag the operator has.
#[test]
fn every_operator_flag_is_in_the_operations_guide() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_pequod-operator"))
        .arg("--help")
        .output()
        .expect("pequod-operator --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let guide =
        std::fs::read_to_string(repo_root().join("docs/operations.md")).expect("operations.md");
    let flags: BTreeSet<&str> = help
        .split_whitespace()
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| word.split(['=', ' ', ',', '<']).next().unwrap_or(word))
        .filter(|flag| !matches!(*flag, "--help" | "--version"))
        .collect();
    assert!(flags.len() > 20, "{flags:?}");
    let missing: Vec<&&str> = flags
        .iter()
        .filter(|flag| !guide.contains(&format!("`{flag}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
}
