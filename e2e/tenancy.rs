//! The tenant boundary end to end: a hostile corpus of Transforms, each written by a tenant
//! who holds only Kubernetes' built-in `edit` role in one namespace plus the chart's Transform
//! roles (the test client impersonates that user), against the operator binary with the
//! chart's default flags, and a second run with cluster scope granted for Namespaces.
//!
//! Every case asserts its own outcome (the API server's refusal, or the Transform's condition
//! and reason); all of them together must leave the victim namespace and the cluster-scoped
//! objects untouched, keep the operator alive (no panic, no hot loop: the reconcile count over
//! a quiet window is bounded) and let unrelated Transforms converge — also after a restart,
//! when every Transform is LISTed again.

// The corpus is data: one case per entry, and the tests read as the story they tell.
#![allow(clippy::too_many_lines)]
// Case builders take JSON values by value so that cases read as data.
#![allow(clippy::needless_pass_by_value)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use pequod_api::Transform;
use pequod_api::lenient::Lenient;
use serde_json::{Value, json};
use support::{Operator, condition, env, eventually, namespace};

const SETTLE: Duration = Duration::from_secs(120);

/// What a case must end in.
#[derive(Clone, Debug)]
enum Expect {
    /// The API server refuses the Transform; its message contains the text.
    Refused(&'static str),
    /// `Stalled=True` with this reason, the message containing the text.
    Stalled(&'static str, &'static str),
    /// `Fetched=False` with this reason.
    NotFetched(&'static str),
    /// Not Ready because a node failed; the Transform's message contains the text.
    NodeFails(&'static str),
    /// Ready: a value at its bound, or a legitimate use next to the abuse.
    Ready,
}

struct Case {
    name: String,
    class: &'static str,
    spec: Value,
    expect: Expect,
}

fn case(class: &'static str, name: &str, spec: Value, expect: Expect) -> Case {
    Case {
        name: name.to_owned(),
        class,
        spec,
        expect,
    }
}

/// An inline module whose open `#Input` accepts anything and whose graph is `nodes` (JSON is
/// CUE), with `extra` CUE appended.
fn module(nodes: &Value, extra: &str) -> String {
    format!("package hostile\n\n#Input: {{...}}\ninput: #Input\ngraph: nodes: {nodes}\n{extra}\n")
}

fn inline(source: String) -> Value {
    json!({"type": "inline", "ref": source})
}

/// A spec rendering `nodes`.
fn rendering(nodes: Value) -> Value {
    json!({"cueRef": inline(module(&nodes, ""))})
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn node(id: &str, object: Value) -> Value {
    json!({"id": id, "object": object})
}

/// A ConfigMap node whose apply policy ignores `pointers`.
fn ignoring(pointers: Value) -> Value {
    let mut n = node("cm", config_map("ignoring"));
    n["applyPolicy"] = json!({"ignoreFields": pointers});
    rendering(json!([n]))
}

fn nested(levels: usize, leaf: Value) -> Value {
    let mut value = leaf;
    for _ in 1..levels {
        value = json!({ "x": value });
    }
    value
}

fn with(mut spec: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    spec.pointer_mut(parent).expect("parent")[key] = value;
    spec
}

/// A harmless graph: one ConfigMap, named anew on each call (two cases never render the same
/// object, which would be a conflict between them).
fn plain() -> Value {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    rendering(json!([node("cm", config_map(&format!("plain-{n}")))]))
}

fn git(reference: &str) -> Value {
    json!({"cueRef": {"type": "git", "ref": reference}})
}

fn oci(reference: &str) -> Value {
    json!({"cueRef": {"type": "oci", "ref": reference}})
}

/// Cases the API server refuses: every bound and type of the Transform's own fields.
fn refused_by_the_api_server() -> Vec<Case> {
    let oci_with = |field: &str, value: Value| {
        with(
            oci("registry.example/m"),
            &format!("/cueRef/{field}"),
            value,
        )
    };
    let c = |name: &str, spec: Value, says: &'static str| {
        case("spec fields (CRD)", name, spec, Expect::Refused(says))
    };
    vec![
        c(
            "interval-1ms",
            oci_with("interval", json!("1ms")),
            "cueRef.interval must be between 10s and 168h",
        ),
        c(
            "interval-9s",
            oci_with("interval", json!("9s")),
            "cueRef.interval must be between 10s and 168h",
        ),
        c(
            "interval-above-max",
            oci_with("interval", json!("168h1s")),
            "cueRef.interval must be between 10s and 168h",
        ),
        c(
            "interval-overflow",
            oci_with("interval", json!("5124095576030000h")),
            "spec.cueRef.interval",
        ),
        c(
            "interval-words",
            oci_with("interval", json!("soon")),
            "spec.cueRef.interval",
        ),
        c(
            "interval-long",
            oci_with("interval", json!(format!("{}s", "9".repeat(40)))),
            "spec.cueRef.interval",
        ),
        c(
            "interval-number",
            oci_with("interval", json!(30)),
            "spec.cueRef.interval",
        ),
        c(
            "timeout-999ms",
            with(plain(), "/timeout", json!("999ms")),
            "spec.timeout must be between 1s and 168h",
        ),
        c(
            "timeout-169h",
            with(plain(), "/timeout", json!("169h")),
            "spec.timeout must be between 1s and 168h",
        ),
        c(
            "timeout-overflow",
            with(plain(), "/timeout", json!("99999999999999999999h")),
            "spec.timeout",
        ),
        c(
            "no-cue-ref",
            json!({"input": {}}),
            "spec.cueRef: Required value",
        ),
        c(
            "unknown-source",
            json!({"cueRef": {"type": "s3", "ref": "x"}}),
            "Unsupported value: \"s3\"",
        ),
        c(
            "empty-ref",
            json!({"cueRef": {"type": "embedded", "ref": ""}}),
            "spec.cueRef.ref",
        ),
        c(
            "version-on-inline",
            with(plain(), "/cueRef/version", json!("^1")),
            "only allowed with type oci or git",
        ),
        c(
            "secret-on-inline",
            with(plain(), "/cueRef/pullSecretRef", json!({"name": "s"})),
            "only allowed with type oci or git",
        ),
        c(
            "interval-on-inline",
            with(plain(), "/cueRef/interval", json!("1m")),
            "only allowed with type oci or git",
        ),
        c(
            "input-string",
            with(plain(), "/input", json!("text")),
            "spec.input",
        ),
        c(
            "input-list",
            with(plain(), "/input", json!([1, 2])),
            "spec.input",
        ),
        c(
            "sa-empty",
            with(plain(), "/serviceAccountName", json!("")),
            "spec.serviceAccountName",
        ),
        c(
            "sa-other-namespace",
            with(plain(), "/serviceAccountName", json!("kube-system:default")),
            "spec.serviceAccountName",
        ),
        c(
            "sa-too-long",
            with(plain(), "/serviceAccountName", json!("a".repeat(254))),
            "spec.serviceAccountName",
        ),
        c(
            "values-from-slash",
            with(
                plain(),
                "/valuesFrom",
                json!([{"kind": "Secret", "name": "victim/precious"}]),
            ),
            "spec.valuesFrom[0].name",
        ),
        c(
            "values-from-kind",
            with(
                plain(),
                "/valuesFrom",
                json!([{"kind": "Pod", "name": "p"}]),
            ),
            "spec.valuesFrom[0].kind",
        ),
        c(
            "pull-secret-dots",
            with(
                oci("registry.example/m"),
                "/cueRef/pullSecretRef",
                json!({"name": "../x"}),
            ),
            "spec.cueRef.pullSecretRef.name",
        ),
        c(
            "adopt-empty-kind",
            with(plain(), "/adopt", json!([{"kind": ""}])),
            "spec.adopt[0].kind",
        ),
        c(
            "deletion-policy",
            with(plain(), "/deletionPolicy", json!("Nuke")),
            "spec.deletionPolicy",
        ),
        c(
            "drift-policy",
            with(plain(), "/driftPolicy", json!("Ignore")),
            "spec.driftPolicy",
        ),
        c(
            "suspend-string",
            with(plain(), "/suspend", json!("yes")),
            "spec.suspend",
        ),
    ]
}

/// Module sources a tenant must not point at the operator's own disk or network.
fn sources() -> Vec<Case> {
    let c = |name: &str, spec: Value, reason: &'static str| {
        case("sources", name, spec, Expect::NotFetched(reason))
    };
    let not_allowed = "SourceNotAllowed";
    vec![
        c("git-file-url", git("file:///etc#main"), not_allowed),
        c("git-local-path", git("/etc/passwd"), not_allowed),
        c("git-relative-path", git("../../repo"), not_allowed),
        c("git-http", git("http://git.example/repo"), not_allowed),
        c("git-loopback", git("https://127.0.0.1/repo"), not_allowed),
        c(
            "git-loopback-hex",
            git("https://0x7f000001/repo"),
            not_allowed,
        ),
        c("git-ipv6-loopback", git("https://[::1]/repo"), not_allowed),
        c(
            "git-metadata",
            git("https://169.254.169.254/latest"),
            not_allowed,
        ),
        c(
            "git-localhost-ssh",
            git("ssh://localhost/repo"),
            not_allowed,
        ),
        c("git-scp-localhost", git("localhost:repo"), not_allowed),
        c("git-ftp", git("ftp://git.example/repo"), not_allowed),
        c("oci-loopback", oci("127.0.0.1:5000/module"), not_allowed),
        c("oci-localhost", oci("localhost:5000/module"), not_allowed),
        c("oci-metadata", oci("169.254.169.254/module"), not_allowed),
        c(
            "configmap-missing",
            json!({"cueRef": {"type": "configmap", "ref": "no-such-module"}}),
            "NotFound",
        ),
        c(
            "embedded-unknown",
            json!({"cueRef": {"type": "embedded", "ref": "../../etc"}}),
            "NotFound",
        ),
    ]
}

/// Inputs the API server stores but the operator must refuse on that one object.
fn inputs() -> Vec<Case> {
    let c = |name: &str, input: Value, expect: Expect| {
        case("input bounds", name, with(plain(), "/input", input), expect)
    };
    let big = "x".repeat(300 * 1024);
    let fits = "x".repeat(200 * 1024);
    vec![
        c(
            "input-33-levels",
            nested(33, json!(1)),
            Expect::Stalled("InvalidSpec", "at most 32 levels"),
        ),
        c(
            "input-200-levels",
            nested(200, json!(1)),
            Expect::Stalled("InvalidSpec", "spec.input is"),
        ),
        c(
            "input-300-kib",
            json!({"blob": big}),
            Expect::Stalled("InvalidSpec", "bytes of JSON"),
        ),
        c("input-32-levels", nested(32, json!(1)), Expect::Ready),
        c("input-200-kib", json!({"blob": fits}), Expect::Ready),
    ]
}

/// Graphs that try to leave the tenant's namespace or strip Pequod's marks.
fn escapes(victim: &str) -> Vec<Case> {
    let out = |name: &str, nodes: Value, says: &'static str| {
        case(
            "scope",
            name,
            rendering(nodes),
            Expect::Stalled("OutOfScope", says),
        )
    };
    let rbac = |name: &str, nodes: Value| {
        case(
            "scope",
            name,
            rendering(nodes),
            Expect::Stalled("RBACRequiresIdentity", "RBAC object"),
        )
    };
    let bad_ignore = |name: &str, pointers: Value, says: &'static str| {
        case(
            "ignoreFields",
            name,
            ignoring(pointers),
            Expect::Stalled("InvalidGraph", says),
        )
    };
    let mut in_victim = config_map("escaped");
    in_victim["metadata"]["namespace"] = json!(victim);
    let mut hidden = node("cm", in_victim.clone());
    hidden["applyPolicy"] = json!({"ignoreFields": ["/metadata/namespace"]});
    let namespace =
        |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let mut adopt_victim_ns = node("ns", namespace(victim));
    adopt_victim_ns["applyPolicy"] = json!({"mode": "Adopt"});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "tenant-is-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "system:authenticated"}]});
    let cluster_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "tenant-everything"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "secrets"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]});
    let mut role_in_victim = role.clone();
    role_in_victim["metadata"]["namespace"] = json!(victim);
    let role_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "secrets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "Group", "name": "system:authenticated"}]});
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.tenant.example"},
        "spec": {"group": "tenant.example", "scope": "Namespaced",
            "names": {"kind": "Thing", "plural": "things", "singular": "thing"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let priority = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "tenant-first"}, "value": 1_000_000_000});
    let webhook = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "tenant-sees-all"}, "webhooks": []});
    let volume = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "tenant-host"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/"}}});
    let many = vec![json!("/data/k"); 65];
    vec![
        out(
            "other-namespace",
            json!([node("cm", in_victim)]),
            "may only write to its own namespace",
        ),
        bad_ignore(
            "hide-namespace",
            json!(["/metadata/namespace"]),
            "/metadata/namespace",
        ),
        case(
            "ignoreFields",
            "hide-namespace-elsewhere",
            rendering(json!([hidden])),
            Expect::Stalled("InvalidGraph", "never be ignored"),
        ),
        bad_ignore(
            "strip-labels",
            json!(["/metadata/labels"]),
            "never be ignored",
        ),
        bad_ignore(
            "strip-uid",
            json!(["/metadata/annotations/platform.pequod.io~1graph-uid"]),
            "never be ignored",
        ),
        bad_ignore(
            "strip-graph-label",
            json!(["/metadata/labels/platform.pequod.io~1graph"]),
            "never be ignored",
        ),
        bad_ignore("strip-metadata", json!(["/metadata"]), "never be ignored"),
        bad_ignore("ignore-kind", json!(["/kind"]), "never be ignored"),
        bad_ignore(
            "ignore-api-version",
            json!(["/apiVersion"]),
            "never be ignored",
        ),
        bad_ignore("ignore-name", json!(["/metadata/name"]), "never be ignored"),
        bad_ignore("ignore-everything", json!([""]), "whole object"),
        bad_ignore(
            "not-a-pointer",
            json!(["spec.replicas"]),
            "must start with '/'",
        ),
        bad_ignore("bad-escape", json!(["/data/~2"]), "followed by 0 or 1"),
        bad_ignore("too-many", json!(many), "at most 64"),
        bad_ignore(
            "too-long",
            json!([format!("/{}", "a".repeat(600))]),
            "longer than 512",
        ),
        out(
            "new-namespace",
            json!([node("ns", namespace("tenant-made"))]),
            "cluster-scoped",
        ),
        out(
            "kube-system",
            json!([
                node("ns", namespace("kube-system")),
                node("cm", {
                    let mut cm = config_map("planted");
                    cm["metadata"]["namespace"] = json!("kube-system");
                    cm
                })
            ]),
            "cluster-scoped",
        ),
        out(
            "adopt-victim-namespace",
            json!([adopt_victim_ns]),
            "cluster-scoped",
        ),
        rbac("cluster-admin-binding", json!([node("crb", binding)])),
        rbac("cluster-role", json!([node("cr", cluster_role)])),
        rbac("role", json!([node("role", role)])),
        rbac("role-in-victim", json!([node("role", role_in_victim)])),
        rbac("role-binding", json!([node("rb", role_binding)])),
        out("crd", json!([node("crd", crd)]), "cluster-scoped"),
        out(
            "priority-class",
            json!([node("pc", priority)]),
            "cluster-scoped",
        ),
        out("webhook", json!([node("hook", webhook)]), "cluster-scoped"),
        out("host-volume", json!([node("pv", volume)]), "cluster-scoped"),
    ]
}

/// Graphs that are malformed: refused before anything is written.
fn malformed() -> Vec<Case> {
    let bad = |name: &str, nodes: Value, says: &'static str| {
        case(
            "graph shape",
            name,
            rendering(nodes),
            Expect::Stalled("InvalidGraph", says),
        )
    };
    let render = |name: &str, spec: Value, says: &'static str| {
        case(
            "graph shape",
            name,
            spec,
            Expect::Stalled("RenderFailed", says),
        )
    };
    let with_deps = |id: &str, name: &str, deps: Value| {
        let mut n = node(id, config_map(name));
        n["dependsOn"] = deps;
        n
    };
    let thousand: Vec<Value> = (0..1001)
        .map(|i| node(&format!("n{i}"), config_map(&format!("c{i}"))))
        .collect();
    let rule = |rule: Value| {
        let mut n = node("cm", config_map("ruled"));
        n["readyWhen"] = json!([rule]);
        rendering(json!([n]))
    };
    let mut spaced = config_map("spaced");
    spaced["metadata"]["labels"] = json!({"tier": "not a label value"});
    let mut deep = config_map("deep");
    deep["data"] = nested(48, json!("leaf"));
    let deep_outputs = json!({"cueRef": inline(module(&json!([node("cm", config_map("out"))]),
        &format!("outputs: {}", nested(33, json!(1)))))});
    vec![
        bad(
            "unknown-dependency",
            json!([with_deps("a", "a", json!(["ghost"]))]),
            "\"ghost\"",
        ),
        bad(
            "cycle",
            json!([
                with_deps("a", "a", json!(["b"])),
                with_deps("b", "b", json!(["a"]))
            ]),
            "cycle",
        ),
        bad(
            "same-object-twice",
            json!([node("a", config_map("same")), node("b", config_map("same"))]),
            "both render",
        ),
        bad(
            "too-many-nodes",
            json!(thousand),
            "refused the rendered ResourceGraph",
        ),
        render(
            "upper-case-id",
            rendering(json!([node("Bad", config_map("x"))])),
            "DNS label",
        ),
        render(
            "duplicate-id",
            rendering(json!([
                node("a", config_map("x")),
                node("a", config_map("y"))
            ])),
            "duplicate node id",
        ),
        render(
            "no-name",
            rendering(json!([node(
                "a",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
            )])),
            "no metadata.name",
        ),
        render(
            "object-too-deep",
            rendering(json!([node("a", deep)])),
            "nested 49 levels",
        ),
        render(
            "outputs-too-deep",
            deep_outputs,
            "outputs are nested 33 levels",
        ),
        render(
            "object-not-yaml",
            rendering(json!([node("a", json!("kind: [unclosed"))])),
            "not YAML",
        ),
        render(
            "syntax-error",
            json!({"cueRef": inline("package hostile\ngraph: nodes: [".into())}),
            "module does not load",
        ),
        case(
            "graph shape",
            "condition-without-type",
            rule(json!({"type": "ConditionMatch"})),
            Expect::Stalled("InvalidGraph", "ConditionMatch rule needs conditionType"),
        ),
        case(
            "graph shape",
            "field-equals-without-path",
            rule(json!({"type": "FieldEquals", "value": "x"})),
            Expect::Stalled("InvalidGraph", "FieldEquals rule needs path"),
        ),
        case(
            "graph shape",
            "label-with-spaces",
            rendering(json!([node("cm", spaced)])),
            Expect::Stalled("InvalidGraph", "Invalid value: [redacted]"),
        ),
    ]
}

/// Evaluations that fail: schema, policy, runaway CUE.
fn evaluations() -> Vec<Case> {
    let schema = "package hostile\n\n#Input: {port: int & >0 & <65536, ...}\ninput: #Input\ngraph: nodes: []\n";
    let policy = format!(
        "{}violations: [{{path: \"input\", message: \"no\", severity: \"Error\"}}]\n",
        module(&json!([node("cm", config_map("blocked"))]), "")
    );
    let runaway = "package hostile\n\nimport \"list\"\n\n#Input: {...}\ninput: #Input\ngraph: nodes: [for i in list.Range(0, 100000000, 1) if i < 0 {id: \"x\"}]\n";
    vec![
        case(
            "evaluation",
            "schema-violation",
            json!({"cueRef": inline(schema.into()), "input": {"port": 70000}}),
            Expect::Stalled("SchemaViolation", "input.port"),
        ),
        case(
            "evaluation",
            "policy-violation",
            json!({"cueRef": inline(policy)}),
            Expect::Stalled("PolicyViolation", "no"),
        ),
        case(
            "evaluation",
            "runaway",
            json!({"cueRef": inline(runaway.into())}),
            Expect::Stalled("EvaluationLimit", ""),
        ),
    ]
}

/// Taking objects that belong to someone else, and identities that do not exist.
fn ownership() -> Vec<Case> {
    let mut adopt_node = node("cm", config_map("victims-config"));
    adopt_node["applyPolicy"] = json!({"mode": "Adopt"});
    let mut adopt_rule = rendering(json!([node("cm", config_map("victims-config"))]));
    adopt_rule["adopt"] = json!([{"kind": "*"}]);
    let mut legit = rendering(json!([node("cm", config_map("legacy"))]));
    legit["adopt"] = json!([{"kind": "ConfigMap", "name": "legacy"}]);
    vec![
        case(
            "ownership",
            "steal-by-adopt-rule",
            adopt_rule,
            Expect::NodeFails("belongs to ResourceGraph"),
        ),
        case(
            "ownership",
            "steal-by-adopt-mode",
            rendering(json!([adopt_node])),
            Expect::NodeFails("belongs to ResourceGraph"),
        ),
        case(
            "ownership",
            "overwrite",
            rendering(json!([node("cm", config_map("victims-config"))])),
            Expect::NodeFails("not managed by this graph"),
        ),
        case(
            "ownership",
            "ghost-account",
            with(plain(), "/serviceAccountName", json!("ghost")),
            Expect::NodeFails("forbidden"),
        ),
        case("ownership", "adopt-unowned", legit, Expect::Ready),
        case(
            "ownership",
            "ignore-data",
            ignoring(json!(["/data/k"])),
            Expect::Ready,
        ),
        case(
            "ownership",
            "timeout-at-max",
            with(plain(), "/timeout", json!("168h")),
            Expect::Ready,
        ),
    ]
}

/// A client that acts as `user` (impersonation), as kubectl with that user's kubeconfig would.
fn client_as(user: &str) -> Client {
    let mut config = env().config();
    config.auth_info.impersonate = Some(user.to_owned());
    Client::try_from(config).expect("impersonating client")
}

/// Binds `user` to `edit` and the chart's Transform roles in `namespace` (what a tenant has).
async fn make_tenant(admin: &Client, namespace: &str, user: &str) {
    let roles = Api::<ClusterRole>::all(admin.clone());
    for (name, verbs, resources) in [
        (
            "pequod-e2e-transform-view",
            json!(["get", "list", "watch"]),
            json!(["transforms", "resourcegraphs"]),
        ),
        (
            "pequod-e2e-transform-edit",
            json!(["create", "update", "patch", "delete", "deletecollection"]),
            json!(["transforms"]),
        ),
    ] {
        let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": name},
            "rules": [{"apiGroups": ["platform.pequod.io"], "resources": resources, "verbs": verbs}]}))
        .expect("role");
        match roles.create(&PostParams::default(), &role).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), namespace);
    for role in [
        "edit",
        "pequod-e2e-transform-view",
        "pequod-e2e-transform-edit",
    ] {
        let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": format!("{user}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
        .expect("binding");
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .expect("binding");
    }
}

fn transforms_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("platform.pequod.io", "v1alpha1", "Transform");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk))
}

/// Creates the case's Transform as the tenant: `Err` with the API server's message if refused.
async fn submit(tenant: &Client, namespace: &str, case: &Case) -> Result<(), String> {
    let body = json!({"apiVersion": "platform.pequod.io/v1alpha1", "kind": "Transform",
        "metadata": {"name": case.name}, "spec": case.spec});
    let object: DynamicObject = serde_json::from_value(body).expect("object");
    match transforms_api(tenant, namespace)
        .create(&PostParams::default(), &object)
        .await
    {
        // Stored: only this client cannot read a value nested that deep back.
        Ok(_) | Err(kube::Error::SerdeError(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `transform` shows what `expect` asks for; `Err` says what it shows instead.
fn verdict(transform: Option<&Transform>, expect: &Expect) -> Result<(), String> {
    let Some(transform) = transform else {
        return Err("no such Transform".into());
    };
    let show = |t: &str| condition(transform, t);
    let shows = format!(
        "Ready={:?} Stalled={:?} Fetched={:?}",
        show("Ready"),
        show("Stalled"),
        show("Fetched")
    );
    let ok = match expect {
        Expect::Refused(_) => false,
        Expect::Stalled(reason, says) => show("Stalled").is_some_and(|(status, r, message)| {
            status == "True" && r == *reason && message.contains(says)
        }),
        Expect::NotFetched(reason) => {
            show("Fetched").is_some_and(|(status, r, _)| status == "False" && r == *reason)
        }
        Expect::NodeFails(says) => {
            let ready = show("Ready");
            ready.as_ref().is_some_and(|(status, ..)| status != "True")
                && ["Ready", "Reconciling", "Stalled"]
                    .iter()
                    .any(|t| show(t).is_some_and(|(_, _, message)| message.contains(says)))
        }
        Expect::Ready => show("Ready").is_some_and(|(status, ..)| status == "True"),
    };
    if ok { Ok(()) } else { Err(shows) }
}

/// Submits every case as the tenant, checks API refusals at once and waits until every stored
/// case shows its outcome. Returns the names of the stored ones.
async fn run_corpus(
    admin: &Client,
    tenant: &Client,
    namespace: &str,
    cases: &[Case],
    operator: &Operator,
) -> Vec<String> {
    let mut stored = Vec::new();
    for case in cases {
        match (submit(tenant, namespace, case).await, &case.expect) {
            (Err(message), Expect::Refused(says)) => {
                assert!(
                    message.contains(says),
                    "{}: refused with {message}",
                    case.name
                );
            }
            (Ok(()), Expect::Refused(says)) => {
                panic!("{}: stored, but must be refused ({says})", case.name)
            }
            (Err(message), _) => panic!("{}: refused by the API server: {message}", case.name),
            (Ok(()), _) => stored.push(case),
        }
    }
    let transforms = Api::<Lenient<Transform>>::namespaced(admin.clone(), namespace);
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let list = transforms.list(&ListParams::default()).await.expect("list");
        let wrong: Vec<String> = stored
            .iter()
            .filter_map(|case| {
                let found = list
                    .items
                    .iter()
                    .find(|t| t.name_any() == case.name)
                    .map(|t| &t.0);
                verdict(found, &case.expect).err().map(|shows| {
                    format!(
                        "{} ({}): expected {:?}, shows {shows}",
                        case.name, case.class, case.expect
                    )
                })
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {SETTLE:?}, {} cases do not show their outcome:\n{}\n--- operator log:\n{}",
            wrong.len(),
            wrong.join("\n"),
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stored.iter().map(|c| c.name.clone()).collect()
}

/// The sum of `pequod_reconcile_total` over every controller and result.
async fn reconciles(operator: &Operator) -> f64 {
    let (_, body) = operator.get("/metrics").await.expect("metrics");
    body.lines()
        .filter(|l| l.starts_with("pequod_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Everything the tenant must not have touched: the victim namespace's objects and any
/// cluster-scoped object carrying the tenant namespace's ownership label.
async fn assert_untouched(admin: &Client, victim: &str, tenant_namespace: &str) {
    let mut config_maps: Vec<String> = Api::<ConfigMap>::namespaced(admin.clone(), victim)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    config_maps.sort();
    assert_eq!(
        config_maps,
        ["kube-root-ca.crt", "precious"],
        "victim ConfigMaps"
    );
    let secrets = Api::<Secret>::namespaced(admin.clone(), victim)
        .list(&ListParams::default())
        .await
        .expect("list");
    assert_eq!(secrets.items.len(), 1, "victim Secrets");
    for (kind, count) in [
        (
            "roles",
            Api::<Role>::namespaced(admin.clone(), victim)
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
        (
            "rolebindings",
            Api::<RoleBinding>::namespaced(admin.clone(), victim)
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
    ] {
        assert_eq!(count, 0, "victim {kind}");
    }
    let live = Api::<Namespace>::all(admin.clone())
        .get(victim)
        .await
        .expect("victim");
    assert!(
        live.metadata.deletion_timestamp.is_none(),
        "victim namespace not deleted"
    );
    let owned = ListParams::default().labels(&format!(
        "{}={tenant_namespace}",
        pequod_graph_executor::LABEL_GRAPH_NAMESPACE
    ));
    for (kind, plural, group, version) in [
        ("Namespace", "namespaces", "", "v1"),
        (
            "ClusterRole",
            "clusterroles",
            "rbac.authorization.k8s.io",
            "v1",
        ),
        (
            "ClusterRoleBinding",
            "clusterrolebindings",
            "rbac.authorization.k8s.io",
            "v1",
        ),
        (
            "CustomResourceDefinition",
            "customresourcedefinitions",
            "apiextensions.k8s.io",
            "v1",
        ),
        (
            "PriorityClass",
            "priorityclasses",
            "scheduling.k8s.io",
            "v1",
        ),
        ("PersistentVolume", "persistentvolumes", "", "v1"),
        (
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            "admissionregistration.k8s.io",
            "v1",
        ),
    ] {
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        };
        let found = Api::<DynamicObject>::all_with(admin.clone(), &resource)
            .list(&owned)
            .await
            .expect("list cluster-scoped");
        let names: Vec<String> = found.items.iter().map(ResourceExt::name_any).collect();
        assert!(
            names.is_empty(),
            "cluster-scoped {kind} written by the tenant: {names:?}"
        );
    }
}

/// The victim namespace with a ConfigMap and a Secret in it.
async fn victim_namespace(admin: &Client) -> String {
    let victim = env().create_namespace(admin, "victim").await;
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "precious"}, "data": {"k": "v"}}))
            .expect("cm");
    Api::<ConfigMap>::namespaced(admin.clone(), &victim)
        .create(&PostParams::default(), &cm)
        .await
        .expect("victim ConfigMap");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "precious"}, "stringData": {"k": "v"}}))
            .expect("secret");
    Api::<Secret>::namespaced(admin.clone(), &victim)
        .create(&PostParams::default(), &secret)
        .await
        .expect("victim Secret");
    victim
}

async fn wait_ready(admin: &Client, namespace: &str, name: &str, operator: &Operator) {
    let transforms = Api::<Lenient<Transform>>::namespaced(admin.clone(), namespace);
    eventually(&format!("{name} Ready"), SETTLE, &[operator], || async {
        let t = transforms.get(name).await.ok()?;
        condition(&t.0, "Ready").filter(|(status, ..)| status == "True")
    })
    .await;
}

#[tokio::test]
async fn a_hostile_corpus_with_the_charts_default_flags() {
    let (admin, ns) = namespace("e2e-tenant").await;
    let victim = victim_namespace(&admin).await;
    make_tenant(&admin, &ns, "alice").await;
    let tenant = client_as("alice");
    // The tenant may not even touch ResourceGraphs or the victim namespace directly.
    assert!(
        transforms_api(&tenant, &victim)
            .list(&ListParams::default())
            .await
            .is_err()
    );

    // Someone else's graph in the same namespace (created by the admin), and an object nobody
    // manages, for the ownership cases.
    let legacy: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "legacy"}, "data": {"k": "old"}}))
            .expect("cm");
    Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &legacy)
        .await
        .expect("legacy");
    let operator = Operator::start(&ns, "tenancy", &["--cue-timeout=3s"]).await;
    let victims = Case {
        name: "victims".into(),
        class: "bystander",
        spec: rendering(json!([node("cm", config_map("victims-config"))])),
        expect: Expect::Ready,
    };
    submit(&admin, &ns, &victims).await.expect("victims");
    wait_ready(&admin, &ns, "victims", &operator).await;

    let mut cases = refused_by_the_api_server();
    cases.extend(sources());
    cases.extend(inputs());
    cases.extend(escapes(&victim));
    cases.extend(malformed());
    cases.extend(evaluations());
    cases.extend(ownership());
    let mut classes: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for case in &cases {
        *classes.entry(case.class).or_default() += 1;
    }
    eprintln!("hostile corpus: {} cases: {classes:?}", cases.len());
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let stored = run_corpus(&admin, &tenant, &ns, &cases, &operator).await;

    assert_untouched(&admin, &victim, &ns).await;
    // The victim's object is still the victim's.
    let victims_config = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .get("victims-config")
        .await
        .expect("victims-config");
    assert_eq!(
        victims_config
            .labels()
            .get(pequod_graph_executor::LABEL_GRAPH)
            .map(String::as_str),
        Some("victims")
    );
    wait_ready(&admin, &ns, "victims", &operator).await;

    // No hot loop: a quiet window costs at most a few reconciles per Transform.
    let before = reconciles(&operator).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let spent = reconciles(&operator).await - before;
    let bound = 3.0 * f64::from(u32::try_from(stored.len() + 1).expect("count"));
    eprintln!(
        "reconciles in a 20 s quiet window: {spent} (bound {bound}) for {} Transforms",
        stored.len() + 1
    );
    assert!(
        spent <= bound,
        "{spent} reconciles in 20 s for {} Transforms",
        stored.len()
    );

    // A restart LISTs every Transform again (the deep input among them): all keep converging.
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "the operator panicked:\n{}",
        operator.log_tail()
    );
    assert_eq!(
        operator.get("/healthz").await.map(|(code, _)| code),
        Some(200)
    );
    let status = operator.terminate().await;
    assert!(status.success(), "clean exit: {status}");
    let operator = Operator::start(&ns, "tenancy-2", &["--cue-timeout=3s"]).await;
    let late = Case {
        name: "late".into(),
        class: "bystander",
        spec: rendering(json!([node("cm", config_map("late"))])),
        expect: Expect::Ready,
    };
    submit(&tenant, &ns, &late).await.expect("late");
    wait_ready(&admin, &ns, "late", &operator).await;
    let transforms = Api::<Lenient<Transform>>::namespaced(admin.clone(), &ns);
    let deep = transforms.get("input-200-levels").await.expect("deep");
    assert_eq!(
        verdict(
            Some(&deep.0),
            &Expect::Stalled("InvalidSpec", "spec.input is")
        ),
        Ok(())
    );
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    assert!(!log.contains("recursion limit"), "{}", operator.log_tail());

    // Deleting everything the tenant made ends, and leaves the victim's objects.
    for name in &stored {
        let _ = transforms_api(&tenant, &ns)
            .delete(name, &DeleteParams::default())
            .await;
    }
    eventually(
        "every tenant Transform gone",
        SETTLE,
        &[&operator],
        || async {
            let left = transforms.list(&ListParams::default()).await.ok()?;
            let names: Vec<String> = left.items.iter().map(ResourceExt::name_any).collect();
            names
                .iter()
                .all(|n| n == "victims" || n == "late")
                .then_some(())
        },
    )
    .await;
    assert_untouched(&admin, &victim, &ns).await;
    assert!(
        Api::<ConfigMap>::namespaced(admin.clone(), &ns)
            .get_opt("victims-config")
            .await
            .expect("get")
            .is_some(),
        "deleting the thieves leaves the victim's object"
    );
    operator.terminate().await;
}

#[tokio::test]
async fn with_namespaces_granted_a_tenant_creates_new_ones_but_never_takes_existing_ones() {
    let (admin, ns) = namespace("e2e-tenant-ns").await;
    let victim = victim_namespace(&admin).await;
    make_tenant(&admin, &ns, "bob").await;
    let tenant = client_as("bob");
    let operator = Operator::start(&ns, "tenancy-ns", &["--cluster-scoped-kinds=Namespace"]).await;
    let made = pequod_testenv::unique_name("made");
    let namespace_object =
        |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let inside = |name: &str, namespace: &str| {
        let mut cm = config_map(name);
        cm["metadata"]["namespace"] = json!(namespace);
        cm
    };
    let mut create_kube_system = node("ns", namespace_object("kube-system"));
    create_kube_system["applyPolicy"] = json!({"mode": "Create"});
    let mut adopt_victim = node("ns", namespace_object(&victim));
    adopt_victim["applyPolicy"] = json!({"mode": "Adopt"});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "tenant-is-admin-too"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "system:authenticated"}]});
    let cases = vec![
        case(
            "namespaces",
            "new-namespace",
            rendering(json!([
                node("ns", namespace_object(&made)),
                node("cm", inside("app", &made))
            ])),
            Expect::Ready,
        ),
        case(
            "namespaces",
            "existing-namespace",
            rendering(json!([
                node("ns", namespace_object(&victim)),
                node("cm", inside("planted", &victim))
            ])),
            Expect::NodeFails("not managed by this graph"),
        ),
        case(
            "namespaces",
            "kube-system-if-absent",
            rendering(json!([create_kube_system])),
            Expect::Stalled("OutOfScope", "never adopted"),
        ),
        case(
            "namespaces",
            "adopt-existing",
            rendering(json!([adopt_victim])),
            Expect::Stalled("OutOfScope", "never adopted"),
        ),
        case(
            "namespaces",
            "fill-existing",
            rendering(json!([node("cm", inside("planted", &victim))])),
            Expect::Stalled("OutOfScope", "Namespaces it creates itself"),
        ),
        case(
            "namespaces",
            "cluster-admin",
            rendering(json!([node("crb", binding.clone())])),
            Expect::Stalled("RBACRequiresIdentity", "RBAC object"),
        ),
        case(
            "namespaces",
            "cluster-admin-as-account",
            with(
                rendering(json!([node("crb", binding)])),
                "/serviceAccountName",
                json!("default"),
            ),
            Expect::Stalled("OutOfScope", "granted to namespace"),
        ),
    ];
    let stored = run_corpus(&admin, &tenant, &ns, &cases, &operator).await;
    assert!(
        Api::<ConfigMap>::namespaced(admin.clone(), &made)
            .get_opt("app")
            .await
            .expect("get")
            .is_some(),
        "the graph fills the Namespace it created"
    );
    let mut config_maps: Vec<String> = Api::<ConfigMap>::namespaced(admin.clone(), &victim)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    config_maps.sort();
    assert_eq!(config_maps, ["kube-root-ca.crt", "precious"]);
    for name in &stored {
        transforms_api(&tenant, &ns)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    let namespaces = Api::<Namespace>::all(admin.clone());
    eventually(
        "the created Namespace goes with its Transform",
        SETTLE,
        &[&operator],
        || async {
            let gone = namespaces
                .get_opt(&made)
                .await
                .ok()?
                .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
            gone.then_some(())
        },
    )
    .await;
    let transforms = Api::<Lenient<Transform>>::namespaced(admin.clone(), &ns);
    eventually(
        "every tenant Transform gone",
        SETTLE,
        &[&operator],
        || async {
            transforms
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let live = namespaces.get(&victim).await.expect("victim namespace");
    assert!(
        live.metadata.deletion_timestamp.is_none(),
        "the existing Namespace survives"
    );
    assert!(
        !live
            .labels()
            .contains_key(pequod_graph_executor::LABEL_GRAPH)
    );
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "{}", operator.log_tail());
    operator.terminate().await;
}
