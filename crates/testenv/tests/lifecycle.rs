//! A control plane lives exactly as long as its `TestEnv`.

use std::net::TcpStream;

use pequod_testenv::{Profile, TestEnv};

#[test]
fn dropping_the_env_stops_every_component_and_removes_its_files() {
    let env = TestEnv::start(Profile::Minimal).expect("control plane starts");
    let dir = env.dir().to_path_buf();
    let url = env.config().cluster_url;
    let address = format!(
        "{}:{}",
        url.host().expect("host"),
        url.port_u16().expect("port")
    );
    assert!(
        TcpStream::connect(&address).is_ok(),
        "API server listens on {address}"
    );
    assert!(env.kubeconfig().is_file());
    let etcd_log = env
        .log_of(pequod_testenv::Component::Etcd)
        .expect("etcd log")
        .to_path_buf();
    assert!(etcd_log.is_file());

    drop(env);

    assert!(
        TcpStream::connect(&address).is_err(),
        "API server still listens on {address}"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}
