//! `cargo xtask testenv`: build the test control plane, or run one in the background.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use pequod_testenv::{Profile, TestEnv, binaries};

#[derive(Clone, Copy, Subcommand)]
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
        Command::Serve { full } => serve(profile(full)),
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

fn state_dir() -> PathBuf {
    binaries::cache_root().join("testenv-up")
}

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid.trim()).exists()
}

fn up(profile: Profile) -> anyhow::Result<()> {
    let dir = state_dir();
    let pid_file = dir.join("pid");
    let ready_file = dir.join("kubeconfig-path");
    if let Ok(pid) = std::fs::read_to_string(&pid_file)
        && pid_alive(&pid)
    {
        let kubeconfig = std::fs::read_to_string(&ready_file).unwrap_or_default();
        println!(
            "already running (pid {}): export KUBECONFIG={}",
            pid.trim(),
            kubeconfig.trim()
        );
        return Ok(());
    }
    // Build in the foreground so progress is visible.
    binaries::ensure(profile, &mut std::io::stderr())?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let log_path = dir.join("serve.log");
    let log = std::fs::File::create(&log_path)?;
    let mut serve = Process::new("setsid");
    serve
        .arg(std::env::current_exe()?)
        .args(["testenv", "serve"]);
    if profile == Profile::Full {
        serve.arg("--full");
    }
    let child = serve
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the background control plane (needs `setsid` from util-linux)")?;
    std::fs::write(&pid_file, child.id().to_string())?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        if let Ok(path) = std::fs::read_to_string(&ready_file) {
            println!(
                "control plane ({profile:?}) is up in {:.1?}",
                started.elapsed()
            );
            println!("export KUBECONFIG={}", path.trim());
            if let Ok(binaries) = binaries::locate(profile)
                && let Some(kubectl) = binaries.path(pequod_testenv::Component::Kubectl)
            {
                println!("alias kubectl={}", kubectl.display());
            }
            println!("stop it with: cargo xtask testenv down");
            return Ok(());
        }
        if !pid_alive(&child.id().to_string()) {
            bail!(
                "the control plane did not start; {}:\n{}",
                log_path.display(),
                pequod_testenv::process::tail(&log_path, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "the control plane did not report ready within 10 minutes; see {}",
        log_path.display()
    )
}

fn down() -> anyhow::Result<()> {
    let dir = state_dir();
    let Ok(pid) = std::fs::read_to_string(dir.join("pid")) else {
        println!("no control plane started by `cargo xtask testenv up`");
        return Ok(());
    };
    let pid = pid.trim().to_owned();
    if pid_alive(&pid) {
        let _ = Process::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while pid_alive(&pid) && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
        }
        if pid_alive(&pid) {
            let _ = Process::new("kill").args(["-KILL", &pid]).status();
        }
    }
    std::fs::remove_dir_all(&dir).with_context(|| dir.display().to_string())?;
    println!("control plane stopped");
    Ok(())
}

fn serve(profile: Profile) -> anyhow::Result<()> {
    let env = TestEnv::start(profile)?;
    let kubeconfig = env.kubeconfig().display().to_string();
    eprintln!(
        "control plane ({profile:?}) ready in {:.1?}: {kubeconfig}",
        env.startup_time()
    );
    std::fs::write(state_dir().join("kubeconfig-path"), &kubeconfig)?;
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
