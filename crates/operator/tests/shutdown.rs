//! SIGTERM ends the process even when a controller cannot stop by itself: with an unreachable
//! API server the watches keep retrying, and the operator exits 0 after `--shutdown-timeout`.
//! No cluster: that is the point.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_with_an_unreachable_api_server_exits_after_the_shutdown_timeout() {
    let dir = std::env::temp_dir().join(pequod_testenv::unique_name("pequod-shutdown"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    // Port 9 on loopback: nothing listens, every request is refused.
    let mut file = std::fs::File::create(&kubeconfig).expect("kubeconfig");
    write!(
        file,
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {{server: \"https://127.0.0.1:9\"}}\n  name: x\n\
         contexts:\n- context: {{cluster: x, user: u}}\n  name: x\ncurrent-context: x\n\
         users:\n- name: u\n  user: {{token: t}}\n"
    )
    .expect("write kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let log = std::fs::File::create(dir.join("operator.log")).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pequod-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "--leader-elect=false",
            "--shutdown-timeout=1s",
            &format!("--http-addr=127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn pequod-operator");
    // The controllers start once the CUE engine is loaded; give them a moment to be retrying.
    let text = || std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !text().contains("starting the controllers") {
        assert!(Instant::now() < deadline, "never started:\n{}", text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("still running 20 s after SIGTERM:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}:\n{}", text());
    assert!(text().contains("did not stop in time"), "{}", text());
    let _ = std::fs::remove_dir_all(&dir);
}
