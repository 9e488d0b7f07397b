//! OCI sources against a real registry (Debian's docker-registry on 127.0.0.1).

mod support;

use std::time::Instant;

use oci_client::secrets::RegistryAuth;
use pequod_source::{FetchError, SourceConfig, Sources};
use pequod_testenv::registry::Registry;
use support::{module, oci_ref, offline_kube_client, publish_cue, publish_tar_gz};

fn sources(registry: &Registry, cache_dir: Option<std::path::PathBuf>) -> Sources {
    Sources::new(SourceConfig {
        insecure_registries: vec![registry.addr.clone()],
        cache_dir,
        allow_local_sources: true,
        ..SourceConfig::default()
    })
}

#[tokio::test]
async fn tags_constraints_and_digests_resolve_to_verified_modules() {
    let registry = Registry::start();
    let addr = &registry.addr;
    let anon = RegistryAuth::Anonymous;
    let d120 = publish_cue(addr, "platform/web", "v1.2.0", &module("1.2.0"), &anon).await;
    let d121 = publish_cue(addr, "platform/web", "v1.2.1", &module("1.2.1"), &anon).await;
    publish_cue(addr, "platform/web", "v2.0.0", &module("2.0.0"), &anon).await;
    publish_cue(
        addr,
        "platform/web",
        "v1.3.0-rc.1",
        &module("1.3.0-rc.1"),
        &anon,
    )
    .await;
    publish_cue(addr, "platform/web", "dev", &module("dev"), &anon).await;
    let kube = offline_kube_client();
    let sources = sources(&registry, None);
    let repo = format!("{addr}/platform/web");
    let fetch = |reference: String, version: Option<&'static str>| {
        let sources = &sources;
        let kube = &kube;
        async move {
            sources
                .fetch(
                    kube,
                    "ns",
                    &oci_ref(&reference, version, Some("webservice")),
                )
                .await
        }
    };
    let says = |f: &pequod_source::Fetched| f.files["webservice/webservice.cue"].clone();

    // A constraint picks the highest match: 2.0.0 is outside ^1, the pre-release not asked for.
    let f = fetch(repo.clone(), Some("^1")).await.expect("^1");
    assert_eq!(f.version.as_deref(), Some("v1.2.1"));
    assert_eq!(f.digest, d121, "the digest is the manifest digest");
    assert!(says(&f).contains("\"1.2.1\""));
    assert_eq!(f.url, format!("oci://{addr}/platform/web"));
    assert_eq!(f.package, "webservice");
    assert!(f.files.contains_key("cue.mod/module.cue"));
    let f = fetch(repo.clone(), Some("~1.3.0-rc.0"))
        .await
        .expect("pre-release");
    assert_eq!(f.version.as_deref(), Some("v1.3.0-rc.1"));
    let f = fetch(repo.clone(), Some(">=2")).await.expect(">=2");
    assert_eq!(f.version.as_deref(), Some("v2.0.0"));

    // Exact versions, with or without CUE's `v`, and tags in the ref.
    let f = fetch(repo.clone(), Some("v1.2.0")).await.expect("exact");
    assert_eq!(
        (f.digest.as_str(), f.version.as_deref()),
        (d120.as_str(), Some("v1.2.0"))
    );
    let f = fetch(repo.clone(), Some("1.2.0"))
        .await
        .expect("exact without v");
    assert_eq!(f.version.as_deref(), Some("v1.2.0"));
    let f = fetch(format!("{repo}:dev"), None)
        .await
        .expect("tag in ref");
    assert!(says(&f).contains("\"dev\""));

    // A digest pins exactly.
    let f = fetch(format!("{repo}@{d120}"), None)
        .await
        .expect("by digest");
    assert_eq!(f.digest, d120);
    assert!(says(&f).contains("\"1.2.0\""));
}

#[tokio::test]
async fn errors_say_what_to_fix() {
    let registry = Registry::start();
    let addr = &registry.addr;
    let anon = RegistryAuth::Anonymous;
    for tag in ["v1.2.0", "v1.2.1", "v2.0.0", "v1.3.0-rc.1"] {
        publish_cue(addr, "platform/web", tag, &module(tag), &anon).await;
    }
    let kube = offline_kube_client();
    let sources = sources(&registry, None);
    let repo = format!("{addr}/platform/web");
    let fetch = |reference: String, version: Option<&'static str>| {
        let sources = &sources;
        let kube = &kube;
        async move {
            sources
                .fetch(
                    kube,
                    "ns",
                    &oci_ref(&reference, version, Some("webservice")),
                )
                .await
        }
    };
    // Errors a user can act on.
    match fetch(repo.clone(), Some("^3")).await {
        Err(e @ FetchError::NoVersionMatches { .. }) => {
            assert!(!e.is_transient());
            let message = e.to_string();
            assert!(
                message.contains("v2.0.0, v1.3.0-rc.1, v1.2.1, v1.2.0"),
                "{message}"
            );
        }
        other => panic!("^3: {other:?}"),
    }
    match fetch(repo.clone(), Some("v9.9.9")).await {
        Err(e @ FetchError::ModuleNotFound { .. }) => {
            assert!(!e.is_transient());
            assert!(e.to_string().contains("tag v9.9.9 not found"), "{e}");
        }
        other => panic!("missing tag: {other:?}"),
    }
    assert!(matches!(
        fetch(format!("{addr}/platform/missing"), Some("^1")).await,
        Err(FetchError::ModuleNotFound { .. })
    ));
    let absent = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        fetch(format!("{repo}@{absent}"), None).await,
        Err(FetchError::ModuleNotFound { .. })
    ));
    let wrong_path = sources
        .fetch(&kube, "ns", &oci_ref(&repo, Some("^1"), Some("database")))
        .await;
    assert!(
        matches!(wrong_path, Err(FetchError::PackageNotFound { ref path, .. }) if path == "database"),
        "{wrong_path:?}"
    );
    assert!(matches!(
        fetch(format!("{repo}:v1.2.0"), Some("^1")).await,
        Err(FetchError::InvalidRef { .. })
    ));
}

#[tokio::test]
async fn tar_gz_artifacts_are_modules_and_other_artifacts_are_not() {
    let registry = Registry::start();
    let addr = &registry.addr;
    let kube = offline_kube_client();
    let sources = sources(&registry, None);
    let files = module("tgz");
    let digest = publish_tar_gz(addr, "flux/web", "v1.0.0", &files).await;
    let f = sources
        .fetch(
            &kube,
            "ns",
            &oci_ref(
                &format!("{addr}/flux/web"),
                Some("^1"),
                Some("./webservice/"),
            ),
        )
        .await
        .expect("tar.gz");
    assert_eq!(f.digest, digest);
    assert_eq!(f.package, "webservice");
    assert!(f.files["webservice/webservice.cue"].contains("\"tgz\""));

    // An image-like artifact whose layer is neither a CUE zip nor a tar.gz.
    let layers = vec![oci_client::client::ImageLayer::new(
        b"\0asm".to_vec(),
        "application/vnd.wasm.content.layer.v1+wasm".into(),
        None,
    )];
    let config = oci_client::client::Config::new(
        b"{}".to_vec(),
        "application/vnd.wasm.config.v1+json".into(),
        None,
    );
    support::push(
        addr,
        "other/wasm",
        "v1",
        config,
        layers,
        &RegistryAuth::Anonymous,
    )
    .await;
    match sources
        .fetch(
            &kube,
            "ns",
            &oci_ref(&format!("{addr}/other/wasm:v1"), None, None),
        )
        .await
    {
        Err(e @ FetchError::BadArtifact { .. }) => {
            assert!(!e.is_transient());
            assert!(e.to_string().contains("wasm"), "{e}");
        }
        other => panic!("wasm artifact: {other:?}"),
    }

    // A CUE module artifact whose zip tries to leave the module root.
    let evil = vec![("../evil.cue".to_owned(), "x: 1".to_owned())];
    publish_cue(addr, "evil/m", "v1.0.0", &evil, &RegistryAuth::Anonymous).await;
    match sources
        .fetch(
            &kube,
            "ns",
            &oci_ref(&format!("{addr}/evil/m:v1.0.0"), None, None),
        )
        .await
    {
        Err(FetchError::BadArtifact { reason, .. }) => {
            assert!(reason.contains("leaves the module root"), "{reason}");
        }
        other => panic!("zip slip: {other:?}"),
    }
}

/// Requests the registry served after `before` of them, blob downloads counted apart.
fn since(registry: &Registry, before: usize) -> Vec<String> {
    registry.requests().split_off(before)
}

#[tokio::test]
async fn the_cache_saves_downloads_and_a_stopped_registry_is_transient() {
    let mut registry = Registry::start();
    let addr = registry.addr.clone();
    let anon = RegistryAuth::Anonymous;
    let digest = publish_cue(&addr, "platform/web", "v1.2.0", &module("1.2.0"), &anon).await;
    let cache_dir = std::env::temp_dir().join(pequod_testenv::unique_name("pequod-oci-cache"));
    let kube = offline_kube_client();
    let by_tag = oci_ref(
        &format!("{addr}/platform/web"),
        Some("v1.2.0"),
        Some("webservice"),
    );
    let by_constraint = oci_ref(
        &format!("{addr}/platform/web"),
        Some("^1"),
        Some("webservice"),
    );
    let by_digest = oci_ref(
        &format!("{addr}/platform/web@{digest}"),
        None,
        Some("webservice"),
    );

    let sources = sources(&registry, Some(cache_dir.clone()));
    let before = registry.requests().len();
    let started = Instant::now();
    let cold = sources.fetch(&kube, "ns", &by_tag).await.expect("cold");
    let cold_time = started.elapsed();
    let cold_requests = since(&registry, before);
    assert!(
        cold_requests.iter().any(|r| r.contains("/blobs/")),
        "{cold_requests:?}"
    );

    // A restarted operator (new Sources, same cache dir) downloads nothing again.
    let sources = self::sources(&registry, Some(cache_dir.clone()));
    for (name, cue_ref) in [
        ("tag", &by_tag),
        ("constraint", &by_constraint),
        ("digest", &by_digest),
    ] {
        let before = registry.requests().len();
        let started = Instant::now();
        let warm = sources.fetch(&kube, "ns", cue_ref).await.expect("warm");
        let warm_time = started.elapsed();
        let requests = since(&registry, before);
        assert_eq!(warm.files, cold.files);
        assert_eq!(warm.digest, cold.digest);
        assert!(
            !requests
                .iter()
                .any(|r| r.contains("/blobs/") || r.starts_with("GET /v2/platform/web/manifests")),
            "{name}: a cached digest downloads no manifest or blob: {requests:?}"
        );
        eprintln!(
            "fetch by {name}: cold {cold_time:?} ({} requests: {cold_requests:?}), cached {warm_time:?} ({} requests: {requests:?})",
            cold_requests.len(),
            requests.len()
        );
        if name == "tag" {
            assert_eq!(
                requests,
                ["HEAD /v2/platform/web/manifests/v1.2.0"],
                "a poll that finds nothing new is one HEAD"
            );
        }
        if name == "digest" {
            assert!(
                requests.is_empty(),
                "a cached digest asks nothing: {requests:?}"
            );
        }
    }

    // The registry goes away: a transient error (a digest still comes from the cache).
    registry.stop();
    match sources.fetch(&kube, "ns", &by_tag).await {
        Err(e @ FetchError::Network { .. }) => assert!(e.is_transient(), "{e}"),
        other => panic!("registry stopped: {other:?}"),
    }
    assert!(sources.fetch(&kube, "ns", &by_digest).await.is_ok());
    registry.restart();
    let back = sources
        .fetch(&kube, "ns", &by_tag)
        .await
        .expect("registry back");
    assert_eq!(back.digest, digest);
    std::fs::remove_dir_all(cache_dir).expect("remove cache dir");
}
