//! `pequod publish`: pushes a CUE module directory to an OCI registry in CUE's own module
//! artifact format, so that the `cue` command (and Pequod's OCI source) can use it.
//!
//! What is pushed is what `cue mod publish` (cuelang.org/go v0.17, `source: kind: "self"`)
//! pushes: an OCI image manifest whose config is the blob `{}` with media type
//! `application/vnd.cue.module.v1+json`, `layers[0]` the module zip (`application/zip`) and
//! `layers[1]` a copy of `cue.mod/module.cue` (`application/vnd.cue.modulefile.v1`). Pequod
//! adds one annotation, `works.cue.module: <module path>@<version>`, which cue ignores.
//!
//! The zip holds what cue's `modzip.CreateFromDir` takes: every regular file under the module
//! root, sorted by path, except `.git`/`.hg`/`.svn`/`.bzr` directories, nested modules
//! (directories with their own `cue.mod`), `cue.mod/vendor/`, `cue.mod/local-module.cue`,
//! `.hg_archival.txt` and symbolic links. Hidden files, non-CUE files and `cue.mod/pkg`,
//! `cue.mod/gen`, `cue.mod/usr` are included, as cue v0.17.1 does. File names cue would refuse
//! (characters outside its set, Windows-reserved names, case-insensitive collisions) fail the
//! publish before anything is pushed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;

/// The config media type of CUE module artifacts.
const MODULE_CONFIG: &str = "application/vnd.cue.module.v1+json";
/// The media type of the module zip layer.
const ZIP_LAYER: &str = "application/zip";
/// The media type of the `cue.mod/module.cue` layer.
const MODULE_FILE_LAYER: &str = "application/vnd.cue.modulefile.v1";
/// The annotation naming the module version.
const MODULE_ANNOTATION: &str = "works.cue.module";
/// The config blob cue pushes.
const CONFIG_BLOB: &[u8] = b"{}";
/// cue's limit on a module's total size (modzip.MaxZipFile).
const MAX_MODULE_BYTES: u64 = 500 << 20;
/// cue's limit on `cue.mod/module.cue` and `LICENSE` (modzip.MaxCUEMod, MaxLICENSE).
const MAX_SPECIAL_FILE_BYTES: u64 = 16 << 20;

/// What to publish where, from the command line.
#[derive(Debug)]
pub struct Options {
    /// The module root (holds `cue.mod/module.cue`).
    pub dir: PathBuf,
    /// `registry/repository:version`.
    pub reference: String,
    /// Plain HTTP to the registry (default for localhost, 127.0.0.1 and [::1]).
    pub insecure: bool,
    /// Basic-auth user, with `password`.
    pub username: Option<String>,
    /// Basic-auth password, with `username`.
    pub password: Option<String>,
}

/// Where to push: the registry, the repository and the tag (the version).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    registry: String,
    repository: String,
    version: String,
}

impl Target {
    fn parse(reference: &str) -> anyhow::Result<Self> {
        let reference = reference.strip_prefix("oci://").unwrap_or(reference);
        let usage = "expected <registry>/<repository>:<version>, like \
                     127.0.0.1:5000/example.com/platform:v0.1.0";
        let Some((host, _)) = reference.split_once('/') else {
            bail!("{reference:?}: {usage}");
        };
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            bail!("{reference:?}: {host:?} is not a registry host; {usage}");
        }
        if reference.contains('@') {
            bail!("{reference:?}: a digest cannot be pushed to; {usage}");
        }
        // The version is checked on its own (a clearer message than a bad tag's).
        let (name, version) = reference
            .rsplit_once(':')
            .filter(|(_, version)| !version.contains('/'))
            .with_context(|| format!("{reference:?} has no version; {usage}"))?;
        check_version(version)?;
        let parsed =
            Reference::try_from(name).with_context(|| format!("{reference:?}: {usage}"))?;
        Ok(Self {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            version: version.to_owned(),
        })
    }

    fn reference(&self) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            self.version.clone(),
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.version)
    }
}

/// Hosts cue talks plain HTTP to without `+insecure`.
fn default_insecure(registry: &str) -> bool {
    pequod_source::cue_registry::is_loopback(registry)
}

/// `v1.2.3` (or `v1.2.3-rc.1`) in canonical form: semver with a `v`, no build metadata.
fn check_version(version: &str) -> anyhow::Result<semver::Version> {
    let bad = || {
        format!(
            "version {version:?} is not a canonical semantic version: write vMAJOR.MINOR.PATCH, \
             like v1.2.3 (see https://semver.org)"
        )
    };
    let Some(bare) = version.strip_prefix('v') else {
        bail!("{}", bad());
    };
    let parsed = semver::Version::parse(bare).map_err(|_| anyhow::anyhow!("{}", bad()))?;
    if !parsed.build.is_empty() {
        bail!("{}", bad());
    }
    Ok(parsed)
}

/// The `module:` string of a `cue.mod/module.cue`.
fn module_path(module_cue: &str) -> anyhow::Result<Option<String>> {
    pequod_source::modfile::ModuleFile::parse(module_cue)
        .map(|file| file.module)
        .map_err(|e| anyhow::anyhow!("cue.mod/module.cue: {e}"))
}

/// cue's rules for a module path without its major version (module.CheckPathWithoutVersion):
/// lower-case letters, digits and `-._~` in non-empty elements that neither start nor end
/// with `.`, `_` or `-`, and a dot in the first element (a domain).
fn check_module_base(module: &str, base: &str) -> anyhow::Result<()> {
    let bad = |reason: &str| anyhow::anyhow!("module path {module:?} is not valid: {reason}");
    for elem in base.split('/') {
        if elem.is_empty() {
            return Err(bad("empty path element"));
        }
        if let Some(c) = elem.chars().find(|&c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_' | '~'))
        }) {
            return Err(bad(&format!("invalid char {c:?}")));
        }
        if elem.starts_with(['.', '_', '-']) || elem.ends_with(['.', '_', '-']) {
            return Err(bad(&format!("leading or trailing punctuation in {elem:?}")));
        }
    }
    if !base.split('/').next().unwrap_or_default().contains('.') {
        return Err(bad("the first element must be a domain, like example.com"));
    }
    Ok(())
}

/// The module path without `@vN` and the major version it implies (`v0` without a suffix, as
/// cue has it).
fn split_major(module: &str) -> anyhow::Result<(&str, String)> {
    let (base, major) = split_major_unchecked(module)?;
    check_module_base(module, base)?;
    Ok((base, major))
}

fn split_major_unchecked(module: &str) -> anyhow::Result<(&str, String)> {
    match module.split_once('@') {
        Some((base, major)) => {
            let digits = major.strip_prefix('v').unwrap_or_default();
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || (digits.len() > 1 && digits.starts_with('0'))
            {
                bail!("module path {module:?}: {major:?} is not a major version like v1");
            }
            Ok((base, major.to_owned()))
        }
        None => Ok((module, "v0".to_owned())),
    }
}

/// The checked module: its path and the bytes of `cue.mod/module.cue`.
#[derive(Debug)]
struct Module {
    path: String,
    base: String,
    file_bytes: Vec<u8>,
}

fn load_module(dir: &Path, version: &str) -> anyhow::Result<Module> {
    let file = dir.join("cue.mod/module.cue");
    if !file.is_file() {
        let hint = dir
            .ancestors()
            .skip(1)
            .find(|d| d.join("cue.mod/module.cue").is_file())
            .map(|root| format!(" (the module root is {})", root.display()))
            .unwrap_or_default();
        bail!(
            "{} has no cue.mod/module.cue: give the module's root directory{hint}",
            dir.display()
        );
    }
    let file_bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let text = String::from_utf8_lossy(&file_bytes);
    let path = module_path(&text)?.with_context(|| {
        format!(
            "{} declares no module path (a line like module: \"example.com/platform@v0\")",
            file.display()
        )
    })?;
    let (base, major) = split_major(&path)?;
    let parsed = check_version(version)?;
    if format!("v{}", parsed.major) != major {
        let declared = if path.contains('@') {
            format!("declared in {path:?}")
        } else {
            format!("implied by {path:?} (no @vN suffix means v0)")
        };
        bail!(
            "version {version} does not match the major version {major} {declared}; publish {major}.N.N"
        );
    }
    Ok(Module {
        base: base.to_owned(),
        path,
        file_bytes,
    })
}

/// `Some(reason)` when cue would refuse `path` as a file name in a module (module.CheckFilePath).
fn bad_file_path(path: &str) -> Option<String> {
    const ALLOWED: &str = "!#$%&()+,-.=@[]^_{}~ ";
    const WINDOWS: &[&str] = &[
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
        "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    ];
    for elem in path.split('/') {
        if elem.is_empty() || elem.bytes().all(|b| b == b'.') {
            return Some(format!("invalid path element {elem:?}"));
        }
        if elem.ends_with('.') {
            return Some("trailing dot in path element".into());
        }
        if let Some(c) = elem.chars().find(|&c| {
            !(c.is_ascii_alphanumeric()
                || ALLOWED.contains(c)
                || (!c.is_ascii() && c.is_alphabetic()))
        }) {
            return Some(format!("invalid char {c:?}"));
        }
        let short = elem.split('.').next().unwrap_or_default();
        if WINDOWS.iter().any(|w| w.eq_ignore_ascii_case(short)) {
            return Some(format!(
                "{short:?} disallowed as path element component on Windows"
            ));
        }
    }
    None
}

/// The module's files by slash path, as modzip.CreateFromDir lists them.
fn list_files(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    fn walk(
        root: &Path,
        dir: &Path,
        prefix: &str,
        out: &mut Vec<(String, PathBuf)>,
    ) -> anyhow::Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                bail!(
                    "{}: file names must be UTF-8",
                    entry
                        .path()
                        .strip_prefix(root)
                        .unwrap_or(&entry.path())
                        .display()
                );
            };
            let slash = format!("{prefix}{name}");
            let kind = entry
                .file_type()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if kind.is_dir() {
                let skip = matches!(name, ".bzr" | ".git" | ".hg" | ".svn")
                    || slash == "cue.mod/vendor"
                    || std::fs::symlink_metadata(entry.path().join("cue.mod")).is_ok();
                if !skip {
                    walk(root, &entry.path(), &format!("{slash}/"), out)?;
                }
            } else if kind.is_file()
                && !matches!(
                    slash.as_str(),
                    ".hg_archival.txt" | "cue.mod/local-module.cue"
                )
            {
                out.push((slash, entry.path()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, root, "", &mut files)?;
    files.sort();
    Ok(files)
}

/// Refuses what cue refuses: bad names, case-insensitive collisions, `CUE.MOD`, sizes.
fn check_files(files: &[(String, u64)]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let mut folded: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut total: u64 = 0;
    for (path, size) in files {
        if let Some(reason) = bad_file_path(path) {
            problems.push(format!("{path}: {reason}"));
            continue;
        }
        let top = path.split('/').next().unwrap_or_default();
        if top.eq_ignore_ascii_case("cue.mod") && top != "cue.mod" {
            problems.push(format!(
                "{path}: cue.mod directories must have lowercase names"
            ));
            continue;
        }
        if path.eq_ignore_ascii_case("cue.mod/module.cue") && path != "cue.mod/module.cue" {
            problems.push(format!(
                "{path}: cue.mod/module.cue files must have lowercase names"
            ));
            continue;
        }
        // The file and each directory above it, against what is there under case folding.
        let mut names: Vec<(&str, bool)> = path
            .match_indices('/')
            .map(|(i, _)| (&path[..i], true))
            .collect();
        names.push((path, false));
        for (name, is_dir) in names {
            let previous = folded
                .entry(name.to_lowercase())
                .or_insert_with(|| (name.to_owned(), is_dir));
            if previous.0 != name || previous.1 != is_dir {
                problems.push(format!(
                    "{path}: case-insensitive file name collision with {}",
                    previous.0
                ));
                break;
            }
        }
        if matches!(path.as_str(), "cue.mod/module.cue" | "LICENSE")
            && *size > MAX_SPECIAL_FILE_BYTES
        {
            problems.push(format!(
                "{path}: larger than {MAX_SPECIAL_FILE_BYTES} bytes"
            ));
        }
        total = total.saturating_add(*size);
    }
    if total > MAX_MODULE_BYTES {
        problems.push(format!(
            "the module is {total} bytes; cue's limit is {MAX_MODULE_BYTES}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("files cue would not publish:\n  {}", problems.join("\n  "))
    }
}

/// The module zip: files sorted by path, deflated, with the fixed 1980 timestamp, so the same
/// files give the same digest.
fn zip_module(root: &Path) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let files = list_files(root)?;
    let mut sized = Vec::with_capacity(files.len());
    for (slash, path) in &files {
        let size = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        sized.push((slash.clone(), size));
    }
    check_files(&sized)?;
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (slash, path) in &files {
        let content = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        zip.start_file(slash.as_str(), options)
            .context("writing the module zip")?;
        zip.write_all(&content).context("writing the module zip")?;
    }
    let bytes = zip.finish().context("writing the module zip")?.into_inner();
    Ok((bytes, files.into_iter().map(|(slash, _)| slash).collect()))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

fn descriptor(media_type: &str, bytes: &[u8]) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_owned(),
        digest: sha256(bytes),
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// The manifest cue writes (plus the module annotation), as the bytes to push.
fn manifest(module: &Module, version: &str, zip: &[u8]) -> anyhow::Result<Vec<u8>> {
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: descriptor(MODULE_CONFIG, CONFIG_BLOB),
        layers: vec![
            descriptor(ZIP_LAYER, zip),
            descriptor(MODULE_FILE_LAYER, &module.file_bytes),
        ],
        subject: None,
        artifact_type: None,
        annotations: Some(
            [(
                MODULE_ANNOTATION.to_owned(),
                format!("{}@{version}", module.base),
            )]
            .into(),
        ),
    };
    serde_json::to_vec(&manifest).context("encoding the manifest")
}

/// The message for a failed push, naming the registry.
fn push_error(e: OciDistributionError, target: &Target, insecure: bool) -> anyhow::Error {
    let registry = &target.registry;
    let credentials = "give --username/--password or PEQUOD_REGISTRY_USERNAME/PASSWORD";
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => {
            anyhow::anyhow!("registry {registry} refused the push (unauthorized): {credentials}")
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => {
            anyhow::anyhow!("registry {registry} refused the push (HTTP 401/403): {credentials}")
        }
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|c| matches!(c.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            anyhow::anyhow!("registry {registry} refused the push ({envelope}): {credentials}")
        }
        OciDistributionError::RequestError(e)
            if e.status().is_some_and(|s| matches!(s.as_u16(), 401 | 403)) =>
        {
            anyhow::anyhow!("registry {registry} refused the push (unauthorized): {credentials}")
        }
        OciDistributionError::RequestError(e) if e.status().is_some() => {
            anyhow::anyhow!("registry {registry} answered {e}")
        }
        OciDistributionError::RequestError(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            // Reached, but not over TLS: likely a plain-HTTP registry.
            let unreachable = ["dns error", "onnection refused", "timed out", "unreachable"]
                .iter()
                .any(|m| message.contains(m));
            let hint = if insecure || unreachable {
                ""
            } else {
                " (a plain-HTTP registry needs --insecure)"
            };
            anyhow::anyhow!("cannot reach registry {registry}: {message}{hint}")
        }
        other => anyhow::anyhow!("pushing to registry {registry} ({target}): {other}"),
    }
}

/// Pushes the config, both layers and the manifest; the manifest's digest.
async fn push(
    client: &Client,
    auth: &RegistryAuth,
    target: &Target,
    blobs: [(&[u8], String); 3],
    manifest: Vec<u8>,
) -> Result<String, OciDistributionError> {
    let reference = target.reference();
    client
        .store_auth_if_needed(reference.resolve_registry(), auth)
        .await;
    for (bytes, digest) in blobs {
        if !client.blob_exists(&reference, &digest).await? {
            client
                .push_blob(&reference, bytes.to_vec(), &digest)
                .await?;
        }
    }
    let digest = sha256(&manifest);
    let content_type = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
    client
        .push_manifest_raw(&reference, manifest, content_type)
        .await?;
    Ok(digest)
}

/// `pequod publish`: checks, zips and pushes; prints `pushed <ref> <digest>`.
pub fn run(options: &Options, timings: bool) -> anyhow::Result<String> {
    let started = Instant::now();
    let target = Target::parse(&options.reference)?;
    let module = load_module(&options.dir, &target.version)?;
    let (zip, files) = zip_module(&options.dir)?;
    let packed = started.elapsed();
    if target.repository != module.base
        && !target.repository.ends_with(&format!("/{}", module.base))
    {
        eprintln!(
            "hint: cue looks {} up at <registry>/<prefix>/{} (CUE_REGISTRY); {} is reachable \
             only with a CUE_REGISTRY mapping for this module",
            module.path, module.base, target.repository
        );
    }
    let auth = match (&options.username, &options.password) {
        (Some(user), Some(password)) => RegistryAuth::Basic(user.clone(), password.clone()),
        (None, None) => RegistryAuth::Anonymous,
        _ => bail!("give both a username and a password, or neither"),
    };
    let insecure = options.insecure || default_insecure(&target.registry);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(120)),
        // One request per blob (the module is small) rather than POST, PATCH and PUT.
        use_monolithic_push: true,
        ..ClientConfig::default()
    });
    let manifest = manifest(&module, &target.version, &zip)?;
    let blobs = [
        (CONFIG_BLOB, sha256(CONFIG_BLOB)),
        (zip.as_slice(), sha256(&zip)),
        (module.file_bytes.as_slice(), sha256(&module.file_bytes)),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let digest = runtime
        .block_on(push(&client, &auth, &target, blobs, manifest))
        .map_err(|e| push_error(e, &target, insecure))?;
    if timings {
        eprintln!(
            "zip: {} files, {} bytes in {:.1?}; push: {:.1?}",
            files.len(),
            zip.len(),
            packed,
            started.elapsed().saturating_sub(packed)
        );
    }
    Ok(format!("pushed {target} {digest}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_need_a_registry_a_repository_and_a_version() {
        let t = Target::parse("127.0.0.1:5000/example.com/lib:v1.2.3").unwrap();
        assert_eq!(t.registry, "127.0.0.1:5000");
        assert_eq!(t.repository, "example.com/lib");
        assert_eq!(t.version, "v1.2.3");
        assert_eq!(t.to_string(), "127.0.0.1:5000/example.com/lib:v1.2.3");
        assert!(Target::parse("127.0.0.1:5000/example.com/lib").is_err());
        assert!(Target::parse("example/lib:v1.0.0").is_err());
        assert!(Target::parse("lib:v1.0.0").is_err());
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(Target::parse(&format!("localhost:5000/lib@{digest}")).is_err());
    }

    #[test]
    fn loopback_registries_are_plain_http_by_default() {
        assert!(default_insecure("localhost:5000"));
        assert!(default_insecure("127.0.0.1:5000"));
        assert!(default_insecure("[::1]:5000"));
        assert!(default_insecure("localhost"));
        assert!(!default_insecure("registry.example.com"));
        assert!(!default_insecure("127.0.0.2:5000"));
    }

    #[test]
    fn versions_are_canonical_semver() {
        assert!(check_version("v1.2.3").is_ok());
        assert!(check_version("v0.1.0-rc.1").is_ok());
        for bad in ["1.2.3", "v1.2", "v1", "v1.2.3+build", "v01.2.3", "latest"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_module_path_comes_from_module_cue() {
        let text = "// comment\nmodule: \"example.com/lib@v1\"\nlanguage: version: \"v0.17.0\"\n";
        assert_eq!(
            module_path(text).unwrap().as_deref(),
            Some("example.com/lib@v1")
        );
        assert_eq!(
            module_path("language: version: \"v0.17.0\"\n").unwrap(),
            None
        );
        assert_eq!(module_path("modules: \"x\"\n").unwrap(), None);
        assert!(module_path("module: \"x\" + y\n").is_err(), "not data");
        assert_eq!(split_major("example.com/lib@v2").unwrap().1, "v2");
        assert_eq!(
            split_major("example.com/lib").unwrap(),
            ("example.com/lib", "v0".into())
        );
        assert!(split_major("example.com/lib@2").is_err());
        assert!(split_major("Example.com/lib@v1").is_err());
        assert!(split_major("lib@v1").is_err());
        assert!(split_major("example.com//lib").is_err());
        assert!(split_major("example.com/-lib").is_err());
    }

    #[test]
    fn file_names_follow_cues_rules() {
        assert_eq!(bad_file_path("lib/lib.cue"), None);
        assert_eq!(bad_file_path(".hidden/x.txt"), None);
        assert_eq!(bad_file_path("a b/c (1).cue"), None);
        assert!(bad_file_path("a*b.cue").is_some());
        assert!(bad_file_path("lib/aux.cue").is_some());
        assert!(bad_file_path("lib./x.cue").is_some());
        assert!(check_files(&[("a.cue".into(), 1), ("A.cue".into(), 1)]).is_err());
        assert!(check_files(&[("a/x.cue".into(), 1), ("A/y.cue".into(), 1)]).is_err());
        assert!(check_files(&[("CUE.MOD/module.cue".into(), 1)]).is_err());
        assert!(check_files(&[("cue.mod/module.cue".into(), 1), ("x.cue".into(), 1)]).is_ok());
    }
}
