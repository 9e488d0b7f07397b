//! The operator's scope settings, turned into one graph's [`Boundary`] (the decision itself is
//! in the pure core, `pequod_graph::scope`).

use std::collections::BTreeMap;

use pequod_graph::{Boundary, KindPattern};

/// Where graphs may write beyond their own namespace (operator settings).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Cluster-scoped kinds graphs may write (`Namespace`, `Kind.group`, `*.group`, `*`);
    /// empty: none.
    pub cluster_kinds: Vec<KindPattern>,
    /// Only graphs in namespaces whose labels match this selector get `cluster_kinds`;
    /// `None`: every namespace.
    pub cluster_namespace_selector: Option<Selector>,
    /// Namespaces any graph may also write to.
    pub extra_namespaces: Vec<String>,
    /// Graphs may write Roles, RoleBindings, ClusterRoles and ClusterRoleBindings without
    /// impersonating a ServiceAccount (with the operator's own rights).
    pub rbac_without_identity: bool,
}

impl Scope {
    /// A scope granting every cluster-scoped kind to every graph (the old
    /// `--allow-cluster-scoped`).
    #[must_use]
    pub fn all_cluster_kinds(self) -> Self {
        Self {
            cluster_kinds: vec![KindPattern::any()],
            ..self
        }
    }

    /// Whether any graph may write cluster-scoped objects.
    pub fn any_cluster_scope(&self) -> bool {
        !self.cluster_kinds.is_empty()
    }

    /// Whether granting cluster-scoped kinds depends on the labels of a graph's namespace.
    pub fn needs_namespace_labels(&self) -> bool {
        self.any_cluster_scope() && self.cluster_namespace_selector.is_some()
    }

    /// The boundary of a graph in `namespace` (whose labels are `labels` when
    /// [`Scope::needs_namespace_labels`]), applied as a ServiceAccount or not.
    pub fn boundary(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
        impersonating: bool,
    ) -> Boundary {
        let trusted = match &self.cluster_namespace_selector {
            None => true,
            Some(selector) => labels.is_some_and(|l| selector.matches(l)),
        };
        Boundary {
            namespace: namespace.to_owned(),
            cluster_kinds: if trusted {
                self.cluster_kinds.clone()
            } else {
                Vec::new()
            },
            extra_namespaces: self.extra_namespaces.clone(),
            own_namespaces: std::collections::BTreeSet::new(),
            impersonating,
            rbac_without_identity: self.rbac_without_identity,
        }
    }
}

/// An equality-based label selector, as `kubectl -l` writes it: `key=value`, `key!=value`,
/// `key` (present), `!key` (absent), comma-separated; all must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Selector {
    /// Parses `a=b,c!=d,e,!f`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let key_ok = |k: &str| {
            !k.is_empty()
                && k.len() <= 317
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        let value_ok = |v: &str| {
            v.len() <= 63
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                (key_ok(k.trim()) && value_ok(v.trim()))
                    .then(|| Requirement::NotEquals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = part.split_once('=') {
                let v = v.strip_prefix('=').unwrap_or(v);
                (key_ok(k.trim()) && value_ok(v.trim()))
                    .then(|| Requirement::Equals(k.trim().into(), v.trim().into()))
            } else if let Some(k) = part.strip_prefix('!') {
                key_ok(k.trim()).then(|| Requirement::Absent(k.trim().into()))
            } else {
                key_ok(part).then(|| Requirement::Exists(part.into()))
            };
            requirements.push(requirement.ok_or_else(|| {
                format!("{part:?} is not a label requirement (key=value, key!=value, key or !key)")
            })?);
        }
        if requirements.is_empty() {
            return Err(format!("{text:?} is an empty label selector"));
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pequod_graph::{ObjectKey, WriteMode};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors() {
        let selector =
            Selector::parse("pequod.io/trusted=true, tier!=dev,team,!frozen").expect("ok");
        assert!(selector.matches(&labels(&[("pequod.io/trusted", "true"), ("team", "a")])));
        assert!(!selector.matches(&labels(&[("pequod.io/trusted", "false"), ("team", "a")])));
        assert!(!selector.matches(&labels(&[("pequod.io/trusted", "true")])));
        assert!(!selector.matches(&labels(&[
            ("pequod.io/trusted", "true"),
            ("team", "a"),
            ("frozen", "")
        ])));
        assert!(!selector.matches(&labels(&[
            ("pequod.io/trusted", "true"),
            ("team", "a"),
            ("tier", "dev")
        ])));
        assert!(
            Selector::parse("a==b")
                .expect("==")
                .matches(&labels(&[("a", "b")]))
        );
        for bad in ["", " , ", "a b=c", "=x", "a=b c", "!", "a in (b)"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cores_reasons_are_pequods_reasons() {
        let boundary = Scope::default().boundary("team", None, false);
        let key = |group: &str, kind: &str, namespace: Option<&str>| ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_owned),
            name: "x".into(),
        };
        let refusals = [
            boundary.refusal(
                "n",
                &key("", "ConfigMap", Some("other")),
                false,
                WriteMode::Apply,
            ),
            boundary.refusal(
                "n",
                &key("rbac.authorization.k8s.io", "Role", Some("team")),
                false,
                WriteMode::Apply,
            ),
            pequod_graph::scope::check_ignore_fields("n", &["/kind".to_owned()]).err(),
        ];
        for refusal in refusals {
            let refusal = refusal.expect("refused");
            let reason = pequod_api::Reason::parse(refusal.reason()).expect("a known reason");
            assert_eq!(reason.kind(), pequod_api::reason::Kind::Permanent);
        }
        for reason in pequod_graph::verdict::REASONS {
            assert!(pequod_api::Reason::parse(reason).is_some(), "{reason}");
        }
    }

    #[test]
    fn cluster_kinds_only_for_trusted_namespaces() {
        let scope = Scope {
            cluster_kinds: vec![KindPattern::parse("Namespace").expect("kind")],
            cluster_namespace_selector: Some(Selector::parse("trusted=yes").expect("ok")),
            ..Scope::default()
        };
        let namespace = ObjectKey {
            group: String::new(),
            kind: "Namespace".into(),
            namespace: None,
            name: "dev".into(),
        };
        let trusted = scope.boundary("team", Some(&labels(&[("trusted", "yes")])), false);
        assert_eq!(
            trusted.refusal("ns", &namespace, true, WriteMode::Apply),
            None
        );
        for untrusted in [
            scope.boundary("team", Some(&labels(&[("trusted", "no")])), false),
            scope.boundary("team", None, false),
        ] {
            assert!(
                untrusted
                    .refusal("ns", &namespace, true, WriteMode::Apply)
                    .is_some()
            );
        }
        let everyone = Scope::default().all_cluster_kinds();
        assert!(everyone.any_cluster_scope() && !everyone.needs_namespace_labels());
        assert_eq!(
            everyone.boundary("team", None, false).refusal(
                "ns",
                &namespace,
                true,
                WriteMode::Apply
            ),
            None
        );
    }
}
