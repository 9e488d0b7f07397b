//! Talking to the API server about one node's object: which resource serves its kind, what we
//! apply (the object as sent is built by `pequod_graph::scope::sent_object`), and the apply
//! itself.

use std::collections::HashMap;
use std::time::Instant;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope as ResourceScope;
use kube::{Client, ResourceExt as _};
use pequod_metrics::Metrics;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ANNOTATION_GRAPH_UID;

/// How the API server serves a kind.
#[derive(Clone, Debug)]
pub struct Served {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Discovery, memoized for one reconcile.
pub struct Resolver {
    client: Client,
    cache: HashMap<(String, String), Option<Served>>,
}

impl Resolver {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: HashMap::new(),
        }
    }

    /// How `kind` of `api_version` is served; `None` when the API server does not serve it
    /// (yet: its CRD may be applied later in the graph).
    pub async fn resolve(
        &mut self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Served>, kube::Error> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.cache.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.rsplit_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let served = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, caps)) => Some(Served {
                resource,
                namespaced: caps.scope == ResourceScope::Namespaced,
            }),
            Err(kube::Error::Discovery(_)) => None,
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(e) => return Err(e),
        };
        self.cache.insert(key, served.clone());
        Ok(served)
    }
}

/// The API for one object.
pub fn api_for(client: &Client, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
    match (served.namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &served.resource),
        _ => Api::all_with(client.clone(), &served.resource),
    }
}

/// Content hash of what we apply; equal hashes mean nothing to write.
pub fn content_hash(desired: &Value) -> String {
    let digest = Sha256::digest(desired.to_string().as_bytes());
    digest
        .iter()
        .take(16)
        .fold(String::from("sha256:"), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Whether a live object was applied by this graph.
pub fn owned_by(live: &DynamicObject, owner_uid: &str) -> bool {
    live.annotations()
        .get(ANNOTATION_GRAPH_UID)
        .is_some_and(|uid| uid == owner_uid)
}

/// Server-side apply with Pequod's field manager; `force` takes conflicting fields over.
/// Counted and timed per GVK in `metrics` (`pequod_apply_total`, `pequod_apply_duration_seconds`).
pub async fn server_side_apply(
    api: &Api<DynamicObject>,
    name: &str,
    desired: &Value,
    force: bool,
    metrics: &Metrics,
) -> Result<DynamicObject, kube::Error> {
    let mut params = PatchParams::apply(pequod_api::FIELD_MANAGER);
    params.force = force;
    let started = Instant::now();
    let result = api.patch(name, &params, &Patch::Apply(desired)).await;
    let api_version = desired["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = desired["kind"].as_str().unwrap_or_default();
    metrics.applied(group, version, kind, result.is_ok(), started.elapsed());
    result
}

/// Field managers of client-side tools whose fields Pequod takes over when it adopts an
/// object (as Flux does): `kubectl apply` (client-side), `kubectl create/edit`, Helm, and the
/// marker the API server leaves on objects that predate managed fields.
const TAKEN_OVER_MANAGERS: &[&str] = &[
    "kubectl",
    "kubectl-client-side-apply",
    "kubectl-create",
    "kubectl-edit",
    "kubectl-patch",
    "before-first-apply",
    "helm",
];

/// The annotation `kubectl apply` keeps its last applied state in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// On adoption: the fields client-side tools manage become Pequod's (one `Apply` entry of
/// the `pequod` manager) and `kubectl`'s last-applied annotation goes, so that fields the
/// module does not render are removed by the apply that follows instead of staying forever.
pub async fn take_over_managers(
    api: &Api<DynamicObject>,
    live: &DynamicObject,
) -> Result<(), kube::Error> {
    let entries = live.metadata.managed_fields.clone().unwrap_or_default();
    let (taken, mut kept): (Vec<_>, Vec<_>) = entries.into_iter().partition(|entry| {
        entry.subresource.is_none()
            && entry
                .manager
                .as_deref()
                .is_some_and(|m| TAKEN_OVER_MANAGERS.contains(&m))
    });
    let has_last_applied = live.annotations().contains_key(LAST_APPLIED);
    if taken.is_empty() && !has_last_applied {
        return Ok(());
    }
    if let Some(first) = taken.first() {
        let mut fields = Value::Object(serde_json::Map::new());
        for entry in &taken {
            if let Some(entry_fields) = &entry.fields_v1 {
                merge_fields(&mut fields, &entry_fields.0);
            }
        }
        let mut ours = first.clone();
        ours.manager = Some(pequod_api::FIELD_MANAGER.to_owned());
        ours.operation = Some("Apply".to_owned());
        ours.fields_v1 = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
            fields,
        ));
        // Our own Apply entry, if any, joins it: one entry per manager and operation.
        if let Some(i) = kept.iter().position(|e| {
            e.manager.as_deref() == Some(pequod_api::FIELD_MANAGER)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.is_none()
        }) {
            let existing = kept.remove(i);
            if let (Some(a), Some(b)) = (ours.fields_v1.as_mut(), existing.fields_v1) {
                merge_fields(&mut a.0, &b.0);
            }
        }
        kept.push(ours);
    }
    let mut patch = serde_json::json!({"metadata": {"managedFields": kept}});
    if has_last_applied {
        patch["metadata"]["annotations"] = serde_json::json!({ LAST_APPLIED: null });
    }
    api.patch(
        &live.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// Union of two `fieldsV1` trees (nested objects keyed `f:…`, `k:…`, `v:…`, `.`).
fn merge_fields(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge_fields(
                    into.entry(key.clone())
                        .or_insert_with(|| Value::Object(serde_json::Map::new())),
                    value,
                );
            }
        }
        (into, from) => {
            if into.as_object().is_some_and(serde_json::Map::is_empty) {
                *into = from.clone();
            }
        }
    }
}

/// The API server refused a change of a field that cannot change after creation.
pub fn is_immutable_change(status: &kube::core::Status) -> bool {
    (status.code == 422 || status.code == 409) && status.message.contains("immutable")
}

/// How long a re-creation waits for the old object to be gone (finalizers may hold it).
const RECREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Deletes the object, waits until it is gone, and applies `desired` as a new object.
pub async fn recreate(
    api: &Api<DynamicObject>,
    name: &str,
    desired: &Value,
    metrics: &Metrics,
) -> Result<DynamicObject, kube::Error> {
    tracing::info!(name, "immutable field changed: re-creating");
    let params = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..kube::api::DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(e),
    }
    let started = Instant::now();
    while api.get_opt(name).await?.is_some() {
        if started.elapsed() > RECREATE_WAIT {
            let message = format!(
                "{name} was deleted to be re-created but is still there after {}s (finalizers?)",
                RECREATE_WAIT.as_secs()
            );
            return Err(kube::Error::Api(
                kube::core::Status::failure(&message, "Timeout")
                    .with_code(504)
                    .boxed(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    server_side_apply(api, name, desired, true, metrics).await
}
