//! Where CUE modules come from. One call, [`Sources::fetch`] (or the free [`fetch`] with the
//! default settings), turns a Transform's `cueRef` into the module's files, a digest and the
//! resolved version, whatever the source:
//!
//! - `inline`: the `ref` is CUE source text (one file, `module.cue`);
//! - `configmap`: every `*.cue` key of a ConfigMap in the Transform's namespace is a file
//!   (`__` in a key stands for `/`, since keys cannot hold slashes: `cue.mod__module.cue`);
//! - `embedded`: a package of the platform module shipped in the binary (`cue/`);
//! - `oci`: a module in an OCI registry (`registry/repository[:tag|@sha256:…]`), CUE's module
//!   artifact or a tar.gz of `.cue` files; `version` is an exact tag or a semver constraint over
//!   the tags ([`oci`]). Credentials come from `pullSecretRef`; downloads are cached by digest;
//! - `git`: a module in a Git repository (`url[#branch|#tag|#commit]`), `version` a tag,
//!   branch or semver constraint over tags; fetched shallow, cached by commit.
//!
//! Remote sources are network locations only (module `allowed`): Git over `https://`, `ssh://`,
//! `git://` or scp-style, on hosts (Git and registries alike) that are not the operator's own
//! (loopback, link-local, cloud metadata, unspecified), unless
//! [`SourceConfig::allow_local_sources`] says otherwise.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use pequod_api::{CueRef, SourceType};

mod allowed;
mod archive;
mod cache;
pub use cache::CacheStats;
mod credentials;
pub mod cue_registry;
#[cfg(test)]
mod fuzz;
mod git;
pub mod modfile;
pub mod oci;

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
    /// The modules `cue.mod/module.cue` depends on, fetched from their registries.
    pub deps: Vec<Dependency>,
}

/// A CUE module another module depends on, fetched by the digest behind its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// Module path with major version (`example.com/policy@v0`).
    pub module: String,
    /// Exact version (`v0.1.0`).
    pub version: String,
    /// Manifest digest it was fetched by.
    pub digest: String,
    /// Files by path relative to the dependency's root.
    pub files: BTreeMap<String, String>,
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
    #[error("reading from the API server: {0}")]
    Kube(#[source] kube::Error),
    /// `ref` cannot be understood.
    #[error("cueRef.ref {reference:?}: {reason}")]
    InvalidRef {
        /// The reference.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `pullSecretRef` Secret does not exist.
    #[error("pull secret {namespace}/{name} not found")]
    SecretNotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The `pullSecretRef` Secret holds nothing usable (its values are never shown).
    #[error("pull secret {namespace}/{name} {reason}")]
    BadSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is missing or malformed (key names only).
        reason: String,
    },
    /// The registry or server refused: no credentials, wrong ones, or no access.
    #[error("{url}: unauthorized (check cueRef.pullSecretRef and its access to the repository)")]
    Unauthorized {
        /// The module URL.
        url: String,
    },
    /// The repository, tag, digest or ref does not exist.
    #[error("{url}: {what} not found")]
    ModuleNotFound {
        /// The module URL.
        url: String,
        /// What is missing (`tag v1.2.0`, `repository`, …).
        what: String,
    },
    /// No tag satisfies the version constraint.
    #[error("{url}: no version matches {constraint:?} (newest available: {})", if .available.is_empty() { "none".to_owned() } else { .available.join(", ") })]
    NoVersionMatches {
        /// The module URL.
        url: String,
        /// The constraint.
        constraint: String,
        /// The newest semver tags (at most 10).
        available: Vec<String>,
    },
    /// The registry or server could not be reached, timed out or failed (5xx, 429): retried.
    #[error("{url}: {message}")]
    Network {
        /// The module URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The registry answered with an error that is none of the above.
    #[error("{url}: registry error: {message}")]
    Registry {
        /// The module URL.
        url: String,
        /// The registry's message.
        message: String,
    },
    /// What was fetched is not a CUE module (media types, archive, digest, size).
    #[error("{url}: not a usable CUE module: {reason}")]
    BadArtifact {
        /// The module URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// `cue.mod/module.cue` cannot be read, or names a dependency no registry serves.
    #[error("{url}: cue.mod/module.cue: {reason}")]
    BadModuleFile {
        /// The module URL.
        url: String,
        /// What is wrong (with a line when it is the syntax).
        reason: String,
    },
    /// A module the module depends on could not be fetched.
    #[error("dependency {module} {version}: {source}")]
    Dependency {
        /// Module path with major version.
        module: String,
        /// The version.
        version: String,
        /// Why.
        source: Box<FetchError>,
    },
    /// The source is one the operator must not reach: a Git scheme other than https, ssh and
    /// git, a local path, or a loopback, link-local or unspecified host (see
    /// [`SourceConfig::allow_local_sources`]).
    #[error("{url}: source not allowed: {reason}")]
    SourceNotAllowed {
        /// The module URL, without credentials.
        url: String,
        /// What is refused, and what is allowed.
        reason: String,
    },
    /// The module has no CUE files in the package directory `path`.
    #[error("{url}: no .cue files in package directory {path:?} (cueRef.path)")]
    PackageNotFound {
        /// The module URL.
        url: String,
        /// The package directory.
        path: String,
    },
}

impl FetchError {
    /// Worth retrying without a change to the Transform: the API server, registry or Git
    /// server was unreachable, timed out or failed on its side.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.cause(),
            FetchError::Kube(_) | FetchError::Network { .. }
        )
    }

    /// What went wrong underneath: for a dependency, the failure fetching it.
    pub fn cause(&self) -> &FetchError {
        match self {
            FetchError::Dependency { source, .. } => source.cause(),
            other => other,
        }
    }
}

/// Operator settings for remote sources.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Registries (`host:port`, as written in `cueRef.ref`) reached over plain HTTP. Everything
    /// else is HTTPS.
    pub insecure_registries: Vec<String>,
    /// Where fetched modules are kept across restarts (by digest); `None`: memory only.
    pub cache_dir: Option<PathBuf>,
    /// Bound on the bytes of the module cache on disk; least recently used entries go first
    /// (0: no bound).
    pub cache_max_bytes: u64,
    /// Cached modules unused for this long are removed (zero: never). Entries never change,
    /// so this only keeps the disk clean of modules nothing uses any more.
    pub cache_ttl: Duration,
    /// Connect and read timeout of each request to a registry (Git's are process-wide in
    /// libgit2: see [`set_git_timeouts`]).
    pub timeout: Duration,
    /// Where the CUE modules a module depends on are fetched from (`CUE_REGISTRY` syntax).
    pub cue_registry: cue_registry::CueRegistry,
    /// Also fetch from the operator's own host and disk: loopback, link-local and unspecified
    /// hosts (Git, registries, dependency registries), Git over plain `http://`, `file://` and
    /// local paths. For tests, local demos and the `pequod` CLI on a developer's machine only:
    /// in a cluster, `cueRef` is written by application teams.
    pub allow_local_sources: bool,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            cache_dir: None,
            cache_max_bytes: 512 * 1024 * 1024,
            cache_ttl: Duration::from_secs(7 * 24 * 3600),
            timeout: Duration::from_secs(30),
            cue_registry: cue_registry::CueRegistry::default(),
            allow_local_sources: false,
        }
    }
}

/// Fetches modules with one configuration and one cache; share one per process.
#[derive(Debug)]
pub struct Sources {
    config: SourceConfig,
    cache: cache::Cache,
    /// For the one-request checks of a tag or tag list (see [`oci`]).
    http: std::sync::OnceLock<Option<reqwest::Client>>,
    /// One fetch at a time per local Git repository (libgit2 locks refs; a second writer
    /// would fail rather than wait).
    git_locks: git::Locks,
    /// The digest behind each dependency version already fetched (`host/repository:tag`).
    dependency_digests: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// Dependency versions whose digest is remembered (a bound, not a working-set size).
const DEPENDENCY_PINS: usize = 4096;

impl Default for Sources {
    fn default() -> Self {
        Self::new(SourceConfig::default())
    }
}

impl Sources {
    /// Sources with these settings.
    pub fn new(config: SourceConfig) -> Self {
        Self {
            cache: cache::Cache::new(
                config.cache_dir.clone(),
                cache::Limits {
                    max_bytes: config.cache_max_bytes,
                    ttl: config.cache_ttl,
                    memory_bytes: cache::MEMORY_BYTES,
                },
            ),
            config,
            http: std::sync::OnceLock::new(),
            git_locks: git::Locks::default(),
            dependency_digests: std::sync::Mutex::default(),
        }
    }

    fn pin_key(location: &cue_registry::Location) -> String {
        format!("{}/{}:{}", location.host, location.repository, location.tag)
    }

    /// The digest a dependency version resolved to before, if any.
    fn pinned_dependency(&self, location: &cue_registry::Location) -> Option<String> {
        self.dependency_digests
            .lock()
            .ok()?
            .get(&Self::pin_key(location))
            .cloned()
    }

    fn pin_dependency(&self, location: &cue_registry::Location, digest: &str) {
        if let Ok(mut pins) = self.dependency_digests.lock() {
            if pins.len() >= DEPENDENCY_PINS {
                pins.clear();
            }
            pins.insert(Self::pin_key(location), digest.to_owned());
        }
    }

    /// A plain HTTP client for cheap registry checks; `None` if it cannot be built (then
    /// oci-client does everything).
    fn http(&self) -> Option<&reqwest::Client> {
        self.http
            .get_or_init(|| {
                install_crypto_provider();
                reqwest::Client::builder()
                    .connect_timeout(self.config.timeout)
                    .timeout(self.config.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "no HTTP client for registry checks"),
                    )
                    .ok()
            })
            .as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// The module cache's hits, misses and evictions since start, and what it holds.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Fetches the module a `cueRef` names, reading ConfigMaps and pull secrets in `namespace`,
    /// and the modules its `cue.mod/module.cue` depends on.
    pub async fn fetch(
        &self,
        client: &Client,
        namespace: &str,
        cue_ref: &CueRef,
    ) -> Result<Fetched, FetchError> {
        let mut secret = None;
        let mut fetched = self
            .fetch_module(client, namespace, cue_ref, &mut secret)
            .await?;
        fetched.deps = self
            .dependencies(&fetched.files, &fetched.url, secret.as_ref())
            .await?;
        Ok(fetched)
    }

    /// The modules that the module `files` (fetched from `url`, for messages) declares in its
    /// `cue.mod/module.cue`, each from the registry the CUE registry setting names for it,
    /// anonymously. The `pequod` CLI uses it for modules on disk.
    pub async fn fetch_dependencies(
        &self,
        files: &BTreeMap<String, String>,
        url: &str,
    ) -> Result<Vec<Dependency>, FetchError> {
        self.dependencies(files, url, None).await
    }

    /// [`Sources::fetch_dependencies`]; the Transform's pull secret serves them when it has an
    /// entry for their registry.
    async fn dependencies(
        &self,
        files: &BTreeMap<String, String>,
        url: &str,
        secret: Option<&credentials::SecretData>,
    ) -> Result<Vec<Dependency>, FetchError> {
        let Some(text) = files.get("cue.mod/module.cue") else {
            return Ok(Vec::new());
        };
        let bad = |reason: String| FetchError::BadModuleFile {
            url: url.to_owned(),
            reason,
        };
        let module_file = modfile::ModuleFile::parse(text).map_err(bad)?;
        let mut deps = Vec::with_capacity(module_file.deps.len());
        for (module, version) in &module_file.deps {
            let location = self
                .config
                .cue_registry
                .resolve(module, version)
                .ok_or_else(|| {
                    bad(format!(
                        "no registry serves dependency {module} (the operator's CUE registry setting disables its prefix)"
                    ))
                })?;
            let credentials = secret.and_then(|s| s.registry(&location.host).ok());
            let dependency = oci::dependency(self, module, &location, credentials.as_ref())
                .await
                .map_err(|source| FetchError::Dependency {
                    module: module.clone(),
                    version: version.clone(),
                    source: Box::new(source),
                })?;
            deps.push(dependency);
        }
        Ok(deps)
    }

    /// The module itself; `secret` keeps the pull secret read on the way, for dependencies.
    async fn fetch_module(
        &self,
        client: &Client,
        namespace: &str,
        cue_ref: &CueRef,
        secret: &mut Option<credentials::SecretData>,
    ) -> Result<Fetched, FetchError> {
        if let Some(reference) = &cue_ref.pull_secret_ref {
            *secret = Some(credentials::read(client, namespace, &reference.name).await?);
        }
        match cue_ref.source_type {
            SourceType::Oci => {
                let target = oci::Target::parse(&cue_ref.reference)?;
                let credentials = match secret.as_ref() {
                    Some(secret) => Some(secret.registry(&target.registry)?),
                    None => None,
                };
                oci::fetch(
                    self,
                    &target,
                    cue_ref.version.as_deref(),
                    credentials,
                    package_dir(cue_ref.path.as_deref()),
                )
                .await
            }
            SourceType::Git => {
                let target =
                    git::Target::parse(&cue_ref.reference, self.config.allow_local_sources)?;
                let auth = match secret.as_ref() {
                    Some(secret) => git::GitAuth::from_secret(secret)?,
                    None => git::GitAuth::default(),
                };
                git::fetch(
                    self,
                    &target,
                    cue_ref.version.as_deref(),
                    auth,
                    package_dir(cue_ref.path.as_deref()),
                )
                .await
            }
            _ => fetch_local(client, namespace, cue_ref).await,
        }
    }
}

/// `cueRef.path` cleaned: `.` for the module root, else a relative path without `./` or a
/// trailing `/`.
fn package_dir(path: Option<&str>) -> String {
    match path.map(|p| archive::clean_path(p.trim())) {
        Some(Ok(Some(p))) => p,
        // `..` and friends are kept as written, so the check below names them.
        Some(Err(_)) => path.unwrap_or(".").to_owned(),
        Some(Ok(None)) | None => ".".into(),
    }
}

/// The package directory must hold at least one `.cue` file.
fn check_package(
    files: &BTreeMap<String, String>,
    package: &str,
    url: &str,
) -> Result<(), FetchError> {
    let found = files.keys().any(|path| {
        let dir = path.rsplit_once('/').map_or(".", |(dir, _)| dir);
        dir == package && archive::is_cue(path)
    });
    if found {
        Ok(())
    } else {
        Err(FetchError::PackageNotFound {
            url: url.into(),
            path: package.into(),
        })
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Bounds every Git network operation: libgit2's connect timeout and its timeout for each
/// read or write on a server connection (git://, http(s); libssh2 keeps its own). Without
/// them a server that accepts but never answers holds a fetch, and its repository lock,
/// forever.
///
/// # Safety
/// libgit2 keeps these in unsynchronised process globals: call this once at process start,
/// before any other thread runs (before the async runtime starts).
#[allow(unsafe_code)]
pub unsafe fn set_git_timeouts(connect: Duration, io: Duration) {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the caller guarantees no other thread exists yet; these setters cannot fail.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect));
        let _ = git2::opts::set_server_timeout_in_milliseconds(millis(io));
    }
}

/// The HTTP clients use rustls without a built-in provider choice; use ring, as kube does.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when the process already chose one, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
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

/// Fetches the module a `cueRef` names with the default settings (HTTPS only, no disk
/// cache), reading ConfigMaps and pull secrets in `namespace`. An operator shares one
/// [`Sources`] instead.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    cue_ref: &CueRef,
) -> Result<Fetched, FetchError> {
    Sources::default().fetch(client, namespace, cue_ref).await
}

async fn fetch_local(
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
                deps: Vec::new(),
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
                deps: Vec::new(),
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
        deps: Vec::new(),
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
