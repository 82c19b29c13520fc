//! The Rust SDK's event sender against a real `expd`: batches in the
//! background, retries with backoff while the service is down, flushes on
//! close, and every event lands once.

use std::{collections::HashMap, path::Path, sync::atomic::Ordering, time::Duration};

use exp_client::{EventSender, EventSenderOptions};
use exp_core::event::EventKind;
use exp_e2e::TestServer;
use exp_ingest::parquet;
use exp_proto::v1;

fn page_view(session: &str) -> v1::Outcome {
    v1::Outcome {
        r#type: v1::OutcomeType::PageView as i32,
        session_id: session.into(),
        page_type: "home".into(),
        ..Default::default()
    }
}

fn parquet_ids(data_dir: &Path) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for file in parquet::list(&data_dir.join("events"), EventKind::Outcome).expect("list") {
        for id in parquet::read_event_ids(&file).expect("read") {
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

#[tokio::test]
async fn queued_events_are_sent_in_batches_and_flushed_on_close() {
    let server = TestServer::start().await;
    let sender = EventSender::start(EventSenderOptions {
        endpoint: format!("http://{}", server.grpc_addr),
        max_batch: 100,
        flush_interval: Duration::from_secs(3600),
        ..EventSenderOptions::default()
    })
    .expect("start");
    for index in 0..1_050 {
        sender
            .log_outcome(page_view(&format!("s-{index}")))
            .expect("queued");
    }
    // Full batches leave without waiting for the (hour-long) interval; the
    // last 50 wait for close.
    let stats = sender.close(Duration::from_secs(10)).await;
    assert_eq!(stats.accepted.load(Ordering::Relaxed), 1_050);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    let data = server.stop().await;
    let ids = parquet_ids(data.path());
    assert_eq!(ids.len(), 1_050, "each generated id is distinct");
    assert!(ids.values().all(|count| *count == 1));
}

#[tokio::test]
async fn events_logged_while_the_service_is_down_arrive_once_it_is_back() {
    let server = TestServer::start().await;
    let addr = server.grpc_addr;
    let sender = EventSender::start(EventSenderOptions {
        endpoint: format!("http://{addr}"),
        flush_interval: Duration::from_millis(50),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        call_timeout: Duration::from_secs(2),
        ..EventSenderOptions::default()
    })
    .expect("start");
    for index in 0..100 {
        sender
            .log_outcome(page_view(&format!("before-{index}")))
            .expect("queued");
    }
    sender.flush().await;
    assert_eq!(sender.stats().accepted.load(Ordering::Relaxed), 100);

    let data = server.stop().await;
    for index in 0..100 {
        sender
            .log_outcome(page_view(&format!("during-{index}")))
            .expect("queued");
    }
    // Let a few attempts fail against the closed port.
    let failing = tokio::time::Instant::now();
    while sender.stats().retries.load(Ordering::Relaxed) < 2 {
        assert!(
            failing.elapsed() < Duration::from_secs(10),
            "no retries seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the same port again");
    let restarted = TestServer::start_on(listener, data, &[]).await;
    let stats = sender.close(Duration::from_secs(20)).await;
    assert_eq!(
        stats.accepted.load(Ordering::Relaxed) + stats.duplicates.load(Ordering::Relaxed),
        200
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    let data = restarted.stop().await;
    let ids = parquet_ids(data.path());
    assert_eq!(ids.len(), 200);
    assert!(ids.values().all(|count| *count == 1), "{ids:?}");
}

#[tokio::test]
async fn invalid_events_are_counted_as_rejected_and_not_retried() {
    let server = TestServer::start().await;
    let sender = EventSender::start(EventSenderOptions {
        endpoint: format!("http://{}", server.grpc_addr),
        ..EventSenderOptions::default()
    })
    .expect("start");
    sender.log_outcome(page_view("s-1")).expect("queued");
    sender
        .log_outcome(v1::Outcome {
            r#type: v1::OutcomeType::AddToCart as i32,
            session_id: "s-1".into(),
            ..Default::default()
        })
        .expect("queued");
    let stats = sender.close(Duration::from_secs(10)).await;
    assert_eq!(stats.accepted.load(Ordering::Relaxed), 1);
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
    assert_eq!(stats.retries.load(Ordering::Relaxed), 0);
}

#[test]
fn options_out_of_range_are_refused_naming_the_field() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    let refused = EventSender::start(EventSenderOptions {
        max_batch: 6_000,
        ..EventSenderOptions::default()
    })
    .expect_err("refused");
    assert!(refused.to_string().contains("max_batch"), "{refused}");
}
