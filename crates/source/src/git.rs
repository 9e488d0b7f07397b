//! Modules from Git repositories (libgit2 through git2): `git://`, `https://` (token or
//! basic-auth Secret) and `ssh://` / `user@host:path` (key Secret with `known_hosts`).
//!
//! `ref` is the repository URL with an optional `#branch`, `#tag`, `#refs/…` or `#<commit
//! SHA>`; `version` is a tag, branch or semver constraint over the tags; neither means the
//! default branch. Resolution lists the remote's refs (one round trip, like `git ls-remote`);
//! a commit already in the cache is not fetched again, and a fetch asks for that one ref,
//! shallow. `path` names the package directory; the module root is the nearest directory at
//! or above it holding `cue.mod/module.cue` (else the repository root).
//!
//! The digest is the `sha256:` content digest of the module's files (what the engine's memo
//! keys on: a commit that changes nothing in the module does not re-render); the commit SHA is
//! in `version` (`main@<sha>`, `v1.2.0@<sha>`, or the SHA alone for a pin).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use git2::{CertificateCheckStatus, Cred, CredentialType, Direction, FetchOptions, Oid};
use git2::{RemoteCallbacks, Repository};
use sha2::{Digest as _, Sha256};

use crate::archive;
use crate::credentials::{Basic, SecretData};
use crate::oci::{Wanted, no_version_matches, pick, wanted};
use crate::{FetchError, Fetched, Sources};

/// Credentials for a Git server.
#[derive(Clone, Default)]
pub(crate) struct GitAuth {
    pub(crate) basic: Option<Basic>,
    /// SSH private key (PEM/OpenSSH).
    pub(crate) identity: Option<String>,
    /// `known_hosts` lines the server's key must match.
    pub(crate) known_hosts: Option<String>,
}

impl GitAuth {
    pub(crate) fn from_secret(secret: &SecretData) -> Result<Self, FetchError> {
        let identity = secret.text("identity")?.or(secret.text("ssh-privatekey")?);
        let auth = Self {
            basic: secret.basic()?,
            identity,
            known_hosts: secret.text("known_hosts")?,
        };
        if auth.basic.is_none() && auth.identity.is_none() {
            return Err(secret.bad(
                "has neither username/password (or token) nor identity (or ssh-privatekey) keys",
            ));
        }
        Ok(auth)
    }
}

/// A parsed `cueRef.ref` for Git.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) fragment: Option<String>,
}

impl Target {
    /// Splits off the `#ref` and checks the URL ([`crate::allowed::git_url`]).
    pub(crate) fn parse(reference: &str, allow_local: bool) -> Result<Self, FetchError> {
        let (url, fragment) = match reference.split_once('#') {
            Some((url, fragment)) if !fragment.is_empty() => (url, Some(fragment.to_owned())),
            Some((url, _)) => (url, None),
            None => (reference, None),
        };
        Ok(Self {
            url: crate::allowed::git_url(url, allow_local)?,
            fragment,
        })
    }
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What to fetch: a ref name and the commit it points at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Full ref name (`refs/heads/main`), `None` for a commit pin.
    refname: Option<String>,
    /// Short name for `version` (`main`, `v1.2.0`).
    name: Option<String>,
    commit: Oid,
}

/// Picks the ref from a listing (name → commit, tags peeled).
pub(crate) fn choose(
    refs: &BTreeMap<String, Oid>,
    want: Option<&str>,
    version: Option<&str>,
    url: &str,
) -> Result<Resolved, FetchError> {
    let not_found = |what: String| FetchError::ModuleNotFound {
        url: url.into(),
        what,
    };
    let by_name = |name: &str| -> Option<Resolved> {
        let candidates = if name.starts_with("refs/") {
            vec![name.to_owned()]
        } else {
            vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
        };
        candidates.into_iter().find_map(|refname| {
            refs.get(&refname).map(|commit| Resolved {
                name: Some(name.trim_start_matches("refs/").to_owned()),
                refname: Some(refname),
                commit: *commit,
            })
        })
    };
    match (want, version) {
        (Some(_), Some(_)) => Err(FetchError::InvalidRef {
            reference: url.into(),
            reason: "give either a #ref in ref or a version, not both".into(),
        }),
        (Some(name), None) => by_name(name).ok_or_else(|| not_found(format!("ref {name}"))),
        (None, None) => {
            let head = refs
                .get("HEAD")
                .ok_or_else(|| not_found("default branch (HEAD)".into()))?;
            // Name the branch HEAD points at, when one matches.
            let name = refs
                .iter()
                .find(|(r, c)| r.starts_with("refs/heads/") && *c == head)
                .map(|(r, _)| r.trim_start_matches("refs/heads/").to_owned());
            Ok(Resolved {
                refname: Some(
                    name.as_ref()
                        .map_or_else(|| "HEAD".to_owned(), |n| format!("refs/heads/{n}")),
                ),
                name,
                commit: *head,
            })
        }
        (None, Some(version)) => match wanted(version) {
            Wanted::Tag(tag) => by_name(&tag)
                .or_else(|| {
                    let other = tag
                        .strip_prefix('v')
                        .map_or_else(|| format!("v{tag}"), str::to_owned);
                    by_name(&other)
                })
                .ok_or_else(|| not_found(format!("tag or branch {tag}"))),
            Wanted::Constraint(req) => {
                let tags: Vec<String> = refs
                    .keys()
                    .filter_map(|r| r.strip_prefix("refs/tags/"))
                    .map(str::to_owned)
                    .collect();
                let (tag, _) =
                    pick(&tags, &req).ok_or_else(|| no_version_matches(url, &req, &tags))?;
                by_name(&tag).ok_or_else(|| not_found(format!("tag {tag}")))
            }
        },
    }
}

/// Maps a libgit2 error.
fn classify(e: &git2::Error, url: &str) -> FetchError {
    let message = e.message().to_owned();
    let lower = message.to_lowercase();
    if e.code() == git2::ErrorCode::Auth
        || e.code() == git2::ErrorCode::Certificate
        || lower.contains("authentication")
        || lower.contains("401")
        || lower.contains("403")
    {
        return FetchError::Unauthorized { url: url.into() };
    }
    if lower.contains("not found")
        || lower.contains("404")
        || lower.contains("does not appear to be a git repository")
        || lower.contains("repository not exported")
        || lower.contains("no such file")
    {
        return FetchError::ModuleNotFound {
            url: url.into(),
            what: "repository".into(),
        };
    }
    match e.class() {
        git2::ErrorClass::Net
        | git2::ErrorClass::Http
        | git2::ErrorClass::Ssh
        | git2::ErrorClass::Os
        | git2::ErrorClass::Ssl => FetchError::Network {
            url: url.into(),
            message,
        },
        _ => FetchError::Registry {
            url: url.into(),
            message,
        },
    }
}

/// Callbacks that answer credentials once (libgit2 asks again after a refusal) and check SSH
/// host keys against `known_hosts`.
fn callbacks<'a>(auth: &'a GitAuth, url: &str) -> RemoteCallbacks<'a> {
    let port = ssh_port(url);
    let mut callbacks = RemoteCallbacks::new();
    let mut asked = 0;
    callbacks.credentials(move |_url, username, allowed| {
        asked += 1;
        if asked > 1 {
            return Err(git2::Error::new(
                git2::ErrorCode::Auth,
                git2::ErrorClass::Net,
                "authentication failed",
            ));
        }
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(identity) = &auth.identity
        {
            return Cred::ssh_key_from_memory(username.unwrap_or("git"), None, identity, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(basic) = &auth.basic
        {
            return Cred::userpass_plaintext(&basic.username, &basic.password);
        }
        Err(git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Net,
            "the server asks for credentials; set cueRef.pullSecretRef",
        ))
    });
    callbacks.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has verified the chain already.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(key) = hostkey.hostkey() else {
            return Err(host_key_error(host));
        };
        let known = auth
            .known_hosts
            .as_deref()
            .is_some_and(|k| known_hosts_accept(k, host, port, key));
        if known {
            Ok(CertificateCheckStatus::CertificateOk)
        } else {
            Err(host_key_error(host))
        }
    });
    callbacks
}

fn host_key_error(host: &str) -> git2::Error {
    git2::Error::new(
        git2::ErrorCode::Certificate,
        git2::ErrorClass::Ssh,
        format!("the SSH host key of {host} is not in the pull secret's known_hosts"),
    )
}

/// The port of an `ssh://host:port/…` URL (22 when none is written, and for `user@host:path`).
fn ssh_port(url: &str) -> u16 {
    url.strip_prefix("ssh://")
        .and_then(|rest| rest.split('/').next())
        .map(|authority| authority.rsplit_once('@').map_or(authority, |(_, h)| h))
        .and_then(|host_port| {
            let port = if let Some(bracketed) = host_port.strip_prefix('[') {
                bracketed.split_once("]:").map(|(_, p)| p)
            } else {
                host_port.split_once(':').map(|(_, p)| p)
            };
            port?.parse().ok()
        })
        .unwrap_or(22)
}

/// Whether a `known_hosts` text lists `key` for `host` at `port`: plain patterns (`host`,
/// `[host]:port`) and hashed ones (`|1|salt|hash`, as `ssh-keygen -H` writes them).
fn known_hosts_accept(known_hosts: &str, host: &str, port: u16, key: &[u8]) -> bool {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    // OpenSSH names a host on another port than 22 `[host]:port`.
    let name = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    known_hosts.lines().any(|line| {
        let mut parts = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(k)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        k == encoded
            && hosts.split(',').any(|pattern| {
                pattern == name
                    || (port == 22 && pattern == format!("[{host}]:22"))
                    || hashed_host_matches(pattern, &name)
            })
    })
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
fn hashed_host_matches(pattern: &str, name: &str) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let Some(rest) = pattern.strip_prefix("|1|") else {
        return false;
    };
    let Some((salt, hash)) = rest.split_once('|') else {
        return false;
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Where the bare repository caching objects of `url` lives: under the cache directory, or a
/// scratch directory removed after the fetch.
fn repo_dir(cache_dir: Option<&Path>, url: &str) -> (PathBuf, Option<ScratchDir>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = crate::hex(&Sha256::digest(url.as_bytes()));
    if let Some(cache) = cache_dir {
        (cache.join("git").join(format!("{name}.git")), None)
    } else {
        let dir = std::env::temp_dir().join(format!(
            "pequod-git-{}-{}-{}",
            &name[..16],
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        (dir.clone(), Some(ScratchDir(dir)))
    }
}

/// A lock per local repository directory.
#[derive(Debug, Default)]
pub(crate) struct Locks(
    std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>>,
);

impl Locks {
    fn of(&self, dir: &Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget locks nobody holds once there are many (one per repository URL).
        if locks.len() > 1024 {
            locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
        }
        locks.entry(dir.to_owned()).or_default().clone()
    }
}

/// Removes a scratch repository when the fetch is done.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_repo(dir: &Path) -> Result<Repository, String> {
    if let Ok(repo) = Repository::open_bare(dir) {
        Ok(repo)
    } else {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Repository::init_bare(dir).map_err(|e| format!("{}: {e}", dir.display()))
    }
}

/// Lists the remote's refs: name → commit (annotated tags peeled).
fn list_refs(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
) -> Result<BTreeMap<String, Oid>, git2::Error> {
    let mut remote = repo.remote_anonymous(url)?;
    let connection = remote.connect_auth(Direction::Fetch, Some(callbacks(auth, url)), None)?;
    let mut refs = BTreeMap::new();
    for head in connection.list()? {
        let name = head.name();
        if let Some(tag) = name.strip_suffix("^{}") {
            refs.insert(tag.to_owned(), head.oid());
        } else {
            refs.entry(name.to_owned()).or_insert(head.oid());
        }
    }
    Ok(refs)
}

/// Fetches `resolved` into the local repository (shallow for a named ref).
fn fetch_commit(
    repo: &Repository,
    url: &str,
    auth: &GitAuth,
    resolved: &Resolved,
) -> Result<(), git2::Error> {
    if repo.find_commit(resolved.commit).is_ok() {
        return Ok(());
    }
    let mut remote = repo.remote_anonymous(url)?;
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(auth, url));
    options.download_tags(git2::AutotagOption::None);
    let refspecs: Vec<String> = match &resolved.refname {
        Some(refname) => {
            options.depth(1);
            vec![format!("+{refname}:refs/pequod/fetched")]
        }
        // A commit pin: ask for it; servers that refuse unadvertised objects get every branch
        // and tag instead.
        None => vec![resolved.commit.to_string()],
    };
    let result = remote.fetch(&refspecs, Some(&mut options), None);
    if result.is_err() || repo.find_commit(resolved.commit).is_err() {
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(auth, url));
        options.download_tags(git2::AutotagOption::None);
        remote.fetch(
            &[
                "+refs/heads/*:refs/pequod/heads/*",
                "+refs/tags/*:refs/pequod/tags/*",
            ],
            Some(&mut options),
            None,
        )?;
    }
    repo.find_commit(resolved.commit).map(|_| ())
}

/// The `.cue` files of a commit's tree, size-capped.
fn cue_files(repo: &Repository, commit: Oid) -> Result<BTreeMap<String, String>, String> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| e.message().to_owned())?;
    let mut files = BTreeMap::new();
    let mut budget = archive::MAX_UNPACKED_BYTES;
    let mut failure = None;
    let mut count = 0;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        count += 1;
        if count > archive::MAX_ENTRIES * 10 {
            failure = Some(format!("more than {} entries", archive::MAX_ENTRIES * 10));
            return git2::TreeWalkResult::Abort;
        }
        let Ok(name) = entry.name() else {
            return git2::TreeWalkResult::Ok;
        };
        let path = format!("{dir}{name}");
        if entry.kind() != Some(git2::ObjectType::Blob) || !archive::is_cue(&path) {
            return git2::TreeWalkResult::Ok;
        }
        let blob = match repo.find_blob(entry.id()) {
            Ok(blob) => blob,
            Err(e) => {
                failure = Some(e.message().to_owned());
                return git2::TreeWalkResult::Abort;
            }
        };
        let size = blob.content().len() as u64;
        if size > budget {
            failure = Some(format!(
                "the .cue files add up to more than {} bytes",
                archive::MAX_UNPACKED_BYTES
            ));
            return git2::TreeWalkResult::Abort;
        }
        budget -= size;
        if let Ok(text) = String::from_utf8(blob.content().to_vec()) {
            files.insert(path, text);
            git2::TreeWalkResult::Ok
        } else {
            failure = Some(format!("{path} is not UTF-8"));
            git2::TreeWalkResult::Abort
        }
    })
    .map_err(|e| failure.clone().unwrap_or_else(|| e.message().to_owned()))?;
    match failure {
        Some(failure) => Err(failure),
        None => Ok(files),
    }
}

/// The module around `package` (a directory in the repository): its root is the nearest
/// directory at or above `package` with `cue.mod/module.cue`, else the repository root.
/// Returns the files relative to that root and the package relative to it.
pub(crate) fn module_of(
    files: &BTreeMap<String, String>,
    package: &str,
) -> (BTreeMap<String, String>, String) {
    let mut dir = PathBuf::from(if package == "." { "" } else { package });
    let root = loop {
        let module_file = dir.join("cue.mod/module.cue");
        if files.contains_key(module_file.to_string_lossy().as_ref()) {
            break Some(dir);
        }
        if !dir.pop() {
            break None;
        }
    };
    let Some(root) = root.filter(|r| !r.as_os_str().is_empty()) else {
        return (files.clone(), package.to_owned());
    };
    let prefix = format!("{}/", root.to_string_lossy());
    let files = files
        .iter()
        .filter_map(|(p, c)| p.strip_prefix(&prefix).map(|p| (p.to_owned(), c.clone())))
        .collect();
    let relative = Path::new(package)
        .strip_prefix(&root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let package = if relative.is_empty() {
        ".".into()
    } else {
        relative
    };
    (files, package)
}

pub(crate) async fn fetch(
    sources: &Sources,
    target: &Target,
    version: Option<&str>,
    auth: GitAuth,
    package: String,
) -> Result<Fetched, FetchError> {
    let url = target.url.clone();
    // What messages and the status show: the URL without credentials.
    let shown = crate::allowed::redact(&url);
    let (dir, _scratch) = repo_dir(sources.config.cache_dir.as_deref(), &url);
    let lock = sources.git_locks.of(&dir);
    let _held = lock.lock().await;
    let local_error = |message: String| FetchError::Registry {
        url: shown.clone(),
        message: format!("local Git cache: {message}"),
    };
    let auth = std::sync::Arc::new(auth);

    // Resolve: a commit pin needs no request; anything else lists the remote's refs.
    let resolved = match target.fragment.as_deref().filter(|f| is_sha(f)) {
        Some(sha) if version.is_none() => Resolved {
            refname: None,
            name: None,
            commit: Oid::from_str(sha).map_err(|e| classify(&e, &shown))?,
        },
        _ => {
            let (dir, url_owned, auth) = (dir.clone(), url.clone(), auth.clone());
            let refs = tokio::task::spawn_blocking(move || {
                let repo = open_repo(&dir).map_err(|e| (None, e))?;
                list_refs(&repo, &url_owned, &auth).map_err(|e| (Some(e), String::new()))
            })
            .await
            .map_err(|e| local_error(e.to_string()))?
            .map_err(|(e, message)| match e {
                Some(e) => classify(&e, &shown),
                None => local_error(message),
            })?;
            choose(&refs, target.fragment.as_deref(), version, &shown)?
        }
    };
    let commit = resolved.commit.to_string();
    let key = format!("git:{url}@{commit}");
    let files = if let Some(files) = sources.cache.get(&key).await {
        (*files).clone()
    } else {
        let (dir, url_owned, auth) = (dir.clone(), url.clone(), auth.clone());
        let pin = resolved.refname.is_none();
        let refname = resolved.refname.clone();
        let oid = resolved.commit;
        let files = tokio::task::spawn_blocking(move || {
            let repo = open_repo(&dir).map_err(|e| (None, e))?;
            let wanted = Resolved {
                refname,
                name: None,
                commit: oid,
            };
            fetch_commit(&repo, &url_owned, &auth, &wanted)
                .map_err(|e| (Some(e), String::new()))?;
            cue_files(&repo, oid).map_err(|e| (None, format!("bad:{e}")))
        })
        .await
        .map_err(|e| local_error(e.to_string()))?
        .map_err(|(e, message)| match e {
            Some(e) => match classify(&e, &shown) {
                FetchError::Registry { .. } if pin => FetchError::ModuleNotFound {
                    url: shown.clone(),
                    what: format!("commit {commit}"),
                },
                other => other,
            },
            None => match message.strip_prefix("bad:") {
                Some(reason) => FetchError::BadArtifact {
                    url: shown.clone(),
                    reason: reason.to_owned(),
                },
                None => local_error(message),
            },
        })?;
        sources.cache.put(&key, &files).await;
        files
    };
    let version = match &resolved.name {
        Some(name) => format!("{name}@{commit}"),
        None => commit,
    };
    finish(&files, &package, &shown, version)
}

fn finish(
    files: &BTreeMap<String, String>,
    package: &str,
    url: &str,
    version: String,
) -> Result<Fetched, FetchError> {
    let (files, package) = module_of(files, package);
    crate::check_package(&files, &package, url)?;
    Ok(Fetched {
        digest: crate::digest(&files),
        files,
        package,
        url: url.to_owned(),
        version: Some(version),
        deps: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    #[test]
    fn refs_parse_with_fragments() {
        let t = Target::parse("https://example.com/platform.git#v1.2.0", false).unwrap();
        assert_eq!(t.url, "https://example.com/platform.git");
        assert_eq!(t.fragment.as_deref(), Some("v1.2.0"));
        assert!(Target::parse("git@example.com:org/repo.git", false).is_ok());
        assert!(Target::parse("example.com/repo", false).is_err());
        let t = Target::parse("GIT://example.com/platform#main", false).unwrap();
        assert_eq!(
            t.url, "git://example.com/platform",
            "the scheme in lower case"
        );
        assert!(matches!(
            Target::parse("file:///srv/platform#main", false),
            Err(FetchError::SourceNotAllowed { .. })
        ));
        let t = Target::parse("file:///srv/platform#main", true).unwrap();
        assert_eq!(t.url, "file:///srv/platform");
    }

    #[test]
    fn refs_are_chosen_by_name_version_or_default() {
        let refs = BTreeMap::from([
            ("HEAD".to_owned(), oid(1)),
            ("refs/heads/main".to_owned(), oid(1)),
            ("refs/heads/dev".to_owned(), oid(2)),
            ("refs/tags/v1.2.0".to_owned(), oid(3)),
            ("refs/tags/v1.2.1".to_owned(), oid(4)),
            ("refs/tags/v2.0.0".to_owned(), oid(5)),
        ]);
        let c = |want, version| choose(&refs, want, version, "u").map(|r| (r.name, r.commit));
        assert_eq!(c(None, None).unwrap(), (Some("main".into()), oid(1)));
        assert_eq!(c(Some("dev"), None).unwrap(), (Some("dev".into()), oid(2)));
        assert_eq!(
            c(None, Some("^1")).unwrap(),
            (Some("v1.2.1".into()), oid(4))
        );
        assert_eq!(
            c(None, Some("1.2.0")).unwrap(),
            (Some("v1.2.0".into()), oid(3))
        );
        assert!(matches!(
            c(Some("nope"), None),
            Err(FetchError::ModuleNotFound { .. })
        ));
        assert!(matches!(
            c(None, Some("^3")),
            Err(FetchError::NoVersionMatches { .. })
        ));
    }

    #[test]
    fn the_module_root_is_found_above_the_package() {
        let files = BTreeMap::from([
            ("README.cue".to_owned(), String::new()),
            ("mods/platform/cue.mod/module.cue".to_owned(), String::new()),
            ("mods/platform/web/web.cue".to_owned(), String::new()),
        ]);
        let (module, package) = module_of(&files, "mods/platform/web");
        assert_eq!(package, "web");
        assert_eq!(
            module.keys().collect::<Vec<_>>(),
            ["cue.mod/module.cue", "web/web.cue"]
        );
        let (module, package) = module_of(&files, "mods/platform");
        assert_eq!((module.len(), package.as_str()), (2, "."));
        let (module, package) = module_of(&files, "elsewhere");
        assert_eq!((module.len(), package.as_str()), (3, "elsewhere"));
    }

    #[test]
    fn known_hosts_match_host_port_and_key() {
        use base64::Engine as _;
        let key = b"key-bytes";
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        let known = format!("github.com,[127.0.0.1]:2222 ssh-ed25519 {encoded}\n");
        assert!(known_hosts_accept(&known, "github.com", 22, key));
        assert!(known_hosts_accept(&known, "127.0.0.1", 2222, key));
        assert!(
            !known_hosts_accept(&known, "127.0.0.1", 22, key),
            "another port"
        );
        assert!(!known_hosts_accept(&known, "gitlab.com", 22, key));
        assert!(!known_hosts_accept(&known, "github.com", 22, b"other"));
    }

    #[test]
    fn hashed_known_hosts_entries_match() {
        use base64::Engine as _;
        let key = b"key-bytes";
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        // Salt "0123456789abcdefghij"; hashes by HMAC-SHA1 as `ssh-keygen -H` computes them.
        let known = format!(
            "|1|MDEyMzQ1Njc4OWFiY2RlZmdoaWo=|4XKDM3Rddj4Zr5SeQ6VLeII6A5s= ssh-ed25519 {encoded}\n\
             |1|MDEyMzQ1Njc4OWFiY2RlZmdoaWo=|kjl9J932vxVxCmU2IfKMefPFSKM= ssh-ed25519 {encoded}\n"
        );
        assert!(known_hosts_accept(&known, "git.example.com", 22, key));
        assert!(known_hosts_accept(&known, "127.0.0.1", 2222, key));
        assert!(!known_hosts_accept(&known, "127.0.0.1", 2223, key));
        assert!(!known_hosts_accept(&known, "git.example.org", 22, key));
        assert!(!known_hosts_accept(&known, "git.example.com", 22, b"other"));
    }

    #[test]
    fn ssh_ports() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2222/repo.git"), 2222);
        assert_eq!(ssh_port("ssh://[::1]:2200/repo.git"), 2200);
        assert_eq!(ssh_port("ssh://git@example.com/repo.git"), 22);
        assert_eq!(ssh_port("git@example.com:org/repo.git"), 22);
    }
}
