//! One pass over a Transform: fetch → merge input → render → check violations → write the
//! ResourceGraph → status. A failed step ends the pass with status (and an event) and never
//! touches the last good ResourceGraph.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use pequod_api::Reason;
use pequod_api::conditions::{self, types};
use pequod_api::lenient::Lenient;
use pequod_api::{
    AdoptRule, ApplyMode, ResourceGraph, Severity, Transform, TransformStatus, Violation,
};
use pequod_cue::{EvalError, ModuleSource};
use serde_json::{Value, json};

use crate::finalizer::{ensure_finalizer, suspend_graph, teardown};
use crate::outcome::{Outcome, Rendering, invalid_spec, record_outcome};
use crate::status::{self, Marks};
use crate::values::{self, Resolved};
use crate::{Context, Error};

pub(crate) fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The input the module sees without `valuesFrom`: the Transform's input plus
/// `metadata {name, namespace}`.
pub fn merged_input(transform: &Transform) -> Value {
    values::merge_input(transform, &[]).unwrap_or_else(|_| json!({}))
}

/// The render hash: what the graph was built from (module digest, the full input and the
/// adoption rules, which set nodes' apply mode). Without rules it is what it always was.
fn render_hash(module_digest: &str, input: &Value, adopt: &[AdoptRule]) -> String {
    let mut parts: std::collections::BTreeMap<String, String> = [
        ("module".to_owned(), module_digest.to_owned()),
        ("input".to_owned(), input.to_string()),
    ]
    .into_iter()
    .collect();
    if !adopt.is_empty() {
        parts.insert("adopt".into(), json!(adopt).to_string());
    }
    pequod_api::module_digest(&parts)
}

/// `spec.adopt`: a node applied with mode `Apply` whose object a rule names may take over an
/// existing object that is not Pequod's (mode `Adopt`). `Create` nodes stay as they are.
pub(crate) fn adopt_mode(node: &mut pequod_api::GraphNode, rules: &[AdoptRule]) {
    if node.apply_policy.mode != ApplyMode::Apply {
        return;
    }
    let kind = node.object["kind"].as_str().unwrap_or_default();
    let name = node.object["metadata"]["name"].as_str().unwrap_or_default();
    let named = |rule: &AdoptRule| {
        (rule.kind == "*" || rule.kind == kind) && rule.name.as_deref().is_none_or(|n| n == name)
    };
    if rules.iter().any(named) {
        node.apply_policy.mode = ApplyMode::Adopt;
    }
}

/// Reconciles one Transform. Suspended Transforms write nothing (deletion still tears down).
pub async fn reconcile(transform: Arc<Transform>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = transform
        .namespace()
        .ok_or_else(|| Error::Malformed("no namespace".into()))?;
    if transform.metadata.deletion_timestamp.is_some() {
        return teardown(&transform, &ctx, &namespace).await;
    }
    if transform.spec.suspend {
        suspend_graph(&transform, &ctx, &namespace).await?;
        return Ok(Action::await_change());
    }
    if let Some(problem) = transform.spec.problem() {
        // Stored before the CRD had its bounds, or nested too deep to decode: say so on this
        // one object and wait for a change; the last good graph keeps running.
        return invalid_spec(&transform, &ctx, &namespace, &problem).await;
    }
    ensure_finalizer(&transform, &ctx, &namespace).await?;
    let graphs = Api::<ResourceGraph>::namespaced(ctx.client.clone(), &namespace);
    let mut graph = graphs
        .get_opt(&transform.name_any())
        .await
        .map_err(Error::ReadGraph)?;
    let old = transform.status.clone().unwrap_or_default();
    let mut status = TransformStatus {
        observed_generation: transform.metadata.generation,
        ..old.clone()
    };
    let marks = Marks {
        generation: transform.metadata.generation,
        time: now(),
    };
    let (outcome, secrets) = render(&transform, &ctx, &namespace, graph.as_ref(), &old).await;
    let next = record_outcome(
        &transform,
        &ctx,
        &marks,
        outcome,
        &secrets,
        &mut graph,
        &mut status,
    )
    .await?;
    status::count_nodes(&mut status, graph.as_ref());
    crate::events::publish(
        ctx.recorder.as_ref(),
        &transform,
        &crate::events::transitions(&old, &status),
    )
    .await;
    if status != old {
        let patch = json!({"status": status});
        Api::<Lenient<Transform>>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &transform.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::Status)?;
    }
    match next.retry {
        Some(message) => Err(Error::Transient(message)),
        // The next poll of a mutable reference, or the `spec.timeout` deadline if sooner.
        None => Ok(next_check(&transform)
            .into_iter()
            .chain(next.deadline)
            .min()
            .map_or_else(Action::await_change, Action::requeue)),
    }
}

/// How often a mutable remote reference is re-checked when the Transform gives no `interval`.
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// When a mutable remote reference (a tag, a version constraint, a branch) is looked at again:
/// `interval` (default [`DEFAULT_INTERVAL`]) plus a stable per-Transform offset of up to 10 %,
/// so that a thousand Transforms do not poll in the same second. `None` for local sources and
/// exact pins (an OCI digest, a Git commit), which never change.
pub fn next_check(transform: &Transform) -> Option<std::time::Duration> {
    let cue_ref = &transform.spec.cue_ref;
    let pinned = match cue_ref.source_type {
        pequod_api::SourceType::Oci => cue_ref.reference.contains("@sha256:"),
        pequod_api::SourceType::Git => {
            let commit = |v: &str| v.len() == 40 && v.chars().all(|c| c.is_ascii_hexdigit());
            let fragment = cue_ref.reference.rsplit_once('#').map(|(_, f)| f);
            cue_ref.version.as_deref().is_some_and(commit) || fragment.is_some_and(commit)
        }
        _ => return None,
    };
    if pinned {
        return None;
    }
    // Out-of-range values never get here (`TransformSpec::problem`); clamped all the same, so
    // that no value can overflow or poll in a loop.
    let interval = cue_ref
        .interval
        .as_deref()
        .and_then(|i| pequod_api::parse_duration(i).ok())
        .unwrap_or(DEFAULT_INTERVAL)
        .clamp(
            pequod_api::transform::MIN_INTERVAL,
            pequod_api::transform::MAX_DURATION,
        );
    let seed = transform.uid().unwrap_or_else(|| transform.name_any());
    let spread = pequod_api::module_digest(&[("uid".to_owned(), seed)].into_iter().collect());
    let per_mille = spread
        .trim_start_matches("sha256:")
        .get(..8)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .map_or(0, |n| n % 1000);
    Some(interval.saturating_add(interval.mul_f64(f64::from(per_mille) / 10_000.0)))
}

/// `spec.timeout` (bounded by the CRD; an out-of-range value stalls the Transform earlier) and
/// its text.
pub(crate) fn timeout(transform: &Transform) -> Option<(Duration, &str)> {
    let text = transform.spec.timeout.as_deref()?;
    let parsed = pequod_api::transform::bounded_duration(
        "spec.timeout",
        text,
        pequod_api::transform::MIN_TIMEOUT,
    )
    .ok()?;
    Some((parsed, text))
}

/// Fetch → merge input → (unless nothing changed) render. Also returns the Secret values that
/// went into the input, so that messages can be redacted.
async fn render(
    transform: &Transform,
    ctx: &Context,
    namespace: &str,
    graph: Option<&ResourceGraph>,
    old: &TransformStatus,
) -> (Outcome, Vec<String>) {
    let started = Instant::now();
    let fetched = ctx
        .sources
        .fetch(&ctx.client, namespace, &transform.spec.cue_ref)
        .await;
    ctx.metrics.fetched(
        source_type_label(transform),
        fetched.is_ok(),
        started.elapsed(),
    );
    let fetched = match fetched {
        Ok(fetched) => fetched,
        Err(e) => {
            let outcome = Outcome::FetchFailed {
                reason: fetch_reason(&e),
                message: e.to_string(),
                transient: e.is_transient(),
            };
            return (outcome, Vec::new());
        }
    };
    let Resolved { input, secrets } = match values::resolve(&ctx.client, transform).await {
        Ok(resolved) => resolved,
        Err(e) => {
            let outcome = Outcome::ValuesFailed {
                message: e.to_string(),
                transient: e.is_transient(),
            };
            return (outcome, Vec::new());
        }
    };
    let hash = render_hash(&fetched.digest, &input, &transform.spec.adopt);
    if unchanged(transform, ctx, graph, old, &hash) {
        return (Outcome::Unchanged, secrets);
    }
    let module = ModuleSource {
        digest: fetched.digest.clone(),
        files: fetched.files.clone(),
        package: fetched.package.clone(),
        deps: fetched
            .deps
            .iter()
            .map(|dep| pequod_cue::Dependency {
                module: dep.module.clone(),
                version: dep.version.clone(),
                files: dep.files.clone(),
            })
            .collect(),
    };
    let hits_before = ctx.engine.stats().memo_hits;
    let started = Instant::now();
    let evaluated = ctx.engine.evaluate(&module, &input).await;
    let cache_hit = ctx.engine.stats().memo_hits > hits_before;
    ctx.metrics
        .cue_eval(evaluated.is_ok(), started.elapsed(), cache_hit);
    let outcome = match evaluated {
        Ok(rendered) => Outcome::Rendered(Box::new(Rendering {
            rendered,
            fetched,
            hash,
        })),
        Err(error) => invalid(&error),
    };
    (outcome, secrets)
}

/// The `Fetched=False` reason: what kind of problem, so that alerts and users can tell an
/// expired credential from a missing release from a registry outage.
#[allow(clippy::match_wildcard_for_single_variants)] // new sources' errors start out generic
fn fetch_reason(error: &pequod_source::FetchError) -> &'static str {
    use pequod_source::FetchError as E;
    match error.cause() {
        E::Unauthorized { .. } | E::SecretNotFound { .. } | E::BadSecret { .. } => {
            Reason::Unauthorized.as_str()
        }
        E::NotFound { .. } | E::ModuleNotFound { .. } | E::UnknownEmbedded { .. } => {
            Reason::NotFound.as_str()
        }
        E::NoVersionMatches { .. } => Reason::NoVersionMatches.as_str(),
        E::Network { .. } | E::Registry { .. } | E::Kube(_) => Reason::NetworkError.as_str(),
        E::InvalidRef { .. } => Reason::InvalidRef.as_str(),
        E::SourceNotAllowed { .. } => Reason::SourceNotAllowed.as_str(),
        E::BadArtifact { .. }
        | E::BadModuleFile { .. }
        | E::NoCueFiles { .. }
        | E::PackageNotFound { .. } => Reason::BadModule.as_str(),
        _ => Reason::FetchFailed.as_str(),
    }
}

fn source_type_label(transform: &Transform) -> &'static str {
    match transform.spec.cue_ref.source_type {
        pequod_api::SourceType::Inline => "inline",
        pequod_api::SourceType::Configmap => "configmap",
        pequod_api::SourceType::Oci => "oci",
        pequod_api::SourceType::Git => "git",
        pequod_api::SourceType::Embedded => "embedded",
    }
}

fn invalid(error: &EvalError) -> Outcome {
    let reason = match error {
        EvalError::Schema(_) | EvalError::InvalidInput(_) => Reason::SchemaViolation.as_str(),
        EvalError::Timeout(_) | EvalError::OutOfMemory(_) | EvalError::GuestCrash { .. } => {
            Reason::EvaluationLimit.as_str()
        }
        _ => Reason::RenderFailed.as_str(),
    };
    let errors = error.cue_errors();
    let violations = if errors.is_empty() {
        vec![Violation {
            path: String::new(),
            message: error.to_string(),
            severity: Severity::Error,
            position: None,
        }]
    } else {
        errors
            .iter()
            .map(|e| Violation {
                path: e.path.clone(),
                message: e.message.clone(),
                severity: Severity::Error,
                position: e.positions.first().map(ToString::to_string),
            })
            .collect()
    };
    Outcome::Invalid {
        reason,
        message: error.to_string(),
        violations,
        transient: error.is_transient(),
    }
}

/// The graph already holds this render with the Transform's current settings, and the last
/// pass ended well: nothing to render or write.
fn unchanged(
    transform: &Transform,
    ctx: &Context,
    graph: Option<&ResourceGraph>,
    old: &TransformStatus,
    hash: &str,
) -> bool {
    let healthy = |t: &str| conditions::is_true(&old.conditions, t);
    graph.is_some_and(|g| g.spec.render_hash == hash && settings_match(transform, ctx, g))
        && old.render_hash.as_deref() == Some(hash)
        && healthy(types::VALIDATED)
        && healthy(types::RENDERED)
}

/// The graph carries the Transform's current executor settings (which are not part of the
/// render): ServiceAccount, drift policy and deletion policy.
fn settings_match(transform: &Transform, ctx: &Context, graph: &ResourceGraph) -> bool {
    !graph.spec.suspend
        && graph.spec.service_account_name == service_account(transform, ctx)
        && graph.spec.drift_policy == transform.spec.drift_policy
        && graph
            .spec
            .nodes
            .iter()
            .all(|n| n.apply_policy.deletion_policy == transform.spec.deletion_policy)
}

/// The Transform's ServiceAccount, else the operator's default.
pub(crate) fn service_account(transform: &Transform, ctx: &Context) -> Option<String> {
    transform
        .spec
        .service_account_name
        .clone()
        .or_else(|| ctx.config.default_service_account.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pequod_api::{CueRef, SourceType, TransformSpec};
    use std::time::Duration;

    #[test]
    fn adopt_rules_match_kind_and_optional_name_and_leave_create_alone() {
        let node = |kind: &str, name: &str, mode: ApplyMode| {
            let mut node: pequod_api::GraphNode = serde_json::from_value(json!({
                "id": "n",
                "object": {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}},
            }))
            .unwrap();
            node.apply_policy.mode = mode;
            node
        };
        let rule = |kind: &str, name: Option<&str>| AdoptRule {
            kind: kind.into(),
            name: name.map(Into::into),
        };
        for (rules, kind, name, mode, expected) in [
            (
                vec![rule("ConfigMap", None)],
                "ConfigMap",
                "a",
                ApplyMode::Apply,
                ApplyMode::Adopt,
            ),
            (
                vec![rule("ConfigMap", Some("b"))],
                "ConfigMap",
                "a",
                ApplyMode::Apply,
                ApplyMode::Apply,
            ),
            (
                vec![rule("*", Some("a"))],
                "Service",
                "a",
                ApplyMode::Apply,
                ApplyMode::Adopt,
            ),
            (
                vec![rule("Service", None)],
                "ConfigMap",
                "a",
                ApplyMode::Apply,
                ApplyMode::Apply,
            ),
            (
                vec![rule("*", None)],
                "Secret",
                "s",
                ApplyMode::Create,
                ApplyMode::Create,
            ),
            (vec![], "ConfigMap", "a", ApplyMode::Apply, ApplyMode::Apply),
        ] {
            let mut n = node(kind, name, mode);
            adopt_mode(&mut n, &rules);
            assert_eq!(
                n.apply_policy.mode, expected,
                "{kind}/{name} with {rules:?}"
            );
        }
        let input = json!({"a": 1});
        assert_eq!(
            render_hash("sha256:m", &input, &[]),
            render_hash("sha256:m", &input, &[]),
        );
        assert_ne!(
            render_hash("sha256:m", &input, &[]),
            render_hash("sha256:m", &input, &[rule("*", None)]),
            "a rule changes the graph"
        );
    }

    fn transform(
        source_type: SourceType,
        reference: &str,
        version: Option<&str>,
        uid: &str,
    ) -> Transform {
        let mut t = Transform::new(
            "t",
            TransformSpec::new(
                CueRef {
                    version: version.map(str::to_owned),
                    interval: Some("1m".into()),
                    ..CueRef::new(source_type, reference)
                },
                None,
            ),
        );
        t.metadata.uid = Some(uid.into());
        t
    }

    #[test]
    fn a_hostile_interval_never_overflows_or_loops() {
        let max = pequod_api::transform::MAX_DURATION;
        for (interval, low, high) in [
            ("5124095576030000h", max, max.mul_f64(1.1)),
            ("1ms", Duration::from_secs(10), Duration::from_secs(11)),
            ("0s", Duration::from_secs(10), Duration::from_secs(11)),
            ("1e400", Duration::from_secs(300), Duration::from_secs(330)),
        ] {
            let mut t = transform(SourceType::Git, "https://g/r#main", None, "u");
            t.spec.cue_ref.interval = Some(interval.into());
            let next = next_check(&t).expect("polled");
            assert!(next >= low && next <= high, "{interval}: {next:?}");
            assert!(t.spec.problem().is_some(), "{interval} is reported");
        }
    }

    #[test]
    fn only_mutable_remote_references_are_polled_spread_over_ten_percent() {
        assert_eq!(
            next_check(&transform(SourceType::Embedded, "webservice", None, "u")),
            None
        );
        let pinned =
            "r.example/m@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            next_check(&transform(SourceType::Oci, pinned, None, "u")),
            None
        );
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            next_check(&transform(
                SourceType::Git,
                "https://g/r",
                Some(commit),
                "u"
            )),
            None
        );
        let in_ref = format!("https://g/r#{commit}");
        assert_eq!(
            next_check(&transform(SourceType::Git, &in_ref, None, "u")),
            None,
            "a commit in the ref pins"
        );
        let delays: Vec<Duration> = (0..1000)
            .map(|i| {
                next_check(&transform(
                    SourceType::Oci,
                    "r.example/m",
                    Some("^1"),
                    &format!("uid-{i}"),
                ))
                .expect("polled")
            })
            .collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(60) && *d < Duration::from_secs(66))
        );
        let mut seconds: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        seconds.sort_unstable();
        seconds.dedup();
        assert_eq!(
            seconds.len(),
            6,
            "spread over every second of the window: {seconds:?}"
        );
        let same = next_check(&transform(
            SourceType::Git,
            "https://g/r",
            Some("main"),
            "uid-7",
        ));
        assert_eq!(
            same,
            next_check(&transform(
                SourceType::Git,
                "https://g/r",
                Some("main"),
                "uid-7"
            )),
            "stable"
        );
    }
}
