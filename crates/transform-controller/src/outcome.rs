//! Outcome → status: how a pass ended (fetch, values, render, policy) becomes the Transform's
//! conditions, violations and history, and, when the render may run, the ResourceGraph write.
//! A failed step changes only the Transform's status: the last good graph keeps running.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource as _, ResourceExt as _};
use pequod_api::Reason;
use pequod_api::conditions::{Status, Summary, types};
use pequod_api::lenient::Lenient;
use pequod_api::{
    GraphModule, HistoryEntry, LocalObjectReference, ResolvedCueRef, ResourceGraph,
    ResourceGraphSpec, Severity, SourceRef, Transform, TransformStatus, Violation,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use crate::reconcile::{adopt_mode, now, service_account, timeout};
use crate::status::{self, Marks};
use crate::{Context, Error};

/// How a pass ended before the graph step, for status.
pub(crate) enum Outcome {
    /// The module could not be fetched.
    FetchFailed {
        reason: &'static str,
        message: String,
        transient: bool,
    },
    /// The `valuesFrom` objects could not be read or merged.
    ValuesFailed { message: String, transient: bool },
    /// Input or module errors, as violations.
    Invalid {
        reason: &'static str,
        message: String,
        violations: Vec<Violation>,
        transient: bool,
    },
    /// Nothing the render depends on changed since the graph was written: no render, no write.
    Unchanged,
    /// Rendered; Error-severity violations block the write.
    Rendered(Box<Rendering>),
}

/// What one successful render produced.
pub(crate) struct Rendering {
    pub(crate) rendered: Arc<pequod_cue::Rendered>,
    pub(crate) fetched: pequod_source::Fetched,
    pub(crate) hash: String,
}

/// Marks the Transform `Stalled` with reason `InvalidSpec` and waits for a change.
pub(crate) async fn invalid_spec(
    transform: &Transform,
    ctx: &Context,
    namespace: &str,
    problem: &str,
) -> Result<Action, Error> {
    let old = transform.status.clone().unwrap_or_default();
    let mut status = TransformStatus {
        observed_generation: transform.metadata.generation,
        ..old.clone()
    };
    let marks = Marks {
        generation: transform.metadata.generation,
        time: now(),
    };
    stalled(&marks, &mut status, Reason::InvalidSpec.as_str(), problem);
    crate::events::publish(
        ctx.recorder.as_ref(),
        transform,
        &crate::events::transitions(&old, &status),
    )
    .await;
    if status != old {
        let patch = json!({"status": status});
        Api::<Lenient<Transform>>::namespaced(ctx.client.clone(), namespace)
            .patch_status(
                &transform.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::Status)?;
    }
    Ok(Action::await_change())
}

/// What a pass leads to: a retry with backoff (a transient failure) or a look at the
/// `spec.timeout` deadline.
pub(crate) struct Next {
    pub(crate) retry: Option<String>,
    pub(crate) deadline: Option<Duration>,
}

/// Turns the outcome into status (and a graph write); returns what the pass leads to.
pub(crate) async fn record_outcome(
    transform: &Transform,
    ctx: &Context,
    marks: &Marks,
    outcome: Outcome,
    secrets: &[String],
    graph: &mut Option<ResourceGraph>,
    status: &mut TransformStatus,
) -> Result<Next, Error> {
    let redact = |text: &str| pequod_api::redact::secrets_and_api_values(text, secrets);
    match outcome {
        // A permanent fetch failure of a mutable reference (a tag not pushed yet) is re-checked
        // at the Transform's interval.
        Outcome::FetchFailed {
            reason,
            message,
            transient,
        } => {
            marks.set(status, types::FETCHED, Status::False, reason, &message);
            if transient {
                // Retried with backoff by itself: progressing, not stuck (kstatus).
                marks.summarize(
                    status,
                    Summary::Reconciling {
                        reason,
                        message: &message,
                    },
                );
            } else {
                stalled(marks, status, reason, &message);
            }
            Ok(Next {
                retry: transient.then_some(message),
                deadline: None,
            })
        }
        Outcome::ValuesFailed { message, transient } => {
            fetched(marks, status);
            marks.set(
                status,
                types::VALIDATED,
                Status::False,
                Reason::ValuesFromFailed.as_str(),
                &message,
            );
            stalled(marks, status, Reason::ValuesFromFailed.as_str(), &message);
            Ok(Next {
                retry: transient.then_some(message),
                deadline: None,
            })
        }
        Outcome::Invalid {
            reason,
            message,
            violations,
            transient,
        } => {
            let message = redact(&message);
            record_invalid(marks, status, reason, &message);
            status.violations = violations
                .into_iter()
                .map(|v| Violation {
                    message: redact(&v.message),
                    ..v
                })
                .collect();
            Ok(Next {
                retry: transient.then_some(message),
                deadline: None,
            })
        }
        Outcome::Unchanged => {
            // Fetched may be False from a failed poll since the last render (registry down).
            fetched(marks, status);
            let deadline = status::summarize_from_graph(
                marks,
                status,
                graph.as_ref(),
                timeout(transform),
                secrets,
            );
            Ok(Next {
                retry: None,
                deadline,
            })
        }
        Outcome::Rendered(rendering) => {
            let written =
                on_rendered(transform, ctx, &rendering, marks, status, graph, secrets).await?;
            let deadline = if written {
                status::summarize_from_graph(
                    marks,
                    status,
                    graph.as_ref(),
                    timeout(transform),
                    secrets,
                )
            } else {
                None
            };
            Ok(Next {
                retry: None,
                deadline,
            })
        }
    }
}

fn fetched(marks: &Marks, status: &mut TransformStatus) {
    marks.set(
        status,
        types::FETCHED,
        Status::True,
        Reason::Fetched.as_str(),
        "",
    );
}

/// Input, policy or module errors: fetched, but not validated (schema, policy) or not
/// rendered.
fn record_invalid(marks: &Marks, status: &mut TransformStatus, reason: &str, message: &str) {
    fetched(marks, status);
    let validated = if [Reason::SchemaViolation, Reason::PolicyViolation]
        .iter()
        .any(|r| r.as_str() == reason)
    {
        Status::False
    } else {
        Status::True
    };
    marks.set(status, types::VALIDATED, validated, reason, message);
    marks.set(status, types::RENDERED, Status::False, reason, message);
    stalled(marks, status, reason, message);
}

pub(crate) fn stalled(marks: &Marks, status: &mut TransformStatus, reason: &str, message: &str) {
    marks.summarize(status, Summary::Stalled { reason, message });
}

/// Check violations, then write the graph (only when no Error violation blocks it). Returns
/// whether the graph holds this render now.
async fn on_rendered(
    transform: &Transform,
    ctx: &Context,
    r: &Rendering,
    marks: &Marks,
    status: &mut TransformStatus,
    graph: &mut Option<ResourceGraph>,
    secrets: &[String],
) -> Result<bool, Error> {
    fetched(marks, status);
    let fetched_at = status
        .resolved_cue_ref
        .as_ref()
        .filter(|c| c.digest == r.fetched.digest)
        .map_or_else(|| marks.time.clone(), |c| c.fetched_at.clone());
    status.resolved_cue_ref = Some(ResolvedCueRef {
        url: r.fetched.url.clone(),
        version: r.fetched.version.clone(),
        digest: r.fetched.digest.clone(),
        fetched_at,
    });
    status.violations = r
        .rendered
        .violations
        .iter()
        .map(|v| Violation {
            message: pequod_api::redact::secrets_and_api_values(&v.message, secrets),
            ..v.clone()
        })
        .collect();
    let blocking: Vec<String> = status
        .violations
        .iter()
        .filter(|v| v.severity == Severity::Error)
        .map(|v| format!("{}: {}", v.path, v.message))
        .collect();
    if !blocking.is_empty() {
        let message = format!(
            "{} policy violation(s) block the apply: {}",
            blocking.len(),
            blocking.join("; ")
        );
        record_invalid(marks, status, Reason::PolicyViolation.as_str(), &message);
        return Ok(false);
    }
    marks.set(
        status,
        types::VALIDATED,
        Status::True,
        Reason::Valid.as_str(),
        "",
    );
    // Outputs describe what runs: a blocked render does not change them.
    status.outputs.clone_from(&r.rendered.outputs);
    let written = match write_graph(transform, ctx, r, graph.as_ref()).await {
        Ok(written) => written,
        // The API server refuses the graph itself (a label value it rejects, an object too
        // large, too many nodes): permanent until the module or the input changes. Its message
        // quotes the refused value, which may be a Secret's.
        Err(Error::WriteGraph(kube::Error::Api(refused)))
            if matches!(refused.code, 400 | 413 | 422) =>
        {
            let message = format!(
                "the API server refused the rendered ResourceGraph ({}): {}",
                refused.code,
                pequod_api::redact::secrets_and_api_values(&refused.message, secrets)
            );
            marks.set(
                status,
                types::RENDERED,
                Status::False,
                Reason::InvalidGraph.as_str(),
                &message,
            );
            stalled(marks, status, Reason::InvalidGraph.as_str(), &message);
            return Ok(false);
        }
        Err(other) => return Err(other),
    };
    status::record_history(
        status,
        HistoryEntry {
            revision: written.spec.revision,
            render_hash: written.spec.render_hash.clone(),
            module_digest: r.fetched.digest.clone(),
            version: r.fetched.version.clone(),
            applied_at: marks.time.clone(),
        },
    );
    let nodes = format!(
        "revision {}: {} nodes",
        written.spec.revision,
        written.spec.nodes.len()
    );
    marks.set(
        status,
        types::RENDERED,
        Status::True,
        Reason::Rendered.as_str(),
        &nodes,
    );
    status.render_hash = Some(r.hash.clone());
    status.resource_graph_ref = Some(LocalObjectReference {
        name: transform.name_any(),
    });
    *graph = Some(written);
    Ok(true)
}

/// Server-side applies the ResourceGraph (same name, owned by the Transform); the revision
/// goes up only when the render changed. Returns the graph as the server now holds it.
async fn write_graph(
    transform: &Transform,
    ctx: &Context,
    r: &Rendering,
    current: Option<&ResourceGraph>,
) -> Result<ResourceGraph, Error> {
    let name = transform.name_any();
    let namespace = transform.namespace().unwrap_or_default();
    let revision = match current {
        Some(graph) if graph.spec.render_hash == r.hash => graph.spec.revision,
        Some(graph) => graph.spec.revision + 1,
        None => 1,
    };
    let uid = transform
        .uid()
        .ok_or_else(|| Error::Malformed("no uid".into()))?;
    let owner = OwnerReference {
        api_version: Transform::api_version(&()).into_owned(),
        kind: Transform::kind(&()).into_owned(),
        name: name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut nodes = r.rendered.nodes.clone();
    for node in &mut nodes {
        node.apply_policy.deletion_policy = transform.spec.deletion_policy;
        adopt_mode(node, &transform.spec.adopt);
    }
    let mut graph = ResourceGraph::new(
        &name,
        ResourceGraphSpec {
            source_ref: SourceRef {
                api_version: owner.api_version.clone(),
                kind: owner.kind.clone(),
                name: name.clone(),
            },
            revision,
            render_hash: r.hash.clone(),
            module: GraphModule {
                reference: transform.spec.cue_ref.reference.chars().take(253).collect(),
                digest: r.fetched.digest.clone(),
            },
            service_account_name: service_account(transform, ctx),
            drift_policy: transform.spec.drift_policy,
            suspend: false,
            nodes,
        },
    );
    graph.metadata.owner_references = Some(vec![owner]);
    Api::<ResourceGraph>::namespaced(ctx.client.clone(), &namespace)
        .patch(
            &name,
            &PatchParams::apply(pequod_api::FIELD_MANAGER).force(),
            &Patch::Apply(&graph),
        )
        .await
        .map_err(Error::WriteGraph)
}
