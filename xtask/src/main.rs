//! `cargo xtask`: Pequod's project chores.
//!
//! - `codegen [--check]`: write (or check) the generated CRD YAML in `config/crd/`.
//! - `testenv build [--full]`: build the test control plane from the official Go modules.
//! - `testenv up [--full]` / `testenv down`: a control plane in the background for manual use.
//! - `test`: everything CI checks (format, lints, generated files, control plane, all tests).
//! - `cue-guest`: build the CUE guest wasm into `target/cue-guest/guest.wasm`.
//! - `bench-cue [--iterations N]`: the CUE engine's figures next to native Go and the `cue` CLI.
//! - `fuzz [--cases N] [--dev] [--target T]`: the proptest fuzz targets (spec decoding, graph
//!   parsing, source refs) with N cases per property (default 1,000,000), release build.
//! - `demo [--once]` / `demo down`: control plane, operator and samples, converging on screen.
//! - `dist guest|operator|rootfs|check`: the container image's build steps (the `Dockerfile`
//!   calls only these); `dist ci` runs them all with the dev profile, as `test` does.

// A command-line tool: standard output is its interface.
#![allow(clippy::print_stdout)]

mod bench_cue;
mod codegen;
mod cue_guest;
mod demo;
mod dist;
mod fuzz;
mod test;
mod testenv;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Pequod project chores")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the generated files (CRD YAML) from the Rust API types.
    Codegen {
        /// Do not write; fail if a committed file differs from what would be generated.
        #[arg(long)]
        check: bool,
    },
    /// Everything CI checks: rustfmt, clippy, generated files, the test control plane build,
    /// and every test of the workspace against it.
    Test,
    /// Build the CUE guest (Go → wasip1) into target/cue-guest/guest.wasm and print its size.
    CueGuest,
    /// Benchmark the CUE engine (start-up, render latency, memo, peak memory) against the same
    /// request in native Go and the `cue` CLI; prints a table, writes target/bench-cue.json.
    BenchCue(bench_cue::Options),
    /// Run the fuzz targets (the `fuzz_*` proptest properties of crates/api, crates/graph,
    /// crates/cue and crates/source) with N cases per property, release build; prints the
    /// cases and the time per target.
    Fuzz(fuzz::Options),
    /// Build and start a local control plane and the operator, apply config/samples/ and show
    /// the Transforms converge; leaves it all running (`demo down` stops it) unless --once.
    Demo(demo::Options),
    /// The container image's build steps; the Dockerfile calls only these, CI runs them all.
    Dist {
        #[command(subcommand)]
        command: dist::Command,
    },
    /// The local Kubernetes control plane used by tests and demos.
    Testenv {
        #[command(subcommand)]
        command: testenv::Command,
    },
}

/// The repository root (xtask lives one level below it).
/// A `cargo` command for a nested build. `cargo run` gives xtask the variables of its own
/// package; some build scripts (ring's) watch CARGO_MANIFEST_DIR, so passing them on would
/// rebuild half the tree, twice per run.
fn nested_cargo() -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key_text.as_ref())
        {
            command.env_remove(&key);
        }
    }
    command
}

fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Codegen { check } => codegen::run(&repo_root(), check),
        Command::Test => test::run(&repo_root()),
        Command::Testenv { command } => testenv::run(command),
        Command::CueGuest => cue_guest::run(&repo_root()),
        Command::BenchCue(options) => bench_cue::run(&repo_root(), options),
        Command::Fuzz(options) => fuzz::run(&repo_root(), &options),
        Command::Demo(options) => demo::run(&repo_root(), options),
        Command::Dist { command } => dist::run(&repo_root(), command),
    }
}
