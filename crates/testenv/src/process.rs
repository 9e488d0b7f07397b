//! Child processes of the control plane, tied to the life of the process that started them.
//!
//! A test binary keeps its control plane in a `static`, which Rust never drops; a test process
//! may also be killed outright. So every component runs under a tiny `sh` reaper that holds the
//! read end of a pipe whose write end only we hold: when our process ends, for any reason, the
//! pipe closes and the reaper stops the component (TERM, then KILL). Dropping a [`Supervised`]
//! closes the pipe on purpose and waits.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::Error;

/// Stops the child when stdin closes. `$1` is the grace period in seconds, then the command.
const REAPER: &str = r#"
grace="$1"; shift
exec 3<&0
"$@" </dev/null &
child=$!
(
  cat <&3 >/dev/null
  kill -TERM "$child" 2>/dev/null
  i=0
  while [ "$i" -lt "$grace" ] && kill -0 "$child" 2>/dev/null; do sleep 1; i=$((i + 1)); done
  kill -KILL "$child" 2>/dev/null
) &
wait "$child"
"#;

/// Removes a directory once our process ends (after the components had time to stop).
const JANITOR: &str = r#"cat >/dev/null; sleep "$1"; rm -rf "$2""#;

/// A component running under a reaper.
#[derive(Debug)]
pub struct Supervised {
    /// Component name, for messages.
    pub name: String,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Supervised {
    /// Starts `program args…`, logging to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Self, Error> {
        let out = File::create(&log).map_err(|source| Error::Io {
            context: log.display().to_string(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| Error::Io {
            context: log.display().to_string(),
            source,
        })?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(REAPER)
            .arg("reaper")
            .arg("10")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Io {
                context: format!("starting {name}"),
                source,
            })?;
        let lifeline = child.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            log,
            child,
            lifeline,
        })
    }

    /// `Some(status)` once the component has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Stops the component and waits for it.
    pub fn stop(&mut self) {
        drop(self.lifeline.take());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Schedules removal of `dir` when our process ends; dropping the handle removes it sooner.
#[derive(Debug)]
pub struct Janitor {
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Janitor {
    /// Starts the janitor for `dir`.
    pub fn watch(dir: &Path) -> Result<Self, Error> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(JANITOR)
            .arg("janitor")
            .arg("12")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Io {
                context: "starting the cleanup process".into(),
                source,
            })?;
        let lifeline = child.stdin.take();
        Ok(Self { child, lifeline })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        // Components are stopped by now (fields drop in order); do not wait out the grace.
        drop(self.lifeline.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The end of a log for an error message: klog error and fatal lines (`E…`/`F…`) and lines
/// saying `error` from anywhere in the file (a component often dies well after its first
/// error), then the last `lines` lines.
pub fn tail(path: &Path, lines: usize) -> String {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let is_error = |line: &&&str| {
        let klog = line.len() > 5
            && (line.starts_with('E') || line.starts_with('F'))
            && line.as_bytes()[1..5].iter().all(u8::is_ascii_digit);
        klog || line.contains("\"level\":\"error\"") || line.starts_with("Error:")
    };
    let mut out: Vec<&str> = all[..start]
        .iter()
        .filter(is_error)
        .rev()
        .take(10)
        .copied()
        .collect();
    out.reverse();
    if !out.is_empty() {
        out.push("[...]");
    }
    out.extend_from_slice(&all[start..]);
    out.join("\n")
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a tiny race with other processes remains,
/// which start-up detects as an early exit and retries).
pub fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Io {
        context: "finding a free port".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            context: "finding a free port".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_early_errors_and_the_last_lines() {
        let dir = std::env::temp_dir().join(crate::unique_name("tail-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("component.log");
        let mut text = String::from("I1122 start\nE1122 15:47:22 run.go:72] cannot bind\n");
        text.extend((0..50).map(|i| format!("I1122 line {i}\n")));
        std::fs::write(&log, text).unwrap();
        let out = tail(&log, 3);
        assert_eq!(
            out,
            "E1122 15:47:22 run.go:72] cannot bind\n[...]\nI1122 line 47\nI1122 line 48\nI1122 line 49"
        );
        assert!(tail(&dir.join("missing.log"), 3).starts_with("(cannot read"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
