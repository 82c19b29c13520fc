//! The `expd` binary as operators run it: durable across `kill -9`,
//! refusing unsafe binds, draining on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use exp_proto::v1::{
    CreateExperimentRequest, GetExperimentRequest, UpdateExperimentRequest,
    admin_service_client::AdminServiceClient,
};

/// A running `expd` child process and the addresses it logged.
struct Expd {
    child: Child,
    grpc: String,
    logs: mpsc::Receiver<String>,
}

fn spawn(data_dir: &std::path::Path, extra: &[&str]) -> Expd {
    let mut child = Command::new(env!("CARGO_BIN_EXE_expd"))
        .args(["--data-dir", data_dir.to_str().expect("utf-8")])
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn expd");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, logs) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let grpc = loop {
        let line = logs
            .recv_timeout(Duration::from_secs(20))
            .expect("expd logs that it serves");
        let entry: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        if entry["fields"]["message"] == "expd serving" {
            break entry["fields"]["grpc"]
                .as_str()
                .expect("grpc address")
                .to_owned();
        }
    };
    Expd { child, grpc, logs }
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
