//! Kubernetes Events on a ResourceGraph, emitted on transitions only: derived from the status
//! before and after a pass, plus what the pass removed and corrected (which its status does
//! not show). A steady-state pass publishes nothing; a node that keeps failing the same way
//! says so once; readiness is announced for the whole graph, not per node.
//!
//! Each event about one object names it in its note and as the event's `related` object, so
//! events about different objects stay apart (the recorder folds events with the same reason,
//! regarding and related object into one series).
//!
//! Notes carry kinds, names, field paths and the API server's error messages, never object
//! data: no Secret value reaches an event.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource as _;
use kube::runtime::events::{Event, EventType, Recorder};
use pequod_api::conditions::{find, types};
use pequod_api::{NodePhase, NodeStatus, ObjectRef, ResourceGraph, ResourceGraphStatus};
use serde_json::Value;

use crate::ANNOTATION_PRUNE;
use crate::remove::{Outcome, Removed};

/// What a pass did that the status after it does not show.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// Inventory entries prune removed, with what happened to their objects.
    pub removed: Vec<Removed>,
    /// Nodes applied again to undo drift (`driftPolicy: Correct`): node id and the fields
    /// taken back.
    pub corrected: Vec<(String, Vec<String>)>,
}

/// The events that describe how `old` became `new` in a pass over `graph`.
pub(crate) fn transitions(
    graph: &ResourceGraph,
    old: &ResourceGraphStatus,
    new: &ResourceGraphStatus,
    facts: &Facts,
) -> Vec<Event> {
    let mut events = Vec::new();
    let condition = |status: &ResourceGraphStatus, t: &str| {
        find(&status.conditions, t)
            .filter(|c| c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let Some((reason, message)) = condition(new, types::STALLED)
        && condition(old, types::STALLED).as_ref() != Some(&(reason.clone(), message.clone()))
    {
        events.push(event(
            EventType::Warning,
            &reason,
            "Reconcile",
            &message,
            None,
        ));
    }
    let objects = Objects { graph, new };
    nodes(&objects, old, new, facts, &mut events);
    for removed in &facts.removed {
        events.push(pruned(&objects, removed));
    }
    if let Some((_, message)) = condition(new, types::DRIFTED)
        && condition(old, types::DRIFTED).is_none_or(|(_, was)| was != message)
    {
        events.push(event(
            EventType::Warning,
            "Drifted",
            "Drift",
            &message,
            None,
        ));
    }
    let regenerated = old.observed_generation != new.observed_generation;
    if condition(new, types::READY).is_some()
        && (condition(old, types::READY).is_none() || regenerated)
    {
        let note = format!(
            "all {} nodes ready, revision {}",
            graph.spec.nodes.len(),
            graph.spec.revision
        );
        events.push(event(EventType::Normal, "Ready", "Reconcile", &note, None));
    }
    events
}

/// Per node: applied (new content written), drift corrected, failed (once per failure).
fn nodes(
    objects: &Objects<'_>,
    old: &ResourceGraphStatus,
    new: &ResourceGraphStatus,
    facts: &Facts,
    events: &mut Vec<Event>,
) {
    for node in &new.nodes {
        let before = old.nodes.iter().find(|n| n.id == node.id);
        let (label, related) = objects.node(&node.id);
        if node.applied_hash.is_some()
            && node.applied_hash != before.and_then(|b| b.applied_hash.clone())
        {
            let note = format!("{label} applied");
            events.push(event(
                EventType::Normal,
                "Applied",
                "Apply",
                &note,
                related.clone(),
            ));
        }
        if let Some((_, fields)) = facts.corrected.iter().find(|(id, _)| *id == node.id) {
            let note = format!(
                "{label}: {} changed by another manager, corrected",
                fields.join(", ")
            );
            events.push(event(
                EventType::Normal,
                "DriftCorrected",
                "Apply",
                &note,
                related.clone(),
            ));
        }
        if node.phase == NodePhase::Failed && before.is_none_or(|b| !fails_alike(b, node)) {
            let reason = node.reason.as_deref().unwrap_or("Failed");
            let note = match &node.message {
                Some(message) => format!("{label}: {message}"),
                None => format!("{label} failed"),
            };
            events.push(event(EventType::Warning, reason, "Apply", &note, related));
        }
    }
}

/// Whether `old` already failed the way `new` does.
fn fails_alike(old: &NodeStatus, new: &NodeStatus) -> bool {
    old.phase == NodePhase::Failed && old.reason == new.reason && old.message == new.message
}

fn pruned(objects: &Objects<'_>, removed: &Removed) -> Event {
    let entry = &removed.entry;
    let reference = ObjectRef {
        api_version: entry.api_version.clone(),
        kind: entry.kind.clone(),
        namespace: entry.namespace.clone(),
        name: entry.name.clone(),
        uid: entry.uid.clone(),
    };
    let label = objects.label(&reference);
    let (reason, note) = match removed.outcome {
        Outcome::Deleted => ("Pruned", format!("{label} pruned: no longer rendered")),
        Outcome::Protected => (
            "Orphaned",
            format!("{label} left in place ({ANNOTATION_PRUNE}: disabled), released"),
        ),
        Outcome::Orphaned => (
            "Orphaned",
            format!("{label} left in place (deletionPolicy Orphan), released"),
        ),
        Outcome::NotOurs => (
            "Orphaned",
            format!("{label} belongs to someone else now, left alone"),
        ),
        Outcome::NeverCreated => (
            "Pruned",
            format!("{label} was never created, dropped from the inventory"),
        ),
    };
    event(
        EventType::Normal,
        reason,
        "Prune",
        &note,
        Some(object_reference(&reference)),
    )
}

/// Names the objects a graph's nodes stand for.
struct Objects<'a> {
    graph: &'a ResourceGraph,
    new: &'a ResourceGraphStatus,
}

impl Objects<'_> {
    /// "Kind name" and the object reference of a node: the live object it applied, else the
    /// object it renders, else just the node id.
    fn node(&self, id: &str) -> (String, Option<ObjectReference>) {
        let applied = self
            .new
            .nodes
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.object_ref.clone());
        let rendered = || {
            let object = &self.graph.spec.nodes.iter().find(|n| n.id == id)?.object;
            let text = |p: &str| object.pointer(p).and_then(Value::as_str).map(str::to_owned);
            Some(ObjectRef {
                api_version: text("/apiVersion")?,
                kind: text("/kind")?,
                namespace: text("/metadata/namespace"),
                name: text("/metadata/name")?,
                uid: None,
            })
        };
        match applied.or_else(rendered) {
            Some(reference) => (self.label(&reference), Some(object_reference(&reference))),
            None => (format!("node {id:?}"), None),
        }
    }

    /// "Kind name", or "Kind namespace/name" outside the graph's namespace.
    fn label(&self, reference: &ObjectRef) -> String {
        match &reference.namespace {
            Some(ns) if Some(ns) != self.graph.metadata.namespace.as_ref() => {
                format!("{} {ns}/{}", reference.kind, reference.name)
            }
            _ => format!("{} {}", reference.kind, reference.name),
        }
    }
}

fn object_reference(reference: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(reference.api_version.clone()),
        kind: Some(reference.kind.clone()),
        namespace: reference.namespace.clone(),
        name: Some(reference.name.clone()),
        uid: reference.uid.clone(),
        ..ObjectReference::default()
    }
}

fn event(
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
    related: Option<ObjectReference>,
) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: pequod_api::events::note(note),
        action: action.to_owned(),
        secondary: related,
    }
}

/// An admin abandoned the teardown: `left` objects stay in the cluster.
pub(crate) fn abandoned(left: usize) -> Event {
    event(
        EventType::Warning,
        "Abandoned",
        "Delete",
        &format!(
            "teardown abandoned ({}=true): {left} objects left in the cluster as they are",
            crate::teardown::ANNOTATION_ABANDON
        ),
        None,
    )
}

/// Publishes the events of a pass on the graph with the operator's own client; a failure to
/// publish is logged, never fails the pass.
pub(crate) async fn publish(recorder: Option<&Recorder>, graph: &ResourceGraph, events: &[Event]) {
    let Some(recorder) = recorder else {
        return;
    };
    let reference = graph.object_ref(&());
    for event in events {
        tracing::debug!(reason = %event.reason, note = ?event.note, "event");
        if let Err(error) = recorder.publish(event, &reference).await {
            tracing::warn!(%error, reason = %event.reason, "cannot publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use pequod_api::conditions::{self, Status};
    use pequod_api::{
        ApplyPolicy, DeletionPolicy, DriftPolicy, GraphModule, GraphNode, InventoryEntry,
        ResourceGraphSpec, SourceRef,
    };
    use serde_json::json;

    fn graph(ids: &[&str]) -> ResourceGraph {
        let nodes = ids
            .iter()
            .map(|id| GraphNode {
                id: (*id).into(),
                object: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": id}}),
                depends_on: Vec::new(),
                ready_when: Vec::new(),
                apply_policy: ApplyPolicy::default(),
            })
            .collect();
        let mut graph = ResourceGraph::new(
            "g",
            ResourceGraphSpec {
                source_ref: SourceRef {
                    api_version: "platform.pequod.io/v1alpha1".into(),
                    kind: "Transform".into(),
                    name: "g".into(),
                },
                revision: 3,
                render_hash: "sha256:h".into(),
                module: GraphModule {
                    reference: "m".into(),
                    digest: "sha256:m".into(),
                },
                service_account_name: None,
                drift_policy: DriftPolicy::Correct,
                suspend: false,
                nodes,
            },
        );
        graph.metadata.namespace = Some("ns".into());
        graph
    }

    fn node(id: &str, phase: NodePhase, hash: Option<&str>, message: Option<&str>) -> NodeStatus {
        NodeStatus {
            id: id.into(),
            phase,
            reason: Some(
                match phase {
                    NodePhase::Failed => "ApplyFailed",
                    _ => "Ready",
                }
                .into(),
            ),
            message: message.map(str::to_owned),
            object_ref: hash.map(|_| ObjectRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("ns".into()),
                name: id.into(),
                uid: Some(format!("uid-{id}")),
            }),
            applied_hash: hash.map(str::to_owned),
            normalized_fields: Vec::new(),
            last_transition_time: None,
        }
    }

    fn status(nodes: Vec<NodeStatus>, conds: &[(&str, &str, &str)]) -> ResourceGraphStatus {
        let mut status = ResourceGraphStatus {
            nodes,
            observed_generation: Some(1),
            ..ResourceGraphStatus::default()
        };
        let time = Time(jiff::Timestamp::UNIX_EPOCH);
        for (t, reason, message) in conds {
            conditions::set(
                &mut status.conditions,
                t,
                Status::True,
                reason,
                message,
                Some(1),
                &time,
            );
        }
        status
    }

    fn summary(events: &[Event]) -> Vec<(&str, &str)> {
        events
            .iter()
            .map(|e| (e.reason.as_str(), e.note.as_deref().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn applies_are_announced_per_node_and_readiness_once_for_the_graph() {
        let graph = graph(&["web", "db"]);
        let empty = ResourceGraphStatus::default();
        let applied = status(
            vec![
                node("web", NodePhase::Applied, Some("h1"), None),
                node("db", NodePhase::Ready, Some("h1"), None),
            ],
            &[],
        );
        let events = transitions(&graph, &empty, &applied, &Facts::default());
        assert_eq!(
            summary(&events),
            [
                ("Applied", "Deployment web applied"),
                ("Applied", "Deployment db applied")
            ]
        );
        let related = events[0].secondary.as_ref().expect("related object");
        assert_eq!(related.name.as_deref(), Some("web"));
        assert_eq!(related.uid.as_deref(), Some("uid-web"));

        // The last node becomes ready: no event for the node, one for the graph.
        let ready = status(
            vec![
                node("web", NodePhase::Ready, Some("h1"), None),
                node("db", NodePhase::Ready, Some("h1"), None),
            ],
            &[(types::READY, "AllNodesReady", "2/2 nodes ready")],
        );
        let events = transitions(&graph, &applied, &ready, &Facts::default());
        assert_eq!(
            summary(&events),
            [("Ready", "all 2 nodes ready, revision 3")]
        );
        assert_eq!(events[0].type_, EventType::Normal);
        assert!(
            transitions(&graph, &ready, &ready, &Facts::default()).is_empty(),
            "steady state"
        );

        // New content: applied again; still ready at a new generation says so again.
        let mut updated = ready.clone();
        updated.nodes[0].applied_hash = Some("h2".into());
        updated.observed_generation = Some(2);
        assert_eq!(
            summary(&transitions(&graph, &ready, &updated, &Facts::default())),
            [
                ("Applied", "Deployment web applied"),
                ("Ready", "all 2 nodes ready, revision 3")
            ]
        );
    }

    #[test]
    fn a_failure_is_announced_once_until_it_changes() {
        let graph = graph(&["web", "cfg"]);
        let failing = |message: &str| {
            status(
                vec![
                    node("web", NodePhase::Failed, None, Some(message)),
                    node("cfg", NodePhase::Blocked, None, None),
                ],
                &[],
            )
        };
        let first = failing("conflict with another field manager");
        let events = transitions(
            &graph,
            &ResourceGraphStatus::default(),
            &first,
            &Facts::default(),
        );
        assert_eq!(
            summary(&events),
            [(
                "ApplyFailed",
                "Deployment web: conflict with another field manager"
            )]
        );
        assert_eq!(events[0].type_, EventType::Warning);
        assert_eq!(
            events[0].secondary.as_ref().and_then(|r| r.name.as_deref()),
            Some("web"),
            "named from the rendered object before any apply"
        );
        assert!(transitions(&graph, &first, &first, &Facts::default()).is_empty());
        let second = failing("forbidden");
        assert_eq!(
            summary(&transitions(&graph, &first, &second, &Facts::default())),
            [("ApplyFailed", "Deployment web: forbidden")]
        );
    }

    #[test]
    fn stalls_drift_corrections_and_prunes() {
        let graph = graph(&["web"]);
        let ok = ResourceGraphStatus::default();
        let stalled = status(
            Vec::new(),
            &[(types::STALLED, "OutOfScope", "node \"web\"")],
        );
        assert_eq!(
            summary(&transitions(&graph, &ok, &stalled, &Facts::default())),
            [("OutOfScope", "node \"web\"")]
        );
        assert!(transitions(&graph, &stalled, &stalled, &Facts::default()).is_empty());

        let steady = status(vec![node("web", NodePhase::Ready, Some("h"), None)], &[]);
        let drifted = status(
            vec![node("web", NodePhase::Ready, Some("h"), None)],
            &[(
                types::DRIFTED,
                "DriftDetected",
                "Deployment web: /spec/replicas",
            )],
        );
        assert_eq!(
            summary(&transitions(&graph, &steady, &drifted, &Facts::default())),
            [("Drifted", "Deployment web: /spec/replicas")]
        );
        assert!(transitions(&graph, &drifted, &drifted, &Facts::default()).is_empty());

        let entry = |name: &str| InventoryEntry {
            id: name.into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: name.into(),
            uid: None,
            level: 0,
            deletion_policy: DeletionPolicy::Delete,
        };
        let facts = Facts {
            removed: vec![
                Removed {
                    entry: entry("old"),
                    outcome: Outcome::Deleted,
                },
                Removed {
                    entry: entry("kept"),
                    outcome: Outcome::Orphaned,
                },
            ],
            corrected: vec![("web".into(), vec!["/spec/replicas".into()])],
        };
        assert_eq!(
            summary(&transitions(&graph, &steady, &steady, &facts)),
            [
                (
                    "DriftCorrected",
                    "Deployment web: /spec/replicas changed by another manager, corrected"
                ),
                ("Pruned", "ConfigMap old pruned: no longer rendered"),
                (
                    "Orphaned",
                    "ConfigMap kept left in place (deletionPolicy Orphan), released"
                ),
            ]
        );
    }

    #[test]
    fn notes_are_bounded() {
        let long = "é".repeat(2000);
        let e = event(EventType::Warning, "X", "Y", &long, None);
        assert!(
            e.note
                .is_some_and(|n| n.len() <= pequod_api::events::NOTE_LIMIT + 3)
        );
    }
}
