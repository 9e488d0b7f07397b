//! The test harness every Pequod integration and e2e test stands on: a real Kubernetes control
//! plane (etcd + kube-apiserver, and in the [`Profile::Full`] profile kube-controller-manager,
//! kube-scheduler and kwok fake nodes) built from the official Go modules, started on free
//! 127.0.0.1 ports with generated certificates and a token user in `system:masters`.
//!
//! ```no_run
//! # async fn demo() {
//! let env = pequod_testenv::shared(pequod_testenv::Profile::Minimal);
//! let client = env.client();
//! let ns = env.create_namespace(&client, "my-test").await;
//! # }
//! ```
//!
//! One control plane per test binary ([`shared`]); each test works in its own namespace. Every
//! component is tied to the life of the test process (see [`process`]), so nothing outlives
//! it, even when a static is never dropped or the process is killed.

pub mod binaries;
mod certs;
pub mod cue_cli;
pub mod git;
pub mod helm;
pub mod process;
pub mod registry;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use binaries::{Binaries, BuildReport, Component};
use process::{Janitor, Supervised, free_port};

/// Which control plane to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// etcd + kube-apiserver: CRDs, validation, SSA, RBAC, watches. Starts in seconds.
    Minimal,
    /// Minimal plus kube-controller-manager, kube-scheduler and a kwok fake node: Deployments
    /// roll out to Available, garbage collection runs, namespaces really delete.
    Full,
}

/// Errors starting or building the control plane. Each names the component at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary is not in the cache.
    #[error("{component} is not built ({path} is missing); run `cargo xtask testenv build --full`")]
    MissingBinary {
        /// The component.
        component: &'static str,
        /// Where it was expected.
        path: PathBuf,
    },
    /// `go build` failed or could not run.
    #[error("building the test control plane failed: {0}")]
    Build(String),
    /// Certificate generation failed.
    #[error("generating test certificates failed: {0}")]
    Certs(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A component exited while starting.
    #[error("{component} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        /// The component.
        component: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A component did not become ready in time.
    #[error("{component} was not ready after {waited:?} ({what}); last lines of {log}:\n{tail}")]
    NotReady {
        /// The component.
        component: String,
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The generated kubeconfig could not be loaded.
    #[error("cannot build a client from {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// How long each component may take to become ready on two slow cores.
const ETCD_TIMEOUT: Duration = Duration::from_secs(90);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(240);
const CONTROLLERS_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(200);

/// Name of the fake node in the full profile.
pub const FAKE_NODE: &str = "kwok-node-0";

/// A running control plane. Dropping it stops every component and removes its files.
#[derive(Debug)]
pub struct TestEnv {
    profile: Profile,
    config: kube::Config,
    kubeconfig: PathBuf,
    dir: PathBuf,
    startup: Duration,
    binaries: Binaries,
    // Stopped in reverse start order by `Drop`; the janitor goes last.
    components: Vec<Supervised>,
    janitor: Option<Janitor>,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        while let Some(mut component) = self.components.pop() {
            component.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        drop(self.janitor.take());
    }
}

/// The control plane shared by every test of this test binary, started on first use (and the
/// binaries built first if the cache lacks them). Panics with the start-up error: a test cannot
/// run without it.
pub fn shared(profile: Profile) -> &'static TestEnv {
    static MINIMAL: OnceLock<TestEnv> = OnceLock::new();
    static FULL: OnceLock<TestEnv> = OnceLock::new();
    let cell = match profile {
        Profile::Minimal => &MINIMAL,
        Profile::Full => &FULL,
    };
    cell.get_or_init(|| match TestEnv::start(profile) {
        Ok(env) => env,
        Err(e) => panic!("the test control plane ({profile:?}) did not start: {e}"),
    })
}

impl TestEnv {
    /// Starts a control plane, building missing binaries first unless
    /// `PEQUOD_TESTENV_NO_BUILD` is set. Blocking; callable from inside or outside a runtime.
    pub fn start(profile: Profile) -> Result<TestEnv, Error> {
        let binaries = match binaries::locate(profile) {
            Ok(found) => found,
            Err(Error::MissingBinary { .. })
                if std::env::var_os("PEQUOD_TESTENV_NO_BUILD").is_none() =>
            {
                eprintln!(
                    "pequod-testenv: building the {profile:?} control plane (once per machine)"
                );
                binaries::ensure(profile, &mut std::io::stderr())?;
                binaries::locate(profile)?
            }
            Err(e) => return Err(e),
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|source| Error::Io {
                            context: "starting a tokio runtime".into(),
                            source,
                        })?;
                    // A free port can be taken between our probe and the component's bind:
                    // such a race shows as an early exit, so try again with new ports.
                    let mut attempt = 1;
                    loop {
                        match runtime.block_on(start_with(profile, &binaries)) {
                            Err(Error::Exited { tail, .. })
                                if attempt < 3 && tail.contains("address already in use") =>
                            {
                                attempt += 1;
                            }
                            other => return other,
                        }
                    }
                })
                .join()
                .unwrap_or_else(|_| Err(Error::Build("the start-up thread panicked".into())))
        })
    }

    /// The profile this control plane runs.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Path of an admin kubeconfig (user in `system:masters`), for `kubectl` and child processes.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Working directory holding certificates, data and component logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long start-up took (not counting builds).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The kubectl built with the control plane.
    pub fn kubectl(&self) -> Option<&Path> {
        self.binaries.path(Component::Kubectl)
    }

    /// Client configuration for the admin user.
    pub fn config(&self) -> kube::Config {
        self.config.clone()
    }

    /// A new admin client bound to the calling tokio runtime (each `#[tokio::test]` has its own).
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config.clone()).expect("a client from the test kubeconfig")
    }

    /// Creates a namespace with a unique name starting with `prefix` and returns the name.
    pub async fn create_namespace(&self, client: &kube::Client, prefix: &str) -> String {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// The start of most integration tests: a client, `crds` installed (and Established), and
    /// a fresh namespace named after `prefix`.
    pub async fn prepare(
        &self,
        crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
        prefix: &str,
    ) -> (kube::Client, String) {
        let client = self.client();
        install_crds(&client, crds)
            .await
            .unwrap_or_else(|e| panic!("installing CRDs: {e}"));
        let namespace = self.create_namespace(&client, prefix).await;
        (client, namespace)
    }

    /// Log file of a component.
    pub fn log_of(&self, component: Component) -> Option<&Path> {
        self.components
            .iter()
            .find(|c| c.name == component.name())
            .map(|c| c.log.as_path())
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The `p`-quantile (0.0–1.0, nearest rank) of sorted samples; zero when there are none. For
/// benchmarks that measure against these control planes.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A DNS-label name unique in this process and very likely across processes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    prefix = prefix.trim_matches('-').to_owned();
    format!(
        "{prefix}-{n}-{:05x}",
        (nanos ^ std::process::id()) & 0xfffff
    )
}

async fn start_with(profile: Profile, binaries: &Binaries) -> Result<TestEnv, Error> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(unique_name(&format!(
        "pequod-testenv-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        context: dir.display().to_string(),
        source,
    })?;
    let janitor = Janitor::watch(&dir)?;
    let mut env = TestEnv {
        profile,
        // Replaced by the generated kubeconfig once the API server port is known.
        config: kube::Config::new(http::Uri::from_static("https://127.0.0.1")),
        kubeconfig: dir.join("kubeconfig"),
        dir: dir.clone(),
        startup: Duration::ZERO,
        binaries: binaries.clone(),
        components: Vec::new(),
        janitor: Some(janitor),
    };
    let certs = certs::generate(&dir)?;
    let etcd_url = env.start_etcd().await?;
    let client = env.start_apiserver(&etcd_url, &certs).await?;
    if profile == Profile::Full {
        env.start_controllers(&certs, &client).await?;
        env.start_fake_node(&client).await?;
    }
    env.startup = started.elapsed();
    Ok(env)
}

impl TestEnv {
    fn binary(&self, component: Component) -> Result<PathBuf, Error> {
        self.binaries
            .path(component)
            .map(Path::to_path_buf)
            .ok_or(Error::MissingBinary {
                component: component.name(),
                path: PathBuf::new(),
            })
    }

    /// Starts etcd and returns its client URL.
    async fn start_etcd(&mut self) -> Result<String, Error> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let args = vec![
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{}", free_port()?),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        self.spawn(Component::Etcd, &args)?;
        self.wait(Component::Etcd, "GET /health", ETCD_TIMEOUT, || {
            http_get_ok(port, "/health")
        })
        .await?;
        Ok(url)
    }

    /// Starts kube-apiserver, writes the admin kubeconfig and returns a client once `/readyz`
    /// answers `ok`.
    async fn start_apiserver(
        &mut self,
        etcd_url: &str,
        certs: &certs::CertFiles,
    ) -> Result<kube::Client, Error> {
        let port = free_port()?;
        let token = random_token()?;
        let tokens = self.dir.join("tokens.csv");
        certs::write(
            &tokens,
            &format!("{token},pequod-admin,pequod-admin,\"system:masters\"\n"),
        )?;
        let args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", certs.serving_cert.display()),
            format!("--tls-private-key-file={}", certs.serving_key.display()),
            format!("--client-ca-file={}", certs.ca_cert.display()),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // 1.37 refuses a loopback address in the `kubernetes` Service endpoints; nothing
            // here reaches the API server through that Service.
            "--endpoint-reconciler-type=none".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--authorization-mode=RBAC".into(),
            format!("--token-auth-file={}", tokens.display()),
            format!("--service-account-issuer=https://127.0.0.1:{port}"),
            format!("--service-account-key-file={}", certs.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                certs.sa_key.display()
            ),
            "--v=1".into(),
        ];
        self.spawn(Component::KubeApiserver, &args)?;

        certs::write(
            &self.kubeconfig,
            &kubeconfig_yaml(port, &certs.ca_cert, &token),
        )?;
        self.config = load_config(&self.kubeconfig).await?;
        let client =
            kube::Client::try_from(self.config.clone()).map_err(|e| Error::Kubeconfig {
                path: self.kubeconfig.clone(),
                message: e.to_string(),
            })?;
        self.wait(
            Component::KubeApiserver,
            "GET /readyz",
            APISERVER_TIMEOUT,
            || {
                let client = client.clone();
                async move {
                    let request = http_request("/readyz");
                    client
                        .request_text(request)
                        .await
                        .is_ok_and(|body| body.trim() == "ok")
                }
            },
        )
        .await?;
        Ok(client)
    }

    /// Starts kube-controller-manager, kube-scheduler and kwok, and waits until the first two
    /// serve `/healthz` and the controllers have created `default/default` ServiceAccount.
    async fn start_controllers(
        &mut self,
        certs: &certs::CertFiles,
        client: &kube::Client,
    ) -> Result<(), Error> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let dir = self.dir.clone();
        let common = |port: u16, certs_dir: &str| {
            vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", dir.join(certs_dir).display()),
                "--leader-elect=false".to_owned(),
            ]
        };
        let kcm_port = free_port()?;
        let mut kcm_args = common(kcm_port, "kcm-certs");
        kcm_args.extend([
            format!(
                "--service-account-private-key-file={}",
                certs.sa_key.display()
            ),
            format!("--root-ca-file={}", certs.ca_cert.display()),
            "--use-service-account-credentials=false".to_owned(),
            "--cluster-name=pequod-testenv".to_owned(),
        ]);
        self.spawn(Component::KubeControllerManager, &kcm_args)?;
        let scheduler_port = free_port()?;
        self.spawn(
            Component::KubeScheduler,
            &common(scheduler_port, "scheduler-certs"),
        )?;
        let kwok = self.binary(Component::Kwok)?;
        let kwok_args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--config={}", binaries::kwok_stages_path(&kwok).display()),
            "--node-lease-duration-seconds=40".to_owned(),
            "--manage-all-nodes=false".to_owned(),
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".to_owned(),
            "--node-ip=10.0.1.1".to_owned(),
            "--cidr=10.0.2.0/24".to_owned(),
            format!("--server-address=127.0.0.1:{}", free_port()?),
        ];
        self.spawn(Component::Kwok, &kwok_args)?;

        let config = self.config.clone();
        for (component, port) in [
            (Component::KubeControllerManager, kcm_port),
            (Component::KubeScheduler, scheduler_port),
        ] {
            self.wait(component, "GET /healthz", CONTROLLERS_TIMEOUT, || {
                healthz(&config, port)
            })
            .await?;
        }
        // The ServiceAccount controller creating `default/default` shows the controllers run.
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "default");
        self.wait(
            Component::KubeControllerManager,
            "ServiceAccount default/default created",
            CONTROLLERS_TIMEOUT,
            || {
                let accounts = accounts.clone();
                async move {
                    accounts
                        .get_opt("default")
                        .await
                        .is_ok_and(|sa| sa.is_some())
                }
            },
        )
        .await
    }

    /// Registers the kwok fake node and waits until kwok reports it Ready.
    async fn start_fake_node(&mut self, client: &kube::Client) -> Result<(), Error> {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": FAKE_NODE, "kubernetes.io/os": "linux", "type": "kwok"},
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            },
        }))
        .map_err(|e| Error::Build(format!("fake node manifest: {e}")))?;
        let nodes = Api::<Node>::all(client.clone());
        if let Err(e) = nodes.create(&PostParams::default(), &node).await {
            return Err(Error::Build(format!(
                "creating the fake node {FAKE_NODE}: {e}"
            )));
        }
        self.wait(
            Component::Kwok,
            "fake node Ready",
            CONTROLLERS_TIMEOUT,
            || {
                let nodes = nodes.clone();
                async move {
                    nodes
                        .get_opt(FAKE_NODE)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|n| {
                            n.status
                                .and_then(|s| s.conditions)
                                .unwrap_or_default()
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                }
            },
        )
        .await
    }
}

impl TestEnv {
    fn spawn(&mut self, component: Component, args: &[String]) -> Result<(), Error> {
        let program = self.binary(component)?;
        let log = self.dir.join(format!("{}.log", component.name()));
        let mut child = Supervised::spawn(component.name(), &program, args, log)?;
        if let Some(status) = child.exited() {
            return Err(Error::Exited {
                component: component.name().into(),
                status,
                log: child.log.clone(),
                tail: child.log_tail(40),
            });
        }
        self.components.push(child);
        Ok(())
    }

    /// Polls `ready` until it holds, failing early when any component exits.
    async fn wait<F, Fut>(
        &mut self,
        component: Component,
        what: &str,
        timeout: Duration,
        ready: F,
    ) -> Result<(), Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            for child in &mut self.components {
                if let Some(status) = child.exited() {
                    return Err(Error::Exited {
                        component: child.name.clone(),
                        status,
                        log: child.log.clone(),
                        tail: child.log_tail(40),
                    });
                }
            }
            if ready().await {
                return Ok(());
            }
            if started.elapsed() > timeout {
                let log = self.dir.join(format!("{}.log", component.name()));
                return Err(Error::NotReady {
                    component: component.name().into(),
                    what: what.into(),
                    waited: started.elapsed(),
                    tail: process::tail(&log, 40),
                    log,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn http_request(path: &str) -> http::Request<Vec<u8>> {
    let mut request = http::Request::new(Vec::new());
    *request.uri_mut() = http::Uri::try_from(path).unwrap_or_default();
    request
}

/// A plain-HTTP GET on 127.0.0.1 that succeeds on status 200 (etcd's health endpoint).
async fn http_get_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    read.is_ok() && response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200")
}

fn random_token() -> Result<String, Error> {
    use std::io::Read as _;
    let mut bytes = [0_u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            context: "reading /dev/urandom".into(),
            source,
        })?;
    Ok(hex(&bytes))
}

/// GET /healthz of a component serving HTTPS with a self-signed certificate on `port`.
async fn healthz(config: &kube::Config, port: u16) -> bool {
    let mut config = config.clone();
    let Ok(url) = format!("https://127.0.0.1:{port}").parse() else {
        return false;
    };
    config.cluster_url = url;
    config.root_cert = None;
    config.accept_invalid_certs = true;
    let Ok(client) = kube::Client::try_from(config) else {
        return false;
    };
    client
        .request_text(http_request("/healthz"))
        .await
        .is_ok_and(|body| body.trim() == "ok")
}

fn kubeconfig_yaml(port: u16, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: pequod-testenv
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: pequod-admin
  user:
    token: {token}
contexts:
- name: pequod-testenv
  context:
    cluster: pequod-testenv
    user: pequod-admin
    namespace: default
current-context: pequod-testenv
",
        ca = ca.display()
    )
}

async fn load_config(path: &Path) -> Result<kube::Config, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Server-side applies `crds` and waits until each is Established. Idempotent, so every test
/// may call it.
pub async fn install_crds(
    client: &kube::Client,
    crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
) -> Result<(), kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply("pequod-testenv").force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd)).await?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        match tokio::time::timeout(Duration::from_secs(60), established).await {
            Ok(result) => {
                result.map_err(|e| kube::Error::Service(Box::new(e)))?;
            }
            Err(_) => {
                return Err(kube::Error::Service(
                    format!("CRD {name} not Established after 60s").into(),
                ));
            }
        }
    }
    Ok(())
}
