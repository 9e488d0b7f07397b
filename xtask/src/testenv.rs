//! `cargo xtask testenv`: build the test control plane, or run one in the background.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use pequod_testenv::{Profile, TestEnv, binaries};

#[derive(Clone, Subcommand)]
pub enum Command {
    /// Build etcd and kube-apiserver (and with --full the controllers and kwok) into the cache.
    Build {
        /// Also build kube-controller-manager, kube-scheduler and kwok.
        #[arg(long)]
        full: bool,
    },
    /// Start a control plane in the background and print its kubeconfig path.
    Up {
        /// Run controllers, scheduler and a kwok fake node too.
        #[arg(long)]
        full: bool,
    },
    /// Stop the control plane started by `up`.
    Down,
    /// Run a control plane in the foreground until SIGTERM (what `up` starts).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        full: bool,
        /// Where to write `kubeconfig-path` once ready (default: the state of `up`).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

fn profile(full: bool) -> Profile {
    if full {
        Profile::Full
    } else {
        Profile::Minimal
    }
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Build { full } => build(profile(full)),
        Command::Up { full } => up(profile(full)),
        Command::Down => down(),
        Command::Serve {
            full,
            state_dir: dir,
        } => serve(profile(full), &dir.unwrap_or_else(state_dir)),
    }
}

fn build(profile: Profile) -> anyhow::Result<()> {
    let started = Instant::now();
    let reports = binaries::ensure(profile, &mut std::io::stderr())?;
    for report in &reports {
        let size = std::fs::metadata(&report.path).map_or(0, |m| m.len());
        let state = if report.built {
            format!("built in {:.1?}", report.duration)
        } else {
            "cached".to_owned()
        };
        eprintln!(
            "{:<24} {:>4} MiB  {state:<18} {}",
            report.component.name(),
            size / 1_048_576,
            report.path.display()
        );
    }
    eprintln!(
        "testenv build ({profile:?}) done in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// Where `up` keeps the state of its control plane.
fn state_dir() -> PathBuf {
    binaries::cache_root().join("testenv-up")
}

/// Marks our background control plane in its command line (`xtask testenv serve …`).
const SERVE_MARKER: &str = "testenv";

/// Whether process `pid` runs and its command line contains `marker`: a pid file left behind
/// by a reboot may name an unrelated process by now, and a zombie has an empty command line.
pub fn process_running(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .windows(marker.len())
            .any(|window| window == marker.as_bytes())
    })
}

/// Sends SIGTERM to `pid` (when it is still the process named by `marker`), waits up to
/// `grace` for it to end, then sends SIGKILL. Returns whether it ended within `grace`.
pub fn terminate(pid: u32, marker: &str, grace: Duration) -> bool {
    if !process_running(pid, marker) {
        return true;
    }
    let pid_arg = pid.to_string();
    let _ = Process::new("kill").args(["-TERM", &pid_arg]).status();
    let started = Instant::now();
    while process_running(pid, marker) && started.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(200));
    }
    if process_running(pid, marker) {
        let _ = Process::new("kill").args(["-KILL", &pid_arg]).status();
        return false;
    }
    true
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A control plane run by `xtask testenv serve` in its own session, detached from the terminal,
/// its pid, log and kubeconfig path kept in a state directory so that another invocation can
/// find and stop it.
pub struct Background {
    dir: PathBuf,
    child: std::process::Child,
}

impl Background {
    /// The pid of the background control plane whose state is in `dir`, if it runs.
    pub fn running(dir: &Path) -> Option<u32> {
        read_pid(&dir.join("pid")).filter(|&pid| process_running(pid, SERVE_MARKER))
    }

    /// The kubeconfig of the control plane whose state is in `dir`, once it is ready.
    pub fn kubeconfig(dir: &Path) -> Option<PathBuf> {
        let path = std::fs::read_to_string(dir.join("kubeconfig-path")).ok()?;
        let path = path.trim();
        (!path.is_empty()).then(|| PathBuf::from(path))
    }

    /// Starts a control plane in the background with its state in `dir` (emptied first), from
    /// binaries already built. Does not wait: see [`Background::wait_ready`].
    pub fn spawn(profile: Profile, dir: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let mut serve = Process::new("setsid");
        serve
            .arg(std::env::current_exe()?)
            .args(["testenv", "serve", "--state-dir"])
            .arg(dir);
        if profile == Profile::Full {
            serve.arg("--full");
        }
        let child = serve
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the background control plane (needs `setsid` from util-linux)")?;
        std::fs::write(dir.join("pid"), child.id().to_string())?;
        Ok(Self {
            dir: dir.to_owned(),
            child,
        })
    }

    /// Waits until the control plane is ready and returns its kubeconfig path.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<PathBuf> {
        let log_path = self.dir.join("serve.log");
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(kubeconfig) = Self::kubeconfig(&self.dir) {
                return Ok(kubeconfig);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "the control plane did not start ({status}); {}:\n{}",
                    log_path.display(),
                    pequod_testenv::process::tail(&log_path, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "the control plane did not report ready within {timeout:?}; see {}",
            log_path.display()
        )
    }
}

/// Stops the background control plane whose state is in `dir` and removes `dir`. Returns false
/// when there was no state.
pub fn stop_background(dir: &Path) -> anyhow::Result<bool> {
    if !dir.join("pid").exists() {
        return Ok(false);
    }
    if let Some(pid) = read_pid(&dir.join("pid")) {
        terminate(pid, SERVE_MARKER, Duration::from_secs(60));
    }
    std::fs::remove_dir_all(dir).with_context(|| dir.display().to_string())?;
    Ok(true)
}

fn up(profile: Profile) -> anyhow::Result<()> {
    let dir = state_dir();
    if let Some(pid) = Background::running(&dir) {
        let kubeconfig = Background::kubeconfig(&dir).unwrap_or_default();
        println!(
            "already running (pid {pid}): export KUBECONFIG={}",
            kubeconfig.display()
        );
        return Ok(());
    }
    // Build in the foreground so progress is visible.
    binaries::ensure(profile, &mut std::io::stderr())?;
    let started = Instant::now();
    let mut background = Background::spawn(profile, &dir)?;
    let kubeconfig = background.wait_ready(Duration::from_secs(600))?;
    println!(
        "control plane ({profile:?}) is up in {:.1?}",
        started.elapsed()
    );
    println!("export KUBECONFIG={}", kubeconfig.display());
    if let Ok(binaries) = binaries::locate(profile)
        && let Some(kubectl) = binaries.path(pequod_testenv::Component::Kubectl)
    {
        println!("alias kubectl={}", kubectl.display());
    }
    println!("stop it with: cargo xtask testenv down");
    Ok(())
}

fn down() -> anyhow::Result<()> {
    if stop_background(&state_dir())? {
        println!("control plane stopped");
    } else {
        println!("no control plane started by `cargo xtask testenv up`");
    }
    Ok(())
}

fn serve(profile: Profile, state_dir: &Path) -> anyhow::Result<()> {
    let env = TestEnv::start(profile)?;
    let kubeconfig = env.kubeconfig().display().to_string();
    eprintln!(
        "control plane ({profile:?}) ready in {:.1?}: {kubeconfig}",
        env.startup_time()
    );
    // Written whole, then renamed: `up` polls for this file.
    let ready = state_dir.join("kubeconfig-path");
    std::fs::write(ready.with_extension("tmp"), &kubeconfig)?;
    std::fs::rename(ready.with_extension("tmp"), ready)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    eprintln!("stopping the control plane");
    drop(env);
    Ok(())
}
