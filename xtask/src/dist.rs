//! `cargo xtask dist …`: the container image's build, as steps that run without Docker.
//!
//! The `Dockerfile` only calls these steps (and the guest's `build.sh`, which `dist guest`
//! calls too), and `cargo xtask test` runs all of them, so what the image build does is what
//! CI checks:
//!
//! - `dist guest --out DIR`: the CUE guest wasm (Go → wasip1) into `DIR/cue-guest.wasm`.
//! - `dist operator --guest WASM --out DIR [--profile release|dev]`: `pequod-operator` built
//!   with that prebuilt guest (`PEQUOD_CUE_GUEST_WASM`, so this step needs no Go) into
//!   `DIR/pequod-operator`. Its own target directory (`target/dist/cargo`), so the prebuilt
//!   guest never invalidates the workspace's usual build.
//! - `dist rootfs --from DIR --out ROOTFS`: the final image's files: the binary, `/etc/passwd`
//!   and `/etc/group` with `nonroot` (65532), an empty cache mount point `/var/cache/pequod`
//!   owned by it, and the shared libraries the binary needs beyond the base image (glibc and
//!   libgcc come from `gcr.io/distroless/cc-debian12`).
//! - `dist check --rootfs ROOTFS`: that tree checked, and the binary run from it, as 65532
//!   when we are root.
//! - `dist ci`: the four with the dev profile into `target/dist/ci` (`cargo xtask test` runs it).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Subcommand, ValueEnum};

/// The operator's path in the image.
pub const BINARY: &str = "usr/local/bin/pequod-operator";
/// The cache mount point (`PEQUOD_CACHE_DIR` in the image), writable by `nonroot`.
pub const CACHE_DIR: &str = "var/cache/pequod";
/// The precompiled CUE guest shipped in the image (`PEQUOD_CUE_SEED_DIR`): pods start without
/// compiling it when their CPU runs it, and compile into the cache otherwise.
pub const SEED_DIR: &str = "usr/share/pequod/cue";
/// The top-level pieces of the rootfs; the Dockerfile copies each (the cache with `--chown`).
pub const ROOTFS_PARTS: &[&str] = &["usr", "etc", CACHE_DIR];
/// distroless's `nonroot` user and group.
pub const NONROOT: u32 = 65532;
/// The final stage's base: glibc 2.36 (Debian 12), libgcc, OpenSSL, CA certificates, tzdata.
pub const BASE_IMAGE: &str = "gcr.io/distroless/cc-debian12:nonroot";
/// The newest glibc symbol version the base image provides.
const BASE_GLIBC: (u32, u32) = (2, 36);
/// Shared libraries the base image provides (glibc and the GCC runtime).
const BASE_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

/// Same users and groups as distroless (the rootfs's `/etc` replaces the base's files).
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n";

/// `cargo xtask dist <step>`.
#[derive(Subcommand)]
pub enum Command {
    /// Build the CUE guest (Go → wasip1) into DIR/cue-guest.wasm with crates/cue/guest/build.sh.
    Guest {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build pequod-operator around a prebuilt guest (no Go needed) into DIR/pequod-operator.
    Operator {
        /// The guest wasm from `dist guest`.
        #[arg(long)]
        guest: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Cargo profile.
        #[arg(long, value_enum, default_value_t = Profile::Release)]
        profile: Profile,
    },
    /// Assemble the final image's file tree from DIR/pequod-operator.
    Rootfs {
        /// The directory `dist operator` wrote.
        #[arg(long)]
        from: PathBuf,
        /// The rootfs directory (replaced if it is an earlier rootfs).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a rootfs and run the operator from it.
    Check {
        /// The rootfs directory.
        #[arg(long)]
        rootfs: PathBuf,
    },
    /// What `cargo xtask test` runs: the four steps with the dev profile into target/dist/ci.
    Ci,
}

/// The cargo profile of `dist operator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// What the image ships.
    Release,
    /// Faster to build; what CI builds.
    Dev,
}

impl Profile {
    fn cargo_name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "dev",
        }
    }

    fn dir_name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "debug",
        }
    }
}

pub fn run(root: &Path, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Guest { out } => guest_step(root, &out).map(drop),
        Command::Operator {
            guest,
            out,
            profile,
        } => operator(root, &guest, &out, profile).map(drop),
        Command::Rootfs { from, out } => rootfs_step(&from, &out),
        Command::Check { rootfs } => check(&rootfs),
        Command::Ci => ci(root),
    }
}

/// The four steps as the Dockerfile runs them, but with the dev profile. Cold on 2 cores the
/// operator takes ~7 min in dev and ~25 min in release (in its own target directory, see
/// [`operator`]); the checks are the same, and the Dockerfile test pins `release` there.
pub fn ci(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("target/dist/ci");
    let step = |name: &str, run: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<()> {
        eprintln!("\n==> dist {name}");
        let started = Instant::now();
        run()?;
        eprintln!("<== dist {name} ({:.1?})", started.elapsed());
        Ok(())
    };
    let (guest, bin, rootfs) = (dir.join("guest"), dir.join("bin"), dir.join("rootfs"));
    step("guest", &|| guest_step(root, &guest).map(drop))?;
    step("operator --profile dev", &|| {
        operator(root, &guest.join("cue-guest.wasm"), &bin, Profile::Dev).map(drop)
    })?;
    step("rootfs", &|| rootfs_step(&bin, &rootfs))?;
    step("check", &|| check(&rootfs))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| path.display().to_string())
}

/// Total bytes of the files under `path`.
fn tree_size(path: &Path) -> anyhow::Result<u64> {
    let meta = std::fs::symlink_metadata(path).with_context(|| path.display().to_string())?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).with_context(|| path.display().to_string())? {
        total += tree_size(&entry?.path())?;
    }
    Ok(total)
}

fn report(what: &Path, started: Instant) -> anyhow::Result<()> {
    let size = tree_size(what)?;
    println!(
        "{}: {size} bytes ({:.1} MiB) in {:.1?}",
        what.display(),
        crate::bench_cue::mib(size),
        started.elapsed()
    );
    Ok(())
}

/// `dist guest`: runs the same script as `crates/cue/build.rs` and the Dockerfile's Go stage.
fn guest_step(root: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let wasm = absolute(out)?.join("cue-guest.wasm");
    let status = Process::new("bash")
        .arg(root.join("crates/cue/guest/build.sh"))
        .arg(&wasm)
        .env("GOTOOLCHAIN", "local")
        .status()
        .context("running crates/cue/guest/build.sh (needs bash and Go 1.26)")?;
    ensure!(
        status.success(),
        "crates/cue/guest/build.sh failed ({status})"
    );
    report(&wasm, started)?;
    Ok(wasm)
}

/// `dist operator`: `cargo build` with `PEQUOD_CUE_GUEST_WASM`, in `target/dist/cargo`.
fn operator(root: &Path, guest: &Path, out: &Path, profile: Profile) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let guest = absolute(guest)?;
    ensure!(
        guest.is_file(),
        "{} is not a file (build it with `cargo xtask dist guest`)",
        guest.display()
    );
    let target_dir = root.join("target/dist/cargo");
    let guest = content_addressed(&guest, &target_dir.join("guest"))?;
    let args = [
        "build",
        "--locked",
        "--package",
        "pequod-operator",
        "--bin",
        "pequod-operator",
        "--profile",
        profile.cargo_name(),
    ];
    eprintln!(
        "==> PEQUOD_CUE_GUEST_WASM={} cargo {} --target-dir {}",
        guest.display(),
        args.join(" "),
        target_dir.display()
    );
    let status = crate::nested_cargo()
        .current_dir(root)
        .args(args)
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PEQUOD_CUE_GUEST_WASM", &guest)
        .env("PATH", path_without_go()?)
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "cargo build of pequod-operator failed ({status})"
    );
    let built = target_dir.join(profile.dir_name()).join("pequod-operator");
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let binary = out.join("pequod-operator");
    std::fs::copy(&built, &binary)
        .with_context(|| format!("copying {} to {}", built.display(), binary.display()))?;
    report(&binary, started)?;
    Ok(binary)
}

/// `PATH` without the directories that hold `go` (unless they also hold the C toolchain), so
/// this step proves what the Dockerfile's Rust stage relies on: no Go is needed.
fn path_without_go() -> anyhow::Result<std::ffi::OsString> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let has = |dir: &Path, name: &str| dir.join(name).is_file();
    let (kept, dropped): (Vec<PathBuf>, Vec<PathBuf>) = std::env::split_paths(&path)
        .partition(|dir| !has(dir, "go") || has(dir, "cc") || has(dir, "cargo"));
    if let Some(dir) = kept.iter().find(|dir| has(dir, "go")) {
        println!(
            "note: go stays on PATH (in {}, with the C toolchain): not proving the build needs no Go",
            dir.display()
        );
    } else if !dropped.is_empty() {
        eprintln!(
            "(without Go: {} left out of PATH)",
            std::env::join_paths(&dropped)?.display()
        );
    }
    Ok(std::env::join_paths(kept)?)
}

/// A copy of `guest` named by its content. `crates/cue/build.rs` reruns when
/// `PEQUOD_CUE_GUEST_WASM` changes, not when the file it names does: a new name per content
/// makes a changed guest rebuild the operator, and an unchanged one not.
fn content_addressed(guest: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    use std::hash::Hasher as _;
    let bytes = std::fs::read(guest).with_context(|| guest.display().to_string())?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(&bytes);
    let copy = dir.join(format!("cue-guest-{:016x}.wasm", hasher.finish()));
    if !copy.is_file() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        // Older copies are stale: keep one.
        for entry in std::fs::read_dir(dir)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        std::fs::write(&copy, &bytes).with_context(|| copy.display().to_string())?;
    }
    Ok(copy)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| path.display().to_string())
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::write(path, contents).with_context(|| path.display().to_string())?;
    set_mode(path, mode)
}

/// `dist rootfs`: the final stage's files, laid out as in the image.
fn rootfs_step(from: &Path, out: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let source = from.join("pequod-operator");
    ensure!(
        source.is_file(),
        "{} is missing (run `cargo xtask dist operator` first)",
        source.display()
    );
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| out.display().to_string())?
            .next()
            .is_none();
        ensure!(
            empty || out.join(BINARY).is_file(),
            "{} exists and is not an earlier rootfs: not replacing it",
            out.display()
        );
        std::fs::remove_dir_all(out).with_context(|| out.display().to_string())?;
    }
    let binary = out.join(BINARY);
    if let Some(dir) = binary.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::copy(&source, &binary).with_context(|| binary.display().to_string())?;
    set_mode(&binary, 0o755)?;
    write_file(&out.join("etc/passwd"), PASSWD, 0o644)?;
    write_file(&out.join("etc/group"), GROUP, 0o644)?;
    precompile_seed(&binary, &out.join(SEED_DIR))?;
    let cache = out.join(CACHE_DIR);
    std::fs::create_dir_all(&cache).with_context(|| cache.display().to_string())?;
    set_mode(&cache, 0o755)?;
    if is_root() {
        std::os::unix::fs::chown(&cache, Some(NONROOT), Some(NONROOT))
            .with_context(|| cache.display().to_string())?;
    }
    for (name, path) in needed_libraries(&binary)? {
        let dir = out.join("usr/lib").join(multiarch(&path)?);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let copy = dir.join(&name);
        std::fs::copy(&path, &copy)
            .with_context(|| format!("copying {} to {}", path.display(), copy.display()))?;
        set_mode(&copy, 0o644)?;
        println!("library {name} ({})", path.display());
    }
    report(out, started)
}

/// Runs the operator once to compile the CUE guest into `seed` (the same code and cache
/// layout as a pod's own cache), readable by everyone.
fn precompile_seed(binary: &Path, seed: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let output = Process::new(binary)
        .args(["--precompile-guest", "--log-format=text", "--cue-cache-dir"])
        .arg(seed)
        .env("NO_COLOR", "1")
        .output()
        .context("running pequod-operator --precompile-guest")?;
    ensure!(
        output.status.success(),
        "pequod-operator --precompile-guest failed ({}):\n{}",
        output.status,
        last_lines(&String::from_utf8_lossy(&output.stderr), 20)
    );
    for entry in std::fs::read_dir(seed).with_context(|| seed.display().to_string())? {
        set_mode(&entry?.path(), 0o644)?;
    }
    set_mode(seed, 0o755)?;
    println!(
        "seed: the CUE guest precompiled into /{SEED_DIR} ({:.1?})",
        started.elapsed()
    );
    Ok(())
}

/// The multiarch directory of a library path (`/lib/x86_64-linux-gnu/libz.so.1` → that triple).
fn multiarch(library: &Path) -> anyhow::Result<String> {
    library
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.contains("-linux-"))
        .with_context(|| format!("{} is not in a multiarch directory", library.display()))
}

/// The shared libraries (soname, resolved file) `binary` loads that the base image lacks,
/// as `ldd` resolves them on this machine.
fn needed_libraries(binary: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let output = Process::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || text.contains("not a dynamic executable") {
        // Statically linked: nothing to copy.
        return Ok(Vec::new());
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue;
        };
        ensure!(!rest.contains("not found"), "ldd: {name} not found");
        if BASE_LIBS.contains(&name) || name.starts_with("linux-vdso") {
            continue;
        }
        let path = rest.split(" (").next().unwrap_or(rest).trim();
        let path = std::fs::canonicalize(path).with_context(|| path.to_owned())?;
        libraries.push((name.to_owned(), path));
    }
    Ok(libraries)
}

/// `readelf` output for `file`.
fn readelf(flag: &str, file: &Path) -> anyhow::Result<String> {
    let output = Process::new("readelf")
        .args([flag, "--wide"])
        .arg(file)
        .output()
        .context("running readelf (binutils)")?;
    ensure!(
        output.status.success(),
        "readelf {flag} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The `NEEDED` entries of an ELF file.
fn needed(file: &Path) -> anyhow::Result<Vec<String>> {
    Ok(readelf("--dynamic", file)?
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split_once('[')?.1.split_once(']'))
        .map(|(name, _)| name.to_owned())
        .collect())
}

/// The newest `GLIBC_x.y` version an ELF file asks for.
fn newest_glibc(file: &Path) -> anyhow::Result<Option<(u32, u32)>> {
    Ok(readelf("--version-info", file)?
        .split(|c: char| c.is_whitespace() || c == '@')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|version| {
            let mut parts = version.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
            Some((major, minor))
        })
        .max())
}

/// `dist check`: the tree, then the binary run from it.
fn check(rootfs: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let rootfs = absolute(rootfs)?;
    let binary = rootfs.join(BINARY);
    check_tree(&rootfs, &binary)?;
    let libs = check_libraries(&rootfs, &binary)?;
    let work = rootfs.with_extension("check");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| work.display().to_string())?;
    }
    std::fs::create_dir_all(&work).with_context(|| work.display().to_string())?;
    let runner = Runner::new(binary, libs, &work)?;
    runner.check_cli()?;
    runner.check_without_cluster()?;
    runner.check_cache(&work, &rootfs.join(SEED_DIR))?;
    std::fs::remove_dir_all(&work).with_context(|| work.display().to_string())?;
    println!(
        "rootfs {} checked in {:.1?}",
        rootfs.display(),
        started.elapsed()
    );
    Ok(())
}

fn check_tree(rootfs: &Path, binary: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta = std::fs::metadata(binary).with_context(|| binary.display().to_string())?;
    ensure!(meta.is_file(), "{} is not a file", binary.display());
    ensure!(
        meta.permissions().mode() & 0o111 == 0o111,
        "{} is not executable by everyone",
        binary.display()
    );
    for (file, entry) in [
        ("etc/passwd", "nonroot:x:65532:65532:"),
        ("etc/group", "nonroot:x:65532:"),
    ] {
        let text = std::fs::read_to_string(rootfs.join(file)).context(file)?;
        ensure!(
            text.lines().any(|line| line.starts_with(entry)),
            "/{file} has no `{entry}` entry"
        );
    }
    let cache = rootfs.join(CACHE_DIR);
    let meta = std::fs::metadata(&cache).with_context(|| cache.display().to_string())?;
    ensure!(meta.is_dir(), "/{CACHE_DIR} is not a directory");
    ensure!(
        std::fs::read_dir(&cache)?.next().is_none(),
        "/{CACHE_DIR} is not empty"
    );
    if is_root() {
        ensure!(
            meta.uid() == NONROOT && meta.gid() == NONROOT,
            "/{CACHE_DIR} is owned by {}:{}, not {NONROOT}:{NONROOT}",
            meta.uid(),
            meta.gid()
        );
    }
    let seeded = std::fs::read_dir(rootfs.join(SEED_DIR))
        .with_context(|| format!("/{SEED_DIR}"))?
        .flatten()
        .any(|entry| entry.path().extension().is_some_and(|e| e == "cwasm"));
    ensure!(seeded, "/{SEED_DIR} holds no precompiled guest");
    check_parts(rootfs, Path::new(""))?;
    println!(
        "ok: /{BINARY} executable, nonroot {NONROOT} in /etc, empty /{CACHE_DIR}, a seed in /{SEED_DIR}"
    );
    Ok(())
}

/// Everything in the rootfs lies in one of [`ROOTFS_PARTS`] (the Dockerfile copies only those).
fn check_parts(rootfs: &Path, relative: &Path) -> anyhow::Result<()> {
    let dir = rootfs.join(relative);
    for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let path = relative.join(entry?.file_name());
        if ROOTFS_PARTS.iter().any(|part| path.starts_with(part)) {
            continue;
        }
        ensure!(
            ROOTFS_PARTS
                .iter()
                .any(|part| Path::new(part).starts_with(&path)),
            "/{} is outside what the Dockerfile copies ({ROOTFS_PARTS:?})",
            path.display()
        );
        check_parts(rootfs, &path)?;
    }
    Ok(())
}

/// Every library the binary (and each library shipped) needs is in the base image or the
/// rootfs, and none asks for a newer glibc than the base has. Returns the rootfs's library
/// directories (for `LD_LIBRARY_PATH`).
fn check_libraries(rootfs: &Path, binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let mut shipped = Vec::new();
    let lib = rootfs.join("usr/lib");
    if lib.is_dir() {
        for dir in std::fs::read_dir(&lib)? {
            let dir = dir?.path();
            for file in std::fs::read_dir(&dir)? {
                shipped.push(file?.path());
            }
            dirs.push(dir);
        }
    }
    let names: Vec<String> = shipped
        .iter()
        .filter_map(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
        .collect();
    for file in std::iter::once(binary).chain(shipped.iter().map(PathBuf::as_path)) {
        for name in needed(file)? {
            ensure!(
                BASE_LIBS.contains(&name.as_str()) || names.contains(&name),
                "{} needs {name}, which neither {BASE_IMAGE} nor the rootfs has",
                file.display()
            );
        }
        if let Some(version) = newest_glibc(file)? {
            ensure!(
                version <= BASE_GLIBC,
                "{} needs GLIBC_{}.{}, newer than {BASE_IMAGE}'s {}.{}",
                file.display(),
                version.0,
                version.1,
                BASE_GLIBC.0,
                BASE_GLIBC.1
            );
        }
    }
    println!(
        "ok: libraries from the base image or the rootfs ({}), glibc <= {}.{}",
        if names.is_empty() {
            "none shipped".to_owned()
        } else {
            names.join(", ")
        },
        BASE_GLIBC.0,
        BASE_GLIBC.1
    );
    Ok(dirs)
}

/// Runs the rootfs's binary with a clean environment, as `nonroot` when we are root.
struct Runner {
    binary: PathBuf,
    library_path: String,
    /// `setpriv` prefix when we run as 65532; `None` when we run as ourselves.
    as_nonroot: Option<PathBuf>,
    home: PathBuf,
}

impl Runner {
    fn new(binary: PathBuf, libs: Vec<PathBuf>, work: &Path) -> anyhow::Result<Self> {
        let library_path = std::env::join_paths(libs)?.to_string_lossy().into_owned();
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file());
        let as_nonroot = match (is_root(), setpriv) {
            (true, Some(setpriv)) => Some(setpriv),
            (true, None) => {
                println!("skip: running as {NONROOT} (no setpriv; the checks run as root)");
                None
            }
            (false, _) => {
                println!("skip: running as {NONROOT} (not root; the checks run as this user)");
                None
            }
        };
        let home = work.join("home");
        std::fs::create_dir_all(&home)?;
        if as_nonroot.is_some() {
            std::os::unix::fs::chown(work, Some(NONROOT), Some(NONROOT))?;
            std::os::unix::fs::chown(&home, Some(NONROOT), Some(NONROOT))?;
        }
        Ok(Self {
            binary,
            library_path,
            as_nonroot,
            home,
        })
    }

    /// The binary with a clean environment: HOME, LD_LIBRARY_PATH and `env` only.
    fn command(&self, args: &[&str], env: &[(&str, &Path)]) -> Process {
        let mut command = match &self.as_nonroot {
            Some(setpriv) => {
                let mut command = Process::new(setpriv);
                command
                    .args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"])
                    .arg(&self.binary);
                command
            }
            None => Process::new(&self.binary),
        };
        command
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("LD_LIBRARY_PATH", &self.library_path)
            .env("PEQUOD_HTTP_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    fn who(&self) -> String {
        if self.as_nonroot.is_some() {
            format!("as {NONROOT}")
        } else {
            "as this user".to_owned()
        }
    }

    /// `--version` and `--help` work.
    fn check_cli(&self) -> anyhow::Result<()> {
        for (flag, expected) in [
            ("--version", "pequod-operator "),
            ("--help", "--leader-elect"),
        ] {
            let output = self
                .command(&[flag], &[])
                .output()
                .with_context(|| format!("running {} {flag}", self.binary.display()))?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            ensure!(
                output.status.success() && stdout.contains(expected),
                "pequod-operator {flag} failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        println!("ok: --version and --help {}", self.who());
        Ok(())
    }

    /// Without any cluster configuration it stops at once with a clear error.
    fn check_without_cluster(&self) -> anyhow::Result<()> {
        let cache = self.home.join("cache");
        let output = run_until(
            self.command(&[], &[("PEQUOD_CACHE_DIR", &cache)]),
            Duration::from_secs(60),
        )?;
        let error = clear_failure(&output, "no Kubernetes client configuration")?;
        println!(
            "ok: without a kubeconfig it stops ({}) {}: {error}",
            output.status,
            self.who()
        );
        Ok(())
    }

    /// As the image runs it (leader election on) against an unreachable cluster: it compiles
    /// the guest into a writable cache, then waits for the Lease; SIGTERM stops it with 0. Then
    /// the same with that cache read-only: it loads the compiled guest and writes nothing.
    fn check_cache(&self, work: &Path, seed: &Path) -> anyhow::Result<()> {
        let kubeconfig = work.join("kubeconfig");
        write_file(&kubeconfig, KUBECONFIG, 0o644)?;
        let cache = work.join("cache");
        std::fs::create_dir_all(&cache)?;
        if self.as_nonroot.is_some() {
            std::os::unix::fs::chown(&cache, Some(NONROOT), Some(NONROOT))?;
        }
        let env = [
            ("KUBECONFIG", kubeconfig.as_path()),
            ("PEQUOD_CACHE_DIR", cache.as_path()),
        ];
        let (compiled, took) = self.run_to_leader_election(&env)?;
        ensure!(compiled, "an empty cache, yet the guest was not compiled");
        let cwasm = cache
            .join("cue")
            .read_dir()?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|e| e == "cwasm"))
            .with_context(|| format!("no compiled guest in {}", cache.display()))?;
        println!(
            "ok: {} it compiled the guest into the cache ({:.1} MiB), waited for the Lease and \
             stopped on SIGTERM with 0 ({took:.1?})",
            self.who(),
            crate::bench_cue::mib(std::fs::metadata(&cwasm)?.len()),
        );
        if self.as_nonroot.is_none() && is_root() {
            println!("skip: read-only cache (root writes anywhere and setpriv is missing)");
            return self.check_seed(work, &kubeconfig, seed);
        }
        let dirs = [cache.join("cue"), cache.clone()];
        for dir in &dirs {
            set_mode(dir, 0o555)?;
        }
        let result = self.run_to_leader_election(&env);
        for dir in &dirs {
            set_mode(dir, 0o755)?;
        }
        let (compiled, took) = result?;
        ensure!(!compiled, "the guest was compiled again despite the cache");
        println!("ok: with that cache read-only it loads the compiled guest ({took:.1?})");
        self.check_seed(work, &kubeconfig, seed)
    }

    /// As the image starts a pod: an empty cache and the image's seed: nothing is compiled.
    fn check_seed(&self, work: &Path, kubeconfig: &Path, seed: &Path) -> anyhow::Result<()> {
        let cache = work.join("seeded-cache");
        std::fs::create_dir_all(&cache)?;
        if self.as_nonroot.is_some() {
            std::os::unix::fs::chown(&cache, Some(NONROOT), Some(NONROOT))?;
        }
        let env = [
            ("KUBECONFIG", kubeconfig),
            ("PEQUOD_CACHE_DIR", cache.as_path()),
            ("PEQUOD_CUE_SEED_DIR", seed),
        ];
        let (compiled, took) = self.run_to_leader_election(&env)?;
        ensure!(
            !compiled,
            "an empty cache and the image's seed, yet the guest was compiled"
        );
        println!("ok: with an empty cache and the image's seed nothing is compiled ({took:.1?})");
        Ok(())
    }

    /// Starts the operator, waits for its "waiting for leadership" log line, sends SIGTERM and
    /// expects status 0. Returns whether it compiled the guest, and the time taken.
    fn run_to_leader_election(&self, env: &[(&str, &Path)]) -> anyhow::Result<(bool, Duration)> {
        let started = Instant::now();
        let mut child = self
            .command(&[], env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting pequod-operator")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let drain = {
            let (mut pipe, stderr) = (child.stderr.take(), stderr.clone());
            std::thread::spawn(move || {
                let mut buffer = [0; 8192];
                while let Some(Ok(n @ 1..)) = pipe.as_mut().map(|pipe| pipe.read(&mut buffer)) {
                    stderr.lock().map(|mut s| s.extend(&buffer[..n])).ok();
                }
            })
        };
        let text = || {
            stderr
                .lock()
                .map(|s| String::from_utf8_lossy(&s).into_owned())
                .unwrap_or_default()
        };
        let waiting = loop {
            if log_lines(&text()).any(|(message, _)| message == "waiting for leadership") {
                break true;
            }
            if child.try_wait()?.is_some() || started.elapsed() > Duration::from_secs(300) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let pid = child.id().to_string();
        // The shell's `kill` builtin: no procps needed.
        let signalled = Process::new("sh")
            .args(["-c", "kill -TERM \"$1\" 2>/dev/null", "sh", &pid])
            .status()
            .is_ok_and(|status| status.success());
        let status = wait_with_timeout(&mut child, Duration::from_secs(60));
        let _ = drain.join();
        let text = text();
        let stopped = matches!(&status, Ok(status) if status.success());
        ensure!(
            waiting && signalled && stopped && !text.contains("panicked"),
            "pequod-operator should wait for the Lease, then stop on SIGTERM with 0 ({status:?}):\n{}",
            last_lines(&text, 30)
        );
        let compiled = log_lines(&text).any(|(message, fields)| {
            message == "CUE guest ready" && fields.get("compiled") == Some(&true.into())
        });
        Ok((compiled, started.elapsed()))
    }
}

/// A kubeconfig whose API server does not answer (nothing listens on port 1).
const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
users:
- name: nobody
  user:
    token: not-a-token
contexts:
- name: nowhere
  context:
    cluster: nowhere
    user: nobody
current-context: nowhere
";

/// (message, fields) of the operator's JSON log lines.
fn log_lines(stderr: &str) -> impl Iterator<Item = (String, serde_json::Value)> + '_ {
    stderr.lines().filter_map(|line| {
        let line: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = line.get("fields")?.clone();
        let message = fields.get("message")?.as_str()?.to_owned();
        Some((message, fields))
    })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `error` of the operator's "operator failed" log line, if it failed that way, with
/// `expected` in it and no panic.
fn clear_failure(output: &Output, expected: &str) -> anyhow::Result<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = log_lines(&stderr).find_map(|(message, fields)| {
        (message == "operator failed").then(|| fields.get("error")?.as_str().map(str::to_owned))?
    });
    match error {
        Some(error)
            if !output.status.success()
                && error.contains(expected)
                && !stderr.contains("panicked") =>
        {
            Ok(error)
        }
        _ => bail!(
            "pequod-operator should fail with a clear error about {expected:?} ({}):\n{}",
            output.status,
            last_lines(&stderr, 30)
        ),
    }
}

/// Runs `command` to completion, killed after `limit`.
fn run_until(mut command: Process, limit: Duration) -> anyhow::Result<Output> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pequod-operator")?;
    // Drain the pipes on threads so a chatty child never blocks.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait_with_timeout(&mut child, limit);
    let output = Output {
        status: status
            .as_ref()
            .map_or_else(|_| ExitStatus::default(), |s| *s),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    match status {
        Ok(_) => Ok(output),
        Err(error) => Err(error.context(last_lines(&String::from_utf8_lossy(&output.stderr), 30))),
    }
}

/// Waits for `child`; kills it after `limit`.
fn wait_with_timeout(child: &mut Child, limit: Duration) -> anyhow::Result<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("pequod-operator still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    //! The Dockerfile may only call the steps above, so it cannot drift from what CI runs.

    use clap::Parser as _;

    use super::*;

    /// (instruction, arguments) with continuation lines joined and comments dropped.
    fn instructions() -> Vec<(String, String)> {
        let text =
            std::fs::read_to_string(crate::repo_root().join("Dockerfile")).expect("Dockerfile");
        let mut out = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(head) = line.strip_suffix('\\') {
                current.push_str(head);
                current.push(' ');
                continue;
            }
            current.push_str(line);
            let (keyword, args) = current.split_once(' ').unwrap_or((current.as_str(), ""));
            out.push((keyword.to_uppercase(), args.trim().to_owned()));
            current.clear();
        }
        assert!(current.is_empty(), "Dockerfile ends in a continuation");
        out
    }

    /// The instructions of each stage, by `FROM` line.
    fn stages() -> Vec<(String, Vec<(String, String)>)> {
        let mut stages: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for (keyword, args) in instructions() {
            if keyword == "FROM" {
                stages.push((args, Vec::new()));
            } else {
                stages
                    .last_mut()
                    .expect("FROM comes first")
                    .1
                    .push((keyword, args));
            }
        }
        stages
    }

    #[test]
    fn every_run_is_a_step_ci_runs() {
        let mut steps = Vec::new();
        for (keyword, args) in instructions() {
            if keyword != "RUN" {
                continue;
            }
            assert!(
                !args.contains(['&', ';', '|', '$', '"', '\'', '`', '>', '<']),
                "one step per RUN, no shell: {args}"
            );
            let words: Vec<&str> = args
                .split_whitespace()
                .skip_while(|word| word.starts_with("--mount=") || word.starts_with("--network="))
                .collect();
            match words.as_slice() {
                ["bash", "crates/cue/guest/build.sh", out] => {
                    assert!(
                        out.ends_with("/cue-guest.wasm"),
                        "the guest as `dist guest` names it: {out}"
                    );
                    steps.push("guest".to_owned());
                }
                ["cargo", "xtask", "dist", rest @ ..] => {
                    let cli = crate::Cli::try_parse_from(
                        ["cargo xtask", "dist"].iter().chain(rest.iter()),
                    )
                    .unwrap_or_else(|e| panic!("`{args}` is not a valid dist step: {e}"));
                    let crate::Command::Dist { command } = cli.command else {
                        panic!("not a dist step: {args}");
                    };
                    steps.push(match command {
                        Command::Guest { .. } => "guest".to_owned(),
                        Command::Operator { profile, .. } => {
                            assert_eq!(profile, Profile::Release, "the image ships release");
                            "operator".to_owned()
                        }
                        Command::Rootfs { .. } => "rootfs".to_owned(),
                        Command::Check { .. } => "check".to_owned(),
                        Command::Ci => panic!("the Dockerfile runs the steps one by one"),
                    });
                }
                _ => panic!(
                    "RUN `{args}` is neither `cargo xtask dist …` nor the guest's build.sh: \
                     make it an xtask dist step that CI runs"
                ),
            }
        }
        assert_eq!(steps, ["guest", "operator", "rootfs", "check"]);
    }

    #[test]
    fn final_stage_is_distroless_nonroot_from_the_rootfs() {
        let stages = stages();
        let (base, last) = stages.last().expect("stages");
        assert_eq!(base, BASE_IMAGE);
        let get = |keyword: &str| -> Vec<&str> {
            last.iter()
                .filter(|(k, _)| k == keyword)
                .map(|(_, args)| args.as_str())
                .collect()
        };
        assert!(get("RUN").is_empty(), "the final stage runs nothing");
        assert_eq!(get("USER"), [format!("{NONROOT}:{NONROOT}")]);
        assert_eq!(get("ENTRYPOINT"), [format!("[\"/{BINARY}\"]")]);
        let copies = get("COPY");
        assert_eq!(
            copies.len(),
            ROOTFS_PARTS.len(),
            "one COPY per rootfs part: {copies:?}"
        );
        for part in ROOTFS_PARTS {
            let chown = if *part == CACHE_DIR {
                format!("--chown={NONROOT}:{NONROOT} ")
            } else {
                String::new()
            };
            let expected = format!("--from=operator {chown}/rootfs/{part}/ /{part}/");
            assert!(
                copies.contains(&expected.as_str()),
                "missing `COPY {expected}`"
            );
        }
        let env = get("ENV").join(" ");
        assert!(
            env.contains(&format!("PEQUOD_CACHE_DIR=/{CACHE_DIR}")),
            "{env}"
        );
        assert!(
            env.contains(&format!("PEQUOD_CUE_SEED_DIR=/{SEED_DIR}")),
            "{env}"
        );
    }

    #[test]
    fn build_stages_use_the_pinned_toolchains() {
        let root = crate::repo_root();
        let toolchain =
            std::fs::read_to_string(root.join("rust-toolchain.toml")).expect("toolchain");
        let rust = toolchain
            .lines()
            .find_map(|line| line.strip_prefix("channel = "))
            .expect("channel")
            .trim_matches('"');
        let go_mod = std::fs::read_to_string(root.join("crates/cue/guest/go.mod")).expect("go.mod");
        let go = go_mod
            .lines()
            .find_map(|line| line.strip_prefix("go "))
            .expect("go directive");
        let minor = |version: &str| version.split('.').take(2).collect::<Vec<_>>().join(".");
        let images: Vec<String> = stages().into_iter().map(|(from, _)| from).collect();
        assert_eq!(
            images,
            [
                format!("golang:{}-bookworm AS guest", minor(go)),
                format!("rust:{}-bookworm AS operator", minor(rust)),
                BASE_IMAGE.to_owned(),
            ],
            "Go and Rust as pinned, on Debian 12 like the base image"
        );
        let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
        assert!(
            ignore.lines().any(|line| line == "target/"),
            "target/ stays out of the context"
        );
    }
}
