//! `cargo xtask codegen`: generated files, written or checked for staleness.

use std::path::Path;

use anyhow::{Context as _, bail};

/// Directories that receive the CRD YAML.
const CRD_DIRS: &[&str] = &["config/crd", "charts/pequod/crds"];

/// Every generated file: path relative to the repository root, content.
fn outputs() -> anyhow::Result<Vec<(String, String)>> {
    let crds = pequod_api::crd::render()?;
    let mut outputs = Vec::new();
    for dir in CRD_DIRS {
        for file in &crds {
            outputs.push((format!("{dir}/{}", file.name), file.content.clone()));
        }
    }
    outputs.push((
        "docs/reference/api.md".into(),
        pequod_api::reference::reference_markdown(),
    ));
    Ok(outputs)
}

pub fn run(root: &Path, check: bool) -> anyhow::Result<()> {
    let mut stale = Vec::new();
    for (relative, content) in outputs()? {
        let path = root.join(&relative);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == content {
            continue;
        }
        if check {
            stale.push(relative);
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            }
            std::fs::write(&path, &content).with_context(|| path.display().to_string())?;
            eprintln!("wrote {}", path.display());
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
