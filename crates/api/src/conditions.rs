//! kstatus-style conditions shared by Transform and ResourceGraph status.
//!
//! kstatus reads three conditions: `Ready` (always present once reconciled), and the
//! "abnormal-true" pair `Reconciling` and `Stalled`, present only while true. The helpers here
//! keep that trio consistent, so callers cannot write `Ready=True` next to `Stalled=True`, and
//! move `lastTransitionTime` only when a condition's status really changes (so a steady state
//! writes an identical status and causes no churn).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types Pequod writes.
pub mod types {
    /// The object reached its desired state.
    pub const READY: &str = "Ready";
    /// Work is in progress (kstatus: present only while true).
    pub const RECONCILING: &str = "Reconciling";
    /// Progress stopped on an error that needs a change to resolve (kstatus: present only
    /// while true).
    pub const STALLED: &str = "Stalled";
    /// The module was fetched.
    pub const FETCHED: &str = "Fetched";
    /// The input satisfied the module's schema and policies.
    pub const VALIDATED: &str = "Validated";
    /// The module rendered a graph.
    pub const RENDERED: &str = "Rendered";
    /// A managed object was changed by someone else.
    pub const DRIFTED: &str = "Drifted";
}

/// Status value of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `"True"`.
    True,
    /// `"False"`.
    False,
    /// `"Unknown"`.
    Unknown,
}

impl Status {
    /// The string the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(value: bool) -> Self {
        if value { Status::True } else { Status::False }
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], condition_type: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == condition_type)
}

/// True when the condition exists with status `True`.
pub fn is_true(conditions: &[Condition], condition_type: &str) -> bool {
    find(conditions, condition_type).is_some_and(|c| c.status == Status::True.as_str())
}

/// Sets a condition, keeping `lastTransitionTime` unless the status changes.
/// Returns whether anything changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    condition_type: &str,
    status: Status,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = status.as_str();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == condition_type) {
        let before = existing.clone();
        if existing.status != status {
            status.clone_into(&mut existing.status);
            existing.last_transition_time = now.clone();
        }
        reason.clone_into(&mut existing.reason);
        message.clone_into(&mut existing.message);
        existing.observed_generation = observed_generation;
        return *existing != before;
    }
    conditions.push(Condition {
        type_: condition_type.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation,
        last_transition_time: now.clone(),
    });
    true
}

/// Removes a condition. Returns whether it was present.
pub fn remove(conditions: &mut Vec<Condition>, condition_type: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != condition_type);
    conditions.len() != before
}

/// The kstatus summary of an object: exactly one of these holds at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summary<'a> {
    /// Desired state reached: `Ready=True`, no `Reconciling`, no `Stalled`.
    Ready {
        /// CamelCase reason.
        reason: &'a str,
        /// Human message.
        message: &'a str,
    },
    /// Work in progress: `Reconciling=True`, `Ready=False` (or `Unknown` before any result).
    Reconciling {
        /// CamelCase reason.
        reason: &'a str,
        /// Human message.
        message: &'a str,
    },
    /// Stuck until someone changes something: `Stalled=True`, `Ready=False`.
    Stalled {
        /// CamelCase reason.
        reason: &'a str,
        /// Human message.
        message: &'a str,
    },
}

/// Writes the kstatus trio for `summary`. Returns whether anything changed.
pub fn summarize(
    conditions: &mut Vec<Condition>,
    summary: Summary<'_>,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    let g = observed_generation;
    match summary {
        Summary::Ready { reason, message } => {
            let a = remove(conditions, types::RECONCILING);
            let b = remove(conditions, types::STALLED);
            set(
                conditions,
                types::READY,
                Status::True,
                reason,
                message,
                g,
                now,
            ) | a
                | b
        }
        Summary::Reconciling { reason, message } => {
            let a = remove(conditions, types::STALLED);
            let b = set(
                conditions,
                types::RECONCILING,
                Status::True,
                reason,
                message,
                g,
                now,
            );
            // Before any result Ready is Unknown (and stays so while reconciling); once there
            // was a result it is False until the work is done.
            let ready = match find(conditions, types::READY) {
                Some(c) if c.status != "Unknown" => Status::False,
                _ => Status::Unknown,
            };
            set(conditions, types::READY, ready, reason, message, g, now) | a | b
        }
        Summary::Stalled { reason, message } => {
            let a = remove(conditions, types::RECONCILING);
            let b = set(
                conditions,
                types::STALLED,
                Status::True,
                reason,
                message,
                g,
                now,
            );
            set(
                conditions,
                types::READY,
                Status::False,
                reason,
                message,
                g,
                now,
            ) | a
                | b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conds = Vec::new();
        assert!(set(
            &mut conds,
            "Fetched",
            Status::True,
            "Fetched",
            "ok",
            Some(1),
            &at(10)
        ));
        assert!(!set(
            &mut conds,
            "Fetched",
            Status::True,
            "Fetched",
            "ok",
            Some(1),
            &at(20)
        ));
        assert_eq!(conds[0].last_transition_time, at(10));
        assert!(set(
            &mut conds,
            "Fetched",
            Status::True,
            "Fetched",
            "again",
            Some(2),
            &at(30)
        ));
        assert_eq!(
            conds[0].last_transition_time,
            at(10),
            "message change is not a transition"
        );
        assert!(set(
            &mut conds,
            "Fetched",
            Status::False,
            "NotFound",
            "gone",
            Some(2),
            &at(40)
        ));
        assert_eq!(conds[0].last_transition_time, at(40));
    }

    #[test]
    fn kstatus_trio_stays_consistent() {
        let mut conds = Vec::new();
        summarize(
            &mut conds,
            Summary::Reconciling {
                reason: "Progressing",
                message: "",
            },
            None,
            &at(1),
        );
        assert!(is_true(&conds, types::RECONCILING));
        assert_eq!(find(&conds, types::READY).unwrap().status, "Unknown");

        summarize(
            &mut conds,
            Summary::Stalled {
                reason: "InvalidGraph",
                message: "cycle",
            },
            None,
            &at(2),
        );
        assert!(is_true(&conds, types::STALLED));
        assert!(find(&conds, types::RECONCILING).is_none());
        assert_eq!(find(&conds, types::READY).unwrap().status, "False");

        summarize(
            &mut conds,
            Summary::Reconciling {
                reason: "Progressing",
                message: "",
            },
            None,
            &at(3),
        );
        assert!(find(&conds, types::STALLED).is_none());
        assert_eq!(
            find(&conds, types::READY).unwrap().status,
            "False",
            "stays False after a failure"
        );

        summarize(
            &mut conds,
            Summary::Ready {
                reason: "Ready",
                message: "all nodes ready",
            },
            None,
            &at(4),
        );
        assert!(is_true(&conds, types::READY));
        assert_eq!(conds.len(), 1);
        assert!(!summarize(
            &mut conds,
            Summary::Ready {
                reason: "Ready",
                message: "all nodes ready"
            },
            None,
            &at(5)
        ));
    }
}
