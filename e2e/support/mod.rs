//! The e2e harness: the operator as a real process (its own flags, log file, HTTP endpoint),
//! one namespace and one Lease per test so tests run in parallel, and polling helpers that fail
//! with the operator's log tail.

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use pequod_api::{Transform, TransformSpec};
use pequod_testenv::{Profile, TestEnv, shared};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The full control plane (controller-manager, scheduler, kwok node), shared by the binary.
pub fn env() -> &'static TestEnv {
    shared(Profile::Full)
}

/// A client and a fresh namespace with the CRDs installed.
pub async fn namespace(prefix: &str) -> (Client, String) {
    env().prepare(&pequod_api::crd::all(), prefix).await
}

/// A running `pequod-operator` process.
pub struct Operator {
    child: tokio::process::Child,
    /// Its /metrics, /healthz, /readyz address.
    pub http: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    /// Its Lease identity.
    pub identity: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Operator {
    /// Starts the operator for `namespace` (its Lease lives there too) with `extra` flags and
    /// waits for `/readyz`.
    pub async fn start(namespace: &str, identity: &str, extra: &[&str]) -> Operator {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = env()
            .dir()
            .join(format!("operator-{namespace}-{identity}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pequod-operator"))
            .env("KUBECONFIG", env().kubeconfig())
            .args([
                format!("--namespaces={namespace}"),
                format!("--leader-election-namespace={namespace}"),
                format!("--lease-name=pequod-{namespace}"),
                format!("--identity={identity}"),
                format!("--http-addr={http}"),
                "--log-format=json".to_owned(),
                "--log=info,pequod_graph_executor=debug".to_owned(),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pequod-operator");
        let operator = Operator {
            child,
            http,
            log,
            identity: identity.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while operator.get("/readyz").await.map(|(code, _)| code) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "operator never became ready:\n{}",
                operator.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        operator
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// A plain HTTP/1.0 GET: (status code, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.http).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let code = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    /// The value of one metric series (`name{labels}` as printed), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// The last lines of the operator's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        sigterm(&mut self.child).await
    }

    /// SIGKILL: the process dies wherever it is.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

/// Sends SIGTERM to `child` and waits (at most 30 s) for its exit status.
pub async fn sigterm(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("running");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30 s of SIGTERM")
        .expect("wait")
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `timeout` with `what` and
/// the operators' log tails.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    operators: &[&Operator],
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = operators
                .iter()
                .map(|o| format!("--- {}:\n{}", o.identity, o.log_tail()))
                .collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl wait --for=condition=Ready tf/<name>`: what a user scripts.
pub async fn kubectl_wait_ready(
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let kubectl = env().kubectl().expect("the full profile has kubectl");
    let output = tokio::process::Command::new(kubectl)
        .env("KUBECONFIG", env().kubeconfig())
        .args([
            "wait",
            "--for=condition=Ready",
            &format!("transform/{name}"),
            "-n",
            namespace,
            &format!("--timeout={}s", timeout.as_secs()),
        ])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Creates a Transform from a JSON spec.
pub async fn create_transform(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: Value,
) -> Transform {
    let spec: TransformSpec = serde_json::from_value(spec).expect("spec");
    Api::<Transform>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &Transform::new(name, spec))
        .await
        .expect("create Transform")
}

/// A condition's (status, reason, message) on a Transform.
pub fn condition(transform: &Transform, type_: &str) -> Option<(String, String, String)> {
    let status = transform.status.as_ref()?;
    pequod_api::conditions::find(&status.conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The Lease's current holder.
pub async fn lease_holder(client: &Client, namespace: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(&format!("pequod-{namespace}"))
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Webservice input the platform policy accepts.
pub fn web_input(replicas: i64) -> Value {
    serde_json::json!({
        "image": "docker.io/library/nginx:1.27",
        "replicas": replicas,
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
    })
}
