//! Shared by the engine's integration tests: one engine per test binary, and the platform
//! module of `cue/` as a `ModuleSource`.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pequod_cue::{Engine, EngineConfig, ModuleSource};

/// The repository's `cue/` directory.
pub fn platform_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../cue")
}

/// Every `.cue` file under `dir`, by path relative to it.
pub fn cue_files(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("readable dir")
            .flatten()
            .collect();
        entries.sort_by_key(std::fs::DirEntry::path);
        for entry in entries {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "cue") {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read_to_string(&path).expect("readable file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A package of the platform module (`webservice`, `database`, …).
pub fn platform_module(package: &str) -> ModuleSource {
    ModuleSource::from_files(cue_files(&platform_dir()), package)
}

/// A module from inline files.
pub fn inline_module(files: &[(&str, &str)]) -> ModuleSource {
    let files = files
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect();
    ModuleSource::from_files(files, ".")
}

/// The engine shared by the tests of one binary, with its guest cached on disk.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(EngineConfig::default()).expect("CUE engine starts"))
}
