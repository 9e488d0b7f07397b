//! One reconcile of a ResourceGraph: validate → observe → plan → record → apply → status.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use pequod_api::Reason;
use pequod_api::conditions::{self, Summary};
use pequod_api::{
    ApplyMode, ConflictPolicy, DriftPolicy, GraphNode, GraphPhase, InventoryEntry, NodePhase,
    NodeStatus, ObjectRef, ReadyRule, ReadyRuleType, ResourceGraph, ResourceGraphStatus,
};
use pequod_graph::scope::{self as boundary, Owner, WriteMode};
use pequod_graph::verdict::{GraphState, Next, NodeVerdict, Phase};
use pequod_graph::{Dag, NodeSpec, NodeState};
use pequod_metrics::Metrics;
use serde_json::Value;

use crate::apply::{self, Resolver, Served};
use crate::{Context, Error, events, remove, teardown};

/// Everything learned about one node before planning.
struct Observed {
    served: Option<Served>,
    namespace: Option<String>,
    desired: Value,
    hash: String,
    live: Option<kube::api::DynamicObject>,
    /// Desired fields another manager changed (JSON pointers).
    drift: Vec<String>,
}

/// Graphs as the executor reads and writes them: the answers to its writes are decoded as
/// leniently as its watch (one graph too deep to decode must still get its status).
pub(crate) type Graphs = pequod_api::lenient::Lenient<ResourceGraph>;

pub(crate) fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn ready_rules(node: &GraphNode) -> Vec<pequod_graph::ReadyRule> {
    node.ready_when.iter().map(to_core_rule).collect()
}

fn to_core_rule(rule: &ReadyRule) -> pequod_graph::ReadyRule {
    use pequod_graph::ReadyRule as Core;
    match rule.rule_type {
        ReadyRuleType::Current => Core::Current,
        ReadyRuleType::Exists => Core::Exists,
        ReadyRuleType::DeploymentAvailable => Core::DeploymentAvailable,
        ReadyRuleType::JobComplete => Core::JobComplete,
        ReadyRuleType::ConditionMatch => Core::ConditionMatch {
            condition_type: rule.condition_type.clone().unwrap_or_default(),
            status: rule
                .condition_status
                .clone()
                .unwrap_or_else(|| "True".into()),
        },
        ReadyRuleType::FieldEquals => Core::FieldEquals {
            path: rule.path.clone().unwrap_or_default(),
            value: rule.value.clone().unwrap_or_default(),
        },
    }
}

/// Reconciles one graph: validate → observe → plan → record → apply → status. Writes nothing
/// when the graph is invalid or out of scope, and nothing at all in a steady state.
pub async fn reconcile(graph: Arc<ResourceGraph>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = graph
        .namespace()
        .ok_or_else(|| Error::Malformed("no namespace".into()))?;
    let name = graph.name_any();
    let uid = graph
        .uid()
        .ok_or_else(|| Error::Malformed("no uid".into()))?;
    let owner = Owner {
        name: &name,
        namespace: &namespace,
        uid: &uid,
    };
    let old_status = graph.status.clone().unwrap_or_default();
    let graphs = Api::<Graphs>::namespaced(ctx.client.clone(), &namespace);

    // An abandoned teardown deletes nothing, so it needs no identity (which may be the very
    // thing that is broken).
    if graph.metadata.deletion_timestamp.is_some() && teardown::abandoned(&graph) {
        return teardown::teardown(&graph, &ctx, &graphs, &uid, old_status).await;
    }
    // Everything below acts as the graph's ServiceAccount when it names one; the graph's own
    // status is written by the operator.
    let ctx = match ctx.acting_for(&namespace, graph.spec.service_account_name.as_deref()) {
        Ok(acting) => Arc::new(acting),
        Err(message) => {
            let refusal = (Reason::ImpersonationUnavailable.as_str(), message);
            return stalled(&graphs, &graph, &ctx, old_status, refusal).await;
        }
    };
    if graph.metadata.deletion_timestamp.is_some() {
        return teardown::teardown(&graph, &ctx, &graphs, &uid, old_status).await;
    }
    if graph.spec.suspend {
        // The Transform is suspended: its objects are left exactly as they are.
        tracing::debug!(graph = %name, "suspended");
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let (dag, observed) = match validate(&graph, &ctx, &namespace, &owner).await? {
        Ok(valid) => valid,
        Err(refusal) => {
            return stalled(&graphs, &graph, &ctx, old_status, refusal).await;
        }
    };
    // Before anything is recorded or applied, so a deletion always finds its inventory.
    teardown::ensure_finalizer(&graphs, &graph).await?;
    watch_kinds(&ctx, (&namespace, &name), &observed);
    let (action, managed) =
        execute(&graph, &ctx, &graphs, &uid, &dag, observed, old_status).await?;
    ctx.metrics.dag_executed(started.elapsed());
    ctx.metrics.set_managed(&namespace, &name, managed);
    Ok(action)
}

/// One pass over a valid graph: observe → plan → record → apply → prune → status. Returns
/// when to look again and how many objects the inventory holds now.
async fn execute(
    graph: &ResourceGraph,
    ctx: &Context,
    graphs: &Api<Graphs>,
    uid: &str,
    dag: &Dag,
    mut observed: Vec<Observed>,
    old_status: ResourceGraphStatus,
) -> Result<(Action, usize), Error> {
    let name = graph.name_any();
    let namespace = graph.namespace().unwrap_or_default();
    let generation = graph.metadata.generation;
    let previous: HashMap<&str, &NodeStatus> = old_status
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    let states = observe(graph, ctx, &mut observed, &previous).await?;

    let (plan, to_apply, unserved) = schedule(graph, dag, &states, &observed, &previous);
    let mut inventory = record(
        graphs,
        &name,
        graph,
        dag,
        &observed,
        &to_apply,
        &old_status.inventory,
    )
    .await?;
    let owner = Owner {
        name: &name,
        namespace: &namespace,
        uid,
    };
    let results = apply_all(graph, ctx, &observed, &to_apply, owner, &inventory).await;
    let (nodes, ready, failed) = node_statuses(
        graph,
        &observed,
        &previous,
        &states,
        &plan,
        &results,
        &unserved,
        &mut inventory,
    );
    let converged = pequod_graph::verdict::may_prune(
        results.iter().any(|(_, r)| r.is_err()),
        plan.blocked.len(),
        unserved.len(),
        nodes.iter().map(|n| core_phase(n.phase)),
    );
    let (inventory, pruning, removed) = prune(ctx, dag, inventory, uid, converged).await;
    let managed = inventory.len();
    let drift = drift_report(graph, &observed);
    let mut new_status = ResourceGraphStatus {
        nodes,
        inventory,
        observed_generation: generation,
        ..old_status.clone()
    };
    let action = summarize(
        &mut new_status,
        pruning.as_deref(),
        ready,
        failed,
        graph.spec.nodes.len(),
        generation,
        ctx,
    );
    mark_drift(&mut new_status, drift.as_deref(), generation);
    write_status(graphs, &name, &old_status, &new_status).await?;
    // Only once the status says so: a failed write repeats the pass, and its events with it.
    let facts = events::Facts {
        removed,
        corrected: corrected(graph, &observed, &results),
    };
    let events = events::transitions(graph, &old_status, &new_status, &facts);
    events::publish(ctx.recorder.as_ref(), graph, &events).await;
    Ok((action, managed))
}

/// Why a graph is refused before any write: (reason, message).
type Refusal = (&'static str, String);

/// The write mode of a node, for the boundary.
fn write_mode(mode: ApplyMode) -> WriteMode {
    match mode {
        ApplyMode::Apply => WriteMode::Apply,
        ApplyMode::Create => WriteMode::Create,
        ApplyMode::Adopt => WriteMode::Adopt,
    }
}

/// Validate: check each node's fields, resolve kinds, build each object exactly as it will be
/// sent, decide the scope on that object, build the DAG. Writes nothing.
async fn validate(
    graph: &ResourceGraph,
    ctx: &Context,
    namespace: &str,
    owner: &Owner<'_>,
) -> Result<Result<(Dag, Vec<Observed>), Refusal>, Error> {
    let mut resolver = Resolver::new(ctx.client.clone());
    let mut observed = Vec::with_capacity(graph.spec.nodes.len());
    let mut specs = Vec::with_capacity(graph.spec.nodes.len());
    let mut cluster_scoped = Vec::with_capacity(graph.spec.nodes.len());
    for node in &graph.spec.nodes {
        if let Err(refusal) =
            boundary::check_ignore_fields(&node.id, &node.apply_policy.ignore_fields)
        {
            return Ok(Err((refusal.reason(), refusal.to_string())));
        }
        if let Some(why) = node
            .object
            .get(pequod_api::lenient::UNDECODABLE)
            .and_then(Value::as_str)
        {
            let message = format!("node {:?}: object is {why}", node.id);
            return Ok(Err((Reason::InvalidGraph.as_str(), message)));
        }
        let depth = pequod_api::lenient::depth(&node.object);
        if depth > pequod_api::lenient::MAX_OBJECT_DEPTH {
            let message = format!(
                "node {:?}: object is nested {depth} levels deep; at most {} are allowed",
                node.id,
                pequod_api::lenient::MAX_OBJECT_DEPTH
            );
            return Ok(Err((Reason::InvalidGraph.as_str(), message)));
        }
        let api_version = node.object["apiVersion"].as_str().unwrap_or_default();
        let kind = node.object["kind"].as_str().unwrap_or_default();
        let served = resolver
            .resolve(api_version, kind)
            .await
            .map_err(Error::Observe)?;
        // Kinds not served yet are assumed namespaced (custom resources usually are).
        let namespaced = served.as_ref().is_none_or(|s| s.namespaced);
        let object_namespace = node
            .object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        let resolved_namespace =
            namespaced.then(|| object_namespace.unwrap_or(namespace).to_owned());
        // Fields left to other managers (an HPA's replicas) are removed before the namespace
        // and the ownership marks are set: nothing a node says can undo either.
        let desired = boundary::sent_object(
            &node.object,
            &node.id,
            resolved_namespace.as_deref(),
            owner,
            &node.apply_policy.ignore_fields,
        );
        let spec = match NodeSpec::from_object(&node.id, &desired, node.depends_on.clone()) {
            Ok(spec) => spec,
            Err(e) => {
                return Ok(Err((Reason::InvalidGraph.as_str(), e.to_string())));
            }
        };
        let hash = apply::content_hash(&desired);
        observed.push(Observed {
            served,
            namespace: resolved_namespace,
            desired,
            hash,
            live: None,
            drift: Vec::new(),
        });
        specs.push(spec);
        cluster_scoped.push(!namespaced);
    }
    let scope = match graph_boundary(graph, ctx, namespace).await? {
        Ok(scope) => scope.with_own_namespaces(
            specs
                .iter()
                .zip(&graph.spec.nodes)
                .map(|(spec, node)| (&spec.object, write_mode(node.apply_policy.mode))),
        ),
        Err(refusal) => return Ok(Err(refusal)),
    };
    for ((spec, node), cluster) in specs.iter().zip(&graph.spec.nodes).zip(cluster_scoped) {
        let mode = write_mode(node.apply_policy.mode);
        if let Some(refusal) = scope.refusal(&node.id, &spec.object, cluster, mode) {
            return Ok(Err((refusal.reason(), refusal.to_string())));
        }
    }
    Ok(Dag::build(specs)
        .map(|dag| (dag, observed))
        .map_err(|e| (Reason::InvalidGraph.as_str(), e.to_string())))
}

/// This graph's boundary: the operator's scope, with cluster-scoped kinds only when its
/// namespace is trusted (its labels read with the operator's own client).
async fn graph_boundary(
    graph: &ResourceGraph,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<pequod_graph::Boundary, Refusal>, Error> {
    let scope = &ctx.config.scope;
    let labels = if scope.needs_namespace_labels() {
        let namespaces =
            Api::<k8s_openapi::api::core::v1::Namespace>::all(ctx.operator_client.clone());
        match namespaces.get_opt(namespace).await {
            Ok(found) => found.map(|n| n.labels().clone()),
            Err(kube::Error::Api(refused)) if refused.code == 403 => {
                let message = format!(
                    "the operator may not read Namespace {namespace:?} to check its labels against the cluster-scope selector: {}",
                    refused.message
                );
                return Ok(Err((Reason::OutOfScope.as_str(), message)));
            }
            Err(e) => return Err(Error::Observe(e)),
        }
    } else {
        None
    };
    let impersonating = graph.spec.service_account_name.is_some();
    Ok(Ok(scope.boundary(
        namespace,
        labels.as_ref(),
        impersonating,
    )))
}

/// Observe: live objects, and the readiness of nodes already applied at this content.
async fn observe(
    graph: &ResourceGraph,
    ctx: &Context,
    observed: &mut [Observed],
    previous: &HashMap<&str, &NodeStatus>,
) -> Result<HashMap<String, NodeState>, Error> {
    let mut states: HashMap<String, NodeState> = HashMap::new();
    let graph_uid = graph.uid().unwrap_or_default();
    for (node, seen) in graph.spec.nodes.iter().zip(observed.iter_mut()) {
        let Some(served) = &seen.served else { continue };
        let api = apply::api_for(&ctx.client, served, seen.namespace.as_deref());
        let object_name = seen.desired["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        seen.live = match api.get_opt(object_name).await {
            Ok(live) => live,
            Err(kube::Error::Api(refused)) if refused.code == 403 => {
                let message = format!("forbidden to read {object_name}: {}", refused.message);
                states.insert(node.id.clone(), NodeState::Failed(message));
                continue;
            }
            Err(e) => return Err(Error::Observe(e)),
        };
        let applied = previous
            .get(node.id.as_str())
            .and_then(|p| p.applied_hash.as_deref())
            == Some(seen.hash.as_str());
        if let (Some(live), true) = (&seen.live, applied) {
            if node.apply_policy.mode != ApplyMode::Create
                && let Some(taken) = taken_over(live, &graph_uid)
            {
                // Someone else's now: never Ready, and the next apply is refused until the
                // object is ours again (or gone, when it is re-created).
                states.insert(node.id.clone(), NodeState::Failed(taken));
                continue;
            }
            let live = serde_json::to_value(live).unwrap_or_default();
            if node.apply_policy.mode != ApplyMode::Create {
                // Fields the server stored differently from what we sent are not drift.
                let mut excluded = node.apply_policy.ignore_fields.clone();
                excluded.extend(
                    previous
                        .get(node.id.as_str())
                        .map(|p| p.normalized_fields.clone())
                        .unwrap_or_default(),
                );
                seen.drift = pequod_graph::drifted_fields(&seen.desired, &live, &excluded);
                if !seen.drift.is_empty() {
                    ctx.metrics.drifted(policy_label(graph.spec.drift_policy));
                }
            }
            if seen.drift.is_empty() || graph.spec.drift_policy == DriftPolicy::Report {
                let readiness = pequod_graph::evaluate(&ready_rules(node), &live);
                states.insert(node.id.clone(), NodeState::Applied(readiness));
            }
            // Under `Correct`, a drifted node stays pending and is applied again (forced).
        } else if let Some(failure) = previous
            .get(node.id.as_str())
            .filter(|p| is_apply_failure(p))
        {
            // Its dependents stay blocked by the failure while the apply is retried.
            states.insert(
                node.id.clone(),
                NodeState::Failed(failure.message.clone().unwrap_or_default()),
            );
        }
    }
    Ok(states)
}

/// Why an object this graph applied is no longer its own (its UID annotation changed or was
/// removed), naming who holds it now; `None` while it is ours.
fn taken_over(live: &kube::api::DynamicObject, graph_uid: &str) -> Option<String> {
    if apply::owned_by(live, graph_uid) {
        return None;
    }
    let object = format!(
        "{} {}",
        live.types.as_ref().map_or("object", |t| t.kind.as_str()),
        live.name_any()
    );
    Some(
        match boundary::owner_of(live.labels(), live.annotations()) {
            Some(other) => format!("{object} was taken over: it now belongs to {other}"),
            None => format!(
                "{object} lost this graph's ownership marks (someone removed them); it is left alone until they are restored or the object is deleted"
            ),
        },
    )
}

/// Plan, then pick the node indices to apply now (including failed applies to retry) and
/// those that wait because their kind is not served yet.
fn schedule(
    graph: &ResourceGraph,
    dag: &Dag,
    states: &HashMap<String, NodeState>,
    observed: &[Observed],
    previous: &HashMap<&str, &NodeStatus>,
) -> (pequod_graph::Plan, Vec<usize>, Vec<usize>) {
    let plan = pequod_graph::plan(dag, states);
    let index: HashMap<&str, usize> = graph
        .spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let retry = plan.failed.iter().filter(|id| {
        previous
            .get(id.as_str())
            .is_some_and(|p| is_apply_failure(p))
    });
    let (to_apply, unserved) = plan
        .apply
        .iter()
        .chain(retry)
        .map(|id| index[id.as_str()])
        .partition(|&i| observed[i].served.is_some());
    (plan, to_apply, unserved)
}

/// Record: every object about to be written is in the inventory before it is written.
async fn record(
    graphs: &Api<Graphs>,
    name: &str,
    graph: &ResourceGraph,
    dag: &Dag,
    observed: &[Observed],
    to_apply: &[usize],
    old_inventory: &[InventoryEntry],
) -> Result<Vec<InventoryEntry>, Error> {
    let mut inventory = old_inventory.to_vec();
    let mut recorded = false;
    for &i in to_apply {
        let node = &graph.spec.nodes[i];
        let key = &dag.nodes()[i].object;
        let entry = InventoryEntry {
            id: node.id.clone(),
            api_version: observed[i].desired["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: None,
            level: dag.level(&node.id).unwrap_or(0),
            deletion_policy: node.apply_policy.deletion_policy,
        };
        let same_object = |e: &InventoryEntry| {
            e.kind == entry.kind
                && e.namespace == entry.namespace
                && e.name == entry.name
                && e.api_version == entry.api_version
        };
        if !inventory.iter().any(same_object) {
            inventory.push(entry);
            recorded = true;
        }
    }
    if recorded {
        let patch = serde_json::json!({"status": {"inventory": inventory}});
        graphs
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Record)?;
    }
    Ok(inventory)
}

/// Apply, bounded in parallel; a failure only marks its node. An object in a namespace other
/// than the graph's own (or the operator's extra ones) is applied only once the inventory
/// holds that Namespace with the UID this graph created it with.
async fn apply_all(
    graph: &ResourceGraph,
    ctx: &Context,
    observed: &[Observed],
    to_apply: &[usize],
    owner: Owner<'_>,
    inventory: &[InventoryEntry],
) -> Vec<(usize, Result<kube::api::DynamicObject, String>)> {
    let created: HashSet<&str> = inventory
        .iter()
        .filter(|e| e.api_version == "v1" && e.kind == "Namespace" && e.uid.is_some())
        .map(|e| e.name.as_str())
        .collect();
    let extra = &ctx.config.scope.extra_namespaces;
    futures::stream::iter(to_apply.iter().copied())
        .map(|i| {
            let node = &graph.spec.nodes[i];
            let seen = &observed[i];
            let client = ctx.client.clone();
            let metrics = &ctx.metrics;
            let foreign = seen.namespace.as_deref().filter(|ns| {
                *ns != owner.namespace && !extra.iter().any(|e| e == ns) && !created.contains(ns)
            });
            async move {
                if let Some(namespace) = foreign {
                    let refused = format!(
                        "namespace {namespace:?} was not created by this graph (yet); a graph writes outside its own namespace only into Namespaces it created"
                    );
                    return (i, Err(refused));
                }
                (i, apply_node(&client, node, seen, owner, metrics).await)
            }
        })
        .buffer_unordered(ctx.config.apply_concurrency.max(1))
        .collect()
        .await
}

/// Per-node status after this pass, counting ready and failed nodes; fills inventory UIDs.
#[allow(clippy::too_many_arguments)] // the pass's facts, each used once
fn node_statuses(
    graph: &ResourceGraph,
    observed: &[Observed],
    previous: &HashMap<&str, &NodeStatus>,
    states: &HashMap<String, NodeState>,
    plan: &pequod_graph::Plan,
    results: &[(usize, Result<kube::api::DynamicObject, String>)],
    unserved: &[usize],
    inventory: &mut [InventoryEntry],
) -> (Vec<NodeStatus>, usize, usize) {
    let time = now();
    let mut node_status: Vec<NodeStatus> = Vec::with_capacity(graph.spec.nodes.len());
    let applied: HashMap<usize, &Result<kube::api::DynamicObject, String>> =
        results.iter().map(|(i, r)| (*i, r)).collect();
    let blocked: HashMap<&str, &pequod_graph::plan::Blocker> = plan
        .blocked
        .iter()
        .map(|(id, b)| (id.as_str(), b))
        .collect();
    let (mut ready, mut failed) = (0_usize, 0_usize);
    for (i, node) in graph.spec.nodes.iter().enumerate() {
        let seen = &observed[i];
        let previous = previous.get(node.id.as_str());
        let mut applied_hash = previous.and_then(|p| p.applied_hash.clone());
        let mut object_ref = previous.and_then(|p| p.object_ref.clone());
        let mut normalized_fields = previous
            .map(|p| p.normalized_fields.clone())
            .unwrap_or_default();
        let verdict = if let Some(result) = applied.get(&i) {
            match result {
                Ok(live) => {
                    applied_hash = Some(seen.hash.clone());
                    object_ref = Some(reference(&seen.desired, live.uid()));
                    if let Some(entry) = inventory.iter_mut().find(|e| e.id == node.id) {
                        entry.uid = live.uid();
                    }
                    let live = serde_json::to_value(live).unwrap_or_default();
                    // What the server answered to our apply is the baseline for drift.
                    normalized_fields = pequod_graph::drifted_fields(
                        &seen.desired,
                        &live,
                        &node.apply_policy.ignore_fields,
                    );
                    NodeVerdict::of_readiness(&pequod_graph::evaluate(&ready_rules(node), &live))
                }
                Err(message) => NodeVerdict::apply_failed(message.as_str()),
            }
        } else if unserved.contains(&i) {
            NodeVerdict::kind_not_served(seen.desired["kind"].as_str().unwrap_or_default())
        } else if let Some(blocker) = blocked.get(node.id.as_str()) {
            NodeVerdict::of_blocker(blocker)
        } else if let Some(NodeState::Applied(readiness)) = states.get(&node.id) {
            NodeVerdict::of_readiness(readiness)
        } else if let Some(NodeState::Failed(message)) = states.get(&node.id) {
            NodeVerdict::apply_failed(message.as_str())
        } else {
            NodeVerdict::pending()
        };
        let (phase, reason, message) = (
            node_phase(verdict.phase),
            verdict.reason.to_owned(),
            verdict.message,
        );
        match phase {
            NodePhase::Ready => ready += 1,
            NodePhase::Failed => failed += 1,
            _ => {}
        }
        let last_transition_time = match previous {
            Some(p) if p.phase == phase => p.last_transition_time.clone(),
            _ => Some(time.clone()),
        };
        node_status.push(NodeStatus {
            id: node.id.clone(),
            phase,
            reason: Some(reason),
            message: (!message.is_empty()).then_some(message),
            object_ref,
            applied_hash,
            normalized_fields,
            last_transition_time,
        });
    }
    (node_status, ready, failed)
}

/// Status: conditions and phase from the core's summary of the node counts; the action says
/// when to look again.
fn summarize(
    status: &mut ResourceGraphStatus,
    pruning: Option<&str>,
    ready: usize,
    failed: usize,
    total: usize,
    generation: Option<i64>,
    ctx: &Context,
) -> Action {
    let summary = pequod_graph::verdict::summarize(pruning, ready, failed, total);
    let condition = match summary.state {
        GraphState::Ready => Summary::Ready {
            reason: summary.reason,
            message: &summary.message,
        },
        GraphState::Progressing | GraphState::Failed => Summary::Reconciling {
            reason: summary.reason,
            message: &summary.message,
        },
    };
    conditions::summarize(&mut status.conditions, condition, generation, &now());
    status.phase = Some(match summary.state {
        GraphState::Ready => GraphPhase::Ready,
        GraphState::Progressing => GraphPhase::Progressing,
        GraphState::Failed => GraphPhase::Failed,
    });
    match summary.next {
        Next::AwaitChange => Action::await_change(),
        Next::Soon => Action::requeue(ctx.config.progress_requeue),
        Next::After(delay) => Action::requeue(delay),
    }
}

/// Prune: once every current node is applied, remove the next wave of inventory entries that
/// no node renders any more. Returns the inventory, while pruning what is going on, and the
/// entries removed.
async fn prune(
    ctx: &Context,
    dag: &Dag,
    inventory: Vec<InventoryEntry>,
    uid: &str,
    converged: bool,
) -> (Vec<InventoryEntry>, Option<String>, Vec<remove::Removed>) {
    let rendered: HashSet<(String, String, Option<String>, String)> = dag
        .nodes()
        .iter()
        .map(|n| {
            (
                n.object.group.clone(),
                n.object.kind.clone(),
                n.object.namespace.clone(),
                n.object.name.clone(),
            )
        })
        .collect();
    let (current, stale): (Vec<InventoryEntry>, Vec<InventoryEntry>) =
        inventory.into_iter().partition(|e| {
            let group = pequod_graph::ObjectKey::group_of(&e.api_version).to_owned();
            rendered.contains(&(group, e.kind.clone(), e.namespace.clone(), e.name.clone()))
        });
    if stale.is_empty() {
        return (current, None, Vec::new());
    }
    if !converged {
        // An apply error or an unfinished apply stops prune: the replacement must exist first.
        let mut all = current;
        all.extend(stale);
        return (all, None, Vec::new());
    }
    let mut resolver = Resolver::new(ctx.client.clone());
    let removal = remove::remove_next_wave(&ctx.client, &mut resolver, stale, uid).await;
    for removed in &removal.removed {
        ctx.metrics.pruned(&removed.entry.kind);
    }
    let message = if removal.errors.is_empty() {
        format!("{} stale objects left to prune", removal.remaining.len())
    } else {
        format!("prune failed, will retry: {}", removal.errors.join("; "))
    };
    let pruning = (!removal.remaining.is_empty()).then_some(message);
    let mut all = current;
    all.extend(removal.remaining);
    (all, pruning, removal.removed)
}

/// Nodes applied again in this pass to undo drift (`Correct`): node id and fields taken back.
fn corrected(
    graph: &ResourceGraph,
    observed: &[Observed],
    results: &[(usize, Result<kube::api::DynamicObject, String>)],
) -> Vec<(String, Vec<String>)> {
    if graph.spec.drift_policy != DriftPolicy::Correct {
        return Vec::new();
    }
    results
        .iter()
        .filter(|(i, result)| result.is_ok() && !observed[*i].drift.is_empty())
        .map(|(i, _)| (graph.spec.nodes[*i].id.clone(), observed[*i].drift.clone()))
        .collect()
}

/// Drift left in place under `Report`, named by object and field.
fn drift_report(graph: &ResourceGraph, observed: &[Observed]) -> Option<String> {
    if graph.spec.drift_policy != DriftPolicy::Report {
        return None;
    }
    let items: Vec<String> = observed
        .iter()
        .filter(|o| !o.drift.is_empty())
        .map(|o| {
            let kind = o.desired["kind"].as_str().unwrap_or_default();
            let name = o.desired["metadata"]["name"].as_str().unwrap_or_default();
            format!("{kind} {name}: {}", o.drift.join(", "))
        })
        .collect();
    (!items.is_empty()).then(|| format!("changed by another manager: {}", items.join("; ")))
}

/// `Drifted=True` while reported drift remains; absent otherwise.
fn mark_drift(status: &mut ResourceGraphStatus, drift: Option<&str>, generation: Option<i64>) {
    match drift {
        Some(message) => {
            conditions::set(
                &mut status.conditions,
                conditions::types::DRIFTED,
                conditions::Status::True,
                Reason::DriftDetected.as_str(),
                message,
                generation,
                &now(),
            );
        }
        None => {
            conditions::remove(&mut status.conditions, conditions::types::DRIFTED);
        }
    }
}

/// Keeps the watches in line with the kinds this graph uses now.
fn watch_kinds(ctx: &Context, graph: (&str, &str), observed: &[Observed]) {
    if let Some(watches) = &ctx.watches {
        let kinds: Vec<_> = observed
            .iter()
            .filter_map(|o| {
                o.served
                    .as_ref()
                    .map(|s| (s.resource.clone(), s.namespaced))
            })
            .collect();
        watches.set_kinds(graph, &kinds);
    }
}

/// Applies one node according to its policy; the error text says what a user can do.
async fn apply_node(
    client: &kube::Client,
    node: &GraphNode,
    seen: &Observed,
    owner: Owner<'_>,
    metrics: &Metrics,
) -> Result<kube::api::DynamicObject, String> {
    let Some(served) = &seen.served else {
        return Err("kind not served".into());
    };
    let api = apply::api_for(client, served, seen.namespace.as_deref());
    let name = seen.desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    let mut adopting = false;
    if let Some(live) = &seen.live {
        let ours = apply::owned_by(live, owner.uid);
        adopting = !ours && node.apply_policy.mode == ApplyMode::Adopt;
        match node.apply_policy.mode {
            ApplyMode::Create => return Ok(live.clone()),
            ApplyMode::Apply if !ours => {
                let held = boundary::owner_of(live.labels(), live.annotations())
                    .map_or_else(String::new, |other| format!(" (it belongs to {other})"));
                return Err(format!(
                    "{name} already exists and is not managed by this graph{held}; set applyPolicy.mode Adopt to take over an object nobody manages"
                ));
            }
            ApplyMode::Apply | ApplyMode::Adopt => {}
        }
        if adopting
            && let Some(why) = boundary::adoption_refusal(
                &owner,
                live.namespace().as_deref(),
                live.labels(),
                live.annotations(),
            )
        {
            return Err(format!("{name} cannot be adopted: {why}"));
        }
    }
    if adopting && let Some(live) = &seen.live {
        apply::take_over_managers(&api, live)
            .await
            .map_err(|e| format!("taking over {name}'s field managers: {e}"))?;
    }
    // Correcting drift takes back fields another manager took from us; adopting takes over
    // the fields the previous owner set.
    let force = node.apply_policy.conflict_policy == ConflictPolicy::Force
        || !seen.drift.is_empty()
        || adopting;
    let forced = node.apply_policy.conflict_policy == ConflictPolicy::Force;
    let result = match apply::server_side_apply(&api, name, &seen.desired, force, metrics).await {
        // Immutable fields (a Job's template, an immutable ConfigMap) change only by re-creating
        // the object, which `Force` allows (as Flux's force does).
        Err(kube::Error::Api(status)) if forced && apply::is_immutable_change(&status) => {
            apply::recreate(&api, name, &seen.desired, metrics).await
        }
        other => other,
    };
    // The API server quotes the values it refuses; they may be a Secret's.
    let redact = pequod_api::redact::api_values;
    result.map_err(|e| match e {
        kube::Error::Api(status) if status.code == 409 => format!(
            "conflict with another field manager: {}; set applyPolicy.conflictPolicy Force to take the fields over",
            redact(&status.message)
        ),
        kube::Error::Api(status) if apply::is_immutable_change(&status) => format!(
            "{}; set applyPolicy.conflictPolicy Force to delete and re-create the object",
            redact(&status.message)
        ),
        kube::Error::Api(status) => format!(
            "{} ({}): {}",
            status.reason,
            status.code,
            redact(&status.message)
        ),
        other => redact(&other.to_string()),
    })
}

/// The `policy` label of `pequod_drift_total`.
fn policy_label(policy: DriftPolicy) -> &'static str {
    match policy {
        DriftPolicy::Correct => "Correct",
        DriftPolicy::Report => "Report",
    }
}

/// A node whose last apply failed: retried each pass, a failure for its dependents meanwhile.
fn is_apply_failure(status: &NodeStatus) -> bool {
    NodeVerdict::is_apply_failure(core_phase(status.phase), status.reason.as_deref())
}

/// The API's node phase for the core's.
fn node_phase(phase: Phase) -> NodePhase {
    match phase {
        Phase::Pending => NodePhase::Pending,
        Phase::Blocked => NodePhase::Blocked,
        Phase::Applied => NodePhase::Applied,
        Phase::Ready => NodePhase::Ready,
        Phase::Failed => NodePhase::Failed,
    }
}

/// The core's node phase for the API's (`Pruned` entries are no longer nodes: Pending).
fn core_phase(phase: NodePhase) -> Phase {
    match phase {
        NodePhase::Pending | NodePhase::Pruned => Phase::Pending,
        NodePhase::Blocked => Phase::Blocked,
        NodePhase::Applied => Phase::Applied,
        NodePhase::Ready => Phase::Ready,
        NodePhase::Failed => Phase::Failed,
    }
}

fn reference(desired: &Value, uid: Option<String>) -> ObjectRef {
    let text = |p: &str| {
        desired
            .pointer(p)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ObjectRef {
        api_version: text("/apiVersion").unwrap_or_default(),
        kind: text("/kind").unwrap_or_default(),
        namespace: text("/metadata/namespace"),
        name: text("/metadata/name").unwrap_or_default(),
        uid,
    }
}

/// Marks the graph Stalled (nothing written to the cluster) and waits for a change.
async fn stalled(
    graphs: &Api<Graphs>,
    graph: &ResourceGraph,
    ctx: &Context,
    old: ResourceGraphStatus,
    (reason, message): Refusal,
) -> Result<Action, Error> {
    let mut status = old.clone();
    let generation = graph.metadata.generation;
    let summary = Summary::Stalled {
        reason,
        message: &message,
    };
    conditions::summarize(&mut status.conditions, summary, generation, &now());
    status.phase = Some(GraphPhase::Failed);
    status.observed_generation = generation;
    write_status(graphs, &graph.name_any(), &old, &status).await?;
    let events = events::transitions(graph, &old, &status, &events::Facts::default());
    events::publish(ctx.recorder.as_ref(), graph, &events).await;
    Ok(Action::await_change())
}

/// Writes the status unless it is unchanged (a steady state writes nothing).
pub(crate) async fn write_status(
    graphs: &Api<Graphs>,
    name: &str,
    old: &ResourceGraphStatus,
    new: &ResourceGraphStatus,
) -> Result<(), Error> {
    if old == new {
        return Ok(());
    }
    let patch = serde_json::json!({"status": new});
    graphs
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::Status)?;
    Ok(())
}
