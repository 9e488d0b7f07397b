//! The graph executor: runs ResourceGraphs against the cluster.
//!
//! Each reconcile is a named pipeline — validate (DAG and scope checks, before any write) →
//! observe (live objects and their readiness) → plan (pure, in `pequod-graph`) → record
//! (inventory first) → apply (server-side apply, bounded parallelism) → status — with one error
//! type per step ([`Error`]), classified permanent or transient in [`error_policy`].
//!
//! This first slice applies, gates on readiness and records inventory; readiness is re-checked
//! by requeue. Event-driven watches, prune, teardown, drift and impersonation follow.
//!
//! Metrics go to the [`Context`]'s shared [`Metrics`] (controller name [`CONTROLLER`]):
//! reconcile totals and durations in [`run`], error kinds in [`error_policy`]; in [`reconcile`]
//! one DAG pass (`pequod_dag_execution_duration_seconds`), the inventory size per graph
//! (`pequod_managed_resources`, forgotten once teardown finishes), drift found per policy,
//! prunes per kind, and every server-side apply per GVK.
//!
//! Kubernetes Events go on the ResourceGraph, on transitions only (see `events`): nodes
//! applied, failed, drift corrected; objects pruned or left in place; drift reported; the
//! graph stalled or ready. [`run`] publishes them as `pequod-graph-executor`.

mod apply;
mod events;
mod reconcile;
mod remove;
mod scope;
mod teardown;
mod watches;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt as _};
use pequod_api::ResourceGraph;
use pequod_api::lenient::Lenient;

/// ResourceGraphs as the executor watches them: one that cannot be decoded never breaks the
/// list of all the others.
type Watched = Lenient<ResourceGraph>;
use pequod_metrics::Metrics;
use tracing::Instrument as _;

pub use pequod_graph::{Backoff, KindPattern};
pub use reconcile::reconcile;
pub use remove::ANNOTATION_PRUNE;
pub use scope::{Scope, Selector};
pub use teardown::ANNOTATION_ABANDON;

/// The `controller` label of the executor's reconcile metrics.
pub const CONTROLLER: &str = "graph-executor";
/// The reporting controller of the executor's Kubernetes Events.
pub const REPORTER: &str = "pequod-graph-executor";
pub use pequod_graph::scope::{
    ANNOTATION_GRAPH_UID, LABEL_GRAPH, LABEL_GRAPH_NAMESPACE, LABEL_NODE,
};
/// Finalizer on every ResourceGraph the executor has started: teardown runs before it goes.
pub const FINALIZER: &str = "platform.pequod.io/executor";

/// What the executor may do and how hard it may push.
#[derive(Clone, Debug)]
pub struct Config {
    /// The security boundary: where graphs may write.
    pub scope: Scope,
    /// Nodes applied in parallel within one graph.
    pub apply_concurrency: usize,
    /// How soon a graph with progressing nodes is looked at again.
    pub progress_requeue: Duration,
    /// Namespaces whose graphs this executor runs; empty means every namespace.
    pub namespaces: Vec<String>,
    /// Graphs reconciled in parallel (0: no limit).
    pub concurrency: u16,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            scope: Scope::default(),
            apply_concurrency: 4,
            progress_requeue: Duration::from_secs(2),
            namespaces: Vec::new(),
            concurrency: 8,
        }
    }
}

/// Shared by every reconcile.
#[derive(Clone)]
pub struct Context {
    /// The client objects are handled with: the operator's, or one impersonating the graph's
    /// ServiceAccount (see [`Context::acting_for`]).
    pub client: Client,
    /// Always the operator's own client (namespace labels for the scope decision).
    pub operator_client: Client,
    /// Configuration.
    pub config: Config,
    /// Watches of the managed kinds; `None` when reconciles are driven by hand (tests).
    pub watches: Option<Arc<watches::Watches>>,
    /// Retry delays of failing graphs.
    pub backoff: Arc<Backoff>,
    /// The operator's client configuration, from which impersonating clients are made.
    pub kube_config: Option<kube::Config>,
    /// Where reconciles, applies, prunes and drift are counted; shared with impersonating
    /// contexts.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events on graphs with the operator's own client (kept when
    /// impersonating); `None` publishes nothing.
    pub recorder: Option<Recorder>,
}

impl Context {
    /// A context without watches: reconciles run only when called.
    pub fn new(client: Client, config: Config) -> Self {
        Self {
            operator_client: client.clone(),
            client,
            config,
            watches: None,
            backoff: Arc::default(),
            kube_config: None,
            metrics: Arc::default(),
            recorder: None,
        }
    }

    /// The same context publishing Kubernetes Events through `recorder`.
    #[must_use]
    pub fn with_recorder(self, recorder: Recorder) -> Self {
        Self {
            recorder: Some(recorder),
            ..self
        }
    }

    /// The same context recording into `metrics` (the process's shared registry) instead of
    /// a registry of its own.
    #[must_use]
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// A context that can also impersonate ServiceAccounts (`serviceAccountName`).
    pub fn from_config(kube_config: kube::Config, config: Config) -> Result<Self, kube::Error> {
        let client = Client::try_from(kube_config.clone())?;
        Ok(Self {
            kube_config: Some(kube_config),
            ..Self::new(client, config)
        })
    }

    /// The context a graph's objects are handled in: the operator's own, or one whose client
    /// impersonates `system:serviceaccount:<namespace>:<name>` so RBAC decides.
    pub fn acting_for(
        &self,
        namespace: &str,
        service_account: Option<&str>,
    ) -> Result<Self, String> {
        let Some(account) = service_account else {
            return Ok(self.clone());
        };
        let Some(base) = &self.kube_config else {
            return Err("serviceAccountName is set but the executor has no client configuration to impersonate with".into());
        };
        let mut config = base.clone();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{account}"));
        let client = Client::try_from(config)
            .map_err(|e| format!("cannot build an impersonating client: {e}"))?;
        // Everything else, the event recorder (the operator's client) included, is shared.
        Ok(Self {
            client,
            ..self.clone()
        })
    }

    /// Kinds watched for readiness events.
    pub fn watched_kinds(&self) -> Vec<String> {
        self.watches
            .as_ref()
            .map(|w| w.watched())
            .unwrap_or_default()
    }
}

/// Errors of one reconcile, by pipeline step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading live objects or discovery failed.
    #[error("observing the cluster: {0}")]
    Observe(#[source] kube::Error),
    /// Writing the inventory failed.
    #[error("recording the inventory: {0}")]
    Record(#[source] kube::Error),
    /// Writing the graph's status failed.
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    /// The reconcile panicked (a bug); retried with backoff, the process keeps running.
    #[error("reconcile panicked: {0}")]
    Panicked(String),
    /// The object has no namespace or name (never from the API server).
    #[error("malformed ResourceGraph: {0}")]
    Malformed(String),
}

impl Error {
    /// Permanent errors repeat until someone changes something; the rest are worth retrying.
    /// The API server's 400/403/404/409/422 are permanent; 429, 5xx, timeouts and network
    /// failures are transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Observe(e) | Error::Record(e) | Error::Status(e) => {
                matches!(e, kube::Error::Api(s) if pequod_api::reason::is_permanent_status(s.code))
            }
            Error::Malformed(_) => true,
            Error::Panicked(_) => false,
        }
    }
}

fn key_of(graph: &ResourceGraph) -> (String, String) {
    (graph.namespace().unwrap_or_default(), graph.name_any())
}

/// Retries transient errors with exponential backoff and jitter (1 s to 5 min); permanent ones
/// slowly (30 s to 30 min), the graph already marked Stalled where that applies.
#[allow(clippy::needless_pass_by_value)] // the signature kube-runtime calls
pub fn error_policy(graph: Arc<Watched>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(graph = %graph.name_any(), %error, permanent = error.is_permanent(), "reconcile failed");
    ctx.metrics
        .reconcile_error(CONTROLLER, error.is_permanent());
    if error.is_permanent() {
        // Slowly: the fix (RBAC, a CRD) may come where no watch sees it.
        return Action::requeue(ctx.backoff.next_permanent_delay(key_of(&graph.0)));
    }
    Action::requeue(ctx.backoff.next_delay(key_of(&graph.0)))
}

/// Runs the executor, recording into `metrics`, until `shutdown` completes: then no new
/// reconcile starts, those in flight finish, and `run` returns. Dropping the future instead is
/// safe too (every write is recorded before it is made, so an interrupted pass is picked up by
/// the next one; the watch tasks are aborted with it). `synced` is notified once the graph
/// cache holds its first full list. Events on graphs are published as [`REPORTER`] with the
/// operator's own client (RBAC: `create` and `patch` on `events.events.k8s.io`).
pub async fn run(
    kube_config: kube::Config,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    synced: Arc<tokio::sync::Notify>,
) -> Result<(), kube::Error> {
    let mut context = Context::from_config(kube_config, config)?.with_metrics(metrics);
    let client = context.client.clone();
    let reporter = Reporter {
        controller: REPORTER.into(),
        instance: None,
    };
    context = context.with_recorder(Recorder::new(client.clone(), reporter));
    let graphs = match context.config.namespaces.as_slice() {
        [only] => Api::<Watched>::namespaced(client.clone(), only),
        _ => Api::<Watched>::all(client.clone()),
    };
    let (triggers, triggered) = futures::channel::mpsc::unbounded();
    // A graph writes only into its own namespace and the allowed extra ones, unless it may
    // create namespaces: then watches must see every namespace.
    let watched = (!context.config.namespaces.is_empty()
        && !context.config.scope.any_cluster_scope())
    .then(|| {
        let mut namespaces = context.config.namespaces.clone();
        namespaces.extend(context.config.scope.extra_namespaces.iter().cloned());
        namespaces.sort();
        namespaces.dedup();
        namespaces
    });
    context.watches = Some(Arc::new(watches::Watches::new(client, triggers, watched)));
    let context = Arc::new(context);
    let controller = Controller::new(graphs, watcher::Config::default()).with_config(
        kube::runtime::controller::Config::default().concurrency(context.config.concurrency),
    );
    let store = controller.store();
    tokio::spawn(async move {
        // Re-polled: a store's readiness wakes only its last waiter (the controller's runner).
        loop {
            let wait = store.wait_until_ready();
            match tokio::time::timeout(std::time::Duration::from_millis(250), wait).await {
                Ok(Ok(())) => {
                    tracing::info!("ResourceGraphs cache synced");
                    synced.notify_one();
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
    });
    controller
        .reconcile_on(triggered)
        .graceful_shutdown_on(shutdown)
        .run(
            |graph, ctx| {
                let span = tracing::info_span!(
                    "reconcile",
                    graph = %format!("{}/{}", graph.namespace().unwrap_or_default(), graph.name_any())
                );
                async move {
                    let namespaces = &ctx.config.namespaces;
                    let namespace = graph.namespace().unwrap_or_default();
                    if !namespaces.is_empty() && !namespaces.contains(&namespace) {
                        return Ok(Action::await_change());
                    }
                    let key = key_of(&graph.0);
                    let started = Instant::now();
                    // A bug met by one graph must not take the others down with the process.
                    let graph = Arc::new(graph.0.clone());
                    let result = std::panic::AssertUnwindSafe(reconcile(graph, ctx.clone()))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| {
                            Err(Error::Panicked(pequod_api::panic_message(panic.as_ref())))
                        });
                    ctx.metrics
                        .reconciled(CONTROLLER, &result, started.elapsed());
                    if result.is_ok() {
                        ctx.backoff.reset(&key);
                    }
                    result
                }
                .instrument(span)
            },
            error_policy,
            context,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile error");
            }
        })
        .await;
    Ok(())
}
