//! A Git server for tests: `git daemon` (the `git://` protocol, no auth) on a free 127.0.0.1
//! port, serving repositories under a temporary directory, tied to the life of the test
//! process. Repositories are made and changed with the `git` command.
//!
//! ```no_run
//! let server = pequod_testenv::git::GitServer::start();
//! server.create("platform");
//! let sha = server.commit("platform", &[("m.cue", "package m\n")], "first");
//! let url = server.url("platform");
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Janitor, Supervised, free_port};
use crate::unique_name;

/// A running `git daemon`. Dropping it stops the process and removes the repositories.
#[derive(Debug)]
pub struct GitServer {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: PathBuf,
    process: Option<Supervised>,
    _janitor: Janitor,
}

impl GitServer {
    /// Starts the daemon. Panics with what is missing when `git daemon` cannot run.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(unique_name("pequod-git"));
        std::fs::create_dir_all(dir.join("repos")).expect("git temp dir");
        let janitor = Janitor::watch(&dir).expect("git cleanup process");
        let port = free_port().expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let git = which_git();
        let process = Supervised::spawn(
            "git-daemon",
            &git,
            &[
                "daemon".to_owned(),
                "--export-all".to_owned(),
                "--reuseaddr".to_owned(),
                "--verbose".to_owned(),
                "--listen=127.0.0.1".to_owned(),
                format!("--port={port}"),
                format!("--base-path={}", dir.join("repos").display()),
                dir.join("repos").display().to_string(),
            ],
            dir.join("daemon.log"),
        )
        .expect("starting git daemon");
        let mut server = Self {
            addr,
            dir,
            process: Some(process),
            _janitor: janitor,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let process = self.process.as_mut().expect("running");
        loop {
            if let Some(status) = process.exited() {
                panic!(
                    "git daemon exited during start-up ({status}); is git installed \
                     (`apt-get install -y git`)?\n{}",
                    process.log_tail(30)
                );
            }
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {} in 30s:\n{}",
                self.addr,
                process.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `git://` URL of repository `name`.
    pub fn url(&self, name: &str) -> String {
        format!("git://{}/{name}", self.addr)
    }

    /// The working directory of repository `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join("repos").join(name)
    }

    /// Creates repository `name` with an empty `main` branch (served, and fetchable by any
    /// commit SHA).
    pub fn create(&self, name: &str) {
        let path = self.path(name);
        std::fs::create_dir_all(&path).expect("repo dir");
        self.git(name, &["init", "-q", "-b", "main"]);
        self.git(name, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    }

    /// Writes `files` (path, content), commits them all and returns the commit SHA.
    pub fn commit(&self, name: &str, files: &[(&str, &str)], message: &str) -> String {
        let root = self.path(name);
        for (path, content) in files {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("dirs");
            std::fs::write(file, content).expect("write");
        }
        self.git(name, &["add", "-A"]);
        self.git(name, &["commit", "-q", "-m", message]);
        self.git(name, &["rev-parse", "HEAD"])
    }

    /// Runs `git args…` in repository `name`; returns its trimmed stdout.
    pub fn git(&self, name: &str, args: &[&str]) -> String {
        run_git(&self.path(name), args)
    }

    /// Connections the daemon accepted so far (each fetch or ref listing is one).
    pub fn connections(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("Connection from"))
            .count()
    }

    /// Stops the daemon (the repositories stay).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which_git() -> PathBuf {
    for candidate in ["/usr/bin/git", "/usr/local/bin/git"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("git")
}

fn run_git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(which_git())
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Pequod Test")
        .env("GIT_AUTHOR_EMAIL", "test@pequod.invalid")
        .env("GIT_COMMITTER_NAME", "Pequod Test")
        .env("GIT_COMMITTER_EMAIL", "test@pequod.invalid")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap_or_else(|e| panic!("running git {args:?}: {e}"));
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
