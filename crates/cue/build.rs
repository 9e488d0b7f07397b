//! Builds the CUE guest (`guest/`, Go) to wasm so `cargo build` needs no manual step.
//! `PEQUOD_CUE_GUEST_WASM=<file>` uses a guest built elsewhere (the container build does).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("cue-guest.wasm");
    println!("cargo:rerun-if-env-changed=PEQUOD_CUE_GUEST_WASM");
    if let Some(prebuilt) = std::env::var_os("PEQUOD_CUE_GUEST_WASM") {
        std::fs::copy(&prebuilt, &out).unwrap_or_else(|e| {
            panic!(
                "cannot copy PEQUOD_CUE_GUEST_WASM={}: {e}",
                Path::new(&prebuilt).display()
            )
        });
        return;
    }
    let guest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("guest");
    for entry in std::fs::read_dir(&guest)
        .expect("crates/cue/guest exists")
        .flatten()
    {
        let path = entry.path();
        let watched = path
            .extension()
            .is_some_and(|e| e == "go" || e == "mod" || e == "sum" || e == "sh");
        if watched && !path.to_string_lossy().ends_with("_test.go") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed={}", guest.join("overlay").display());
    let status = Command::new("bash")
        .arg(guest.join("build.sh"))
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run crates/cue/guest/build.sh (needs bash and Go 1.26): {e}")
        });
    assert!(
        status.success(),
        "building the CUE guest failed ({status}); run `cargo xtask cue-guest` to see why"
    );
}
