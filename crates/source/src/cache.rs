//! Fetched modules by immutable key (an OCI manifest digest, a Git commit and path), in memory
//! and, when configured, on disk so that a restart does not download again.
//!
//! - **Verified on read**: a file stores its key and content digest; one that does not match
//!   the files read back is removed and counts as a miss.
//! - **Bounded, least recently used first**: the files on disk are kept under
//!   [`Limits::max_bytes`], the verified copies in memory under [`Limits::memory_bytes`]. Recency
//!   is the last get or put; a hit re-stamps the file's mtime (at most once a minute), and a new
//!   cache rebuilds its index and recency from the files' sizes and mtimes, so both survive a
//!   restart.
//! - **TTL**: entries are content-addressed and never change, so the TTL is disk hygiene only:
//!   an entry unused for longer than [`Limits::ttl`] is neither served nor kept (removed when
//!   looked up, and in a sweep at start-up and on every put).
//! - **Concurrent**: one short `std` mutex guards the index and every change this process
//!   makes to the directory (the final rename of a write, eviction, removal); it is never held
//!   across an `.await`, and reads and temporary writes happen outside it. Files are written
//!   beside their place and renamed, so another process sharing the directory sees an old entry
//!   or the whole new one; files it adds are indexed once read, and files it removes are misses.
//! - **Counted**: hits, misses and evictions (bound and TTL) since start, plus what is held
//!   ([`CacheStats`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

/// Bytes of verified modules kept in memory by default.
pub(crate) const MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// A hit re-stamps the file's mtime at most this often (entries used within one such interval
/// may swap places in the recency order after a restart).
const STAMP_EVERY: Duration = Duration::from_secs(60);
/// Temporary files older than this were left by a crash and are removed at start.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// A module's files by path.
type Files = BTreeMap<String, String>;
/// The time source (injectable for tests).
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What the module cache holds and how it has done since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered (from memory or disk).
    pub hits: u64,
    /// Lookups not answered: absent, expired or failing verification.
    pub misses: u64,
    /// Entries removed for the byte bound or the TTL.
    pub evictions: u64,
    /// Entries held: on disk, or in memory when there is no cache directory.
    pub entries: u64,
    /// Their bytes: file sizes on disk, or paths and contents in memory.
    pub bytes: u64,
}

/// The bounds of a [`Cache`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Bytes of entry files on disk; 0: no bound.
    pub max_bytes: u64,
    /// Entries unused for longer are dropped; zero: never.
    pub ttl: Duration,
    /// Bytes of verified modules kept in memory; 0: none beyond the entry just used.
    pub memory_bytes: u64,
}

impl Limits {
    fn expired(&self, used: SystemTime, now: SystemTime) -> bool {
        !self.ttl.is_zero() && age(used, now) > self.ttl
    }
}

/// How long ago `then` was (zero if it is in the future).
fn age(then: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The bytes a module takes in memory (paths and contents).
fn memory_size(files: &Files) -> u64 {
    files.iter().map(|(p, c)| len(p.len() + c.len())).sum()
}

/// The entry file's name (without `.json`) of `key`.
fn name(key: &str) -> String {
    crate::hex(&Sha256::digest(key.as_bytes()))
}

#[derive(serde::Deserialize)]
struct Stored {
    key: String,
    content: String,
    files: Files,
}

/// [`Stored`] to write, borrowing.
#[derive(serde::Serialize)]
struct ToStore<'a> {
    key: &'a str,
    content: String,
    files: &'a Files,
}

/// One key's entry: on disk, in memory, or both.
#[derive(Debug)]
struct Entry {
    /// Its place in [`State::order`] (larger: used more recently).
    tick: u64,
    /// Last get or put.
    used: SystemTime,
    /// The file's mtime as this process last set or saw it.
    stamped: SystemTime,
    /// The file's size, while this process knows it on disk.
    disk: Option<u64>,
    /// The verified files and their size, while in memory.
    memory: Option<(Arc<Files>, u64)>,
}

/// The index, guarded by [`Cache::state`].
#[derive(Debug, Default)]
struct State {
    /// By entry name (the hash of the key).
    entries: HashMap<String, Entry>,
    /// Entry names from least to most recently used.
    order: BTreeMap<u64, String>,
    tick: u64,
    disk_bytes: u64,
    disk_entries: u64,
    memory_bytes: u64,
    memory_entries: u64,
}

impl State {
    /// Marks `name` used at `now` (creating an empty entry) and returns it.
    fn touch(&mut self, name: &str, now: SystemTime) -> &mut Entry {
        self.tick += 1;
        let tick = self.tick;
        self.order.insert(tick, name.to_owned());
        let entry = self.entries.entry(name.to_owned()).or_insert(Entry {
            tick,
            used: now,
            stamped: SystemTime::UNIX_EPOCH,
            disk: None,
            memory: None,
        });
        if entry.tick != tick {
            self.order.remove(&entry.tick);
            entry.tick = tick;
        }
        entry.used = entry.used.max(now);
        entry
    }

    fn set_disk(&mut self, name: &str, size: Option<u64>) {
        if let Some(entry) = self.entries.get_mut(name) {
            if let Some(old) = std::mem::replace(&mut entry.disk, size) {
                self.disk_bytes -= old;
                self.disk_entries -= 1;
            }
            if let Some(new) = size {
                self.disk_bytes += new;
                self.disk_entries += 1;
            }
        }
    }

    fn set_memory(&mut self, name: &str, files: Option<Arc<Files>>) {
        if let Some(entry) = self.entries.get_mut(name) {
            let files = files.map(|f| {
                let size = memory_size(&f);
                (f, size)
            });
            if let Some((_, old)) = std::mem::replace(&mut entry.memory, files) {
                self.memory_bytes -= old;
                self.memory_entries -= 1;
            }
            if let Some((_, new)) = &entry.memory {
                self.memory_bytes += new;
                self.memory_entries += 1;
            }
        }
    }

    /// Forgets `name`; returns whether it had a file.
    fn remove(&mut self, name: &str) -> bool {
        let had_file = self.entries.get(name).is_some_and(|e| e.disk.is_some());
        self.set_disk(name, None);
        self.set_memory(name, None);
        if let Some(entry) = self.entries.remove(name) {
            self.order.remove(&entry.tick);
        }
        had_file
    }

    /// Forgets entries that are neither on disk nor in memory.
    fn drop_if_empty(&mut self, name: &str) {
        if let Some(entry) = self.entries.get(name)
            && entry.disk.is_none()
            && entry.memory.is_none()
        {
            let tick = entry.tick;
            self.order.remove(&tick);
            self.entries.remove(name);
        }
    }
}

/// The module cache.
pub(crate) struct Cache {
    /// The directory of entry files (`<cache_dir>/modules`).
    dir: Option<PathBuf>,
    limits: Limits,
    now: Clock,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            // Not `stats()`: formatting must not take the lock.
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .field("evictions", &self.evictions)
            .finish_non_exhaustive()
    }
}

/// What a lookup found in the index.
enum Lookup {
    /// In memory; re-stamp the file if a path is given.
    Memory(Arc<Files>, Option<PathBuf>),
    /// Too long unused: dropped.
    Expired,
    /// Not in memory: try the disk.
    Absent,
}

impl Cache {
    /// A cache under `cache_dir` (`None`: memory only); indexes what is on disk already.
    pub(crate) fn new(cache_dir: Option<PathBuf>, limits: Limits) -> Self {
        Self::with_clock(cache_dir, limits, Arc::new(SystemTime::now))
    }

    /// [`Cache::new`] with a time source.
    fn with_clock(cache_dir: Option<PathBuf>, limits: Limits, now: Clock) -> Self {
        let cache = Self {
            dir: cache_dir.map(|d| d.join("modules")),
            limits,
            now,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        };
        cache.load();
        cache
    }

    /// The counters and what is held.
    pub(crate) fn stats(&self) -> CacheStats {
        let state = self.lock();
        let (entries, bytes) = if self.dir.is_some() {
            (state.disk_entries, state.disk_bytes)
        } else {
            (state.memory_entries, state.memory_bytes)
        };
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; should something, the index is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{name}.json")))
    }

    /// Indexes the entry files on disk by their mtimes (oldest least recent), removes
    /// temporary files left by a crash, and applies the TTL and the bound.
    fn load(&self) {
        let Some(dir) = &self.dir else { return };
        let Ok(listing) = std::fs::read_dir(dir) else {
            return; // Nothing cached yet.
        };
        let now = (self.now)();
        let mut found = Vec::new();
        for item in listing.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            let file_name = item.file_name().to_string_lossy().into_owned();
            let modified = meta.modified().unwrap_or(now);
            if !meta.is_file() {
                continue;
            }
            if let Some(name) = file_name.strip_suffix(".json")
                && !name.starts_with('.')
            {
                found.push((modified, name.to_owned(), meta.len()));
            } else if file_name.starts_with('.') && age(modified, now) > STALE_TMP {
                let _ = std::fs::remove_file(item.path());
            }
        }
        found.sort();
        let mut state = self.lock();
        for (modified, name, size) in found {
            let entry = state.touch(&name, modified);
            entry.stamped = modified;
            state.set_disk(&name, Some(size));
        }
        self.enforce(&mut state, now);
    }

    /// Drops expired entries, then least recently used ones until the disk and memory bounds
    /// hold; removes their files. Called with the lock held (a few unlinks, no `.await`), so
    /// that a file is never removed after another task put it again.
    fn enforce(&self, state: &mut State, now: SystemTime) {
        let mut evicted = 0;
        let oldest_first: Vec<String> = state.order.values().cloned().collect();
        for name in &oldest_first {
            let Some(entry) = state.entries.get(name) else {
                continue;
            };
            let (on_disk, in_memory) = (entry.disk.is_some(), entry.memory.is_some());
            let over = self.limits.max_bytes > 0 && state.disk_bytes > self.limits.max_bytes;
            if self.limits.expired(entry.used, now) || (on_disk && over) {
                if state.remove(name)
                    && let Some(path) = self.file(name)
                {
                    let _ = std::fs::remove_file(path);
                }
                evicted += 1;
            } else if in_memory && state.memory_bytes > self.limits.memory_bytes {
                state.set_memory(name, None);
                if !on_disk {
                    // Memory only (no directory, or the write failed): gone from the cache.
                    state.drop_if_empty(name);
                    evicted += 1;
                }
            }
        }
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    fn lookup(&self, name: &str, now: SystemTime) -> Lookup {
        let mut state = self.lock();
        let Some(entry) = state.entries.get(name) else {
            return Lookup::Absent;
        };
        if self.limits.expired(entry.used, now) {
            self.enforce(&mut state, now);
            return Lookup::Expired;
        }
        let entry = state.touch(name, now);
        let Some((files, _)) = &entry.memory else {
            return Lookup::Absent;
        };
        let files = files.clone();
        let stamp = entry.disk.is_some() && age(entry.stamped, now) >= STAMP_EVERY;
        if stamp {
            entry.stamped = now;
        }
        Lookup::Memory(files, stamp.then(|| self.file(name)).flatten())
    }

    /// The files stored under `key`, verified.
    pub(crate) async fn get(&self, key: &str) -> Option<Arc<Files>> {
        let name = name(key);
        let now = (self.now)();
        let found = match self.lookup(&name, now) {
            Lookup::Memory(files, stamp) => {
                if let Some(path) = stamp {
                    stamp_file(path, now).await;
                }
                Some(files)
            }
            Lookup::Expired => None,
            Lookup::Absent => self.read(key, &name, now).await,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Reads, verifies and indexes the entry file of `key`.
    async fn read(&self, key: &str, name: &str, now: SystemTime) -> Option<Arc<Files>> {
        let path = self.file(name)?;
        let verified = match tokio::fs::read(&path).await {
            Ok(bytes) => verify(key, &path, &bytes),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable cache entry; fetching again");
                }
                None
            }
        };
        let (files, stamp) = self.index_read(name, &path, verified, now)?;
        if stamp {
            stamp_file(path, now).await;
        }
        Some(files)
    }

    /// Indexes what [`Cache::read`] found; whether the file is there to be stamped.
    fn index_read(
        &self,
        name: &str,
        path: &Path,
        verified: Option<Files>,
        now: SystemTime,
    ) -> Option<(Arc<Files>, bool)> {
        let mut state = self.lock();
        let Some(files) = verified else {
            // Gone (another process evicted it) or bad: forget it, and remove a bad file.
            if state.entries.contains_key(name) {
                state.set_disk(name, None);
                state.drop_if_empty(name);
            }
            let _ = std::fs::remove_file(path);
            return None;
        };
        let files = Arc::new(files);
        // What is there now: the file may have gone or changed since it was read.
        let size = std::fs::metadata(path).ok().map(|m| m.len());
        state.touch(name, now).stamped = now;
        state.set_disk(name, size);
        state.set_memory(name, Some(files.clone()));
        self.enforce(&mut state, now);
        Some((files, size.is_some()))
    }

    /// Stores `files` under `key`; a failure to write is logged, never fatal.
    pub(crate) async fn put(&self, key: &str, files: &Files) {
        let name = name(key);
        let now = (self.now)();
        let written = match self.file(&name) {
            Some(path) => match write_tmp(key, files, &path, now).await {
                Ok(tmp) => Some((tmp, path)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the module cache");
                    None
                }
            },
            None => None,
        };
        let mut state = self.lock();
        state.touch(&name, now);
        if let Some((tmp, path)) = written {
            // Renamed under the lock, so that an eviction cannot remove it unindexed.
            match std::fs::rename(&tmp, &path).and_then(|()| std::fs::metadata(&path)) {
                Ok(meta) => {
                    state.set_disk(&name, Some(meta.len()));
                    if let Some(entry) = state.entries.get_mut(&name) {
                        entry.stamped = now;
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the module cache");
                }
            }
        }
        state.set_memory(&name, Some(Arc::new(files.clone())));
        self.enforce(&mut state, now);
    }
}

/// The files of an entry file read for `key`, if it parses and verifies.
fn verify(key: &str, path: &Path, bytes: &[u8]) -> Option<Files> {
    let stored: Stored = match serde_json::from_slice(bytes) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable cache entry; fetching again");
            return None;
        }
    };
    if stored.key != key || pequod_api::module_digest(&stored.files) != stored.content {
        tracing::warn!(path = %path.display(), "cache entry does not verify; fetching again");
        return None;
    }
    Some(stored.files)
}

/// Writes the entry file of `key` beside `path` (stamped `now`) and returns its name.
async fn write_tmp(
    key: &str,
    files: &Files,
    path: &Path,
    now: SystemTime,
) -> std::io::Result<PathBuf> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let bytes = serde_json::to_vec(&ToStore {
        key,
        content: pequod_api::module_digest(files),
        files,
    })
    .map_err(std::io::Error::other)?;
    let dir = path.parent().unwrap_or(path).to_owned();
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let task_tmp = tmp.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let mut file = std::fs::File::create(&task_tmp)?;
        file.write_all(&bytes)?;
        file.set_modified(now)
    })
    .await
    .map_err(std::io::Error::other)?
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(tmp)
}

/// Sets the mtime of `path` to `now` (its recency after a restart); a file gone meanwhile is
/// fine.
async fn stamp_file(path: PathBuf, now: SystemTime) {
    let result = tokio::task::spawn_blocking(move || {
        std::fs::File::options()
            .write(true)
            .open(&path)?
            .set_modified(now)
    })
    .await;
    if let Ok(Err(e)) = result
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::debug!(error = %e, "cannot stamp a module cache entry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            Self(std::env::temp_dir().join(format!(
                "pequod-cache-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            )))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HOUR: u64 = 3600;

    /// A clock that moves only when told (seconds since a fixed start).
    fn clock() -> (Arc<AtomicU64>, Clock) {
        let seconds = Arc::new(AtomicU64::new(0));
        let read = seconds.clone();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let now: Clock = Arc::new(move || start + Duration::from_secs(read.load(Ordering::SeqCst)));
        (seconds, now)
    }

    fn limits(max_bytes: u64, ttl_hours: u64) -> Limits {
        Limits {
            max_bytes,
            ttl: Duration::from_secs(ttl_hours * HOUR),
            memory_bytes: MEMORY_BYTES,
        }
    }

    /// A module of the same size for every `k` below 100.
    fn module(k: u32) -> Files {
        BTreeMap::from([(
            "m.cue".to_owned(),
            format!("k: {k:02}\n// {}", "x".repeat(1000)),
        )])
    }

    fn key(k: u32) -> String {
        format!("sha256:{k:02}")
    }

    fn on_disk(cache: &Cache, k: u32) -> bool {
        cache.file(&name(&key(k))).is_some_and(|p| p.exists())
    }

    /// The size of one entry file of [`module`].
    async fn entry_size() -> u64 {
        let dir = TempDir::new("size");
        let cache = Cache::new(Some(dir.0.clone()), limits(0, 0));
        cache.put(&key(0), &module(0)).await;
        cache.stats().bytes
    }

    #[tokio::test]
    async fn entries_survive_a_new_cache_and_are_verified() {
        let dir = TempDir::new("verify");
        let files = BTreeMap::from([("a.cue".to_owned(), "x: 1".to_owned())]);
        let new = || Cache::new(Some(dir.0.clone()), limits(0, 0));
        new().put("sha256:abc", &files).await;
        let fresh = new();
        assert_eq!(*fresh.get("sha256:abc").await.unwrap(), files);
        assert!(fresh.get("sha256:other").await.is_none());
        let stats = fresh.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));

        let path = new().file(&name("sha256:abc")).unwrap();
        let tampered = std::fs::read_to_string(&path)
            .unwrap()
            .replace("x: 1", "x: 2");
        std::fs::write(&path, tampered).unwrap();
        let fresh = new();
        assert!(fresh.get("sha256:abc").await.is_none());
        assert!(!path.exists(), "a bad entry is removed");
        assert_eq!(fresh.stats().misses, 1);
        assert_eq!(fresh.stats().entries, 0);
    }

    #[tokio::test]
    async fn least_recently_used_go_first_and_recency_survives_a_restart() {
        let one = entry_size().await;
        let dir = TempDir::new("lru");
        let (time, now) = clock();
        let bound = 3 * one + one / 2;
        let cache = Cache::with_clock(Some(dir.0.clone()), limits(bound, 0), now.clone());
        for k in 0..3 {
            time.fetch_add(HOUR, Ordering::SeqCst);
            cache.put(&key(k), &module(k)).await;
        }
        time.fetch_add(HOUR, Ordering::SeqCst);
        assert!(
            cache.get(&key(0)).await.is_some(),
            "0 is now the most recent"
        );
        time.fetch_add(HOUR, Ordering::SeqCst);
        cache.put(&key(3), &module(3)).await;
        assert!(!on_disk(&cache, 1), "1 was least recently used");
        assert!(on_disk(&cache, 0) && on_disk(&cache, 2) && on_disk(&cache, 3));
        let stats = cache.stats();
        assert_eq!(
            (stats.evictions, stats.entries, stats.bytes),
            (1, 3, 3 * one)
        );
        assert!(cache.get(&key(1)).await.is_none(), "gone from memory too");

        // A restart: the index and the order come back from the files (2 older than 0 and 3).
        time.fetch_add(HOUR, Ordering::SeqCst);
        let restarted = Cache::with_clock(Some(dir.0.clone()), limits(bound, 0), now);
        let stats = restarted.stats();
        assert_eq!(
            (stats.evictions, stats.entries, stats.bytes),
            (0, 3, 3 * one)
        );
        restarted.put(&key(4), &module(4)).await;
        assert!(!on_disk(&restarted, 2), "2 was least recently used");
        assert_eq!(*restarted.get(&key(0)).await.unwrap(), module(0));
        assert_eq!(restarted.stats().evictions, 1);
        assert_eq!(restarted.stats().bytes, 3 * one);
    }

    #[tokio::test]
    async fn entries_unused_longer_than_the_ttl_are_dropped() {
        let dir = TempDir::new("ttl");
        let (time, now) = clock();
        let cache = Cache::with_clock(Some(dir.0.clone()), limits(0, 1), now.clone());
        cache.put(&key(0), &module(0)).await;
        cache.put(&key(1), &module(1)).await;
        time.fetch_add(HOUR / 2, Ordering::SeqCst);
        assert!(cache.get(&key(0)).await.is_some());
        time.fetch_add(HOUR / 2 + HOUR / 3, Ordering::SeqCst);
        assert!(cache.get(&key(0)).await.is_some(), "used 50 minutes ago");
        assert!(cache.get(&key(1)).await.is_none(), "unused for 80 minutes");
        assert!(!on_disk(&cache, 1) && on_disk(&cache, 0));
        time.fetch_add(2 * HOUR, Ordering::SeqCst);
        assert!(cache.get(&key(0)).await.is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions), (2, 2, 2));
        assert_eq!((stats.entries, stats.bytes), (0, 0));

        // Swept at a put, and at start-up by the files' mtimes.
        cache.put(&key(2), &module(2)).await;
        time.fetch_add(2 * HOUR, Ordering::SeqCst);
        cache.put(&key(3), &module(3)).await;
        assert!(!on_disk(&cache, 2) && on_disk(&cache, 3));
        time.fetch_add(2 * HOUR, Ordering::SeqCst);
        let restarted = Cache::with_clock(Some(dir.0.clone()), limits(0, 1), now);
        assert!(!on_disk(&restarted, 3));
        assert_eq!(restarted.stats().evictions, 1);
        assert_eq!(restarted.stats().entries, 0);
    }

    #[tokio::test]
    async fn memory_is_bounded_least_recently_used_first() {
        let size = memory_size(&module(0));
        let (time, now) = clock();
        let memory_only = Cache::with_clock(
            None,
            Limits {
                memory_bytes: 2 * size + size / 2,
                ..limits(0, 0)
            },
            now.clone(),
        );
        memory_only.put(&key(0), &module(0)).await;
        memory_only.put(&key(1), &module(1)).await;
        assert!(memory_only.get(&key(0)).await.is_some());
        memory_only.put(&key(2), &module(2)).await;
        assert!(memory_only.get(&key(1)).await.is_none());
        assert!(memory_only.get(&key(0)).await.is_some());
        assert!(memory_only.get(&key(2)).await.is_some());
        let stats = memory_only.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions), (3, 1, 1));
        assert_eq!((stats.entries, stats.bytes), (2, 2 * size));

        // With a directory, what memory drops is read back from disk (and is no eviction).
        let dir = TempDir::new("memory");
        let cache = Cache::with_clock(
            Some(dir.0.clone()),
            Limits {
                memory_bytes: 0,
                ..limits(0, 0)
            },
            now,
        );
        for k in 0..3 {
            cache.put(&key(k), &module(k)).await;
        }
        time.fetch_add(HOUR, Ordering::SeqCst);
        for k in 0..3 {
            assert_eq!(*cache.get(&key(k)).await.unwrap(), module(k));
        }
        assert_eq!(cache.lock().memory_bytes, 0);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.evictions, stats.entries), (3, 0, 3));
    }

    /// The entry files in `dir`: how many, their bytes, and whether temporary files remain.
    fn listing(dir: &Path) -> (u64, u64, bool) {
        let (mut entries, mut bytes, mut tmp) = (0, 0, false);
        for item in std::fs::read_dir(dir.join("modules")).unwrap() {
            let item = item.unwrap();
            if item.file_name().to_string_lossy().ends_with(".json") {
                entries += 1;
                bytes += item.metadata().unwrap().len();
            } else {
                tmp = true;
            }
        }
        (entries, bytes, tmp)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_gets_and_puts_leave_a_consistent_bounded_cache() {
        const TASKS: u32 = 16;
        const ROUNDS: u32 = 100;
        let one = entry_size().await;
        let dir = TempDir::new("concurrent");
        let bound = 5 * one + one / 2;
        let cache = Arc::new(Cache::new(
            Some(dir.0.clone()),
            Limits {
                memory_bytes: 3 * memory_size(&module(0)),
                ..limits(bound, 0)
            },
        ));
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let mut state = task.wrapping_mul(2_654_435_761).wrapping_add(1);
                    for _ in 0..ROUNDS {
                        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        let k = (state >> 16) % 20;
                        match cache.get(&key(k)).await {
                            Some(files) => assert_eq!(*files, module(k)),
                            None => cache.put(&key(k), &module(k)).await,
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stats = cache.stats();
        assert_eq!(stats.hits + stats.misses, u64::from(TASKS * ROUNDS));
        assert!(stats.hits > 0 && stats.evictions > 0, "{stats:?}");
        assert!(stats.bytes <= bound, "{stats:?}");
        assert_eq!(
            listing(&dir.0),
            (stats.entries, stats.bytes, false),
            "the index matches the directory"
        );
        {
            let index = cache.lock();
            assert_eq!(index.entries.len(), index.order.len());
            assert!(index.memory_bytes <= 3 * memory_size(&module(0)));
        }
        let restarted = Cache::new(Some(dir.0.clone()), limits(bound, 0));
        assert_eq!(restarted.stats().bytes, stats.bytes);
        for k in 0..20 {
            if on_disk(&restarted, k) {
                assert_eq!(*restarted.get(&key(k)).await.unwrap(), module(k));
            }
        }
    }
}
