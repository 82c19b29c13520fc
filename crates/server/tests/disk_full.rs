//! Disk full: `expd` runs under a file-size limit (`ulimit -f`, with
//! SIGXFSZ ignored, so a write past the limit fails with EFBIG the way a
//! write to a full disk fails with ENOSPC); the limit is lifted with
//! `prlimit`, as space returning.
//!
//! - Events: once the event log reaches the limit, `LogOutcomes` is
//!   refused with UNAVAILABLE and nothing of the refused batch is
//!   acknowledged; what was acknowledged before stays. When space returns,
//!   the same batch is accepted without a restart, and after a graceful
//!   stop every acknowledged id is in the Parquet files exactly once.
//! - Admin changes: a change the store could not flush is answered
//!   UNAVAILABLE and is served by no one (reads, config delivery,
//!   `Assign`), readiness reports that the store cannot write (and
//!   AdminService is NOT_SERVING), and after space returns the next change
//!   lands without a restart; after a restart the refused change is
//!   absent.

mod common;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, SystemTime},
};

use common::{Running, free_addr, http_get, wait_until_assigned};
use exp_core::event::EventKind;
use exp_ingest::parquet;
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient, config_service_client::ConfigServiceClient,
    event_service_client::EventServiceClient,
};
use tonic::{Code, transport::Channel};

const BATCH: usize = 2_000;
/// The soft file-size limit, in the 1024-byte blocks of bash's `ulimit -f`
/// (soft, so the process may have it lifted again).
const LIMIT_BLOCKS: u32 = 6 * 1024;

fn batch(number: usize) -> Vec<v1::Outcome> {
    (0..BATCH)
        .map(|index| v1::Outcome {
            event_id: format!("full-{number:04}-{index:04}"),
            r#type: v1::OutcomeType::Click as i32,
            user_id: format!("u-{index}"),
            session_id: format!("s-{number}-{index}"),
            placement: "you_may_also_like".into(),
            page_type: "product_detail".into(),
            item_id: format!("sku-{index}"),
            from_recommendation: true,
            source_placement: "you_may_also_like".into(),
            timestamp: Some(SystemTime::now().into()),
            ..Default::default()
        })
        .collect()
}

async fn connect(addr: SocketAddr) -> EventServiceClient<Channel> {
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            let mut client = EventServiceClient::new(channel)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(16 << 20);
            // The log opens in the background: wait until it answers.
            if client
                .log_outcomes(v1::LogOutcomesRequest::default())
                .await
                .is_ok()
            {
                return client;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expd did not come up on {addr}");
}

/// `expd` with `flags`, its soft file-size limit `limit_blocks` (1024-byte
/// blocks, `None` for none), SIGXFSZ ignored, stderr into `expd.log` of
/// `data`.
fn spawn_expd(
    data: &std::path::Path,
    limit_blocks: Option<u32>,
    grpc: SocketAddr,
    http: SocketAddr,
    flags: &[&str],
) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("expd.log"))
        .expect("log file");
    let limit = limit_blocks.map_or_else(|| "unlimited".to_owned(), |blocks| blocks.to_string());
    // `trap '' XFSZ` is inherited through exec: a write past the limit
    // fails with EFBIG instead of killing the process.
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -S -f {limit}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_expd"))
        .arg("--data-dir")
        .arg(data)
        .args(["--grpc-addr", &grpc.to_string()])
        .args(["--http-addr", &http.to_string()])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn expd under a file-size limit");
    Running(child)
}

/// Lifts the file-size limit of the running process `pid`: space returns.
fn lift_limit(pid: u32) {
    let lifted = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited"])
        .status()
        .expect("prlimit");
    assert!(lifted.success());
}

fn stop(Running(child): &mut Running, data: &std::path::Path) {
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = child.wait().expect("exit");
    assert!(
        status.success(),
        "expd did not stop cleanly: {status}\n{}",
        std::fs::read_to_string(data.join("expd.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_events_keeps_acked_ones_and_recovers_when_space_returns() {
    let data = tempfile::tempdir().expect("dir");
    let grpc = free_addr();
    let http = free_addr();
    let mut child = spawn_expd(
        data.path(),
        Some(LIMIT_BLOCKS),
        grpc,
        http,
        &["--events-flush-interval", "1h"],
    );
    let mut client = connect(grpc).await;

    let mut acked: Vec<String> = Vec::new();
    let mut refused_batch = None;
    for number in 0..200 {
        let outcomes = batch(number);
        match client
            .log_outcomes(v1::LogOutcomesRequest {
                outcomes: outcomes.clone(),
            })
            .await
        {
            Ok(answer) => {
                assert_eq!(answer.into_inner().accepted_count as usize, BATCH);
                acked.extend(outcomes.into_iter().map(|outcome| outcome.event_id));
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                refused_batch = Some((number, outcomes));
                break;
            }
        }
    }
    let (number, refused) = refused_batch.expect("the log reached the file-size limit");
    assert!(!acked.is_empty(), "some batches fit before the limit");

    // Still full: refused again, and nothing of it was acknowledged.
    let again = client
        .log_outcomes(v1::LogOutcomesRequest {
            outcomes: refused.clone(),
        })
        .await
        .expect_err("still full");
    assert_eq!(again.code(), Code::Unavailable);

    lift_limit(child.0.id());
    let answer = client
        .log_outcomes(v1::LogOutcomesRequest {
            outcomes: refused.clone(),
        })
        .await
        .expect("accepted once there is space")
        .into_inner();
    assert_eq!(
        (answer.accepted_count as usize, answer.duplicate_count),
        (BATCH, 0),
        "the refused batch was never half-written"
    );
    acked.extend(refused.into_iter().map(|outcome| outcome.event_id));
    let after = batch(number + 1);
    client
        .log_outcomes(v1::LogOutcomesRequest {
            outcomes: after.clone(),
        })
        .await
        .expect("and the next batch too");
    acked.extend(after.into_iter().map(|outcome| outcome.event_id));

    stop(&mut child, data.path());

    let written = parquet::count_event_ids(&data.path().join("events"), EventKind::Outcome)
        .expect("complete Parquet files");
    let missing = acked.iter().filter(|id| !written.contains_key(*id)).count();
    assert_eq!(missing, 0, "acked events lost");
    assert!(
        written.values().all(|count| *count == 1),
        "an event written twice"
    );
    assert_eq!(written.len(), acked.len(), "nothing but acked events");
    println!(
        "{} events acked, the batch after {} refused while full and accepted after",
        acked.len(),
        number
    );
}

/// Fills the disk of the running process `pid`: a soft file-size limit of
/// 1 KB, smaller than every file the store writes.
fn fill_disk(pid: u32) {
    let limited = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=1024:"])
        .status()
        .expect("prlimit");
    assert!(limited.success());
}

async fn channel(addr: SocketAddr) -> Channel {
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expd did not come up on {addr}");
}

/// What every reader serves of experiment `id`: (revision, traffic) from
/// GetExperiment, the newest listed revision, the config snapshot's
/// revision, and how many of 200 users `Assign` puts in the experiment.
async fn served(channel: &Channel, id: &str) -> (u64, u32, u64, u64, usize) {
    let experiment = AdminServiceClient::new(channel.clone())
        .get_experiment(v1::GetExperimentRequest { id: id.into() })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    let newest = AdminServiceClient::new(channel.clone())
        .list_experiment_revisions(v1::ListExperimentRevisionsRequest {
            id: id.into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("revisions")
        .into_inner()
        .revisions
        .first()
        .and_then(|revision| revision.experiment.as_ref())
        .map(|experiment| experiment.revision)
        .expect("a revision");
    let snapshot = ConfigServiceClient::new(channel.clone())
        .get_config_snapshot(v1::GetConfigSnapshotRequest::default())
        .await
        .expect("snapshot")
        .into_inner()
        .snapshot
        .expect("snapshot");
    let serving = snapshot
        .experiments
        .iter()
        .find(|serving| serving.id == id)
        .map(|serving| serving.revision)
        .expect("the experiment serves");
    let mut assignment = AssignmentServiceClient::new(channel.clone());
    let mut assigned = 0;
    for user in 0..200 {
        let answer = assignment
            .assign(v1::AssignRequest {
                user_id: format!("user-{user}"),
                context: Some(v1::RequestContext {
                    placement: "you_may_also_like".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("assign")
            .into_inner();
        assigned += answer
            .assignments
            .iter()
            .filter(|assignment| assignment.experiment_id == id)
            .count();
    }
    (
        experiment.revision,
        experiment.traffic_percent,
        newest,
        serving,
        assigned,
    )
}

async fn admin_health(channel: &Channel) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "experiments.v1.AdminService".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_change_the_disk_refused_is_never_served_and_the_next_lands_when_space_returns() {
    let data = tempfile::tempdir().expect("dir");
    let (grpc, http) = (free_addr(), free_addr());
    let flags = ["--services", "admin,assign"];
    let mut child = spawn_expd(data.path(), None, grpc, http, &flags);
    let channel = channel(grpc).await;
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut seed = exp_core::examples::seed_experiment();
    seed.traffic_percent = 100;
    let id = seed.id.clone();
    admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(exp_proto::convert::experiment_to_proto(&seed)),
            reason: String::new(),
        })
        .await
        .expect("create");
    let current = admin
        .start_experiment(v1::StartExperimentRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!(current.traffic_percent, 100, "the seed takes everyone");

    wait_until_assigned(&channel, &current.id).await;
    let before = served(&channel, &current.id).await;
    assert!(before.4 > 100, "most users are in: {before:?}");

    // The disk fills up: the change taking everyone out is refused.
    fill_disk(child.0.id());
    let mut everyone_out = current.clone();
    everyone_out.traffic_percent = 0;
    everyone_out.description = "the change the disk refused".into();
    let refused = admin
        .update_experiment(v1::UpdateExperimentRequest {
            experiment: Some(everyone_out.clone()),
            reason: "take everyone out".into(),
            ..Default::default()
        })
        .await
        .expect_err("the disk is full");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let confirmed = current.revision;
    // (revision, traffic, newest listed revision, served revision, users in)
    let unchanged = (confirmed, 100, confirmed, confirmed, before.4);

    // Served by no one; readiness and health say why, also after the
    // store has tried to write again in the background.
    for _ in 0..2 {
        assert_eq!(
            served(&channel, &id).await,
            unchanged,
            "a refused change is served"
        );
        // Reported, without taking the process out of rotation: reads,
        // assignment and config delivery still serve.
        let (code, body) = http_get(http, "/readyz").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("config store cannot write"), "{body}");
        assert_eq!(
            admin_health(&channel).await,
            tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        );
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    // Still full: the same change is refused again.
    let again = admin
        .update_experiment(v1::UpdateExperimentRequest {
            experiment: Some(everyone_out.clone()),
            reason: "again".into(),
            ..Default::default()
        })
        .await
        .expect_err("still full");
    assert_eq!(again.code(), Code::Unavailable, "{again:?}");
    assert_eq!(
        served(&channel, &id).await,
        unchanged,
        "served after a second refusal"
    );

    // Space returns: the store writes again without a restart.
    lift_limit(child.0.id());
    let mut ready = http_get(http, "/readyz").await;
    for _ in 0..100 {
        if !ready.1.contains("config store cannot write") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = http_get(http, "/readyz").await;
    }
    assert!(
        !ready.1.contains("config store cannot write"),
        "the store writes again once space returned: {}",
        ready.1
    );
    assert_eq!(
        admin_health(&channel).await,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut after = current.clone();
    after.traffic_percent = 70;
    after.description = "after space returned".into();
    let landed = admin
        .update_experiment(v1::UpdateExperimentRequest {
            experiment: Some(after),
            reason: "after".into(),
            ..Default::default()
        })
        .await
        .expect("a change lands once space returned")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!(
        (landed.revision, landed.traffic_percent),
        (confirmed + 1, 70)
    );
    stop(&mut child, data.path());

    // After a restart: the change that landed, never the refused one.
    let (grpc, http) = (free_addr(), free_addr());
    let mut child = spawn_expd(data.path(), None, grpc, http, &flags);
    let channel = self::channel(grpc).await;
    let experiment = AdminServiceClient::new(channel.clone())
        .get_experiment(v1::GetExperimentRequest { id: id.clone() })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!(
        (experiment.revision, experiment.traffic_percent),
        (confirmed + 1, 70)
    );
    let history = AdminServiceClient::new(channel.clone())
        .list_experiment_revisions(v1::ListExperimentRevisionsRequest {
            id: id.clone(),
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .expect("revisions")
        .into_inner()
        .revisions;
    assert_eq!(history.len() as u64, confirmed + 1, "every revision, once");
    assert!(
        history.iter().all(
            |revision| revision
                .experiment
                .as_ref()
                .is_some_and(
                    |experiment| experiment.description != everyone_out.description
                        && experiment.traffic_percent != 0
                )
        ),
        "a refused change is in the history"
    );
    stop(&mut child, data.path());
}
