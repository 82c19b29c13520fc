//! `experiments.v1.ConfigService`: the serving config for assign replicas,
//! sidecars and SDK caches, once (`GetConfigSnapshot`) or as a stream
//! (`WatchConfigs`).
//!
//! A [`ConfigPublisher`] rebuilds the serving config from the store at
//! every config version and broadcasts it with its predecessor. Each
//! watcher stream has its own task and its own bounded queue: a slow
//! watcher only fills its own queue; when it falls behind the broadcast it
//! is sent a fresh snapshot, never a stream with a hole in it.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use exp_core::{Clock, Error, serving::ServingConfig};
use exp_proto::{
    serving::{config_delta_to_proto, config_snapshot_to_proto},
    to_status,
    v1::{self, config_service_server::ConfigService, watch_configs_response::Payload},
};
use exp_store::Store;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

/// Config versions kept to answer a reconnecting watcher with a delta.
const HISTORY: usize = 64;
/// Changes buffered for watchers before a slow one is resynchronised.
const BROADCAST_CAPACITY: usize = 256;
/// Messages queued per watcher connection.
const WATCHER_QUEUE: usize = 8;
/// Most WatchConfigs streams one client address holds by default: its
/// streams, stuck or not, never lock other clients out of the watcher
/// limit.
pub const MAX_WATCHERS_PER_CLIENT: usize = 64;
/// How long a watcher's queue may stay full (its reader takes nothing)
/// before the stream is dropped and its place freed.
pub const WATCHER_STALL: Duration = Duration::from_secs(30);

/// A serving config and the one it replaced.
#[derive(Debug)]
pub struct Published {
    /// The config before the change.
    pub previous: Arc<ServingConfig>,
    /// The config after it.
    pub config: Arc<ServingConfig>,
}

/// Keeps the current serving config, recent history and a change feed.
#[derive(Debug)]
pub struct ConfigPublisher {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    current: watch::Sender<Arc<ServingConfig>>,
    history: Mutex<VecDeque<Arc<ServingConfig>>>,
    changes: broadcast::Sender<Arc<Published>>,
}

impl ConfigPublisher {
    /// Builds the serving config of `store` now, and keeps rebuilding it at
    /// every new config version until `shutdown` is cancelled (when the
    /// returned future, to be spawned, ends).
    pub fn start(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, impl Future<Output = ()> + Send + 'static), Error> {
        let mut versions = store.subscribe();
        let initial = Arc::new(build(&store, clock.as_ref())?);
        let (current, _) = watch::channel(initial.clone());
        let (changes, _) = broadcast::channel(BROADCAST_CAPACITY);
        let publisher = Arc::new(Self {
            store: store.clone(),
            clock: clock.clone(),
            current,
            history: Mutex::new(VecDeque::from([initial])),
            changes,
        });
        let task_publisher = publisher.clone();
        let task = async move {
            loop {
                tokio::select! {
                    changed = versions.changed() => if changed.is_err() { return },
                    () = shutdown.cancelled() => return,
                }
                let store = store.clone();
                let clock = clock.clone();
                match tokio::task::spawn_blocking(move || build(&store, clock.as_ref())).await {
                    Ok(Ok(config)) => task_publisher.publish(Arc::new(config)),
                    Ok(Err(err)) => {
                        warn!(error = %err, "rebuilding the serving config failed; keeping the last one")
                    }
                    Err(err) => warn!(error = %err, "rebuilding the serving config panicked"),
                }
            }
        };
        Ok((publisher, task))
    }

    fn publish(&self, config: Arc<ServingConfig>) {
        // The history lock also orders publishers (the rebuild task and
        // `refresh`): versions only move forward.
        let mut history = self
            .history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = self.current.borrow().clone();
        if config.version <= previous.version {
            return;
        }
        history.push_back(config.clone());
        while history.len() > HISTORY {
            history.pop_front();
        }
        self.current.send_replace(config.clone());
        // No receiver is fine: nobody watches yet.
        let _ = self.changes.send(Arc::new(Published { previous, config }));
    }

    /// The current serving config, rebuilt first if the store has moved on
    /// (so a reader sees every change acknowledged before its call).
    pub fn refresh(&self) -> Result<Arc<ServingConfig>, Error> {
        if self.store.config_version() > self.current().version {
            self.publish(Arc::new(build(&self.store, self.clock.as_ref())?));
        }
        Ok(self.current())
    }

    /// The current serving config.
    pub fn current(&self) -> Arc<ServingConfig> {
        self.current.borrow().clone()
    }

    /// A receiver of every new serving config (for in-process assignment).
    pub fn follow(&self) -> watch::Receiver<Arc<ServingConfig>> {
        self.current.subscribe()
    }

    /// The serving config at `version`, if still in the history.
    pub fn at(&self, version: u64) -> Option<Arc<ServingConfig>> {
        let history = self
            .history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        history
            .iter()
            .find(|config| config.version == version)
            .cloned()
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.changes.subscribe()
    }
}

fn build(store: &Store, clock: &dyn Clock) -> Result<ServingConfig, Error> {
    // One confirmed state: its version names exactly what it holds.
    let confirmed = store.confirmed();
    let experiments: Vec<_> = confirmed.experiments().cloned().collect();
    let holdouts: Vec<_> = confirmed.holdouts().cloned().collect();
    Ok(ServingConfig::build(
        confirmed.version,
        &experiments,
        &confirmed.overrides(None),
        clock.now(),
    )
    .with_holdouts(&holdouts))
}

/// The tonic implementation of `ConfigService`.
#[derive(Debug, Clone)]
pub struct ConfigGrpc {
    publisher: Arc<ConfigPublisher>,
    clock: Arc<dyn Clock>,
    heartbeat: Duration,
    shutdown: CancellationToken,
    // Open streams outlive the request's concurrency permit; this bounds
    // them (and the snapshots their queues may hold).
    watchers: Arc<Semaphore>,
    max_watchers: usize,
    by_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_client: usize,
    stall: Duration,
    // The config version each open stream was last sent, by stream.
    held: Arc<Mutex<HashMap<u64, u64>>>,
    next_stream: Arc<std::sync::atomic::AtomicU64>,
}

/// The open WatchConfigs streams of a [`ConfigGrpc`], for metrics.
#[derive(Debug, Clone)]
pub struct OpenWatchers {
    places: Arc<Semaphore>,
    max: usize,
    held: Arc<Mutex<HashMap<u64, u64>>>,
    publisher: Arc<ConfigPublisher>,
}

impl OpenWatchers {
    /// Streams open now.
    pub fn count(&self) -> usize {
        self.max.saturating_sub(self.places.available_permits())
    }

    /// Config versions the furthest-behind open stream has not been sent
    /// (0 when every stream holds the current config, or none is open).
    pub fn most_behind(&self) -> u64 {
        let current = self.publisher.current().version;
        let oldest = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .min()
            .copied();
        oldest.map_or(0, |oldest| current.saturating_sub(oldest))
    }
}

/// A stream's entry in the held versions, removed when the stream ends.
struct HeldVersion {
    held: Arc<Mutex<HashMap<u64, u64>>>,
    stream: u64,
}

impl HeldVersion {
    fn set(&self, version: u64) {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(self.stream, version);
    }
}

impl Drop for HeldVersion {
    fn drop(&mut self) {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.stream);
    }
}

/// A client's place among the watchers, given back when its stream ends.
struct ClientShare {
    by_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl ClientShare {
    /// A place for `client`, or `None` when it holds its `share` already.
    fn take(
        by_client: &Arc<Mutex<HashMap<IpAddr, usize>>>,
        client: IpAddr,
        share: usize,
    ) -> Option<Self> {
        let mut counts = by_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(client).or_default();
        if *count >= share {
            return None;
        }
        *count += 1;
        Some(Self {
            by_client: by_client.clone(),
            client,
        })
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut counts = self
            .by_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

impl ConfigGrpc {
    /// Serves `publisher`'s configs; streams send a heartbeat every
    /// `heartbeat`, end when `shutdown` is cancelled, and number at most
    /// `max_watchers` at once.
    pub fn new(
        publisher: Arc<ConfigPublisher>,
        clock: Arc<dyn Clock>,
        heartbeat: Duration,
        shutdown: CancellationToken,
        max_watchers: usize,
    ) -> Self {
        Self {
            publisher,
            clock,
            heartbeat,
            shutdown,
            watchers: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
            by_client: Arc::default(),
            per_client: MAX_WATCHERS_PER_CLIENT,
            stall: WATCHER_STALL,
            held: Arc::default(),
            next_stream: Arc::default(),
        }
    }

    /// How many WatchConfigs streams are open, for metrics.
    pub fn open_watchers(&self) -> OpenWatchers {
        OpenWatchers {
            places: self.watchers.clone(),
            max: self.max_watchers,
            held: self.held.clone(),
            publisher: self.publisher.clone(),
        }
    }

    /// The same service, one client address holding at most `per_client`
    /// streams (0: no per-address limit).
    pub fn with_per_client(mut self, per_client: usize) -> Self {
        self.per_client = per_client;
        self
    }

    /// The same service, dropping a watcher whose queue stays full for
    /// `stall` instead of [`WATCHER_STALL`].
    pub fn with_stall(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> v1::config_service_server::ConfigServiceServer<Self> {
        v1::config_service_server::ConfigServiceServer::new(self)
    }

    fn snapshot(&self, config: &ServingConfig, placements: &[String]) -> v1::WatchConfigsResponse {
        let filtered = config.for_placements(placements);
        v1::WatchConfigsResponse {
            config_version: config.version,
            payload: Some(Payload::Snapshot(config_snapshot_to_proto(
                &filtered,
                self.clock.now(),
            ))),
        }
    }
}

fn delta(
    from: &ServingConfig,
    to: &ServingConfig,
    placements: &[String],
) -> v1::WatchConfigsResponse {
    let delta = from
        .for_placements(placements)
        .delta_to(&to.for_placements(placements));
    v1::WatchConfigsResponse {
        config_version: to.version,
        payload: Some(Payload::Delta(config_delta_to_proto(&delta))),
    }
}

/// `expd.watchers.messages`: WatchConfigs messages sent, by `kind`
/// (snapshot, delta, heartbeat).
fn count_message(message: &v1::WatchConfigsResponse) {
    static MESSAGES: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    let kind = match message.payload {
        Some(Payload::Snapshot(_)) => "snapshot",
        Some(Payload::Delta(_)) => "delta",
        Some(Payload::Heartbeat(_)) | None => "heartbeat",
    };
    MESSAGES
        .get_or_init(|| {
            opentelemetry::global::meter("expd")
                .u64_counter("expd.watchers.messages")
                .with_description(
                    "WatchConfigs messages sent, by kind (snapshot, delta, heartbeat)",
                )
                .build()
        })
        .add(1, &[opentelemetry::KeyValue::new("kind", kind)]);
}

fn heartbeat(version: u64, now: std::time::SystemTime) -> v1::WatchConfigsResponse {
    v1::WatchConfigsResponse {
        config_version: version,
        payload: Some(Payload::Heartbeat(v1::Heartbeat {
            server_time: Some(now.into()),
        })),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchConfigsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigService for ConfigGrpc {
    async fn watch_configs(
        &self,
        request: Request<v1::WatchConfigsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let client = request.remote_addr().map(|addr| addr.ip());
        let request = request.into_inner();
        check_placements(&request.placements)?;
        let per_client = self.per_client;
        let share = match client.filter(|_| per_client > 0) {
            Some(client) => Some(
                ClientShare::take(&self.by_client, client, per_client).ok_or_else(|| {
                    Status::resource_exhausted(format!(
                        "this client holds {per_client} WatchConfigs streams already; \
                         close one, or retry with backoff"
                    ))
                })?,
            ),
            None => None,
        };
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("too many WatchConfigs streams open; retry with backoff")
        })?;
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        // Subscribe before reading the current config: nothing published in
        // between is missed.
        let mut changes = self.publisher.subscribe();
        let current = self.publisher.refresh().map_err(to_status)?;
        // known_version 0 means "nothing held": it always gets a snapshot.
        let first = if request.known_version > 0 && request.known_version == current.version {
            heartbeat(current.version, self.clock.now())
        } else {
            match self
                .publisher
                .at(request.known_version)
                .filter(|_| request.known_version > 0)
            {
                Some(held) => delta(&held, &current, &request.placements),
                None => self.snapshot(&current, &request.placements),
            }
        };
        let service = self.clone();
        let shutdown = self.shutdown.clone();
        let placements = request.placements;
        let client = request.client_id;
        let stall = self.stall;
        let sent = HeldVersion {
            held: self.held.clone(),
            stream: self
                .next_stream
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        // Until its first message is taken, a new stream holds what it
        // asked for.
        sent.set(request.known_version);
        tokio::spawn(async move {
            let _places = (permit, share);
            debug!(client, version = current.version, "watcher connected");
            count_message(&first);
            if tx.send_timeout(Ok(first), stall).await.is_err() {
                return;
            }
            let mut held = current.version;
            sent.set(held);
            let mut beat = tokio::time::interval(service.heartbeat);
            beat.tick().await;
            loop {
                let message = tokio::select! {
                    change = changes.recv() => match change {
                        Ok(published) if published.config.version <= held => continue,
                        Ok(published) if published.previous.version == held => {
                            delta(&published.previous, &published.config, &placements)
                        }
                        Ok(published) => service.snapshot(&published.config, &placements),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            debug!(client, missed, "watcher fell behind; sending a fresh snapshot");
                            service.snapshot(&service.publisher.current(), &placements)
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = beat.tick() => heartbeat(held, service.clock.now()),
                    () = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                };
                held = held.max(message.config_version);
                count_message(&message);
                if let Err(err) = tx.send_timeout(Ok(message), stall).await {
                    if matches!(err, mpsc::error::SendTimeoutError::Timeout(_)) {
                        debug!(
                            client,
                            ?stall,
                            "watcher took nothing for the stall limit; dropped"
                        );
                    }
                    return;
                }
                sent.set(held);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_config_snapshot(
        &self,
        request: Request<v1::GetConfigSnapshotRequest>,
    ) -> Result<Response<v1::GetConfigSnapshotResponse>, Status> {
        let placements = request.into_inner().placements;
        check_placements(&placements)?;
        let current = self.publisher.refresh().map_err(to_status)?;
        Ok(Response::new(v1::GetConfigSnapshotResponse {
            snapshot: Some(config_snapshot_to_proto(
                &current.for_placements(&placements),
                self.clock.now(),
            )),
        }))
    }
}

fn check_placements(placements: &[String]) -> Result<(), Status> {
    if placements.len() > 256 {
        return Err(to_status(Error::invalid(
            "placements",
            "at most 256 placements",
        )));
    }
    Ok(())
}
