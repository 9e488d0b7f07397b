//! The transform-controller: Transform → render → ResourceGraph.
//!
//! Each reconcile ([`reconcile`]) is a named pipeline — fetch (the module, [`pequod_source`]) →
//! merge input ([`values`]: `spec.input`, then `valuesFrom` in order, then the Transform's
//! name/namespace) → render (the CUE engine) → check violations → write the ResourceGraph →
//! status — with one error type per step. A failed step never touches the last good
//! ResourceGraph: what was running keeps running. Nothing is rendered or written when nothing
//! the render depends on changed.
//!
//! Status ([`status`](crate::status)) aggregates the ResourceGraph the executor runs
//! (Ready/Reconciling/Stalled, node counts); [`events`](crate::events) announce each step's
//! transitions. [`run`] drives reconciles from watches of Transforms, their graphs and the
//! ConfigMaps/Secrets they read.

mod controller;
mod events;
mod finalizer;
mod outcome;
mod reconcile;
mod status;
pub mod values;

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::Recorder;
use pequod_cue::Engine;
use pequod_metrics::Metrics;

pub use controller::{Namespaces, run};
pub use reconcile::{DEFAULT_INTERVAL, merged_input, next_check, reconcile};
pub use status::HISTORY_LIMIT;

/// Finalizer on every Transform the controller has started: its graph is torn down first.
pub const FINALIZER: &str = "platform.pequod.io/transform";

/// The metrics label of this controller.
pub const CONTROLLER: &str = "transform-controller";

/// Operator-wide settings of the transform-controller.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// ServiceAccount the executor impersonates for Transforms that name none.
    pub default_service_account: Option<String>,
}

/// Shared by every reconcile.
pub struct Context {
    /// The operator's client.
    pub client: Client,
    /// The CUE engine (one per process).
    pub engine: Engine,
    /// Module sources with their settings and cache (one per process).
    pub sources: Arc<pequod_source::Sources>,
    /// Settings.
    pub config: Config,
    /// Publishes Kubernetes Events; `None` publishes nothing.
    pub recorder: Option<Recorder>,
    /// Where the `pequod_*` metrics are recorded.
    pub metrics: Arc<Metrics>,
    /// Retry delays of failing Transforms.
    pub backoff: pequod_graph::Backoff,
}

impl Context {
    /// A context with default settings, no events and its own metrics.
    pub fn new(client: Client, engine: Engine) -> Self {
        Self {
            client,
            engine,
            sources: Arc::default(),
            config: Config::default(),
            recorder: None,
            metrics: Arc::default(),
            backoff: pequod_graph::Backoff::default(),
        }
    }
}

/// Errors that abort a reconcile (render failures are not errors but status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the ResourceGraph failed.
    #[error("reading the ResourceGraph: {0}")]
    ReadGraph(#[source] kube::Error),
    /// Writing (or deleting) the ResourceGraph failed.
    #[error("writing the ResourceGraph: {0}")]
    WriteGraph(#[source] kube::Error),
    /// Writing the Transform's status failed.
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("updating the finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    /// A step failed in a way a retry may fix (status says which).
    #[error("{0}")]
    Transient(String),
    /// The reconcile panicked (a bug); retried with backoff, the process keeps running.
    #[error("reconcile panicked: {0}")]
    Panicked(String),
    /// The Transform lacks a namespace or UID (never from the API server).
    #[error("malformed Transform: {0}")]
    Malformed(String),
}

impl Error {
    /// Permanent errors repeat until someone changes something; the rest are worth retrying.
    /// The API server's 400/403/404/409/422 are permanent; 429, 5xx, timeouts and network
    /// failures are transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::ReadGraph(e) | Error::WriteGraph(e) | Error::Status(e) | Error::Finalizer(e) => {
                matches!(e, kube::Error::Api(s) if pequod_api::reason::is_permanent_status(s.code))
            }
            Error::Malformed(_) => true,
            Error::Transient(_) | Error::Panicked(_) => false,
        }
    }
}
