//! A second language proves the contract: a Python client generated from
//! `proto/` by grpcio-tools calls Assign (and gets the Rust client's
//! answer), follows WatchConfigs and sees its own pause arrive as a delta.
//!
//! grpcio and grpcio-tools (pinned below) are used from the environment
//! when importable, else installed with pip into `target/python-deps/grpcio`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use exp_e2e::TestServer;
use exp_proto::v1;

const GRPCIO: &str = "grpcio==1.85.1";
const GRPCIO_TOOLS: &str = "grpcio-tools==1.85.1";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_assigns_and_follows_watch_configs() {
    let python_path =
        exp_e2e::python_packages("grpcio", "grpc, grpc_tools", &[GRPCIO, GRPCIO_TOOLS]);
    let stubs = tempfile::tempdir().expect("dir");
    let proto_root = repo_root().join("proto");
    let protos: Vec<String> = std::fs::read_dir(proto_root.join("experiments/v1"))
        .expect("protos")
        .map(|entry| {
            entry
                .expect("entry")
                .path()
                .to_str()
                .expect("utf-8")
                .to_owned()
        })
        .collect();
    let generated = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_root.display()))
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .args(&protos)
        .env("PYTHONPATH", &python_path)
        .output()
        .expect("run grpc_tools.protoc");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );

    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    exp_e2e::launch_seed_everywhere(&mut admin).await;
    exp_e2e::wait_until_assign_is_current(server.channel().await).await;
    let rust_answer =
        v1::assignment_service_client::AssignmentServiceClient::new(server.channel().await)
            .assign(exp_e2e::ymal_request("user-31", ""))
            .await
            .expect("assign")
            .into_inner();

    let stubs_dir = stubs.path().to_str().expect("utf-8").to_owned();
    let address = server.grpc_addr.to_string();
    let script = repo_root().join("tests/python/client.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([stubs_dir.as_str(), address.as_str(), "user-31"])
            .env("PYTHONPATH", python_path)
            .output()
            .expect("run the python client")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    assert_eq!(steps.len(), 3, "{stdout}");

    assert_eq!(steps[0]["experiment_id"], "reco_ymal_v1");
    assert_eq!(
        steps[0]["variant"],
        rust_answer.variant.as_str(),
        "Python and Rust get the same variant"
    );
    assert_eq!(
        steps[0]["params"]["model_version"].as_str().map(str::len),
        Some(2),
        "{}",
        steps[0]
    );

    assert_eq!(steps[1]["kind"], "snapshot");
    assert_eq!(steps[1]["experiments"], serde_json::json!(["reco_ymal_v1"]));

    assert_eq!(steps[2]["paused"], serde_json::json!(["reco_ymal_v1"]));
    assert!(steps[2]["version"].as_u64() > steps[1]["version"].as_u64());
}
