//! The CUE engine's figures: start-up with and without the precompiled-guest cache, render
//! latency as the operator sees it (one engine, warm instances, a new input every time so the
//! memo does not answer), memo-hit latency and peak guest memory, for `cue/webservice` and a
//! generated 50-node module.
//!
//! ```text
//! cargo bench -p pequod-cue --bench render -- [--iterations N] [--warmup N] [--out DIR]
//! ```
//!
//! Without `--bench` (which `cargo bench` passes; `cargo test --benches` does not) it is a smoke
//! test: one iteration, no warm-up, its files removed afterwards. Progress goes to stderr; stdout gets one JSON line of results. `DIR` receives, per module,
//! `<name>.request.json` (exactly the request the engine sends the guest, without `cacheKey`)
//! and `<name>.engine-nodes.json` (the nodes the engine rendered for that request's input), so
//! `cargo xtask bench-cue` can time the same request natively and with the `cue` CLI and check
//! they render the same graph. Medians and p90s are nearest-rank percentiles.

// A benchmark program: its one line of results on stdout is its interface.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pequod_cue::{Engine, EngineConfig, ModuleSource};
use serde::Serialize;
use serde_json::{Value, json};

/// Number of ConfigMap + Deployment pairs of the generated module (50 nodes).
const GENERATED_PAIRS: usize = 25;

struct Args {
    iterations: usize,
    warmup: usize,
    out: PathBuf,
    /// Remove `out` at the end (a smoke test into a temporary directory).
    remove_out: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mut args = Args {
        iterations: if smoke { 1 } else { 30 },
        warmup: if smoke { 0 } else { 5 },
        out: std::env::temp_dir().join(format!("pequod-bench-cue-{}", std::process::id())),
        remove_out: smoke,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            "--iterations" => {
                args.iterations = value("--iterations")?.parse().context("--iterations")?;
            }
            "--warmup" => args.warmup = value("--warmup")?.parse().context("--warmup")?,
            "--out" => {
                args.out = PathBuf::from(value("--out")?);
                args.remove_out = false;
            }
            other => bail!(
                "unknown argument {other:?} (usage: render [--iterations N] [--warmup N] [--out DIR])"
            ),
        }
    }
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    Ok(args)
}

/// Wall-clock times of one measurement, in nanoseconds.
#[derive(Serialize, Clone, Copy, Debug)]
struct Timings {
    iterations: usize,
    median_ns: u64,
    p90_ns: u64,
    min_ns: u64,
    max_ns: u64,
    mean_ns: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted samples (the same definition as `cli_native.go`).
fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

impl Timings {
    fn of(samples: &[Duration]) -> Self {
        let mut ns: Vec<u64> = samples.iter().copied().map(nanos).collect();
        ns.sort_unstable();
        let sum: u128 = ns.iter().map(|&n| u128::from(n)).sum();
        let count = ns.len().max(1);
        Self {
            iterations: ns.len(),
            median_ns: percentile(&ns, 50),
            p90_ns: percentile(&ns, 90),
            min_ns: ns.first().copied().unwrap_or_default(),
            max_ns: ns.last().copied().unwrap_or_default(),
            mean_ns: u64::try_from(sum / count as u128).unwrap_or(u64::MAX),
        }
    }
}

#[derive(Serialize)]
struct EngineStart {
    /// `Engine::new` on an empty cache directory: compiles the guest and writes the cache.
    no_cache_ns: u64,
    no_cache_compiled: bool,
    /// `Engine::new` again on the same directory: loads the precompiled guest.
    cached_ns: u64,
    cached_compiled: bool,
}

#[derive(Serialize)]
struct ModuleResult {
    name: String,
    package: String,
    nodes: usize,
    module_files: usize,
    module_bytes: usize,
    /// The first render of this module by the engine: the module is not built in the warm
    /// instance yet (and for the first module measured, no instance exists yet).
    first_render_ns: u64,
    /// Warm instances, a new input every iteration: the memo misses, the guest fills and
    /// exports the module it already built.
    memo_miss: Timings,
    /// The same input again: answered from the memo.
    memo_hit: Timings,
    request: PathBuf,
    engine_nodes: PathBuf,
}

#[derive(Serialize)]
struct Stats {
    evaluations: u64,
    memo_hits: u64,
    instances_created: u64,
    instances_discarded: u64,
}

#[derive(Serialize)]
struct Results {
    iterations: usize,
    warmup: usize,
    engine_start: EngineStart,
    modules: Vec<ModuleResult>,
    /// Largest guest linear memory seen after an evaluation, over all runs.
    peak_memory_bytes: u64,
    stats: Stats,
}

/// A module to measure and the input of its `i`-th render (every `i` a different input).
struct Case {
    name: &'static str,
    module: ModuleSource,
    input: fn(usize) -> Value,
}

fn webservice_input(i: usize) -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "apps"},
        "image": "docker.io/library/nginx:1.27",
        "replicas": 3,
        "env": {"LOG_LEVEL": "info", "ITERATION": i.to_string()},
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        "ingress": {"enabled": true, "host": "web.example.com"},
    })
}

fn generated_input(i: usize) -> Value {
    json!({
        "metadata": {"name": "gen", "namespace": "apps"},
        "size": 3,
        "env": {"LOG_LEVEL": "info", "ITERATION": i.to_string()},
    })
}

/// Every `.cue` file under `dir`, by slash-separated path relative to it.
fn cue_files(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::path);
        for entry in entries {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(root, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "cue") {
                let rel = path.strip_prefix(root)?;
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                out.insert(rel, text);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// A synthetic module: `#Input` with a name, an image, a size and env, and a `graph` of
/// `pairs` ConfigMap + Deployment pairs chained by `dependsOn` (config-0 ← app-0 ← config-1 …).
fn generated_module(pairs: usize) -> ModuleSource {
    use std::fmt::Write as _;

    let mut text = String::from(
        r#"// Package generated is a synthetic module written by crates/cue/benches/render.rs.
package generated

#Input: {
	metadata: {
		name:      string
		namespace: string
	}
	name:  *metadata.name | string & =~"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
	image: *"docker.io/library/nginx:1.27" | string
	// Replicas of every Deployment.
	size: *1 | int & >=0 & <=100
	env: [string]: string
}

input: #Input

_labels: {
	"app.kubernetes.io/part-of":    input.name
	"app.kubernetes.io/managed-by": "pequod"
}

graph: nodes: [
"#,
    );
    for i in 0..pairs {
        let config_depends = if i == 0 {
            String::new()
        } else {
            format!("\t\tdependsOn: [\"app-{}\"]\n", i - 1)
        };
        let _ = write!(
            text,
            r#"	{{
		id: "config-{i}"
		object: {{
			apiVersion: "v1"
			kind:       "ConfigMap"
			metadata: {{name: "\(input.name)-config-{i}", namespace: input.metadata.namespace, labels: _labels}}
			data: {{
				index: "{i}"
				size:  "\(input.size)"
				for k, v in input.env {{"env.\(k)": v}}
			}}
		}}
{config_depends}	}},
	{{
		id: "app-{i}"
		object: {{
			apiVersion: "apps/v1"
			kind:       "Deployment"
			metadata: {{name: "\(input.name)-app-{i}", namespace: input.metadata.namespace, labels: _labels}}
			spec: {{
				replicas: input.size
				selector: matchLabels: "app.kubernetes.io/name": "\(input.name)-app-{i}"
				template: {{
					metadata: labels: _labels & {{"app.kubernetes.io/name": "\(input.name)-app-{i}"}}
					spec: containers: [{{
						name:  "app"
						image: input.image
						envFrom: [{{configMapRef: name: "\(input.name)-config-{i}"}}]
						env: [for k, v in input.env {{name: k, value: v}}]
						resources: limits: {{cpu: "100m", memory: "64Mi"}}
					}}]
				}}
			}}
		}}
		dependsOn: ["config-{i}"]
		readyWhen: [{{type: "DeploymentAvailable"}}]
	}},
"#
        );
    }
    text.push_str("]\n\noutputs: nodes: len(graph.nodes)\n");
    let files = BTreeMap::from([
        (
            "cue.mod/module.cue".to_owned(),
            "module: \"bench.pequod.dev/generated@v0\"\nlanguage: version: \"v0.17.0\"\n"
                .to_owned(),
        ),
        ("generated/generated.cue".to_owned(), text),
    ]);
    ModuleSource::from_files(files, "generated")
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn measure(engine: &Engine, case: &Case, args: &Args) -> anyhow::Result<ModuleResult> {
    let render = |i: usize| {
        let input = (case.input)(i);
        async move {
            let started = Instant::now();
            let rendered = engine
                .evaluate(&case.module, &input)
                .await
                .with_context(|| format!("rendering {} with input {input}", case.name))?;
            anyhow::Ok((started.elapsed(), rendered))
        }
    };

    // The reference input (0): the request the Go and CLI references time, and its nodes.
    let (first, rendered) = render(0).await?;
    let request = args.out.join(format!("{}.request.json", case.name));
    // Exactly what the engine sends the guest (`protocol::Request`), minus `cacheKey`.
    write_json(
        &request,
        &json!({
            "files": case.module.files,
            "package": case.module.package,
            "input": (case.input)(0),
        }),
    )?;
    let engine_nodes = args.out.join(format!("{}.engine-nodes.json", case.name));
    write_json(&engine_nodes, &rendered.nodes)?;

    for i in 1..=args.warmup {
        render(i).await?;
    }
    let before = engine.stats();
    let mut misses = Vec::with_capacity(args.iterations);
    for i in 0..args.iterations {
        misses.push(render(args.warmup + 1 + i).await?.0);
    }
    let after = engine.stats();
    if after.memo_hits != before.memo_hits {
        bail!(
            "{}: a memo-miss iteration was answered by the memo",
            case.name
        );
    }

    let mut hits = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        hits.push(render(0).await?.0);
    }
    let hit_count = engine.stats().memo_hits - after.memo_hits;
    if hit_count != args.iterations as u64 {
        bail!(
            "{}: only {hit_count} of {} repeated renders were memo hits",
            case.name,
            args.iterations
        );
    }

    let result = ModuleResult {
        name: case.name.to_owned(),
        package: case.module.package.clone(),
        nodes: rendered.nodes.len(),
        module_files: case.module.files.len(),
        module_bytes: case.module.files.values().map(String::len).sum(),
        first_render_ns: nanos(first),
        memo_miss: Timings::of(&misses),
        memo_hit: Timings::of(&hits),
        request,
        engine_nodes,
    };
    eprintln!(
        "bench render: {}: {} nodes, first {:.1?}, memo miss median {:.2?} p90 {:.2?}, memo hit median {:.1?}",
        case.name,
        result.nodes,
        first,
        Duration::from_nanos(result.memo_miss.median_ns),
        Duration::from_nanos(result.memo_miss.p90_ns),
        Duration::from_nanos(result.memo_hit.median_ns),
    );
    Ok(result)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");

    // Start-up: a fresh cache directory (compiles the guest), then the same directory again.
    let cache_dir = args.out.join("engine-cache");
    if cache_dir.exists() {
        std::fs::remove_dir_all(&cache_dir)
            .with_context(|| format!("removing {}", cache_dir.display()))?;
    }
    let config = EngineConfig {
        cache_dir: Some(cache_dir.clone()),
        ..EngineConfig::default()
    };
    eprintln!("bench render: starting an engine without cache (compiles the guest)...");
    let cold = Engine::new(config.clone())?;
    let (no_cache, no_cache_compiled) = (cold.preparation().duration, cold.preparation().compiled);
    drop(cold);
    let engine = Engine::new(config)?;
    let engine_start = EngineStart {
        no_cache_ns: nanos(no_cache),
        no_cache_compiled,
        cached_ns: nanos(engine.preparation().duration),
        cached_compiled: engine.preparation().compiled,
    };
    eprintln!(
        "bench render: engine start without cache {no_cache:.2?} (compiled: {no_cache_compiled}), cached {:.1?} (compiled: {})",
        engine.preparation().duration,
        engine.preparation().compiled,
    );

    let cases = [
        Case {
            name: "webservice",
            module: ModuleSource::from_files(cue_files(&repo.join("cue"))?, "webservice"),
            input: webservice_input,
        },
        Case {
            name: "generated-50",
            module: generated_module(GENERATED_PAIRS),
            input: generated_input,
        },
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let modules = runtime.block_on(async {
        let mut modules = Vec::new();
        for case in &cases {
            modules.push(measure(&engine, case, &args).await?);
        }
        anyhow::Ok(modules)
    })?;

    let stats = engine.stats();
    let results = Results {
        iterations: args.iterations,
        warmup: args.warmup,
        engine_start,
        modules,
        peak_memory_bytes: stats.peak_memory_bytes,
        stats: Stats {
            evaluations: stats.evaluations,
            memo_hits: stats.memo_hits,
            instances_created: stats.instances_created,
            instances_discarded: stats.instances_discarded,
        },
    };
    drop(engine);
    // The precompiled guest is large; only the timings were wanted.
    let _ = std::fs::remove_dir_all(&cache_dir);
    if args.remove_out {
        let _ = std::fs::remove_dir_all(&args.out);
    }
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}
