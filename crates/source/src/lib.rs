//! Where CUE modules come from. One call, [`fetch`], turns a Transform's `cueRef` into the
//! module's files, a content digest and the resolved version, whatever the source:
//!
//! - `inline`: the `ref` is CUE source text (one file, `module.cue`);
//! - `configmap`: every `*.cue` key of a ConfigMap in the Transform's namespace is a file
//!   (`__` in a key stands for `/`, since keys cannot hold slashes: `cue.mod__module.cue`);
//! - `embedded`: a package of the platform module shipped in the binary (`cue/`).
//!
//! OCI and Git sources join behind the same call with the remote-modules work.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use pequod_api::{CueRef, SourceType};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// A fetched module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// Files by path relative to the module root.
    pub files: BTreeMap<String, String>,
    /// Package directory to evaluate (`.` for the root).
    pub package: String,
    /// `sha256:` digest over paths and contents.
    pub digest: String,
    /// Where it came from, for `status.resolvedCueRef.url`.
    pub url: String,
    /// The resolved version, when the source has one.
    pub version: Option<String>,
}

/// Why a module could not be fetched; each says what a user can change.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The ConfigMap does not exist.
    #[error("ConfigMap {namespace}/{name} not found")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The ConfigMap holds no `*.cue` key.
    #[error("ConfigMap {namespace}/{name} has no *.cue keys")]
    NoCueFiles {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// No embedded package of that name.
    #[error("no embedded module {name:?}; available: {}", .available.join(", "))]
    UnknownEmbedded {
        /// The requested name.
        name: String,
        /// What exists.
        available: Vec<String>,
    },
    /// The source type is not available in this build yet.
    #[error("{0:?} sources are not supported yet")]
    Unsupported(SourceType),
    /// The API server could not be asked.
    #[error("reading the ConfigMap: {0}")]
    Kube(#[source] kube::Error),
}

impl FetchError {
    /// Worth retrying without a change to the Transform (the API server was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::Kube(_))
    }
}

pub use pequod_api::module_digest as digest;

/// The packages of the embedded platform module that render graphs (those other than
/// shared libraries like `policy`, which have no `graph`).
pub fn embedded_packages() -> Vec<String> {
    let mut packages: Vec<String> = embedded::PLATFORM_FILES
        .iter()
        .filter(|(_, content)| content.contains("\ngraph:"))
        .filter_map(|(path, _)| path.split_once('/').map(|(dir, _)| dir.to_owned()))
        .collect();
    packages.dedup();
    packages
}

/// Fetches the module a `cueRef` names, reading ConfigMaps in `namespace`.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    cue_ref: &CueRef,
) -> Result<Fetched, FetchError> {
    let package = cue_ref.path.clone().unwrap_or_else(|| ".".into());
    match cue_ref.source_type {
        SourceType::Inline => {
            let files = BTreeMap::from([("module.cue".to_owned(), cue_ref.reference.clone())]);
            Ok(Fetched {
                digest: digest(&files),
                files,
                package,
                url: "inline".into(),
                version: None,
            })
        }
        SourceType::Configmap => {
            let name = &cue_ref.reference;
            let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(FetchError::Kube)?
                .ok_or_else(|| FetchError::NotFound {
                    namespace: namespace.into(),
                    name: name.clone(),
                })?;
            let files: BTreeMap<String, String> = config_map
                .data
                .unwrap_or_default()
                .into_iter()
                .filter(|(key, _)| {
                    std::path::Path::new(key)
                        .extension()
                        .is_some_and(|e| e == "cue")
                })
                .map(|(key, content)| (key.replace("__", "/"), content))
                .collect();
            if files.is_empty() {
                return Err(FetchError::NoCueFiles {
                    namespace: namespace.into(),
                    name: name.clone(),
                });
            }
            let url = format!("configmap://{namespace}/{name}");
            Ok(Fetched {
                digest: digest(&files),
                files,
                package,
                url,
                version: None,
            })
        }
        SourceType::Embedded => embedded(&cue_ref.reference, cue_ref.path.as_deref()),
        other @ (SourceType::Oci | SourceType::Git) => Err(FetchError::Unsupported(other)),
    }
}

/// An embedded package: the whole platform module, evaluated at that package.
pub fn embedded(name: &str, path: Option<&str>) -> Result<Fetched, FetchError> {
    let available = embedded_packages();
    if !available.iter().any(|p| p == name) {
        return Err(FetchError::UnknownEmbedded {
            name: name.into(),
            available,
        });
    }
    let files: BTreeMap<String, String> = embedded::PLATFORM_FILES
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect();
    let package = path.map_or_else(|| name.to_owned(), str::to_owned);
    Ok(Fetched {
        digest: digest(&files),
        files,
        package,
        url: format!("embedded://{name}"),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_modules_are_the_platform_packages() {
        assert_eq!(
            embedded_packages(),
            ["database", "environment", "webservice"]
        );
        let web = embedded("webservice", None).unwrap();
        assert_eq!(web.package, "webservice");
        assert!(web.files.contains_key("cue.mod/module.cue"));
        assert!(
            web.files.contains_key("policy/policy.cue"),
            "imported packages travel with it"
        );
        assert_eq!(web.url, "embedded://webservice");
        match embedded("policy", None) {
            Err(FetchError::UnknownEmbedded { available, .. }) => {
                assert!(available.contains(&"webservice".to_owned()));
            }
            other => panic!("policy renders no graph: {other:?}"),
        }
    }

    #[test]
    fn digest_depends_on_paths_and_contents_only() {
        let a = BTreeMap::from([
            ("a.cue".to_owned(), "x: 1".to_owned()),
            ("b.cue".to_owned(), "y: 2".to_owned()),
        ]);
        let mut b = a.clone();
        assert_eq!(digest(&a), digest(&b));
        b.insert("b.cue".into(), "y: 3".into());
        assert_ne!(digest(&a), digest(&b));
        let moved = BTreeMap::from([("ab.cue".to_owned(), "x: 1".to_owned())]);
        let split = BTreeMap::from([("a".to_owned(), "b.cuex: 1".to_owned())]);
        assert_ne!(
            digest(&moved),
            digest(&split),
            "lengths separate paths from contents"
        );
    }
}
