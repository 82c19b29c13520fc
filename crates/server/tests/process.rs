//! The `expd` binary as operators run it: durable across `kill -9`,
//! refusing unsafe binds, draining on SIGTERM.

use std::{process::Command, time::Duration};

mod common;

use common::{Expd, http_get, wait_until};
use exp_proto::v1::{
    CreateExperimentRequest, GetExperimentRequest, UpdateExperimentRequest,
    admin_service_client::AdminServiceClient,
};

fn spawn(data_dir: &std::path::Path, extra: &[&str]) -> Expd {
    Expd::start(data_dir, "127.0.0.1:0", extra)
}

async fn client(expd: &Expd) -> AdminServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", expd.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    AdminServiceClient::new(channel)
}

#[tokio::test]
async fn an_update_acknowledged_before_kill_9_is_there_after_restart() {
    let data = tempfile::tempdir().expect("dir");
    let mut expd = spawn(data.path(), &[]);
    let mut admin = client(&expd).await;
    let created = admin
        .create_experiment(CreateExperimentRequest {
            experiment: Some(exp_proto::convert::experiment_to_proto(
                &exp_core::examples::seed_experiment(),
            )),
            reason: String::new(),
        })
        .await
        .expect("create")
        .into_inner()
        .experiment
        .expect("experiment");
    let mut edited = created.clone();
    edited.traffic_percent = 35;
    admin
        .update_experiment(UpdateExperimentRequest {
            experiment: Some(edited),
            reason: "ramp".into(),
            ..Default::default()
        })
        .await
        .expect("update acknowledged");
    expd.child.kill().expect("SIGKILL");
    expd.child.wait().expect("reaped");

    let mut restarted = spawn(data.path(), &[]);
    let mut admin = client(&restarted).await;
    let experiment = admin
        .get_experiment(GetExperimentRequest { id: created.id })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!((experiment.revision, experiment.traffic_percent), (2, 35));
    restarted.child.kill().expect("stop");
    let _ = restarted.child.wait();
}

#[test]
fn without_tokens_a_non_loopback_address_is_refused_with_a_clear_message() {
    let data = tempfile::tempdir().expect("dir");
    let output = Command::new(env!("CARGO_BIN_EXE_expd"))
        .args([
            "--data-dir",
            data.path().to_str().expect("utf-8"),
            "--grpc-addr",
            "0.0.0.0:0",
        ])
        .output()
        .expect("run expd");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--grpc-addr 0.0.0.0:0") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[test]
fn a_bad_tokens_file_stops_startup_naming_the_entry() {
    let data = tempfile::tempdir().expect("dir");
    let tokens = data.path().join("tokens.json");
    std::fs::write(
        &tokens,
        r#"{"tokens": [{"token": "short", "identity": "a", "role": "editor"}]}"#,
    )
    .expect("write");
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    let output = Command::new(env!("CARGO_BIN_EXE_expd"))
        .args(["--data-dir", data.path().to_str().expect("utf-8")])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--tokens-file", tokens.to_str().expect("utf-8")])
        .output()
        .expect("run expd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tokens[0].token"), "{stderr}");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let data = tempfile::tempdir().expect("dir");
    let mut expd = spawn(data.path(), &[]);
    let status = Command::new("kill")
        .args(["-TERM", &expd.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let mut saw_drain = false;
    while let Ok(line) = expd.logs.recv_timeout(Duration::from_secs(10)) {
        saw_drain |= line.contains("shutdown complete");
    }
    let exit = expd.child.wait().expect("exit");
    assert!(exit.success(), "{exit:?}");
    assert!(saw_drain, "expd logged a complete drain");
}

async fn assign_seed_user(expd: &Expd, user: &str) -> Result<Vec<(String, String)>, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", expd.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let response = exp_proto::v1::assignment_service_client::AssignmentServiceClient::new(channel)
        .assign(exp_proto::v1::AssignRequest {
            user_id: user.into(),
            context: Some(exp_proto::v1::RequestContext {
                placement: "you_may_also_like".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(response
        .assignments
        .into_iter()
        .map(|a| (a.experiment_id, a.variant))
        .collect())
}

async fn assignment_health(expd: &Expd) -> i32 {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", expd.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "experiments.v1.AssignmentService".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

async fn eventually<T>(probe: impl AsyncFnMut() -> Option<T>) -> T {
    wait_until(Duration::from_secs(10), probe)
        .await
        .expect("condition met within 10 s")
}

#[tokio::test]
async fn a_sidecar_keeps_serving_with_the_admin_killed_and_after_its_own_restart() {
    let admin_dir = tempfile::tempdir().expect("dir");
    let sidecar_dir = tempfile::tempdir().expect("dir");
    let mut admin_process = spawn(admin_dir.path(), &[]);
    let mut admin = client(&admin_process).await;
    let mut seed = exp_proto::convert::experiment_to_proto(&exp_core::examples::seed_experiment());
    seed.traffic_percent = 100;
    admin
        .create_experiment(CreateExperimentRequest {
            experiment: Some(seed),
            reason: String::new(),
        })
        .await
        .expect("create");
    admin
        .start_experiment(exp_proto::v1::StartExperimentRequest {
            id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("start");

    let source = format!("http://{}", admin_process.grpc);
    let sidecar_args = ["--services", "assign", "--config-source", source.as_str()];
    let mut sidecar = spawn(sidecar_dir.path(), &sidecar_args);
    let expected = eventually(async || {
        assign_seed_user(&sidecar, "user-42")
            .await
            .ok()
            .filter(|answer| !answer.is_empty())
    })
    .await;
    assert_eq!(expected[0].0, "reco_ymal_v1");
    // The sidecar saves the config before anyone can rely on it.
    eventually(async || {
        sidecar_dir
            .path()
            .join("config-snapshot.pb")
            .exists()
            .then_some(())
    })
    .await;

    admin_process.child.kill().expect("kill -9 the admin");
    admin_process.child.wait().expect("reaped");
    assert_eq!(
        assign_seed_user(&sidecar, "user-42")
            .await
            .expect("still serving"),
        expected
    );
    assert_eq!(assignment_health(&sidecar).await, 1, "SERVING");

    sidecar.child.kill().expect("kill the sidecar");
    sidecar.child.wait().expect("reaped");
    let restarted = spawn(sidecar_dir.path(), &sidecar_args);
    assert_eq!(
        assign_seed_user(&restarted, "user-42")
            .await
            .expect("serves the saved config"),
        expected,
        "a cold start with the admin down serves the last known good config"
    );
    assert_eq!(
        assignment_health(&restarted).await,
        1,
        "SERVING from the saved config"
    );
    assert_eq!(readyz_status(&restarted).await, 200);
}

#[tokio::test]
async fn a_sidecar_that_never_had_a_config_reports_not_serving() {
    let dir = tempfile::tempdir().expect("dir");
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let source = format!("http://{unreachable}");
    let sidecar = spawn(
        dir.path(),
        &["--services", "assign", "--config-source", &source],
    );
    assert_eq!(assignment_health(&sidecar).await, 2, "NOT_SERVING");
    let refused = assign_seed_user(&sidecar, "user-1")
        .await
        .expect_err("no config yet");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(
        readyz_status(&sidecar).await,
        503,
        "/readyz agrees with gRPC health"
    );
}

async fn readyz_status(expd: &Expd) -> u16 {
    http_get(expd.http.parse().expect("address"), "/readyz")
        .await
        .0
}
