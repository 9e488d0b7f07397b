//! `pequod-operator`: runs the transform-controller and the graph-executor.
//!
//! Start-up: flags/env → JSON logs → HTTP endpoint (/metrics, /healthz, /readyz) → CUE engine
//! (precompiled guest) → leader election (unless disabled) → both controllers. `/readyz` turns
//! ready once the engine is loaded and either this replica is a standby or the controllers'
//! caches hold their first full list. SIGTERM/SIGINT stop the controllers (in-flight reconciles
//! finish), release the Lease for an immediate hand-over, and exit 0. A leader that loses its
//! Lease stops at once and exits 1, so that it restarts as a clean standby.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Parser as _;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use pequod_cue::{Engine, EngineConfig};
use pequod_metrics::Metrics;
use pequod_operator::config::{Args, LogFormat};
use pequod_operator::http::{self, Health};
use pequod_operator::leader::{LeaderElector, LeaseConfig};
use tokio::sync::{Notify, watch};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    // SAFETY: libgit2's timeouts are unsynchronised globals; no other thread exists yet (the
    // runtime starts below).
    #[allow(unsafe_code)]
    unsafe {
        pequod_source::set_git_timeouts(args.source_timeout, args.source_timeout);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "operator failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves once `stop` says true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Sets `stop` on SIGTERM or SIGINT.
fn on_signals(stop: watch::Sender<bool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop.send(true);
    });
    Ok(())
}

/// What every part of the process shares.
struct Parts {
    args: Args,
    kube_config: kube::Config,
    client: Client,
    metrics: Arc<Metrics>,
    health: Health,
    stop: watch::Sender<bool>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.precompile_guest {
        let engine = load_engine(&args).await?;
        let file = engine.preparation().cache_file.clone();
        tracing::info!(file = ?file, "CUE guest precompiled");
        return Ok(());
    }
    let kube_config = kube::Config::infer()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let client = Client::try_from(kube_config.clone()).context("building the Kubernetes client")?;
    let (stop, _) = watch::channel(false);
    on_signals(stop.clone())?;
    let parts = Parts {
        args,
        kube_config,
        client,
        metrics: Arc::new(Metrics::new()),
        health: Health::new(),
        stop,
    };
    parts.health.set_not_ready("CUE engine loading");
    for warning in parts.args.scope_warnings() {
        tracing::warn!("{warning}");
    }
    let listener = tokio::net::TcpListener::bind(parts.args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP endpoint {}", parts.args.http_addr))?;
    tracing::info!(address = %parts.args.http_addr, "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(http::serve(
        listener,
        parts.metrics.clone(),
        parts.health.clone(),
        stopped(parts.stop.subscribe()),
    ));
    let result = match load_engine(&parts.args).await {
        Ok(engine) if parts.args.leader_elect => lead(&parts, engine).await,
        Ok(engine) => run_controllers(&parts, engine).await,
        Err(error) => Err(error),
    };
    let _ = parts.stop.send(true);
    if let Ok(Err(error)) = server.await {
        tracing::warn!(%error, "HTTP endpoint failed");
    }
    result
}

async fn load_engine(args: &Args) -> anyhow::Result<Engine> {
    let mut config = EngineConfig {
        timeout: args.cue_timeout,
        memory_limit: args.cue_memory_mib.saturating_mul(1024 * 1024),
        max_instances: args.cue_instances.max(1),
        ..EngineConfig::default()
    };
    config.recycle_above_bytes = config.recycle_above_bytes.min(config.memory_limit / 2);
    if let Some(dir) = &args.cue_cache_dir {
        config.cache_dir = Some(dir.clone());
    }
    config.seed_dir.clone_from(&args.cue_seed_dir);
    let engine = tokio::task::spawn_blocking(move || Engine::new(config))
        .await
        .context("the CUE engine start-up panicked")?
        .context("starting the CUE engine")?;
    let preparation = engine.preparation();
    if preparation.compiled {
        release_compiler_memory();
    }
    tracing::info!(?preparation, "CUE engine ready");
    Ok(engine)
}

/// Compiling the guest (once per empty cache) leaves a few hundred MiB of freed Cranelift
/// memory in glibc's arenas; hand it back to the system instead of carrying it as RSS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_compiler_memory() {
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas to the
    // system; it touches no memory in use and is thread-safe in glibc.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "released compiler memory");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_compiler_memory() {}

/// Waits to become leader (a standby is ready), runs the controllers while leading, and hands
/// the Lease over on shutdown.
async fn lead(parts: &Parts, engine: Engine) -> anyhow::Result<()> {
    let args = &parts.args;
    let lease = LeaseConfig {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
        ..LeaseConfig::new(
            &args.leader_election_namespace,
            &args.lease_name,
            args.identity(),
        )
    };
    let elector = LeaderElector::new(parts.client.clone(), lease).context("leader election")?;
    parts.health.set_ready(true);
    let mut stop = parts.stop.subscribe();
    tracing::info!(identity = %elector.config().identity, "waiting for leadership");
    let mut leadership = tokio::select! {
        leadership = elector.acquire() => leadership.context("acquiring the Lease")?,
        _ = stop.wait_for(|stop| *stop) => return Ok(()),
    };
    tracing::info!(identity = %elector.config().identity, "leading");
    parts.metrics.set_leader(true);
    parts.health.set_not_ready("waiting for caches");
    let lost = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (lost, stop_all) = (lost.clone(), parts.stop.clone());
        let mut stop = parts.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = leadership.lost() => {
                    lost.store(true, Ordering::SeqCst);
                    tracing::error!("lost the Lease: stopping the controllers");
                    let _ = stop_all.send(true);
                }
                _ = stop.wait_for(|stop| *stop) => {}
            }
            leadership
        })
    };
    let result = run_controllers(parts, engine).await;
    let _ = parts.stop.send(true);
    let leadership = watcher.await.context("the leadership watcher panicked")?;
    parts.metrics.set_leader(false);
    if lost.load(Ordering::SeqCst) {
        anyhow::bail!(
            "lost leadership of the Lease; exiting so that a restart begins as a standby"
        );
    }
    leadership.release().await.context("releasing the Lease")?;
    tracing::info!("released the Lease");
    result
}

/// Module sources with the operator's settings; the cache lives next to the CUE cache.
fn sources(args: &Args) -> pequod_source::Sources {
    let cache_dir = args.source_cache_dir.clone().or_else(|| {
        pequod_cue::default_cache_dir()
            .parent()
            .map(|root| root.join("sources"))
    });
    pequod_source::Sources::new(pequod_source::SourceConfig {
        insecure_registries: args.insecure_registries.clone(),
        cue_registry: args.cue_registry.clone(),
        timeout: args.source_timeout,
        cache_dir,
        cache_max_bytes: args.source_cache_max_bytes,
        cache_ttl: args.source_cache_ttl,
        allow_local_sources: args.allow_local_sources,
    })
}

/// `sources(args)`, reported on /metrics (`pequod_source_cache_*`).
fn observed_sources(args: &Args, metrics: &Metrics) -> Arc<pequod_source::Sources> {
    let sources = Arc::new(sources(args));
    let stats = sources.cache_stats();
    tracing::info!(
        entries = stats.entries,
        bytes = stats.bytes,
        evicted = stats.evictions,
        "module cache indexed"
    );
    let observed = sources.clone();
    metrics.observe_source_cache(move || {
        let stats = observed.cache_stats();
        pequod_metrics::SourceCacheStats {
            hits: stats.hits,
            misses: stats.misses,
            evictions: stats.evictions,
            entries: stats.entries,
            bytes: stats.bytes,
        }
    });
    sources
}

/// Runs both controllers until `stop`; marks the process ready once both caches are synced.
async fn run_controllers(parts: &Parts, engine: Engine) -> anyhow::Result<()> {
    let args = &parts.args;
    let reporter = Reporter {
        controller: "pequod-operator".into(),
        instance: Some(args.identity()),
    };
    let transform_context = Arc::new(pequod_transform_controller::Context {
        config: pequod_transform_controller::Config {
            default_service_account: args.default_service_account.clone(),
        },
        recorder: Some(Recorder::new(parts.client.clone(), reporter)),
        sources: observed_sources(args, &parts.metrics),
        metrics: parts.metrics.clone(),
        ..pequod_transform_controller::Context::new(parts.client.clone(), engine)
    });
    let namespaces = if args.namespaces.is_empty() {
        pequod_transform_controller::Namespaces::All
    } else {
        pequod_transform_controller::Namespaces::Only(args.namespaces.clone())
    };
    let executor_config = pequod_graph_executor::Config {
        scope: args.scope(),
        apply_concurrency: args.apply_concurrency.max(1),
        namespaces: args.namespaces.clone(),
        concurrency: args.graph_concurrency,
        ..pequod_graph_executor::Config::default()
    };
    let (transforms_synced, graphs_synced) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let ready = {
        let (a, b, health) = (
            transforms_synced.clone(),
            graphs_synced.clone(),
            parts.health.clone(),
        );
        tokio::spawn(async move {
            a.notified().await;
            b.notified().await;
            tracing::info!("caches synced: ready");
            health.set_ready(true);
        })
    };
    tracing::info!(namespaces = ?args.namespaces, "starting the controllers");
    let controllers = async {
        tokio::join!(
            pequod_transform_controller::run(
                transform_context,
                namespaces,
                args.transform_concurrency,
                stopped(parts.stop.subscribe()),
                transforms_synced,
            ),
            pequod_graph_executor::run(
                parts.kube_config.clone(),
                executor_config,
                parts.metrics.clone(),
                stopped(parts.stop.subscribe()),
                graphs_synced,
            ),
        )
    };
    // In-flight reconciles finish; a controller that does not stop (its watches retrying an
    // unreachable API server) does not hold the process past the shutdown timeout.
    let overdue = async {
        stopped(parts.stop.subscribe()).await;
        tokio::time::sleep(args.shutdown_timeout).await;
    };
    let result = tokio::select! {
        ((), executor) = controllers => executor.context("the graph executor failed"),
        () = overdue => {
            tracing::warn!(timeout = ?args.shutdown_timeout, "the controllers did not stop in time; exiting");
            Ok(())
        }
    };
    ready.abort();
    parts.health.set_not_ready("shutting down");
    result
}
