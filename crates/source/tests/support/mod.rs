//! Publishing test modules to a registry with oci-client, in CUE's module format and as a
//! tar.gz artifact.

#![allow(dead_code)]

use std::io::Write as _;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use pequod_api::{CueRef, LocalObjectReference, SourceType};

pub const MODULE_CUE: &str =
    "module: \"example.com/platform@v1\"\nlanguage: version: \"v0.17.0\"\n";

/// A CUE module whose `webservice` package says which version it is.
pub fn module(version: &str) -> Vec<(String, String)> {
    vec![
        ("cue.mod/module.cue".to_owned(), MODULE_CUE.to_owned()),
        (
            "webservice/webservice.cue".to_owned(),
            format!("package webservice\n\nversion: {version:?}\n"),
        ),
    ]
}

pub fn zip_of(files: &[(String, String)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    for (path, content) in files {
        zip.start_file(path.as_str(), zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        zip.write_all(content.as_bytes()).expect("zip write");
    }
    zip.finish().expect("zip");
    out.into_inner()
}

pub fn tar_gz_of(files: &[(String, String)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, content.as_bytes())
            .expect("tar entry");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

pub fn client(addr: &str) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![addr.to_owned()]),
        ..ClientConfig::default()
    })
}

/// Pushes an artifact and returns its manifest digest.
pub async fn push(
    addr: &str,
    repository: &str,
    tag: &str,
    config: Config,
    layers: Vec<ImageLayer>,
    auth: &RegistryAuth,
) -> String {
    let client = client(addr);
    let reference = Reference::with_tag(addr.into(), repository.into(), tag.into());
    let manifest = OciImageManifest::build(&layers, &config, None);
    client
        .push(&reference, &layers, config, auth, Some(manifest))
        .await
        .unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
    client
        .fetch_manifest_digest(&reference, auth)
        .await
        .expect("digest of what was pushed")
}

/// Publishes `files` in CUE's module format (config, module zip, module.cue).
pub async fn publish_cue(
    addr: &str,
    repository: &str,
    tag: &str,
    files: &[(String, String)],
    auth: &RegistryAuth,
) -> String {
    let module_file = files
        .iter()
        .find(|(p, _)| p == "cue.mod/module.cue")
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    let layers = vec![
        ImageLayer::new(zip_of(files), "application/zip".into(), None),
        ImageLayer::new(
            module_file.into_bytes(),
            "application/vnd.cue.modulefile.v1".into(),
            None,
        ),
    ];
    let config = Config::new(
        b"{}".to_vec(),
        "application/vnd.cue.module.v1+json".into(),
        None,
    );
    push(addr, repository, tag, config, layers, auth).await
}

/// Publishes `files` as one tar.gz layer (Flux/Timoni style).
pub async fn publish_tar_gz(
    addr: &str,
    repository: &str,
    tag: &str,
    files: &[(String, String)],
) -> String {
    let layers = vec![ImageLayer::new(
        tar_gz_of(files),
        "application/vnd.cncf.flux.content.v1.tar+gzip".into(),
        None,
    )];
    let config = Config::new(
        b"{}".to_vec(),
        "application/vnd.cncf.flux.config.v1+json".into(),
        None,
    );
    push(
        addr,
        repository,
        tag,
        config,
        layers,
        &RegistryAuth::Anonymous,
    )
    .await
}

pub fn oci_ref(reference: &str, version: Option<&str>, path: Option<&str>) -> CueRef {
    CueRef {
        source_type: SourceType::Oci,
        reference: reference.into(),
        path: path.map(Into::into),
        version: version.map(Into::into),
        pull_secret_ref: None,
        interval: None,
    }
}

pub fn with_secret(mut cue_ref: CueRef, name: &str) -> CueRef {
    cue_ref.pull_secret_ref = Some(LocalObjectReference { name: name.into() });
    cue_ref
}

/// A client for sources that never reach the API server (no pull secret).
pub fn offline_kube_client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
    kube::Client::try_from(config).expect("kube client")
}
