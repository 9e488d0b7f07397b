//! The HTTP endpoint: /metrics, /healthz, /readyz.
//!
//! A tiny HTTP/1 server on hyper: `GET /metrics` serves [`Metrics::encode`] as OpenMetrics
//! text, `GET /healthz` answers 200 while the process serves at all, `GET /readyz` answers 200
//! once the shared [`Health`] was marked ready and 503 with the reason otherwise; anything else
//! is 404 (405 for another method on these paths). [`serve`] stops accepting when its shutdown
//! future completes, lets requests in flight finish (briefly) and closes idle connections.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use pequod_metrics::Metrics;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Content type of `/metrics` (the OpenMetrics text format).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Readiness shared between the parts that decide it and `/readyz`. Cheap to clone; clones
/// share one state. Starts not ready ("starting").
#[derive(Clone, Debug)]
pub struct Health {
    state: Arc<Mutex<Readiness>>,
}

#[derive(Debug)]
struct Readiness {
    ready: bool,
    reason: String,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Not ready, reason "starting".
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(Readiness {
                ready: false,
                reason: "starting".to_owned(),
            })),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut Readiness) -> T) -> T {
        // A panic elsewhere while holding the lock leaves a state that is still meaningful.
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Marks ready or not ready; when not ready, `/readyz` shows the last reason given.
    pub fn set_ready(&self, ready: bool) {
        self.with_state(|s| s.ready = ready);
    }

    /// Marks not ready because of `reason` (e.g. "waiting for caches", "CUE engine loading").
    pub fn set_not_ready(&self, reason: &str) {
        self.with_state(|s| {
            s.ready = false;
            reason.clone_into(&mut s.reason);
        });
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.with_state(|s| s.ready)
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        self.with_state(|s| {
            if s.ready {
                Ok(())
            } else {
                Err(s.reason.clone())
            }
        })
    }
}

/// Serves /metrics, /healthz and /readyz on `listener` until `shutdown` completes; then stops
/// accepting, gives requests in flight a few seconds and returns. Accept errors (a connection
/// reset before it was accepted, too many open files) are logged and do not stop the server.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, metrics.clone(), health.clone(), closed.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Receivers are still held by every connection task, so this cannot fail.
    let _ = closing.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::debug!("metrics endpoint: aborting connections still open after shutdown");
    }
    // Dropping the set aborts whatever is left.
    Ok(())
}

/// One client connection: served until it ends or, on shutdown, until its request in flight
/// is answered.
async fn connection(
    stream: TcpStream,
    metrics: Arc<Metrics>,
    health: Health,
    mut closing: watch::Receiver<bool>,
) {
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let response = respond(request.method(), request.uri().path(), &metrics, &health);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // Changes only to `true`; an error means the server is gone: close either way.
        _ = closing.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "metrics endpoint: connection error");
    }
}

/// The answer to `method path`.
fn respond(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found\n".to_owned());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_owned(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            let mut response = text(StatusCode::OK, metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            response
        }
        "/readyz" => match health.readiness() {
            Ok(()) => text(StatusCode::OK, "ok\n".to_owned()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => text(StatusCode::OK, "ok\n".to_owned()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::oneshot;

    use super::*;

    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(metrics: Arc<Metrics>, health: Health) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, metrics, health, async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    /// (status, head, body) of one request on a fresh connection.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let metrics = Arc::new(Metrics::new());
        metrics.set_leader(true);
        metrics.applied("apps", "v1", "Deployment", true, Duration::from_millis(5));
        let health = Health::new();
        let server = start(metrics, health.clone()).await;

        let (status, head, body) = request(server.addr, "GET", "/metrics").await;
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")),
            "{head}"
        );
        assert!(body.contains("pequod_leader 1"), "{body}");
        assert!(
            body.contains(
                r#"pequod_apply_total{group="apps",version="v1",kind="Deployment",result="success"} 1"#
            ),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");

        let (status, _, body) = request(server.addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        let (status, _, body) = request(server.addr, "GET", "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "not ready: starting\n"));
        health.set_not_ready("waiting for caches");
        let (status, _, body) = request(server.addr, "GET", "/readyz").await;
        assert_eq!(
            (status, body.as_str()),
            (503, "not ready: waiting for caches\n")
        );
        health.set_ready(true);
        let (status, _, body) = request(server.addr, "GET", "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        health.set_ready(false);
        let (status, _, _) = request(server.addr, "GET", "/readyz").await;
        assert_eq!(status, 503);

        let (status, _, _) = request(server.addr, "GET", "/nope").await;
        assert_eq!(status, 404);
        let (status, head, _) = request(server.addr, "POST", "/metrics").await;
        assert_eq!(status, 405, "{head}");

        server.stop.send(()).expect("stop");
        server.task.await.expect("join").expect("serve");
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_closes_idle_connections() {
        let server = start(Arc::new(Metrics::new()), Health::new()).await;
        // A kept-alive connection that has sent nothing must not hold shutdown up.
        let mut idle = TcpStream::connect(server.addr).await.expect("connect");
        let (status, _, _) = request(server.addr, "GET", "/healthz").await;
        assert_eq!(status, 200);

        server.stop.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(3), server.task)
            .await
            .expect("serve returns promptly")
            .expect("join")
            .expect("serve");
        assert!(
            TcpStream::connect(server.addr).await.is_err(),
            "still accepting"
        );
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut rest))
            .await
            .expect("idle connection closed");
        assert!(read.is_ok() || rest.is_empty());
    }
}
