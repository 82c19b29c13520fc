//! The event sender's spool against a stand-in `EventService` that can be
//! made unavailable: what could not be sent waits on disk, survives a
//! close and a killed runtime, goes first when a sender starts again, and
//! stays within its bound.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use exp_client::{
    ClientError, EventSender, EventSenderOptions, SpoolOptions,
    events::{Batch, read_spool},
};
use exp_proto::v1::{
    self,
    event_service_server::{EventService, EventServiceServer},
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Records every call's event ids; answers UNAVAILABLE while down.
#[derive(Debug, Clone)]
struct Service {
    up: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    /// Events received while up, for waiting on.
    received: Arc<watch::Sender<usize>>,
}

impl Service {
    async fn start(up: bool) -> (Self, SocketAddr) {
        let service = Self {
            up: Arc::new(AtomicBool::new(up)),
            calls: Arc::default(),
            received: Arc::new(watch::channel(0).0),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EventServiceServer::new(service.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (service, addr)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn record(&self, ids: Vec<String>) -> Result<u32, Status> {
        if !self.up.load(Ordering::SeqCst) {
            return Err(Status::unavailable("down for the test"));
        }
        let count = ids.len() as u32;
        self.calls.lock().expect("calls").push(ids);
        self.received
            .send_modify(|received| *received += count as usize);
        Ok(count)
    }

    /// Event ids of every call taken, in order.
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().expect("calls").clone()
    }

    async fn wait_for(&self, events: usize) {
        let mut received = self.received.subscribe();
        tokio::time::timeout(
            Duration::from_secs(10),
            received.wait_for(|received| *received >= events),
        )
        .await
        .expect("the service received them within 10 s")
        .expect("service alive");
    }
}

#[tonic::async_trait]
impl EventService for Service {
    async fn log_exposures(
        &self,
        request: Request<v1::LogExposuresRequest>,
    ) -> Result<Response<v1::LogExposuresResponse>, Status> {
        let ids = request
            .into_inner()
            .exposures
            .into_iter()
            .map(|exposure| exposure.event_id)
            .collect();
        let accepted_count = self.record(ids)?;
        Ok(Response::new(v1::LogExposuresResponse {
            accepted_count,
            ..Default::default()
        }))
    }

    async fn log_outcomes(
        &self,
        request: Request<v1::LogOutcomesRequest>,
    ) -> Result<Response<v1::LogOutcomesResponse>, Status> {
        let ids = request
            .into_inner()
            .outcomes
            .into_iter()
            .map(|outcome| outcome.event_id)
            .collect();
        let accepted_count = self.record(ids)?;
        Ok(Response::new(v1::LogOutcomesResponse {
            accepted_count,
            ..Default::default()
        }))
    }
}

fn options(addr: SocketAddr, spool: Option<(&Path, u64)>) -> EventSenderOptions {
    EventSenderOptions {
        endpoint: format!("http://{addr}"),
        max_batch: 10,
        flush_interval: Duration::from_millis(20),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        call_timeout: Duration::from_secs(2),
        spool: spool.map(|(dir, max_bytes)| SpoolOptions {
            dir: dir.to_owned(),
            max_bytes,
        }),
        ..EventSenderOptions::default()
    }
}

/// An exposure whose encoding has the same size as any other with an id
/// as long (a timestamp of its own, not the varying current time).
fn exposure(id: &str) -> v1::Exposure {
    v1::Exposure {
        event_id: id.into(),
        experiment_id: "reco_ymal_v1".into(),
        variant: "treatment".into(),
        user_id: format!("user-{id}"),
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| format!("{prefix}-{index:03}"))
        .collect()
}

fn spooled_ids(dir: &Path) -> Vec<String> {
    read_spool(dir)
        .expect("read the spool")
        .into_iter()
        .flat_map(|batch| match batch {
            Batch::Exposures(request) => request
                .exposures
                .into_iter()
                .map(|exposure| exposure.event_id)
                .collect::<Vec<_>>(),
            Batch::Outcomes(request) => request
                .outcomes
                .into_iter()
                .map(|outcome| outcome.event_id)
                .collect(),
        })
        .collect()
}

/// Waits, up to 10 s, for a condition only a look can tell.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_batch_whose_call_failed_is_on_disk_until_the_service_answers_it() {
    let (service, addr) = Service::start(false).await;
    let spool = tempfile::tempdir().expect("dir");
    let sender = EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("start");
    let sent = ids("e", 3);
    for id in &sent {
        sender.log_exposure(exposure(id)).expect("queued");
    }
    until("the failed batch is spooled", || {
        sender.stats().spooled.load(Ordering::Relaxed) == 3
    })
    .await;
    assert_eq!(spooled_ids(spool.path()), sent);

    service.set_up(true);
    sender.flush().await;
    assert_eq!(service.calls(), [sent]);
    assert!(
        spooled_ids(spool.path()).is_empty(),
        "the file goes once its batch was answered"
    );
    let stats = sender.close(Duration::from_secs(1)).await;
    assert_eq!(stats.accepted.load(Ordering::Relaxed), 3);
    assert!(stats.retries.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn what_close_could_not_send_is_spooled_and_sent_first_by_the_next_sender() {
    let (service, addr) = Service::start(false).await;
    let spool = tempfile::tempdir().expect("dir");
    let before = ids("before", 25);
    let sender = EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("start");
    for id in &before {
        sender.log_exposure(exposure(id)).expect("queued");
    }
    let stats = sender.close(Duration::from_millis(100)).await;
    assert_eq!(stats.spooled.load(Ordering::Relaxed), 25);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(spooled_ids(spool.path()), before, "in the order queued");

    service.set_up(true);
    let restarted =
        EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("restart");
    let after = ids("after", 5);
    for id in &after {
        restarted.log_exposure(exposure(id)).expect("queued");
    }
    restarted.flush().await;
    let calls = service.calls();
    assert_eq!(
        calls[0],
        before[..10],
        "the oldest spooled batch goes first"
    );
    let received: Vec<String> = calls.concat();
    let (spooled, new): (Vec<String>, Vec<String>) = received
        .into_iter()
        .partition(|id| id.starts_with("before"));
    assert_eq!(spooled, before, "spooled batches in their order, once each");
    assert_eq!(new, after, "new events once each");
    assert!(spooled_ids(spool.path()).is_empty());
}

#[test]
fn batches_spooled_during_an_outage_survive_a_killed_runtime() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (service, addr) = runtime.block_on(Service::start(false));
    let spool = tempfile::tempdir().expect("dir");
    let queued = ids("queued", 40);

    // A runtime dropped mid-run is a kill as far as the sender can tell:
    // its task ends wherever it is, and `close` never runs.
    let doomed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sender = doomed.block_on(async {
        let sender =
            EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("start");
        for id in &queued {
            sender.log_exposure(exposure(id)).expect("queued");
        }
        until("the queue is drained into the spool", || {
            sender.stats().spooled.load(Ordering::Relaxed) == 40
        })
        .await;
        sender
    });
    drop(doomed);
    drop(sender);

    runtime.block_on(async {
        service.set_up(true);
        let restarted =
            EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("restart");
        service.wait_for(40).await;
        restarted.flush().await;
        let mut received = service.calls().concat();
        received.sort();
        assert_eq!(received, queued, "each spooled event sent once");
        until("every sent file is deleted", || {
            spooled_ids(spool.path()).is_empty()
        })
        .await;
    });
}

#[tokio::test]
async fn a_full_spool_drops_and_counts_what_does_not_fit() {
    let (service, addr) = Service::start(false).await;
    let spool = tempfile::tempdir().expect("dir");
    // Room for two and a half batches of ten exposures.
    let batch_bytes = {
        let probe = tempfile::tempdir().expect("dir");
        let sender =
            EventSender::start(options(addr, Some((probe.path(), 1 << 20)))).expect("start");
        for id in ids("p", 10) {
            sender.log_exposure(exposure(&id)).expect("queued");
        }
        sender.close(Duration::from_millis(50)).await;
        std::fs::read_dir(probe.path())
            .expect("list")
            .filter_map(|entry| entry.ok()?.metadata().ok())
            .filter(|metadata| metadata.len() > 0)
            .map(|metadata| metadata.len())
            .max()
            .expect("one spooled batch")
    };
    let sender = EventSender::start(options(addr, Some((spool.path(), 5 * batch_bytes / 2))))
        .expect("start");
    let queued = ids("e", 50);
    for id in &queued {
        sender.log_exposure(exposure(id)).expect("queued");
    }
    let stats = sender.close(Duration::from_millis(100)).await;
    let spooled = stats.spooled.load(Ordering::Relaxed);
    let spool_dropped = stats.spool_dropped.load(Ordering::Relaxed);
    assert_eq!(spooled, 20, "two batches fit");
    assert_eq!(
        spooled + spool_dropped,
        50,
        "every event is either kept or counted"
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(
        spooled_ids(spool.path()),
        queued[..20],
        "the oldest are kept"
    );

    service.set_up(true);
    let restarted =
        EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("restart");
    restarted.flush().await;
    assert_eq!(service.calls().concat(), queued[..20]);
}

#[tokio::test]
async fn a_torn_spool_file_is_skipped_with_a_warning_and_the_others_are_sent() {
    let (service, addr) = Service::start(false).await;
    let spool = tempfile::tempdir().expect("dir");
    let sender = EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("start");
    let queued = ids("e", 30);
    for id in &queued {
        sender.log_exposure(exposure(id)).expect("queued");
    }
    sender.close(Duration::from_millis(100)).await;
    let mut files: Vec<_> = std::fs::read_dir(spool.path())
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "batch"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3);
    let torn = &files[1];
    let bytes = std::fs::read(torn).expect("read");
    std::fs::write(torn, &bytes[..bytes.len() - 7]).expect("tear");

    service.set_up(true);
    let restarted =
        EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("restart");
    restarted.flush().await;
    assert_eq!(
        service.calls().concat(),
        [&queued[..10], &queued[20..]].concat(),
        "the batches around the torn one"
    );
    assert!(torn.with_extension("batch.corrupt").exists(), "kept aside");
}

#[tokio::test]
async fn without_a_spool_close_counts_what_it_could_not_send_as_dropped() {
    let (_service, addr) = Service::start(false).await;
    let sender = EventSender::start(options(addr, None)).expect("start");
    for id in ids("e", 15) {
        sender.log_exposure(exposure(&id)).expect("queued");
    }
    let stats = sender.close(Duration::from_millis(100)).await;
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 15);
    assert_eq!(stats.spooled.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_second_sender_on_a_spool_in_use_is_refused_at_start() {
    let (_service, addr) = Service::start(true).await;
    let spool = tempfile::tempdir().expect("dir");
    let _first = EventSender::start(options(addr, Some((spool.path(), 1 << 20)))).expect("start");
    let refused = EventSender::start(options(addr, Some((spool.path(), 1 << 20))))
        .expect_err("the spool is taken");
    assert!(
        matches!(&refused, ClientError::Spool { dir, .. } if dir == spool.path()),
        "{refused}"
    );
}
