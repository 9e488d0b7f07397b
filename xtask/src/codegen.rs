//! `cargo xtask codegen`: generated files, written or checked for staleness.

use std::path::Path;

use anyhow::{Context as _, bail};

/// Directories that receive the CRD YAML (the Helm chart joins when it exists).
const CRD_DIRS: &[&str] = &["config/crd"];

pub fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    let files = pequod_api::crd::render()?;
    let mut stale = Vec::new();
    for dir in CRD_DIRS {
        let dir = root.join(dir);
        for file in &files {
            let path = dir.join(&file.name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == file.content {
                continue;
            }
            if check {
                stale.push(path.display().to_string());
            } else {
                std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
                std::fs::write(&path, &file.content).with_context(|| path.display().to_string())?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated files are stale, run `cargo xtask codegen`:\n  {}",
            stale.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The committed CRD YAML matches the Rust types (`cargo xtask codegen --check`).
    #[test]
    fn committed_generated_files_are_fresh() {
        if let Err(e) = super::run(&crate::repo_root(), true) {
            panic!("{e}");
        }
    }
}
