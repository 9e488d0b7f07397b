//! The real `cue` command (cuelang.org/go at the version the CUE guest pins), for checking
//! compatibility with what `cue mod publish` pushes. Built once with `go install` through the
//! Go module proxy into `<cache>/tools/bin` (shared with `cargo xtask bench-cue`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The version of cuelang.org/go the guest (crates/cue/guest/go.mod) pins.
pub const CUE_VERSION: &str = "v0.17.1";

/// Path to `cue` at [`CUE_VERSION`], installing it when missing. Panics with the `go install`
/// output when it cannot be built.
pub fn cue() -> PathBuf {
    static CUE: OnceLock<PathBuf> = OnceLock::new();
    CUE.get_or_init(|| {
        crate::binaries::go_tool(
            "cue",
            &format!("cuelang.org/go/cmd/cue@{CUE_VERSION}"),
            &[],
            &[],
            |cue| {
                Command::new(cue).arg("version").output().is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stdout)
                        .contains(&format!("cue version {CUE_VERSION}"))
                })
            },
        )
    })
    .clone()
}

/// Runs `cue args…` in `dir` against the registry `cue_registry` (`CUE_REGISTRY` syntax), with
/// its cache and home under `work` so nothing outside the test is read or written; returns
/// stdout. Panics with cue's stderr when it fails.
pub fn run(dir: &Path, work: &Path, cue_registry: &str, args: &[&str]) -> String {
    let output = Command::new(cue())
        .args(args)
        .current_dir(dir)
        .env("CUE_REGISTRY", cue_registry)
        .env("CUE_CACHE_DIR", work.join("cue-cache"))
        .env("HOME", work)
        .output()
        .unwrap_or_else(|e| panic!("running cue {args:?}: {e}"));
    assert!(
        output.status.success(),
        "cue {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes `files` (path relative to `root`, content), creating directories.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("create module directories");
        }
        std::fs::write(&file, content).expect("write module file");
    }
}
