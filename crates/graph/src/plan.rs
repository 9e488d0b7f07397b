//! The planner: from the graph and what is observed, what to do next.
//!
//! A node is applied once every dependency is ready; a node whose dependency failed is blocked
//! (and says by what), while independent nodes go on. Stale and deleted objects are removed in
//! waves of decreasing dependency level, so a dependent is always gone before what it needs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;

use crate::dag::Dag;
use crate::readiness::Readiness;

/// What the executor observed for one node of the current revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Not applied at the current revision (absent, or applied from an older render).
    Pending,
    /// Applied at the current revision; readiness as last observed.
    Applied(Readiness),
    /// The apply itself failed (conflict, forbidden, invalid); the text says why.
    Failed(String),
}

/// Why a node waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// A dependency is not ready yet.
    Waiting {
        /// The dependency.
        dependency: String,
    },
    /// A dependency failed (directly, or because its own dependency did).
    DependencyFailed {
        /// The dependency.
        dependency: String,
    },
}

/// The decision for one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes to apply now, in topological order.
    pub apply: Vec<String>,
    /// Pending nodes that must wait, with the first reason found.
    pub blocked: Vec<(String, Blocker)>,
    /// Nodes that failed (apply or readiness).
    pub failed: Vec<String>,
    /// Nodes applied and not yet ready.
    pub progressing: Vec<String>,
    /// True when every node is ready.
    pub all_ready: bool,
}

fn failed(state: Option<&NodeState>) -> bool {
    matches!(
        state,
        Some(NodeState::Failed(_) | NodeState::Applied(Readiness::Failed(_)))
    )
}

/// Decides the next step. Nodes missing from `states` count as pending.
pub fn plan<S: BuildHasher>(dag: &Dag, states: &HashMap<String, NodeState, S>) -> Plan {
    let mut out = Plan::default();
    // Nodes that cannot make progress because something below them failed.
    let mut doomed: HashSet<&str> = HashSet::new();
    for node in dag.topological() {
        let id = node.id.as_str();
        let state = states.get(id).unwrap_or(&NodeState::Pending);
        let dependencies = dag.dependencies(id);
        match state {
            NodeState::Applied(Readiness::Ready) => {}
            NodeState::Applied(Readiness::InProgress(_)) => out.progressing.push(id.to_owned()),
            NodeState::Applied(Readiness::Failed(_)) | NodeState::Failed(_) => {
                out.failed.push(id.to_owned());
                doomed.insert(id);
            }
            NodeState::Pending => {
                let failed_dependency = dependencies
                    .iter()
                    .find(|(d, _)| doomed.contains(d) || failed(states.get(*d)))
                    .map(|(d, _)| (*d).to_owned());
                if let Some(dependency) = failed_dependency {
                    doomed.insert(id);
                    out.blocked
                        .push((id.to_owned(), Blocker::DependencyFailed { dependency }));
                    continue;
                }
                let waiting = dependencies
                    .iter()
                    .find(|(d, _)| {
                        !matches!(states.get(*d), Some(NodeState::Applied(Readiness::Ready)))
                    })
                    .map(|(d, _)| (*d).to_owned());
                match waiting {
                    Some(dependency) => out
                        .blocked
                        .push((id.to_owned(), Blocker::Waiting { dependency })),
                    None => out.apply.push(id.to_owned()),
                }
            }
        }
    }
    out.all_ready = dag.nodes().iter().all(|n| {
        matches!(
            states.get(&n.id),
            Some(NodeState::Applied(Readiness::Ready))
        )
    });
    out
}

/// Groups items by level into removal waves, highest level first. The executor deletes one
/// wave, waits until its objects are gone, then moves to the next.
pub fn removal_waves<T: Clone>(items: &[(T, u32)]) -> Vec<Vec<T>> {
    let mut by_level: BTreeMap<u32, Vec<T>> = BTreeMap::new();
    for (item, level) in items {
        by_level.entry(*level).or_default().push(item.clone());
    }
    by_level.into_values().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::NodeSpec;
    use proptest::prelude::*;
    use serde_json::json;

    fn dag(edges: &[(&str, &[&str])]) -> Dag {
        Dag::build(
            edges
                .iter()
                .map(|(id, deps)| {
                    let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": id, "namespace": "t"}});
                    NodeSpec::from_object(id, &object, deps.iter().map(|d| (*d).to_owned()).collect()).unwrap()
                })
                .collect(),
        )
        .unwrap()
    }

    fn states(entries: &[(&str, NodeState)]) -> HashMap<String, NodeState> {
        entries
            .iter()
            .map(|(id, s)| ((*id).to_owned(), s.clone()))
            .collect()
    }

    #[test]
    fn applies_roots_first_then_what_their_readiness_unlocks() {
        let g = dag(&[
            ("db", &[]),
            ("app", &["db"]),
            ("svc", &["app"]),
            ("cfg", &[]),
        ]);
        let first = plan(&g, &HashMap::new());
        assert_eq!(first.apply, ["db", "cfg"]);
        assert_eq!(
            first.blocked[0],
            (
                "app".into(),
                Blocker::Waiting {
                    dependency: "db".into()
                }
            )
        );

        let progressing = states(&[
            (
                "db",
                NodeState::Applied(Readiness::InProgress("0/1".into())),
            ),
            ("cfg", NodeState::Applied(Readiness::Ready)),
        ]);
        let second = plan(&g, &progressing);
        assert!(second.apply.is_empty());
        assert_eq!(second.progressing, ["db"]);

        let ready = states(&[
            ("db", NodeState::Applied(Readiness::Ready)),
            ("cfg", NodeState::Applied(Readiness::Ready)),
        ]);
        assert_eq!(plan(&g, &ready).apply, ["app"]);
    }

    #[test]
    fn a_failed_node_blocks_only_its_dependents() {
        let g = dag(&[
            ("db", &[]),
            ("app", &["db"]),
            ("svc", &["app"]),
            ("cfg", &[]),
            ("other", &["cfg"]),
        ]);
        let s = states(&[
            ("db", NodeState::Failed("conflict".into())),
            ("cfg", NodeState::Applied(Readiness::Ready)),
        ]);
        let p = plan(&g, &s);
        assert_eq!(p.apply, ["other"]);
        assert_eq!(p.failed, ["db"]);
        assert_eq!(
            p.blocked,
            [
                (
                    "app".into(),
                    Blocker::DependencyFailed {
                        dependency: "db".into()
                    }
                ),
                (
                    "svc".into(),
                    Blocker::DependencyFailed {
                        dependency: "app".into()
                    }
                ),
            ]
        );
        assert!(!p.all_ready);
    }

    #[test]
    fn removal_goes_from_the_highest_level_down() {
        let waves = removal_waves(&[("ns", 0), ("app", 2), ("cfg", 1), ("svc", 2)]);
        assert_eq!(waves, [vec!["app", "svc"], vec!["cfg"], vec!["ns"]]);
    }

    /// Random DAGs: node `i` may depend on any `j < i`; declaration order is shuffled.
    fn random_dag() -> impl Strategy<Value = (Vec<(String, Vec<String>)>, Vec<u64>)> {
        (2_usize..25)
            .prop_flat_map(|n| {
                let deps = (0..n)
                    .map(|i| proptest::collection::vec(0..i.max(1), 0..=i.min(3)))
                    .collect::<Vec<_>>();
                (
                    deps,
                    Just(n).prop_shuffle_order(),
                    proptest::collection::vec(any::<u64>(), 64),
                )
            })
            .prop_map(|(deps, order, coins)| {
                let nodes = order
                    .into_iter()
                    .map(|i| {
                        let mut d: Vec<String> = deps[i]
                            .iter()
                            .filter(|&&j| j < i)
                            .map(|j| format!("n{j}"))
                            .collect();
                        d.sort();
                        d.dedup();
                        (format!("n{i}"), d)
                    })
                    .collect();
                (nodes, coins)
            })
    }

    trait ShuffleOrder {
        fn prop_shuffle_order(self) -> BoxedStrategy<Vec<usize>>;
    }

    impl ShuffleOrder for Just<usize> {
        fn prop_shuffle_order(self) -> BoxedStrategy<Vec<usize>> {
            let n = self.0;
            Just((0..n).collect::<Vec<_>>()).prop_shuffle().boxed()
        }
    }

    fn build(nodes: &[(String, Vec<String>)]) -> Dag {
        let edges: Vec<(&str, Vec<&str>)> = nodes
            .iter()
            .map(|(id, d)| (id.as_str(), d.iter().map(String::as_str).collect()))
            .collect();
        let borrowed: Vec<(&str, &[&str])> =
            edges.iter().map(|(id, d)| (*id, d.as_slice())).collect();
        dag(&borrowed)
    }

    proptest! {
        #[test]
        fn never_applies_a_node_before_its_dependencies_are_ready((nodes, coins) in random_dag()) {
            let g = build(&nodes);
            let mut s: HashMap<String, NodeState> = HashMap::new();
            let mut coin = coins.into_iter().cycle();
            for round in 0..200 {
                let p = plan(&g, &s);
                if p.all_ready { break; }
                for id in &p.apply {
                    for (dependency, _) in g.dependencies(id) {
                        prop_assert_eq!(s.get(dependency), Some(&NodeState::Applied(Readiness::Ready)), "{} applied before {}", id, dependency);
                    }
                    s.insert(id.clone(), NodeState::Applied(Readiness::InProgress("starting".into())));
                }
                // Some progressing nodes become ready, at random.
                for id in &p.progressing {
                    if round > 50 || coin.next().unwrap_or(0) % 2 == 0 {
                        s.insert(id.clone(), NodeState::Applied(Readiness::Ready));
                    }
                }
            }
            prop_assert!(plan(&g, &s).all_ready, "converges");
        }

        #[test]
        fn removal_waves_are_reverse_topological((nodes, _coins) in random_dag()) {
            let g = build(&nodes);
            let items: Vec<(String, u32)> = g.nodes().iter().map(|n| (n.id.clone(), g.level(&n.id).unwrap_or(0))).collect();
            let waves = removal_waves(&items);
            let wave_of: HashMap<&str, usize> = waves.iter().enumerate().flat_map(|(w, ids)| ids.iter().map(move |id| (id.as_str(), w))).collect();
            for node in g.nodes() {
                for (dependency, _) in g.dependencies(&node.id) {
                    prop_assert!(wave_of[node.id.as_str()] < wave_of[dependency], "{} must go before {}", node.id, dependency);
                }
            }
            // The topological order is consistent with the graph too.
            let position: HashMap<&str, usize> = g.topological().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
            for node in g.nodes() {
                for (dependency, _) in g.dependencies(&node.id) {
                    prop_assert!(position[dependency] < position[node.id.as_str()]);
                }
            }
        }
    }
}
