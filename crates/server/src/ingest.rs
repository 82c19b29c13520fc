//! Wiring of event ingest: the event log opened in the background (a
//! replay after a crash must not hold up assignment), the experiment
//! catalog kept in step with the store, and the exposures of in-process
//! assignment fed into the log.

use std::{sync::Arc, time::Duration};

use exp_assign::ExposureRecord;
use exp_core::{Clock, UnitType};
use exp_ingest::{Catalog, EventGrpc, EventLog, ExposureFeed, LogOptions, LogSlot, SharedCatalog};
use exp_proto::v1;
use exp_store::Store;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{error, warn};

use crate::Config;

/// How long to wait before trying again to open a log that failed to open.
const REOPEN_DELAY: Duration = Duration::from_secs(5);

/// The running ingest side of `expd`.
#[derive(Debug)]
pub struct Ingest {
    slot: LogSlot,
    catalog: SharedCatalog,
    feed: ExposureFeed,
    feed_task: JoinHandle<()>,
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
        let (feed, feed_task) = ExposureFeed::start(slot.clone(), config.exposure_queue as usize);
        Self {
            slot,
            catalog,
            feed,
            feed_task,
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

    /// Feeds the exposures of in-process assignment into the log.
    pub fn forward_exposures(&self, mut records: mpsc::Receiver<ExposureRecord>) {
        let feed = self.feed.clone();
        tokio::spawn(async move {
            let mut received = Vec::with_capacity(256);
            while records.recv_many(&mut received, 256).await > 0 {
                for record in received.drain(..) {
                    feed.offer(exposure_of(record));
                }
            }
        });
    }

    /// Writes what the feed holds, then every pending event, rolls all of
    /// it into Parquet and closes the log.
    pub async fn close(self) {
        self.feed.shut_down();
        if tokio::time::timeout(Duration::from_secs(5), self.feed_task)
            .await
            .is_err()
        {
            warn!("assignment exposures still queued at shutdown were not written");
        }
        self.catalog_task.abort();
        self.opener.abort();
        if let Some(log) = self.slot.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

fn exposure_of(record: ExposureRecord) -> v1::Exposure {
    v1::Exposure {
        event_id: String::new(),
        experiment_id: record.experiment_id.to_string(),
        variant: record.variant.to_string(),
        user_id: record.user_id,
        session_id: record.session_id,
        unit_type: match record.unit_type {
            UnitType::User => v1::UnitType::User,
            UnitType::Session => v1::UnitType::Session,
        } as i32,
        placement: record.placement,
        page_type: record.page_type,
        revision: record.revision,
        timestamp: Some(record.timestamp.into()),
    }
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
