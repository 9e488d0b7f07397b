//! Fetched modules by immutable key (an OCI manifest digest, a Git commit and path): in memory
//! (bounded) and, when configured, on disk so that a restart does not download again. Every
//! read is verified: the stored content digest must match the files read back.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

/// Entries kept in memory.
const MEMORY_ENTRIES: usize = 64;

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    key: String,
    content: String,
    files: BTreeMap<String, String>,
}

/// The module cache.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Arc<BTreeMap<String, String>>>>,
}

impl Cache {
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            memory: Mutex::default(),
        }
    }

    fn file(&self, key: &str) -> Option<PathBuf> {
        let hash = crate::hex(&Sha256::digest(key.as_bytes()));
        self.dir
            .as_ref()
            .map(|d| d.join("modules").join(format!("{hash}.json")))
    }

    /// The files stored under `key`, verified.
    pub(crate) async fn get(&self, key: &str) -> Option<Arc<BTreeMap<String, String>>> {
        if let Some(hit) = self.memory.lock().ok()?.get(key) {
            return Some(hit.clone());
        }
        let path = self.file(key)?;
        let bytes = tokio::fs::read(&path).await.ok()?;
        let stored: Stored = match serde_json::from_slice(&bytes) {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable cache entry; fetching again");
                return None;
            }
        };
        if stored.key != key || pequod_api::module_digest(&stored.files) != stored.content {
            tracing::warn!(path = %path.display(), "cache entry does not verify; fetching again");
            let _ = tokio::fs::remove_file(&path).await;
            return None;
        }
        let files = Arc::new(stored.files);
        self.remember(key, files.clone());
        Some(files)
    }

    fn remember(&self, key: &str, files: Arc<BTreeMap<String, String>>) {
        if let Ok(mut memory) = self.memory.lock() {
            if memory.len() >= MEMORY_ENTRIES {
                memory.clear();
            }
            memory.insert(key.to_owned(), files);
        }
    }

    /// Stores `files` under `key`; a failure to write is logged, never fatal.
    pub(crate) async fn put(&self, key: &str, files: &BTreeMap<String, String>) {
        self.remember(key, Arc::new(files.clone()));
        let Some(path) = self.file(key) else {
            return;
        };
        let stored = Stored {
            key: key.to_owned(),
            content: pequod_api::module_digest(files),
            files: files.clone(),
        };
        let result = async {
            let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
            let dir = path.parent().unwrap_or(&path);
            tokio::fs::create_dir_all(dir).await?;
            // Write beside it, then rename: readers see the old entry or the whole new one.
            let tmp = dir.join(format!(
                ".{}.{}.tmp",
                std::process::id(),
                crate::hex(&Sha256::digest(&bytes))
            ));
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the module cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_survive_a_new_cache_and_are_verified() {
        let dir = std::env::temp_dir().join(format!("pequod-cache-test-{}", std::process::id()));
        let files = BTreeMap::from([("a.cue".to_owned(), "x: 1".to_owned())]);
        Cache::new(Some(dir.clone()))
            .put("sha256:abc", &files)
            .await;
        let fresh = Cache::new(Some(dir.clone()));
        assert_eq!(*fresh.get("sha256:abc").await.unwrap(), files);
        assert!(fresh.get("sha256:other").await.is_none());

        let path = Cache::new(Some(dir.clone())).file("sha256:abc").unwrap();
        let tampered = std::fs::read_to_string(&path)
            .unwrap()
            .replace("x: 1", "x: 2");
        std::fs::write(&path, tampered).unwrap();
        assert!(
            Cache::new(Some(dir.clone()))
                .get("sha256:abc")
                .await
                .is_none()
        );
        assert!(!path.exists(), "a bad entry is removed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
