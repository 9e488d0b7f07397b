//! Readiness of a live object, as pure functions.
//!
//! The built-in `Current` rules follow kstatus as Flux and Timoni use it, with its footguns
//! fixed: every rule is generation-aware (a controller must have observed the latest spec), a
//! Job is ready when it has completed (not when it started), and a custom resource with no
//! status is *not* ready unless its node asks only for `Exists`.

use serde_json::Value;

/// A readiness rule of a node (the API's `readyWhen` entries, typed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyRule {
    /// Built-in, generation-aware rules for the object's kind.
    Current,
    /// Ready once the object exists.
    Exists,
    /// A status condition has the given status.
    ConditionMatch {
        /// Condition type.
        condition_type: String,
        /// Expected status (`True`).
        status: String,
    },
    /// A Deployment rolled out and Available.
    DeploymentAvailable,
    /// A Job completed.
    JobComplete,
    /// A field (dotted path) has the given value, compared as text.
    FieldEquals {
        /// Dotted path (`status.phase`).
        path: String,
        /// Expected text.
        value: String,
    },
}

/// The verdict on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Ready: dependents may proceed.
    Ready,
    /// Not ready yet; the text says what is awaited.
    InProgress(String),
    /// Will not become ready without a change; the text says why.
    Failed(String),
}

impl Readiness {
    /// True for [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// Evaluates every rule (an empty list means `Current`): failed if any failed, in progress if
/// any is in progress, else ready.
pub fn evaluate(rules: &[ReadyRule], live: &Value) -> Readiness {
    if live
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Readiness::InProgress("object is being deleted".into());
    }
    let default = [ReadyRule::Current];
    let rules = if rules.is_empty() {
        &default[..]
    } else {
        rules
    };
    let mut verdict = Readiness::Ready;
    for rule in rules {
        match evaluate_rule(rule, live) {
            Readiness::Ready => {}
            failed @ Readiness::Failed(_) => return failed,
            progress @ Readiness::InProgress(_) => {
                if verdict.is_ready() {
                    verdict = progress;
                }
            }
        }
    }
    verdict
}

fn evaluate_rule(rule: &ReadyRule, live: &Value) -> Readiness {
    match rule {
        ReadyRule::Exists => Readiness::Ready,
        ReadyRule::Current => current(live),
        ReadyRule::DeploymentAvailable => generation_observed(live).and(|| deployment(live)),
        ReadyRule::JobComplete => job(live),
        ReadyRule::ConditionMatch {
            condition_type,
            status,
        } => condition_match(live, condition_type, status),
        ReadyRule::FieldEquals { path, value } => field_equals(live, path, value),
    }
}

/// Sequencing helper: the first non-ready verdict wins.
trait Then {
    fn and(self, next: impl FnOnce() -> Readiness) -> Readiness;
}

impl Then for Readiness {
    fn and(self, next: impl FnOnce() -> Readiness) -> Readiness {
        if self.is_ready() { next() } else { self }
    }
}

fn text<'a>(live: &'a Value, pointer: &str) -> Option<&'a str> {
    live.pointer(pointer).and_then(Value::as_str)
}

fn int(live: &Value, pointer: &str) -> Option<i64> {
    live.pointer(pointer).and_then(Value::as_i64)
}

fn condition<'a>(live: &'a Value, condition_type: &str) -> Option<&'a Value> {
    live.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(condition_type))
}

fn condition_status<'a>(live: &'a Value, condition_type: &str) -> Option<&'a str> {
    condition(live, condition_type)?.get("status")?.as_str()
}

fn condition_text(live: &Value, condition_type: &str) -> String {
    condition(live, condition_type)
        .and_then(|c| {
            c.get("message")
                .and_then(Value::as_str)
                .or_else(|| c.get("reason").and_then(Value::as_str))
        })
        .unwrap_or_default()
        .to_owned()
}

/// The controller has seen the latest spec (`status.observedGeneration >= metadata.generation`).
/// Objects whose status never carries an observed generation pass.
fn generation_observed(live: &Value) -> Readiness {
    match (
        int(live, "/metadata/generation"),
        int(live, "/status/observedGeneration"),
    ) {
        (Some(generation), Some(observed)) if observed < generation => {
            Readiness::InProgress(format!(
                "waiting for the controller to observe generation {generation} (observed {observed})"
            ))
        }
        _ => Readiness::Ready,
    }
}

/// Like [`generation_observed`], but a missing status counts as not yet observed: for kinds
/// whose controller always writes one (Deployments, StatefulSets…).
fn status_observed(live: &Value) -> Readiness {
    if int(live, "/status/observedGeneration").is_none()
        && int(live, "/metadata/generation").is_some()
    {
        return Readiness::InProgress("waiting for the controller to report status".into());
    }
    generation_observed(live)
}

/// API groups served by Kubernetes itself; kinds in them without a specific rule are ready
/// when they exist (ConfigMap, Secret, RBAC, NetworkPolicy, …).
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "certificates.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
    "events.k8s.io",
];

fn current(live: &Value) -> Readiness {
    let api_version = text(live, "/apiVersion").unwrap_or_default();
    let group = crate::dag::ObjectKey::group_of(api_version);
    let kind = text(live, "/kind").unwrap_or_default();
    match (group, kind) {
        ("apps", "Deployment") => status_observed(live).and(|| deployment(live)),
        ("apps", "StatefulSet") => status_observed(live).and(|| stateful_set(live)),
        ("apps", "DaemonSet") => status_observed(live).and(|| daemon_set(live)),
        ("apps", "ReplicaSet") => status_observed(live).and(|| replica_set(live)),
        ("batch", "Job") => job(live),
        ("", "Pod") => pod(live),
        ("", "PersistentVolumeClaim") => match text(live, "/status/phase") {
            Some("Bound") => Readiness::Ready,
            phase => {
                Readiness::InProgress(format!("claim is {}", phase.unwrap_or("not yet bound")))
            }
        },
        ("", "Service") => service(live),
        ("", "Namespace") => match text(live, "/status/phase") {
            Some("Active") | None => Readiness::Ready,
            Some(phase) => Readiness::InProgress(format!("namespace is {phase}")),
        },
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(live),
        _ if BUILT_IN_GROUPS.contains(&group) => {
            generation_observed(live).and(|| generic_conditions(live, true))
        }
        _ => generation_observed(live).and(|| generic_conditions(live, false)),
    }
}

/// kstatus' generic rules: `Stalled=True` fails, `Reconciling=True` is in progress, then the
/// `Ready` condition decides. Without any of them a built-in kind is ready, a custom resource
/// is not (it may never report status; its node can say `Exists`).
fn generic_conditions(live: &Value, built_in: bool) -> Readiness {
    if condition_status(live, "Stalled") == Some("True") {
        return Readiness::Failed(format!("Stalled: {}", condition_text(live, "Stalled")));
    }
    if condition_status(live, "Reconciling") == Some("True") {
        return Readiness::InProgress(format!(
            "Reconciling: {}",
            condition_text(live, "Reconciling")
        ));
    }
    match condition(live, "Ready") {
        Some(ready) => {
            let generation = int(live, "/metadata/generation");
            let observed = ready.get("observedGeneration").and_then(Value::as_i64);
            if let (Some(g), Some(o)) = (generation, observed)
                && o < g
            {
                return Readiness::InProgress(format!(
                    "Ready condition describes generation {o}, not {g}"
                ));
            }
            match ready.get("status").and_then(Value::as_str) {
                Some("True") => Readiness::Ready,
                _ => Readiness::InProgress(format!("not Ready: {}", condition_text(live, "Ready"))),
            }
        }
        None if built_in => Readiness::Ready,
        None => Readiness::InProgress(
            "custom resource reports no Ready condition; set readyWhen Exists if it never does"
                .into(),
        ),
    }
}

fn deployment(live: &Value) -> Readiness {
    let cond = condition(live, "Progressing");
    if cond.and_then(|c| c.get("reason")).and_then(Value::as_str)
        == Some("ProgressDeadlineExceeded")
    {
        return Readiness::Failed(format!(
            "rollout stuck: {}",
            condition_text(live, "Progressing")
        ));
    }
    let want = int(live, "/spec/replicas").unwrap_or(1);
    let count = |field: &str| int(live, &format!("/status/{field}")).unwrap_or(0);
    let (replicas, updated, ready, available) = (
        count("replicas"),
        count("updatedReplicas"),
        count("readyReplicas"),
        count("availableReplicas"),
    );
    if updated < want {
        return Readiness::InProgress(format!("{updated} of {want} replicas updated"));
    }
    if replicas > updated {
        return Readiness::InProgress(format!(
            "{} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < want || ready < want {
        return Readiness::InProgress(format!("{available} of {want} replicas available"));
    }
    if want > 0 && condition_status(live, "Available") != Some("True") {
        return Readiness::InProgress("Deployment is not Available".into());
    }
    Readiness::Ready
}

fn stateful_set(live: &Value) -> Readiness {
    let want = int(live, "/spec/replicas").unwrap_or(1);
    let count = |field: &str| int(live, &format!("/status/{field}")).unwrap_or(0);
    let ready = count("readyReplicas");
    if ready < want {
        return Readiness::InProgress(format!("{ready} of {want} replicas ready"));
    }
    let partitioned = int(live, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    if text(live, "/spec/updateStrategy/type").unwrap_or("RollingUpdate") == "RollingUpdate" {
        if partitioned > 0 {
            let updated = count("updatedReplicas");
            if updated < want - partitioned {
                return Readiness::InProgress(format!(
                    "{updated} of {} partitioned replicas updated",
                    want - partitioned
                ));
            }
        } else if text(live, "/status/currentRevision") != text(live, "/status/updateRevision") {
            return Readiness::InProgress("rolling update in progress".into());
        }
    }
    Readiness::Ready
}

fn daemon_set(live: &Value) -> Readiness {
    let count = |field: &str| int(live, &format!("/status/{field}")).unwrap_or(0);
    let desired = count("desiredNumberScheduled");
    for field in [
        "currentNumberScheduled",
        "updatedNumberScheduled",
        "numberAvailable",
        "numberReady",
    ] {
        if count(field) < desired {
            return Readiness::InProgress(format!("{field} {} of {desired}", count(field)));
        }
    }
    Readiness::Ready
}

fn replica_set(live: &Value) -> Readiness {
    let want = int(live, "/spec/replicas").unwrap_or(1);
    let available = int(live, "/status/availableReplicas").unwrap_or(0);
    let ready = int(live, "/status/readyReplicas").unwrap_or(0);
    if available < want || ready < want {
        return Readiness::InProgress(format!("{available} of {want} replicas available"));
    }
    Readiness::Ready
}

fn job(live: &Value) -> Readiness {
    if condition_status(live, "Failed") == Some("True") {
        return Readiness::Failed(format!("Job failed: {}", condition_text(live, "Failed")));
    }
    if condition_status(live, "Complete") == Some("True") {
        return Readiness::Ready;
    }
    Readiness::InProgress("Job has not completed".into())
}

fn pod(live: &Value) -> Readiness {
    match text(live, "/status/phase") {
        Some("Succeeded") => return Readiness::Ready,
        Some("Failed") => return Readiness::Failed("Pod failed".into()),
        _ => {}
    }
    let statuses = live
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    if let Some(crashing) = statuses.into_iter().flatten().find(|s| {
        s.pointer("/state/waiting/reason").and_then(Value::as_str) == Some("CrashLoopBackOff")
    }) {
        let name = crashing.get("name").and_then(Value::as_str).unwrap_or("?");
        return Readiness::Failed(format!("container {name} is in CrashLoopBackOff"));
    }
    if condition_status(live, "Ready") == Some("True") {
        return Readiness::Ready;
    }
    Readiness::InProgress(format!(
        "Pod is {}",
        text(live, "/status/phase").unwrap_or("Pending")
    ))
}

fn service(live: &Value) -> Readiness {
    if text(live, "/spec/type") != Some("LoadBalancer") {
        return Readiness::Ready;
    }
    let has_ingress = live
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|i| !i.is_empty());
    if has_ingress {
        Readiness::Ready
    } else {
        Readiness::InProgress("load balancer has no ingress yet".into())
    }
}

fn crd(live: &Value) -> Readiness {
    if condition_status(live, "NamesAccepted") == Some("False") {
        return Readiness::Failed(format!(
            "names not accepted: {}",
            condition_text(live, "NamesAccepted")
        ));
    }
    if condition_status(live, "Established") == Some("True") {
        return Readiness::Ready;
    }
    Readiness::InProgress("CRD is not Established".into())
}

fn condition_match(live: &Value, condition_type: &str, status: &str) -> Readiness {
    let Some(found) = condition(live, condition_type) else {
        return Readiness::InProgress(format!("no {condition_type} condition yet"));
    };
    let generation = int(live, "/metadata/generation");
    let observed = found.get("observedGeneration").and_then(Value::as_i64);
    if let (Some(g), Some(o)) = (generation, observed)
        && o < g
    {
        return Readiness::InProgress(format!(
            "{condition_type} describes generation {o}, not {g}"
        ));
    }
    if found.get("status").and_then(Value::as_str) == Some(status) {
        Readiness::Ready
    } else {
        Readiness::InProgress(format!(
            "{condition_type} is not {status}: {}",
            condition_text(live, condition_type)
        ))
    }
}

fn field_equals(live: &Value, path: &str, expected: &str) -> Readiness {
    let pointer: String =
        path.split('.')
            .filter(|s| !s.is_empty())
            .fold(String::new(), |mut p, segment| {
                p.push('/');
                p.push_str(&segment.replace('~', "~0").replace('/', "~1"));
                p
            });
    let actual = match live.pointer(&pointer) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    match actual {
        Some(actual) if actual == expected => Readiness::Ready,
        Some(actual) => {
            Readiness::InProgress(format!("{path} is {actual:?}, waiting for {expected:?}"))
        }
        None => Readiness::InProgress(format!("{path} is not set, waiting for {expected:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(
        generation: i64,
        observed: i64,
        replicas: i64,
        updated: i64,
        available: i64,
        total: i64,
    ) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": replicas},
            "status": {
                "observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                "readyReplicas": available, "availableReplicas": available,
                "conditions": [{"type": "Available", "status": if available >= replicas {"True"} else {"False"}}],
            },
        })
    }

    fn in_progress(r: &Readiness) -> bool {
        matches!(r, Readiness::InProgress(_))
    }

    #[test]
    fn deployment_is_ready_only_when_rolled_out_at_the_latest_generation() {
        assert_eq!(
            evaluate(&[], &deployment(2, 2, 3, 3, 3, 3)),
            Readiness::Ready
        );
        assert!(
            in_progress(&evaluate(&[], &deployment(3, 2, 3, 3, 3, 3))),
            "stale observedGeneration"
        );
        assert!(
            in_progress(&evaluate(&[], &deployment(2, 2, 3, 2, 3, 3))),
            "not all updated"
        );
        assert!(
            in_progress(&evaluate(&[], &deployment(2, 2, 3, 3, 3, 4))),
            "old replica lingering"
        );
        assert!(
            in_progress(&evaluate(&[], &deployment(2, 2, 3, 3, 1, 3))),
            "not available"
        );
        let no_status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "generation": 1}});
        assert!(in_progress(&evaluate(&[], &no_status)), "no status yet");
        let mut stuck = deployment(2, 2, 3, 1, 1, 3);
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}]);
        assert_eq!(
            evaluate(&[], &stuck),
            Readiness::Failed("rollout stuck: timed out".into())
        );
        assert_eq!(
            evaluate(
                &[ReadyRule::DeploymentAvailable],
                &deployment(2, 2, 3, 3, 3, 3)
            ),
            Readiness::Ready
        );
    }

    #[test]
    fn job_means_complete_not_started() {
        let job = |conds: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"active": 1, "conditions": conds}});
        assert!(in_progress(&evaluate(&[], &job(json!([])))));
        assert_eq!(
            evaluate(&[], &job(json!([{"type": "Complete", "status": "True"}]))),
            Readiness::Ready
        );
        assert!(matches!(
            evaluate(
                &[ReadyRule::JobComplete],
                &job(json!([{"type": "Failed", "status": "True"}]))
            ),
            Readiness::Failed(_)
        ));
    }

    #[test]
    fn custom_resource_without_status_is_not_ready_unless_exists() {
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "generation": 1}});
        assert!(in_progress(&evaluate(&[], &widget)));
        assert_eq!(evaluate(&[ReadyRule::Exists], &widget), Readiness::Ready);
        let mut ready = widget.clone();
        ready["status"] =
            json!({"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]});
        assert_eq!(evaluate(&[], &ready), Readiness::Ready);
        ready["metadata"]["generation"] = json!(2);
        assert!(
            in_progress(&evaluate(&[], &ready)),
            "Ready describes an older generation"
        );
        let mut stalled = widget.clone();
        stalled["status"] =
            json!({"conditions": [{"type": "Stalled", "status": "True", "message": "bad spec"}]});
        assert_eq!(
            evaluate(&[], &stalled),
            Readiness::Failed("Stalled: bad spec".into())
        );
    }

    #[test]
    fn built_in_kinds_follow_their_rules() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(evaluate(&[], &cm), Readiness::Ready);
        let pvc = |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p"}, "status": {"phase": phase}});
        assert_eq!(evaluate(&[], &pvc("Bound")), Readiness::Ready);
        assert!(in_progress(&evaluate(&[], &pvc("Pending"))));
        let lb = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}, "status": {}});
        assert!(in_progress(&evaluate(&[], &lb)));
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"},
            "status": {"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]}});
        assert_eq!(evaluate(&[], &crd), Readiness::Ready);
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "status": {"phase": "Terminating"}});
        assert!(in_progress(&evaluate(&[], &ns)));
        let crash = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(
            evaluate(&[], &crash),
            Readiness::Failed("container app is in CrashLoopBackOff".into())
        );
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "a", "updateRevision": "b"}});
        assert!(
            in_progress(&evaluate(&[], &sts)),
            "revision rollout unfinished"
        );
        let deleting = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z"}});
        assert!(in_progress(&evaluate(&[ReadyRule::Exists], &deleting)));
    }

    #[test]
    fn explicit_rules_all_must_hold() {
        let obj = json!({"apiVersion": "example.com/v1", "kind": "Db", "metadata": {"name": "d", "generation": 1},
            "status": {"phase": "Running", "replicas": 3, "conditions": [{"type": "Synced", "status": "True"}]}});
        let synced = ReadyRule::ConditionMatch {
            condition_type: "Synced".into(),
            status: "True".into(),
        };
        let running = ReadyRule::FieldEquals {
            path: "status.phase".into(),
            value: "Running".into(),
        };
        let three = ReadyRule::FieldEquals {
            path: "status.replicas".into(),
            value: "3".into(),
        };
        assert_eq!(
            evaluate(&[synced.clone(), running.clone(), three], &obj),
            Readiness::Ready
        );
        let five = ReadyRule::FieldEquals {
            path: "status.replicas".into(),
            value: "5".into(),
        };
        assert_eq!(
            evaluate(&[running, five], &obj),
            Readiness::InProgress("status.replicas is \"3\", waiting for \"5\"".into())
        );
        let absent = ReadyRule::ConditionMatch {
            condition_type: "Healthy".into(),
            status: "True".into(),
        };
        assert!(in_progress(&evaluate(&[synced, absent], &obj)));
    }
}
