//! Event-driven readiness: one metadata watch per kind that graphs manage, filtered to objects
//! carrying Pequod's graph label, added when a graph starts using a kind and dropped when no
//! graph does. Every event is mapped back to the owning graph (from the labels) and triggers
//! its reconcile at once, so a dependency becoming ready is noticed without polling. When the
//! executor is limited to some namespaces (and cannot create namespaces), a namespaced kind is
//! watched in each of them, so namespaced RBAC suffices.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use futures::StreamExt as _;
use futures::channel::mpsc::UnboundedSender;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt as _};
use pequod_api::ResourceGraph;
use pequod_api::lenient::Lenient;

use crate::{LABEL_GRAPH, LABEL_GRAPH_NAMESPACE};

/// Key of a watched kind.
type Kind = (String, String, String);

fn kind_of(resource: &ApiResource) -> Kind {
    (
        resource.group.clone(),
        resource.version.clone(),
        resource.kind.clone(),
    )
}

struct Watch {
    users: BTreeSet<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

/// The set of running watches, shared by all reconciles.
pub struct Watches {
    client: Client,
    triggers: UnboundedSender<ObjectRef<Lenient<ResourceGraph>>>,
    /// Where namespaced kinds are watched; `None`: across all namespaces.
    namespaces: Option<Vec<String>>,
    running: Mutex<HashMap<Kind, Watch>>,
}

impl Watches {
    /// Watches that send graph references to `triggers`; namespaced kinds are watched in
    /// `namespaces` only, or everywhere when `None`.
    pub fn new(
        client: Client,
        triggers: UnboundedSender<ObjectRef<Lenient<ResourceGraph>>>,
        namespaces: Option<Vec<String>>,
    ) -> Self {
        Self {
            client,
            triggers,
            namespaces,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `graph` (namespace, name) uses exactly `kinds` (with whether each is
    /// namespaced) now: starts watches for new kinds, and stops those no graph uses any more.
    pub fn set_kinds(&self, graph: (&str, &str), kinds: &[(ApiResource, bool)]) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        let user = (graph.0.to_owned(), graph.1.to_owned());
        let wanted: HashMap<Kind, &(ApiResource, bool)> =
            kinds.iter().map(|k| (kind_of(&k.0), k)).collect();
        for (kind, watch) in running.iter_mut() {
            if !wanted.contains_key(kind) {
                watch.users.remove(&user);
            }
        }
        running.retain(|kind, watch| {
            let keep = !watch.users.is_empty();
            if !keep {
                tracing::debug!(kind = ?kind, "dropping watch");
                watch.task.abort();
            }
            keep
        });
        for (kind, (resource, namespaced)) in wanted {
            running
                .entry(kind)
                .or_insert_with(|| Watch {
                    users: BTreeSet::new(),
                    task: self.spawn(resource.clone(), *namespaced),
                })
                .users
                .insert(user.clone());
        }
    }

    /// Kinds currently watched.
    pub fn watched(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|r| r.keys().map(|(g, v, k)| format!("{k}.{v}.{g}")).collect())
            .unwrap_or_default()
    }

    fn spawn(&self, resource: ApiResource, namespaced: bool) -> tokio::task::JoinHandle<()> {
        let apis: Vec<Api<PartialObjectMeta<DynamicObject>>> = match &self.namespaces {
            Some(only) if namespaced => only
                .iter()
                .map(|ns| Api::namespaced_with(self.client.clone(), ns, &resource))
                .collect(),
            _ => vec![Api::all_with(self.client.clone(), &resource)],
        };
        let triggers = self.triggers.clone();
        tracing::debug!(kind = %resource.kind, watches = apis.len(), "starting watch");
        tokio::spawn(async move {
            let mut owners = Owners::default();
            let config = watcher::Config::default().labels(LABEL_GRAPH);
            let mut events = futures::stream::select_all(apis.into_iter().map(|api| {
                watcher::watcher(api, config.clone())
                    .default_backoff()
                    .boxed()
            }));
            while let Some(event) = events.next().await {
                let (object, deleted) = match event {
                    Ok(Event::Apply(object) | Event::InitApply(object)) => (object, false),
                    Ok(Event::Delete(object)) => (object, true),
                    Ok(_) => continue,
                    Err(error) => {
                        // The watcher backs off and resumes by itself.
                        tracing::debug!(%error, kind = %resource.kind, "watch error");
                        continue;
                    }
                };
                for graph in owners.changed(&object, deleted) {
                    if triggers.unbounded_send(graph).is_err() {
                        return;
                    }
                }
            }
        })
    }
}

/// The graph each watched object belonged to when last seen, by object UID: when its labels
/// are changed to another graph's (or removed), the graph it was taken from is told at once,
/// not at its next periodic look.
#[derive(Default)]
struct Owners {
    by_uid: HashMap<String, (String, String)>,
}

impl Owners {
    /// The graphs to wake for this event of `object` (`deleted`: gone, or no longer labelled
    /// as any graph's): its owner now and, if that differs, its owner before.
    fn changed(
        &mut self,
        object: &PartialObjectMeta<DynamicObject>,
        deleted: bool,
    ) -> Vec<ObjectRef<Lenient<ResourceGraph>>> {
        let labels = object.labels();
        let now = match (labels.get(LABEL_GRAPH), labels.get(LABEL_GRAPH_NAMESPACE)) {
            (Some(name), Some(namespace)) => Some((namespace.clone(), name.clone())),
            _ => None,
        };
        let before = match (object.uid(), &now) {
            (Some(uid), Some(owner)) if !deleted => self.by_uid.insert(uid, owner.clone()),
            (Some(uid), _) => self.by_uid.remove(&uid),
            (None, _) => None,
        };
        now.iter()
            .chain(before.iter().filter(|b| now.as_ref() != Some(*b)))
            .map(|(namespace, name)| {
                ObjectRef::<Lenient<ResourceGraph>>::new(name).within(namespace)
            })
            .collect()
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        if let Ok(running) = self.running.lock() {
            for watch in running.values() {
                watch.task.abort();
            }
        }
    }
}
