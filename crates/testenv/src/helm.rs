//! The real `helm` command, for testing `charts/pequod`: lint, template and install against
//! the test control plane. Built once with `go install` through the Go module proxy into
//! `<cache>/tools/bin` (next to `cue`), with the link flags Helm's own Makefile sets, so that
//! `helm version` and the Kubernetes version `helm template`/`helm lint` assume are right
//! (without them Helm believes it talks to Kubernetes v1.20).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The Helm release built (the newest 3.x on the Go module proxy when this was written).
pub const HELM_VERSION: &str = "v3.22.0";

/// The Kubernetes minor version of the client-go that [`HELM_VERSION`] requires (v0.37): what
/// Helm assumes for `.Capabilities.KubeVersion` when it renders without a cluster.
const HELM_KUBE_MINOR: &str = "37";

/// Path to `helm` at [`HELM_VERSION`], installing it when missing (a few minutes the first
/// time). Panics with the `go install` output when it cannot be built.
pub fn helm() -> PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let ldflags = [
            format!("-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"),
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean".to_owned(),
            "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1".to_owned(),
            format!("-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={HELM_KUBE_MINOR}"),
            "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1".to_owned(),
            format!("-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={HELM_KUBE_MINOR}"),
        ]
        .join(" ");
        crate::binaries::go_tool(
            "helm",
            &format!("helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"),
            &["-ldflags", &ldflags],
            &[("CGO_ENABLED", "0")],
            |helm| {
                Command::new(helm)
                    .args(["version", "--template", "{{.Version}}"])
                    .output()
                    .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == HELM_VERSION)
            },
        )
    })
    .clone()
}

/// A `helm` command whose configuration, cache and data directories live under the tools
/// cache, so that no user's Helm repositories or plugins take part in a test.
pub fn command() -> Command {
    let home = crate::binaries::cache_root().join("tools/helm-home");
    let mut command = Command::new(helm());
    command
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("HELM_NAMESPACE")
        .env_remove("HELM_KUBECONTEXT");
    command
}

/// The documents of a multi-document YAML stream (`helm template` output) as JSON values;
/// empty documents (a template that rendered nothing) are skipped.
///
/// # Errors
///
/// The YAML parser's message when a document is not valid YAML.
pub fn documents(yaml: &str) -> Result<Vec<serde_json::Value>, String> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for document in yaml_serde::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(document).map_err(|e| e.to_string())?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_skip_empty_ones() {
        let yaml = "---\n# only a comment\n---\na: 1\n---\nkind: X\nlist: [1, 2]\n";
        let docs = super::documents(yaml).expect("valid YAML");
        assert_eq!(
            docs,
            [
                serde_json::json!({"a": 1}),
                serde_json::json!({"kind": "X", "list": [1, 2]})
            ]
        );
        assert!(super::documents("a: [").is_err());
    }
}
