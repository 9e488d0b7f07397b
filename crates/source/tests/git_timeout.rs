//! A Git server that accepts connections and never answers: with `set_git_timeouts` the fetch
//! fails as a network error (retried with backoff) instead of holding the reconcile forever.
//! Its own test binary: libgit2's timeouts are process globals, set before any thread uses Git.

mod support;

use std::time::{Duration, Instant};

use pequod_api::{CueRef, SourceType};
use pequod_source::{FetchError, SourceConfig, Sources};
use support::offline_kube_client;

#[test]
fn a_server_that_never_answers_times_out() {
    // SAFETY: the only test of this binary; no thread has used libgit2 yet.
    #[allow(unsafe_code)]
    unsafe {
        pequod_source::set_git_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts and keeps every connection open, silently.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let result = runtime.block_on(async {
        let cue_ref = CueRef::new(SourceType::Git, format!("git://{addr}/platform#main"));
        tokio::time::timeout(
            Duration::from_secs(30),
            Sources::new(SourceConfig {
                allow_local_sources: true,
                ..SourceConfig::default()
            })
            .fetch(&offline_kube_client(), "team-a", &cue_ref),
        )
        .await
    });
    let error = result
        .expect("the fetch gives up by itself, long before 30 s")
        .expect_err("nothing to fetch");
    assert!(
        matches!(error, FetchError::Network { .. }) && error.is_transient(),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
