//! Acked means durable, exactly once: a writer logs outcomes with known
//! ids into the real `expd` binary while it is killed with SIGKILL at
//! random moments and restarted on the same data directory. The writer
//! retries every batch until it is answered, as a client would, and keeps
//! writing until the last kill. At the end every acknowledged id is in the
//! Parquet files exactly once.

mod common;

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use common::free_addr;
use exp_core::event::EventKind;
use exp_ingest::parquet;
use exp_proto::v1::{self, event_service_client::EventServiceClient};
use tonic::transport::Endpoint;

const BATCH: usize = 200;
const KILLS: usize = 5;

fn start_expd(data_dir: &Path, log: &Path) -> (Child, SocketAddr) {
    let grpc = free_addr();
    let http = free_addr();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_expd"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--grpc-addr", &grpc.to_string()])
        .args(["--http-addr", &http.to_string()])
        // Short, so segments are rolled (and killed mid-roll) during the
        // test, not only at the end.
        .args(["--events-flush-interval", "300ms"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn expd");
    (child, grpc)
}

/// A small deterministic generator for kill delays (seeded from the clock;
/// the seed is printed so a failure can be replayed).
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        low + (self.0 >> 33) % (high - low)
    }
}

fn outcome(index: usize) -> v1::Outcome {
    v1::Outcome {
        event_id: format!("crash-{index:05}"),
        r#type: v1::OutcomeType::PageView as i32,
        session_id: format!("s-{}", index % 97),
        page_type: "product_detail".into(),
        timestamp: Some(SystemTime::now().into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_event_survives_sigkill_and_lands_in_parquet_exactly_once() {
    let data = tempfile::tempdir().expect("dir");
    let log = data.path().join("expd.log");
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    println!("kill schedule seed: {seed}");
    let mut delays = Delays(seed);

    let (child, addr) = start_expd(data.path(), &log);
    let current = Arc::new(Mutex::new(addr));
    let writer_addr = current.clone();
    let (stop_writing, writing_stopped) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut acked: Vec<String> = Vec::new();
        let mut attempts = 0;
        let mut duplicates = 0;
        let mut start = 0;
        while !*writing_stopped.borrow() {
            let batch: Vec<v1::Outcome> = (start..start + BATCH).map(outcome).collect();
            loop {
                attempts += 1;
                let addr = *writer_addr.lock().expect("addr");
                let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
                    continue;
                };
                let endpoint = endpoint
                    .connect_timeout(Duration::from_millis(500))
                    .timeout(Duration::from_secs(5));
                let answer = match endpoint.connect().await {
                    Ok(channel) => {
                        EventServiceClient::new(channel)
                            .log_outcomes(v1::LogOutcomesRequest {
                                outcomes: batch.clone(),
                            })
                            .await
                    }
                    Err(err) => Err(tonic::Status::unavailable(err.to_string())),
                };
                match answer {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
                        assert_eq!(
                            (answer.accepted_count + answer.duplicate_count) as usize,
                            BATCH
                        );
                        duplicates += answer.duplicate_count;
                        acked.extend(batch.iter().map(|o| o.event_id.clone()));
                        start += BATCH;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(30)).await,
                }
            }
        }
        (acked, attempts, duplicates)
    });

    let mut child = child;
    let mut kills = 0;
    let started = Instant::now();
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(delays.next_ms(100, 700))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        kills += 1;
        let (restarted, addr) = start_expd(data.path(), &log);
        child = restarted;
        *current.lock().expect("addr") = addr;
    }
    // Some writes after the last restart, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_writing.send(true);
    let (acked, attempts, duplicates) = writer.await.expect("writer");
    let elapsed = started.elapsed();

    // A graceful stop rolls everything still in the log into Parquet.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = child.wait().expect("exit");
    assert!(
        status.success(),
        "expd did not stop cleanly: {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let written = parquet::count_event_ids(&data.path().join("events"), EventKind::Outcome)
        .expect("complete Parquet files");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !written.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "acked but lost: {missing:?}");
    let doubled: Vec<(&String, &usize)> = written.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "written more than once: {doubled:?}");
    assert_eq!(written.len(), acked.len(), "nothing but acked events");
    println!(
        "{} events acked in {} batches ({attempts} attempts, {duplicates} events written \
         before a kill and answered as duplicates on retry), {kills} kills, {elapsed:?}",
        acked.len(),
        acked.len() / BATCH
    );
}
