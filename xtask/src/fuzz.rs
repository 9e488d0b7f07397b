//! `cargo xtask fuzz`: the proptest fuzz targets with many cases.
//!
//! Every property is a test named `fuzz_*` that runs `PEQUOD_FUZZ_CASES` cases (2000 when
//! unset, which is what `cargo xtask test` runs) and prints `fuzz <name>: <n> cases in <time>`.
//! This runs each target's test binary with `PEQUOD_FUZZ_CASES=N`, release build by default
//! (a case costs 20 to 50 times less than in the dev profile; the first release build takes
//! ten minutes or more on 2 cores), and prints the cases and the time per target.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Options of `cargo xtask fuzz`.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Cases per property.
    #[arg(long, default_value_t = 1_000_000)]
    cases: u64,
    /// Build with the dev profile instead of release: no release build to wait for, but each
    /// case is much slower.
    #[arg(long)]
    dev: bool,
    /// Only these targets (repeatable): spec, graph, cue-graph, source. Default: all.
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<String>,
}

/// One fuzz target: the test binary holding its properties.
struct Target {
    name: &'static str,
    what: &'static str,
    package: &'static str,
    /// `cargo test` arguments selecting the binary.
    binary: &'static [&'static str],
}

const TARGETS: [Target; 4] = [
    Target {
        name: "spec",
        what: "spec decoding (Transform JSON, durations, free-form input, redaction)",
        package: "pequod-api",
        binary: &["--test", "fuzz"],
    },
    Target {
        name: "graph",
        what: "graph parsing (objects as sent, ignoreFields, boundary, DAG)",
        package: "pequod-graph",
        binary: &["--test", "fuzz"],
    },
    Target {
        name: "cue-graph",
        what: "graph parsing (the CUE guest's answer into typed nodes)",
        package: "pequod-cue",
        binary: &["--test", "fuzz"],
    },
    Target {
        name: "source",
        what: "source refs (Git URLs, OCI references, paths, versions, module files)",
        package: "pequod-source",
        binary: &["--lib"],
    },
];

/// What one target ran.
struct Outcome {
    name: &'static str,
    properties: usize,
    cases: u64,
    fewest: u64,
    took: Duration,
}

pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    for wanted in &options.targets {
        if !TARGETS.iter().any(|t| t.name == wanted) {
            let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            bail!(
                "no fuzz target {wanted:?}; the targets are {}",
                names.join(", ")
            );
        }
    }
    let selected: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| options.targets.is_empty() || options.targets.iter().any(|w| w == t.name))
        .collect();
    let profile: &[&str] = if options.dev { &[] } else { &["--release"] };
    let mut outcomes = Vec::new();
    for target in &selected {
        let mut args = vec!["test"];
        args.extend_from_slice(profile);
        args.extend(["-p", target.package]);
        args.extend_from_slice(target.binary);
        let build = Instant::now();
        let mut build_args = args.clone();
        build_args.push("--no-run");
        eprintln!("\n==> cargo {}", build_args.join(" "));
        let status = crate::nested_cargo()
            .current_dir(root)
            .args(&build_args)
            .status()
            .with_context(|| format!("running cargo {}", build_args.join(" ")))?;
        if !status.success() {
            bail!("building the {} fuzz target failed ({status})", target.name);
        }
        eprintln!("<== built in {:.1?}", build.elapsed());
        args.extend(["fuzz", "--", "--nocapture"]);
        eprintln!(
            "==> {}: {} cases per property\n    PEQUOD_FUZZ_CASES={} cargo {}",
            target.what,
            options.cases,
            options.cases,
            args.join(" ")
        );
        outcomes.push(run_target(root, target, &args, options.cases)?);
    }
    println!(
        "\nfuzz: {} cases per property, {} profile",
        options.cases,
        if options.dev { "dev" } else { "release" }
    );
    println!(
        "{:<10} {:>10} {:>14} {:>10}",
        "target", "properties", "cases", "time"
    );
    for outcome in &outcomes {
        println!(
            "{:<10} {:>10} {:>14} {:>9.1}s",
            outcome.name,
            outcome.properties,
            outcome.cases,
            outcome.took.as_secs_f64()
        );
    }
    if let Some(short) = outcomes.iter().find(|o| o.fewest < options.cases) {
        bail!(
            "a property of {} ran {} cases, fewer than {}",
            short.name,
            short.fewest,
            options.cases
        );
    }
    Ok(())
}

/// Runs one target's properties, echoing their output, and counts the cases they report.
fn run_target(root: &Path, target: &Target, args: &[&str], cases: u64) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut child = crate::nested_cargo()
        .current_dir(root)
        .args(args)
        .env("PEQUOD_FUZZ_CASES", cases.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let mut counts = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading the tests' output")?;
            eprintln!("{line}");
            // `fuzz <name>: <n> cases in <time>`
            if let Some(rest) = line.strip_prefix("fuzz ")
                && let Some((_, after)) = rest.split_once(": ")
                && let Some((n, _)) = after.split_once(" cases in ")
                && let Ok(n) = n.parse::<u64>()
            {
                counts.push(n);
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    let took = started.elapsed();
    if !status.success() {
        bail!(
            "the {} fuzz target failed ({status}); the failing input is shown above",
            target.name
        );
    }
    if counts.is_empty() {
        bail!("the {} fuzz target reported no property", target.name);
    }
    Ok(Outcome {
        name: target.name,
        properties: counts.len(),
        cases: counts.iter().sum(),
        fewest: counts.iter().copied().min().unwrap_or(0),
        took,
    })
}
