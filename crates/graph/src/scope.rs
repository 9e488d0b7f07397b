//! The tenant boundary, decided once on the object exactly as it will be sent.
//!
//! A graph belongs to one namespace and everything in it was written by that namespace's users,
//! so every node is hostile input. This module owns the three decisions that keep a graph in
//! its place, with no I/O:
//!
//! - [`check_ignore_fields`]: `applyPolicy.ignoreFields` are JSON pointers that never name what
//!   identifies an object (`apiVersion`, `kind`, `metadata.name`, `metadata.namespace`) or
//!   Pequod's ownership marks, nor any parent of those.
//! - [`sent_object`]: the object as it goes to the API server — ignored fields removed first,
//!   then the namespace filled in and the ownership marks set, so nothing a node says can undo
//!   either.
//! - [`Boundary::refusal`]: may this graph write that object? Namespaced objects in its own
//!   namespace, in namespaces the operator lists, or in a Namespace the graph itself creates;
//!   cluster-scoped objects only of kinds this graph is granted; RBAC objects only through an
//!   impersonated identity unless the operator allows otherwise. A Namespace is never adopted
//!   or created-if-absent: naming one grants nothing.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::ObjectKey;

/// Label on every object Pequod applies: the owning graph's name.
pub const LABEL_GRAPH: &str = "platform.pequod.io/graph";
/// Label on every object Pequod applies: the owning graph's namespace.
pub const LABEL_GRAPH_NAMESPACE: &str = "platform.pequod.io/graph-namespace";
/// Label on every object Pequod applies: the node id.
pub const LABEL_NODE: &str = "platform.pequod.io/node";
/// Annotation with the owning graph's UID: labels can be copied, the UID says it is ours.
pub const ANNOTATION_GRAPH_UID: &str = "platform.pequod.io/graph-uid";

/// Most `ignoreFields` entries one node may have.
pub const MAX_IGNORE_FIELDS: usize = 64;
/// Longest `ignoreFields` entry, in bytes.
pub const MAX_POINTER_LEN: usize = 512;

/// How a node's object is written, as far as the boundary cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Server-side apply; an existing object must already be this graph's.
    Apply,
    /// Create if absent, never update.
    Create,
    /// Take over an existing object that is nobody's.
    Adopt,
}

/// Why a node may not be written. Every variant names the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// An `ignoreFields` entry is not a JSON pointer, or there are too many.
    #[error("node {node:?}: applyPolicy.ignoreFields {pointer:?} {why}")]
    BadIgnoreField {
        /// The node.
        node: String,
        /// The entry as written (shortened when huge).
        pointer: String,
        /// What is wrong with it.
        why: String,
    },
    /// The object would land outside what this graph may write.
    #[error("node {node:?}: {message}")]
    OutOfScope {
        /// The node.
        node: String,
        /// What was refused and what would allow it.
        message: String,
    },
    /// An RBAC object without an impersonated identity.
    #[error(
        "node {node:?}: {object} is an RBAC object; graphs may write RBAC objects only as a ServiceAccount (set spec.serviceAccountName, or ask the operator's admin for a default ServiceAccount)"
    )]
    RbacWithoutIdentity {
        /// The node.
        node: String,
        /// The object.
        object: String,
    },
}

impl ScopeError {
    /// The condition reason a user sees.
    pub fn reason(&self) -> &'static str {
        match self {
            ScopeError::BadIgnoreField { .. } => "InvalidGraph",
            ScopeError::OutOfScope { .. } => "OutOfScope",
            ScopeError::RbacWithoutIdentity { .. } => "RBACRequiresIdentity",
        }
    }
}

/// The segments of a JSON pointer (`/a/b~1c` → `["a", "b/c"]`), or why it is not one.
pub fn pointer_segments(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Err("is empty: it would name the whole object".into());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("is not a JSON pointer: it must start with '/' (like /spec/replicas)".into());
    };
    rest.split('/')
        .map(|segment| {
            let mut out = String::with_capacity(segment.len());
            let mut chars = segment.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(
                                "is not a JSON pointer: '~' must be followed by 0 or 1".into()
                            );
                        }
                    },
                    c if c.is_control() => {
                        return Err("contains a control character".into());
                    }
                    c => out.push(c),
                }
            }
            Ok(out)
        })
        .collect()
}

/// Paths no node may leave to other managers: what identifies the object and Pequod's marks.
fn protected_paths() -> [Vec<&'static str>; 8] {
    [
        vec!["apiVersion"],
        vec!["kind"],
        vec!["metadata", "name"],
        vec!["metadata", "namespace"],
        vec!["metadata", "labels", LABEL_GRAPH],
        vec!["metadata", "labels", LABEL_GRAPH_NAMESPACE],
        vec!["metadata", "labels", LABEL_NODE],
        vec!["metadata", "annotations", ANNOTATION_GRAPH_UID],
    ]
}

/// Checks a node's `ignoreFields`: at most [`MAX_IGNORE_FIELDS`] JSON pointers, none naming
/// (or containing) an identifying field or an ownership mark.
pub fn check_ignore_fields(node: &str, pointers: &[String]) -> Result<(), ScopeError> {
    let bad = |pointer: &str, why: String| ScopeError::BadIgnoreField {
        node: node.to_owned(),
        pointer: shorten(pointer),
        why,
    };
    if pointers.len() > MAX_IGNORE_FIELDS {
        return Err(bad(
            "",
            format!(
                "has {} entries; at most {MAX_IGNORE_FIELDS} are allowed",
                pointers.len()
            ),
        ));
    }
    for pointer in pointers {
        if pointer.len() > MAX_POINTER_LEN {
            return Err(bad(
                pointer,
                format!("is longer than {MAX_POINTER_LEN} bytes"),
            ));
        }
        let segments = pointer_segments(pointer).map_err(|why| bad(pointer, why))?;
        for protected in protected_paths() {
            let shared = segments.len().min(protected.len());
            if segments[..shared] == protected[..shared] {
                return Err(bad(
                    pointer,
                    format!(
                        "would leave /{} to other managers; identifying fields and Pequod's ownership marks can never be ignored",
                        protected.join("/")
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn shorten(text: &str) -> String {
    const KEEP: usize = 80;
    if text.len() <= KEEP {
        return text.to_owned();
    }
    let mut end = KEEP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The graph that owns what it writes.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// The graph's name.
    pub name: &'a str,
    /// The graph's namespace.
    pub namespace: &'a str,
    /// The graph's UID.
    pub uid: &'a str,
}

/// The object as it is sent: `rendered` without the `ignore` fields (checked by
/// [`check_ignore_fields`] beforehand), then in `namespace` when its kind is namespaced
/// (`None`: cluster-scoped, the namespace is dropped), with Pequod's labels and UID annotation.
pub fn sent_object(
    rendered: &Value,
    node_id: &str,
    namespace: Option<&str>,
    owner: &Owner<'_>,
    ignore: &[String],
) -> Value {
    let mut object = rendered.clone();
    crate::drift::remove_fields(&mut object, ignore);
    if !object.is_object() {
        object = Value::Object(serde_json::Map::new());
    }
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(serde_json::Map::new());
    }
    let metadata = &mut object["metadata"];
    match namespace {
        Some(namespace) => metadata["namespace"] = Value::from(namespace),
        None => {
            if let Some(map) = metadata.as_object_mut() {
                map.remove("namespace");
            }
        }
    }
    for (field, entries) in [
        (
            "labels",
            [
                (LABEL_GRAPH, owner.name),
                (LABEL_GRAPH_NAMESPACE, owner.namespace),
                (LABEL_NODE, node_id),
            ]
            .as_slice(),
        ),
        (
            "annotations",
            [(ANNOTATION_GRAPH_UID, owner.uid)].as_slice(),
        ),
    ] {
        if !metadata[field].is_object() {
            metadata[field] = Value::Object(serde_json::Map::new());
        }
        for (key, value) in entries {
            metadata[field][*key] = Value::from(*value);
        }
    }
    object
}

/// A cluster-scoped kind the operator lets graphs write: `Kind` (core group), `Kind.group`,
/// `*.group` (every kind of a group) or `*` (everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindPattern {
    kind: String,
    group: Option<String>,
}

impl KindPattern {
    /// Every kind of every group (`*`).
    pub fn any() -> Self {
        Self {
            kind: "*".into(),
            group: None,
        }
    }

    /// Parses `Namespace`, `ClusterRole.rbac.authorization.k8s.io`, `*.example.com` or `*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '*')
        };
        if !valid(text) {
            return Err(format!(
                "{text:?} is not a kind: write Kind (core group), Kind.group, *.group or *"
            ));
        }
        if text == "*" {
            return Ok(Self::any());
        }
        let (kind, group) = match text.split_once('.') {
            Some((kind, group)) => (kind, group),
            None => (text, ""),
        };
        if kind.is_empty() || group.contains('*') || (kind.contains('*') && kind != "*") {
            return Err(format!(
                "{text:?} is not a kind: write Kind (core group), Kind.group, *.group or *"
            ));
        }
        Ok(Self {
            kind: kind.to_owned(),
            group: Some(group.to_owned()),
        })
    }

    /// Whether `object`'s kind is this pattern.
    pub fn matches(&self, object: &ObjectKey) -> bool {
        (self.kind == "*" || self.kind == object.kind)
            && self.group.as_deref().is_none_or(|g| g == object.group)
    }
}

impl fmt::Display for KindPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group.as_deref() {
            // `*.` (every core kind) must not read as `*` (every kind).
            Some("") if self.kind == "*" => f.write_str("*."),
            None | Some("") => f.write_str(&self.kind),
            Some(group) => write!(f, "{}.{group}", self.kind),
        }
    }
}

/// Whether `object` is a Namespace (core group).
pub fn is_namespace(object: &ObjectKey) -> bool {
    object.group.is_empty() && object.kind == "Namespace"
}

/// Whether `object` is a Role, RoleBinding, ClusterRole or ClusterRoleBinding.
pub fn is_rbac(object: &ObjectKey) -> bool {
    object.group == "rbac.authorization.k8s.io"
        && matches!(
            object.kind.as_str(),
            "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding"
        )
}

/// What one graph may write, decided before any node is looked at.
#[derive(Clone, Debug, Default)]
pub struct Boundary {
    /// The graph's namespace.
    pub namespace: String,
    /// Cluster-scoped kinds this graph may write (empty: none).
    pub cluster_kinds: Vec<KindPattern>,
    /// Other namespaces the operator lets every graph write to.
    pub extra_namespaces: Vec<String>,
    /// Namespaces this graph renders as Namespace nodes (mode Apply): objects in them wait for
    /// that node, which succeeds only when the graph creates the Namespace (or created it).
    pub own_namespaces: BTreeSet<String>,
    /// The graph's objects are written as an impersonated ServiceAccount.
    pub impersonating: bool,
    /// RBAC objects may be written without impersonation (operator setting).
    pub rbac_without_identity: bool,
}

impl Boundary {
    /// The Namespace nodes of `nodes` (id, key, mode) that this graph may create: Namespaces
    /// of a granted kind, applied with mode `Apply` (the only mode that refuses an existing
    /// Namespace that is not the graph's).
    #[must_use]
    pub fn with_own_namespaces<'a>(
        mut self,
        nodes: impl IntoIterator<Item = (&'a ObjectKey, WriteMode)>,
    ) -> Self {
        let namespace_granted = self.cluster_kinds.iter().any(|p| {
            p.matches(&ObjectKey {
                group: String::new(),
                kind: "Namespace".into(),
                namespace: None,
                name: String::new(),
            })
        });
        if namespace_granted {
            self.own_namespaces.extend(
                nodes
                    .into_iter()
                    .filter(|(key, mode)| is_namespace(key) && *mode == WriteMode::Apply)
                    .map(|(key, _)| key.name.clone()),
            );
        }
        self
    }

    /// Why node `node` may not write `object` (its key as sent: namespace filled for namespaced
    /// kinds, `None` for cluster-scoped ones) with `mode`, or `None` when it may.
    pub fn refusal(
        &self,
        node: &str,
        object: &ObjectKey,
        cluster_scoped: bool,
        mode: WriteMode,
    ) -> Option<ScopeError> {
        let out = |message: String| {
            Some(ScopeError::OutOfScope {
                node: node.to_owned(),
                message,
            })
        };
        if is_rbac(object) && !self.impersonating && !self.rbac_without_identity {
            return Some(ScopeError::RbacWithoutIdentity {
                node: node.to_owned(),
                object: object.to_string(),
            });
        }
        if cluster_scoped {
            if !self.cluster_kinds.iter().any(|p| p.matches(object)) {
                let granted = if self.cluster_kinds.is_empty() {
                    "none".to_owned()
                } else {
                    self.cluster_kinds
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return out(format!(
                    "{object} is cluster-scoped and this graph may not write that kind (cluster-scoped kinds granted to namespace {:?}: {granted})",
                    self.namespace
                ));
            }
            if is_namespace(object) && mode != WriteMode::Apply {
                return out(format!(
                    "{object}: a Namespace can only be created by a graph (mode Apply), never adopted or created-if-absent"
                ));
            }
            return None;
        }
        let Some(namespace) = object.namespace.as_deref() else {
            return out(format!("{object} has no namespace"));
        };
        if namespace == self.namespace
            || self.extra_namespaces.iter().any(|n| n == namespace)
            || self.own_namespaces.contains(namespace)
        {
            return None;
        }
        out(format!(
            "{object} is in namespace {namespace:?}; this graph may only write to its own namespace {:?}{}",
            self.namespace,
            if self.cluster_kinds.is_empty() {
                String::new()
            } else {
                " and to Namespaces it creates itself".into()
            }
        ))
    }
}

/// The graph that owns a live object, from its marks: `namespace/name (uid …)`, or `None`
/// when it carries none.
pub fn owner_of(
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let uid = annotations.get(ANNOTATION_GRAPH_UID);
    let name = labels.get(LABEL_GRAPH);
    if uid.is_none() && name.is_none() {
        return None;
    }
    let namespace = labels
        .get(LABEL_GRAPH_NAMESPACE)
        .map_or("?", String::as_str);
    let name = name.map_or("?", String::as_str);
    Some(match uid {
        Some(uid) => format!("ResourceGraph {namespace}/{name} (uid {uid})"),
        None => format!("ResourceGraph {namespace}/{name}"),
    })
}

/// Why the graph `owner` may not adopt a live object in `live_namespace` (`None`:
/// cluster-scoped) with these labels and annotations, or `None` when it may: only objects in
/// the graph's own namespace that carry no other graph's marks.
pub fn adoption_refusal(
    owner: &Owner<'_>,
    live_namespace: Option<&str>,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let ours = annotations
        .get(ANNOTATION_GRAPH_UID)
        .is_some_and(|uid| uid == owner.uid);
    if !ours && let Some(other) = owner_of(labels, annotations) {
        return Some(format!(
            "it belongs to {other}; an object managed by another graph is never adopted (delete it there, or set deletionPolicy Orphan there and delete that Transform first)"
        ));
    }
    match live_namespace {
        Some(namespace) if namespace == owner.namespace => None,
        Some(namespace) => Some(format!(
            "it is in namespace {namespace:?}; only objects in the graph's own namespace {:?} can be adopted",
            owner.namespace
        )),
        None => Some(
            "it is cluster-scoped; only namespaced objects in the graph's own namespace can be adopted"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn key(group: &str, kind: &str, namespace: Option<&str>) -> ObjectKey {
        ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_owned),
            name: "x".into(),
        }
    }

    fn boundary(kinds: &[&str]) -> Boundary {
        Boundary {
            namespace: "team".into(),
            cluster_kinds: kinds
                .iter()
                .map(|k| KindPattern::parse(k).expect("pattern"))
                .collect(),
            ..Boundary::default()
        }
    }

    #[test]
    fn ignore_fields_never_name_identity_or_ownership() {
        for refused in [
            "/apiVersion",
            "/kind",
            "/metadata",
            "/metadata/name",
            "/metadata/namespace",
            "/metadata/labels",
            "/metadata/annotations",
            "/metadata/labels/platform.pequod.io~1graph",
            "/metadata/labels/platform.pequod.io~1graph-namespace",
            "/metadata/labels/platform.pequod.io~1node",
            "/metadata/annotations/platform.pequod.io~1graph-uid",
            "/metadata/name/x",
        ] {
            let error = check_ignore_fields("n", &[refused.to_owned()]).expect_err(refused);
            assert_eq!(error.reason(), "InvalidGraph");
            assert!(error.to_string().contains("never be ignored"), "{error}");
        }
        for allowed in [
            "/spec/replicas",
            "/metadata/labels/app",
            "/metadata/annotations/platform.pequod.io~1prune",
            "/metadata/labels/platform.pequod.io",
            "/data/a~0b",
        ] {
            assert_eq!(check_ignore_fields("n", &[allowed.to_owned()]), Ok(()));
        }
    }

    #[test]
    fn ignore_fields_must_be_json_pointers() {
        for (bad, says) in [
            ("", "empty"),
            ("spec.replicas", "must start with '/'"),
            ("/spec/~2", "followed by 0 or 1"),
            ("/spec/a~", "followed by 0 or 1"),
            ("/spec/\u{0}", "control character"),
        ] {
            let error = check_ignore_fields("web", &[bad.to_owned()]).expect_err(bad);
            assert!(error.to_string().contains(says), "{bad:?}: {error}");
            assert!(error.to_string().contains("node \"web\""), "{error}");
        }
        let long = format!("/{}", "a".repeat(MAX_POINTER_LEN));
        assert!(check_ignore_fields("n", &[long]).is_err());
        let exactly = format!("/{}", "a".repeat(MAX_POINTER_LEN - 1));
        assert_eq!(check_ignore_fields("n", &[exactly]), Ok(()));
        let many = vec!["/spec/a".to_owned(); MAX_IGNORE_FIELDS];
        assert_eq!(check_ignore_fields("n", &many), Ok(()));
        let too_many = vec!["/spec/a".to_owned(); MAX_IGNORE_FIELDS + 1];
        assert!(check_ignore_fields("n", &too_many).is_err());
    }

    #[test]
    fn the_sent_object_keeps_namespace_and_marks_whatever_the_node_says() {
        let owner = Owner {
            name: "g",
            namespace: "team",
            uid: "u-1",
        };
        let rendered = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "other",
                "labels": {"platform.pequod.io/graph": "victim", "app": "a"},
                "annotations": {"platform.pequod.io/graph-uid": "victim-uid"}},
            "data": {"k": "v", "hpa": "x"}});
        let sent = sent_object(
            &rendered,
            "cm",
            Some("other"),
            &owner,
            &["/data/hpa".into()],
        );
        assert_eq!(sent["metadata"]["namespace"], "other", "kept as rendered");
        assert_eq!(sent["metadata"]["labels"][LABEL_GRAPH], "g");
        assert_eq!(sent["metadata"]["labels"]["app"], "a");
        assert_eq!(sent["metadata"]["labels"][LABEL_NODE], "cm");
        assert_eq!(sent["metadata"]["annotations"][ANNOTATION_GRAPH_UID], "u-1");
        assert_eq!(sent["data"], json!({"k": "v"}));
        // Removal happens first, so even an unchecked pointer cannot strip the marks.
        let stripped = sent_object(
            &rendered,
            "cm",
            Some("team"),
            &owner,
            &["/metadata/namespace".into(), "/metadata/labels".into()],
        );
        assert_eq!(stripped["metadata"]["namespace"], "team");
        assert_eq!(stripped["metadata"]["labels"][LABEL_GRAPH], "g");
        // Cluster-scoped: no namespace at all.
        let cluster = sent_object(&rendered, "cm", None, &owner, &[]);
        assert!(cluster["metadata"].get("namespace").is_none());
        // Garbage in, an object out.
        let odd = sent_object(&json!("text"), "n", Some("team"), &owner, &[]);
        assert_eq!(odd["metadata"]["namespace"], "team");
    }

    #[test]
    fn own_namespace_only_by_default() {
        let strict = boundary(&[]);
        let own = key("", "ConfigMap", Some("team"));
        assert_eq!(strict.refusal("n", &own, false, WriteMode::Apply), None);
        let other = key("", "ConfigMap", Some("kube-system"));
        let refusal = strict
            .refusal("n", &other, false, WriteMode::Apply)
            .expect("refused");
        assert_eq!(refusal.reason(), "OutOfScope");
        assert!(
            refusal
                .to_string()
                .contains("may only write to its own namespace \"team\"")
        );
        let cluster = key("", "Namespace", None);
        let refusal = strict
            .refusal("n", &cluster, true, WriteMode::Apply)
            .expect("refused");
        assert!(
            refusal
                .to_string()
                .contains("granted to namespace \"team\": none")
        );
        let wider = Boundary {
            extra_namespaces: vec!["shared".into()],
            ..boundary(&[])
        };
        let shared = key("", "ConfigMap", Some("shared"));
        assert_eq!(wider.refusal("n", &shared, false, WriteMode::Apply), None);
    }

    #[test]
    fn cluster_scope_is_granted_per_kind() {
        let namespaces_only = boundary(&["Namespace"]);
        let namespace = key("", "Namespace", None);
        assert_eq!(
            namespaces_only.refusal("ns", &namespace, true, WriteMode::Apply),
            None
        );
        let binding = key("rbac.authorization.k8s.io", "ClusterRoleBinding", None);
        let impersonating = Boundary {
            impersonating: true,
            ..namespaces_only.clone()
        };
        let refusal = impersonating
            .refusal("crb", &binding, true, WriteMode::Apply)
            .expect("a ClusterRoleBinding is not a Namespace");
        assert!(
            refusal
                .to_string()
                .contains("granted to namespace \"team\": Namespace")
        );
        // A custom resource kind named Namespace in another group is not the Namespace.
        let impostor = key("example.com", "Namespace", None);
        assert!(
            namespaces_only
                .refusal("x", &impostor, true, WriteMode::Apply)
                .is_some()
        );
        let everything = Boundary {
            impersonating: true,
            ..boundary(&["*"])
        };
        assert_eq!(
            everything.refusal("crb", &binding, true, WriteMode::Apply),
            None
        );
        let group = Boundary {
            impersonating: true,
            ..boundary(&["*.rbac.authorization.k8s.io"])
        };
        assert_eq!(group.refusal("crb", &binding, true, WriteMode::Apply), None);
        assert!(
            group
                .refusal("ns", &namespace, true, WriteMode::Apply)
                .is_some()
        );
    }

    #[test]
    fn namespaces_are_created_never_adopted_and_only_created_ones_widen_the_scope() {
        let granted = boundary(&["Namespace"]);
        let namespace = ObjectKey {
            name: "dev".into(),
            ..key("", "Namespace", None)
        };
        for mode in [WriteMode::Create, WriteMode::Adopt] {
            let refusal = granted
                .refusal("ns", &namespace, true, mode)
                .expect("never adopted");
            assert!(refusal.to_string().contains("never adopted"), "{refusal}");
        }
        let kube_system = ObjectKey {
            name: "kube-system".into(),
            ..key("", "Namespace", None)
        };
        let widened = granted.clone().with_own_namespaces([
            (&namespace, WriteMode::Apply),
            (&kube_system, WriteMode::Adopt),
        ]);
        let in_dev = key("", "ConfigMap", Some("dev"));
        assert_eq!(
            widened.refusal("cm", &in_dev, false, WriteMode::Apply),
            None
        );
        let in_kube_system = key("", "ConfigMap", Some("kube-system"));
        assert!(
            widened
                .refusal("cm", &in_kube_system, false, WriteMode::Apply)
                .is_some(),
            "an adopted Namespace grants nothing"
        );
        // Without the Namespace kind, naming a Namespace grants nothing either.
        let strict = boundary(&[]).with_own_namespaces([(&namespace, WriteMode::Apply)]);
        assert!(
            strict
                .refusal("cm", &in_dev, false, WriteMode::Apply)
                .is_some()
        );
    }

    #[test]
    fn rbac_needs_an_identity_unless_allowed() {
        let strict = boundary(&[]);
        let role = key("rbac.authorization.k8s.io", "RoleBinding", Some("team"));
        let refusal = strict
            .refusal("rb", &role, false, WriteMode::Apply)
            .expect("refused");
        assert_eq!(refusal.reason(), "RBACRequiresIdentity");
        for allowed in [
            Boundary {
                impersonating: true,
                ..boundary(&[])
            },
            Boundary {
                rbac_without_identity: true,
                ..boundary(&[])
            },
        ] {
            assert_eq!(allowed.refusal("rb", &role, false, WriteMode::Apply), None);
        }
        // Same kind name in another group is not RBAC.
        let lookalike = key("example.com", "RoleBinding", Some("team"));
        assert_eq!(
            strict.refusal("x", &lookalike, false, WriteMode::Apply),
            None
        );
    }

    #[test]
    fn kind_patterns() {
        for bad in ["", "Name space", "Kind.*", "Ki*nd", ".group", "a/b"] {
            assert!(KindPattern::parse(bad).is_err(), "{bad:?}");
        }
        let pattern = KindPattern::parse("ClusterRole.rbac.authorization.k8s.io").expect("ok");
        assert_eq!(pattern.to_string(), "ClusterRole.rbac.authorization.k8s.io");
        assert!(pattern.matches(&key("rbac.authorization.k8s.io", "ClusterRole", None)));
        assert!(!pattern.matches(&key("", "ClusterRole", None)));
        let core = KindPattern::parse("*.").expect("every core kind");
        assert_eq!(core.to_string(), "*.", "not `*`, which is every kind");
        assert!(core.matches(&key("", "Namespace", None)));
        assert!(!core.matches(&key("rbac.authorization.k8s.io", "ClusterRole", None)));
    }

    #[test]
    fn adoption_never_takes_another_graphs_object_or_leaves_the_namespace() {
        let owner = Owner {
            name: "thief",
            namespace: "team",
            uid: "u-thief",
        };
        let map = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let none = map(&[]);
        assert_eq!(adoption_refusal(&owner, Some("team"), &none, &none), None);
        let victim_labels = map(&[(LABEL_GRAPH, "victim"), (LABEL_GRAPH_NAMESPACE, "team")]);
        let victim_uid = map(&[(ANNOTATION_GRAPH_UID, "u-victim")]);
        let refusal = adoption_refusal(&owner, Some("team"), &victim_labels, &victim_uid)
            .expect("another graph's");
        assert!(
            refusal.contains("belongs to ResourceGraph team/victim (uid u-victim)"),
            "{refusal}"
        );
        // Labels alone (the UID annotation removed by hand) still say whose it is.
        assert!(adoption_refusal(&owner, Some("team"), &victim_labels, &none).is_some());
        let ours = map(&[(ANNOTATION_GRAPH_UID, "u-thief")]);
        assert_eq!(
            adoption_refusal(&owner, Some("team"), &victim_labels, &ours),
            None
        );
        let elsewhere = adoption_refusal(&owner, Some("other"), &none, &none).expect("other ns");
        assert!(elsewhere.contains("namespace \"other\""), "{elsewhere}");
        assert!(adoption_refusal(&owner, None, &none, &none).is_some());
        assert_eq!(owner_of(&none, &none), None);
    }

    fn arbitrary_pointer() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("metadata".to_owned()),
                Just("labels".to_owned()),
                Just("annotations".to_owned()),
                Just("namespace".to_owned()),
                Just("name".to_owned()),
                Just("platform.pequod.io~1graph".to_owned()),
                Just("platform.pequod.io~1graph-uid".to_owned()),
                Just("kind".to_owned()),
                "[a-z~0-9/.]{0,6}",
            ],
            0..5,
        )
        .prop_map(|segments| format!("/{}", segments.join("/")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever ignoreFields pass the check, the object as sent keeps its identity, the
        /// namespace the boundary decided on and every ownership mark.
        #[test]
        fn accepted_ignore_fields_never_touch_identity_or_marks(
            pointers in prop::collection::vec(arbitrary_pointer(), 0..6),
            namespace in prop_oneof![Just("team"), Just("other")],
        ) {
            let rendered = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": namespace, "labels": {"a": "b"}, "annotations": {"x": "y"}},
                "data": {"k": "v"}});
            let owner = Owner { name: "g", namespace: "team", uid: "u" };
            if check_ignore_fields("n", &pointers).is_ok() {
                let sent = sent_object(&rendered, "n", Some(namespace), &owner, &pointers);
                let key = crate::NodeSpec::from_object("n", &sent, Vec::new()).expect("identity kept").object;
                prop_assert_eq!(key.namespace.as_deref(), Some(namespace));
                prop_assert_eq!(&sent["metadata"]["labels"][LABEL_GRAPH], "g");
                prop_assert_eq!(&sent["metadata"]["annotations"][ANNOTATION_GRAPH_UID], "u");
                let boundary = Boundary { namespace: "team".into(), ..Boundary::default() };
                let refused = boundary.refusal("n", &key, false, WriteMode::Apply).is_some();
                prop_assert_eq!(refused, namespace != "team");
            }
        }

        /// Pointer parsing never panics and round-trips segments.
        #[test]
        fn pointer_parsing_is_total(text in "\\PC{0,40}") {
            if let Ok(segments) = pointer_segments(&text) {
                let rebuilt = segments.iter().fold(String::new(), |mut out, s| {
                    out.push('/');
                    out.push_str(&s.replace('~', "~0").replace('/', "~1"));
                    out
                });
                prop_assert_eq!(rebuilt, text);
            }
        }
    }
}
