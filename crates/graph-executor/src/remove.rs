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
    /// Those of `errors` the API server refused with 403 Forbidden: retrying alone will not
    /// help, someone must grant the right (or abandon the objects).
    pub forbidden: Vec<String>,
    /// Entries that left the inventory in this step, each with what happened to its object.
    pub removed: Vec<Removed>,
}

/// An inventory entry that left the inventory, and what happened to its object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The entry as it was recorded.
    pub entry: InventoryEntry,
    /// Deleted, released or left alone.
    pub outcome: Outcome,
}

/// What happened to the object of an entry that left the inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Deleted now, or already gone (a graceful deletion finished, its kind is no longer
    /// served).
    Deleted,
    /// Left in place and released (our marks stripped): annotated `prune: disabled`.
    Protected,
    /// Left in place and released (our marks stripped): `deletionPolicy: Orphan`.
    Orphaned,
    /// Someone else's object now (re-created or adopted elsewhere): left alone.
    NotOurs,
    /// Recorded before an apply that never created it (the apply failed) and not readable:
    /// dropped from the inventory, nothing to delete.
    NeverCreated,
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
            Ok(Gone::Yes(outcome)) => out.removed.push(Removed { entry, outcome }),
            Ok(Gone::Terminating) => out.remaining.push(entry),
            Err(failure) => {
                let text = format!("{} {}: {}", entry.kind, entry.name, failure.message);
                if failure.forbidden {
                    out.forbidden.push(text.clone());
                }
                out.errors.push(text);
                out.remaining.push(entry);
            }
        }
    }
    out
}

enum Gone {
    /// Deleted, released, already absent, or not ours: leaves the inventory.
    Yes(Outcome),
    /// Deletion requested; the object still exists (finalizers, graceful deletion).
    Terminating,
}

/// Why one entry could not be removed.
struct Failure {
    message: String,
    forbidden: bool,
}

impl From<kube::Error> for Failure {
    fn from(error: kube::Error) -> Self {
        let forbidden = matches!(&error, kube::Error::Api(status) if status.code == 403);
        let message = match error {
            kube::Error::Api(status) => format!(
                "{} ({})",
                pequod_api::redact::api_values(&status.message),
                status.code
            ),
            other => other.to_string(),
        };
        Self { message, forbidden }
    }
}

async fn remove_one(
    client: &Client,
    resolver: &mut Resolver,
    entry: &InventoryEntry,
    graph_uid: &str,
) -> Result<Gone, Failure> {
    let served = resolver
        .resolve(&entry.api_version, &entry.kind)
        .await
        .map_err(Failure::from)?;
    // A kind no longer served has no objects left.
    let Some(served) = served else {
        return Ok(Gone::Yes(Outcome::Deleted));
    };
    let api = apply::api_for(client, &served, entry.namespace.as_deref());
    let live = match api.get_opt(&entry.name).await {
        Ok(live) => live,
        // Recorded, but no apply ever created it (no UID): there is nothing of ours to read.
        Err(kube::Error::Api(status)) if status.code == 403 && entry.uid.is_none() => {
            return Ok(Gone::Yes(Outcome::NeverCreated));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(live) = live else {
        return Ok(Gone::Yes(Outcome::Deleted));
    };
    if !apply::owned_by(&live, graph_uid) {
        // Someone else's object now (re-created or adopted elsewhere): never delete it.
        return Ok(Gone::Yes(Outcome::NotOurs));
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
        .await?;
        return Ok(Gone::Yes(if protected {
            Outcome::Protected
        } else {
            Outcome::Orphaned
        }));
    }
    match api.delete(&entry.name, &DeleteParams::background()).await {
        Ok(either) => Ok(if either.is_right() {
            Gone::Yes(Outcome::Deleted)
        } else {
            Gone::Terminating
        }),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Gone::Yes(Outcome::Deleted)),
        Err(e) => Err(e.into()),
    }
}
