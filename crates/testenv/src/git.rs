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

/// `git http-backend` behind a tiny HTTP/1.1 server in this process that requires basic auth
/// (the smart HTTP protocol, as GitHub or GitLab serve it over https, minus TLS).
#[derive(Debug)]
pub struct HttpGitServer {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    root: PathBuf,
}

impl HttpGitServer {
    /// Serves the repositories of `server` over HTTP to `username`/`password` only.
    pub fn start(server: &GitServer, username: &str, password: &str) -> Self {
        use base64::Engine as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let root = server.dir.join("repos");
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        );
        let serve_root = root.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = serve_root.clone();
                let expected = expected.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &expected);
                });
            }
        });
        Self { addr, root }
    }

    /// The `http://` URL of repository `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// Where the repositories live.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn serve(stream: std::net::TcpStream, root: &Path, expected: &str) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(length) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                let mut end = String::new();
                reader.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    }
    if header("authorization").as_deref() != Some(expected) {
        writer.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = Command::new(which_git())
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env("REMOTE_USER", "test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body)?;
    }
    let output = child.wait_with_output()?;
    respond(&mut writer, &output.stdout)
}

/// Turns CGI output (headers, a blank line, the body) into an HTTP/1.1 response.
fn respond(writer: &mut impl std::io::Write, out: &[u8]) -> std::io::Result<()> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, content) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&out[..i]).into_owned(),
            &out[i + n..],
        ),
        None => (String::new(), out),
    };
    let mut status = "200 OK".to_owned();
    let mut response_headers = String::new();
    for line in head.lines() {
        if let Some(s) = line.strip_prefix("Status:") {
            s.trim().clone_into(&mut status);
        } else if !line.is_empty() {
            response_headers.push_str(line);
            response_headers.push_str("\r\n");
        }
    }
    write!(
        writer,
        "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    )?;
    writer.write_all(content)?;
    writer.flush()
}

/// Where Debian's openssh-server installs the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

/// The repositories of a [`GitServer`] over SSH: OpenSSH's `sshd` on a free 127.0.0.1 port with
/// a fresh host key, accepting one fresh client key for the current user.
#[derive(Debug)]
pub struct SshGitServer {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The client's private key (PEM), for an `identity` Secret key.
    pub identity: String,
    /// A `known_hosts` line for the server's host key.
    pub known_hosts: String,
    user: String,
    root: PathBuf,
    _process: Supervised,
}

impl SshGitServer {
    /// Starts sshd. Panics with what to install when it is missing.
    pub fn start(server: &GitServer) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install `openssh-server` (.ci/run does this)"
        );
        let dir = server.dir.join(unique_name("sshd"));
        std::fs::create_dir_all(&dir).expect("sshd dir");
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let keygen = |name: &str, args: &[&str]| {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-N", "", "-f"])
                .arg(dir.join(name))
                .args(args)
                .status()
                .expect("ssh-keygen");
            assert!(status.success(), "ssh-keygen {name}");
        };
        keygen("host_key", &["-t", "ed25519"]);
        keygen("client_key", &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("key file");
        std::fs::write(dir.join("authorized_keys"), read("client_key.pub")).expect("keys");
        let port = free_port().expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {pid}\n\
                 AuthorizedKeysFile {keys}\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nLogLevel VERBOSE\n",
                host_key = dir.join("host_key").display(),
                pid = dir.join("sshd.pid").display(),
                keys = dir.join("authorized_keys").display(),
            ),
        )
        .expect("sshd config");
        let mut process = Supervised::spawn(
            "sshd",
            Path::new(SSHD),
            &[
                "-D".to_owned(),
                "-e".to_owned(),
                "-f".to_owned(),
                config.display().to_string(),
            ],
            dir.join("sshd.log"),
        )
        .expect("starting sshd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            if let Some(status) = process.exited() {
                panic!("sshd exited ({status}):\n{}", process.log_tail(30));
            }
            assert!(Instant::now() < deadline, "sshd did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let host_key = read("host_key.pub");
        let mut parts = host_key.split_whitespace();
        let known_hosts = format!(
            "[127.0.0.1]:{port} {} {}\n",
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        );
        let user = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .expect("id -un");
        Self {
            addr,
            identity: read("client_key"),
            known_hosts,
            user,
            root: server.dir.join("repos"),
            _process: process,
        }
    }

    /// The `ssh://` URL of repository `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "ssh://{}@{}{}",
            self.user,
            self.addr,
            self.root.join(name).display()
        )
    }
}
