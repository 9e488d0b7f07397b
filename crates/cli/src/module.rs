//! A CUE module from a local directory: the package directory named on the command line, the
//! module root found above it (the nearest ancestor holding `cue.mod/module.cue`), and every
//! `.cue` file of the module, as the engine's [`ModuleSource`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use pequod_cue::ModuleSource;

/// A module read from disk.
#[derive(Debug)]
pub struct LocalModule {
    /// The module root (holds `cue.mod/`), or the package directory when there is no module.
    pub root: PathBuf,
    /// What the engine evaluates.
    pub source: ModuleSource,
}

impl LocalModule {
    /// A position of the module as the user can open it: `file` (relative to the module root)
    /// joined to the root as given on the command line.
    pub fn display_file(&self, file: &str) -> String {
        if file.contains('@') {
            // A dependency module's file (`example.com/x@v0.1.0/x.cue`): not on this disk.
            return file.to_owned();
        }
        self.root.join(file).display().to_string()
    }
}

/// Reads the module that holds `package_dir`. `package_dir` may be the module root itself (the
/// package `.`) or any directory below it; a directory with no `cue.mod/` above it is a module
/// of its own (CUE files only, no dependencies).
pub fn load(package_dir: &Path) -> anyhow::Result<LocalModule> {
    let meta = std::fs::metadata(package_dir)
        .with_context(|| format!("module path {}", package_dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a directory: name the directory of the CUE package to render",
            package_dir.display()
        );
    }
    let absolute = package_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", package_dir.display()))?;
    let (root, package) = match find_root(&absolute) {
        Some(root_abs) => {
            let rel = absolute
                .strip_prefix(&root_abs)
                .context("package directory is not under its module root")?;
            // Keep the root as the user wrote it (relative paths stay relative in messages).
            let mut root = package_dir.to_path_buf();
            for _ in rel.components() {
                root.push("..");
            }
            let root = normalize(&root);
            // Lexical `..` is wrong across symlinks: then the canonical root it is.
            let same = root.canonicalize().is_ok_and(|r| r == root_abs);
            (if same { root } else { root_abs }, slash_path(rel))
        }
        None => (package_dir.to_path_buf(), ".".to_owned()),
    };
    let files = cue_files(&root)?;
    if files.is_empty() {
        bail!("no .cue files under {}", root.display());
    }
    if !files
        .keys()
        .any(|f| parent_dir(f) == package && !f.starts_with("cue.mod/"))
    {
        bail!(
            "{} holds no .cue files (the package directory must contain the package's files)",
            package_dir.display()
        );
    }
    let source = ModuleSource::from_files(files, &package);
    Ok(LocalModule { root, source })
}

/// Fetches the modules `module` depends on (its `cue.mod/module.cue` deps) from the
/// registries `CUE_REGISTRY` names, as `cue` does, into Pequod's module cache
/// (`$PEQUOD_CACHE_DIR/sources`, else `~/.cache/pequod/sources`).
pub fn fetch_dependencies(module: &mut LocalModule) -> anyhow::Result<()> {
    let Some(text) = module.source.files.get("cue.mod/module.cue") else {
        return Ok(());
    };
    let declared = pequod_source::modfile::ModuleFile::parse(text).map_err(|e| {
        anyhow::anyhow!("{}: {e}", module.root.join("cue.mod/module.cue").display())
    })?;
    if declared.deps.is_empty() {
        return Ok(());
    }
    let setting = std::env::var("CUE_REGISTRY").unwrap_or_default();
    let cue_registry = pequod_source::cue_registry::CueRegistry::parse(&setting)
        .map_err(|e| anyhow::anyhow!("CUE_REGISTRY={setting:?}: {e}"))?;
    let sources = pequod_source::Sources::new(pequod_source::SourceConfig {
        cue_registry,
        cache_dir: pequod_cue::default_cache_dir()
            .parent()
            .map(|root| root.join("sources")),
        // The platform engineer runs `pequod` on their own machine, often against a
        // registry on localhost: the operator's refusal of local sources protects a cluster.
        allow_local_sources: true,
        ..pequod_source::SourceConfig::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let url = module.root.display().to_string();
    let deps = runtime.block_on(sources.fetch_dependencies(&module.source.files, &url))?;
    module.source.deps = deps
        .into_iter()
        .map(|dep| pequod_cue::Dependency {
            module: dep.module,
            version: dep.version,
            files: dep.files,
        })
        .collect();
    Ok(())
}

/// `a/b/../..` → `.` when it is lexically the same directory, for shorter messages.
fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<std::path::Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if matches!(out.last(), Some(std::path::Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// The nearest ancestor of `dir` (itself included) that holds `cue.mod/module.cue`.
fn find_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join("cue.mod/module.cue").is_file())
        .map(Path::to_path_buf)
}

fn slash_path(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

fn parent_dir(file: &str) -> &str {
    file.rsplit_once('/').map_or(".", |(dir, _)| dir)
}

/// Every `.cue` file of the module at `root`, by slash path relative to it. Skipped like CUE
/// skips them: files and directories starting with `.` or `_`, and nested modules (a directory
/// with its own `cue.mod/`). `cue.mod/` itself is read whole, so `module.cue` and vendored
/// packages (`cue.mod/pkg`, `gen`, `usr`) reach the evaluator as `cue export` would see them.
pub fn cue_files(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks; a symlinked directory loop ends at the OS's limit.
        let meta = std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
        if meta.is_dir() {
            let nested_module = path != root.join("cue.mod") && path.join("cue.mod").is_dir();
            if !nested_module {
                walk(root, &path, out)?;
            }
        } else if name.ends_with(".cue") {
            let rel = path
                .strip_prefix(root)
                .context("file outside the module root")?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.insert(slash_path(rel), text);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn a_package_directory_finds_its_module_and_reads_what_cue_reads() {
        let root = std::env::temp_dir().join(format!("pequod-cli-module-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        write(
            &root.join("cue.mod/module.cue"),
            "module: \"example.com/m@v0\"\n",
        );
        write(
            &root.join("cue.mod/pkg/example.com/dep/dep.cue"),
            "package dep\n",
        );
        write(&root.join("apps/web/web.cue"), "package web\n");
        write(&root.join("apps/web/notes.md"), "not CUE");
        write(&root.join("apps/_scratch/x.cue"), "package x\n");
        write(&root.join(".git/y.cue"), "package y\n");
        write(
            &root.join("nested/cue.mod/module.cue"),
            "module: \"example.com/n@v0\"\n",
        );
        write(&root.join("nested/n.cue"), "package n\n");

        let module = load(&root.join("apps/web")).expect("loads");
        assert_eq!(module.source.package, "apps/web");
        assert_eq!(
            module.root.canonicalize().expect("exists"),
            root.canonicalize().expect("exists")
        );
        let files: Vec<&str> = module.source.files.keys().map(String::as_str).collect();
        assert_eq!(
            files,
            [
                "apps/web/web.cue",
                "cue.mod/module.cue",
                "cue.mod/pkg/example.com/dep/dep.cue"
            ]
        );
        assert_eq!(
            module.source.digest,
            pequod_api::module_digest(&module.source.files)
        );

        let at_root = load(&root.join("nested")).expect("a module of its own");
        assert_eq!(at_root.source.package, ".");
        assert!(
            load(&root.join("apps")).is_err(),
            "no .cue files in apps/ itself"
        );
        assert!(
            load(&root.join("apps/web/web.cue")).is_err(),
            "not a directory"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn relative_roots_stay_relative() {
        assert_eq!(normalize(Path::new("cue/webservice/..")), Path::new("cue"));
        assert_eq!(normalize(Path::new("webservice/..")), Path::new("."));
        assert_eq!(normalize(Path::new("../x/..")), Path::new(".."));
    }
}
