//! OCI pull secrets against a real kube-apiserver and a registry behind htpasswd auth.

mod support;

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use oci_client::secrets::RegistryAuth;
use pequod_source::{FetchError, SourceConfig, Sources};
use pequod_testenv::registry::Registry;
use pequod_testenv::{Profile, shared};
use support::{module, oci_ref, publish_cue, with_secret};

const PASSWORD: &str = "s3cret-Pa55";

fn secret(name: &str, type_: &str, data: &[(&str, String)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.clone().into_bytes())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn pull_secrets_authenticate_and_wrong_ones_say_unauthorized() {
    let registry = Registry::start_with_auth("pequod", PASSWORD);
    let addr = registry.addr.clone();
    let push_auth = RegistryAuth::Basic("pequod".into(), PASSWORD.into());
    let digest = publish_cue(&addr, "private/web", "v1.0.0", &module("1.0.0"), &push_auth).await;

    let env = shared(Profile::Minimal);
    let client = env.client();
    let ns = env.create_namespace(&client, "oci-auth").await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("pequod:{PASSWORD}"));
    let docker_config = |host: &str| format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    for s in [
        secret(
            "docker",
            "kubernetes.io/dockerconfigjson",
            &[(
                ".dockerconfigjson",
                docker_config(&format!("http://{addr}")),
            )],
        ),
        secret(
            "basic",
            "kubernetes.io/basic-auth",
            &[("username", "pequod".into()), ("password", PASSWORD.into())],
        ),
        secret(
            "wrong",
            "kubernetes.io/basic-auth",
            &[("username", "pequod".into()), ("password", "guess".into())],
        ),
        secret(
            "elsewhere",
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", docker_config("registry.example.com"))],
        ),
    ] {
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("secret");
    }

    let sources = Sources::new(SourceConfig {
        insecure_registries: vec![addr.clone()],
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let base = oci_ref(
        &format!("{addr}/private/web"),
        Some("^1"),
        Some("webservice"),
    );
    for name in ["docker", "basic"] {
        let fetched = sources
            .fetch(&client, &ns, &with_secret(base.clone(), name))
            .await
            .unwrap_or_else(|e| panic!("with secret {name}: {e}"));
        assert_eq!(fetched.digest, digest);
        assert_eq!(fetched.version.as_deref(), Some("v1.0.0"));
    }
    for cue_ref in [with_secret(base.clone(), "wrong"), base.clone()] {
        match sources.fetch(&client, &ns, &cue_ref).await {
            Err(e @ FetchError::Unauthorized { .. }) => {
                assert!(!e.is_transient());
                assert!(e.to_string().contains("pullSecretRef"), "{e}");
                assert!(!e.to_string().contains("guess"));
            }
            other => panic!("{:?}: {other:?}", cue_ref.pull_secret_ref),
        }
    }
    match sources
        .fetch(&client, &ns, &with_secret(base.clone(), "missing"))
        .await
    {
        Err(FetchError::SecretNotFound { name, .. }) => assert_eq!(name, "missing"),
        other => panic!("missing secret: {other:?}"),
    }
    match sources
        .fetch(&client, &ns, &with_secret(base.clone(), "elsewhere"))
        .await
    {
        Err(e @ FetchError::BadSecret { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&addr) && message.contains("registry.example.com"),
                "{message}"
            );
            assert!(!message.contains(&auth));
        }
        other => panic!("secret for another registry: {other:?}"),
    }
}
