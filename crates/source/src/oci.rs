//! Modules from OCI registries: CUE's module artifact (config media type
//! `application/vnd.cue.module.v1+json`, layer 0 the module zip, layer 1 `cue.mod/module.cue`)
//! or a plain tar.gz layer of `.cue` files (Flux/Timoni style).
//!
//! Resolution: a `@sha256:` digest pins exactly (and, once cached, costs no request); a tag or
//! an exact `version` costs one manifest HEAD; a semver constraint costs a tag list and a HEAD.
//! Only a digest not yet in the cache downloads the manifest and the module layer, each checked
//! against its digest.

use std::collections::BTreeMap;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::archive;
use crate::credentials::Basic;
use crate::{FetchError, Fetched, Sources};

/// The config media type of CUE's module artifacts.
pub const CUE_MODULE_CONFIG: &str = "application/vnd.cue.module.v1+json";
/// The media type of the module zip layer.
pub const ZIP_LAYER: &str = "application/zip";
/// The media type of the `cue.mod/module.cue` layer.
pub const MODULE_FILE_LAYER: &str = "application/vnd.cue.modulefile.v1";

/// A parsed `cueRef.ref` for OCI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) registry: String,
    pub(crate) repository: String,
    pub(crate) tag: Option<String>,
    pub(crate) digest: Option<String>,
}

impl Target {
    pub(crate) fn parse(reference: &str) -> Result<Self, FetchError> {
        let reference = reference.strip_prefix("oci://").unwrap_or(reference);
        let invalid = |reason: String| FetchError::InvalidRef {
            reference: reference.into(),
            reason,
        };
        let (first, _) = reference.split_once('/').ok_or_else(|| {
            invalid("expected registry/repository, like 127.0.0.1:5000/platform/webservice".into())
        })?;
        if !(first.contains('.') || first.contains(':') || first == "localhost") {
            return Err(invalid(format!(
                "{first:?} is not a registry host; write the registry explicitly"
            )));
        }
        let parsed = Reference::try_from(reference).map_err(|e| invalid(e.to_string()))?;
        if let Some(digest) = parsed.digest()
            && !(digest.starts_with("sha256:") && digest.len() == 71)
        {
            return Err(invalid(format!("{digest} is not a sha256 digest")));
        }
        // Reference fills in `latest` when there is neither tag nor digest: keep "none" apart.
        let has_tag = reference
            .rsplit_once('/')
            .is_some_and(|(_, last)| last.split('@').next().is_some_and(|n| n.contains(':')));
        Ok(Self {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag: parsed.tag().filter(|_| has_tag).map(str::to_owned),
            digest: parsed.digest().map(str::to_owned),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("oci://{}/{}", self.registry, self.repository)
    }

    fn with_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(self.registry.clone(), self.repository.clone(), tag.into())
    }

    fn with_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.registry.clone(),
            self.repository.clone(),
            digest.into(),
        )
    }
}

/// A tag as a semver version (`v1.2.3` or `1.2.3`).
fn tag_version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// How `version` is meant: an exact tag, or a constraint over tags.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    Tag(String),
    Constraint(semver::VersionReq),
}

pub(crate) fn wanted(version: &str) -> Wanted {
    let version = version.trim();
    if tag_version(version).is_some() {
        return Wanted::Tag(version.into());
    }
    match semver::VersionReq::parse(version) {
        Ok(req) => Wanted::Constraint(req),
        Err(_) => Wanted::Tag(version.into()),
    }
}

/// The highest tag matching `req` (pre-releases only when `req` names one, as semver does).
pub(crate) fn pick(tags: &[String], req: &semver::VersionReq) -> Option<(String, semver::Version)> {
    tags.iter()
        .filter_map(|t| tag_version(t).map(|v| (t.clone(), v)))
        .filter(|(_, v)| req.matches(v))
        .max_by(|a, b| a.1.cmp(&b.1))
}

/// No tag satisfies `req`: the error names the newest semver tags (at most 10).
pub(crate) fn no_version_matches(
    url: &str,
    req: &semver::VersionReq,
    tags: &[String],
) -> FetchError {
    let mut available: Vec<(semver::Version, String)> = tags
        .iter()
        .filter_map(|t| tag_version(t).map(|v| (v, t.clone())))
        .collect();
    available.sort();
    available.reverse();
    FetchError::NoVersionMatches {
        url: url.into(),
        constraint: req.to_string(),
        available: available.into_iter().take(10).map(|(_, t)| t).collect(),
    }
}

/// Maps a client error to what a user can act on.
fn classify(e: OciDistributionError, url: &str, what: &str) -> FetchError {
    let network = |message: String| FetchError::Network {
        url: url.into(),
        message,
    };
    let not_found = || FetchError::ModuleNotFound {
        url: url.into(),
        what: what.into(),
    };
    let unauthorized = || FetchError::Unauthorized { url: url.into() };
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => unauthorized(),
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                not_found()
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                network("the registry asks to slow down (429)".into())
            } else {
                FetchError::Registry {
                    url: url.into(),
                    message: envelope.to_string(),
                }
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 | 403 => unauthorized(),
            404 => not_found(),
            429 | 500..=599 => network(format!("HTTP {code}: {}", message.trim())),
            _ => FetchError::Registry {
                url: url.into(),
                message: format!("HTTP {code}: {}", message.trim()),
            },
        },
        OciDistributionError::RequestError(e) => {
            // The source chain says why (connection refused, timeout, TLS); reqwest's own
            // message alone says only "error sending request".
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            network(message)
        }
        OciDistributionError::IoError(e) => network(e.to_string()),
        OciDistributionError::DigestError(e) => FetchError::BadArtifact {
            url: url.into(),
            reason: format!("content does not match its digest: {e}"),
        },
        other => FetchError::BadArtifact {
            url: url.into(),
            reason: other.to_string(),
        },
    }
}

/// The OCI client for one fetch (credentials are per client in oci-client, and a Transform's
/// credentials must never serve another's request).
/// Built only when needed: a poll answered by the [`Probe`] from the cache never builds one.
struct LazyClient<'a> {
    sources: &'a Sources,
    insecure: bool,
    client: std::sync::OnceLock<Client>,
}

impl LazyClient<'_> {
    fn get(&self) -> &Client {
        self.client.get_or_init(|| {
            crate::install_crypto_provider();
            Client::new(ClientConfig {
                protocol: if self.insecure {
                    ClientProtocol::Http
                } else {
                    ClientProtocol::Https
                },
                connect_timeout: Some(self.sources.config.timeout),
                read_timeout: Some(self.sources.config.timeout),
                ..ClientConfig::default()
            })
        })
    }
}

/// A module at `target` (resolved by `version`), from the cache or downloaded.
pub(crate) async fn fetch(
    sources: &Sources,
    target: &Target,
    version: Option<&str>,
    credentials: Option<Basic>,
    package: String,
) -> Result<Fetched, FetchError> {
    let url = target.url();
    crate::allowed::registry_host(&target.registry, &url, sources.config.allow_local_sources)?;
    let insecure = sources
        .config
        .insecure_registries
        .contains(&target.registry);
    let (files, digest, tag) = fetch_files(
        sources,
        target,
        version,
        credentials.as_ref(),
        insecure,
        &url,
    )
    .await?;
    crate::check_package(&files, &package, &url)?;
    Ok(Fetched {
        files,
        package,
        digest,
        url,
        version: tag,
        deps: Vec::new(),
    })
}

/// Files, manifest digest and tag of the module at `target`.
async fn fetch_files(
    sources: &Sources,
    target: &Target,
    version: Option<&str>,
    credentials: Option<&Basic>,
    insecure: bool,
    url: &str,
) -> Result<(BTreeMap<String, String>, String, Option<String>), FetchError> {
    let auth = credentials.map_or(RegistryAuth::Anonymous, |b| {
        RegistryAuth::Basic(b.username.clone(), b.password.clone())
    });
    let client = LazyClient {
        sources,
        insecure,
        client: std::sync::OnceLock::new(),
    };
    let probe = Probe {
        http: sources.http(),
        scheme: if insecure { "http" } else { "https" },
        credentials,
    };
    let (digest, tag) = resolve(&client, &auth, &probe, target, version, url).await?;
    let files = if let Some(files) = sources.cache.get(&digest).await {
        tracing::debug!(%url, %digest, "module from the cache");
        (*files).clone()
    } else {
        let files = download(&client, &auth, target, &digest, url).await?;
        sources.cache.put(&digest, &files).await;
        files
    };
    Ok((files, digest, tag))
}

/// A dependency module at its registry location. CUE module versions are immutable, so the
/// digest behind a version is asked once per process and the files come from the cache.
pub(crate) async fn dependency(
    sources: &Sources,
    module: &str,
    location: &crate::cue_registry::Location,
    credentials: Option<&Basic>,
) -> Result<crate::Dependency, FetchError> {
    let target = Target {
        registry: location.host.clone(),
        repository: location.repository.clone(),
        tag: None,
        digest: sources.pinned_dependency(location),
    };
    let url = format!("{} (dependency {module})", target.url());
    // The registries come from the operator's CUE registry setting, but the module (hostile
    // input) chooses which prefix, so which of them, is asked.
    crate::allowed::registry_host(&location.host, &url, sources.config.allow_local_sources)?;
    let insecure = location.insecure || sources.config.insecure_registries.contains(&location.host);
    let (files, digest, _) = fetch_files(
        sources,
        &target,
        Some(&location.tag),
        credentials,
        insecure,
        &url,
    )
    .await?;
    sources.pin_dependency(location, &digest);
    Ok(crate::Dependency {
        module: module.to_owned(),
        version: location.tag.clone(),
        digest,
        files,
    })
}

/// One plain request for what polling asks most (the digest behind a tag, the tag list), so
/// that a poll that finds nothing new costs one request. oci-client first asks `/v2/` before
/// every request of an anonymous pull; it takes over whenever the answer is not a plain one
/// (a bearer-token challenge, an error to classify).
struct Probe<'a> {
    http: Option<&'a reqwest::Client>,
    scheme: &'static str,
    credentials: Option<&'a Basic>,
}

impl Probe<'_> {
    fn request(&self, method: reqwest::Method, url: &str) -> Option<reqwest::RequestBuilder> {
        let mut request = self.http?.request(method, url);
        if let Some(basic) = self.credentials {
            request = request.basic_auth(&basic.username, Some(&basic.password));
        }
        Some(request)
    }

    /// `Some(digest)` of `tag`'s manifest when the registry answers plainly.
    async fn digest(&self, target: &Target, tag: &str) -> Option<String> {
        let url = format!(
            "{}://{}/v2/{}/manifests/{tag}",
            self.scheme, target.registry, target.repository
        );
        let response = self
            .request(reqwest::Method::HEAD, &url)?
            .header(
                reqwest::header::ACCEPT,
                format!("{OCI_IMAGE_MEDIA_TYPE}, {IMAGE_MANIFEST_MEDIA_TYPE}"),
            )
            .send()
            .await
            .ok()?;
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        let digest = response
            .headers()
            .get("docker-content-digest")?
            .to_str()
            .ok()?;
        (digest.starts_with("sha256:")
            && digest.len() == 71
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digest.to_owned())
    }

    /// `Some(tags)` when the registry lists them plainly, following `Link: <…>; rel="next"`
    /// pages (at most [`TAG_PAGES`]).
    async fn tags(&self, target: &Target) -> Option<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let origin = format!("{}://{}", self.scheme, target.registry);
        let mut url = format!("{origin}/v2/{}/tags/list", target.repository);
        let mut all = Vec::new();
        for _ in 0..TAG_PAGES {
            let response = self
                .request(reqwest::Method::GET, &url)?
                .send()
                .await
                .ok()?;
            if response.status() != reqwest::StatusCode::OK {
                return None;
            }
            let next = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(next_page);
            let body = response.bytes().await.ok()?;
            all.extend(
                serde_json::from_slice::<Tags>(&body)
                    .ok()?
                    .tags
                    .unwrap_or_default(),
            );
            match next {
                // Only pages on the same registry: credentials never leave it.
                Some(next) if next.starts_with('/') => url = format!("{origin}{next}"),
                Some(next) if next.starts_with(&format!("{origin}/")) => url = next,
                Some(_) => return None,
                None => return Some(all),
            }
        }
        None
    }
}

/// Most tag-list pages read for one constraint.
const TAG_PAGES: usize = 50;

/// The target of a `Link: <url>; rel="next"` header.
fn next_page(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

/// Every tag through oci-client, page by page (`n` and `last`).
async fn list_all_tags(
    client: &Client,
    target: &Target,
    auth: &RegistryAuth,
) -> Result<Vec<String>, OciDistributionError> {
    const PAGE: usize = 1000;
    let reference = target.with_tag("latest");
    let mut all: Vec<String> = Vec::new();
    for _ in 0..TAG_PAGES {
        let page = client
            .list_tags(&reference, auth, Some(PAGE), all.last().map(String::as_str))
            .await?
            .tags;
        let done = page.len() < PAGE;
        all.extend(page);
        if done {
            break;
        }
    }
    Ok(all)
}

/// The manifest digest to fetch and the tag it came from.
async fn resolve(
    client: &LazyClient<'_>,
    auth: &RegistryAuth,
    probe: &Probe<'_>,
    target: &Target,
    version: Option<&str>,
    url: &str,
) -> Result<(String, Option<String>), FetchError> {
    if let Some(digest) = &target.digest {
        return Ok((
            digest.clone(),
            target.tag.clone().or(version.map(Into::into)),
        ));
    }
    let wanted = match (&target.tag, version) {
        (Some(_), Some(_)) => {
            return Err(FetchError::InvalidRef {
                reference: format!("{url}:{}", target.tag.as_deref().unwrap_or_default()),
                reason: "give either a :tag in ref or a version, not both".into(),
            });
        }
        (Some(tag), None) => Wanted::Tag(tag.clone()),
        (None, Some(version)) => wanted(version),
        (None, None) => Wanted::Tag("latest".into()),
    };
    match wanted {
        Wanted::Tag(tag) => {
            let head = |tag: String| async move {
                if let Some(digest) = probe.digest(target, &tag).await {
                    return Ok((digest, Some(tag)));
                }
                client
                    .get()
                    .fetch_manifest_digest(&target.with_tag(&tag), auth)
                    .await
                    .map(|digest| (digest, Some(tag.clone())))
                    .map_err(|e| classify(e, url, &format!("tag {tag}")))
            };
            match head(tag.clone()).await {
                // CUE tags versions `v1.2.3`; accept `1.2.3` for it, and the reverse.
                Err(FetchError::ModuleNotFound { .. }) if tag_version(&tag).is_some() => {
                    let other = tag
                        .strip_prefix('v')
                        .map_or_else(|| format!("v{tag}"), str::to_owned);
                    head(other).await.map_err(|e| match e {
                        FetchError::ModuleNotFound { url, .. } => FetchError::ModuleNotFound {
                            url,
                            what: format!("tag {tag}"),
                        },
                        e => e,
                    })
                }
                other => other,
            }
        }
        Wanted::Constraint(req) => {
            let tags = match probe.tags(target).await {
                Some(tags) => tags,
                None => list_all_tags(client.get(), target, auth)
                    .await
                    .map_err(|e| classify(e, url, "repository"))?,
            };
            let (tag, _) = pick(&tags, &req).ok_or_else(|| no_version_matches(url, &req, &tags))?;
            let digest = match probe.digest(target, &tag).await {
                Some(digest) => digest,
                None => client
                    .get()
                    .fetch_manifest_digest(&target.with_tag(&tag), auth)
                    .await
                    .map_err(|e| classify(e, url, &format!("tag {tag}")))?,
            };
            Ok((digest, Some(tag)))
        }
    }
}

/// Downloads the manifest `digest` and its module layer, verified, and unpacks it.
async fn download(
    client: &LazyClient<'_>,
    auth: &RegistryAuth,
    target: &Target,
    digest: &str,
    url: &str,
) -> Result<BTreeMap<String, String>, FetchError> {
    let reference = target.with_digest(digest);
    let what = format!("manifest {digest}");
    let (body, actual) = client
        .get()
        .pull_manifest_raw(
            &reference,
            auth,
            &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE],
        )
        .await
        .map_err(|e| classify(e, url, &what))?;
    let bad = |reason: String| FetchError::BadArtifact {
        url: url.into(),
        reason,
    };
    if actual != digest {
        return Err(bad(format!(
            "manifest digest is {actual}, expected {digest}"
        )));
    }
    let manifest: OciImageManifest = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("not an OCI image manifest: {e}")))?;
    let (layer, kind) = module_layer(&manifest).map_err(bad)?;
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > archive::MAX_ARCHIVE_BYTES {
        return Err(bad(format!(
            "module layer is {size} bytes; the limit is {}",
            archive::MAX_ARCHIVE_BYTES
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    client
        .get()
        .pull_blob(&reference, layer, &mut bytes)
        .await
        .map_err(|e| classify(e, url, &format!("layer {}", layer.digest)))?;
    if bytes.len() as u64 != size {
        return Err(bad(format!(
            "module layer is {} bytes, the manifest says {size}",
            bytes.len()
        )));
    }
    let files = tokio::task::spawn_blocking(move || match kind {
        Layer::Zip => archive::unzip(&bytes),
        Layer::TarGz => archive::untar_gz(&bytes),
    })
    .await
    .map_err(|e| bad(format!("unpacking: {e}")))?
    .map_err(bad)?;
    if files.is_empty() {
        return Err(bad("the module layer holds no .cue files".into()));
    }
    Ok(files)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    Zip,
    TarGz,
}

fn is_tar_gz(media_type: &str) -> bool {
    media_type.ends_with("tar+gzip")
        || media_type == "application/gzip"
        || media_type == "application/x-gzip"
        || media_type == "application/x-tar+gzip"
}

/// The layer that holds the module, by the artifact's media types.
fn module_layer(manifest: &OciImageManifest) -> Result<(&OciDescriptor, Layer), String> {
    let types = || {
        let layers: Vec<&str> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        format!(
            "config {}, layers [{}]",
            manifest.config.media_type,
            layers.join(", ")
        )
    };
    if manifest.config.media_type == CUE_MODULE_CONFIG {
        return match manifest.layers.first() {
            Some(layer) if layer.media_type == ZIP_LAYER => Ok((layer, Layer::Zip)),
            _ => Err(format!(
                "a CUE module artifact must have the module zip as layer 0; found {}",
                types()
            )),
        };
    }
    manifest
        .layers
        .iter()
        .find(|l| is_tar_gz(&l.media_type))
        .map(|l| (l, Layer::TarGz))
        .ok_or_else(|| {
            format!(
                "not a CUE module (config {CUE_MODULE_CONFIG} with a zip layer) nor a tar.gz \
                 artifact; found {}",
                types()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_with_tag_digest_or_neither() {
        let t = Target::parse("127.0.0.1:5000/platform/webservice").unwrap();
        assert_eq!(t.registry, "127.0.0.1:5000");
        assert_eq!(t.repository, "platform/webservice");
        assert_eq!((&t.tag, &t.digest), (&None, &None));
        assert_eq!(t.url(), "oci://127.0.0.1:5000/platform/webservice");
        let t = Target::parse("oci://registry.example.com/m:v1.2.0").unwrap();
        assert_eq!(t.tag.as_deref(), Some("v1.2.0"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let t = Target::parse(&format!("localhost:5000/m@{digest}")).unwrap();
        assert_eq!(t.digest.as_deref(), Some(digest.as_str()));
        assert!(Target::parse("platform/webservice").is_err());
        assert!(Target::parse("webservice").is_err());
    }

    #[test]
    fn link_headers_name_the_next_page() {
        assert_eq!(
            next_page(r#"</v2/m/tags/list?last=v1&n=2>; rel="next""#).as_deref(),
            Some("/v2/m/tags/list?last=v1&n=2")
        );
        assert_eq!(next_page(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn versions_are_exact_tags_or_constraints() {
        assert_eq!(wanted("v1.2.0"), Wanted::Tag("v1.2.0".into()));
        assert_eq!(wanted("1.2.0"), Wanted::Tag("1.2.0".into()));
        assert_eq!(wanted("latest"), Wanted::Tag("latest".into()));
        assert!(matches!(wanted("^1"), Wanted::Constraint(_)));
        assert!(matches!(wanted(">=1.0, <2"), Wanted::Constraint(_)));
    }

    #[test]
    fn constraints_pick_the_highest_match_and_skip_prereleases() {
        let tags: Vec<String> = [
            "v1.2.0",
            "v1.2.1",
            "v2.0.0",
            "latest",
            "v1.3.0-rc.1",
            "1.1.0",
        ]
        .map(String::from)
        .into();
        let req = |s| semver::VersionReq::parse(s).unwrap();
        assert_eq!(pick(&tags, &req("^1")).unwrap().0, "v1.2.1");
        assert_eq!(pick(&tags, &req(">=2")).unwrap().0, "v2.0.0");
        assert_eq!(pick(&tags, &req("~1.1")).unwrap().0, "1.1.0");
        assert_eq!(pick(&tags, &req(">=1.3.0-rc.0")).unwrap().0, "v2.0.0");
        assert_eq!(pick(&tags, &req("~1.3.0-rc.0")).unwrap().0, "v1.3.0-rc.1");
        assert!(pick(&tags, &req("^3")).is_none());
    }
}
