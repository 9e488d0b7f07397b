//! One guest instance: a wasmtime `Store` with its memory cap, deadline and captured stderr,
//! and the guest's exports. An instance serves calls until it is recycled; after any failure it
//! is dropped, so a trap never leaks into the next evaluation.

use std::time::Duration;

use wasmtime::{Instance, Memory, ResourceLimiter, Store, Trap, TypedFunc};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::guest::{EPOCH_TICK, Guest};
use crate::protocol::Response;
use crate::{EngineConfig, EvalError};

/// Per-store state: the WASI context and the memory limiter.
pub struct GuestState {
    pub wasi: WasiP1Ctx,
    limiter: MemoryCap,
}

/// Refuses linear-memory growth past the cap and remembers that it did, so the resulting
/// guest failure is reported as `OutOfMemory` rather than a crash.
struct MemoryCap {
    limit: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Why a call failed, before it is turned into an [`EvalError`].
#[derive(Debug)]
pub enum CallFailure {
    Timeout,
    OutOfMemory,
    Crash {
        message: String,
        stderr: String,
    },
    /// The guest answered something that is not a response.
    BadResponse(String),
}

impl CallFailure {
    pub fn into_error(self, config: &EngineConfig) -> EvalError {
        match self {
            CallFailure::Timeout => EvalError::Timeout(config.timeout),
            CallFailure::OutOfMemory => EvalError::OutOfMemory(config.memory_limit),
            CallFailure::Crash { message, stderr } => EvalError::GuestCrash { message, stderr },
            CallFailure::BadResponse(message) => EvalError::GuestCrash {
                message,
                stderr: String::new(),
            },
        }
    }
}

pub struct GuestInstance {
    store: Store<GuestState>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    dealloc: TypedFunc<u32, ()>,
    eval: TypedFunc<(u32, u32), u64>,
    stderr: MemoryOutputPipe,
    calls: u32,
}

fn deadline_ticks(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis() / EPOCH_TICK.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl GuestInstance {
    /// Instantiates the guest and runs the Go runtime's initialization under the deadline.
    pub fn start(guest: &Guest, config: &EngineConfig) -> Result<Self, CallFailure> {
        let stderr = MemoryOutputPipe::new(config.stderr_limit);
        let limit = usize::try_from(config.memory_limit).unwrap_or(usize::MAX);
        // Go's collector works harder as the heap nears GOMEMLIMIT, keeping it under our cap.
        let go_limit = config.memory_limit / 10 * 8;
        let wasi = WasiCtxBuilder::new()
            .env("GOMEMLIMIT", go_limit.to_string())
            .env("GOGC", config.guest_gc_percent.to_string())
            .stderr(stderr.clone())
            .stdout(stderr.clone())
            .build_p1();
        let mut store = Store::new(
            guest.engine(),
            GuestState {
                wasi,
                limiter: MemoryCap {
                    limit,
                    exceeded: false,
                },
            },
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(config.timeout));

        let crash =
            |stage: &str,
             e: wasmtime::Error,
             store: &Store<GuestState>,
             stderr: &MemoryOutputPipe| { classify(stage, &e, store, stderr) };
        let instance: Instance = match guest.linker().instantiate(&mut store, guest.module()) {
            Ok(instance) => instance,
            Err(e) => return Err(crash("instantiate", e, &store, &stderr)),
        };
        let export =
            |store: &mut Store<GuestState>, name: &str| -> Result<wasmtime::Func, CallFailure> {
                instance
                    .get_func(&mut *store, name)
                    .ok_or_else(|| CallFailure::BadResponse(format!("guest lacks export `{name}`")))
            };
        let typed = |e: wasmtime::Error| {
            CallFailure::BadResponse(format!("guest export has the wrong type: {e}"))
        };
        let initialize = export(&mut store, "_initialize")?
            .typed::<(), ()>(&store)
            .map_err(typed)?;
        let alloc = export(&mut store, "alloc")?
            .typed::<u32, u32>(&store)
            .map_err(typed)?;
        let dealloc = export(&mut store, "dealloc")?
            .typed::<u32, ()>(&store)
            .map_err(typed)?;
        let eval = export(&mut store, "eval")?
            .typed::<(u32, u32), u64>(&store)
            .map_err(typed)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| CallFailure::BadResponse("guest exports no memory".into()))?;
        if let Err(e) = initialize.call(&mut store, ()) {
            return Err(crash("initialize", e, &store, &stderr));
        }
        Ok(Self {
            store,
            memory,
            alloc,
            dealloc,
            eval,
            stderr,
            calls: 0,
        })
    }

    /// Evaluations served so far.
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// Current size of the guest's linear memory.
    pub fn memory_bytes(&self) -> u64 {
        u64::try_from(self.memory.data_size(&self.store)).unwrap_or(u64::MAX)
    }

    /// Sends one request and parses the guest's response.
    pub fn call(&mut self, request: &[u8], timeout: Duration) -> Result<Response, CallFailure> {
        self.calls += 1;
        self.store.set_epoch_deadline(deadline_ticks(timeout));
        let len = u32::try_from(request.len())
            .map_err(|_| CallFailure::BadResponse("request larger than 4 GiB".into()))?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| self.fail("alloc", &e))?;
        let start = usize::try_from(ptr).unwrap_or(usize::MAX);
        self.memory
            .write(&mut self.store, start, request)
            .map_err(|e| CallFailure::BadResponse(format!("writing the request: {e}")))?;
        let packed = self
            .eval
            .call(&mut self.store, (ptr, len))
            .map_err(|e| self.fail("eval", &e))?;
        self.dealloc
            .call(&mut self.store, ptr)
            .map_err(|e| self.fail("dealloc", &e))?;

        let response_ptr = u32::try_from(packed >> 32).unwrap_or(u32::MAX);
        let response_len = usize::try_from(packed & 0xffff_ffff).unwrap_or(usize::MAX);
        let start = usize::try_from(response_ptr).unwrap_or(usize::MAX);
        let bytes = self
            .memory
            .data(&self.store)
            .get(start..start.saturating_add(response_len))
            .ok_or_else(|| CallFailure::BadResponse("response outside guest memory".into()))?
            .to_vec();
        self.dealloc
            .call(&mut self.store, response_ptr)
            .map_err(|e| self.fail("dealloc", &e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CallFailure::BadResponse(format!("guest response is not valid JSON: {e}")))
    }

    fn fail(&self, stage: &str, error: &wasmtime::Error) -> CallFailure {
        classify(stage, error, &self.store, &self.stderr)
    }
}

/// Turns a wasmtime error into a failure: a refused memory growth is `OutOfMemory` whatever
/// the guest did next (Go exits or traps when it cannot grow), an epoch interrupt is a
/// `Timeout`, anything else a crash with the end of stderr.
fn classify(
    stage: &str,
    error: &wasmtime::Error,
    store: &Store<GuestState>,
    stderr: &MemoryOutputPipe,
) -> CallFailure {
    if store.data().limiter.exceeded {
        return CallFailure::OutOfMemory;
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return CallFailure::Timeout;
    }
    let message = match error.downcast_ref::<I32Exit>() {
        Some(exit) => format!("guest exited with status {} during {stage}", exit.0),
        None => format!("guest trapped during {stage}: {error}"),
    };
    let contents = stderr.contents();
    let text = String::from_utf8_lossy(&contents);
    let tail: String = text
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    CallFailure::Crash {
        message,
        stderr: tail,
    }
}
