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
    dist(root)?;
    eprintln!("\nall checks passed in {:.1?}", started.elapsed());
    Ok(())
}

/// The container image's steps, as the Dockerfile runs them but with the dev profile. Cold on
/// 2 cores the operator takes ~7 min in dev and ~25 min in release (its own target directory,
/// see `dist operator`); the checks are the same, and the Dockerfile test pins `release` there.
fn dist(root: &Path) -> anyhow::Result<()> {
    use crate::dist;
    let dir = root.join("target/dist/ci");
    let step = |name: &str, run: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<()> {
        eprintln!("\n==> dist {name}");
        let started = Instant::now();
        run()?;
        eprintln!("<== dist {name} ({:.1?})", started.elapsed());
        Ok(())
    };
    let (guest, bin, rootfs) = (dir.join("guest"), dir.join("bin"), dir.join("rootfs"));
    step("guest", &|| dist::guest(root, &guest).map(drop))?;
    step("operator --profile dev", &|| {
        dist::operator(
            root,
            &guest.join("cue-guest.wasm"),
            &bin,
            dist::Profile::Dev,
        )
        .map(drop)
    })?;
    step("rootfs", &|| dist::rootfs(&bin, &rootfs))?;
    step("check", &|| dist::check(&rootfs))
}
