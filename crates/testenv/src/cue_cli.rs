//! The real `cue` command (cuelang.org/go at the version the CUE guest pins), for checking
//! compatibility with what `cue mod publish` pushes. Built once with `go install` through the
//! Go module proxy into `<cache>/tools/bin` (shared with `cargo xtask bench-cue`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The version of cuelang.org/go the guest (crates/cue/guest/go.mod) pins.
pub const CUE_VERSION: &str = "v0.17.1";

/// Path to `cue` at [`CUE_VERSION`], installing it when missing. Panics with the `go install`
/// output when it cannot be built.
pub fn cue() -> PathBuf {
    static CUE: OnceLock<PathBuf> = OnceLock::new();
    CUE.get_or_init(|| {
        let bin_dir = crate::binaries::cache_root().join("tools/bin");
        let cue = bin_dir.join("cue");
        let current = Command::new(&cue).arg("version").output().is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout).contains(&format!("cue version {CUE_VERSION}"))
        });
        if !current {
            std::fs::create_dir_all(&bin_dir).expect("tools dir");
            let output = Command::new("go")
                .args(["install", &format!("cuelang.org/go/cmd/cue@{CUE_VERSION}")])
                .env("GOBIN", &bin_dir)
                .env("GOFLAGS", "-mod=mod")
                .current_dir(std::env::temp_dir())
                .output()
                .unwrap_or_else(|e| {
                    panic!("running go install for cue (Go 1.26 is required): {e}")
                });
            assert!(
                output.status.success(),
                "go install cuelang.org/go/cmd/cue@{CUE_VERSION} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        cue
    })
    .clone()
}
