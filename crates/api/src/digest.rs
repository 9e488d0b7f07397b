//! The content digest of a CUE module, shared by every source and the engine's caches, so the
//! same files give the same digest whatever they came from.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` over the sorted paths and contents (lengths included, so a path can never be
/// confused with the start of a content).
pub fn module_digest(files: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (path, content) in files {
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path.as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .fold(String::from("sha256:"), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
}
