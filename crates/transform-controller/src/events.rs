//! Kubernetes Events for each step of a Transform: emitted on transitions only (a render that
//! keeps failing the same way says so once), from the status before and after a pass.

use kube::Resource as _;
use kube::runtime::events::{Event, EventType, Recorder};
use pequod_api::conditions::{find, types};
use pequod_api::{Severity, Transform, TransformStatus};

/// The events that describe how `old` became `new`.
pub(crate) fn transitions(old: &TransformStatus, new: &TransformStatus) -> Vec<Event> {
    let mut events = Vec::new();
    let changed = |t: &str| {
        let key = |s: &TransformStatus| {
            find(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        };
        let now = key(new);
        (now != key(old)).then_some(now).flatten()
    };
    // A failing step: Fetched, Validated or Rendered turned False (or failed differently).
    for step in [types::FETCHED, types::VALIDATED, types::RENDERED] {
        if let Some((status, reason, message)) = changed(step)
            && status == "False"
            && !events.iter().any(|e: &Event| e.reason == reason)
        {
            events.push(event(EventType::Warning, &reason, "Render", &message));
        }
    }
    if let Some(entry) = new.history.first()
        && old.history.first() != Some(entry)
    {
        let note = format!(
            "revision {} written to the ResourceGraph (module {})",
            entry.revision, entry.module_digest
        );
        events.push(event(EventType::Normal, "Rendered", "Render", &note));
    }
    let warnings: Vec<String> = new
        .violations
        .iter()
        .filter(|v| v.severity == Severity::Warning)
        .map(|v| format!("{}: {}", v.path, v.message))
        .collect();
    if !warnings.is_empty() && new.violations != old.violations {
        events.push(event(
            EventType::Warning,
            "PolicyWarning",
            "Validate",
            &warnings.join("; "),
        ));
    }
    if let Some((status, reason, message)) = changed(types::STALLED)
        && status == "True"
        && !events.iter().any(|e| e.reason == reason)
    {
        events.push(event(EventType::Warning, &reason, "Reconcile", &message));
    }
    if let Some((status, _, message)) = changed(types::READY)
        && status == "True"
    {
        events.push(event(EventType::Normal, "Ready", "Reconcile", &message));
    }
    events
}

fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: pequod_api::events::note(note),
        action: action.to_owned(),
        secondary: None,
    }
}

/// Publishes the events of a pass; a failure to publish is logged, never fails the pass.
pub(crate) async fn publish(recorder: Option<&Recorder>, transform: &Transform, events: &[Event]) {
    let Some(recorder) = recorder else {
        return;
    };
    let reference = transform.object_ref(&());
    for event in events {
        if let Err(error) = recorder.publish(event, &reference).await {
            tracing::warn!(%error, reason = %event.reason, "cannot publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use pequod_api::HistoryEntry;
    use pequod_api::conditions::{self, Status};

    fn with(conds: &[(&str, Status, &str)]) -> TransformStatus {
        let mut status = TransformStatus::default();
        let time = Time(jiff::Timestamp::UNIX_EPOCH);
        for (t, value, reason) in conds {
            conditions::set(
                &mut status.conditions,
                t,
                *value,
                reason,
                "msg",
                Some(1),
                &time,
            );
        }
        status
    }

    fn reasons(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn a_failure_is_announced_once_and_readiness_once() {
        let failing = with(&[
            (types::VALIDATED, Status::False, "SchemaViolation"),
            (types::STALLED, Status::True, "SchemaViolation"),
        ]);
        let first = transitions(&TransformStatus::default(), &failing);
        assert_eq!(reasons(&first), ["SchemaViolation"]);
        assert_eq!(first[0].type_, EventType::Warning);
        assert!(transitions(&failing, &failing).is_empty(), "no repeat");

        let mut ready = with(&[(types::READY, Status::True, "AllNodesReady")]);
        ready.history.push(HistoryEntry {
            revision: 1,
            render_hash: "h".into(),
            module_digest: "sha256:m".into(),
            version: None,
            applied_at: Time(jiff::Timestamp::UNIX_EPOCH),
        });
        assert_eq!(
            reasons(&transitions(&failing, &ready)),
            ["Rendered", "Ready"]
        );
        assert!(transitions(&ready, &ready).is_empty());
    }

    #[test]
    fn notes_are_bounded() {
        let long = "é".repeat(2000);
        let e = event(EventType::Warning, "X", "Y", &long);
        assert!(
            e.note
                .is_some_and(|n| n.len() <= pequod_api::events::NOTE_LIMIT + 3)
        );
    }
}
