//! The graph executor's pure core: no Kubernetes client, no I/O, tested without a cluster.
//!
//! - [`dag`] builds and checks the dependency graph of a ResourceGraph (duplicates, unknown
//!   dependencies, two nodes for one object, cycles) and adds the implicit edges (a Namespace
//!   before the objects in it, a CRD before its custom resources).
//! - [`readiness`] decides from a live object whether a node is ready, in progress or failed,
//!   with generation-aware built-in rules per kind and the node's own `readyWhen` rules.
//! - [`plan`] decides, from the graph and what is observed, which nodes to apply now, which are
//!   blocked and by what, and in which waves stale or deleted objects are removed.
//!
//! - [`scope`] is the tenant boundary: which objects a graph may write, decided on the object
//!   exactly as it is sent, and which `ignoreFields` a node may have.
//! - [`verdict`] decides each node's phase and reason, the prune gate and the graph's
//!   summary, so that the controller only observes and acts.
//! - [`backoff`] spaces out retries of failing objects.
//! - [`drift`] finds the desired fields someone else changed, and strips fields left to others.
//!
//! The executor converts API types into [`NodeSpec`]s; this crate only sees plain data.

pub mod backoff;
pub mod dag;
pub mod drift;
pub mod plan;
pub mod readiness;
pub mod scope;
pub mod verdict;

pub use backoff::Backoff;
pub use dag::{Dag, GraphError, NodeSpec, ObjectKey};
pub use drift::{drifted_fields, remove_fields};
pub use plan::{NodeState, Plan, plan, removal_waves};
pub use readiness::{Readiness, ReadyRule, evaluate};
pub use scope::{Boundary, KindPattern, ScopeError, WriteMode};
