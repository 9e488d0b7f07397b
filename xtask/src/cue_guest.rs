//! `cargo xtask cue-guest`: the CUE guest wasm, built by hand (the Rust build does it in
//! `crates/cue/build.rs`; this is for humans and the container build).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};

/// `cargo xtask cue-guest`: builds the guest wasm into `target/cue-guest/guest.wasm`.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let out = root.join("target").join("cue-guest").join("guest.wasm");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let started = Instant::now();
    let status = std::process::Command::new("bash")
        .arg(root.join("crates/cue/guest/build.sh"))
        .arg(&out)
        .env("GOTOOLCHAIN", "local")
        .status()
        .context("running crates/cue/guest/build.sh (needs bash and Go 1.26)")?;
    if !status.success() {
        bail!("crates/cue/guest/build.sh failed ({status})");
    }
    let size = std::fs::metadata(&out)
        .with_context(|| out.display().to_string())?
        .len();
    println!("{}", out.display());
    println!(
        "{size} bytes ({:.1} MiB), built in {:.1?}",
        crate::bench_cue::mib(size),
        started.elapsed()
    );
    Ok(())
}
