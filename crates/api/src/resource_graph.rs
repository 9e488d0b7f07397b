//! The `ResourceGraph`: a rendered graph of Kubernetes objects with dependencies and readiness
//! rules. Written only by the transform-controller, executed only by the graph-executor.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::embedded_object;
use crate::transform::{DeletionPolicy, DriftPolicy};

/// A rendered graph of objects for the graph-executor to apply in dependency order.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "platform.pequod.io",
    version = "v1alpha1",
    kind = "ResourceGraph",
    doc = "A ResourceGraph is the rendered graph of a Transform: Kubernetes objects with dependencies, readiness rules and apply policies. Written by the transform-controller, executed by the graph-executor.",
    plural = "resourcegraphs",
    shortname = "rg",
    category = "pequod",
    namespaced,
    status = "ResourceGraphStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGraphSpec {
    /// The Transform this graph was rendered from.
    pub source_ref: SourceRef,

    /// Increases by one each time the rendered content changes.
    #[schemars(range(min = 0))]
    pub revision: i64,

    /// Hash of the render (module digest and merged input) that produced these nodes.
    pub render_hash: String,

    /// The module that was rendered.
    pub module: GraphModule,

    /// ServiceAccount (in this namespace) impersonated for every apply, read and delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// What to do when another field manager changes a field Pequod owns.
    #[serde(default)]
    pub drift_policy: DriftPolicy,

    /// The Transform is suspended: the executor leaves the objects as they are (no apply, no
    /// prune, no drift correction) until it is resumed. Deletion still tears down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// The objects to apply. Node ids are unique DNS labels.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub nodes: Vec<GraphNode>,
}

/// The Transform a graph belongs to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// API version of the source (`platform.pequod.io/v1alpha1`).
    pub api_version: String,
    /// Kind of the source (`Transform`).
    pub kind: String,
    /// Name of the source in this namespace.
    pub name: String,
}

/// The CUE module a graph was rendered from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphModule {
    /// The module reference as the Transform gave it.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Content digest or commit SHA of the rendered module.
    pub digest: String,
}

/// One object of the graph with its dependencies, readiness rules and apply policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphNode {
    /// Unique id of the node in the graph: a DNS label (lowercase letters, digits and '-').
    #[schemars(length(min = 1, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "message": "node id must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit",
        },
    ]))]
    pub id: String,

    /// The complete Kubernetes object to apply (apiVersion, kind, metadata, spec…).
    #[serde(deserialize_with = "crate::lenient::object")]
    #[schemars(schema_with = "embedded_object")]
    pub object: serde_json::Value,

    /// Ids of nodes that must be ready before this node is applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub depends_on: Vec<String>,

    /// When the object counts as ready; all rules must hold. Empty means `Current`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_when: Vec<ReadyRule>,

    /// How the object is applied and deleted.
    #[serde(default)]
    pub apply_policy: ApplyPolicy,
}

/// A readiness rule of a node.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type != 'ConditionMatch' || has(self.conditionType)",
        "message": "a ConditionMatch rule needs conditionType",
    },
    {
        "rule": "self.type != 'FieldEquals' || (has(self.path) && has(self.value))",
        "message": "a FieldEquals rule needs path and value",
    },
]))]
pub struct ReadyRule {
    /// `Current` (built-in, generation-aware rules per kind), `Exists`, `ConditionMatch`,
    /// `DeploymentAvailable`, `JobComplete` or `FieldEquals`.
    #[serde(rename = "type")]
    pub rule_type: ReadyRuleType,

    /// For `ConditionMatch`: the condition type to look for (`Ready`, `Available`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_type: Option<String>,

    /// For `ConditionMatch`: the status the condition must have (default `True`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_status: Option<String>,

    /// For `FieldEquals`: dotted path into the live object (`status.phase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,

    /// For `FieldEquals`: the value the field must have, compared as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Kinds of readiness rule.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ReadyRuleType {
    /// Built-in generation-aware rules per kind (kstatus "Current").
    Current,
    /// Ready as soon as the object exists.
    Exists,
    /// A status condition has the given status.
    ConditionMatch,
    /// A Deployment has rolled out and is Available.
    DeploymentAvailable,
    /// A Job has completed (not merely started).
    JobComplete,
    /// A field of the live object has the given value.
    FieldEquals,
}

/// How a node's object is applied and deleted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyPolicy {
    /// `Apply` (server-side apply, the default), `Create` (create if absent, never update) or
    /// `Adopt` (take over an existing object not created by Pequod).
    #[serde(default)]
    pub mode: ApplyMode,

    /// On a field-manager conflict: `Error` fails the node, `Force` takes the fields over. On a
    /// change of an immutable field, `Force` deletes and re-creates the object.
    #[serde(default)]
    pub conflict_policy: ConflictPolicy,

    /// On prune or teardown: `Delete` the object or `Orphan` it (leave it, strip ownership).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// JSON pointers (`/spec/replicas`) of fields left to other managers: never applied,
    /// never reported as drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_fields: Vec<String>,
}

/// How a node's object is written.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ApplyMode {
    /// Server-side apply on every change.
    #[default]
    Apply,
    /// Create when absent; never update an existing object.
    Create,
    /// Take over an existing object, then apply.
    Adopt,
}

/// What to do when another field manager owns a field Pequod applies.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConflictPolicy {
    /// Fail the node with the conflict.
    #[default]
    Error,
    /// Force the apply and take the fields over; re-create on an immutable-field change.
    Force,
}

/// Observed state of a ResourceGraph.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGraphStatus {
    /// Summary phase of the graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<GraphPhase>,

    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`, `Drifted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Per-node state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub nodes: Vec<NodeStatus>,

    /// Every object the executor may have created for this graph, recorded before it is
    /// created; the source of truth for prune and teardown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Summary phase of a graph.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum GraphPhase {
    /// Not yet processed.
    Pending,
    /// Nodes are being applied or are not ready yet.
    Progressing,
    /// Every node is ready.
    Ready,
    /// The graph is invalid or a node failed permanently.
    Failed,
    /// The graph is being torn down.
    Deleting,
}

/// State of one node.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The node id.
    pub id: String,
    /// Where the node is in its life.
    pub phase: NodePhase,
    /// One-word CamelCase reason for the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The live object, with its uid once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRef>,
    /// Hash of the last applied desired object, to skip unchanged applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// Rendered fields the API server stores differently from how they were applied
    /// (write-only like a Secret's `stringData`, or normalized), as JSON pointers; they are
    /// not compared for drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub normalized_fields: Vec<String>,
    /// When `phase` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// Where a node is in its life.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NodePhase {
    /// Waiting to be applied.
    Pending,
    /// Waiting on a dependency that is not ready or failed.
    Blocked,
    /// Applied, not ready yet.
    Applied,
    /// Applied and ready.
    Ready,
    /// Apply or readiness failed.
    Failed,
    /// Removed because it is no longer rendered.
    Pruned,
}

/// A reference to a live object.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// API version (`apps/v1`).
    pub api_version: String,
    /// Kind (`Deployment`).
    pub kind: String,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID of the live object, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// An object the executor owns or is about to create.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// Id of the node that rendered the object.
    pub id: String,
    /// API version (`apps/v1`).
    pub api_version: String,
    /// Kind (`Deployment`).
    pub kind: String,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID once the object exists; empty while it is only intended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Dependency level of the node when it was recorded (0: no dependencies). Prune and
    /// teardown remove the highest level first, from the inventory alone.
    #[serde(default)]
    #[schemars(with = "i32", range(min = 0))]
    pub level: u32,
    /// Node's deletion policy when it was recorded: `Orphan` objects are released, not deleted.
    #[serde(default)]
    pub deletion_policy: crate::DeletionPolicy,
}
