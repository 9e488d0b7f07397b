//! Pequod's CUE engine: the real CUE evaluator (Go's `cuelang.org/go`, compiled to wasip1 in
//! `guest/`) run by wasmtime inside our process.
//!
//! This crate owns the host side: one wasmtime [`Engine`] per process with the guest compiled
//! once (never on the request path, see [`guest`]); every evaluation in `spawn_blocking` under a
//! memory cap, an epoch deadline and bounded stderr, in a warm guest instance that is recycled
//! after a number of calls, above a memory mark and after any trap ([`instance`]); typed errors
//! with CUE paths and positions ([`EvalError`]); the rendered graph checked into typed nodes
//! ([`graph`]); and a bounded memo so the same (module digest, input) never evaluates twice.

pub mod graph;
pub mod guest;
mod instance;
mod memo;
mod protocol;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pequod_api::{GraphNode, Violation};
use serde::{Deserialize, Serialize};

use instance::{CallFailure, GuestInstance};
use memo::Memo;

/// A CUE module to evaluate, as fetched by a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSource {
    /// Content digest of the module (`sha256:…`) or commit SHA; keys caches.
    pub digest: String,
    /// Files by path relative to the module root, `cue.mod/module.cue` included when present.
    pub files: BTreeMap<String, String>,
    /// Package directory to evaluate, relative to the module root (`.` for the root).
    pub package: String,
    /// Modules this one imports, already fetched.
    pub deps: Vec<Dependency>,
}

impl ModuleSource {
    /// A module from files, with a digest computed over paths and contents.
    pub fn from_files(files: BTreeMap<String, String>, package: &str) -> Self {
        let digest = files_digest(&files);
        Self {
            digest,
            files,
            package: package.to_owned(),
            deps: Vec::new(),
        }
    }
}

/// `sha256:` digest over sorted paths and contents (see [`pequod_api::module_digest`]).
pub fn files_digest(files: &BTreeMap<String, String>) -> String {
    pequod_api::module_digest(files)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// A CUE module a module depends on (declared in its `cue.mod/module.cue`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// Module path with major version (`example.com/policy@v0`).
    pub module: String,
    /// Exact version (`v0.1.0`).
    pub version: String,
    /// Files by path relative to the dependency's root.
    pub files: BTreeMap<String, String>,
}

/// A source position in a module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// File relative to the module root.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One CUE error: where (CUE path and source positions) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CueError {
    /// Dot-separated CUE path (`input.replicas`); empty when CUE gives none.
    pub path: String,
    /// CUE's message.
    pub message: String,
    /// Source positions, most relevant first.
    pub positions: Vec<Position>,
}

impl std::fmt::Display for CueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(first) = self.positions.first() {
            write!(f, " ({first})")?;
        }
        Ok(())
    }
}

fn summary(errors: &[CueError]) -> String {
    let mut text: Vec<String> = errors.iter().take(5).map(ToString::to_string).collect();
    if errors.len() > 5 {
        text.push(format!("and {} more", errors.len() - 5));
    }
    text.join("; ")
}

/// Why an evaluation failed. `Schema`, `Load`, `Eval`, `NotConcrete`, `InvalidInput` and
/// `InvalidGraph` are the module's or the input's fault and repeat until one of them changes;
/// `Timeout`, `OutOfMemory` and `GuestCrash` are limits or faults of the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The input does not satisfy the module's `#Input`; paths point at input fields.
    #[error("input does not match the module's #Input: {}", summary(.0))]
    Schema(Vec<CueError>),
    /// The module could not be loaded (syntax, imports, missing package or dependency).
    #[error("module does not load: {}", summary(.0))]
    Load(Vec<CueError>),
    /// Evaluation failed (conflicting values, failed constraints, missing `graph`).
    #[error("evaluation failed: {}", summary(.0))]
    Eval(Vec<CueError>),
    /// `graph` is not concrete: some value is still a type or a default-less disjunction.
    #[error("graph is not concrete: {}", summary(.0))]
    NotConcrete(Vec<CueError>),
    /// The input is not a JSON object.
    #[error("input is malformed: {0}")]
    InvalidInput(String),
    /// The evaluation ran past its CPU deadline.
    #[error("evaluation did not finish within {0:?}")]
    Timeout(Duration),
    /// The evaluation needed more memory than its cap.
    #[error("evaluation exceeded its memory limit of {} MiB", .0 / (1024 * 1024))]
    OutOfMemory(u64),
    /// The guest trapped or exited unexpectedly.
    #[error("the CUE guest crashed: {message}")]
    GuestCrash {
        /// What happened.
        message: String,
        /// The end of the guest's stderr.
        stderr: String,
    },
    /// The module's `graph` is not a list of well-formed nodes.
    #[error("the module's graph is invalid: {0}")]
    InvalidGraph(String),
}

impl EvalError {
    /// The CUE errors behind this failure, if it has any.
    pub fn cue_errors(&self) -> &[CueError] {
        match self {
            EvalError::Schema(e)
            | EvalError::Load(e)
            | EvalError::Eval(e)
            | EvalError::NotConcrete(e) => e,
            _ => &[],
        }
    }

    /// Limits and faults of the sandbox, worth retrying later; the others repeat until the
    /// module or input changes.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EvalError::Timeout(_) | EvalError::OutOfMemory(_) | EvalError::GuestCrash { .. }
        )
    }
}

/// What a module rendered.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The graph nodes, checked for well-formedness.
    pub nodes: Vec<GraphNode>,
    /// The module's `outputs`, if any.
    pub outputs: Option<serde_json::Value>,
    /// The module's policy results.
    pub violations: Vec<Violation>,
}

/// Failure to create an [`Engine`].
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime rejected the configuration or the guest.
    #[error("cannot prepare the CUE guest: {0}")]
    Wasmtime(String),
    /// The precompiled-guest cache could not be used.
    #[error("precompiled guest cache {path}: {source}")]
    Cache {
        /// The cache file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Limits and sizes of an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Memory cap per guest instance (its linear memory).
    pub memory_limit: u64,
    /// CPU deadline per evaluation (instance start-up included when a fresh one is needed).
    pub timeout: Duration,
    /// Most guest instances alive at once, which is also the number of parallel evaluations.
    pub max_instances: usize,
    /// A warm instance is discarded after this many evaluations (a reused CUE runtime grows).
    pub recycle_after_calls: u32,
    /// A warm instance is discarded once its linear memory exceeds this many bytes.
    pub recycle_above_bytes: u64,
    /// Renders remembered by (module digest, package, input).
    pub memo_capacity: usize,
    /// Where the precompiled guest is kept; `None` keeps it in memory only (compiles at start).
    pub cache_dir: Option<PathBuf>,
    /// A read-only directory laid out like `cache_dir` that may already hold the precompiled
    /// guest (the container image ships one): used when `cache_dir` has none and it loads on
    /// this machine; otherwise the guest is compiled into `cache_dir` as usual.
    pub seed_dir: Option<PathBuf>,
    /// Bytes of guest stderr kept for crash reports.
    pub stderr_limit: usize,
    /// The guest's `GOGC`. Go in wasm collects on one thread, stopping the world; a larger
    /// heap between collections trades memory (measured: ~28 → ~100 MiB per instance at 400)
    /// for render latency (~10–20 % on a 50-node module). GOMEMLIMIT still bounds the heap.
    pub guest_gc_percent: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            memory_limit: 512 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            max_instances: 2,
            recycle_after_calls: 200,
            recycle_above_bytes: 256 * 1024 * 1024,
            memo_capacity: 512,
            cache_dir: Some(default_cache_dir()),
            seed_dir: None,
            stderr_limit: 64 * 1024,
            guest_gc_percent: 400,
        }
    }
}

/// `$PEQUOD_CACHE_DIR/cue`, else `$XDG_CACHE_HOME/pequod/cue`, else `~/.cache/pequod/cue`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PEQUOD_CACHE_DIR") {
        return PathBuf::from(dir).join("cue");
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("pequod/cue");
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/pequod/cue")
}

/// Counters of an engine's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Evaluations that ran in a guest.
    pub evaluations: u64,
    /// Evaluations answered from the memo.
    pub memo_hits: u64,
    /// Guest instances created.
    pub instances_created: u64,
    /// Guest instances discarded (recycled or after a failure).
    pub instances_discarded: u64,
    /// Largest guest linear memory seen after an evaluation, in bytes.
    pub peak_memory_bytes: u64,
}

/// The CUE engine: cheap to clone, shared by every reconcile of the process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    guest: guest::Guest,
    config: EngineConfig,
    idle: Mutex<Vec<GuestInstance>>,
    permits: tokio::sync::Semaphore,
    memo: Mutex<Memo>,
    evaluations: AtomicU64,
    memo_hits: AtomicU64,
    instances_created: AtomicU64,
    instances_discarded: AtomicU64,
    peak_memory_bytes: AtomicU64,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Prepares the guest (loading it precompiled from the cache, or compiling it once and
    /// caching it) and starts the deadline ticker. Blocking: call it at start-up.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        let guest = guest::Guest::load(config.cache_dir.as_deref(), config.seed_dir.as_deref())?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        guest::start_epoch_ticker(guest.engine().clone(), stop_ticker.clone())?;
        let permits = tokio::sync::Semaphore::new(config.max_instances.max(1));
        let memo = Mutex::new(Memo::new(config.memo_capacity));
        Ok(Self {
            inner: Arc::new(Inner {
                guest,
                config,
                idle: Mutex::new(Vec::new()),
                permits,
                memo,
                evaluations: AtomicU64::new(0),
                memo_hits: AtomicU64::new(0),
                instances_created: AtomicU64::new(0),
                instances_discarded: AtomicU64::new(0),
                peak_memory_bytes: AtomicU64::new(0),
                stop_ticker,
            }),
        })
    }

    /// The limits this engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// How the guest was prepared (loaded from cache or compiled) and how long it took.
    pub fn preparation(&self) -> &guest::Preparation {
        self.inner.guest.preparation()
    }

    /// Counters of the work done so far.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            evaluations: self.inner.evaluations.load(Ordering::Relaxed),
            memo_hits: self.inner.memo_hits.load(Ordering::Relaxed),
            instances_created: self.inner.instances_created.load(Ordering::Relaxed),
            instances_discarded: self.inner.instances_discarded.load(Ordering::Relaxed),
            peak_memory_bytes: self.inner.peak_memory_bytes.load(Ordering::Relaxed),
        }
    }

    /// Like [`Engine::evaluate`], with the input as JSON text (from a ConfigMap or a file).
    pub async fn evaluate_json(
        &self,
        module: &ModuleSource,
        input: &[u8],
    ) -> Result<Arc<Rendered>, EvalError> {
        let input: serde_json::Value = serde_json::from_slice(input)
            .map_err(|e| EvalError::InvalidInput(format!("input is not valid JSON: {e}")))?;
        self.evaluate(module, &input).await
    }

    /// Evaluates `module` with `input`: validates the input against `#Input`, fills `input`,
    /// and returns the concrete graph, outputs and violations. Answers from the memo when the
    /// same module digest, package and input were evaluated before.
    pub async fn evaluate(
        &self,
        module: &ModuleSource,
        input: &serde_json::Value,
    ) -> Result<Arc<Rendered>, EvalError> {
        if !input.is_object() {
            return Err(EvalError::InvalidInput(format!(
                "input must be a JSON object, got {}",
                json_kind(input)
            )));
        }
        let key = memo::key(module, input);
        if let Some(hit) = self.inner.memo_get(&key) {
            self.inner.memo_hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        let request = serde_json::to_vec(&protocol::Request {
            files: &module.files,
            package: &module.package,
            input,
            deps: &module.deps,
            cache_key: Some(&memo::module_key(module)),
        })
        .map_err(|e| EvalError::InvalidInput(e.to_string()))?;

        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| EvalError::GuestCrash {
                message: "engine shut down".into(),
                stderr: String::new(),
            })?;
        let inner = self.inner.clone();
        let outcome = tokio::task::spawn_blocking(move || inner.run(&request))
            .await
            .unwrap_or_else(|e| {
                Err(EvalError::GuestCrash {
                    message: format!("evaluation task failed: {e}"),
                    stderr: String::new(),
                })
            });
        let outcome = outcome.map(Arc::new);
        if outcome.as_ref().err().is_none_or(|e| !e.is_transient()) {
            self.inner.memo_put(key, outcome.clone());
        }
        outcome
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Inner {
    fn memo_get(&self, key: &memo::Key) -> Option<Result<Arc<Rendered>, EvalError>> {
        self.memo.lock().ok()?.get(key)
    }

    fn memo_put(&self, key: memo::Key, value: Result<Arc<Rendered>, EvalError>) {
        if let Ok(mut memo) = self.memo.lock() {
            memo.put(key, value);
        }
    }

    /// Runs one request in a warm instance (or a new one), then returns the instance to the
    /// idle list unless it must be recycled.
    fn run(&self, request: &[u8]) -> Result<Rendered, EvalError> {
        let cfg = &self.config;
        let warm = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut instance = if let Some(instance) = warm {
            instance
        } else {
            self.instances_created.fetch_add(1, Ordering::Relaxed);
            GuestInstance::start(&self.guest, cfg).map_err(|f| f.into_error(cfg))?
        };
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let result = instance.call(request, cfg.timeout);
        self.peak_memory_bytes
            .fetch_max(instance.memory_bytes(), Ordering::Relaxed);
        let keep = result.is_ok()
            && instance.calls() < cfg.recycle_after_calls
            && instance.memory_bytes() <= cfg.recycle_above_bytes;
        if keep {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(instance);
            }
        } else {
            self.instances_discarded.fetch_add(1, Ordering::Relaxed);
        }
        let response = result.map_err(|f: CallFailure| f.into_error(cfg))?;
        graph::interpret(response)
    }
}
