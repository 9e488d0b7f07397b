//! Pequod's Kubernetes API, group `platform.pequod.io`, version `v1alpha1`.
//!
//! This crate owns the wire types every other crate shares: the [`Transform`] a user applies, the
//! [`ResourceGraph`] the transform-controller writes and the graph-executor runs, the graph node
//! types, kstatus-style condition helpers ([`conditions`]) and the generation of the CRD YAML
//! ([`crd`]). It is the only crate that pins k8s-openapi's Kubernetes version feature.

pub mod conditions;
pub mod crd;
mod digest;
pub mod duration;
pub mod events;
pub mod lenient;
pub mod reason;
pub mod redact;
pub mod reference;
pub mod resource_graph;
mod schema;
pub mod transform;

pub use resource_graph::{
    ApplyMode, ApplyPolicy, ConflictPolicy, GraphModule, GraphNode, GraphPhase, InventoryEntry,
    NodePhase, NodeStatus, ObjectRef, ReadyRule, ReadyRuleType, ResourceGraph, ResourceGraphSpec,
    ResourceGraphStatus, SourceRef,
};
pub use transform::{
    AdoptRule, CueRef, DeletionPolicy, DriftPolicy, HistoryEntry, LocalObjectReference, NodeCounts,
    ResolvedCueRef, Severity, SourceType, Transform, TransformSpec, TransformStatus,
    ValuesFromKind, ValuesFromSource, Violation,
};

pub use digest::module_digest;
pub use duration::parse_duration;
pub use reason::Reason;

/// The API group of every Pequod kind.
pub const GROUP: &str = "platform.pequod.io";
/// The API version of every Pequod kind in this crate.
pub const VERSION: &str = "v1alpha1";
/// The field manager Pequod uses for every server-side apply.
pub const FIELD_MANAGER: &str = "pequod";

/// The message of a caught panic (`std::panic::catch_unwind`), for the log line and status
/// that replace it: a panic in one reconcile never takes the operator down.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
