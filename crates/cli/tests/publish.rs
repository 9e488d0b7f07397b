//! `pequod publish` against a real registry (Debian's docker-registry on 127.0.0.1) and the
//! real `cue` command: what pequod pushes, cue resolves, downloads and evaluates; it matches
//! what `cue mod publish` pushes for the same directory; Pequod's own OCI source fetches it;
//! and the checks before pushing fail with messages that say what to fix.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use pequod_api::{CueRef, SourceType};
use pequod_source::{SourceConfig, Sources};
use pequod_testenv::registry::Registry;
use serde_json::Value;

const MODULE_CUE: &str = "module: \"example.com/hello@v1\"\nlanguage: version: \"v0.17.0\"\n";

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(pequod_testenv::unique_name(what));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("dirs");
        std::fs::write(file, content).expect("write");
    }
}

/// `example.com/hello@v1`: a package at the root, one below it, and the files cue leaves out
/// or keeps that a plain "*.cue" rule would get wrong.
fn write_module(root: &Path, module_cue: &str) {
    write(
        root,
        &[
            ("cue.mod/module.cue", module_cue),
            (
                "hello.cue",
                "package hello\n\nmessage: \"hello from pequod\"\n",
            ),
            ("sub/sub.cue", "package sub\n\nx: 42\n"),
            ("README.md", "# hello\n"),
            ("fixtures/input.yaml", "name: web\n"),
            (".hidden/notes.txt", "kept\n"),
            ("cue.mod/pkg/example.com/old/old.cue", "package old\n"),
            (".git/config", "[core]\n"),
            (
                "nested/cue.mod/module.cue",
                "module: \"example.com/nested\"\n",
            ),
            ("nested/nested.cue", "package nested\n"),
            ("cue.mod/vendor/v.cue", "package v\n"),
            (".hg_archival.txt", "repo: x\n"),
        ],
    );
    #[cfg(unix)]
    std::os::unix::fs::symlink("README.md", root.join("link.md")).expect("symlink");
}

fn pequod(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pequod"))
        .args(args)
        .env_remove("PEQUOD_REGISTRY_USERNAME")
        .env_remove("PEQUOD_REGISTRY_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("pequod runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn publish(dir: &Path, reference: &str) -> String {
    let out = pequod(&["publish", &dir.display().to_string(), reference], &[]);
    assert!(
        out.status.success(),
        "pequod publish {reference}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `cue` with its registry at `registry` and its caches and home in `scratch`.
fn cue(scratch: &Path, registry: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(pequod_testenv::cue_cli::cue())
        .args(args)
        .current_dir(dir)
        .env("CUE_REGISTRY", format!("{registry}+insecure"))
        .env("CUE_CACHE_DIR", scratch.join("cue-cache"))
        .env("HOME", scratch)
        .stdin(Stdio::null())
        .output()
        .expect("cue runs")
}

fn oci_client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

/// The manifest at `reference` and the file names in its zip layer.
async fn artifact(client: &Client, reference: &str) -> (Value, Vec<String>) {
    let reference: Reference = reference.parse().expect("reference");
    let (body, _) = client
        .pull_manifest_raw(
            &reference,
            &RegistryAuth::Anonymous,
            &[OCI_IMAGE_MEDIA_TYPE],
        )
        .await
        .expect("manifest");
    let manifest: Value = serde_json::from_slice(&body).expect("manifest JSON");
    let layer: oci_client::manifest::OciDescriptor =
        serde_json::from_value(manifest["layers"][0].clone()).expect("layer 0");
    let mut zip = Vec::new();
    client
        .pull_blob(&reference, &layer, &mut zip)
        .await
        .expect("zip layer");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a zip");
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).expect("zip entry");
        let mut content = Vec::new();
        file.read_to_end(&mut content).expect("zip content");
        names.push(file.name().to_owned());
    }
    (manifest, names)
}

#[tokio::test]
async fn cue_and_pequods_oci_source_consume_what_pequod_publish_pushes() {
    let registry = Registry::start();
    let scratch = TempDir::new("pequod-publish-consume");
    let module = scratch.0.join("hello");
    write_module(&module, MODULE_CUE);

    let started = std::time::Instant::now();
    let stdout = publish(
        &module,
        &format!("{}/example.com/hello:v1.2.0", registry.addr),
    );
    let spent = started.elapsed();
    let digest = stdout
        .trim()
        .strip_prefix(&format!(
            "pushed {}/example.com/hello:v1.2.0 ",
            registry.addr
        ))
        .unwrap_or_else(|| panic!("pushed line: {stdout}"));
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{stdout}"
    );
    eprintln!("pequod publish took {spent:?}");

    // A fresh consumer imports both packages; cue resolves, downloads and evaluates them.
    let consumer = scratch.0.join("consumer");
    write(
        &consumer,
        &[
            (
                "cue.mod/module.cue",
                "module: \"example.com/consumer\"\nlanguage: version: \"v0.17.0\"\n",
            ),
            (
                "main.cue",
                "package main\n\nimport (\n\t\"example.com/hello@v1\"\n\t\"example.com/hello/sub@v1\"\n)\n\nout: hello.message\nn: sub.x\n",
            ),
        ],
    );
    let tidy = cue(&scratch.0, &registry.addr, &consumer, &["mod", "tidy"]);
    assert!(
        tidy.status.success(),
        "cue mod tidy: {}",
        text(&tidy.stderr)
    );
    let module_cue =
        std::fs::read_to_string(consumer.join("cue.mod/module.cue")).expect("module.cue");
    assert!(
        module_cue.contains("\"example.com/hello@v1\"") && module_cue.contains("v1.2.0"),
        "{module_cue}"
    );
    let export = cue(
        &scratch.0,
        &registry.addr,
        &consumer,
        &["export", "--out", "json"],
    );
    assert!(
        export.status.success(),
        "cue export: {}",
        text(&export.stderr)
    );
    let value: Value = serde_json::from_slice(&export.stdout).expect("cue JSON");
    assert_eq!(
        value,
        serde_json::json!({"out": "hello from pequod", "n": 42})
    );

    // Pequod's own OCI source: semver constraint, package path, digest.
    let sources = Sources::new(SourceConfig {
        insecure_registries: vec![registry.addr.clone()],
        allow_local_sources: true,
        ..SourceConfig::default()
    });
    let mut cue_ref = CueRef::new(
        SourceType::Oci,
        format!("{}/example.com/hello", registry.addr),
    );
    cue_ref.version = Some("^1".into());
    cue_ref.path = Some("sub".into());
    let offline = kube::Client::try_from(kube::Config::new(
        "http://127.0.0.1:9".parse().expect("uri"),
    ))
    .expect("kube client");
    let fetched = sources
        .fetch(&offline, "default", &cue_ref)
        .await
        .expect("pequod's OCI source fetches what pequod published");
    assert_eq!(fetched.version.as_deref(), Some("v1.2.0"));
    assert!(
        fetched.files.contains_key("sub/sub.cue"),
        "{:?}",
        fetched.files.keys()
    );
    assert!(fetched.files.contains_key("hello.cue"));
}

#[tokio::test]
async fn pequod_publish_pushes_what_cue_mod_publish_pushes() {
    let registry = Registry::start();
    let scratch = TempDir::new("pequod-publish-compare");
    let module = scratch.0.join("hello");
    // `cue mod publish` wants a source; pequod publishes the directory either way.
    write_module(&module, &format!("{MODULE_CUE}source: kind: \"self\"\n"));

    let by_cue = cue(
        &scratch.0,
        &format!("{}/by-cue", registry.addr),
        &module,
        &["mod", "publish", "v1.0.0"],
    );
    assert!(
        by_cue.status.success(),
        "cue mod publish: {}",
        text(&by_cue.stderr)
    );
    publish(
        &module,
        &format!("{}/by-pequod/example.com/hello:v1.0.0", registry.addr),
    );

    let client = oci_client();
    let (cue_manifest, cue_files) = artifact(
        &client,
        &format!("{}/by-cue/example.com/hello:v1.0.0", registry.addr),
    )
    .await;
    let (manifest, files) = artifact(
        &client,
        &format!("{}/by-pequod/example.com/hello:v1.0.0", registry.addr),
    )
    .await;

    for (what, m) in [("cue", &cue_manifest), ("pequod", &manifest)] {
        assert_eq!(m["schemaVersion"], 2, "{what}: {m}");
        assert_eq!(m["mediaType"], OCI_IMAGE_MEDIA_TYPE, "{what}: {m}");
        assert_eq!(
            m["config"]["mediaType"], "application/vnd.cue.module.v1+json",
            "{what}: {m}"
        );
        let layers: Vec<&Value> = m["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| &l["mediaType"])
            .collect();
        assert_eq!(
            layers,
            ["application/zip", "application/vnd.cue.modulefile.v1"],
            "{what}: {m}"
        );
        // cue v0.17.1 writes no artifactType (the config media type says what it is).
        assert!(m.get("artifactType").is_none(), "{what}: {m}");
    }
    // The same config blob (`{}`) and the same module file.
    assert_eq!(cue_manifest["config"], manifest["config"]);
    assert_eq!(cue_manifest["layers"][1], manifest["layers"][1]);
    // cue v0.17.1 annotates only VCS sources; pequod names the module version.
    assert!(cue_manifest.get("annotations").is_none(), "{cue_manifest}");
    assert_eq!(
        manifest["annotations"],
        serde_json::json!({"works.cue.module": "example.com/hello@v1.0.0"})
    );

    assert_eq!(files, cue_files, "the zips hold the same files");
    assert_eq!(
        files,
        [
            ".hidden/notes.txt",
            "README.md",
            "cue.mod/module.cue",
            "cue.mod/pkg/example.com/old/old.cue",
            "fixtures/input.yaml",
            "hello.cue",
            "sub/sub.cue",
        ]
    );
}

#[test]
fn publish_refuses_what_cue_would_refuse_before_pushing() {
    let mut registry = Registry::start();
    let scratch = TempDir::new("pequod-publish-errors");
    let module = scratch.0.join("hello");
    write_module(&module, MODULE_CUE);
    let addr = registry.addr.clone();
    let at = |version: &str| format!("{addr}/example.com/hello:{version}");
    let fails = |args: &[&str], expected: &[&str]| {
        let out = pequod(args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        for part in expected {
            assert!(stderr.contains(part), "{args:?}: {part:?} not in {stderr}");
        }
    };
    let dir = module.display().to_string();

    fails(
        &[
            "publish",
            &module.join("sub").display().to_string(),
            &at("v1.0.0"),
        ],
        &[
            "has no cue.mod/module.cue",
            &format!("the module root is {dir}"),
        ],
    );
    for bad in ["1.0.0", "v1.0", "v1.0.0+build", "latest"] {
        fails(
            &["publish", &dir, &at(bad)],
            &["not a canonical semantic version"],
        );
    }
    fails(
        &["publish", &dir, &at("v2.0.0")],
        &["does not match the major version v1", "publish v1.N.N"],
    );
    fails(
        &["publish", &dir, "platform/hello:v1.0.0"],
        &["not a registry host"],
    );

    let no_major = scratch.0.join("no-major");
    write(
        &no_major,
        &[
            (
                "cue.mod/module.cue",
                "module: \"example.com/plain\"\nlanguage: version: \"v0.17.0\"\n",
            ),
            ("plain.cue", "package plain\n"),
        ],
    );
    fails(
        &[
            "publish",
            &no_major.display().to_string(),
            &format!("{}/example.com/plain:v1.0.0", registry.addr),
        ],
        &["implied by \"example.com/plain\" (no @vN suffix means v0)"],
    );
    let out = pequod(
        &[
            "publish",
            &no_major.display().to_string(),
            &format!("{}/example.com/plain:v0.3.0", registry.addr),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let bad_name = scratch.0.join("bad-name");
    write(
        &bad_name,
        &[
            ("cue.mod/module.cue", MODULE_CUE),
            ("what?.cue", "package x\n"),
        ],
    );
    fails(
        &["publish", &bad_name.display().to_string(), &at("v1.0.0")],
        &["files cue would not publish", "what?.cue: invalid char '?'"],
    );
    assert!(
        !registry
            .requests()
            .iter()
            .any(|r| r.contains("/example.com/hello/") && !r.starts_with("GET ")),
        "nothing pushed by a failed check: {:?}",
        registry.requests()
    );

    registry.stop();
    fails(
        &["publish", &dir, &at("v1.0.0")],
        &[&format!("cannot reach registry {addr}")],
    );
}

#[test]
fn publish_uses_credentials_from_flags_or_the_environment() {
    let registry = Registry::start_with_auth("pusher", "s3cret");
    let scratch = TempDir::new("pequod-publish-auth");
    let module = scratch.0.join("hello");
    write_module(&module, MODULE_CUE);
    let dir = module.display().to_string();
    let reference = format!("{}/example.com/hello:v1.0.0", registry.addr);

    let anonymous = pequod(&["publish", &dir, &reference], &[]);
    assert_eq!(anonymous.status.code(), Some(1));
    let stderr = text(&anonymous.stderr);
    assert!(
        stderr.contains(&format!("registry {}", registry.addr)) && stderr.contains("--username"),
        "{stderr}"
    );

    let wrong = pequod(
        &[
            "publish",
            &dir,
            &reference,
            "--username",
            "pusher",
            "--password",
            "nope",
        ],
        &[],
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong.stderr));

    let flags = pequod(
        &[
            "publish",
            &dir,
            &reference,
            "--username",
            "pusher",
            "--password",
            "s3cret",
        ],
        &[],
    );
    assert!(flags.status.success(), "{}", text(&flags.stderr));

    let env = pequod(
        &["publish", &dir, &reference.replace("v1.0.0", "v1.0.1")],
        &[
            ("PEQUOD_REGISTRY_USERNAME", "pusher"),
            ("PEQUOD_REGISTRY_PASSWORD", "s3cret"),
        ],
    );
    assert!(env.status.success(), "{}", text(&env.stderr));
    assert!(text(&env.stdout).starts_with(&format!(
        "pushed {}/example.com/hello:v1.0.1 sha256:",
        registry.addr
    )));
}

#[test]
fn pequod_render_fetches_dependencies_from_the_cue_registry() {
    let registry = Registry::start();
    let scratch = TempDir::new("pequod-render-deps");
    let hello = scratch.0.join("hello");
    write_module(&hello, MODULE_CUE);
    publish(
        &hello,
        &format!("{}/example.com/hello:v1.2.0", registry.addr),
    );

    let app = scratch.0.join("app");
    write(
        &app,
        &[
            (
                "cue.mod/module.cue",
                "module: \"example.com/app@v0\"\nlanguage: version: \"v0.17.0\"\n\
                 deps: \"example.com/hello@v1\": v: \"v1.2.0\"\n",
            ),
            (
                "app.cue",
                r#"package app

import "example.com/hello@v1"

input: metadata: {name: string, namespace: string}
graph: nodes: [{
	id: "config"
	object: {
		apiVersion: "v1"
		kind:       "ConfigMap"
		metadata: {name: input.metadata.name, namespace: input.metadata.namespace}
		data: message: hello.message
	}
}]
"#,
            ),
        ],
    );
    let app_dir = app.display().to_string();
    let render = |cue_registry: &str| {
        pequod(
            &["render", &app_dir, "--name", "web", "--namespace", "team-a"],
            // The module cache is content-addressed: the user's own is fine to share.
            &[("CUE_REGISTRY", cue_registry)],
        )
    };
    let out = render(&registry.addr);
    assert!(out.status.success(), "render: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("message: hello from pequod"),
        "{}",
        text(&out.stdout)
    );

    let out = render(&format!("{},example.com=none", registry.addr));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no registry serves dependency example.com/hello@v1"),
        "{}",
        text(&out.stderr)
    );
}
