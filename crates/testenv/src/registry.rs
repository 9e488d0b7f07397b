//! An OCI registry for tests: Debian's `docker-registry` (the CNCF distribution registry) on a
//! free 127.0.0.1 port, plain HTTP, storage in a temporary directory, optionally behind
//! htpasswd basic auth. Like the control plane, it is tied to the life of the test process.
//!
//! ```no_run
//! let registry = pequod_testenv::registry::Registry::start();
//! println!("push to {}/platform/webservice", registry.addr);
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{Janitor, Supervised, free_port};
use crate::unique_name;

/// Where Debian installs the registry.
pub const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry. Dropping it stops the process and removes its storage.
#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:<port>`: the registry host to write in references.
    pub addr: String,
    dir: PathBuf,
    config: PathBuf,
    process: Option<Supervised>,
    runs: u32,
    _janitor: Janitor,
}

impl Registry {
    /// Starts an open registry. Panics with what to install when the binary is missing.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a registry that requires `username`/`password` (htpasswd, bcrypt).
    pub fn start_with_auth(username: &str, password: &str) -> Self {
        Self::start_with(Some((username, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Self {
        let binary = Path::new(BINARY);
        assert!(
            binary.exists(),
            "{BINARY} is missing: install Debian's registry with \
             `apt-get install -y docker-registry` (.ci/run does this)"
        );
        let dir = std::env::temp_dir().join(unique_name("pequod-registry"));
        std::fs::create_dir_all(dir.join("storage")).expect("registry temp dir");
        let janitor = Janitor::watch(&dir).expect("registry cleanup process");
        let port = free_port().expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let auth_section = match auth {
            Some((username, password)) => {
                let hash = bcrypt::hash_with_result(password, 4)
                    .expect("bcrypt")
                    .format_for_version(bcrypt::Version::TwoY);
                let htpasswd = dir.join("htpasswd");
                std::fs::write(&htpasswd, format!("{username}:{hash}\n")).expect("htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: pequod-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: pequod-test-secret\n\
                 {auth_section}",
                dir.join("storage").display()
            ),
        )
        .expect("registry config");
        let mut registry = Self {
            addr,
            dir,
            config,
            process: None,
            runs: 0,
            _janitor: janitor,
        };
        registry.restart();
        registry
    }

    /// Stops the registry (its storage stays), e.g. to see what clients do without it.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the registry again on the same address and storage (after [`Registry::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.runs += 1;
        let log = self.dir.join(format!("registry-{}.log", self.runs));
        let mut process = Supervised::spawn(
            "docker-registry",
            Path::new(BINARY),
            &["serve".to_owned(), self.config.display().to_string()],
            log,
        )
        .expect("starting docker-registry");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = process.exited() {
                panic!(
                    "docker-registry exited during start-up ({status}):\n{}",
                    process.log_tail(30)
                );
            }
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {} in 30s:\n{}",
                self.addr,
                process.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process = Some(process);
    }

    /// Every request the registry served since it last (re)started, as `METHOD /path`, in
    /// order (from its access log).
    pub fn requests(&self) -> Vec<String> {
        let Some(process) = &self.process else {
            return Vec::new();
        };
        let text = std::fs::read_to_string(&process.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once('"')?;
                let mut parts = rest.split(' ');
                let method = parts.next()?;
                let path = parts.next()?;
                let proto = parts.next()?;
                (proto.starts_with("HTTP/")
                    && matches!(method, "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE"))
                .then(|| format!("{method} {path}"))
            })
            .collect()
    }

    /// The registry's log so far, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
