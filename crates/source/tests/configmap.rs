//! ConfigMap and inline sources against a real kube-apiserver.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use pequod_api::{CueRef, SourceType};
use pequod_source::{FetchError, fetch};
use pequod_testenv::{Profile, shared};

fn cue_ref(source_type: SourceType, reference: &str) -> CueRef {
    CueRef::new(source_type, reference)
}

#[tokio::test]
async fn a_configmap_module_is_its_cue_keys_with_a_content_digest() {
    let env = shared(Profile::Minimal);
    let client = env.client();
    let ns = env.create_namespace(&client, "source-cm").await;
    let data = BTreeMap::from([
        (
            "cue.mod__module.cue".to_owned(),
            "module: \"example.com/m@v0\"\nlanguage: version: \"v0.17.0\"\n".to_owned(),
        ),
        ("app.cue".to_owned(), "package app\ninput: {}\n".to_owned()),
        ("README.md".to_owned(), "not CUE".to_owned()),
    ]);
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("module".into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("configmap");

    let fetched = fetch(&client, &ns, &cue_ref(SourceType::Configmap, "module"))
        .await
        .expect("fetched");
    let paths: Vec<&str> = fetched.files.keys().map(String::as_str).collect();
    assert_eq!(paths, ["app.cue", "cue.mod/module.cue"]);
    assert_eq!(fetched.url, format!("configmap://{ns}/module"));
    let again = fetch(&client, &ns, &cue_ref(SourceType::Configmap, "module"))
        .await
        .expect("fetched");
    assert_eq!(fetched.digest, again.digest, "same content, same digest");

    match fetch(&client, &ns, &cue_ref(SourceType::Configmap, "missing")).await {
        Err(FetchError::NotFound { name, .. }) => assert_eq!(name, "missing"),
        other => panic!("missing ConfigMap: {other:?}"),
    }
    let empty = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("empty".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("notes.txt".to_owned(), "x".to_owned())])),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &empty)
        .await
        .expect("configmap");
    assert!(matches!(
        fetch(&client, &ns, &cue_ref(SourceType::Configmap, "empty")).await,
        Err(FetchError::NoCueFiles { .. })
    ));

    let inline = fetch(
        &client,
        &ns,
        &cue_ref(SourceType::Inline, "package x\ninput: {}\n"),
    )
    .await
    .expect("inline");
    assert_eq!(inline.files["module.cue"], "package x\ninput: {}\n");
    assert!(matches!(
        fetch(&client, &ns, &cue_ref(SourceType::Oci, "r/m")).await,
        Err(FetchError::InvalidRef { .. })
    ));
}
