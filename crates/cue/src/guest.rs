//! The guest program and the one wasmtime `Engine` that runs it.
//!
//! The guest (`guest/`, Go) is built to wasm by this crate's build script and embedded in the
//! binary. Compiling its ~30 MB of wasm with Cranelift takes seconds, so it is compiled once per
//! (wasm, engine configuration) and kept in a cache file keyed by the wasm's hash and wasmtime's
//! compatibility hash; later processes map the cached artifact with `Module::deserialize_file`.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Linker, Module};

use crate::EngineError;
use crate::instance::GuestState;

/// The guest, compiled by the build script from `guest/`.
pub static GUEST_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cue-guest.wasm"));

/// The epoch advances this often; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How the guest was made ready.
#[derive(Clone, Debug)]
pub struct Preparation {
    /// True when it was compiled now (no usable cache), false when loaded from the cache.
    pub compiled: bool,
    /// Time to a ready module.
    pub duration: Duration,
    /// The cache file, if one is used.
    pub cache_file: Option<PathBuf>,
}

/// The engine, the compiled guest and a linker with WASI preview 1.
pub struct Guest {
    engine: Engine,
    module: Module,
    linker: Linker<GuestState>,
    preparation: Preparation,
}

fn wasmtime_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Wasmtime(e.to_string())
}

fn engine_config() -> Config {
    let mut config = Config::new();
    // Deadlines without per-instruction fuel accounting.
    config.epoch_interruption(true);
    // Go ≥ 1.26 emits typed function references.
    config.wasm_function_references(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config
}

impl Guest {
    /// Loads the guest from `cache_dir` (or, when it has none, from `seed_dir`) or compiles
    /// it (and stores it in `cache_dir`).
    pub fn load(cache_dir: Option<&Path>, seed_dir: Option<&Path>) -> Result<Self, EngineError> {
        let started = Instant::now();
        let engine = Engine::new(&engine_config()).map_err(wasmtime_error)?;
        let (module, compiled, cache_file) = match cache_dir {
            Some(dir) => load_cached(&engine, dir, seed_dir)?,
            None => (
                Module::new(&engine, GUEST_WASM).map_err(wasmtime_error)?,
                true,
                None,
            ),
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut GuestState| {
            &mut state.wasi
        })
        .map_err(wasmtime_error)?;
        let preparation = Preparation {
            compiled,
            duration: started.elapsed(),
            cache_file,
        };
        tracing::info!(
            compiled = preparation.compiled,
            millis = u64::try_from(preparation.duration.as_millis()).unwrap_or(u64::MAX),
            "CUE guest ready"
        );
        Ok(Self {
            engine,
            module,
            linker,
            preparation,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled guest.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// The linker with WASI imports.
    pub fn linker(&self) -> &Linker<GuestState> {
        &self.linker
    }

    /// How the guest was prepared.
    pub fn preparation(&self) -> &Preparation {
        &self.preparation
    }
}

/// Cache file name: the wasm's hash and the engine's compatibility hash.
fn cache_file_name(engine: &Engine) -> String {
    let wasm = crate::hex(&Sha256::digest(GUEST_WASM)[..12]);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("cue-guest-{wasm}-{:016x}.cwasm", hasher.finish())
}

fn load_cached(
    engine: &Engine,
    dir: &Path,
    seed_dir: Option<&Path>,
) -> Result<(Module, bool, Option<PathBuf>), EngineError> {
    let name = cache_file_name(engine);
    let path = dir.join(&name);
    let candidates = std::iter::once(path.clone()).chain(seed_dir.map(|seed| seed.join(&name)));
    for candidate in candidates.filter(|c| c.is_file()) {
        // SAFETY: the file was written by `store_compiled` below from
        // `Engine::precompile_module` output, into a cache directory private to this user (or
        // into the image's read-only seed directory by the same code at build time), and its
        // name carries the engine's compatibility hash; wasmtime also checks the header and
        // refuses artifacts from another configuration, version or CPU.
        #[allow(unsafe_code)]
        let loaded = unsafe { Module::deserialize_file(engine, &candidate) };
        match loaded {
            Ok(module) => return Ok((module, false, Some(candidate))),
            Err(e) => {
                tracing::warn!(path = %candidate.display(), error = %e, "ignoring unusable precompiled guest");
            }
        }
    }
    let compiled = engine
        .precompile_module(GUEST_WASM)
        .map_err(wasmtime_error)?;
    store_compiled(dir, &path, &compiled)?;
    // SAFETY: as above; the file now holds what this engine just produced.
    #[allow(unsafe_code)]
    let module = unsafe { Module::deserialize_file(engine, &path) }.map_err(wasmtime_error)?;
    Ok((module, true, Some(path)))
}

/// Writes atomically (temporary file, then rename) so concurrent processes never read half.
fn store_compiled(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    // Unique per writer: engines may be created concurrently in one process, too.
    static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let io = |source| EngineError::Cache {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let writer = WRITERS.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{writer}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until `stop` is set.
pub fn start_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), EngineError> {
    std::thread::Builder::new()
        .name("cue-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
        .map_err(|e| EngineError::Wasmtime(format!("cannot start the deadline ticker: {e}")))
}
