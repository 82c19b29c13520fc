//! Disk full: `expd` runs under a file-size limit (`ulimit -f`, with
//! SIGXFSZ ignored, so a write past the limit fails with EFBIG the way a
//! write to a full disk fails with ENOSPC). Once the event log reaches the
//! limit, `LogOutcomes` is refused with UNAVAILABLE and nothing of the
//! refused batch is acknowledged; what was acknowledged before stays. When
//! the limit is lifted (`prlimit`, as space returning), the same batch is
//! accepted without a restart, and after a graceful stop every
//! acknowledged id is in the Parquet files exactly once.

use std::{
    net::{SocketAddr, TcpListener},
    process::{Command, Stdio},
    time::{Duration, SystemTime},
};

use exp_core::event::EventKind;
use exp_ingest::parquet;
use exp_proto::v1::{self, event_service_client::EventServiceClient};
use tonic::{Code, transport::Channel};

const BATCH: usize = 2_000;
/// The soft file-size limit, in the 1024-byte blocks of bash's `ulimit -f`
/// (soft, so the process may have it lifted again).
const LIMIT_BLOCKS: u32 = 6 * 1024;

fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_events_keeps_acked_ones_and_recovers_when_space_returns() {
    let data = tempfile::tempdir().expect("dir");
    let grpc = free_addr();
    let http = free_addr();
    let log = std::fs::File::create(data.path().join("expd.log")).expect("log file");
    // `trap '' XFSZ` is inherited through exec: a write past the limit
    // fails with EFBIG instead of killing the process.
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -S -f {LIMIT_BLOCKS}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_expd"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--grpc-addr", &grpc.to_string()])
        .args(["--http-addr", &http.to_string()])
        .args(["--events-flush-interval", "1h"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn expd under a file-size limit");
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

    // Space returns: lift the limit of the running process.
    let lifted = Command::new("prlimit")
        .args(["--pid", &child.id().to_string(), "--fsize=unlimited"])
        .status()
        .expect("prlimit");
    assert!(lifted.success());
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

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = child.wait().expect("exit");
    assert!(
        status.success(),
        "expd did not stop cleanly: {status}\n{}",
        std::fs::read_to_string(data.path().join("expd.log")).unwrap_or_default()
    );

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
