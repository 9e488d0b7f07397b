//! The Transform's finalizer, teardown and suspend: a deleted Transform deletes its
//! ResourceGraph and waits until the executor has torn it down; a suspended one marks its graph
//! suspended so that nothing changes its objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use pequod_api::conditions::{self, Summary, types};
use pequod_api::lenient::Lenient;
use pequod_api::{Reason, ResourceGraph, ResourceGraphSpec, Transform};
use serde_json::json;

use crate::status::Marks;
use crate::{Context, Error, FINALIZER};

/// While the graph is torn down, the Transform says how it goes: `Reconciling` (`Deleting`)
/// with the graph's message, or `Stalled` with the graph's reason (`DeleteForbidden`, naming
/// the objects and the identity), so that `kubectl get tf` shows why a delete does not end.
async fn show_teardown(
    transform: &Transform,
    ctx: &Context,
    namespace: &str,
    graph: &ResourceGraph,
) -> Result<(), Error> {
    let graph_status = graph.status.clone().unwrap_or_default();
    let find = |t: &str| {
        conditions::find(&graph_status.conditions, t)
            .filter(|c| c.status == "True")
            .cloned()
    };
    let old = transform.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let marks = Marks {
        generation: transform.metadata.generation,
        time: Time(jiff::Timestamp::now()),
    };
    if let Some(stalled) = find(types::STALLED) {
        let summary = Summary::Stalled {
            reason: &stalled.reason,
            message: &stalled.message,
        };
        marks.summarize(&mut status, summary);
    } else {
        let message = find(types::RECONCILING)
            .map_or_else(|| "deleting the ResourceGraph".to_owned(), |c| c.message);
        let summary = Summary::Reconciling {
            reason: Reason::Deleting.as_str(),
            message: &message,
        };
        marks.summarize(&mut status, summary);
    }
    if status == old {
        return Ok(());
    }
    let patch = json!({"status": status});
    Api::<Lenient<Transform>>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &transform.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Status)?;
    Ok(())
}

/// Marks the Transform's graph suspended (once), so that the executor stops changing its
/// objects too; resuming re-renders, and the graph written then is no longer suspended.
pub(crate) async fn suspend_graph(
    transform: &Transform,
    ctx: &Context,
    namespace: &str,
) -> Result<(), Error> {
    let graphs = Api::<ResourceGraph>::namespaced(ctx.client.clone(), namespace);
    let Some(current) = graphs
        .get_opt(&transform.name_any())
        .await
        .map_err(Error::ReadGraph)?
    else {
        return Ok(());
    };
    if current.spec.suspend || current.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    // The same apply as a render writes, with the flag: the other fields keep their owner.
    let mut graph = ResourceGraph::new(
        &current.name_any(),
        ResourceGraphSpec {
            suspend: true,
            ..current.spec.clone()
        },
    );
    graph.metadata.owner_references = current.metadata.owner_references.clone();
    graphs
        .patch(
            &current.name_any(),
            &PatchParams::apply(pequod_api::FIELD_MANAGER).force(),
            &Patch::Apply(&graph),
        )
        .await
        .map_err(Error::WriteGraph)?;
    Ok(())
}

/// Adds the Transform's finalizer before anything is written, so that a delete always tears
/// the graph down first (even without a garbage collector).
pub(crate) async fn ensure_finalizer(
    transform: &Transform,
    ctx: &Context,
    namespace: &str,
) -> Result<(), Error> {
    if transform.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = transform.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    // The resourceVersion makes this a compare-and-swap: no other finalizer is lost.
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": transform.resource_version()}});
    Api::<Lenient<Transform>>::namespaced(ctx.client.clone(), namespace)
        .patch(
            &transform.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Finalizer)?;
    Ok(())
}

/// Deletes the ResourceGraph and waits (via the graph watch) until the executor has torn it
/// down, then lets the Transform go.
pub(crate) async fn teardown(
    transform: &Transform,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    if !transform.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = transform.name_any();
    let graphs = Api::<ResourceGraph>::namespaced(ctx.client.clone(), namespace);
    if let Some(graph) = graphs.get_opt(&name).await.map_err(Error::ReadGraph)? {
        if graph.metadata.deletion_timestamp.is_none() {
            graphs
                .delete(&name, &DeleteParams::background())
                .await
                .map_err(Error::WriteGraph)?;
        } else {
            show_teardown(transform, ctx, namespace, &graph).await?;
        }
        // The graph's own deletion event brings us back; the requeue is a safety net.
        return Ok(Action::requeue(std::time::Duration::from_secs(30)));
    }
    let finalizers: Vec<String> = transform
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": transform.resource_version()}});
    Api::<Lenient<Transform>>::namespaced(ctx.client.clone(), namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::Finalizer)?;
    Ok(Action::await_change())
}
