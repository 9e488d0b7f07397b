//! The demo's module servers: a platform team publishes the shipped platform module (`cue/`)
//! to an OCI registry with `pequod publish` and to a Git repository, so the OCI and Git
//! samples (`config/samples/*-oci.yaml`, `*-git.yaml`) render from remote modules.
//!
//! Both listen on fixed loopback ports, because the samples name them: Debian's
//! `docker-registry` on [`REGISTRY`] and `git daemon` on [`GIT_PORT`]. Both run in their own
//! session so they outlive this command, like the operator; `demo down` stops them.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::testenv::{process_running, terminate};

/// The registry the OCI sample names (and the operator's `--cue-registry`).
pub const REGISTRY: &str = "127.0.0.1:5001";
/// The `git daemon` port the Git sample names.
pub const GIT_PORT: u16 = 9419;
/// Where Debian installs the registry.
const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
/// The repository of the platform module in the registry (CUE's rule: the module path).
const REPOSITORY: &str = "pequod.dev/platform";
/// The version published.
const VERSION: &str = "v0.1.0";

/// The servers' state inside the demo's directory.
pub struct Servers {
    dir: PathBuf,
}

impl Servers {
    pub fn new(demo_dir: &Path) -> Self {
        Self {
            dir: demo_dir.join("modules"),
        }
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pid"))
    }

    /// Whether the registry can run here (the OCI sample is skipped without it).
    pub fn registry_available() -> bool {
        Path::new(REGISTRY_BINARY).is_file()
    }

    /// Starts the registry and publishes the platform module to it with `pequod publish`.
    pub fn start_registry(&self, root: &Path, pequod: &Path) -> anyhow::Result<()> {
        let storage = self.dir.join("registry");
        std::fs::create_dir_all(&storage)?;
        let config = self.dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {REGISTRY}\n",
                serde_json::to_string(&storage.display().to_string())?
            ),
        )?;
        self.spawn(
            "registry",
            REGISTRY_BINARY,
            &["serve", &config.display().to_string()],
        )?;
        wait_listening(REGISTRY)?;
        let reference = format!("{REGISTRY}/{REPOSITORY}:{VERSION}");
        let output = Process::new(pequod)
            .args([
                "publish",
                &root.join("cue").display().to_string(),
                &reference,
            ])
            .output()
            .context("running pequod publish")?;
        if !output.status.success() {
            bail!(
                "pequod publish {reference}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        eprint!("    {}", String::from_utf8_lossy(&output.stdout));
        Ok(())
    }

    /// Commits the platform module to a repository and serves it with `git daemon`.
    pub fn start_git(&self, root: &Path) -> anyhow::Result<()> {
        let repo = self.dir.join("git/platform");
        copy_tree(&root.join("cue"), &repo)?;
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &[
                "-c",
                "user.name=Platform team",
                "-c",
                "user.email=platform@example.com",
                "commit",
                "-q",
                "-m",
                "platform module",
            ],
        ] {
            let status = Process::new("git")
                .args(args)
                .current_dir(&repo)
                .stdout(Stdio::null())
                .status()
                .context("running git")?;
            if !status.success() {
                bail!("git {} failed ({status})", args.join(" "));
            }
        }
        let base = self.dir.join("git");
        self.spawn(
            "git-daemon",
            "git",
            &[
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={GIT_PORT}"),
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ],
        )?;
        wait_listening(&format!("127.0.0.1:{GIT_PORT}"))
    }

    fn spawn(&self, name: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        if let Some(addr) = args
            .iter()
            .find_map(|a| a.strip_prefix("--port="))
            .map(|port| format!("127.0.0.1:{port}"))
            .or_else(|| (name == "registry").then(|| REGISTRY.to_owned()))
            && std::net::TcpStream::connect(&addr).is_ok()
        {
            bail!("{addr} is taken by another program; the demo's samples need it for the {name}");
        }
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        // Its own session: it outlives this command and a Ctrl-C in the terminal.
        let child = Process::new("setsid")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {program} (needs `setsid` from util-linux)"))?;
        std::fs::write(self.pid_file(name), child.id().to_string())?;
        Ok(())
    }

    /// Stops both servers if they run.
    pub fn stop(&self) {
        for (name, marker) in [("registry", "docker-registry"), ("git-daemon", "daemon")] {
            let pid = std::fs::read_to_string(self.pid_file(name))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            if let Some(pid) = pid.filter(|&pid| process_running(pid, marker)) {
                eprintln!("stopping the {name} (pid {pid})");
                terminate(pid, marker, Duration::from_secs(10));
            }
        }
    }
}

/// Waits until something accepts connections on `addr`; the ports are fixed, so a clash
/// with another program is named.
fn wait_listening(addr: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("nothing listens on {addr} after 30 s (is the port taken by another program?)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| entry.path().display().to_string())?;
        }
    }
    Ok(())
}
