//! Evaluating a local module with the real engine (the same wasm sandbox as the operator) and
//! reporting what came out: objects or graph nodes as YAML on stdout; CUE errors as
//! `file:line:col: path: message`, policy violations, outputs and warnings on stderr.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pequod_api::{GraphNode, Severity, Violation};
use pequod_cue::{Engine, EngineConfig, EvalError, Rendered};
use serde_json::Value;

use crate::module::LocalModule;

/// Where the time of one evaluation went.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// Engine start: the precompiled guest loaded from the cache (or compiled, the first time).
    pub engine_start: Duration,
    /// Whether the guest had to be compiled (no usable cache).
    pub compiled: bool,
    /// The evaluation: a fresh guest instance, module load, `#Input` check, export.
    pub evaluation: Duration,
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timings: engine start {:.1} ms ({}), evaluation {:.1} ms",
            self.engine_start.as_secs_f64() * 1000.0,
            if self.compiled {
                "guest compiled and cached"
            } else {
                "guest loaded from the cache"
            },
            self.evaluation.as_secs_f64() * 1000.0
        )
    }
}

/// Evaluates `module` with `input` on a current-thread runtime. The first run on a machine
/// compiles the guest once and caches it (`~/.cache/pequod/cue`).
pub fn evaluate(
    module: &LocalModule,
    input: &Value,
) -> anyhow::Result<(Result<Arc<Rendered>, EvalError>, Timings)> {
    let config = EngineConfig {
        max_instances: 1,
        memo_capacity: 1,
        ..EngineConfig::default()
    };
    if let Some(dir) = &config.cache_dir
        && !has_compiled_guest(dir)
    {
        eprintln!(
            "compiling the CUE guest for this machine (once, up to a minute); cached in {}",
            dir.display()
        );
    }
    let started = Instant::now();
    let engine = Engine::new(config).context("starting the CUE engine")?;
    let engine_start = started.elapsed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = Instant::now();
    let result = runtime.block_on(engine.evaluate(&module.source, input));
    let timings = Timings {
        engine_start,
        compiled: engine.preparation().compiled,
        evaluation: started.elapsed(),
    };
    Ok((result, timings))
}

/// Whether `dir` holds a precompiled guest (of any version: a stale one still means the user
/// has seen the first-run message before).
fn has_compiled_guest(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
    })
}

/// The lines describing a failed evaluation, one per CUE error (`file:line:col: path: message`,
/// further positions indented below), or the error itself when it has no CUE errors.
pub fn error_lines(module: &LocalModule, error: &EvalError) -> Vec<String> {
    let errors = error.cue_errors();
    if errors.is_empty() {
        return vec![error.to_string()];
    }
    let phase = match error {
        EvalError::Schema(_) => "input does not match the module's #Input",
        EvalError::Load(_) => "module does not load",
        EvalError::NotConcrete(_) => "graph is not concrete",
        _ => "evaluation failed",
    };
    let mut lines = vec![format!("{phase}:")];
    for e in errors {
        let mut line = String::new();
        if let Some(first) = e.positions.first() {
            let _ = write!(
                line,
                "{}:{}:{}: ",
                module.display_file(&first.file),
                first.line,
                first.column
            );
        }
        if !e.path.is_empty() {
            let _ = write!(line, "{}: ", e.path);
        }
        line.push_str(&e.message);
        lines.push(line);
        for more in e.positions.iter().skip(1) {
            lines.push(format!(
                "    {}:{}:{}",
                module.display_file(&more.file),
                more.line,
                more.column
            ));
        }
    }
    lines
}

/// One line per violation: `policy error: [file:line:col: ]path: message`.
pub fn violation_line(module: &LocalModule, violation: &Violation) -> String {
    let severity = match violation.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let position = violation
        .position
        .as_deref()
        .map(|p| format!("{}: ", module.display_file(p)))
        .unwrap_or_default();
    format!(
        "policy {severity}: {position}{}: {}",
        violation.path, violation.message
    )
}

/// Whether any violation blocks the apply.
pub fn blocking(violations: &[Violation]) -> bool {
    violations.iter().any(|v| v.severity == Severity::Error)
}

/// The objects as a multi-document YAML stream, in declaration order.
pub fn objects_yaml(nodes: &[GraphNode]) -> anyhow::Result<String> {
    let mut out = String::new();
    for node in nodes {
        let _ = writeln!(out, "---\n# node: {}", node.id);
        out.push_str(&yaml_serde::to_string(&node.object).context("writing YAML")?);
    }
    Ok(out)
}

/// The graph as the operator writes it into a ResourceGraph's `spec.nodes`.
pub fn graph_yaml(nodes: &[GraphNode]) -> anyhow::Result<String> {
    yaml_serde::to_string(&serde_json::json!({ "nodes": nodes })).context("writing YAML")
}

/// The module's outputs as YAML, for stderr.
pub fn outputs_yaml(outputs: &Value) -> anyhow::Result<String> {
    yaml_serde::to_string(&serde_json::json!({ "outputs": outputs })).context("writing YAML")
}
