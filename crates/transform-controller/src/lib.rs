//! The transform-controller: Transform → render → ResourceGraph.
//!
//! Each reconcile is a named pipeline — fetch (the module, [`pequod_source`]) → merge input →
//! render (the CUE engine) → check violations → write the ResourceGraph → status — with one
//! error type per step. A failed step never touches the last good ResourceGraph: what was
//! running keeps running.
//!
//! This first slice renders and writes graphs with Fetched/Validated/Rendered conditions;
//! valuesFrom, watches of referenced objects, history, events and status aggregated from the
//! ResourceGraph follow.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource as _, ResourceExt as _};
use pequod_api::conditions::{self, Status, Summary, types};
use pequod_api::{
    GraphModule, LocalObjectReference, ResolvedCueRef, ResourceGraph, ResourceGraphSpec, Severity,
    SourceRef, Transform, TransformStatus, Violation,
};
use pequod_cue::{Engine, EvalError, ModuleSource};
use serde_json::{Value, json};

/// Shared by every reconcile.
pub struct Context {
    /// The operator's client.
    pub client: Client,
    /// The CUE engine (one per process).
    pub engine: Engine,
}

/// Errors that abort a reconcile (and are retried); render failures are not errors but status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the ResourceGraph failed.
    #[error("writing the ResourceGraph: {0}")]
    WriteGraph(#[source] kube::Error),
    /// Writing the Transform's status failed.
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    /// The Transform lacks a namespace or UID (never from the API server).
    #[error("malformed Transform: {0}")]
    Malformed(String),
}

/// How a render ended, for status.
enum Outcome {
    /// The module could not be fetched.
    FetchFailed(String),
    /// Input or module errors, as violations.
    Invalid {
        reason: &'static str,
        message: String,
        violations: Vec<Violation>,
    },
    /// Rendered; Error-severity violations block the write.
    Rendered {
        rendered: Arc<pequod_cue::Rendered>,
        fetched: pequod_source::Fetched,
        hash: String,
    },
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The input the module sees: the Transform's input plus `metadata {name, namespace}`.
pub fn merged_input(transform: &Transform) -> Value {
    let mut input = transform
        .spec
        .input
        .clone()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    input["metadata"] = json!({
        "name": transform.name_any(),
        "namespace": transform.namespace().unwrap_or_default(),
    });
    input
}

fn violations_of(error: &EvalError) -> Vec<Violation> {
    let errors = error.cue_errors();
    if errors.is_empty() {
        return vec![Violation {
            path: String::new(),
            message: error.to_string(),
            severity: Severity::Error,
            position: None,
        }];
    }
    errors
        .iter()
        .map(|e| Violation {
            path: e.path.clone(),
            message: e.message.clone(),
            severity: Severity::Error,
            position: e.positions.first().map(ToString::to_string),
        })
        .collect()
}

async fn render(transform: &Transform, ctx: &Context, namespace: &str) -> Outcome {
    let fetched = match pequod_source::fetch(&ctx.client, namespace, &transform.spec.cue_ref).await
    {
        Ok(fetched) => fetched,
        Err(e) => return Outcome::FetchFailed(e.to_string()),
    };
    let module = ModuleSource {
        digest: fetched.digest.clone(),
        files: fetched.files.clone(),
        package: fetched.package.clone(),
        deps: Vec::new(),
    };
    let input = merged_input(transform);
    let hash = pequod_api::module_digest(
        &[
            ("module".to_owned(), fetched.digest.clone()),
            ("input".to_owned(), input.to_string()),
        ]
        .into_iter()
        .collect(),
    );
    match ctx.engine.evaluate(&module, &input).await {
        Ok(rendered) => Outcome::Rendered {
            rendered,
            fetched,
            hash,
        },
        Err(error) => {
            let reason = match &error {
                EvalError::Schema(_) | EvalError::InvalidInput(_) => "SchemaViolation",
                EvalError::Timeout(_)
                | EvalError::OutOfMemory(_)
                | EvalError::GuestCrash { .. } => "EvaluationLimit",
                _ => "RenderFailed",
            };
            Outcome::Invalid {
                reason,
                message: error.to_string(),
                violations: violations_of(&error),
            }
        }
    }
}

/// Reconciles one Transform: fetch → merge input → render → check violations → write the
/// ResourceGraph → status. Suspended Transforms write nothing.
pub async fn reconcile(
    transform: Arc<Transform>,
    ctx: Arc<Context>,
) -> Result<kube::runtime::controller::Action, Error> {
    use kube::runtime::controller::Action;
    let namespace = transform
        .namespace()
        .ok_or_else(|| Error::Malformed("no namespace".into()))?;
    let name = transform.name_any();
    if transform.spec.suspend {
        return Ok(Action::await_change());
    }
    let old = transform.status.clone().unwrap_or_default();
    let mut status = TransformStatus {
        observed_generation: transform.metadata.generation,
        ..old.clone()
    };
    let marks = Marks {
        generation: transform.metadata.generation,
        time: now(),
    };
    match render(&transform, &ctx, &namespace).await {
        Outcome::FetchFailed(message) => {
            marks.set(
                &mut status,
                types::FETCHED,
                Status::False,
                "FetchFailed",
                &message,
            );
            marks.stalled(&mut status, "FetchFailed", &message);
        }
        Outcome::Invalid {
            reason,
            message,
            violations,
        } => {
            marks.set(&mut status, types::FETCHED, Status::True, "Fetched", "");
            let validated = if reason == "SchemaViolation" {
                Status::False
            } else {
                Status::True
            };
            marks.set(&mut status, types::VALIDATED, validated, reason, &message);
            marks.set(
                &mut status,
                types::RENDERED,
                Status::False,
                reason,
                &message,
            );
            marks.stalled(&mut status, reason, &message);
            status.violations = violations;
        }
        Outcome::Rendered {
            rendered,
            fetched,
            hash,
        } => {
            let graph = Rendering {
                transform: &transform,
                ctx: &ctx,
                namespace: &namespace,
                rendered: &rendered,
                fetched: &fetched,
                hash: &hash,
            };
            on_rendered(&graph, &marks, &old, &mut status).await?;
        }
    }
    if status != old {
        let patch = json!({"status": status});
        Api::<Transform>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Status)?;
    }
    Ok(Action::await_change())
}

/// What one successful render produced, and for whom.
struct Rendering<'a> {
    transform: &'a Transform,
    ctx: &'a Context,
    namespace: &'a str,
    rendered: &'a pequod_cue::Rendered,
    fetched: &'a pequod_source::Fetched,
    hash: &'a str,
}

/// Check violations, then write the graph (only when no Error violation blocks it).
async fn on_rendered(
    r: &Rendering<'_>,
    marks: &Marks,
    old: &TransformStatus,
    status: &mut TransformStatus,
) -> Result<(), Error> {
    marks.set(status, types::FETCHED, Status::True, "Fetched", "");
    let fetched_at = old
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
    status.violations.clone_from(&r.rendered.violations);
    status.outputs.clone_from(&r.rendered.outputs);
    let blocking: Vec<String> = r
        .rendered
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
        marks.set(
            status,
            types::VALIDATED,
            Status::False,
            "PolicyViolation",
            &message,
        );
        marks.stalled(status, "PolicyViolation", &message);
        return Ok(());
    }
    marks.set(status, types::VALIDATED, Status::True, "Valid", "");
    write_graph(
        r.transform,
        r.ctx,
        r.namespace,
        r.rendered,
        r.fetched,
        r.hash,
    )
    .await?;
    let nodes = format!("{} nodes", r.rendered.nodes.len());
    marks.set(status, types::RENDERED, Status::True, "Rendered", &nodes);
    status.render_hash = Some(r.hash.to_owned());
    status.resource_graph_ref = Some(LocalObjectReference {
        name: r.transform.name_any(),
    });
    let summary = Summary::Reconciling {
        reason: "GraphWritten",
        message: "waiting for the ResourceGraph to be Ready",
    };
    conditions::summarize(
        &mut status.conditions,
        summary,
        marks.generation,
        &marks.time,
    );
    Ok(())
}

/// The generation and time every condition of one pass is written with.
struct Marks {
    generation: Option<i64>,
    time: Time,
}

impl Marks {
    fn set(
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

    fn stalled(&self, status: &mut TransformStatus, reason: &str, message: &str) {
        conditions::summarize(
            &mut status.conditions,
            Summary::Stalled { reason, message },
            self.generation,
            &self.time,
        );
    }
}

/// Server-side applies the ResourceGraph (same name, owned by the Transform); the revision
/// goes up only when the render changed.
async fn write_graph(
    transform: &Transform,
    ctx: &Context,
    namespace: &str,
    rendered: &pequod_cue::Rendered,
    fetched: &pequod_source::Fetched,
    hash: &str,
) -> Result<(), Error> {
    let name = transform.name_any();
    let graphs = Api::<ResourceGraph>::namespaced(ctx.client.clone(), namespace);
    let current = graphs.get_opt(&name).await.map_err(Error::WriteGraph)?;
    let revision = match &current {
        Some(graph) if graph.spec.render_hash == hash => graph.spec.revision,
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
    let mut nodes = rendered.nodes.clone();
    for node in &mut nodes {
        node.apply_policy.deletion_policy = transform.spec.deletion_policy;
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
            render_hash: hash.to_owned(),
            module: GraphModule {
                reference: transform.spec.cue_ref.reference.chars().take(253).collect(),
                digest: fetched.digest.clone(),
            },
            service_account_name: transform.spec.service_account_name.clone(),
            drift_policy: transform.spec.drift_policy,
            nodes,
        },
    );
    graph.metadata.owner_references = Some(vec![owner]);
    graphs
        .patch(
            &name,
            &PatchParams::apply(pequod_api::FIELD_MANAGER).force(),
            &Patch::Apply(&graph),
        )
        .await
        .map_err(Error::WriteGraph)?;
    Ok(())
}
