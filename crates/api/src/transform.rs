//! The `Transform`: what an application team applies to get a platform rendered from a CUE module.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::preserve_unknown_object;

/// Desired state of a Transform: which CUE module to render, with which input, and how the
/// resulting objects are applied, corrected and deleted.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "platform.pequod.io",
    version = "v1alpha1",
    kind = "Transform",
    doc = "A Transform renders a CUE platform module with the given input into a ResourceGraph of Kubernetes objects, which Pequod applies in dependency order, keeps in sync and tears down on delete.",
    plural = "transforms",
    shortname = "tf",
    category = "pequod",
    namespaced,
    status = "TransformStatus",
    printcolumn = r#"{"name":"Module","type":"string","jsonPath":".status.resolvedCueRef.url"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.resolvedCueRef.version"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.readyNodes","description":"Graph nodes ready / total"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TransformSpec {
    /// Where the CUE module comes from: an inline source, a ConfigMap, an OCI artifact, a Git
    /// repository, or a module embedded in the operator.
    pub cue_ref: CueRef,

    /// Input for the module, validated by the module's `#Input` schema. Free-form: any fields are
    /// kept and handed to the module, merged with `valuesFrom` (later sources win).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::lenient::free_form"
    )]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub input: Option<serde_json::Value>,

    /// ConfigMaps and Secrets in the Transform's namespace whose values are merged into `input`,
    /// in order; a later source wins over an earlier one and over `input`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_from: Vec<ValuesFromSource>,

    /// ServiceAccount in the Transform's namespace that the executor impersonates for every
    /// apply, read and delete of this Transform's objects, so that Kubernetes RBAC decides what
    /// the graph may touch. Empty means the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub service_account_name: Option<String>,

    /// Stop all changes for this Transform: no render and no status change; its graph is marked
    /// suspended, so the executor neither applies, prunes nor corrects drift. Deleting a
    /// suspended Transform still tears it down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// What happens to the managed objects when the Transform is deleted: `Delete` removes them
    /// in reverse dependency order, `Orphan` leaves them and removes Pequod's ownership marks.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// What happens when someone else changes a field Pequod owns: `Correct` reverts it,
    /// `Report` leaves it and sets a `Drifted` condition naming the object and field.
    #[serde(default)]
    pub drift_policy: DriftPolicy,

    /// Existing objects (not created by Pequod) that this Transform may take over. Without a
    /// matching rule, a rendered object that already exists and is not ours fails its node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopt: Vec<AdoptRule>,

    /// How long the graph may take to become Ready before the Transform reports `Stalled`
    /// with reason `Timeout`, as a Go duration (`90s`, `5m`, `1h30m`), between 1s and 168h.
    /// Empty means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"), length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "duration(self) >= duration('1s') && duration(self) <= duration('168h')",
            "message": "spec.timeout must be between 1s and 168h",
        },
    ]))]
    pub timeout: Option<String>,
}

/// The CUE module a Transform renders.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.version) || self.type in ['oci', 'git']",
        "message": "cueRef.version (a semver constraint) is only allowed with type oci or git",
    },
    {
        "rule": "!has(self.pullSecretRef) || self.type in ['oci', 'git']",
        "message": "cueRef.pullSecretRef is only allowed with type oci or git",
    },
    {
        "rule": "!has(self.interval) || self.type in ['oci', 'git']",
        "message": "cueRef.interval is only allowed with type oci or git",
    },
]))]
pub struct CueRef {
    /// Kind of source: `inline` (ref is CUE source text), `configmap` (ref is the name of a
    /// ConfigMap whose `*.cue` keys form the module), `oci` (ref is `registry/repository`, with
    /// an optional `:tag` or `@sha256:` digest), `git` (ref is a repository URL, with an optional
    /// `#branch`, `#tag` or `#commit`), `embedded` (ref names a module shipped with the operator).
    #[serde(rename = "type")]
    pub source_type: SourceType,

    /// The module reference; its meaning depends on `type`. Required and non-empty.
    #[serde(rename = "ref")]
    #[schemars(length(min = 1))]
    #[schemars(extend("x-kubernetes-validations" = [
        { "rule": "self.size() > 0", "message": "cueRef.ref must not be empty" },
    ]))]
    pub reference: String,

    /// Directory of the CUE package to evaluate inside the module (default: the module root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,

    /// Semver constraint over the repository's version tags (for example `^1.2`, `>=1.0, <2`);
    /// the highest matching version is used. Only with type `oci` or `git`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Secret in the Transform's namespace with registry or Git credentials
    /// (`kubernetes.io/dockerconfigjson`, basic-auth or ssh-auth). Only with type `oci` or `git`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret_ref: Option<LocalObjectReference>,

    /// How often a mutable reference (tag, branch, version constraint) is checked for changes,
    /// as a Go duration (`5m`) between 10s and 168h (default 5m). A digest or commit SHA pins
    /// exactly and is never re-checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"), length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "duration(self) >= duration('10s') && duration(self) <= duration('168h')",
            "message": "cueRef.interval must be between 10s and 168h",
        },
    ]))]
    pub interval: Option<String>,
}

impl CueRef {
    /// A reference of `source_type` to `reference`, with no path, version, secret or interval.
    pub fn new(source_type: SourceType, reference: impl Into<String>) -> Self {
        Self {
            source_type,
            reference: reference.into(),
            path: None,
            version: None,
            pull_secret_ref: None,
            interval: None,
        }
    }
}

/// Shortest `cueRef.interval` (the CRD and the controller both hold it).
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Longest `cueRef.interval` and `spec.timeout`.
pub const MAX_DURATION: Duration = Duration::from_secs(168 * 3600);
/// Shortest `spec.timeout` (a deadline is looked at once, so it cannot loop).
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Parses a spec duration (`field` names it in the message) and checks it is within
/// `[min, MAX_DURATION]`; never overflows.
pub fn bounded_duration(field: &str, text: &str, min: Duration) -> Result<Duration, String> {
    let parsed = crate::parse_duration(text).map_err(|e| format!("{field}: {e}"))?;
    if parsed < min || parsed > MAX_DURATION {
        return Err(format!(
            "{field} {text:?} is out of range: it must be between {}s and {}h",
            min.as_secs(),
            MAX_DURATION.as_secs() / 3600
        ));
    }
    Ok(parsed)
}

impl TransformSpec {
    /// What makes this spec unusable although the API server stored it (written before the
    /// CRD had its bounds, or nested too deep to decode): `input` too deep, too large or
    /// undecodable, `interval` or `timeout` out of range. `None` when it is usable.
    pub fn problem(&self) -> Option<String> {
        if let Some(input) = &self.input
            && let Some(why) = crate::lenient::problem(input, crate::lenient::MAX_INPUT_BYTES)
        {
            return Some(format!("spec.input is {why}"));
        }
        if let Some(interval) = &self.cue_ref.interval
            && let Err(why) = bounded_duration("spec.cueRef.interval", interval, MIN_INTERVAL)
        {
            return Some(why);
        }
        if let Some(timeout) = &self.timeout
            && let Err(why) = bounded_duration("spec.timeout", timeout, MIN_TIMEOUT)
        {
            return Some(why);
        }
        None
    }

    /// A spec rendering `cue_ref` with `input` and every other field at its default (no
    /// valuesFrom, not suspended, Delete, Correct).
    pub fn new(cue_ref: CueRef, input: Option<serde_json::Value>) -> Self {
        Self {
            cue_ref,
            input,
            values_from: Vec::new(),
            service_account_name: None,
            suspend: false,
            deletion_policy: DeletionPolicy::default(),
            drift_policy: DriftPolicy::default(),
            adopt: Vec::new(),
            timeout: None,
        }
    }
}

/// Kind of module source.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    /// CUE source text written directly in `ref`.
    Inline,
    /// A ConfigMap in the Transform's namespace; every `*.cue` key is a file of the module.
    Configmap,
    /// A CUE module artifact in an OCI registry.
    Oci,
    /// A Git repository.
    Git,
    /// A module compiled into the operator binary.
    Embedded,
}

/// A reference to an object by name in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the object in the Transform's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// A ConfigMap or Secret whose values are merged into the Transform's input.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValuesFromSource {
    /// `ConfigMap` or `Secret`.
    pub kind: ValuesFromKind,

    /// Name of the ConfigMap or Secret in the Transform's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,

    /// Key whose content is a YAML or JSON object merged into the input. When omitted, every key
    /// becomes one input field holding that key's value as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_key: Option<String>,

    /// Dotted path in the input (`database.password`) where the value is placed instead of
    /// being merged at the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_path: Option<String>,

    /// When true, a missing ConfigMap, Secret or key is skipped instead of failing the render.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// Kind of object a `valuesFrom` entry reads.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ValuesFromKind {
    /// A core/v1 ConfigMap.
    ConfigMap,
    /// A core/v1 Secret; its values never appear in logs, events or conditions.
    Secret,
}

/// What happens to managed objects when their owner goes away.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the objects, in reverse dependency order.
    #[default]
    Delete,
    /// Leave the objects in the cluster and remove Pequod's labels and ownership.
    Orphan,
}

/// What happens when another field manager changes a field Pequod owns.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DriftPolicy {
    /// Re-apply the rendered value.
    #[default]
    Correct,
    /// Leave the change and report it in a `Drifted` condition.
    Report,
}

/// Existing objects a Transform may take over.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdoptRule {
    /// Kind of object (`Deployment`), or `*` for every kind.
    #[schemars(length(min = 1))]
    pub kind: String,

    /// Name of the object; when omitted, any object of that kind rendered by this Transform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Observed state of a Transform, with kstatus conditions a user can act on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformStatus {
    /// kstatus conditions: `Ready`, `Reconciling`, `Stalled`, and the pipeline steps
    /// `Fetched`, `Validated`, `Rendered`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The exact module that was fetched: URL, resolved version and content digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_cue_ref: Option<ResolvedCueRef>,

    /// Hash of the last successful render (module digest and merged input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render_hash: Option<String>,

    /// The ResourceGraph this Transform writes (same name, same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_graph_ref: Option<LocalObjectReference>,

    /// Schema errors, evaluation errors and policy results of the last render, with CUE paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,

    /// Node counts of the ResourceGraph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,

    /// `ready/total` graph nodes, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<String>,

    /// Values the module exports (for example a URL).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::lenient::free_form"
    )]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub outputs: Option<serde_json::Value>,

    /// The last 10 applied revisions, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<HistoryEntry>,
}

/// The module a Transform resolved to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedCueRef {
    /// Where the module was fetched from.
    pub url: String,
    /// The version (tag, branch or semver) that was selected, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Content digest (`sha256:…`) or commit SHA of what was evaluated.
    pub digest: String,
    /// When the module was fetched.
    pub fetched_at: Time,
}

/// One policy result or render error.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// CUE path of the offending value (`input.replicas`).
    pub path: String,
    /// What is wrong, in the module's words.
    pub message: String,
    /// `Error` blocks the apply; `Warning` is only reported.
    pub severity: Severity,
    /// Source position `file:line:col`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

/// How serious a violation is.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Severity {
    /// Blocks the apply of the rendered graph.
    Error,
    /// Reported, does not block.
    Warning,
}

/// Counts of graph nodes by state.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NodeCounts {
    /// Nodes in the graph.
    pub total: i32,
    /// Nodes whose object is ready.
    pub ready: i32,
    /// Nodes that failed.
    pub failed: i32,
}

/// One applied revision of a Transform.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// ResourceGraph revision.
    pub revision: i64,
    /// Hash of the render.
    pub render_hash: String,
    /// Digest of the module that was rendered.
    pub module_digest: String,
    /// Resolved module version, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the revision was written.
    pub applied_at: Time,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_durations_are_bounded_without_overflow() {
        let interval = |t: &str| bounded_duration("i", t, MIN_INTERVAL);
        assert_eq!(interval("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(interval("168h"), Ok(MAX_DURATION));
        for out in [
            "9.999s",
            "1ms",
            "168h0.5s",
            "5124095576030000h",
            "1e400",
            "0",
        ] {
            assert!(interval(out).is_err(), "{out}");
        }
        let mut spec = TransformSpec::new(CueRef::new(SourceType::Oci, "r/m"), None);
        assert_eq!(spec.problem(), None);
        spec.cue_ref.interval = Some("1ms".into());
        assert!(
            spec.problem()
                .is_some_and(|p| p.contains("spec.cueRef.interval"))
        );
        spec.cue_ref.interval = None;
        spec.timeout = Some("999ms".into());
        assert!(
            spec.problem()
                .is_some_and(|p| p.contains("between 1s and 168h"))
        );
        spec.timeout = Some("5124095576030000h".into());
        assert!(spec.problem().is_some_and(|p| p.contains("spec.timeout")));
        spec.timeout = None;
        let mut deep = serde_json::json!(1);
        for _ in 0..40 {
            deep = serde_json::json!({ "a": deep });
        }
        spec.input = Some(deep);
        assert!(
            spec.problem()
                .is_some_and(|p| p.starts_with("spec.input is nested"))
        );
    }
}
