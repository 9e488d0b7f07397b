//! Git over smart HTTP with basic auth (`git http-backend`), credentials from pull secrets in
//! a real kube-apiserver.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use pequod_api::{CueRef, LocalObjectReference, SourceType};
use pequod_source::{FetchError, SourceConfig, Sources};
use pequod_testenv::git::{GitServer, HttpGitServer, SshGitServer};
use pequod_testenv::{Profile, shared};

const PASSWORD: &str = "git-s3cret";

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some(
            if data.iter().any(|(k, _)| *k == "ssh-privatekey") {
                "kubernetes.io/ssh-auth"
            } else if data.iter().any(|(k, _)| *k == "identity") {
                "Opaque"
            } else {
                "kubernetes.io/basic-auth"
            }
            .into(),
        ),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn git_ref(url: &str, secret: Option<&str>) -> CueRef {
    CueRef {
        source_type: SourceType::Git,
        reference: format!("{url}#main"),
        path: Some("web".into()),
        version: None,
        pull_secret_ref: secret.map(|name| LocalObjectReference { name: name.into() }),
        interval: None,
    }
}

#[tokio::test]
async fn https_style_basic_auth_from_pull_secrets() {
    let git = GitServer::start();
    git.create("private");
    git.commit(
        "private",
        &[
            (
                "cue.mod/module.cue",
                "module: \"example.com/p@v0\"\nlanguage: version: \"v0.17.0\"\n",
            ),
            ("web/web.cue", "package web\nx: 1\n"),
        ],
        "first",
    );
    let http = HttpGitServer::start(&git, "pequod", PASSWORD);
    let url = http.url("private");

    let env = shared(Profile::Minimal);
    let client = env.client();
    let ns = env.create_namespace(&client, "git-auth").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    for s in [
        secret("basic", &[("username", "pequod"), ("password", PASSWORD)]),
        secret("token", &[("username", "pequod"), ("token", PASSWORD)]),
        secret("wrong", &[("username", "pequod"), ("password", "guess")]),
    ] {
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("secret");
    }
    let sources = Sources::new(SourceConfig {
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    for name in ["basic", "token"] {
        let fetched = sources
            .fetch(&client, &ns, &git_ref(&url, Some(name)))
            .await
            .unwrap_or_else(|e| panic!("with {name}: {e}"));
        assert_eq!(fetched.package, "web");
        assert!(
            fetched
                .version
                .as_deref()
                .is_some_and(|v| v.starts_with("main@"))
        );
    }
    for secret in [Some("wrong"), None] {
        match sources.fetch(&client, &ns, &git_ref(&url, secret)).await {
            Err(e @ FetchError::Unauthorized { .. }) => {
                assert!(!e.is_transient());
                assert!(!e.to_string().contains("guess"));
            }
            other => panic!("{secret:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn ssh_keys_and_known_hosts_from_pull_secrets() {
    let git = GitServer::start();
    git.create("private");
    git.commit(
        "private",
        &[
            (
                "cue.mod/module.cue",
                "module: \"example.com/p@v0\"\nlanguage: version: \"v0.17.0\"\n",
            ),
            ("web/web.cue", "package web\nx: 1\n"),
        ],
        "first",
    );
    let ssh = SshGitServer::start(&git);
    let url = ssh.url("private");

    let env = shared(Profile::Minimal);
    let client = env.client();
    let ns = env.create_namespace(&client, "git-ssh").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let other_host = ssh.known_hosts.replace(
        &format!("[127.0.0.1]:{}", ssh.addr.rsplit(':').next().unwrap_or("")),
        "[other.example]:22",
    );
    let hashed = hashed_known_hosts(&ssh.known_hosts);
    assert!(hashed.starts_with("|1|"), "{hashed}");
    for s in [
        secret(
            "key",
            &[
                ("identity", &ssh.identity),
                ("known_hosts", &ssh.known_hosts),
            ],
        ),
        secret(
            "hashed",
            &[("identity", &ssh.identity), ("known_hosts", &hashed)],
        ),
        secret(
            "unknown-host",
            &[("identity", &ssh.identity), ("known_hosts", &other_host)],
        ),
    ] {
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("secret");
    }
    let sources = Sources::new(SourceConfig {
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let fetched = sources
        .fetch(&client, &ns, &git_ref(&url, Some("key")))
        .await
        .unwrap_or_else(|e| panic!("over ssh: {e}"));
    assert_eq!(fetched.package, "web");
    let sources = Sources::new(SourceConfig {
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    sources
        .fetch(&client, &ns, &git_ref(&url, Some("hashed")))
        .await
        .unwrap_or_else(|e| panic!("with a hashed known_hosts (ssh-keygen -H): {e}"));
    for secret in [Some("unknown-host"), None] {
        match sources.fetch(&client, &ns, &git_ref(&url, secret)).await {
            Err(e @ FetchError::Unauthorized { .. }) => assert!(!e.is_transient()),
            other => panic!("{secret:?}: {other:?}"),
        }
    }
}

/// `known_hosts` with hashed host names, as `ssh-keygen -H` (and `HashKnownHosts yes`) write it.
fn hashed_known_hosts(plain: &str) -> String {
    let file = std::env::temp_dir().join(pequod_testenv::unique_name("known-hosts"));
    std::fs::write(&file, plain).expect("write known_hosts");
    let status = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client)");
    assert!(status.success());
    let hashed = std::fs::read_to_string(&file).expect("hashed known_hosts");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(file.with_extension("old"));
    hashed
}
