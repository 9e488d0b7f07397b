//! The core's verdicts on one pass, so that the controller only observes and acts: each node's
//! phase and reason, whether the pass converged far enough to prune (the prune gate), and the
//! graph's summary with when to look again.

use std::time::Duration;

use crate::plan::Blocker;
use crate::readiness::Readiness;

/// Every reason this module writes (the API crate's `Reason` knows each of them).
pub const REASONS: &[&str] = &[
    "Ready",
    "Progressing",
    "NotReady",
    "ApplyFailed",
    "KindNotServed",
    "WaitingForDependency",
    "DependencyFailed",
    "Pending",
    "Pruning",
    "AllNodesReady",
    "NodesFailed",
];

/// A node's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not applied yet.
    Pending,
    /// Waiting for a dependency.
    Blocked,
    /// Applied, not ready yet.
    Applied,
    /// Ready.
    Ready,
    /// Failed (apply or readiness).
    Failed,
}

/// A node's phase, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeVerdict {
    /// The phase.
    pub phase: Phase,
    /// The reason (one of [`REASONS`]).
    pub reason: &'static str,
    /// What a user needs to know; empty when nothing.
    pub message: String,
}

impl NodeVerdict {
    fn new(phase: Phase, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            phase,
            reason,
            message: message.into(),
        }
    }

    /// What the readiness rules say about an applied object.
    pub fn of_readiness(readiness: &Readiness) -> Self {
        match readiness {
            Readiness::Ready => Self::new(Phase::Ready, "Ready", ""),
            Readiness::InProgress(why) => Self::new(Phase::Applied, "Progressing", why.as_str()),
            Readiness::Failed(why) => Self::new(Phase::Failed, "NotReady", why.as_str()),
        }
    }

    /// A node that waits for a dependency.
    pub fn of_blocker(blocker: &Blocker) -> Self {
        match blocker {
            Blocker::Waiting { dependency } => Self::new(
                Phase::Blocked,
                "WaitingForDependency",
                format!("waiting for {dependency:?} to be ready"),
            ),
            Blocker::DependencyFailed { dependency } => Self::new(
                Phase::Blocked,
                "DependencyFailed",
                format!("dependency {dependency:?} failed"),
            ),
        }
    }

    /// The apply failed (or the object is not this graph's); retried each pass.
    pub fn apply_failed(message: impl Into<String>) -> Self {
        Self::new(Phase::Failed, "ApplyFailed", message)
    }

    /// The API server does not serve the node's kind (yet).
    pub fn kind_not_served(kind: &str) -> Self {
        Self::new(
            Phase::Pending,
            "KindNotServed",
            format!("waiting for the API server to serve {kind}"),
        )
    }

    /// Not looked at yet.
    pub fn pending() -> Self {
        Self::new(Phase::Pending, "Pending", "")
    }

    /// Whether this node failed the way it is retried (its apply), not by readiness.
    pub fn is_apply_failure(phase: Phase, reason: Option<&str>) -> bool {
        phase == Phase::Failed && reason == Some("ApplyFailed")
    }
}

/// The prune gate: objects no longer rendered are removed only once the new revision stands —
/// every apply of this pass succeeded, nothing is blocked or waiting for its kind, and every
/// node is applied or ready. An unfinished or failed apply keeps the old objects, so that a
/// replacement always exists before what it replaces goes.
pub fn may_prune(
    apply_failed: bool,
    blocked: usize,
    unserved: usize,
    phases: impl IntoIterator<Item = Phase>,
) -> bool {
    !apply_failed
        && blocked == 0
        && unserved == 0
        && phases
            .into_iter()
            .all(|p| matches!(p, Phase::Ready | Phase::Applied))
}

/// The graph as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphState {
    /// On its way (applying, becoming ready, pruning).
    Progressing,
    /// Every node is ready.
    Ready,
    /// Some nodes failed; they are retried.
    Failed,
}

/// When to look at the graph again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Only on a change (watches bring it).
    AwaitChange,
    /// Soon: something is progressing (the controller's progress interval).
    Soon,
    /// After this long: failed nodes are retried.
    After(Duration),
}

/// How soon failed nodes are retried.
pub const FAILED_RETRY: Duration = Duration::from_secs(30);

/// The graph's summary: state, the reason and message of its kstatus condition (`Ready` when
/// ready, else `Reconciling`), and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The state.
    pub state: GraphState,
    /// The reason (one of [`REASONS`]).
    pub reason: &'static str,
    /// The message.
    pub message: String,
    /// When to look again.
    pub next: Next,
}

/// Summarizes a pass from its counts; `pruning` says what prune still has to do (ignored while
/// nodes fail: the failure is what a user must see).
pub fn summarize(pruning: Option<&str>, ready: usize, failed: usize, total: usize) -> Summary {
    let summary = |state, reason, message: String, next| Summary {
        state,
        reason,
        message,
        next,
    };
    match pruning {
        Some(pruning) if failed == 0 => summary(
            GraphState::Progressing,
            "Pruning",
            pruning.to_owned(),
            Next::Soon,
        ),
        _ if ready == total => summary(
            GraphState::Ready,
            "AllNodesReady",
            format!("{ready}/{total} nodes ready"),
            Next::AwaitChange,
        ),
        _ if failed > 0 => summary(
            GraphState::Failed,
            "NodesFailed",
            format!("{failed} of {total} nodes failed; {ready}/{total} ready"),
            Next::After(FAILED_RETRY),
        ),
        _ => summary(
            GraphState::Progressing,
            "Progressing",
            format!("{ready}/{total} nodes ready"),
            Next::Soon,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_verdicts_say_what_and_why() {
        assert_eq!(
            NodeVerdict::of_readiness(&Readiness::Ready),
            NodeVerdict::new(Phase::Ready, "Ready", "")
        );
        let progressing = NodeVerdict::of_readiness(&Readiness::InProgress("0/1 replicas".into()));
        assert_eq!(
            (progressing.phase, progressing.reason),
            (Phase::Applied, "Progressing")
        );
        let failed = NodeVerdict::of_readiness(&Readiness::Failed("CrashLoopBackOff".into()));
        assert_eq!((failed.phase, failed.reason), (Phase::Failed, "NotReady"));
        assert_eq!(failed.message, "CrashLoopBackOff");
        let waiting = NodeVerdict::of_blocker(&Blocker::Waiting {
            dependency: "db".into(),
        });
        assert_eq!(waiting.message, "waiting for \"db\" to be ready");
        let broken = NodeVerdict::of_blocker(&Blocker::DependencyFailed {
            dependency: "db".into(),
        });
        assert_eq!(
            (broken.phase, broken.reason),
            (Phase::Blocked, "DependencyFailed")
        );
        assert!(
            NodeVerdict::kind_not_served("Widget")
                .message
                .contains("Widget")
        );
        let apply = NodeVerdict::apply_failed("conflict");
        assert!(NodeVerdict::is_apply_failure(
            apply.phase,
            Some(apply.reason)
        ));
        assert!(!NodeVerdict::is_apply_failure(
            failed.phase,
            Some(failed.reason)
        ));
        for verdict in [
            progressing,
            failed,
            waiting,
            broken,
            apply,
            NodeVerdict::pending(),
        ] {
            assert!(REASONS.contains(&verdict.reason), "{}", verdict.reason);
        }
    }

    #[test]
    fn prune_waits_for_the_new_revision_to_stand() {
        let all = [Phase::Ready, Phase::Applied];
        assert!(may_prune(false, 0, 0, all));
        assert!(!may_prune(true, 0, 0, all), "an apply failed");
        assert!(!may_prune(false, 1, 0, all), "a node is blocked");
        assert!(!may_prune(false, 0, 1, all), "a kind is not served");
        for unfinished in [Phase::Pending, Phase::Blocked, Phase::Failed] {
            assert!(!may_prune(false, 0, 0, [Phase::Ready, unfinished]));
        }
        assert!(
            may_prune(false, 0, 0, []),
            "an empty graph prunes everything"
        );
    }

    #[test]
    fn the_summary_puts_failures_before_pruning_and_ready_before_progress() {
        let ready = summarize(None, 3, 0, 3);
        assert_eq!(
            (ready.state, ready.reason, ready.next),
            (GraphState::Ready, "AllNodesReady", Next::AwaitChange)
        );
        assert_eq!(ready.message, "3/3 nodes ready");
        let pruning = summarize(Some("2 stale objects left to prune"), 3, 0, 3);
        assert_eq!(
            (pruning.state, pruning.reason, pruning.next),
            (GraphState::Progressing, "Pruning", Next::Soon)
        );
        let failing = summarize(Some("2 stale objects left to prune"), 1, 1, 3);
        assert_eq!(
            (failing.state, failing.reason, failing.next),
            (GraphState::Failed, "NodesFailed", Next::After(FAILED_RETRY))
        );
        assert_eq!(failing.message, "1 of 3 nodes failed; 1/3 ready");
        let progressing = summarize(None, 1, 0, 3);
        assert_eq!(
            (progressing.state, progressing.reason, progressing.next),
            (GraphState::Progressing, "Progressing", Next::Soon)
        );
        let empty = summarize(None, 0, 0, 0);
        assert_eq!(empty.state, GraphState::Ready);
        for summary in [ready, pruning, failing, progressing] {
            assert!(REASONS.contains(&summary.reason));
        }
    }
}
