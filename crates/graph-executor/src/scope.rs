//! The security boundary: a graph writes only namespaced objects in its own namespace unless
//! the operator allows more. Checked for every node before anything is written.

use pequod_graph::ObjectKey;

/// Where graphs may write beyond their own namespace.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Allow cluster-scoped objects (Namespaces, CRDs, ClusterRoles…).
    pub allow_cluster_scoped: bool,
    /// Namespaces any graph may also write to.
    pub extra_namespaces: Vec<String>,
}

impl Scope {
    /// This scope for a graph that creates the Namespaces `created`: when cluster-scoped
    /// objects are allowed, a graph may also fill the Namespaces it creates itself.
    #[must_use]
    pub fn for_graph_creating(&self, created: impl IntoIterator<Item = String>) -> Scope {
        let mut scope = self.clone();
        if self.allow_cluster_scoped {
            scope.extra_namespaces.extend(created);
        }
        scope
    }

    /// Why `object` (with its resolved namespace; `None` for cluster-scoped) may not be written
    /// by a graph in `graph_namespace`, or `None` when it may.
    pub fn refusal(
        &self,
        graph_namespace: &str,
        object: &ObjectKey,
        cluster_scoped: bool,
    ) -> Option<String> {
        if cluster_scoped {
            return (!self.allow_cluster_scoped).then(|| {
                format!(
                    "{object} is cluster-scoped; the operator does not allow cluster-scoped objects"
                )
            });
        }
        let namespace = object.namespace.as_deref().unwrap_or(graph_namespace);
        if namespace == graph_namespace || self.extra_namespaces.iter().any(|n| n == namespace) {
            return None;
        }
        Some(format!(
            "{object} is in namespace {namespace:?}; this graph may only write to {graph_namespace:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_may_fill_the_namespace_it_creates_only_with_cluster_scope() {
        let strict = Scope::default().for_graph_creating(["dev".to_owned()]);
        assert!(strict.refusal("team", &key(Some("dev")), false).is_some());
        let open = Scope {
            allow_cluster_scoped: true,
            extra_namespaces: Vec::new(),
        }
        .for_graph_creating(["dev".to_owned()]);
        assert_eq!(open.refusal("team", &key(Some("dev")), false), None);
        assert!(open.refusal("team", &key(Some("prod")), false).is_some());
    }

    fn key(namespace: Option<&str>) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: namespace.map(str::to_owned),
            name: "c".into(),
        }
    }

    #[test]
    fn own_namespace_only_by_default() {
        let scope = Scope::default();
        assert_eq!(scope.refusal("team", &key(Some("team")), false), None);
        assert_eq!(
            scope.refusal("team", &key(None), false),
            None,
            "defaults to the graph's namespace"
        );
        assert!(
            scope
                .refusal("team", &key(Some("kube-system")), false)
                .unwrap()
                .contains("may only write to \"team\"")
        );
        assert!(
            scope
                .refusal("team", &key(None), true)
                .unwrap()
                .contains("cluster-scoped")
        );
        let wider = Scope {
            allow_cluster_scoped: true,
            extra_namespaces: vec!["shared".into()],
        };
        assert_eq!(wider.refusal("team", &key(Some("shared")), false), None);
        assert_eq!(wider.refusal("team", &key(None), true), None);
    }
}
