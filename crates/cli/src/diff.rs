//! `pequod diff`: the rendered objects against the live cluster. Each object is applied as the
//! graph executor would apply it (same field manager, ownership labels, namespace defaulting,
//! `ignoreFields` removed) with a server-side apply dry run, and the dry-run result is compared
//! with the live object, both without the fields the server keeps for itself (`managedFields`,
//! `resourceVersion`, `status`…). Missing objects are reported as new.

use std::fmt::Write as _;

use anyhow::Context as _;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use pequod_api::{ApplyMode, ConflictPolicy, GraphNode, ResourceGraph};
use pequod_graph_executor::{ANNOTATION_GRAPH_UID, LABEL_GRAPH, LABEL_GRAPH_NAMESPACE, LABEL_NODE};
use serde_json::{Value, json};

use crate::textdiff;

/// Where the cluster is.
#[derive(Debug, Default)]
pub struct Target {
    /// A kubeconfig file; `None` infers (`$KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// A context of the kubeconfig; `None` is its current context.
    pub context: Option<String>,
}

/// What `diff` found, for the summary and the exit code.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Objects that do not exist yet.
    pub new: usize,
    /// Objects the apply would change.
    pub changed: usize,
    /// Objects the apply would leave as they are.
    pub unchanged: usize,
    /// Objects the dry run refused (conflicts, invalid fields).
    pub failed: usize,
}

async fn client(target: &Target) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        (None, Some(context)) => kube::Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("loading context {context} of the kubeconfig"))?,
        (None, None) => kube::Config::infer()
            .await
            .context("finding the cluster ($KUBECONFIG, ~/.kube/config or in-cluster)")?,
    };
    Client::try_from(config).context("creating the Kubernetes client")
}

/// Compares every node's object with the cluster and writes the report to `out`.
pub async fn run(
    target: &Target,
    nodes: &[GraphNode],
    graph_name: &str,
    graph_namespace: &str,
    out: &mut String,
) -> anyhow::Result<Summary> {
    let client = client(target).await?;
    // The executor marks objects with its graph's UID; an existing graph keeps it.
    let uid = Api::<ResourceGraph>::namespaced(client.clone(), graph_namespace)
        .get_opt(graph_name)
        .await
        .ok()
        .flatten()
        .and_then(|g| g.metadata.uid)
        .unwrap_or_default();
    let mut summary = Summary::default();
    for node in nodes {
        let outcome = node_diff(&client, node, graph_name, graph_namespace, &uid).await?;
        let (counter, text) = match outcome {
            Outcome::New(title) => (&mut summary.new, format!("new {title}\n")),
            Outcome::Unchanged => (&mut summary.unchanged, String::new()),
            Outcome::Changed(title, diff) => (
                &mut summary.changed,
                format!("changed {title}\n--- live\n+++ rendered\n{diff}"),
            ),
            Outcome::Failed(title, why) => (&mut summary.failed, format!("error {title}: {why}\n")),
        };
        *counter += 1;
        out.push_str(&text);
    }
    Ok(summary)
}

enum Outcome {
    New(String),
    Unchanged,
    Changed(String, String),
    Failed(String, String),
}

/// How the API server serves a kind; `None` when it does not (yet).
async fn served(client: &Client, object: &Value) -> anyhow::Result<Option<(ApiResource, bool)>> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, caps)) => Ok(Some((resource, caps.scope == Scope::Namespaced))),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e).with_context(|| format!("discovering {api_version} {kind}")),
    }
}

/// The object the executor would apply: its namespace, labels and owner annotation.
fn desired(node: &GraphNode, namespace: Option<&str>, graph: (&str, &str, &str)) -> Value {
    let mut object = node.object.clone();
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let metadata = &mut object["metadata"];
    if let Some(namespace) = namespace {
        metadata["namespace"] = Value::from(namespace);
    }
    let (name, graph_namespace, uid) = graph;
    for (field, entries) in [
        (
            "labels",
            vec![
                (LABEL_GRAPH, name),
                (LABEL_GRAPH_NAMESPACE, graph_namespace),
                (LABEL_NODE, node.id.as_str()),
            ],
        ),
        ("annotations", vec![(ANNOTATION_GRAPH_UID, uid)]),
    ] {
        if !metadata[field].is_object() {
            metadata[field] = json!({});
        }
        for (key, value) in entries {
            metadata[field][key] = Value::from(value);
        }
    }
    pequod_graph::remove_fields(&mut object, &node.apply_policy.ignore_fields);
    object
}

async fn node_diff(
    client: &Client,
    node: &GraphNode,
    graph_name: &str,
    graph_namespace: &str,
    uid: &str,
) -> anyhow::Result<Outcome> {
    let object = &node.object;
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some((resource, namespaced)) = served(client, object).await? else {
        return Ok(Outcome::New(format!(
            "{kind} {name} (node {}; its kind is not served yet)",
            node.id
        )));
    };
    let namespace = namespaced.then(|| {
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(graph_namespace)
            .to_owned()
    });
    let title = match &namespace {
        Some(ns) => format!("{kind} {ns}/{name} (node {})", node.id),
        None => format!("{kind} {name} (node {})", node.id),
    };
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let live = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading {title}"))?;
    let desired = desired(
        node,
        namespace.as_deref(),
        (graph_name, graph_namespace, uid),
    );
    let mut params = PatchParams::apply(pequod_api::FIELD_MANAGER).dry_run();
    params.force = node.apply_policy.conflict_policy == ConflictPolicy::Force;
    let Some(live) = live else {
        return Ok(
            match api.patch(name, &params, &Patch::Apply(&desired)).await {
                // The namespace may come with the same graph.
                Ok(_) => Outcome::New(title),
                Err(kube::Error::Api(status)) if status.code == 404 => Outcome::New(title),
                Err(e) => Outcome::Failed(title, e.to_string()),
            },
        );
    };
    if node.apply_policy.mode == ApplyMode::Create {
        // Created once, never updated.
        return Ok(Outcome::Unchanged);
    }
    let applied = match api.patch(name, &params, &Patch::Apply(&desired)).await {
        Ok(applied) => applied,
        Err(e) => return Ok(Outcome::Failed(title, e.to_string())),
    };
    let before = comparable(&live)?;
    let after = comparable(&applied)?;
    let diff = textdiff::unified(&before, &after);
    Ok(if diff.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Changed(title, diff)
    })
}

/// The object as YAML without what the server keeps for itself.
fn comparable(object: &DynamicObject) -> anyhow::Result<String> {
    let mut value = serde_json::to_value(object).context("encoding an object")?;
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            metadata.remove(field);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    yaml_serde::to_string(&value).context("writing YAML")
}

/// One line: `2 new, 1 changed, 3 unchanged`.
pub fn summary_line(summary: &Summary) -> String {
    let mut line = format!(
        "{} new, {} changed, {} unchanged",
        summary.new, summary.changed, summary.unchanged
    );
    if summary.failed > 0 {
        let _ = write!(line, ", {} refused by the dry run", summary.failed);
    }
    line
}
