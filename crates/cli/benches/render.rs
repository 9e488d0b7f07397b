//! `cargo bench -p pequod-cli`: wall time of one `pequod render` process per evaluation (engine
//! start from the cached precompiled guest, module read, evaluation, YAML out) next to one
//! `cue export` process for the same module and input, when the `cue` CLI is installed (PATH,
//! `~/go/bin`, or the tools cache of `cargo xtask bench-cue`). Iterations:
//! `PEQUOD_BENCH_ITERATIONS` (default 20), after two untimed runs of each.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (package, fixture) pairs of the repository's `cue/`.
const CASES: &[(&str, &str)] = &[
    ("webservice", "ingress-and-env"),
    ("database", "postgres"),
    ("environment", "tls-and-quota"),
];

fn repo_cue() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cue")
}

/// The `cue` CLI, if installed somewhere we know.
fn cue_cli() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("cue")).collect())
        .unwrap_or_default();
    if let Some(home) = home {
        candidates.push(home.join("go/bin/cue"));
        candidates.push(home.join(".cache/pequod/tools/bin/cue"));
    }
    candidates.into_iter().find(|c| c.is_file())
}

/// Runs `command` once, failing the bench when it fails.
fn run_once(command: &mut Command, what: &str) -> Duration {
    let started = Instant::now();
    let out = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Median and 90th percentile of `iterations` runs after two warm-up runs.
fn time(
    mut command: impl FnMut() -> Command,
    iterations: usize,
    what: &str,
) -> (Duration, Duration) {
    for _ in 0..2 {
        run_once(&mut command(), what);
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| run_once(&mut command(), what))
        .collect();
    samples.sort();
    let at = |p: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short list"
        )]
        let index = ((samples.len() - 1) as f64 * p).round() as usize;
        samples[index]
    };
    (at(0.5), at(0.9))
}

/// A copy of the module with the fixture's input as `input.json` at its root, for `cue export`.
fn cue_copy(package: &str, fixture: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("pequod-cli-bench-{}-{package}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&repo_cue(), &dir);
    let yaml = std::fs::read_to_string(
        repo_cue()
            .join(package)
            .join("fixtures")
            .join(fixture)
            .join("input.yaml"),
    )
    .expect("fixture");
    let input: serde_json::Value = yaml_serde::from_str(&yaml).expect("fixture YAML");
    std::fs::write(dir.join("input.json"), input.to_string()).expect("write input.json");
    dir
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

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let iterations: usize = std::env::var("PEQUOD_BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
        .max(1);
    let cue = cue_cli();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{iterations} runs each; median / p90 wall time of one process per render"
    );
    let _ = writeln!(
        out,
        "{:<34} {:>20} {:>20} {:>8}",
        "module (fixture)", "pequod render", "cue export", "ratio"
    );
    for (package, fixture) in CASES {
        let dir = repo_cue().join(package);
        let input = dir.join("fixtures").join(fixture).join("input.yaml");
        let (p50, p90) = time(
            || {
                let mut c = Command::new(env!("CARGO_BIN_EXE_pequod"));
                c.arg("render").arg(&dir).arg("--input").arg(&input);
                c
            },
            iterations,
            "pequod render",
        );
        let (cue_text, ratio) = match &cue {
            Some(cue) => {
                let copy = cue_copy(package, fixture);
                let (c50, c90) = time(
                    || {
                        let mut c = Command::new(cue);
                        c.current_dir(&copy)
                            .args(["export", &format!("./{package}"), "input.json"])
                            .args(["-l", "input:", "--out", "json"]);
                        c
                    },
                    iterations,
                    "cue export",
                );
                let _ = std::fs::remove_dir_all(&copy);
                (
                    format!("{} / {}", ms(c50), ms(c90)),
                    format!("{:.2}x", p50.as_secs_f64() / c50.as_secs_f64()),
                )
            }
            None => ("(cue not installed)".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            out,
            "{:<34} {:>20} {:>20} {:>8}",
            format!("{package} ({fixture})"),
            format!("{} / {}", ms(p50), ms(p90)),
            cue_text,
            ratio
        );
    }
}
