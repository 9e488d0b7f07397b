//! The Transform's status: conditions written per pass, the kstatus summary aggregated from
//! the ResourceGraph the executor runs, node counts, history, and redaction of Secret values.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pequod_api::Reason;
use pequod_api::conditions::{self, Status, Summary, types};
use pequod_api::{HistoryEntry, NodeCounts, NodePhase, ResourceGraph, TransformStatus};

/// How many applied revisions `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// The generation and time every condition of one pass is written with.
pub(crate) struct Marks {
    pub generation: Option<i64>,
    pub time: Time,
}

impl Marks {
    pub fn set(
        &self,
        status: &mut TransformStatus,
        condition: &str,
        value: Status,
        reason: &str,
        message: &str,
    ) {
        conditions::set(
            &mut status.conditions,
            condition,
            value,
            reason,
            message,
            self.generation,
            &self.time,
        );
    }

    pub fn summarize(&self, status: &mut TransformStatus, summary: Summary<'_>) {
        conditions::summarize(&mut status.conditions, summary, self.generation, &self.time);
    }
}

/// What the ResourceGraph says about the objects it runs, as the Transform's kstatus summary.
/// Only called when the Transform's own steps succeeded.
pub(crate) fn from_graph(graph: Option<&ResourceGraph>) -> (String, String, SummaryKind) {
    let Some(graph) = graph else {
        return (
            Reason::GraphPending.as_str().into(),
            "waiting for the ResourceGraph".into(),
            SummaryKind::Reconciling,
        );
    };
    let observed = graph.status.as_ref().and_then(|s| s.observed_generation);
    if observed.is_none() || observed != graph.metadata.generation {
        return (
            Reason::GraphProgressing.as_str().into(),
            format!(
                "revision {} is waiting for the graph executor",
                graph.spec.revision
            ),
            SummaryKind::Reconciling,
        );
    }
    let status = graph.status.clone().unwrap_or_default();
    let condition = |t: &str| conditions::find(&status.conditions, t).cloned();
    if let Some(stalled) = condition(types::STALLED).filter(|c| c.status == "True") {
        return (stalled.reason, stalled.message, SummaryKind::Stalled);
    }
    if let Some(ready) = condition(types::READY).filter(|c| c.status == "True") {
        let message = format!(
            "revision {}: all {} nodes ready",
            graph.spec.revision,
            graph.spec.nodes.len()
        );
        return (ready.reason, message, SummaryKind::Ready);
    }
    // Failed nodes are retried with backoff: the Transform is still reconciling, with their message.
    let (reason, mut message) = condition(types::RECONCILING)
        .or_else(|| condition(types::READY))
        .map_or_else(
            || {
                (
                    Reason::GraphProgressing.as_str().into(),
                    "the graph is progressing".into(),
                )
            },
            |c| (c.reason, c.message),
        );
    // The first failing node says what to do about it (the graph's own message only counts).
    if let Some(node) = status
        .nodes
        .iter()
        .find(|n| n.phase == NodePhase::Failed && n.message.is_some())
    {
        message = format!(
            "{message}; node {}: {}",
            node.id,
            node.message.as_deref().unwrap_or_default()
        );
    }
    (reason, message, SummaryKind::Reconciling)
}

/// Which of the three kstatus summaries holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SummaryKind {
    Ready,
    Reconciling,
    Stalled,
}

/// Writes the summary aggregated from the graph into the Transform's conditions. With
/// `spec.timeout`, a graph still not Ready `timeout` after its revision was written (or after
/// it stopped being Ready) is `Stalled` with reason `Timeout`; until then, returns how long is
/// left, so the caller looks again at the deadline.
pub(crate) fn summarize_from_graph(
    marks: &Marks,
    status: &mut TransformStatus,
    graph: Option<&ResourceGraph>,
    timeout: Option<(std::time::Duration, &str)>,
    secrets: &[String],
) -> Option<std::time::Duration> {
    let (mut reason, message, mut kind) = from_graph(graph);
    // Node messages quote what the API server refused, which may be a Secret's value.
    let mut message = pequod_api::redact::secrets_and_api_values(&message, secrets);
    let mut left = None;
    if let (SummaryKind::Reconciling, Some((timeout, written))) = (&kind, timeout) {
        let elapsed = progressing_for(status, &marks.time);
        if elapsed >= timeout {
            message = format!(
                "not Ready within spec.timeout {written} of the revision being written or of \
                 becoming unready: {message}"
            );
            reason = Reason::Timeout.as_str().into();
            kind = SummaryKind::Stalled;
        } else {
            left = Some(timeout.saturating_sub(elapsed));
        }
    }
    let summary = match kind {
        SummaryKind::Ready => Summary::Ready {
            reason: &reason,
            message: &message,
        },
        SummaryKind::Reconciling => Summary::Reconciling {
            reason: &reason,
            message: &message,
        },
        SummaryKind::Stalled => Summary::Stalled {
            reason: &reason,
            message: &message,
        },
    };
    marks.summarize(status, summary);
    left
}

/// How long the Transform has been on its way to Ready: since the newest revision was written
/// or since `Reconciling` turned on (after being Ready), whichever is later; zero when Ready.
fn progressing_for(status: &TransformStatus, now: &Time) -> std::time::Duration {
    if conditions::is_true(&status.conditions, types::READY) {
        return std::time::Duration::ZERO;
    }
    let reconciling = conditions::find(&status.conditions, types::RECONCILING)
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.0);
    let since = status
        .history
        .first()
        .map(|h| h.applied_at.0)
        .into_iter()
        .chain(reconciling)
        .max();
    since
        .and_then(|since| now.0.duration_since(since).try_into().ok())
        .unwrap_or_default()
}

/// Node counts (`nodes`, `readyNodes`) from the graph's per-node status.
pub(crate) fn count_nodes(status: &mut TransformStatus, graph: Option<&ResourceGraph>) {
    let Some(graph) = graph else {
        status.nodes = None;
        status.ready_nodes = None;
        return;
    };
    let nodes = graph
        .status
        .as_ref()
        .map(|s| s.nodes.as_slice())
        .unwrap_or_default();
    // Count only nodes of the current spec: a pruned node's status may linger.
    let in_spec = |id: &str| graph.spec.nodes.iter().any(|n| n.id == id);
    let count = |phase: NodePhase| {
        nodes
            .iter()
            .filter(|n| n.phase == phase && in_spec(&n.id))
            .count()
    };
    let total = graph.spec.nodes.len();
    let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    status.nodes = Some(NodeCounts {
        total: to_i32(total),
        ready: to_i32(count(NodePhase::Ready)),
        failed: to_i32(count(NodePhase::Failed)),
    });
    status.ready_nodes = Some(format!("{}/{total}", count(NodePhase::Ready)));
}

/// Records a newly written revision at the front of `history`, keeping the last
/// [`HISTORY_LIMIT`]. Re-writing the same revision changes nothing.
pub(crate) fn record_history(status: &mut TransformStatus, entry: HistoryEntry) {
    if status
        .history
        .first()
        .is_some_and(|h| h.revision == entry.revision && h.render_hash == entry.render_hash)
    {
        return;
    }
    status.history.insert(0, entry);
    status.history.truncate(HISTORY_LIMIT);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pequod_api::{NodeStatus, ResourceGraphSpec, ResourceGraphStatus};

    fn history(revision: i64) -> HistoryEntry {
        HistoryEntry {
            revision,
            render_hash: format!("h{revision}"),
            module_digest: "sha256:m".into(),
            version: None,
            applied_at: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn history_keeps_the_last_ten_newest_first_without_duplicates() {
        let mut status = TransformStatus::default();
        for revision in 1..=12 {
            record_history(&mut status, history(revision));
            record_history(&mut status, history(revision));
        }
        let revisions: Vec<i64> = status.history.iter().map(|h| h.revision).collect();
        assert_eq!(revisions, (3..=12).rev().collect::<Vec<_>>());
    }

    fn graph(
        generation: i64,
        observed: Option<i64>,
        conds: &[(&str, &str, &str)],
    ) -> ResourceGraph {
        let node = |id: &str| pequod_api::GraphNode {
            id: id.into(),
            object: serde_json::json!({}),
            depends_on: Vec::new(),
            ready_when: Vec::new(),
            apply_policy: pequod_api::ApplyPolicy::default(),
        };
        let mut g = ResourceGraph::new(
            "web",
            ResourceGraphSpec {
                source_ref: pequod_api::SourceRef {
                    api_version: String::new(),
                    kind: String::new(),
                    name: String::new(),
                },
                revision: 3,
                render_hash: "h".into(),
                module: pequod_api::GraphModule {
                    reference: String::new(),
                    digest: String::new(),
                },
                service_account_name: None,
                drift_policy: pequod_api::DriftPolicy::Correct,
                suspend: false,
                nodes: vec![node("a"), node("b")],
            },
        );
        g.metadata.generation = Some(generation);
        let time = Time(jiff::Timestamp::UNIX_EPOCH);
        let mut status = ResourceGraphStatus {
            observed_generation: observed,
            ..ResourceGraphStatus::default()
        };
        for (t, s, reason) in conds {
            let value = if *s == "True" {
                Status::True
            } else {
                Status::False
            };
            conditions::set(
                &mut status.conditions,
                t,
                value,
                reason,
                "m",
                observed,
                &time,
            );
        }
        status.nodes = vec![
            node_status("a", NodePhase::Ready),
            node_status("gone", NodePhase::Ready),
        ];
        g.status = Some(status);
        g
    }

    fn node_status(id: &str, phase: NodePhase) -> NodeStatus {
        NodeStatus {
            id: id.into(),
            phase,
            reason: None,
            message: None,
            object_ref: None,
            applied_hash: None,
            normalized_fields: Vec::new(),
            last_transition_time: None,
        }
    }

    #[test]
    fn node_messages_reach_the_transform_without_secret_or_refused_values() {
        let mut failing = graph(2, Some(2), &[("Reconciling", "True", "NodesFailed")]);
        let nodes = &mut failing.status.as_mut().expect("status").nodes;
        nodes[0].phase = NodePhase::Failed;
        nodes[0].message = Some(
            r#"Invalid (422): ConfigMap "a" is invalid: metadata.labels: Invalid value: "hunter22 x": must be a label; token hunter22"#
                .into(),
        );
        let mut status = TransformStatus::default();
        let marks = Marks {
            generation: Some(1),
            time: Time(jiff::Timestamp::UNIX_EPOCH),
        };
        summarize_from_graph(
            &marks,
            &mut status,
            Some(&failing),
            None,
            &["hunter22".to_owned()],
        );
        let reconciling = conditions::find(&status.conditions, "Reconciling").expect("condition");
        assert!(
            !reconciling.message.contains("hunter22"),
            "{}",
            reconciling.message
        );
        assert!(
            reconciling
                .message
                .contains("metadata.labels: Invalid value: [redacted]"),
            "{}",
            reconciling.message
        );
    }

    #[test]
    fn the_summary_follows_the_graph_once_it_observed_the_current_generation() {
        assert_eq!(from_graph(None).2, SummaryKind::Reconciling);
        let ready = graph(2, Some(2), &[("Ready", "True", "AllNodesReady")]);
        assert_eq!(from_graph(Some(&ready)).2, SummaryKind::Ready);
        let stale = graph(3, Some(2), &[("Ready", "True", "AllNodesReady")]);
        assert_eq!(
            from_graph(Some(&stale)).2,
            SummaryKind::Reconciling,
            "a Ready from the previous revision does not count"
        );
        let stalled = graph(
            2,
            Some(2),
            &[
                ("Stalled", "True", "InvalidGraph"),
                ("Ready", "False", "InvalidGraph"),
            ],
        );
        assert_eq!(
            from_graph(Some(&stalled)),
            ("InvalidGraph".into(), "m".into(), SummaryKind::Stalled)
        );
    }

    #[test]
    fn a_graph_not_ready_within_the_timeout_stalls_and_until_then_says_how_long_is_left() {
        let progressing = graph(2, Some(2), &[("Reconciling", "True", "Progressing")]);
        let at = |secs: i64| Time(jiff::Timestamp::from_second(secs).unwrap());
        let mut status = TransformStatus::default();
        record_history(
            &mut status,
            HistoryEntry {
                applied_at: at(1000),
                ..history(3)
            },
        );
        let timeout = Some((std::time::Duration::from_secs(60), "1m"));
        let marks = |secs: i64| Marks {
            generation: Some(1),
            time: at(secs),
        };
        // The pass that wrote the revision.
        let left =
            summarize_from_graph(&marks(1000), &mut status, Some(&progressing), timeout, &[]);
        assert_eq!(left, Some(std::time::Duration::from_secs(60)));
        let left =
            summarize_from_graph(&marks(1045), &mut status, Some(&progressing), timeout, &[]);
        assert_eq!(left, Some(std::time::Duration::from_secs(15)));
        assert!(conditions::find(&status.conditions, types::STALLED).is_none());

        let left =
            summarize_from_graph(&marks(1061), &mut status, Some(&progressing), timeout, &[]);
        assert_eq!(left, None);
        let stalled = conditions::find(&status.conditions, types::STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "Timeout")
        );
        assert!(
            stalled.message.contains("spec.timeout 1m"),
            "{}",
            stalled.message
        );

        // Ready again: the deadline no longer applies.
        let ready = graph(2, Some(2), &[("Ready", "True", "AllNodesReady")]);
        let left = summarize_from_graph(&marks(1100), &mut status, Some(&ready), timeout, &[]);
        assert_eq!(left, None);
        assert!(conditions::is_true(&status.conditions, types::READY));
        assert!(conditions::find(&status.conditions, types::STALLED).is_none());

        // Unready again much later: the deadline counts from then, not from the revision.
        let left =
            summarize_from_graph(&marks(2000), &mut status, Some(&progressing), timeout, &[]);
        assert_eq!(left, Some(std::time::Duration::from_secs(60)));
        let left =
            summarize_from_graph(&marks(2030), &mut status, Some(&progressing), timeout, &[]);
        assert_eq!(left, Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn node_counts_ignore_status_of_nodes_no_longer_in_the_spec() {
        let mut status = TransformStatus::default();
        count_nodes(&mut status, Some(&graph(1, Some(1), &[])));
        assert_eq!(status.ready_nodes.as_deref(), Some("1/2"));
        assert_eq!(
            status.nodes.map(|n| (n.total, n.ready, n.failed)),
            Some((2, 1, 0))
        );
    }
}
