//! Building and locating the control-plane binaries.
//!
//! The binaries come from the official Go modules through the Go module proxy, via the small
//! wrapper modules in `xtask/testenv/{kube,etcd,kwok}` (their `go.mod`/`go.sum` pin every
//! version). They are built into a cache outside the repository, one directory per wrapper
//! module keyed by its version and a hash of its `go.mod`, `go.sum`, the Go version and the build
//! flags, so a changed pin builds anew and an unchanged one is never rebuilt.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Error, Profile};

/// A wrapper Go module and the binaries built from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrapper {
    /// `k8s.io/kubernetes`: kube-apiserver, kube-controller-manager, kube-scheduler.
    Kube,
    /// `go.etcd.io/etcd/server/v3`: etcd.
    Etcd,
    /// `sigs.k8s.io/kwok`: fake nodes and pods.
    Kwok,
}

impl Wrapper {
    fn dir_name(self) -> &'static str {
        match self {
            Wrapper::Kube => "kube",
            Wrapper::Etcd => "etcd",
            Wrapper::Kwok => "kwok",
        }
    }

    /// The module whose version names the cache directory.
    fn main_requirement(self) -> &'static str {
        match self {
            Wrapper::Kube => "k8s.io/kubernetes",
            Wrapper::Etcd => "go.etcd.io/etcd/server/v3",
            Wrapper::Kwok => "sigs.k8s.io/kwok",
        }
    }
}

/// One binary of the test control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// etcd, the API server's store.
    Etcd,
    /// kube-apiserver.
    KubeApiserver,
    /// kube-controller-manager (full profile).
    KubeControllerManager,
    /// kube-scheduler (full profile).
    KubeScheduler,
    /// kwok, fake nodes that run pods without containers (full profile).
    Kwok,
    /// kubectl, built beside the servers for manual use, e2e tests and the tested docs.
    Kubectl,
}

impl Component {
    /// Every binary of a profile: the servers in start order, then kubectl.
    pub fn of(profile: Profile) -> &'static [Component] {
        match profile {
            Profile::Minimal => &[
                Component::Etcd,
                Component::KubeApiserver,
                Component::Kubectl,
            ],
            Profile::Full => &[
                Component::Etcd,
                Component::KubeApiserver,
                Component::Kubectl,
                Component::KubeControllerManager,
                Component::KubeScheduler,
                Component::Kwok,
            ],
        }
    }

    /// The binary's file name.
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::Kwok => "kwok",
            Component::Kubectl => "kubectl",
        }
    }

    fn wrapper(self) -> Wrapper {
        match self {
            Component::Etcd => Wrapper::Etcd,
            Component::KubeApiserver
            | Component::KubeControllerManager
            | Component::KubeScheduler
            | Component::Kubectl => Wrapper::Kube,
            Component::Kwok => Wrapper::Kwok,
        }
    }

    /// The Go package to build inside the wrapper module.
    fn package(self) -> &'static str {
        match self {
            Component::Etcd => ".",
            Component::KubeApiserver => "k8s.io/kubernetes/cmd/kube-apiserver",
            Component::KubeControllerManager => "k8s.io/kubernetes/cmd/kube-controller-manager",
            Component::KubeScheduler => "k8s.io/kubernetes/cmd/kube-scheduler",
            Component::Kwok => "sigs.k8s.io/kwok/cmd/kwok",
            Component::Kubectl => "k8s.io/kubernetes/cmd/kubectl",
        }
    }
}

/// Build tags Kubernetes' own release build uses for its server binaries.
const KUBE_TAGS: &str = "selinux,notest,grpcnotrace";

/// Where the wrapper Go modules live in the repository.
pub fn wrappers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/testenv")
}

/// `<cache>/tools/bin/<name>`, built with `go install <flags…> <package>` through the Go module
/// proxy unless `current` accepts the one already there (tools for compatibility tests: the
/// real `cue`, `helm`). Panics with `go install`'s output when it cannot be built.
pub(crate) fn go_tool(
    name: &str,
    package: &str,
    flags: &[&str],
    env: &[(&str, &str)],
    current: impl Fn(&Path) -> bool,
) -> PathBuf {
    let bin_dir = cache_root().join("tools/bin");
    let tool = bin_dir.join(name);
    if current(&tool) {
        return tool;
    }
    std::fs::create_dir_all(&bin_dir).expect("tools dir");
    let output = Command::new("go")
        .arg("install")
        .args(flags)
        .arg(package)
        .env("GOBIN", &bin_dir)
        .env("GOFLAGS", "-mod=mod")
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("running go install for {name} (Go 1.26 is required): {e}"));
    assert!(
        output.status.success(),
        "go install {package} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    tool
}

/// Root of Pequod's caches outside the repository: `$PEQUOD_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/pequod`, else `~/.cache/pequod`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("PEQUOD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("pequod");
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/pequod")
}

/// The version a wrapper pins for its main requirement, read from its `go.mod`.
pub fn pinned_version(wrapper: Wrapper) -> Result<String, Error> {
    let go_mod = read(&wrappers_dir().join(wrapper.dir_name()).join("go.mod"))?;
    let module = wrapper.main_requirement();
    go_mod
        .lines()
        .map(|line| line.trim().trim_start_matches("require").trim())
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(module))
                .then(|| words.next().map(str::to_owned))
                .flatten()
        })
        .ok_or_else(|| {
            Error::Build(format!(
                "{module} is not required in the {wrapper:?} go.mod"
            ))
        })
}

/// The pinned Kubernetes version (`v1.37.2`).
pub fn kubernetes_version() -> Result<String, Error> {
    pinned_version(Wrapper::Kube)
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        context: path.display().to_string(),
        source,
    })
}

fn go_version() -> Result<String, Error> {
    let output = Command::new("go")
        .args(["env", "GOVERSION"])
        .env("GOTOOLCHAIN", "local")
        .output()
        .map_err(|e| {
            Error::Build(format!(
                "cannot run `go` (is Go installed and on PATH?): {e}"
            ))
        })?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Cache directory of one wrapper: `<cache>/testenv/<wrapper>-<version>-<hash>`.
fn wrapper_cache_dir(wrapper: Wrapper, go_version: &str) -> Result<PathBuf, Error> {
    let dir = wrappers_dir().join(wrapper.dir_name());
    let mut hasher = Sha256::new();
    for file in ["go.mod", "go.sum", "main.go"] {
        if let Ok(content) = fs::read(dir.join(file)) {
            hasher.update(file.as_bytes());
            hasher.update(&content);
        }
    }
    hasher.update(go_version.as_bytes());
    hasher.update(KUBE_TAGS.as_bytes());
    let hash = hasher.finalize();
    let short = crate::hex(&hash[..6]);
    let version = pinned_version(wrapper)?;
    Ok(cache_root()
        .join("testenv")
        .join(format!("{}-{version}-{short}", wrapper.dir_name())))
}

/// Paths of a profile's binaries, in the order of [`Component::of`].
#[derive(Clone, Debug)]
pub struct Binaries {
    paths: Vec<(Component, PathBuf)>,
}

impl Binaries {
    /// The path of one component's binary.
    pub fn path(&self, component: Component) -> Option<&Path> {
        self.paths
            .iter()
            .find(|(c, _)| *c == component)
            .map(|(_, p)| p.as_path())
    }

    /// Every component with its path.
    pub fn iter(&self) -> impl Iterator<Item = (Component, &Path)> {
        self.paths.iter().map(|(c, p)| (*c, p.as_path()))
    }
}

/// What [`ensure`] did for one component.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The component.
    pub component: Component,
    /// Its binary.
    pub path: PathBuf,
    /// Whether it was built now (false: found in the cache).
    pub built: bool,
    /// Build time when built.
    pub duration: std::time::Duration,
}

/// Locates the binaries of `profile` in the cache, without building. Fails with a message that
/// says how to build them when one is missing.
pub fn locate(profile: Profile) -> Result<Binaries, Error> {
    let go = go_version()?;
    let mut paths = Vec::new();
    for &component in Component::of(profile) {
        let path = wrapper_cache_dir(component.wrapper(), &go)?.join(component.name());
        let stages_missing = component == Component::Kwok && !kwok_stages_path(&path).is_file();
        if !path.is_file() || stages_missing {
            return Err(Error::MissingBinary {
                component: component.name(),
                path,
            });
        }
        paths.push((component, path));
    }
    Ok(Binaries { paths })
}

/// Builds whatever `profile` lacks, skipping binaries already in the cache. Concurrent callers
/// (several test binaries, `cargo xtask`) serialize on a lock file; progress goes to `log`.
pub fn ensure(profile: Profile, log: &mut dyn std::io::Write) -> Result<Vec<BuildReport>, Error> {
    let go = go_version()?;
    let lock_path = cache_root().join("testenv/.build.lock");
    create_dir(lock_path.parent().unwrap_or(Path::new(".")))?;
    let lock = fs::File::create(&lock_path).map_err(|source| Error::Io {
        context: lock_path.display().to_string(),
        source,
    })?;
    lock.lock().map_err(|source| Error::Io {
        context: lock_path.display().to_string(),
        source,
    })?;

    let mut reports = Vec::new();
    for &component in Component::of(profile) {
        let wrapper = component.wrapper();
        let out_dir = wrapper_cache_dir(wrapper, &go)?;
        let path = out_dir.join(component.name());
        if path.is_file() && (component != Component::Kwok || kwok_stages_path(&path).is_file()) {
            reports.push(BuildReport {
                component,
                path,
                built: false,
                duration: std::time::Duration::ZERO,
            });
            continue;
        }
        create_dir(&out_dir)?;
        let _ = writeln!(
            log,
            "building {} into {} ...",
            component.name(),
            out_dir.display()
        );
        let started = std::time::Instant::now();
        build_one(component, &path)?;
        let duration = started.elapsed();
        let _ = writeln!(log, "built {} in {:.0?}", component.name(), duration);
        reports.push(BuildReport {
            component,
            path,
            built: true,
            duration,
        });
    }
    drop(lock);
    Ok(reports)
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        context: dir.display().to_string(),
        source,
    })
}

fn build_one(component: Component, out: &Path) -> Result<(), Error> {
    let wrapper = component.wrapper();
    let tmp = out.with_extension("partial");
    let mut ldflags = String::from("-s -w");
    if wrapper == Wrapper::Kube {
        // Without these, `/version` reports v0.0.0 and clients that gate on it misbehave.
        let version = pinned_version(wrapper)?;
        let mut parts = version.trim_start_matches('v').split('.');
        let major = parts.next().unwrap_or("1");
        let minor = parts.next().unwrap_or("0");
        for (key, value) in [
            ("gitVersion", version.as_str()),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ] {
            for pkg in [
                "k8s.io/client-go/pkg/version",
                "k8s.io/component-base/version",
            ] {
                let _ = write!(ldflags, " -X {pkg}.{key}={value}");
            }
        }
    }
    let mut cmd = Command::new("go");
    cmd.current_dir(wrappers_dir().join(wrapper.dir_name()))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=readonly -buildvcs=false")
        .args(["build", "-trimpath", "-ldflags", &ldflags]);
    if wrapper == Wrapper::Kube {
        cmd.args(["-tags", KUBE_TAGS]);
    }
    cmd.arg("-o").arg(&tmp).arg(component.package());
    let output = cmd.output().map_err(|e| {
        Error::Build(format!(
            "cannot run `go build` for {}: {e}",
            component.name()
        ))
    })?;
    if !output.status.success() {
        return Err(Error::Build(format!(
            "`go build` of {} failed ({}):\n{}",
            component.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    if component == Component::Kwok {
        write_kwok_stages(out)?;
    }
    fs::rename(&tmp, out).map_err(|source| Error::Io {
        context: out.display().to_string(),
        source,
    })
}

/// The stages kwokctl uses by default (fast node start, lease heartbeats, pods that become
/// ready, complete and delete at once), taken from the kwok module's own source.
const KWOK_STAGES: &[&str] = &[
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
];

/// The kwok binary needs its stage configuration; it sits beside the binary.
pub fn kwok_stages_path(kwok_binary: &Path) -> PathBuf {
    kwok_binary.with_file_name("kwok-stages.yaml")
}

fn write_kwok_stages(kwok_binary: &Path) -> Result<(), Error> {
    let output = Command::new("go")
        .current_dir(wrappers_dir().join(Wrapper::Kwok.dir_name()))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=readonly")
        .args([
            "list",
            "-m",
            "-f",
            "{{.Dir}}",
            Wrapper::Kwok.main_requirement(),
        ])
        .output()
        .map_err(|e| Error::Build(format!("cannot run `go list` for kwok: {e}")))?;
    let module_dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let mut stages = String::new();
    for file in KWOK_STAGES {
        stages.push_str("---\n");
        stages.push_str(&read(&module_dir.join(file))?);
        stages.push('\n');
    }
    let path = kwok_stages_path(kwok_binary);
    fs::write(&path, stages).map_err(|source| Error::Io {
        context: path.display().to_string(),
        source,
    })
}
