//! `cargo xtask bench-cue`: the CUE engine's figures in one run, next to two references.
//!
//! 1. The engine (`crates/cue/benches/render.rs`, release mode): start-up without and with the
//!    precompiled-guest cache, render latency with warm instances and a new input every time
//!    (memo miss), memo-hit latency, peak guest memory. It writes, per module, the exact request
//!    the engine sends the guest (without `cacheKey`) and the nodes it rendered.
//! 2. Native Go: the guest's own `Evaluate` built natively (`crates/cue/guest`, `cli_native.go`
//!    `-bench`), timing that request in-process with no module cache: load, build, validate
//!    `#Input`, fill, export per evaluation, what KubeVela and Timoni do.
//! 3. The `cue` CLI (v0.17.1, `go install`ed into the tools cache): one `cue export` process per
//!    evaluation on a copy of the module with the input as a JSON file placed at `input`, what
//!    kapp-controller does.
//!
//! Both references must render the same nodes as the engine, or the run fails. Results are
//! printed as a table and written to `target/bench-cue.json`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use pequod_api::GraphNode;
use pequod_testenv::binaries;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::Command;

/// The `cue` CLI version, the one the guest embeds (`crates/cue/guest/go.mod`).
const CUE_VERSION: &str = "v0.17.1";

/// Building the bench (a release build of wasmtime on a small machine) and running it.
const CARGO_BENCH_LIMIT: Duration = Duration::from_secs(60 * 60);
/// `go build` / `go install` of the references.
const GO_BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);
/// One native `-bench` run or one `cue export` process.
const RUN_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Options of `cargo xtask bench-cue`.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct Options {
    /// Timed iterations of every measurement.
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Untimed iterations before each measurement.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
}

/// Wall-clock times of one measurement (the bench's and `cli_native.go`'s shape).
#[derive(Deserialize, Serialize, Clone, Copy, Debug)]
struct Timings {
    iterations: usize,
    median_ns: u64,
    p90_ns: u64,
    min_ns: u64,
    max_ns: u64,
    mean_ns: u64,
}

impl Timings {
    fn of(samples: &[Duration]) -> Self {
        let mut ns: Vec<u64> = samples
            .iter()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect();
        ns.sort_unstable();
        let sum: u128 = ns.iter().map(|&n| u128::from(n)).sum();
        let count = u128::try_from(ns.len().max(1)).unwrap_or(1);
        Self {
            iterations: ns.len(),
            median_ns: percentile(&ns, 50),
            p90_ns: percentile(&ns, 90),
            min_ns: ns.first().copied().unwrap_or_default(),
            max_ns: ns.last().copied().unwrap_or_default(),
            mean_ns: u64::try_from(sum / count).unwrap_or(u64::MAX),
        }
    }
}

/// Nearest-rank percentile of sorted samples (as in the bench and `cli_native.go`).
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// What `crates/cue/benches/render.rs` prints.
#[derive(Deserialize, Serialize, Debug)]
struct EngineResults {
    iterations: usize,
    warmup: usize,
    engine_start: EngineStart,
    modules: Vec<EngineModule>,
    peak_memory_bytes: u64,
    stats: Value,
}

#[derive(Deserialize, Serialize, Debug)]
struct EngineStart {
    no_cache_ns: u64,
    no_cache_compiled: bool,
    cached_ns: u64,
    cached_compiled: bool,
}

#[derive(Deserialize, Serialize, Debug)]
struct EngineModule {
    name: String,
    package: String,
    nodes: usize,
    module_files: usize,
    module_bytes: usize,
    first_render_ns: u64,
    memo_miss: Timings,
    memo_hit: Timings,
    request: PathBuf,
    engine_nodes: PathBuf,
}

/// The request file the bench wrote (what the engine sends, without `cacheKey`).
#[derive(Deserialize)]
struct Request {
    files: BTreeMap<String, String>,
    package: String,
    input: Value,
}

/// One module's row: the engine and both references.
#[derive(Serialize)]
struct Row {
    module: String,
    nodes: usize,
    engine_memo_miss: Timings,
    engine_memo_hit: Timings,
    engine_first_render_ns: u64,
    native_go: Timings,
    native_go_module_cached: Timings,
    cue_cli: Timings,
    /// Engine memo-miss median over native Go median.
    ratio_engine_native: f64,
    /// Engine memo-miss median over `cue` CLI median.
    ratio_engine_cli: f64,
    /// Engine memo-miss median over native Go with the built module kept (the same work as
    /// the engine's warm instance, without wasm).
    ratio_engine_native_cached: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    Duration::from_nanos(a).as_secs_f64() / Duration::from_nanos(b).as_secs_f64().max(1e-12)
}

/// Bytes in MiB, for display.
#[allow(clippy::cast_precision_loss)]
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn show(ns: u64) -> String {
    let d = Duration::from_nanos(ns);
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }
}

fn show_pair(t: &Timings) -> String {
    format!("{} / {}", show(t.median_ns), show(t.p90_ns))
}

/// Runs a command to completion within `limit`, capturing its output; fails on a non-zero
/// exit.
async fn exec(
    command: &mut Command,
    limit: Duration,
    what: &str,
) -> anyhow::Result<std::process::Output> {
    exec_with(command, limit, what, Stdio::piped()).await
}

/// [`exec`] with the command's stderr going to `stderr` (e.g. inherited to show progress).
async fn exec_with(
    command: &mut Command,
    limit: Duration,
    what: &str,
    stderr: Stdio,
) -> anyhow::Result<std::process::Output> {
    // On timeout the child is dropped, which kills it.
    command
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let child = command
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {limit:?}"))?
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(output)
}

fn go(args: &[&str]) -> Command {
    let mut command = Command::new("go");
    command.args(args).env("GOTOOLCHAIN", "local");
    command
}

fn read_nodes(path: &Path) -> anyhow::Result<Vec<GraphNode>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("nodes in {}", path.display()))
}

/// The `graph.nodes` of an exported value, typed like the engine's.
fn graph_nodes(exported: &[u8], what: &str) -> anyhow::Result<Vec<GraphNode>> {
    let value: Value =
        serde_json::from_slice(exported).with_context(|| format!("{what}: output is not JSON"))?;
    if let Some(errors) = value.get("errors") {
        bail!("{what}: evaluation failed: {errors}");
    }
    let nodes = value
        .pointer("/graph/nodes")
        .cloned()
        .ok_or_else(|| anyhow!("{what}: no graph.nodes in the output"))?;
    serde_json::from_value(nodes).with_context(|| format!("{what}: graph.nodes"))
}

fn same_nodes(
    name: &str,
    what: &str,
    engine: &[GraphNode],
    other: &[GraphNode],
) -> anyhow::Result<()> {
    if engine != other {
        bail!(
            "{name}: {what} rendered a different graph than the engine ({} vs {} nodes)",
            other.len(),
            engine.len()
        );
    }
    Ok(())
}

/// The `cue` CLI in `<cache>/tools/bin`, installed with `go install` unless already there.
async fn cue_cli() -> anyhow::Result<PathBuf> {
    let bin_dir = binaries::cache_root().join("tools").join("bin");
    let cue = bin_dir.join("cue");
    if cue.is_file() {
        let version = exec(Command::new(&cue).arg("version"), RUN_LIMIT, "cue version").await?;
        if String::from_utf8_lossy(&version.stdout).contains(&format!("cue version {CUE_VERSION}"))
        {
            return Ok(cue);
        }
    }
    eprintln!(
        "==> go install cuelang.org/go/cmd/cue@{CUE_VERSION} (GOBIN={})",
        bin_dir.display()
    );
    std::fs::create_dir_all(&bin_dir).with_context(|| bin_dir.display().to_string())?;
    let package = format!("cuelang.org/go/cmd/cue@{CUE_VERSION}");
    exec_with(
        go(&["install", &package])
            .env("GOBIN", &bin_dir)
            .current_dir(std::env::temp_dir()),
        GO_BUILD_LIMIT,
        "go install cue",
        Stdio::inherit(),
    )
    .await?;
    Ok(cue)
}

/// Writes a request's files under `dir` (a module root) and the input as `dir/input.json`.
fn materialize(request: &Request, dir: &Path) -> anyhow::Result<()> {
    for (name, content) in &request.files {
        let relative = Path::new(name);
        if !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            bail!("unexpected module file path {name:?}");
        }
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
        std::fs::write(&path, content).with_context(|| path.display().to_string())?;
    }
    std::fs::write(dir.join("input.json"), serde_json::to_vec(&request.input)?)?;
    Ok(())
}

/// `cue export ./<package> input.json -l input: --out json`, run from the module root: the
/// input file is unified at `input` (so `input: #Input` validates it), the whole package value
/// is exported (input, graph, outputs, violations).
fn cue_export(cue: &Path, dir: &Path, package: &str) -> Command {
    let mut command = Command::new(cue);
    command
        .current_dir(dir)
        .args(["export", &format!("./{package}"), "input.json"])
        .args(["-l", "input:", "--out", "json"]);
    command
}

async fn time_cli(
    cue: &Path,
    dir: &Path,
    package: &str,
    options: Options,
) -> anyhow::Result<Timings> {
    for _ in 0..options.warmup {
        exec(&mut cue_export(cue, dir, package), RUN_LIMIT, "cue export").await?;
    }
    let mut samples = Vec::with_capacity(options.iterations);
    for _ in 0..options.iterations {
        let mut command = cue_export(cue, dir, package);
        let started = Instant::now();
        exec(&mut command, RUN_LIMIT, "cue export").await?;
        samples.push(started.elapsed());
    }
    Ok(Timings::of(&samples))
}

async fn time_native(
    native: &Path,
    request: &Path,
    options: Options,
    cached: bool,
) -> anyhow::Result<Timings> {
    let mut command = Command::new(native);
    command
        .arg("-bench")
        .arg(options.iterations.to_string())
        .arg("-warmup")
        .arg(options.warmup.to_string())
        .arg("-request")
        .arg(request);
    if cached {
        command.arg("-cached");
    }
    let output = exec(&mut command, RUN_LIMIT, "cue-native -bench").await?;
    serde_json::from_slice(&output.stdout).context("cue-native -bench output")
}

pub fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    if options.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(root, options))
}

/// Runs the release-mode render bench, which writes its request files into `work`.
async fn engine_bench(root: &Path, work: &Path, options: Options) -> anyhow::Result<EngineResults> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let (iterations, warmup) = (options.iterations.to_string(), options.warmup.to_string());
    let work_arg = work.to_string_lossy().into_owned();
    let bench_args = [
        "bench",
        "-p",
        "pequod-cue",
        "--bench",
        "render",
        "--",
        "--iterations",
        &iterations,
        "--warmup",
        &warmup,
        "--out",
        &work_arg,
    ];
    eprintln!("==> cargo {}", bench_args.join(" "));
    let output = exec_with(
        Command::new(&cargo).current_dir(root).args(bench_args),
        CARGO_BENCH_LIMIT,
        "cargo bench -p pequod-cue --bench render",
        Stdio::inherit(),
    )
    .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow!("the render bench printed no JSON line:\n{stdout}"))?;
    serde_json::from_str(line).context("the render bench's JSON")
}

/// Checks that both references render the engine's nodes, then times them.
async fn measure_references(
    module: &EngineModule,
    native: &Path,
    cue: &Path,
    work: &Path,
    options: Options,
) -> anyhow::Result<Row> {
    let name = &module.name;
    let request: Request = serde_json::from_str(
        &std::fs::read_to_string(&module.request)
            .with_context(|| module.request.display().to_string())?,
    )
    .with_context(|| module.request.display().to_string())?;
    let engine_nodes = read_nodes(&module.engine_nodes)?;

    eprintln!("==> {name}: native Go");
    let mut once = Command::new(native);
    once.arg("-request").arg(&module.request);
    let response = exec(&mut once, RUN_LIMIT, "cue-native").await?;
    let native_nodes = graph_nodes(&response.stdout, "native Go")?;
    same_nodes(name, "native Go", &engine_nodes, &native_nodes)?;
    let native_go = time_native(native, &module.request, options, false).await?;
    let native_cached = time_native(native, &module.request, options, true).await?;

    eprintln!("==> {name}: cue CLI");
    let dir = work.join("cli").join(name);
    materialize(&request, &dir)?;
    let exported = exec(
        &mut cue_export(cue, &dir, &request.package),
        RUN_LIMIT,
        "cue export",
    )
    .await?;
    let cli_nodes = graph_nodes(&exported.stdout, "cue export")?;
    same_nodes(name, "cue export", &engine_nodes, &cli_nodes)?;
    let cli = time_cli(cue, &dir, &request.package, options).await?;

    let miss = module.memo_miss.median_ns;
    Ok(Row {
        module: name.clone(),
        nodes: module.nodes,
        engine_memo_miss: module.memo_miss,
        engine_memo_hit: module.memo_hit,
        engine_first_render_ns: module.first_render_ns,
        native_go,
        native_go_module_cached: native_cached,
        cue_cli: cli,
        ratio_engine_native: ratio(miss, native_go.median_ns),
        ratio_engine_cli: ratio(miss, cli.median_ns),
        ratio_engine_native_cached: ratio(miss, native_cached.median_ns),
    })
}

async fn bench(root: &Path, options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let work = root.join("target").join("bench-cue");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| work.display().to_string())?;
    }
    std::fs::create_dir_all(&work).with_context(|| work.display().to_string())?;

    // 1. The engine, release mode.
    let engine = engine_bench(root, &work, options).await?;

    // 2. Native Go, built from the guest's sources.
    let native = work.join("cue-native");
    let native_arg = native.to_string_lossy().into_owned();
    eprintln!("==> go build -o {native_arg} . (in crates/cue/guest)");
    exec(
        go(&["build", "-o", &native_arg, "."]).current_dir(root.join("crates/cue/guest")),
        GO_BUILD_LIMIT,
        "go build (native CUE reference)",
    )
    .await?;

    // 3. The cue CLI.
    let cue = cue_cli().await?;

    let mut rows = Vec::new();
    for module in &engine.modules {
        rows.push(measure_references(module, &native, &cue, &work, options).await?);
    }

    print_table(&engine, &rows, options);

    let go_version = exec(&mut go(&["version"]), RUN_LIMIT, "go version").await?;
    let report = json!({
        "iterations": options.iterations,
        "warmup": options.warmup,
        "cores": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "go": String::from_utf8_lossy(&go_version.stdout).trim(),
        "cue_cli": {"version": CUE_VERSION, "path": cue,
                    "command": "cue export ./<package> input.json -l input: --out json"},
        "native_go": {"path": native,
                      "command": "cue-native -bench N -warmup W -request <module>.request.json [-cached]"},
        "rows": rows,
        "engine": engine,
        "percentiles": "nearest rank; ratios are of medians",
    });
    let json_path = root.join("target").join("bench-cue.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| json_path.display().to_string())?;
    println!("\nresults: {}", json_path.display());
    eprintln!("bench-cue done in {:.1?}", started.elapsed());
    Ok(())
}

fn print_table(engine: &EngineResults, rows: &[Row], options: Options) {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "\nCUE render latency, median / p90 of {} iterations after {} warm-up ({cores} cores)\n",
        options.iterations, options.warmup
    );
    let header = [
        "module",
        "nodes",
        "engine (warm, memo miss)",
        "engine memo hit",
        "native Go",
        "cue CLI",
        "engine/native",
        "engine/CLI",
    ];
    let mut lines: Vec<[String; 8]> = vec![header.map(str::to_owned)];
    for row in rows {
        lines.push([
            row.module.clone(),
            row.nodes.to_string(),
            show_pair(&row.engine_memo_miss),
            show_pair(&row.engine_memo_hit),
            show_pair(&row.native_go),
            show_pair(&row.cue_cli),
            format!("{:.2}x", row.ratio_engine_native),
            format!("{:.2}x", row.ratio_engine_cli),
        ]);
    }
    let mut widths = [0usize; 8];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for (i, line) in lines.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(col, (cell, width))| {
                if col == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        println!("{}", cells.join("  "));
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            println!("{}", "-".repeat(total));
        }
    }
    let start = &engine.engine_start;
    println!(
        "\nengine start: no cache {} (compiled: {}), cached {} (compiled: {})",
        show(start.no_cache_ns),
        start.no_cache_compiled,
        show(start.cached_ns),
        start.cached_compiled
    );
    for row in rows {
        println!(
            "first render of {} in the engine: {}",
            row.module,
            show(row.engine_first_render_ns)
        );
    }
    let peak = engine.peak_memory_bytes;
    println!(
        "peak guest linear memory: {:.1} MiB ({peak} bytes)",
        mib(peak)
    );
    println!(
        "\nnative Go: a fresh load + build + validate + fill + export per evaluation (no cacheKey)."
    );
    println!(
        "cue CLI: one `cue export ./<package> input.json -l input: --out json` process per evaluation."
    );
    for row in rows {
        println!(
            "native Go keeping the built module (-cached, the engine's path without wasm), {}: {} -> engine/that {:.2}x",
            row.module,
            show_pair(&row.native_go_module_cached),
            row.ratio_engine_native_cached
        );
    }
}
