//! Git sources against a real `git daemon` on 127.0.0.1.

mod support;

use pequod_api::{CueRef, SourceType};
use pequod_source::{FetchError, SourceConfig, Sources};
use pequod_testenv::git::GitServer;
use support::offline_kube_client;

const MODULE: &str = "module: \"example.com/platform@v1\"\nlanguage: version: \"v0.17.0\"\n";

fn git_ref(reference: &str, version: Option<&str>, path: Option<&str>) -> CueRef {
    CueRef {
        source_type: SourceType::Git,
        reference: reference.into(),
        path: path.map(Into::into),
        version: version.map(Into::into),
        pull_secret_ref: None,
        interval: None,
    }
}

fn web(version: &str) -> String {
    format!("package web\n\nversion: {version:?}\n")
}

/// A repository with the module under `platform/` and tags v1.2.0, v1.2.1, v2.0.0.
fn repository(server: &GitServer) -> Vec<String> {
    server.create("platform");
    let mut shas = Vec::new();
    for version in ["1.2.0", "1.2.1", "2.0.0"] {
        let sha = server.commit(
            "platform",
            &[
                ("platform/cue.mod/module.cue", MODULE),
                ("platform/web/web.cue", &web(version)),
                ("README.md", version),
            ],
            version,
        );
        server.git(
            "platform",
            &["tag", "-a", &format!("v{version}"), "-m", version],
        );
        shas.push(sha);
    }
    shas
}

#[tokio::test]
async fn branches_tags_constraints_and_commits_resolve() {
    let server = GitServer::start();
    let shas = repository(&server);
    let url = server.url("platform");
    let kube = offline_kube_client();
    let sources = Sources::new(SourceConfig {
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let fetch = |reference: String, version: Option<&'static str>| {
        let (sources, kube) = (&sources, &kube);
        async move {
            sources
                .fetch(
                    kube,
                    "ns",
                    &git_ref(&reference, version, Some("platform/web")),
                )
                .await
        }
    };
    let says = |f: &pequod_source::Fetched| f.files["web/web.cue"].clone();

    let f = fetch(url.clone(), None).await.expect("default branch");
    assert_eq!(f.version, Some(format!("main@{}", shas[2])));
    assert_eq!(
        f.package, "web",
        "the package is relative to the module root"
    );
    assert_eq!(f.url, url);
    assert!(f.files.contains_key("cue.mod/module.cue"));
    assert!(says(&f).contains("2.0.0"));
    assert!(f.digest.starts_with("sha256:"));

    let f = fetch(url.clone(), Some("^1")).await.expect("constraint");
    assert_eq!(f.version, Some(format!("v1.2.1@{}", shas[1])));
    assert!(says(&f).contains("1.2.1"));
    let f = fetch(format!("{url}#v1.2.0"), None).await.expect("tag");
    assert!(says(&f).contains("1.2.0"));
    let f = fetch(url.clone(), Some("1.2.0"))
        .await
        .expect("exact version");
    assert!(says(&f).contains("1.2.0"));
    let f = fetch(format!("{url}#{}", shas[0]), None)
        .await
        .expect("commit");
    assert_eq!(f.version.as_deref(), Some(shas[0].as_str()));
    assert!(says(&f).contains("1.2.0"));
    let f = fetch(format!("{url}#main"), None).await.expect("branch");
    assert!(says(&f).contains("2.0.0"));

    match fetch(format!("{url}#nope"), None).await {
        Err(e @ FetchError::ModuleNotFound { .. }) => assert!(!e.is_transient(), "{e}"),
        other => panic!("missing ref: {other:?}"),
    }
    match fetch(url.clone(), Some("^3")).await {
        Err(FetchError::NoVersionMatches { available, .. }) => {
            assert_eq!(available, ["v2.0.0", "v1.2.1", "v1.2.0"]);
        }
        other => panic!("^3: {other:?}"),
    }
    let absent = "0123456789012345678901234567890123456789";
    assert!(
        matches!(
            fetch(format!("{url}#{absent}"), None).await,
            Err(FetchError::ModuleNotFound { .. })
        ),
        "missing commit"
    );
    let missing = fetch(server.url("missing"), None).await;
    assert!(
        matches!(missing, Err(FetchError::ModuleNotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_branch_advance_gives_a_new_digest_and_the_cache_saves_fetches() {
    let mut server = GitServer::start();
    let shas = repository(&server);
    let url = server.url("platform");
    let kube = offline_kube_client();
    let cache_dir = std::env::temp_dir().join(pequod_testenv::unique_name("pequod-git-cache"));
    let sources = Sources::new(SourceConfig {
        cache_dir: Some(cache_dir.clone()),
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let on_main = git_ref(&format!("{url}#main"), None, Some("platform/web"));

    let before = server.connections();
    let started = std::time::Instant::now();
    let first = sources.fetch(&kube, "ns", &on_main).await.expect("cold");
    let cold = (started.elapsed(), server.connections() - before);

    // Nothing changed: one ref listing, no fetch.
    let sources = Sources::new(SourceConfig {
        cache_dir: Some(cache_dir.clone()),
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let before = server.connections();
    let started = std::time::Instant::now();
    let again = sources.fetch(&kube, "ns", &on_main).await.expect("cached");
    let warm = (started.elapsed(), server.connections() - before);
    assert_eq!(again, first);
    assert_eq!(
        warm.1, 1,
        "a poll that finds nothing new is one ref listing"
    );
    eprintln!(
        "git fetch by branch: cold {:?} ({} connections), cached {:?} ({} connections)",
        cold.0, cold.1, warm.0, warm.1
    );

    // A commit outside the module keeps the digest; one inside changes it.
    let readme = server.commit("platform", &[("README.md", "docs only")], "docs");
    let docs = sources
        .fetch(&kube, "ns", &on_main)
        .await
        .expect("docs commit");
    assert_eq!(docs.version, Some(format!("main@{readme}")));
    assert_eq!(docs.digest, first.digest, "nothing in the module changed");
    let advanced = server.commit(
        "platform",
        &[("platform/web/web.cue", &web("3.0.0"))],
        "3.0.0",
    );
    let new = sources
        .fetch(&kube, "ns", &on_main)
        .await
        .expect("advanced");
    assert_eq!(new.version, Some(format!("main@{advanced}")));
    assert_ne!(new.digest, first.digest);
    assert!(new.files["web/web.cue"].contains("3.0.0"));

    // A pinned commit already cached asks nothing, even with the server gone.
    let pinned = git_ref(&format!("{url}#{}", shas[2]), None, Some("platform/web"));
    sources.fetch(&kube, "ns", &pinned).await.expect("pin");
    server.stop();
    let offline = sources
        .fetch(&kube, "ns", &pinned)
        .await
        .expect("pin from the cache");
    assert_eq!(offline.digest, first.digest);
    match sources.fetch(&kube, "ns", &on_main).await {
        Err(e @ FetchError::Network { .. }) => assert!(e.is_transient(), "{e}"),
        other => panic!("server stopped: {other:?}"),
    }
    std::fs::remove_dir_all(cache_dir).expect("remove cache");
}

#[tokio::test]
async fn concurrent_fetches_share_one_local_repository() {
    let server = GitServer::start();
    let shas = repository(&server);
    let url = server.url("platform");
    let cache_dir = std::env::temp_dir().join(pequod_testenv::unique_name("pequod-git-many"));
    let sources = std::sync::Arc::new(Sources::new(SourceConfig {
        cache_dir: Some(cache_dir.clone()),
        allow_local_sources: true,
        ..SourceConfig::default()
    }));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let sources = sources.clone();
        let reference = match i % 4 {
            0 => format!("{url}#main"),
            1 => format!("{url}#v1.2.0"),
            2 => format!("{url}#{}", shas[1]),
            _ => url.clone(),
        };
        tasks.spawn(async move {
            sources
                .fetch(
                    &offline_kube_client(),
                    "ns",
                    &git_ref(&reference, None, Some("platform/web")),
                )
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("concurrent fetch");
    }
    std::fs::remove_dir_all(cache_dir).expect("remove cache");
}

/// `file://` URLs and paths read the operator's own disk, and the `git daemon` here is on
/// loopback: all refused, permanently, unless the operator allows local sources.
#[tokio::test]
async fn local_repositories_are_refused_unless_local_sources_are_allowed() {
    let server = GitServer::start();
    repository(&server);
    let path = server.path("platform").display().to_string();
    let references = [format!("file://{path}"), path, server.url("platform")];
    let kube = offline_kube_client();
    let at_tag =
        |reference: &str| git_ref(&format!("{reference}#v1.2.0"), None, Some("platform/web"));

    let strict = Sources::new(SourceConfig::default());
    for reference in &references {
        match strict.fetch(&kube, "ns", &at_tag(reference)).await {
            Err(e @ FetchError::SourceNotAllowed { .. }) => {
                assert!(!e.is_transient(), "{e}");
                assert!(e.to_string().contains(reference.as_str()), "{e}");
            }
            other => panic!("{reference} by default: {other:?}"),
        }
    }

    let local = Sources::new(SourceConfig {
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    for reference in &references {
        let fetched = local
            .fetch(&kube, "ns", &at_tag(reference))
            .await
            .unwrap_or_else(|e| panic!("{reference} with local sources allowed: {e}"));
        assert!(
            fetched.files["web/web.cue"].contains("1.2.0"),
            "{reference}"
        );
    }
}
