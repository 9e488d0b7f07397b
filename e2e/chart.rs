//! The Helm chart `charts/pequod`, checked with the real `helm` (built once by
//! `pequod_testenv::helm`): `helm lint --strict` and the values schema, `helm template` with
//! variants (security context, probes, resources, cache volume, env, RBAC), and `helm install`
//! into the shared full control plane (kwok marks the pods Running, so no image is pulled),
//! where the RBAC is checked for real: SubjectAccessReviews for the operator's ServiceAccount
//! and an impersonated user with the aggregated `edit` role who may write Transforms but not
//! ResourceGraphs.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pequod_api::{ResourceGraph, Transform};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/pequod")
}

/// Runs `helm args…` (blocking); returns (success, stdout, stderr).
fn helm(args: &[&str]) -> (bool, String, String) {
    let output = pequod_testenv::helm::command()
        .args(args)
        .output()
        .expect("run helm");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `helm template <release> charts/pequod --namespace pequod-system <extra…>` as JSON objects.
fn template(extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    let mut args = vec!["template", "pequod", chart, "--namespace", "pequod-system"];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = helm(&args);
    assert!(ok, "helm template {extra:?} failed:\n{stderr}");
    pequod_testenv::helm::documents(&stdout).expect("helm template writes valid YAML")
}

/// The rendered object of `kind` named `name` (in `namespace`, when given).
fn find<'a>(docs: &'a [Value], kind: &str, name: &str, namespace: Option<&str>) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} ({namespace:?}) in:\n{}", names(docs)))
}

/// `Kind namespace/name` of every object, for messages and counting.
fn names(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| {
            format!(
                "{} {}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["namespace"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn count(docs: &[Value], kind: &str) -> usize {
    docs.iter().filter(|d| d["kind"] == kind).count()
}

/// The chart's appVersion, read from Chart.yaml.
fn app_version() -> String {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml");
    let chart = pequod_testenv::helm::documents(&text).expect("Chart.yaml is YAML");
    chart[0]["appVersion"]
        .as_str()
        .expect("appVersion is a string")
        .to_owned()
}

fn has_rule(rules: &Value, group: &str, resource: &str, verb: &str) -> bool {
    let holds = |list: &Value, item: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|v| v == item || v == "*"))
    };
    rules.as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            holds(&r["apiGroups"], group)
                && holds(&r["resources"], resource)
                && holds(&r["verbs"], verb)
        })
    })
}

/// Every key of `values` has an entry with a description in `schema` (recursively into
/// objects the schema describes by `properties`).
fn check_schema_covers(values: &Value, schema: &Value, path: &str) {
    let Some(values) = values.as_object() else {
        return;
    };
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    for (key, value) in values {
        let path = format!("{path}.{key}");
        let entry = properties
            .get(key)
            .unwrap_or_else(|| panic!("values.schema.json does not describe {path}"));
        assert!(
            entry["description"].is_string(),
            "{path} has no description in the schema"
        );
        check_schema_covers(value, entry, &path);
    }
}

#[test]
fn every_value_is_in_the_schema() {
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    let values = &pequod_testenv::helm::documents(&values).expect("values.yaml is YAML")[0];
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).expect("schema"),
    )
    .expect("the schema is JSON");
    assert_eq!(schema["additionalProperties"], false);
    check_schema_covers(values, &schema, "");
}

#[test]
fn helm_lint_passes_strict_and_the_schema_refuses_bad_values() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    let (ok, stdout, stderr) = helm(&["lint", "--strict", chart]);
    assert!(ok, "helm lint --strict failed:\n{stdout}\n{stderr}");
    for (set, complaint) in [
        ("replicas=two", "/replicas"),
        ("bogus=1", "'bogus' not allowed"),
        ("log.format=xml", "/log/format"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("cue.instances=0", "/cue/instances"),
        ("rbac.clusterScoped=maybe", "/rbac/clusterScoped"),
        ("clusterScopedKinds={Name space}", "/clusterScopedKinds/0"),
        (
            "clusterScopedKinds={Kind*.example.com}",
            "/clusterScopedKinds/0",
        ),
        (
            "clusterScopedNamespaceSelector=tier in (trusted)",
            "/clusterScopedNamespaceSelector",
        ),
        ("allowRbacWithoutIdentity=yes", "/allowRbacWithoutIdentity"),
    ] {
        let (ok, stdout, stderr) = helm(&["lint", chart, "--set", set]);
        assert!(!ok, "helm lint accepted --set {set}:\n{stdout}");
        let output = format!("{stdout}{stderr}");
        assert!(
            output.contains(complaint),
            "helm lint --set {set} should name {complaint}:\n{output}"
        );
        let (ok, _, stderr) = helm(&["template", "pequod", chart, "--set", set]);
        assert!(!ok, "helm template accepted --set {set}");
        assert!(stderr.contains("schema"), "{stderr}");
    }
    let (ok, _, stderr) = helm(&[
        "template",
        "pequod",
        chart,
        "--set",
        "rbac.clusterScoped=false",
    ]);
    assert!(
        !ok && stderr.contains("needs watchNamespaces"),
        "namespaced RBAC without namespaces is refused: {stderr}"
    );
}

/// The operator Deployment with default values: hardened, probed, derived limits, cache.
fn check_default_deployment(docs: &[Value]) {
    let deployment = find(docs, "Deployment", "pequod", Some("pequod-system"));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(pod["serviceAccountName"], "pequod");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        format!("ghcr.io/pequod-dev/pequod-operator:{}", app_version())
    );
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        container["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    // 640 MiB for the operator (the start-up compile) + 2 CUE instances × 512 MiB.
    assert_eq!(container["resources"]["limits"]["memory"], "1664Mi");
    assert_eq!(container["resources"]["requests"]["memory"], "256Mi");
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for arg in [
        "--http-addr=0.0.0.0:8080",
        "--leader-elect=true",
        "--lease-name=pequod",
        "--cue-memory-mib=512",
        "--cue-instances=2",
        "--source-cache-max-bytes=536870912",
        "--source-timeout=30s",
        "--shutdown-timeout=25s",
        "--log-format=json",
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    // Defaults: tenants stay in their namespace (no cluster-scoped kinds, no RBAC objects
    // without a ServiceAccount, no local sources).
    for flag in [
        "--namespaces",
        "--allow-cluster-scoped",
        "--cluster-scoped-kinds",
        "--cluster-scoped-namespace-selector",
        "--allow-rbac-without-identity",
        "--allow-namespaces",
        "--allow-local-sources",
    ] {
        assert!(
            !args.iter().any(|a| a.starts_with(flag)),
            "{flag}: {args:?}"
        );
    }
    let env = &container["env"];
    assert!(env.as_array().is_some_and(|env| {
        env.iter().any(|e| e
        == &json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}))
    }));
    assert!(env.as_array().is_some_and(|env| env.iter().any(|e| e
        == &json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}))));
    assert!(env.as_array().is_some_and(|env| {
        env.iter()
            .any(|e| e == &json!({"name": "PEQUOD_CACHE_DIR", "value": "/var/cache/pequod"}))
    }));
    assert!(!env.to_string().contains("CUE_REGISTRY"), "{env}");
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "cache", "mountPath": "/var/cache/pequod"}, {"name": "tmp", "mountPath": "/tmp"}])
    );
    assert_eq!(pod["volumes"][0]["name"], "cache");
    assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], "1Gi");
    assert_eq!(pod["volumes"][1]["name"], "tmp");
    assert!(pod["volumes"][1]["emptyDir"].is_object());
}

/// The three RBAC parts with default values: cluster-wide bindings.
fn check_default_rbac(docs: &[Value]) {
    let own = &find(docs, "ClusterRole", "pequod", None)["rules"];
    let g = "platform.pequod.io";
    for (group, resource, verb) in [
        (g, "transforms", "watch"),
        (g, "transforms", "patch"),
        (g, "transforms/status", "patch"),
        (g, "transforms/finalizers", "update"),
        (g, "resourcegraphs", "create"),
        (g, "resourcegraphs", "delete"),
        (g, "resourcegraphs/status", "patch"),
        (g, "resourcegraphs/finalizers", "update"),
        ("", "secrets", "watch"),
        ("", "configmaps", "list"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("", "serviceaccounts", "impersonate"),
    ] {
        assert!(
            has_rule(own, group, resource, verb),
            "{verb} {resource}.{group}: {own}"
        );
    }
    assert!(!has_rule(own, g, "transforms", "create"), "{own}");
    assert!(!has_rule(own, "", "secrets", "update"), "{own}");
    assert!(
        !has_rule(own, "", "namespaces", "get"),
        "only with a cluster-scope selector: {own}"
    );
    let binding = find(docs, "ClusterRoleBinding", "pequod", None);
    assert_eq!(binding["roleRef"]["name"], "pequod");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "pequod", "namespace": "pequod-system"}])
    );
    let lease = &find(
        docs,
        "Role",
        "pequod-leader-election",
        Some("pequod-system"),
    )["rules"];
    assert!(
        has_rule(lease, "coordination.k8s.io", "leases", "create"),
        "{lease}"
    );
    assert!(
        has_rule(lease, "coordination.k8s.io", "leases", "update"),
        "{lease}"
    );
    find(
        docs,
        "RoleBinding",
        "pequod-leader-election",
        Some("pequod-system"),
    );
    find(docs, "ServiceAccount", "pequod", Some("pequod-system"));

    let apply = find(docs, "ClusterRole", "pequod-apply", None);
    assert_eq!(
        apply["rules"],
        json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])
    );
    assert_eq!(
        find(docs, "ClusterRoleBinding", "pequod-apply", None)["roleRef"]["name"],
        "pequod-apply"
    );
    assert_eq!(
        count(docs, "RoleBinding"),
        1,
        "only the Lease's:\n{}",
        names(docs)
    );

    check_aggregated_roles(docs);
}

/// `view` may read Transforms and graphs; `edit` may write Transforms, never graphs.
fn check_aggregated_roles(docs: &[Value]) {
    let g = "platform.pequod.io";
    let view = find(docs, "ClusterRole", "pequod-transform-view", None);
    let labels = &view["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert!(has_rule(&view["rules"], g, "resourcegraphs", "get"));
    assert!(has_rule(&view["rules"], g, "transforms", "watch"));
    assert!(!has_rule(&view["rules"], g, "transforms", "create"));
    let edit = find(docs, "ClusterRole", "pequod-transform-edit", None);
    let labels = &edit["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert!(
        labels
            .get("rbac.authorization.k8s.io/aggregate-to-view")
            .is_none()
    );
    for verb in ["create", "update", "patch", "delete"] {
        assert!(has_rule(&edit["rules"], g, "transforms", verb), "{verb}");
        assert!(
            !has_rule(&edit["rules"], g, "resourcegraphs", verb),
            "{verb}"
        );
        assert!(
            !has_rule(&edit["rules"], g, "transforms/status", verb),
            "{verb}"
        );
    }
}

#[test]
fn helm_template_renders_a_hardened_deployment_and_separated_rbac() {
    let docs = template(&[]);
    check_default_deployment(&docs);
    check_default_rbac(&docs);
    let service = find(&docs, "Service", "pequod-metrics", Some("pequod-system"));
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    assert_eq!(
        count(&docs, "PodDisruptionBudget"),
        0,
        "one replica: no PDB"
    );
    assert_eq!(count(&docs, "ServiceMonitor"), 0);
}

/// Flags the chart sets through the environment or leaves at the operator's default, and why.
const FLAGS_NOT_IN_ARGS: &[(&str, &str)] = &[
    ("--cue-registry", "CUE_REGISTRY env, from cueRegistry"),
    ("--cue-cache-dir", "PEQUOD_CACHE_DIR env: <cache>/cue"),
    (
        "--cue-seed-dir",
        "PEQUOD_CUE_SEED_DIR env of the image (the guest precompiled at build time)",
    ),
    ("--precompile-guest", "an image build step, not a pod's"),
    (
        "--source-cache-dir",
        "PEQUOD_CACHE_DIR env: <cache>/sources",
    ),
    (
        "--leader-election-namespace",
        "POD_NAMESPACE env (downward API)",
    ),
    ("--identity", "POD_NAME env (downward API)"),
    (
        "--allow-local-sources",
        "tests and local demos only, never a cluster's setting",
    ),
    ("--help", "not a setting"),
    ("--version", "not a setting"),
];

/// Flags the chart passes only when a value asks for them (empty lists, empty strings and
/// false switches have no flag form the operator accepts): the flag, the `--set` that turns
/// it on, and the arg it must then render.
const FLAGS_FROM_OPTIONAL_VALUES: &[(&str, &str, &str)] = &[
    (
        "--namespaces",
        "watchNamespaces={team-a,team-b}",
        "--namespaces=team-a,team-b",
    ),
    (
        "--cluster-scoped-kinds",
        "clusterScopedKinds={Namespace,ClusterRole.rbac.authorization.k8s.io}",
        "--cluster-scoped-kinds=Namespace,ClusterRole.rbac.authorization.k8s.io",
    ),
    (
        "--cluster-scoped-namespace-selector",
        "clusterScopedNamespaceSelector=tenancy=trusted\\,!legacy",
        "--cluster-scoped-namespace-selector=tenancy=trusted,!legacy",
    ),
    (
        "--allow-cluster-scoped",
        "allowClusterScoped=true",
        "--allow-cluster-scoped",
    ),
    (
        "--allow-rbac-without-identity",
        "allowRbacWithoutIdentity=true",
        "--allow-rbac-without-identity",
    ),
    (
        "--allow-namespaces",
        "allowNamespaces={shared}",
        "--allow-namespaces=shared",
    ),
    (
        "--default-service-account",
        "defaultServiceAccount=deployer",
        "--default-service-account=deployer",
    ),
    (
        "--insecure-registries",
        "insecureRegistries={r1:5000}",
        "--insecure-registries=r1:5000",
    ),
];

/// The operator container's args of a rendered chart.
fn container_args(docs: &[Value]) -> Vec<String> {
    find(docs, "Deployment", "pequod", None)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_operator_flag_is_set_by_the_chart_or_deliberately_left_out() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_pequod-operator"))
        .arg("--help")
        .output()
        .expect("pequod-operator --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '=', '<']).next())
        .collect();
    assert!(flags.len() > 20, "parsed flags from --help: {flags:?}");
    let defaults = container_args(&template(&[]));
    for flag in &flags {
        let flag = format!("--{flag}");
        let passed = defaults.iter().any(|a| a.starts_with(&format!("{flag}=")));
        let left_out = FLAGS_NOT_IN_ARGS.iter().any(|(f, _)| *f == flag);
        let optional = FLAGS_FROM_OPTIONAL_VALUES.iter().any(|(f, ..)| *f == flag);
        assert!(
            passed || left_out || optional,
            "the operator has {flag} but the chart neither passes it nor explains why not \
             (add a value in charts/pequod and a FLAGS_FROM_OPTIONAL_VALUES entry, or a \
             FLAGS_NOT_IN_ARGS entry)"
        );
    }
    // Each optional flag is absent by default and rendered exactly when its value is set.
    for (flag, set, expected) in FLAGS_FROM_OPTIONAL_VALUES {
        assert!(
            flags.contains(&flag.trim_start_matches("--")),
            "{flag} is no longer an operator flag"
        );
        assert!(
            !defaults
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}="))),
            "{flag} by default: {defaults:?}"
        );
        let args = container_args(&template(&["--set", set]));
        assert!(
            args.iter().any(|a| a == expected),
            "--set {set} should render {expected}: {args:?}"
        );
    }
}

#[test]
fn helm_template_variants_pdb_service_monitor_args_and_namespaced_rbac() {
    // Two replicas: a PDB over the operator pods.
    let docs = template(&["--set", "replicas=2"]);
    let pdb = find(
        &docs,
        "PodDisruptionBudget",
        "pequod",
        Some("pequod-system"),
    );
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let deployment = find(&docs, "Deployment", "pequod", None);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);

    // The ServiceMonitor scrapes the metrics Service's port.
    let docs = template(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.labels.release=prom",
    ]);
    let monitor = find(&docs, "ServiceMonitor", "pequod", Some("pequod-system"));
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let service = find(&docs, "Service", "pequod-metrics", None);
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("labels")
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }

    // Flags and the derived memory limit follow the values.
    let docs = template(&[
        "--set",
        "cue.instances=4",
        "--set",
        "cueRegistry=registry.example/cue+insecure",
        "--set",
        "defaultServiceAccount=deployer",
        "--set",
        "insecureRegistries={r1:5000,r2:5000}",
        "--set",
        "log.format=text",
        "--set",
        "image.tag=dev",
        "--set",
        "fullnameOverride=pq-x",
    ]);
    let container =
        &find(&docs, "Deployment", "pq-x", None)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["resources"]["limits"]["memory"], "2688Mi",
        "640 + 4 × 512"
    );
    assert_eq!(container["image"], "ghcr.io/pequod-dev/pequod-operator:dev");
    let args = container["args"].to_string();
    for arg in [
        "--cue-instances=4",
        "--default-service-account=deployer",
        "--insecure-registries=r1:5000,r2:5000",
        "--log-format=text",
        "--lease-name=pq-x",
    ] {
        assert!(args.contains(arg), "{arg} missing from {args}");
    }
    assert!(
        container["env"]
            .as_array()
            .expect("env")
            .contains(&json!({"name": "CUE_REGISTRY", "value": "registry.example/cue+insecure"}))
    );
    find(&docs, "ClusterRole", "pq-x-apply", None);
    let docs = template(&["--set", "resources.limits.memory=3Gi"]);
    let container =
        &find(&docs, "Deployment", "pequod", None)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["resources"]["limits"]["memory"], "3Gi",
        "an explicit limit wins"
    );

    check_namespaced_rbac();
}

/// watchNamespaces set: the apply role is bound per namespace, never cluster-wide.
fn check_namespaced_rbac() {
    let docs = template(&[
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "allowNamespaces={shared,team-b}",
    ]);
    let args = find(&docs, "Deployment", "pequod", None)["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .to_string();
    assert!(args.contains("--namespaces=team-a,team-b"), "{args}");
    assert!(args.contains("--allow-namespaces=shared,team-b"), "{args}");
    for namespace in ["team-a", "team-b", "shared"] {
        let binding = find(&docs, "RoleBinding", "pequod-apply", Some(namespace));
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pequod-apply"})
        );
        assert_eq!(binding["subjects"][0]["namespace"], "pequod-system");
    }
    assert_eq!(
        count(&docs, "RoleBinding"),
        4,
        "three apply + the Lease's:\n{}",
        names(&docs)
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == "pequod-apply"),
        "no cluster-wide apply binding:\n{}",
        names(&docs)
    );
    // Two watched namespaces: the controllers watch across namespaces, so (a) stays
    // cluster-wide.
    find(&docs, "ClusterRoleBinding", "pequod", None);

    // One watched namespace: everything is namespaced.
    let docs = template(&["--set", "watchNamespaces={team-a}"]);
    assert_eq!(count(&docs, "ClusterRoleBinding"), 0, "{}", names(&docs));
    find(&docs, "RoleBinding", "pequod", Some("team-a"));
    find(&docs, "RoleBinding", "pequod-apply", Some("team-a"));

    // Cluster-scoped objects need the cluster-wide binding.
    let docs = template(&[
        "--set",
        "watchNamespaces={team-a}",
        "--set",
        "allowClusterScoped=true",
    ]);
    find(&docs, "ClusterRoleBinding", "pequod-apply", None);
    let args = find(&docs, "Deployment", "pequod", None)["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .clone();
    assert!(
        args.as_array()
            .is_some_and(|a| a.contains(&json!("--allow-cluster-scoped"))),
        "{args}"
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == "pequod-apply")
    );

    // Narrowed rules.
    let docs = template(&[
        "--set",
        "rbac.apply.rules=null",
        "--set",
        "defaultServiceAccount=deployer",
    ]);
    assert_eq!(
        find(&docs, "ClusterRole", "pequod-apply", None)["rules"],
        json!([])
    );
}

/// The tenant-boundary values: granted cluster-scoped kinds keep the apply permission bound
/// cluster-wide (as the deprecated allowClusterScoped does), a namespace selector lets the
/// operator read Namespaces, and each value renders its flag.
#[test]
fn helm_template_variants_cluster_scoped_kinds_selector_and_rbac_identity() {
    // One watched namespace would bind everything per namespace; cluster-scoped kinds need
    // the cluster-wide apply binding, and the operator's own role follows it.
    let docs = template(&[
        "--set",
        "watchNamespaces={team-a}",
        "--set",
        "clusterScopedKinds={Namespace}",
    ]);
    find(&docs, "ClusterRoleBinding", "pequod-apply", None);
    find(&docs, "ClusterRoleBinding", "pequod", None);
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == "pequod-apply"),
        "{}",
        names(&docs)
    );
    let args = container_args(&docs);
    assert!(
        args.iter().any(|a| a == "--cluster-scoped-kinds=Namespace"),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a == "--allow-cluster-scoped"),
        "the deprecated switch only from allowClusterScoped: {args:?}"
    );
    assert!(
        !has_rule(
            &find(&docs, "ClusterRole", "pequod", None)["rules"],
            "",
            "namespaces",
            "get"
        ),
        "no selector, no Namespace reads"
    );

    // A selector: the executor reads a graph's Namespace (its labels) with the operator's
    // own identity, so role (a) gets `get` on namespaces, and nothing more.
    let docs = template(&[
        "--set",
        "clusterScopedKinds={Namespace,*.example.com}",
        "--set",
        "clusterScopedNamespaceSelector=tenancy=trusted\\,!legacy",
        "--set",
        "allowRbacWithoutIdentity=true",
    ]);
    let own = &find(&docs, "ClusterRole", "pequod", None)["rules"];
    assert!(has_rule(own, "", "namespaces", "get"), "{own}");
    for verb in ["list", "watch", "update", "patch", "create", "delete"] {
        assert!(!has_rule(own, "", "namespaces", verb), "{verb}: {own}");
    }
    let args = container_args(&docs);
    for arg in [
        "--cluster-scoped-kinds=Namespace,*.example.com",
        "--cluster-scoped-namespace-selector=tenancy=trusted,!legacy",
        "--allow-rbac-without-identity",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} missing from {args:?}");
    }

    // A selector without granted kinds selects nothing: no flag needs the Namespace reads.
    let docs = template(&["--set", "clusterScopedNamespaceSelector=tenancy=trusted"]);
    assert!(!has_rule(
        &find(&docs, "ClusterRole", "pequod", None)["rules"],
        "",
        "namespaces",
        "get"
    ));

    // The deprecated switch still works as before, and with a selector also reads Namespaces.
    let docs = template(&[
        "--set",
        "allowClusterScoped=true",
        "--set",
        "clusterScopedNamespaceSelector=tenancy=trusted",
    ]);
    assert!(has_rule(
        &find(&docs, "ClusterRole", "pequod", None)["rules"],
        "",
        "namespaces",
        "get"
    ));
    assert!(container_args(&docs).contains(&"--allow-cluster-scoped".to_owned()));
}

/// `helm install --dry-run` output (with the NOTES) against the test control plane: helm
/// prints NOTES only for an install, and even a client-side dry run checks that the cluster
/// answers.
fn install_notes(extra: &[&str]) -> String {
    let chart = chart_dir();
    let kubeconfig = support::env().kubeconfig().to_str().expect("UTF-8 path");
    let mut args = vec![
        "install",
        "pequod",
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        "pequod-system",
        "--kubeconfig",
        kubeconfig,
        "--dry-run=client",
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = helm(&args);
    assert!(ok, "helm install --dry-run {extra:?} failed:\n{stderr}");
    let notes = stdout
        .split_once("\nNOTES:\n")
        .unwrap_or_else(|| panic!("no NOTES in:\n{stdout}"))
        .1;
    // One paragraph per line, so that assertions need not care where lines wrap.
    notes.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn helm_notes_warn_when_tenants_get_cluster_scope_or_rbac_without_identity() {
    let defaults = install_notes(&[]);
    assert!(!defaults.contains("WARNING"), "{defaults}");
    assert!(
        !defaults.contains("Cluster-scoped kinds granted"),
        "{defaults}"
    );

    let namespaces = install_notes(&["--set", "clusterScopedKinds={Namespace}"]);
    for expected in [
        "Cluster-scoped kinds granted to graphs in any namespace: Namespace.",
        "never named, adopted or created-if-absent",
        "WARNING: cluster-scoped kinds are granted and defaultServiceAccount is empty",
        "with the operator's own rights (ClusterRole pequod-apply, bound cluster-wide)",
        "set defaultServiceAccount",
        "set clusterScopedNamespaceSelector",
        "keep clusterScopedKinds to the kinds your modules need",
    ] {
        assert!(
            namespaces.contains(expected),
            "{expected:?} in:\n{namespaces}"
        );
    }
    assert!(
        !namespaces.contains("allowRbacWithoutIdentity"),
        "{namespaces}"
    );

    let everything = install_notes(&[
        "--set",
        "allowClusterScoped=true",
        "--set",
        "clusterScopedNamespaceSelector=tenancy=trusted",
        "--set",
        "allowRbacWithoutIdentity=true",
    ]);
    for expected in [
        "whose labels match \"tenancy=trusted\": every cluster-scoped kind.",
        "allowClusterScoped is deprecated",
        "webhook configurations",
        "instead of every kind",
        "keep the right to label Namespaces with the platform team",
        "WARNING: allowRbacWithoutIdentity is on and defaultServiceAccount is empty",
        "bind themselves or anyone to whatever pequod-apply allows",
    ] {
        assert!(
            everything.contains(expected),
            "{expected:?} in:\n{everything}"
        );
    }

    // With a default ServiceAccount Kubernetes RBAC decides: no warning, and the RBAC switch
    // is said to do nothing.
    let held = install_notes(&[
        "--set",
        "clusterScopedKinds={Namespace}",
        "--set",
        "allowRbacWithoutIdentity=true",
        "--set",
        "defaultServiceAccount=deployer",
    ]);
    assert!(!held.contains("WARNING"), "{held}");
    assert!(
        held.contains("allowRbacWithoutIdentity has no effect while defaultServiceAccount is set"),
        "{held}"
    );
}

/// Whether `user` (with `groups`) may do what `attributes` (a SubjectAccessReview's
/// `resourceAttributes`) says, as the API server's authorizer answers.
async fn allowed(client: &Client, user: &str, groups: &[&str], attributes: Value) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": groups, "resourceAttributes": attributes},
    }))
    .expect("review");
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// A client that acts as `user` (impersonation by the test's system:masters user).
fn client_as(user: &str) -> Client {
    let mut config = support::env().config();
    config.auth_info.impersonate = Some(user.to_owned());
    Client::try_from(config).expect("impersonating client")
}

fn is_forbidden<T: std::fmt::Debug>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

fn transform(name: &str) -> Transform {
    serde_json::from_value(json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "Transform",
        "metadata": {"name": name},
        "spec": {"cueRef": {"type": "embedded", "ref": "webservice"}, "input": {"image": "nginx"}},
    }))
    .expect("Transform")
}

fn graph(name: &str) -> ResourceGraph {
    serde_json::from_value(json!({
        "apiVersion": "platform.pequod.io/v1alpha1",
        "kind": "ResourceGraph",
        "metadata": {"name": name},
        "spec": {
            "sourceRef": {"apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform", "name": name},
            "revision": 1,
            "renderHash": "0123456789abcdef",
            "module": {"ref": "webservice", "digest": "sha256:0123456789abcdef"},
            "nodes": [],
        },
    }))
    .expect("ResourceGraph")
}

#[tokio::test]
async fn helm_install_runs_the_operator_with_working_rbac_and_uninstalls() {
    let (client, ns) = support::namespace("e2e-chart").await;
    // Cluster-scoped objects are named after the full name: unique per test run.
    let fullname = ns.clone();
    let kubeconfig = support::env()
        .kubeconfig()
        .to_str()
        .expect("UTF-8 path")
        .to_owned();
    let stdout = helm_install(
        &ns,
        &[
            "--set".to_owned(),
            "image.tag=e2e".to_owned(),
            "--set".to_owned(),
            format!("fullnameOverride={fullname}"),
            "--set".to_owned(),
            "replicas=2".to_owned(),
            // Narrowed apply rules, so that what the operator may do besides them shows.
            "--set-json".to_owned(),
            r#"rbac.apply.rules=[{"apiGroups":["apps"],"resources":["deployments"],"verbs":["get","list","watch","create","update","patch","delete"]}]"#.to_owned(),
        ],
    )
    .await;
    assert!(
        stdout.contains(&format!("rollout status deployment/{fullname}")),
        "NOTES:\n{stdout}"
    );

    check_installed_objects(&client, &ns, &fullname).await;
    check_operator_permissions(&client, &ns, &fullname).await;
    check_edit_and_view_users(&client, &ns).await;

    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let (ns, kubeconfig) = (ns.clone(), kubeconfig.clone());
        move || {
            helm(&[
                "uninstall",
                "pequod",
                "--namespace",
                &ns,
                "--kubeconfig",
                &kubeconfig,
                "--wait",
            ])
        }
    })
    .await
    .expect("helm uninstall");
    assert!(ok, "helm uninstall failed:\n{stdout}\n{stderr}");
    let roles = Api::<ClusterRole>::all(client.clone());
    for name in [
        fullname.clone(),
        format!("{fullname}-apply"),
        format!("{fullname}-transform-edit"),
    ] {
        support::eventually(&format!("ClusterRole {name} deleted"), MINUTE, &[], || {
            let roles = roles.clone();
            let name = name.clone();
            async move {
                roles
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                    .then_some(())
            }
        })
        .await;
    }
    assert!(
        Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt("transforms.platform.pequod.io")
            .await
            .expect("get CRD")
            .is_some(),
        "Helm never deletes CRDs"
    );
}

/// What `helm install` created, and a Deployment that became Available on the kwok node.
async fn check_installed_objects(client: &Client, ns: &str, fullname: &str) {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let started = Instant::now();
    support::eventually(
        "the operator Deployment Available with 2 ready replicas",
        2 * MINUTE,
        &[],
        || {
            let deployments = deployments.clone();
            async move {
                let status = deployments.get(fullname).await.ok()?.status?;
                let available = status.conditions?.iter().any(|c| {
                    c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
                });
                (available && status.ready_replicas == Some(2)).then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "Deployment Available {:?} after helm install",
        started.elapsed()
    );
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/name=pequod"))
        .await
        .expect("pods");
    assert_eq!(pods.items.len(), 2);
    for pod in &pods.items {
        let spec = pod.spec.as_ref().expect("spec");
        let container = &spec.containers[0];
        let security = container
            .security_context
            .as_ref()
            .expect("securityContext");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            container.image.as_deref(),
            Some("ghcr.io/pequod-dev/pequod-operator:e2e")
        );
        assert_eq!(spec.service_account_name.as_deref(), Some(fullname));
        assert_eq!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running")
        );
    }
    for crd in [
        "transforms.platform.pequod.io",
        "resourcegraphs.platform.pequod.io",
    ] {
        let crd = Api::<CustomResourceDefinition>::all(client.clone())
            .get(crd)
            .await
            .expect("CRD");
        let established = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            established
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        );
    }
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get(fullname)
        .await
        .expect("ServiceAccount");
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get(&format!("{fullname}-metrics"))
        .await
        .expect("metrics Service");
    let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
    assert_eq!(ports[0].port, 8080);
    for role in ["", "-apply", "-transform-view", "-transform-edit"] {
        Api::<ClusterRole>::all(client.clone())
            .get(&format!("{fullname}{role}"))
            .await
            .expect("ClusterRole");
    }
    for binding in ["", "-apply"] {
        Api::<ClusterRoleBinding>::all(client.clone())
            .get(&format!("{fullname}{binding}"))
            .await
            .expect("ClusterRoleBinding");
    }
    let lease = format!("{fullname}-leader-election");
    Api::<Role>::namespaced(client.clone(), ns)
        .get(&lease)
        .await
        .expect("Lease Role");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .get(&lease)
        .await
        .expect("Lease RoleBinding");
    let pdb =
        Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(client.clone(), ns);
    pdb.get(fullname).await.expect("two replicas: a PDB");
}

/// The operator's ServiceAccount, asked of the API server's authorizer.
async fn check_operator_permissions(client: &Client, ns: &str, fullname: &str) {
    let user = format!("system:serviceaccount:{ns}:{fullname}");
    let groups = [
        "system:serviceaccounts",
        &format!("system:serviceaccounts:{ns}"),
        "system:authenticated",
    ];
    let g = "platform.pequod.io";
    for (what, attributes, expected) in [
        (
            "create its Lease",
            json!({"namespace": ns, "verb": "create", "group": "coordination.k8s.io", "resource": "leases"}),
            true,
        ),
        (
            "update its Lease",
            json!({"namespace": ns, "verb": "update", "group": "coordination.k8s.io", "resource": "leases", "name": fullname}),
            true,
        ),
        (
            "update another Lease",
            json!({"namespace": ns, "verb": "update", "group": "coordination.k8s.io", "resource": "leases", "name": "kube-scheduler"}),
            false,
        ),
        (
            "create a Lease elsewhere",
            json!({"namespace": "kube-system", "verb": "create", "group": "coordination.k8s.io", "resource": "leases"}),
            false,
        ),
        (
            "patch Transform status",
            json!({"namespace": "team", "verb": "patch", "group": g, "resource": "transforms", "subresource": "status"}),
            true,
        ),
        (
            "update graph finalizers",
            json!({"namespace": "team", "verb": "update", "group": g, "resource": "resourcegraphs", "subresource": "finalizers"}),
            true,
        ),
        (
            "create ResourceGraphs",
            json!({"namespace": "team", "verb": "create", "group": g, "resource": "resourcegraphs"}),
            true,
        ),
        (
            "watch Secrets",
            json!({"verb": "watch", "resource": "secrets"}),
            true,
        ),
        (
            "create Events",
            json!({"namespace": "team", "verb": "create", "group": "events.k8s.io", "resource": "events"}),
            true,
        ),
        (
            "impersonate a ServiceAccount",
            json!({"namespace": "team", "verb": "impersonate", "resource": "serviceaccounts", "name": "deployer"}),
            true,
        ),
        (
            "apply a Deployment (pequod-apply)",
            json!({"namespace": "team", "verb": "patch", "group": "apps", "resource": "deployments"}),
            true,
        ),
        (
            "write Secrets (not in the narrowed apply rules)",
            json!({"namespace": "team", "verb": "create", "resource": "secrets"}),
            false,
        ),
        (
            "write Transforms",
            json!({"namespace": "team", "verb": "create", "group": g, "resource": "transforms"}),
            false,
        ),
    ] {
        assert_eq!(
            allowed(client, &user, &groups, attributes).await,
            expected,
            "the operator may {what}: expected {expected}"
        );
    }
}

/// A user with the built-in `edit` role (to which the chart's roles aggregate) writes
/// Transforms but not ResourceGraphs; a `view` user reads both and writes neither.
async fn check_edit_and_view_users(client: &Client, ns: &str) {
    let (alice, bob) = (format!("alice-{ns}"), format!("bob-{ns}"));
    for (user, role) in [(&alice, "edit"), (&bob, "view")] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{role}-{user}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))
        .expect("RoleBinding");
        Api::<RoleBinding>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &binding)
            .await
            .expect("create RoleBinding");
    }
    let as_alice = Api::<Transform>::namespaced(client_as(&alice), ns);
    // The controller-manager aggregates the chart's roles into `edit` shortly after install.
    support::eventually("edit to include creating Transforms", MINUTE, &[], || {
        let as_alice = as_alice.clone();
        async move {
            as_alice
                .create(&PostParams::default(), &transform("by-alice"))
                .await
                .ok()
        }
    })
    .await;
    as_alice
        .get("by-alice")
        .await
        .expect("edit reads Transforms");
    let patch = Patch::Merge(json!({"spec": {"suspend": true}}));
    as_alice
        .patch("by-alice", &PatchParams::default(), &patch)
        .await
        .expect("edit patches Transforms");
    let status = Patch::Merge(json!({"status": {"renderHash": "forged"}}));
    assert!(is_forbidden(
        &as_alice
            .patch_status("by-alice", &PatchParams::default(), &status)
            .await
    ));

    let graphs_as_alice = Api::<ResourceGraph>::namespaced(client_as(&alice), ns);
    assert!(is_forbidden(
        &graphs_as_alice
            .create(&PostParams::default(), &graph("forged"))
            .await
    ));
    Api::<ResourceGraph>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &graph("real"))
        .await
        .expect("the admin creates a graph");
    graphs_as_alice
        .get("real")
        .await
        .expect("edit reads ResourceGraphs");
    let patch = Patch::Merge(json!({"spec": {"revision": 7}}));
    assert!(is_forbidden(
        &graphs_as_alice
            .patch("real", &PatchParams::default(), &patch)
            .await
    ));
    assert!(is_forbidden(
        &graphs_as_alice
            .delete("real", &DeleteParams::default())
            .await
    ));

    let as_bob = Api::<Transform>::namespaced(client_as(&bob), ns);
    support::eventually("view to include reading Transforms", MINUTE, &[], || {
        let as_bob = as_bob.clone();
        async move { as_bob.get("by-alice").await.ok() }
    })
    .await;
    Api::<ResourceGraph>::namespaced(client_as(&bob), ns)
        .get("real")
        .await
        .expect("view reads graphs");
    assert!(is_forbidden(
        &as_bob
            .create(&PostParams::default(), &transform("by-bob"))
            .await
    ));
    assert!(is_forbidden(
        &as_bob.delete("by-alice", &DeleteParams::default()).await
    ));
    Api::<Transform>::namespaced(client.clone(), ns)
        .delete("by-alice", &DeleteParams::default())
        .await
        .expect("clean up");
}

/// A kubeconfig for the test API server that authenticates with `token` (a ServiceAccount
/// token, as the kubelet would mount it in the pod) instead of the admin's.
fn kubeconfig_with_token(path: &std::path::Path, token: &str) {
    let admin = std::fs::read_to_string(support::env().kubeconfig()).expect("kubeconfig");
    let mut replaced = 0;
    let text: Vec<String> = admin
        .lines()
        .map(|line| match line.split_once("token: ") {
            Some((indent, _)) => {
                replaced += 1;
                format!("{indent}token: {token}")
            }
            None => line.to_owned(),
        })
        .collect();
    assert_eq!(
        replaced, 1,
        "the test kubeconfig has one token line:\n{admin}"
    );
    std::fs::write(path, text.join("\n") + "\n").expect("write kubeconfig");
}

/// A plain HTTP/1.0 GET of `path` on `address`: the status code.
async fn http_status(address: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

/// The resident set of process `pid` in MiB (`VmRSS`).
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// The operator container's args and plain env as the API server stored them from the chart.
async fn installed_container(
    client: &Client,
    ns: &str,
    name: &str,
) -> (Vec<String>, Vec<(String, String)>) {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("the chart's Deployment");
    let spec = deployment.spec.template.spec.expect("pod spec");
    let container = spec.containers.into_iter().next().expect("container");
    let env = container
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    (container.args.unwrap_or_default(), env)
}

/// `helm install pequod charts/pequod` into `ns` of the test control plane with `extra`
/// arguments (`--set …`); panics with Helm's output when it fails, else returns its stdout
/// (the NOTES).
async fn helm_install(ns: &str, extra: &[String]) -> String {
    let chart = chart_dir();
    let kubeconfig = support::env().kubeconfig().to_str().expect("UTF-8 path");
    let mut args: Vec<String> = ["install", "pequod", chart.to_str().expect("UTF-8 path")]
        .into_iter()
        .chain([
            "--namespace",
            ns,
            "--kubeconfig",
            kubeconfig,
            "--timeout",
            "2m",
        ])
        .map(str::to_owned)
        .collect();
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        helm(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("helm install");
    assert!(ok, "helm install failed:\n{stdout}\n{stderr}");
    stdout
}

/// `pequod-operator` run the way the chart's pod runs it: the Deployment's args and env as
/// stored by the API server, the ServiceAccount's token, POD_NAME/POD_NAMESPACE. Only the
/// listen address (a free port here) and the cache (the machine's, where the CUE guest is
/// already compiled) differ.
struct ChartOperator {
    child: tokio::process::Child,
    address: String,
    log: PathBuf,
    pod: String,
}

impl ChartOperator {
    async fn start(client: &Client, ns: &str, fullname: &str) -> ChartOperator {
        let (args, env) = installed_container(client, ns, fullname).await;
        let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .create_token_request(fullname, &PostParams::default(), &TokenRequest::default())
            .await
            .expect("a token for the operator's ServiceAccount")
            .status
            .and_then(|s| s.token)
            .expect("a token");
        let kubeconfig = support::env()
            .dir()
            .join(format!("{ns}-operator.kubeconfig"));
        kubeconfig_with_token(&kubeconfig, &token);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                if a.starts_with("--http-addr=") {
                    format!("--http-addr={address}")
                } else {
                    a
                }
            })
            .collect();
        let log = support::env().dir().join(format!("operator-{ns}.log"));
        let pod = format!("{fullname}-pod-0");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pequod-operator"))
            .args(&args)
            .envs(
                env.into_iter()
                    .filter(|(name, _)| name != "PEQUOD_CACHE_DIR"),
            )
            .env("PEQUOD_CACHE_DIR", pequod_testenv::binaries::cache_root())
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", &pod)
            .env("POD_NAMESPACE", ns)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pequod-operator");
        let operator = ChartOperator {
            child,
            address,
            log,
            pod,
        };
        let started = Instant::now();
        let mut operator = operator;
        while http_status(&operator.address, "/readyz").await != Some(200) {
            if let Ok(Some(status)) = operator.child.try_wait() {
                panic!(
                    "pequod-operator {args:?} exited ({status}):\n{}",
                    operator.tail()
                );
            }
            assert!(
                started.elapsed() < 2 * MINUTE,
                "never ready with {args:?}:\n{}",
                operator.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("operator ready {:?} after start", started.elapsed());
        operator
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM; the exit status.
    async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let status = support::sigterm(&mut self.child).await;
        (
            status,
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        )
    }
}

#[tokio::test]
async fn the_operator_converges_a_transform_with_the_chart_s_args_and_namespaced_rbac() {
    let (client, ns) = support::namespace("e2e-chart-run").await;
    let fullname = ns.clone();
    helm_install(
        &ns,
        &[
            "--set".to_owned(),
            "image.tag=e2e".to_owned(),
            "--set".to_owned(),
            format!("fullnameOverride={fullname}"),
            "--set".to_owned(),
            format!("watchNamespaces={{{ns}}}"),
        ],
    )
    .await;
    // One watched namespace: nothing is bound cluster-wide.
    for name in [fullname.clone(), format!("{fullname}-apply")] {
        let bindings = Api::<ClusterRoleBinding>::all(client.clone());
        assert!(
            bindings.get_opt(&name).await.expect("get").is_none(),
            "{name}"
        );
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .get(&name)
            .await
            .expect("RoleBinding");
    }

    let operator = ChartOperator::start(&client, &ns, &fullname).await;
    let input = json!({"cueRef": {"type": "embedded", "ref": "webservice"}, "input": support::web_input(1)});
    support::create_transform(&client, &ns, "web", input).await;
    let created = Instant::now();
    if let Err(e) = support::kubectl_wait_ready(&ns, "web", 2 * MINUTE).await {
        panic!(
            "the Transform never became Ready as the chart's ServiceAccount: {e}\n{}",
            operator.tail()
        );
    }
    eprintln!("Transform Ready {:?} after create", created.elapsed());
    Api::<Service>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .expect("the graph's Service");
    assert_eq!(
        lease_holder(&client, &ns, &fullname).await.as_deref(),
        Some(operator.pod.as_str())
    );
    if let Some(rss) = operator.child.id().and_then(rss_mib) {
        eprintln!("operator RSS {rss} MiB with one Transform converged (chart request: 256Mi)");
    }

    // A clean stop releases the Lease (an update the Role allows).
    let (status, log) = operator.terminate().await;
    assert!(status.success(), "exit {status}:\n{log}");
    assert_eq!(
        lease_holder(&client, &ns, &fullname).await,
        None,
        "released"
    );
    assert!(
        !log.contains("\"level\":\"ERROR\""),
        "errors in the log:\n{log}"
    );
    // Namespaced RBAC suffices: every watch is per namespace, nothing is refused.
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
    assert!(refusals.is_empty(), "refused:\n{}", refusals.join("\n"));
}

/// The holder of the Lease `name`, if anyone holds it.
async fn lease_holder(client: &Client, namespace: &str, name: &str) -> Option<String> {
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}
