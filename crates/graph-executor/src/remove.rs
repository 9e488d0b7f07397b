//! Removing objects recorded in the inventory, for prune and teardown alike: one wave at a
//! time, highest dependency level first, each wave gone before the next; only objects that
//! carry this graph's UID; protected and `Orphan` objects released (our marks stripped), not
//! deleted; a failed delete keeps its entry so it is retried.

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use pequod_api::{DeletionPolicy, InventoryEntry};

use crate::apply::{self, Resolver};
use crate::{ANNOTATION_GRAPH_UID, LABEL_GRAPH, LABEL_GRAPH_NAMESPACE, LABEL_NODE};

/// Objects annotated with this (value `disabled`) are never pruned.
pub const ANNOTATION_PRUNE: &str = "platform.pequod.io/prune";

/// What one removal step did.
#[derive(Debug, Default)]
pub struct Removal {
    /// Entries still in the inventory (waiting to disappear, or failed to delete).
    pub remaining: Vec<InventoryEntry>,
    /// Human-readable failures, one per entry.
    pub errors: Vec<String>,
    /// Kinds of the entries that left the inventory in this step (deleted, released, already
    /// gone or no longer ours), one per entry.
    pub removed: Vec<String>,
}

/// Works on the highest wave of `entries`; entries of lower waves are kept untouched until it
/// is gone. Returns what remains.
pub async fn remove_next_wave(
    client: &Client,
    resolver: &mut Resolver,
    entries: Vec<InventoryEntry>,
    graph_uid: &str,
) -> Removal {
    let Some(top) = entries.iter().map(|e| e.level).max() else {
        return Removal::default();
    };
    let mut out = Removal::default();
    for entry in entries {
        if entry.level != top {
            out.remaining.push(entry);
            continue;
        }
        match remove_one(client, resolver, &entry, graph_uid).await {
            Ok(Gone::Yes) => out.removed.push(entry.kind),
            Ok(Gone::Terminating) => out.remaining.push(entry),
            Err(message) => {
                out.errors
                    .push(format!("{} {}: {message}", entry.kind, entry.name));
                out.remaining.push(entry);
            }
        }
    }
    out
}

enum Gone {
    /// Deleted, released, already absent, or not ours: leaves the inventory.
    Yes,
    /// Deletion requested; the object still exists (finalizers, graceful deletion).
    Terminating,
}

async fn remove_one(
    client: &Client,
    resolver: &mut Resolver,
    entry: &InventoryEntry,
    graph_uid: &str,
) -> Result<Gone, String> {
    let served = resolver
        .resolve(&entry.api_version, &entry.kind)
        .await
        .map_err(|e| e.to_string())?;
    // A kind no longer served has no objects left.
    let Some(served) = served else {
        return Ok(Gone::Yes);
    };
    let api = apply::api_for(client, &served, entry.namespace.as_deref());
    let Some(live) = api.get_opt(&entry.name).await.map_err(|e| e.to_string())? else {
        return Ok(Gone::Yes);
    };
    if !apply::owned_by(&live, graph_uid) {
        // Someone else's object now (re-created or adopted elsewhere): never delete it.
        return Ok(Gone::Yes);
    }
    if live.metadata.deletion_timestamp.is_some() {
        return Ok(Gone::Terminating);
    }
    let protected = live
        .annotations()
        .get(ANNOTATION_PRUNE)
        .is_some_and(|v| v == "disabled");
    if protected || entry.deletion_policy == DeletionPolicy::Orphan {
        let release = serde_json::json!({"metadata": {
            "labels": {LABEL_GRAPH: null, LABEL_GRAPH_NAMESPACE: null, LABEL_NODE: null},
            "annotations": {ANNOTATION_GRAPH_UID: null},
        }});
        api.patch(
            &entry.name,
            &PatchParams::default(),
            &Patch::Merge(&release),
        )
        .await
        .map_err(|e| e.to_string())?;
        return Ok(Gone::Yes);
    }
    match api.delete(&entry.name, &DeleteParams::background()).await {
        Ok(either) => Ok(if either.is_right() {
            Gone::Yes
        } else {
            Gone::Terminating
        }),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Gone::Yes),
        Err(e) => Err(e.to_string()),
    }
}
