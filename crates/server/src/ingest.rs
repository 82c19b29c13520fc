//! Wiring of event ingest: the event log opened in the background (a
//! replay after a crash must not hold up assignment), the experiment
//! catalog kept in step with the store, and the exposures of in-process
//! assignment fed into the log (or, in an assign replica or sidecar, sent
//! to its config source's `EventService`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use exp_assign::{ExposureRecord, RepeatFilter};
use exp_client::{EventSender, EventSenderOptions};
use exp_core::Clock;
use exp_ingest::{
    Catalog, EventGrpc, EventLog, ExposureBatcher, LogOptions, LogSlot, Share, SharedCatalog,
    set_background_share,
};
use exp_proto::v1;
use exp_store::Store;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{error, warn};

use crate::Config;

/// How long to wait before trying again to open a log that failed to open.
const REOPEN_DELAY: Duration = Duration::from_secs(5);
/// How often the idle exposure feed looks at the queue.
const FEED_POLL: Duration = Duration::from_millis(5);
/// Most exposures an assign replica's forwarder takes from the queue
/// before it lets its sender run.
const FORWARD_CHUNK: usize = 1_000;

/// The running ingest side of `expd`.
#[derive(Debug)]
pub struct Ingest {
    slot: LogSlot,
    catalog: SharedCatalog,
    feed: Option<LeftoverThread>,
    opener: JoinHandle<()>,
    catalog_task: JoinHandle<()>,
}

impl Ingest {
    /// Starts opening the log under `<data-dir>/events` and following the
    /// store's experiments.
    pub fn start(config: &Config, store: Arc<Store>) -> Self {
        let slot = LogSlot::default();
        let options = LogOptions {
            dir: config.data_dir.join("events"),
            flush_interval: config.events_flush_interval,
            max_pending_events: config.events_max_pending as usize,
            dedup_window: config.events_dedup_window,
        };
        let opener = tokio::spawn(open_log(options, slot.clone()));
        let catalog = SharedCatalog::default();
        let catalog_task = tokio::spawn(follow_catalog(store, catalog.clone()));
        Self {
            slot,
            catalog,
            feed: None,
            opener,
            catalog_task,
        }
    }

    /// The `EventService` of this log.
    pub fn grpc(
        &self,
        clock: Arc<dyn Clock>,
    ) -> v1::event_service_server::EventServiceServer<EventGrpc> {
        EventGrpc::new(self.slot.clone(), self.catalog.clone(), clock).into_server()
    }

    /// Where the log will be once open.
    pub fn slot(&self) -> LogSlot {
        self.slot.clone()
    }

    /// Feeds the exposures of in-process assignment into the log, repeats
    /// filtered out, from a thread of its own that runs on CPU time request
    /// handling does not want ([`Share::Leftover`]; when the machine is
    /// saturated the queue fills and drops what overflows, counted). It
    /// polls the queue (every 5 ms when idle) instead of waiting on
    /// it, so a request offering an exposure never wakes anything, and the
    /// filter, the conversion to events and the appends never run on a
    /// runtime worker that answers requests.
    pub fn forward_exposures(&mut self, mut records: mpsc::Receiver<ExposureRecord>) {
        let mut batcher =
            ExposureBatcher::new(self.slot.clone(), tokio::runtime::Handle::current());
        let spawned = LeftoverThread::spawn("exposure-feed", move |stop| {
            let repeats = RepeatFilter::default();
            loop {
                match records.try_recv() {
                    Ok(record) => {
                        if repeats.is_first(&record) {
                            batcher.push(record.into_proto());
                        }
                        batcher.flush_if_due();
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        batcher.flush_if_due();
                        for exposure in batcher.take_dropped() {
                            repeats.forget(&exposure);
                        }
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let nap = batcher.due_in().map_or(FEED_POLL, |due| due.min(FEED_POLL));
                        std::thread::sleep(nap.max(Duration::from_millis(1)));
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            }
            batcher.flush();
        });
        match spawned {
            Ok(thread) => self.feed = Some(thread),
            Err(err) => {
                error!(error = %err, "cannot start the exposure feed thread; exposures are not logged")
            }
        }
    }

    /// Writes what the feed holds, then every pending event, rolls all of
    /// it into Parquet and closes the log.
    pub async fn close(self) {
        if let Some(feed) = self.feed {
            feed.stop().await;
        }
        self.catalog_task.abort();
        self.opener.abort();
        if let Some(log) = self.slot.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

/// A thread of its own that runs on CPU time request handling does not
/// want ([`Share::Leftover`]) until told to stop: the exposure feed, or an
/// assign replica's exposure sender.
#[derive(Debug)]
pub struct LeftoverThread {
    thread: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl LeftoverThread {
    /// Starts `body` on a thread named `name` (at most 15 bytes: Linux
    /// cuts longer thread names); `body` ends once the flag it is given
    /// says stop.
    fn spawn(
        name: &'static str,
        body: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                set_background_share(name, Share::Leftover);
                body(&stopped);
            })?;
        Ok(Self { thread, stop })
    }

    /// Tells the thread to stop and waits until it has ended.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Sends the exposures of an assign replica or sidecar to the
/// `EventService` at `endpoint` (its config source, the admin's process)
/// with the SDK's batching sender, until stopped; then sends what is left
/// (waiting at most 5 s), so it is stopped once requests have drained.
/// Like the in-process feed, all of it (the repeat filter, the conversion
/// to events, the sender's batching and calls) runs on a [`LeftoverThread`]
/// with a runtime of its own, and polls the queue rather than waiting on
/// it, so an exposure offered by a request never wakes anything and no
/// runtime worker that answers requests does any of this work.
pub fn forward_to_remote(
    endpoint: &str,
    records: mpsc::Receiver<ExposureRecord>,
) -> std::io::Result<LeftoverThread> {
    let endpoint = endpoint.to_owned();
    LeftoverThread::spawn("exposure-sender", move |stop| {
        // Built here, not by the caller: a runtime may not be dropped on
        // the caller's (async) thread if anything below fails.
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                error!(error = %err, "cannot build the exposure sender's runtime; exposures are not sent");
                return;
            }
        };
        let sender = {
            let _entered = runtime.enter();
            EventSender::start(EventSenderOptions {
                endpoint,
                ..EventSenderOptions::default()
            })
        };
        match sender {
            Ok(sender) => runtime.block_on(send_exposures(sender, records, stop)),
            Err(err) => {
                error!(error = %err, "cannot start the exposure sender; exposures are not sent")
            }
        }
    })
}

/// The exposure sender's loop (see [`forward_to_remote`]).
async fn send_exposures(
    sender: EventSender,
    mut records: mpsc::Receiver<ExposureRecord>,
    stop: &AtomicBool,
) {
    let repeats = RepeatFilter::default();
    let mut full = 0u64;
    loop {
        // Read before draining: once it says stop, the drain that follows
        // takes everything offered before it.
        let stopping = stop.load(Ordering::Acquire);
        let mut drained = 0;
        let disconnected = loop {
            if drained == FORWARD_CHUNK {
                break false;
            }
            match records.try_recv() {
                Ok(record) => {
                    drained += 1;
                    if repeats.is_first(&record) {
                        full += u64::from(sender.log_exposure(record.into_proto()).is_err());
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break false,
                Err(mpsc::error::TryRecvError::Disconnected) => break true,
            }
        };
        if drained == FORWARD_CHUNK {
            // More may be waiting: let the sender's task take this chunk
            // first (its queue is bounded).
            tokio::task::yield_now().await;
        } else if stopping || disconnected {
            break;
        } else {
            tokio::time::sleep(FEED_POLL).await;
        }
    }
    if full > 0 {
        warn!(
            dropped = full,
            "exposures dropped: the event sender's queue was full"
        );
    }
    sender.close(Duration::from_secs(5)).await;
}

async fn open_log(options: LogOptions, slot: LogSlot) {
    loop {
        let attempt = options.clone();
        match tokio::task::spawn_blocking(move || EventLog::open(attempt)).await {
            Ok(Ok(log)) => {
                let _ = slot.set(Arc::new(log));
                return;
            }
            Ok(Err(err)) => error!(
                dir = %options.dir.display(),
                error = %err,
                "cannot open the event log; EventService answers UNAVAILABLE until it opens"
            ),
            Err(err) => error!(error = %err, "opening the event log panicked"),
        }
        tokio::time::sleep(REOPEN_DELAY).await;
    }
}

async fn follow_catalog(store: Arc<Store>, catalog: SharedCatalog) {
    let mut versions = store.subscribe();
    loop {
        let reading = store.clone();
        let experiments = tokio::task::spawn_blocking(move || reading.experiments()).await;
        match experiments {
            Ok(Ok(experiments)) => catalog.store(Arc::new(Catalog::new(
                experiments.into_iter().map(|experiment| {
                    let variants = experiment.variants.iter().map(|v| v.name.clone()).collect();
                    (experiment.id, variants)
                }),
            ))),
            Ok(Err(err)) => warn!(error = %err, "reading experiments for event validation failed"),
            Err(err) => warn!(error = %err, "reading experiments for event validation panicked"),
        }
        if versions.changed().await.is_err() {
            return;
        }
    }
}
