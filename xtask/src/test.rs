//! `cargo xtask test`: the one test command of the README and of CI.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use pequod_testenv::{Profile, binaries};

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("\n==> cargo {}", args.join(" "));
    let started = Instant::now();
    let status = crate::nested_cargo()
        .current_dir(root)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    eprintln!("<== cargo {} ({:.1?})", args.join(" "), started.elapsed());
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    cargo(root, &["fmt", "--all", "--", "--check"])?;
    eprintln!("\n==> codegen --check");
    crate::codegen::run(root, true)?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;

    eprintln!("\n==> testenv build --full");
    let build = Instant::now();
    binaries::ensure(Profile::Full, &mut std::io::stderr())?;
    eprintln!("<== testenv build --full ({:.1?})", build.elapsed());

    eprintln!("\n==> go test (CUE guest, native)");
    let guest = Instant::now();
    let status = Command::new("go")
        .current_dir(root.join("crates/cue/guest"))
        .env("GOTOOLCHAIN", "local")
        .args(["test", "./..."])
        .status()
        .context("running go test in crates/cue/guest")?;
    eprintln!("<== go test ({:.1?})", guest.elapsed());
    if !status.success() {
        bail!("`go test` of the CUE guest failed ({status})");
    }

    cargo(root, &["test", "--workspace", "--no-fail-fast"])?;
    eprintln!("\n==> dist ci");
    crate::dist::ci(root)?;
    eprintln!("\nall checks passed in {:.1?}", started.elapsed());
    Ok(())
}
