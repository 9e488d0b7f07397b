//! The controller loop: reconciles Transforms on changes to themselves, to the ResourceGraphs
//! they own (so status follows the executor) and to the ConfigMaps/Secrets they read (so a
//! rotated Secret re-renders).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use pequod_api::lenient::Lenient;
use pequod_api::{ResourceGraph, SourceType, Transform, ValuesFromKind};

/// Transforms as the controller watches them: one that cannot be decoded (nested too deep)
/// never breaks the list of all the others; it is reported on its own (`InvalidSpec`).
type Watched = Lenient<Transform>;
use tracing::Instrument as _;

use crate::{CONTROLLER, Context, Error, reconcile};

/// The namespaces whose Transforms are reconciled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace.
    #[default]
    All,
    /// Only these.
    Only(Vec<String>),
}

impl Namespaces {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Namespaces::Only(list) if list.len() == 1 => Api::namespaced(client.clone(), &list[0]),
            _ => Api::all(client.clone()),
        }
    }

    fn contains(&self, namespace: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// Which kind of referenced object changed.
#[derive(Clone, Copy)]
enum Referenced {
    ConfigMap,
    Secret,
}

/// The Transforms in the cache that read the ConfigMap/Secret `object`.
fn readers<K: Resource>(
    store: &Store<Watched>,
    kind: Referenced,
    object: &PartialObjectMeta<K>,
) -> Vec<ObjectRef<Watched>> {
    let (Some(namespace), name) = (object.namespace(), object.name_any()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|t| t.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|t| {
            let in_values = t.0.spec.values_from.iter().any(|v| {
                v.name == name
                    && matches!(
                        (v.kind, kind),
                        (ValuesFromKind::ConfigMap, Referenced::ConfigMap)
                            | (ValuesFromKind::Secret, Referenced::Secret)
                    )
            });
            let is_module = matches!(kind, Referenced::ConfigMap)
                && t.0.spec.cue_ref.source_type == SourceType::Configmap
                && t.0.spec.cue_ref.reference == name;
            in_values || is_module
        })
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

fn key_of(transform: &Transform) -> (String, String) {
    (
        transform.namespace().unwrap_or_default(),
        transform.name_any(),
    )
}

/// Retries transient errors with exponential backoff and jitter (1 s to 5 min); permanent ones
/// slowly (30 s to 30 min), status already saying what is wrong.
#[allow(clippy::needless_pass_by_value)] // the signature kube-runtime calls
fn error_policy(transform: Arc<Watched>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(transform = %transform.name_any(), %error, permanent = error.is_permanent(), "reconcile failed");
    ctx.metrics
        .reconcile_error(CONTROLLER, error.is_permanent());
    if error.is_permanent() {
        // Slowly: the fix (RBAC, a quota) may come where no watch sees it.
        return Action::requeue(ctx.backoff.next_permanent_delay(key_of(&transform.0)));
    }
    Action::requeue(ctx.backoff.next_delay(key_of(&transform.0)))
}

/// Runs the transform-controller until `shutdown` resolves (in-flight reconciles finish);
/// `synced` is notified once the Transform cache holds its first full list.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Namespaces,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    synced: Arc<tokio::sync::Notify>,
) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        namespaces.api::<Watched>(&client),
        watcher::Config::default().any_semantic(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
    let store = controller.store();
    let initial = store.clone();
    tokio::spawn(async move {
        // Re-polled: a store's readiness wakes only its last waiter (the controller's runner).
        loop {
            let wait = initial.wait_until_ready();
            match tokio::time::timeout(std::time::Duration::from_millis(250), wait).await {
                Ok(Ok(())) => {
                    tracing::info!("Transforms cache synced");
                    synced.notify_one();
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
    });
    let (for_configmaps, for_secrets) = (store.clone(), store);
    let configmaps = watcher(
        namespaces.api::<PartialObjectMeta<ConfigMap>>(&client),
        watcher::Config::default().any_semantic(),
    )
    .touched_objects();
    let secrets = watcher(
        namespaces.api::<PartialObjectMeta<Secret>>(&client),
        watcher::Config::default().any_semantic(),
    )
    .touched_objects();
    let allowed = Arc::new(namespaces.clone());
    controller
        .owns(namespaces.api::<Lenient<ResourceGraph>>(&client), watcher::Config::default().any_semantic())
        .watches_stream(configmaps, move |cm| readers(&for_configmaps, Referenced::ConfigMap, &cm))
        .watches_stream(secrets, move |s| readers(&for_secrets, Referenced::Secret, &s))
        .graceful_shutdown_on(shutdown)
        .run(
            move |transform, ctx| {
                let allowed = allowed.clone();
                let span = tracing::info_span!(
                    "reconcile",
                    controller = CONTROLLER,
                    transform = %format!("{}/{}", transform.namespace().unwrap_or_default(), transform.name_any())
                );
                async move {
                    if !allowed.contains(&transform.namespace().unwrap_or_default()) {
                        return Ok(Action::await_change());
                    }
                    let key = key_of(&transform.0);
                    let started = Instant::now();
                    // A bug met by one object must not take the others down with the process.
                    let result = std::panic::AssertUnwindSafe(reconcile(Arc::new(transform.0.clone()), ctx.clone()))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| {
                            Err(Error::Panicked(pequod_api::panic_message(panic.as_ref())))
                        });
                    ctx.metrics.reconciled(CONTROLLER, &result, started.elapsed());
                    if result.is_ok() {
                        ctx.backoff.reset(&key);
                    }
                    result
                }
                .instrument(span)
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "transform reconcile error");
            }
        })
        .await;
}
