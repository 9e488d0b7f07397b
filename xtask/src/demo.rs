//! `cargo xtask demo`: the whole of Pequod on this machine in one command.
//!
//! Builds the full control plane (etcd, kube-apiserver, controllers, scheduler, kubectl, kwok)
//! and the operator, starts the control plane in the background (as `testenv up --full`, with
//! its own state so both can run side by side), installs the CRDs, the namespaces and a
//! PersistentVolume for the database sample, starts the operator in the background, applies
//! every file of `config/samples/` and shows the Transforms converge: each one `Ready`, except
//! the policy-violation sample `miner`, which must stop with `Stalled`/`PolicyViolation`.
//! The OCI and Git samples render the platform module published to a local registry (with
//! `pequod publish`) and committed to a local `git daemon` ([`modules`]).
//! Everything is left running (`cargo xtask demo down` stops it) unless `--once` is given.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use pequod_api::Transform;
use pequod_api::conditions::{self, types};
use pequod_testenv::{Component, Profile, binaries};
use serde::Deserialize;

use crate::testenv::{Background, process_running, stop_background, terminate};

mod modules;

/// `cargo xtask demo [--once]`, `cargo xtask demo down`.
#[derive(Clone, Copy, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Options {
    #[command(subcommand)]
    command: Option<Command>,
    /// Tear everything down at the end; exit 0 only if the samples converged.
    #[arg(long)]
    once: bool,
}

#[derive(Clone, Copy, Subcommand)]
enum Command {
    /// Stop the operator and the control plane started by `cargo xtask demo`, remove its state.
    Down,
}

/// Where the samples go.
const NAMESPACE: &str = "pequod-demo";
/// The operator's namespace (its leader-election Lease).
const SYSTEM_NAMESPACE: &str = "pequod-system";
/// The sample the platform policy must stop.
const POLICY_SAMPLE: &str = "miner";
/// The reason of its `Stalled` condition.
const POLICY_REASON: &str = "PolicyViolation";
/// Marks the operator in its command line (a stale pid file must not stop another process).
const OPERATOR_MARKER: &str = "pequod-operator";

const CONTROL_PLANE_TIMEOUT: Duration = Duration::from_secs(600);
/// The first start precompiles the CUE guest (~12 s on two cores).
const OPERATOR_TIMEOUT: Duration = Duration::from_secs(180);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(2);

/// The demo's state, apart from `cargo xtask testenv up`'s.
struct Paths {
    dir: PathBuf,
    control_plane: PathBuf,
    operator_pid: PathBuf,
    operator_log: PathBuf,
    operator_addr: PathBuf,
    volume: PathBuf,
}

impl Paths {
    fn new() -> Self {
        let dir = binaries::cache_root().join("demo");
        Self {
            control_plane: dir.join("control-plane"),
            operator_pid: dir.join("operator.pid"),
            operator_log: dir.join("operator.log"),
            operator_addr: dir.join("operator.addr"),
            volume: dir.join("volume"),
            dir,
        }
    }

    /// The operator's pid, if it runs.
    fn operator(&self) -> Option<u32> {
        read_pid(&self.operator_pid).filter(|&pid| process_running(pid, OPERATOR_MARKER))
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    match options.command {
        Some(Command::Down) => down(),
        None => demo(root, options.once),
    }
}

fn down() -> anyhow::Result<()> {
    if stop(&Paths::new())? {
        println!("demo stopped");
    } else {
        println!("no demo started by `cargo xtask demo`");
    }
    Ok(())
}

/// Stops the operator, then the control plane, and removes the state. False when there was none.
fn stop(paths: &Paths) -> anyhow::Result<bool> {
    if !paths.dir.exists() {
        return Ok(false);
    }
    if let Some(pid) = paths.operator() {
        eprintln!("stopping the operator (pid {pid})");
        if !terminate(pid, OPERATOR_MARKER, Duration::from_secs(30)) {
            eprintln!("the operator did not stop within 30 s and was killed");
        }
    }
    if Background::running(&paths.control_plane).is_some() {
        eprintln!("stopping the control plane");
    }
    stop_background(&paths.control_plane)?;
    modules::Servers::new(&paths.dir).stop();
    std::fs::remove_dir_all(&paths.dir).with_context(|| paths.dir.display().to_string())?;
    Ok(true)
}

/// What a demo run started, for the teardown of `--once` or of a failed start.
struct Demo {
    root: PathBuf,
    paths: Paths,
    started: Instant,
    control_plane: Option<Background>,
    kubectl: Option<Kubectl>,
    operator: Option<Child>,
    http_addr: Option<SocketAddr>,
}

fn demo(root: &Path, once: bool) -> anyhow::Result<()> {
    let paths = Paths::new();
    if Background::running(&paths.control_plane).is_some() || paths.operator().is_some() {
        let kubeconfig = Background::kubeconfig(&paths.control_plane)
            .map_or_else(|| "(starting)".to_owned(), |p| p.display().to_string());
        bail!(
            "a demo is already running (KUBECONFIG={kubeconfig}); stop it first with \
             `cargo xtask demo down`"
        );
    }
    // Left over from a run that was interrupted or from before a reboot: nothing runs any more.
    stop(&paths)?;
    std::fs::create_dir_all(&paths.dir).with_context(|| paths.dir.display().to_string())?;

    let mut demo = Demo {
        root: root.to_owned(),
        paths,
        started: Instant::now(),
        control_plane: None,
        kubectl: None,
        operator: None,
        http_addr: None,
    };
    let applied = match demo.start() {
        Ok(applied) => applied,
        Err(e) => {
            eprintln!("\nthe demo did not start; stopping what it started");
            demo.teardown();
            return Err(e);
        }
    };
    let outcome = demo.converge(applied);
    if once {
        eprintln!("\n==> teardown (--once)");
        let teardown = Instant::now();
        if outcome.is_err() {
            demo.keep_operator_log();
        }
        demo.teardown();
        eprintln!("<== teardown ({:.1?})", teardown.elapsed());
        outcome?;
        println!(
            "demo passed in {:.1?} (including build, start-up and teardown)",
            demo.started.elapsed()
        );
        return Ok(());
    }
    match outcome {
        Ok(()) => {
            demo.instructions();
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "\nthe demo is left running for inspection (operator log: {}); \
                 `cargo xtask demo down` stops it",
                demo.paths.operator_log.display()
            );
            Err(e)
        }
    }
}

impl Demo {
    /// Fails with the last `log_lines` of the operator's log if its process has exited.
    fn ensure_operator_running(&mut self, log_lines: usize) -> anyhow::Result<()> {
        if let Some(child) = self.operator.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            bail!(
                "the operator exited ({status}); {}:\n{}",
                self.paths.operator_log.display(),
                log_tail(&self.paths.operator_log, log_lines)
            );
        }
        Ok(())
    }

    fn kubectl(&self) -> anyhow::Result<&Kubectl> {
        self.kubectl.as_ref().context("the control plane is not up")
    }

    /// Everything up to the applied samples; returns when they were applied.
    fn start(&mut self) -> anyhow::Result<Instant> {
        step("control plane binaries (testenv build --full)", || {
            binaries::ensure(Profile::Full, &mut std::io::stderr())?;
            Ok(())
        })?;
        let kubectl = binaries::locate(Profile::Full)?
            .path(Component::Kubectl)
            .context("kubectl is not part of the full profile")?
            .to_owned();

        // The control plane starts while the operator builds.
        self.control_plane = Some(Background::spawn(Profile::Full, &self.paths.control_plane)?);
        let binaries = step("cargo build -p pequod-operator -p pequod-cli", || {
            build_binaries(&self.root)
        })?;
        let kubeconfig = step("control plane (testenv up --full)", || {
            let control_plane = self.control_plane.as_mut().context("not started")?;
            control_plane.wait_ready(CONTROL_PLANE_TIMEOUT)
        })?;
        self.kubectl = Some(Kubectl {
            path: kubectl,
            kubeconfig,
        });

        step("CRDs, namespaces and a PersistentVolume", || {
            let kubectl = self.kubectl()?;
            let crds = self.root.join("config/crd");
            let crds = crds.to_str().context("a non-UTF-8 repository path")?;
            print_indented(&kubectl.run(&["apply", "-f", crds])?);
            kubectl.run(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                crds,
            ])?;
            std::fs::create_dir_all(&self.paths.volume)?;
            let manifest = cluster_manifest(&self.paths.volume)?;
            print_indented(&kubectl.run_with_input(&["apply", "-f", "-"], &manifest)?);
            Ok(())
        })?;

        let servers = modules::Servers::new(&self.paths.dir);
        let with_registry = modules::Servers::registry_available();
        step("module registry (pequod publish cue/)", || {
            if with_registry {
                servers.start_registry(&self.root, &binaries.pequod)
            } else {
                eprintln!(
                    "    docker-registry is not installed (apt-get install docker-registry): \
                     the OCI sample is left out"
                );
                Ok(())
            }
        })?;
        step("module Git repository (git daemon)", || {
            servers.start_git(&self.root)
        })?;

        step("operator", || self.start_operator(&binaries.operator))?;

        let applied = Instant::now();
        step("samples (config/samples/)", || {
            let kubectl = self.kubectl()?;
            for sample in samples(&self.root)? {
                if !with_registry && sample.to_string_lossy().ends_with("-oci.yaml") {
                    continue;
                }
                let path = sample.to_str().context("a non-UTF-8 sample path")?;
                print_indented(&kubectl.run(&["apply", "-n", NAMESPACE, "-f", path])?);
            }
            Ok(())
        })?;
        Ok(applied)
    }

    fn start_operator(&mut self, binary: &Path) -> anyhow::Result<()> {
        let kubeconfig = self.kubectl()?.kubeconfig.clone();
        let port = pequod_testenv::process::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(&self.paths.operator_log)
            .with_context(|| self.paths.operator_log.display().to_string())?;
        // Its own session: it outlives this command and a Ctrl-C in the terminal.
        let child = Process::new("setsid")
            .arg(binary)
            .args([
                "--cluster-scoped-kinds=Namespace",
                "--log-format=text",
                "--http-addr",
            ])
            .arg(addr.to_string())
            .arg(format!("--insecure-registries={}", modules::REGISTRY))
            .arg(format!("--cue-registry={}", modules::REGISTRY))
            // The demo's registry and git daemon serve the modules on 127.0.0.1.
            .arg("--allow-local-sources")
            .env("KUBECONFIG", &kubeconfig)
            // A log file, not a terminal: no colour codes in it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the operator (needs `setsid` from util-linux)")?;
        std::fs::write(&self.paths.operator_pid, child.id().to_string())?;
        std::fs::write(&self.paths.operator_addr, addr.to_string())?;
        let pid = child.id();
        self.operator = Some(child);
        self.http_addr = Some(addr);
        eprintln!(
            "pid {pid}, http://{addr}, log {}",
            self.paths.operator_log.display()
        );

        let started = Instant::now();
        loop {
            if http_status(addr, "/readyz") == Some(200) {
                return Ok(());
            }
            self.ensure_operator_running(30)?;
            if started.elapsed() > OPERATOR_TIMEOUT {
                bail!(
                    "the operator was not ready within {OPERATOR_TIMEOUT:?}; {}:\n{}",
                    self.paths.operator_log.display(),
                    log_tail(&self.paths.operator_log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Shows `kubectl get tf` until every Transform converged, or fails after the timeout.
    fn converge(&mut self, applied: Instant) -> anyhow::Result<()> {
        eprintln!("\n==> waiting for the Transforms to converge");
        let tty = std::io::stdout().is_terminal();
        let mut last_shown = None;
        loop {
            let transforms = self.transforms();
            let table = self
                .kubectl()?
                .run(&["get", "tf", "-n", NAMESPACE])
                .unwrap_or_else(|e| format!("{e:#}\n"));
            let elapsed = applied.elapsed().as_secs();
            let converged = transforms.as_ref().is_ok_and(|t| converged(t));
            // A terminal is redrawn like `watch`; a log gets each change once.
            let summary = transforms.as_ref().map(|t| summary(t)).ok();
            if tty {
                print!("\x1b[H\x1b[2J");
                println!("Transforms in {NAMESPACE}, {elapsed} s after apply:\n");
                print!("{table}");
            } else if converged || summary.is_none() || summary != last_shown {
                println!("[{elapsed:>3} s] kubectl get tf -n {NAMESPACE}");
                print!("{table}");
            }
            let _ = std::io::stdout().flush();
            last_shown = summary;

            if let Ok(transforms) = &transforms
                && converged
            {
                println!(
                    "\nall {} Transforms converged {:.1?} after apply ({POLICY_SAMPLE} stopped \
                     by the policy, as intended); {:.1?} since `cargo xtask demo` started",
                    transforms.len(),
                    applied.elapsed(),
                    self.started.elapsed()
                );
                show_results(transforms);
                return Ok(());
            }
            self.ensure_operator_running(40)?;
            if applied.elapsed() > CONVERGE_TIMEOUT {
                let pending = match &transforms {
                    Ok(transforms) => pending(transforms),
                    Err(e) => format!("  (cannot list Transforms: {e:#})"),
                };
                bail!(
                    "the Transforms did not converge within {CONVERGE_TIMEOUT:?}:\n{pending}\n\n\
                     operator log, last lines:\n{}",
                    log_tail(&self.paths.operator_log, 40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn transforms(&self) -> anyhow::Result<Vec<Transform>> {
        #[derive(Deserialize)]
        struct List {
            items: Vec<Transform>,
        }
        let json = self
            .kubectl()?
            .run(&["get", "tf", "-n", NAMESPACE, "-o", "json"])?;
        let list: List = serde_json::from_str(&json).context("parsing `kubectl get tf -o json`")?;
        Ok(list.items)
    }

    fn instructions(&self) {
        let kubeconfig = self
            .kubectl
            .as_ref()
            .map_or_else(String::new, |k| k.kubeconfig.display().to_string());
        let kubectl = self
            .kubectl
            .as_ref()
            .map_or_else(String::new, |k| k.path.display().to_string());
        let metrics = self
            .http_addr
            .map_or_else(String::new, |addr| format!("http://{addr}/metrics"));
        println!(
            "\nThe control plane and the operator keep running in the background. Try:\n\
             \n  export KUBECONFIG={kubeconfig}\
             \n  alias kubectl={kubectl}\
             \n  kubectl get tf -n {NAMESPACE}\
             \n  kubectl get tf team-a-dev -n {NAMESPACE} -o jsonpath='{{.status.outputs.url}}'\
             \n  kubectl describe tf {POLICY_SAMPLE} -n {NAMESPACE}    # the policy violations\
             \n  kubectl get tf shop blog -n {NAMESPACE} -o wide   # from the OCI registry and Git\
             \n\noperator log:  {}\
             \nmetrics:       {metrics}\
             \nstop it with:  cargo xtask demo down",
            self.paths.operator_log.display()
        );
    }

    /// Copies the operator log out of the state that teardown removes.
    fn keep_operator_log(&self) {
        let kept =
            std::env::temp_dir().join(format!("pequod-demo-operator-{}.log", std::process::id()));
        match std::fs::copy(&self.paths.operator_log, &kept) {
            Ok(_) => eprintln!("the operator log is kept in {}", kept.display()),
            Err(e) => eprintln!("keeping the operator log: {e}"),
        }
    }

    /// Stops what this run started (operator first: it releases its Lease through the API
    /// server) and removes the state. Reports, never fails: it runs on error paths too.
    fn teardown(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let pid = child.id();
            eprintln!("stopping the operator (pid {pid})");
            if !terminate(pid, OPERATOR_MARKER, Duration::from_secs(30)) {
                eprintln!("the operator did not stop within 30 s and was killed");
            }
            match child.wait() {
                Ok(status) if status.success() => eprintln!("the operator exited cleanly"),
                Ok(status) => eprintln!("the operator exited with {status}"),
                Err(e) => eprintln!("waiting for the operator: {e}"),
            }
        }
        // `stop` finds the control plane through its state, like `cargo xtask demo down`.
        self.control_plane = None;
        if let Err(e) = stop(&self.paths) {
            eprintln!("removing the demo state: {e:#}");
        }
    }
}

/// Runs one step between `==>`/`<==` lines with its duration, like `cargo xtask test`.
fn step<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("\n==> {name}");
    let started = Instant::now();
    let result = f();
    let outcome = if result.is_ok() { "" } else { ", failed" };
    eprintln!("<== {name} ({:.1?}{outcome})", started.elapsed());
    result
}

fn print_indented(text: &str) {
    for line in text.lines() {
        eprintln!("    {line}");
    }
}

/// The demo's programs.
struct Binaries {
    operator: PathBuf,
    pequod: PathBuf,
}

/// `cargo build -p pequod-operator -p pequod-cli` in the workspace's target directory.
fn build_binaries(root: &Path) -> anyhow::Result<Binaries> {
    #[derive(Deserialize)]
    struct Message {
        reason: String,
        #[serde(default)]
        executable: Option<PathBuf>,
    }
    // JSON on stdout names the binaries wherever the target directory is (CARGO_TARGET_DIR,
    // config); diagnostics and progress still go to the terminal.
    let mut build = crate::nested_cargo();
    let output = build
        .current_dir(root)
        .args([
            "build",
            "-p",
            "pequod-operator",
            "-p",
            "pequod-cli",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build -p pequod-operator -p pequod-cli")?;
    if !output.status.success() {
        bail!(
            "`cargo build -p pequod-operator -p pequod-cli` failed ({})",
            output.status
        );
    }
    let executables: Vec<PathBuf> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Message>(line).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter_map(|m| m.executable)
        .collect();
    let find = |name: &str| {
        executables
            .iter()
            .find(|path| path.file_name().is_some_and(|n| n == name))
            .cloned()
            .with_context(|| format!("cargo did not report the {name} binary"))
    };
    Ok(Binaries {
        operator: find("pequod-operator")?,
        pequod: find("pequod")?,
    })
}

/// The namespaces and a volume for the database sample's claim: the demo cluster has no storage
/// provisioner, and a claim without a storage class binds a volume without one.
fn cluster_manifest(volume: &Path) -> anyhow::Result<String> {
    let path = serde_json::to_string(volume.to_str().context("a non-UTF-8 cache path")?)?;
    Ok(format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: {SYSTEM_NAMESPACE}
---
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pequod-demo-volume
spec:
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  hostPath:
    path: {path}
    type: DirectoryOrCreate
"
    ))
}

/// Every file of `config/samples/`, by name.
fn samples(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = root.join("config/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no samples in {}", dir.display());
    }
    Ok(files)
}

/// A condition of a Transform, as `(status, reason, message)`.
fn condition<'a>(
    transform: &'a Transform,
    condition_type: &str,
) -> Option<(&'a str, &'a str, &'a str)> {
    let status = transform.status.as_ref()?;
    conditions::find(&status.conditions, condition_type)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

fn name(transform: &Transform) -> &str {
    transform.metadata.name.as_deref().unwrap_or_default()
}

/// Whether one Transform reached what the demo expects of it.
fn settled(transform: &Transform) -> bool {
    if name(transform) == POLICY_SAMPLE {
        condition(transform, types::STALLED)
            .is_some_and(|(status, reason, _)| status == "True" && reason == POLICY_REASON)
    } else {
        condition(transform, types::READY).is_some_and(|(status, _, _)| status == "True")
    }
}

fn converged(transforms: &[Transform]) -> bool {
    !transforms.is_empty() && transforms.iter().all(settled)
}

/// What changes the table in a way worth printing again (not the ages).
fn summary(transforms: &[Transform]) -> Vec<String> {
    transforms
        .iter()
        .map(|t| {
            let status = t.status.as_ref();
            let conditions = status.map_or_else(String::new, |s| {
                s.conditions
                    .iter()
                    .map(|c| format!("{}={}/{}/{}", c.type_, c.status, c.reason, c.message))
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let nodes = status.and_then(|s| s.ready_nodes.clone());
            format!("{} {conditions} {nodes:?}", name(t))
        })
        .collect()
}

/// The Transforms not yet where the demo expects them, with their conditions' messages.
fn pending(transforms: &[Transform]) -> String {
    let lines: Vec<String> = transforms
        .iter()
        .filter(|t| !settled(t))
        .map(|t| {
            let describe = |condition_type: &str| {
                condition(t, condition_type).map_or_else(
                    || format!("{condition_type} not set"),
                    |(status, reason, message)| {
                        format!("{condition_type}={status} ({reason}): {message}")
                    },
                )
            };
            let expected = if name(t) == POLICY_SAMPLE {
                format!("expected Stalled=True ({POLICY_REASON})")
            } else {
                "expected Ready=True".to_owned()
            };
            format!(
                "  {}: {}; {} [{expected}]",
                name(t),
                describe(types::READY),
                describe(types::STALLED)
            )
        })
        .collect();
    if transforms.is_empty() {
        format!("  no Transforms in {NAMESPACE}")
    } else {
        lines.join("\n")
    }
}

/// The outputs of the converged samples and the violations that stopped `miner`.
fn show_results(transforms: &[Transform]) {
    for transform in transforms {
        let Some(status) = &transform.status else {
            continue;
        };
        if let Some(outputs) = status.outputs.as_ref().and_then(|o| o.as_object())
            && !outputs.is_empty()
        {
            let outputs: Vec<String> = outputs
                .iter()
                .map(|(key, value)| match value.as_str() {
                    Some(text) => format!("{key}={text}"),
                    None => format!("{key}={value}"),
                })
                .collect();
            println!("  {:<12} outputs: {}", name(transform), outputs.join(", "));
        }
        for violation in &status.violations {
            println!(
                "  {:<12} {:?} at {}: {}",
                name(transform),
                violation.severity,
                violation.path,
                violation.message
            );
        }
    }
}

/// The kubectl of the control plane with its admin kubeconfig.
struct Kubectl {
    path: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_with_input(args, "")
    }

    fn run_with_input(&self, args: &[&str], input: &str) -> anyhow::Result<String> {
        let mut child = Process::new(&self.path)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.path.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "`kubectl {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// The status code of a plain HTTP/1.0 GET, or None when nothing answers.
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.take(4096).read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let status_line = response.lines().next()?;
    let mut words = status_line.split_whitespace();
    words
        .next()
        .filter(|version| version.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// The last `lines` lines of a log.
fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
