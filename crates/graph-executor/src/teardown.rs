//! The finalizer and teardown: a deleted graph removes its stored inventory wave by wave
//! (never re-rendering), then releases its finalizer. A teardown always ends or says why: a
//! delete the API server forbids stalls the graph with reason `DeleteForbidden`, naming the
//! object and the identity, and an admin may abandon what is left with
//! [`ANNOTATION_ABANDON`].

use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use pequod_api::Reason;
use pequod_api::conditions::{self, Summary};
use pequod_api::{GraphPhase, ResourceGraph, ResourceGraphStatus};

use crate::apply::Resolver;
use crate::reconcile::{Graphs, now, write_status};
use crate::{Context, Error, FINALIZER, events, remove};

/// Annotation on a ResourceGraph (value `true`) that ends its teardown at once: the objects
/// still in its inventory are left in the cluster as they are and the finalizer goes. For an
/// admin whose graph cannot delete what it made (its ServiceAccount lost the right); tenants
/// cannot write ResourceGraphs.
pub const ANNOTATION_ABANDON: &str = "platform.pequod.io/abandon";

/// How long a teardown the API server forbids waits before it tries again (the right may be
/// granted meanwhile; the graph says `DeleteForbidden` until then).
const FORBIDDEN_RETRY: std::time::Duration = std::time::Duration::from_secs(300);

/// Adds the finalizer before anything is recorded or applied.
pub async fn ensure_finalizer(graphs: &Api<Graphs>, graph: &ResourceGraph) -> Result<(), Error> {
    if graph.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = graph.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    set_finalizers(graphs, graph, finalizers).await
}

/// Sets the finalizer list, conditional on the version read (a concurrent change retries).
async fn set_finalizers(
    graphs: &Api<Graphs>,
    graph: &ResourceGraph,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": graph.resource_version()}});
    graphs
        .patch(
            &graph.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Record)?;
    Ok(())
}

/// Whether an admin abandoned this graph's teardown ([`ANNOTATION_ABANDON`]).
pub fn abandoned(graph: &ResourceGraph) -> bool {
    graph
        .annotations()
        .get(ANNOTATION_ABANDON)
        .is_some_and(|v| v == "true")
}

/// Who deletes this graph's objects, for messages.
fn identity(graph: &ResourceGraph) -> String {
    match &graph.spec.service_account_name {
        Some(account) => format!(
            "system:serviceaccount:{}:{account}",
            graph.namespace().unwrap_or_default()
        ),
        None => "the operator's own ServiceAccount".into(),
    }
}

/// Teardown: remove the stored inventory wave by wave (never re-rendering), then release the
/// finalizer.
pub async fn teardown(
    graph: &ResourceGraph,
    ctx: &Context,
    graphs: &Api<Graphs>,
    uid: &str,
    old_status: ResourceGraphStatus,
) -> Result<Action, Error> {
    let (namespace, name) = (graph.namespace().unwrap_or_default(), graph.name_any());
    if !graph.finalizers().iter().any(|f| f == FINALIZER) {
        ctx.metrics.forget_graph(&namespace, &name);
        return Ok(Action::await_change());
    }
    if abandoned(graph) {
        tracing::warn!(
            graph = %format!("{namespace}/{name}"),
            left = old_status.inventory.len(),
            "teardown abandoned by annotation: objects left in the cluster"
        );
        let event = events::abandoned(old_status.inventory.len());
        events::publish(ctx.recorder.as_ref(), graph, &[event]).await;
        return release(graph, ctx, graphs).await;
    }
    let mut resolver = Resolver::new(ctx.client.clone());
    let removal = remove::remove_next_wave(
        &ctx.client,
        &mut resolver,
        old_status.inventory.clone(),
        uid,
    )
    .await;
    if removal.remaining.is_empty() {
        return release(graph, ctx, graphs).await;
    }
    ctx.metrics
        .set_managed(&namespace, &name, removal.remaining.len());
    let mut status = ResourceGraphStatus {
        inventory: removal.remaining,
        phase: Some(GraphPhase::Deleting),
        ..old_status.clone()
    };
    let generation = graph.metadata.generation;
    let (summary_message, wait);
    let summary = if removal.forbidden.is_empty() {
        summary_message = if removal.errors.is_empty() {
            format!("deleting: {} objects left", status.inventory.len())
        } else {
            format!("deleting, will retry: {}", removal.errors.join("; "))
        };
        wait = if removal.errors.is_empty() {
            ctx.config.progress_requeue
        } else {
            std::time::Duration::from_secs(10)
        };
        Summary::Reconciling {
            reason: Reason::Deleting.as_str(),
            message: &summary_message,
        }
    } else {
        summary_message = format!(
            "{} may not delete: {}; grant it delete on those objects, or have an admin run `kubectl annotate resourcegraph -n {namespace} {name} {ANNOTATION_ABANDON}=true` to leave the remaining {} objects in place",
            identity(graph),
            removal.forbidden.join("; "),
            status.inventory.len()
        );
        wait = FORBIDDEN_RETRY;
        Summary::Stalled {
            reason: Reason::DeleteForbidden.as_str(),
            message: &summary_message,
        }
    };
    conditions::summarize(&mut status.conditions, summary, generation, &now());
    write_status(graphs, &name, &old_status, &status).await?;
    let events = events::transitions(graph, &old_status, &status, &events::Facts::default());
    events::publish(ctx.recorder.as_ref(), graph, &events).await;
    Ok(Action::requeue(wait))
}

/// Teardown is over: watches and metrics forget the graph and the finalizer goes.
async fn release(
    graph: &ResourceGraph,
    ctx: &Context,
    graphs: &Api<Graphs>,
) -> Result<Action, Error> {
    let (namespace, name) = (graph.namespace().unwrap_or_default(), graph.name_any());
    if let Some(watches) = &ctx.watches {
        watches.set_kinds((&namespace, &name), &[]);
    }
    let finalizers = graph
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(graphs, graph, finalizers).await?;
    ctx.metrics.forget_graph(&namespace, &name);
    Ok(Action::await_change())
}
