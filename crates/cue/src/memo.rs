//! The bounded memo of renders: the same (module, package, dependencies, input) never
//! evaluates twice while it is remembered. Least recently used entries go first.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::{EvalError, ModuleSource, Rendered};

/// Identity of one evaluation.
pub type Key = [u8; 32];

/// Identity of a built module in a warm guest: digest, package and dependency versions.
pub fn module_key(module: &ModuleSource) -> String {
    let mut hasher = Sha256::new();
    hasher.update(module.digest.as_bytes());
    hasher.update([0]);
    hasher.update(module.package.as_bytes());
    for dep in &module.deps {
        hasher.update([0]);
        hasher.update(dep.module.as_bytes());
        hasher.update([b'@']);
        hasher.update(dep.version.as_bytes());
        hasher.update(crate::files_digest(&dep.files).as_bytes());
    }
    crate::hex(&hasher.finalize())
}

/// Identity of an evaluation: the module's identity and the input's canonical JSON.
pub fn key(module: &ModuleSource, input: &serde_json::Value) -> Key {
    let mut hasher = Sha256::new();
    hasher.update(module_key(module).as_bytes());
    hasher.update([0]);
    // serde_json's map keeps keys sorted, so equal inputs serialize equally.
    hasher.update(input.to_string().as_bytes());
    hasher.finalize().into()
}

type Entry = (u64, Result<Arc<Rendered>, EvalError>);

pub struct Memo {
    capacity: usize,
    tick: u64,
    entries: HashMap<Key, Entry>,
}

impl Memo {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    pub fn get(&mut self, key: &Key) -> Option<Result<Arc<Rendered>, EvalError>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|entry| {
            entry.0 = tick;
            entry.1.clone()
        })
    }

    pub fn put(&mut self, key: Key, value: Result<Arc<Rendered>, EvalError>) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            // Linear scan: capacities are hundreds, and a put follows a guest evaluation
            // that costs milliseconds.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (self.tick, value));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(n: usize) -> Arc<Rendered> {
        Arc::new(Rendered {
            nodes: Vec::new(),
            outputs: Some(serde_json::json!(n)),
            violations: Vec::new(),
        })
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut memo = Memo::new(2);
        memo.put([1; 32], Ok(rendered(1)));
        memo.put([2; 32], Ok(rendered(2)));
        assert!(memo.get(&[1; 32]).is_some(), "touch 1 so 2 is the oldest");
        memo.put([3; 32], Ok(rendered(3)));
        assert_eq!(memo.len(), 2);
        assert!(memo.get(&[2; 32]).is_none());
        assert!(memo.get(&[1; 32]).is_some());
        assert!(memo.get(&[3; 32]).is_some());
    }

    #[test]
    fn keys_differ_by_module_package_dependency_and_input() {
        let files = std::collections::BTreeMap::from([("a.cue".to_owned(), "a: 1".to_owned())]);
        let module = ModuleSource::from_files(files, ".");
        let input = serde_json::json!({"b": 1, "a": 2});
        let base = key(&module, &input);
        assert_eq!(
            base,
            key(&module, &serde_json::json!({"a": 2, "b": 1})),
            "key order does not matter"
        );
        assert_ne!(base, key(&module, &serde_json::json!({"a": 3, "b": 1})));
        let mut other_package = module.clone();
        other_package.package = "./sub".into();
        assert_ne!(base, key(&other_package, &input));
        let mut with_dep = module.clone();
        with_dep.deps.push(crate::Dependency {
            module: "example.com/p@v0".into(),
            version: "v0.1.0".into(),
            files: std::collections::BTreeMap::new(),
        });
        assert_ne!(base, key(&with_dep, &input));
    }
}
