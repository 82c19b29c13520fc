//! Follows `ConfigService/WatchConfigs`: applies snapshots and deltas to a
//! local serving config, publishes every new version on a `watch` channel,
//! persists it, and reconnects with exponential backoff when the stream
//! breaks. A persisted snapshot is loaded at start, so a cold start serves
//! the last known good config while the service is unreachable.
//!
//! The snapshot file holds one encoded `experiments.v1.ConfigSnapshot`
//! (protobuf), written to a temporary file, synced, then renamed: a crash
//! leaves the old file or the new one, never half of one.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use exp_core::serving::ServingConfig;
use exp_proto::{
    serving::{config_delta_from_proto, config_snapshot_from_proto, config_snapshot_to_proto},
    v1::{self, config_service_client::ConfigServiceClient, watch_configs_response::Payload},
};
use prost::Message;
use tokio::sync::watch;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::token::Bearer;

/// Largest config message accepted (tonic's default is 4 MiB).
const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// Where and how to follow.
#[derive(Debug, Clone)]
pub struct FollowerOptions {
    /// gRPC endpoint of an `expd` serving ConfigService, e.g.
    /// `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// Only experiments that can apply on these placements; empty for all.
    pub placements: Vec<String>,
    /// Name of this watcher in the server's logs.
    pub client_id: String,
    /// File of the last known good config: loaded at start, rewritten at
    /// every new version. `None`: memory only.
    pub snapshot_path: Option<PathBuf>,
    /// First reconnection delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest reconnection delay.
    pub max_backoff: Duration,
    /// The token to present (`authorization: Bearer`), when the service
    /// has a tokens file: a `data_plane` token.
    pub token: Option<String>,
}

impl Default for FollowerOptions {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:50051".into(),
            placements: Vec::new(),
            client_id: "exp-client".into(),
            snapshot_path: None,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            token: None,
        }
    }
}

/// A running follower. Dropping it stops the background task.
#[derive(Debug)]
pub struct ConfigFollower {
    configs: watch::Receiver<Option<Arc<ServingConfig>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConfigFollower {
    /// Loads the snapshot file, if any, and starts following. Must be
    /// called inside a Tokio runtime. Fails only on a malformed endpoint.
    pub fn spawn(options: FollowerOptions) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(options.endpoint.clone())
            .map_err(|err| format!("endpoint {:?}: {err}", options.endpoint))?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        Bearer::new(options.token.as_deref())?;
        let saved = options.snapshot_path.as_deref().and_then(load_snapshot);
        if let Some(config) = &saved {
            info!(
                version = config.version,
                "serving the saved config until the service answers"
            );
        }
        let (sender, configs) = watch::channel(saved.map(Arc::new));
        let task = tokio::spawn(follow(endpoint, options, sender));
        Ok(Self { configs, task })
    }

    /// The latest config (`None` before the first one).
    pub fn configs(&self) -> watch::Receiver<Option<Arc<ServingConfig>>> {
        self.configs.clone()
    }
}

async fn follow(
    endpoint: Endpoint,
    options: FollowerOptions,
    sender: watch::Sender<Option<Arc<ServingConfig>>>,
) {
    let mut backoff = options.min_backoff;
    // The first stream asks for a whole snapshot even when a saved config
    // is held: the saved one may have been taken with other placements, or
    // from an admin whose store was rebuilt since.
    let mut fresh_start = true;
    loop {
        match stream_once(&endpoint, &options, &sender, &mut backoff, &mut fresh_start).await {
            Ok(()) => debug!("config stream ended; reconnecting"),
            Err(err) => {
                warn!(error = %err, retry_in = ?backoff, "config stream failed; reconnecting")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

async fn stream_once(
    endpoint: &Endpoint,
    options: &FollowerOptions,
    sender: &watch::Sender<Option<Arc<ServingConfig>>>,
    backoff: &mut Duration,
    fresh_start: &mut bool,
) -> Result<(), String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let known_version = if *fresh_start {
        0
    } else {
        sender.borrow().as_ref().map_or(0, |config| config.version)
    };
    let bearer = Bearer::new(options.token.as_deref())?;
    let mut stream = ConfigServiceClient::new(channel)
        .max_decoding_message_size(MAX_SNAPSHOT_BYTES)
        .watch_configs(bearer.request(v1::WatchConfigsRequest {
            known_version,
            placements: options.placements.clone(),
            client_id: options.client_id.clone(),
        }))
        .await
        .map_err(|status| format!("WatchConfigs: {status}"))?
        .into_inner();
    while let Some(message) = stream
        .message()
        .await
        .map_err(|status| format!("stream: {status}"))?
    {
        *backoff = options.min_backoff;
        *fresh_start = false;
        let held = sender.borrow().clone();
        let next = match message.payload {
            Some(Payload::Snapshot(snapshot)) => {
                config_snapshot_from_proto(snapshot).map_err(|v| format!("bad snapshot: {v:?}"))?
            }
            Some(Payload::Delta(delta)) => {
                let Some(base) = held.as_ref() else {
                    return Err("a delta arrived before any snapshot".into());
                };
                let delta =
                    config_delta_from_proto(delta).map_err(|v| format!("bad delta: {v:?}"))?;
                let mut next = (**base).clone();
                next.apply(&delta, message.config_version);
                next
            }
            Some(Payload::Heartbeat(_)) | None => continue,
        };
        if held
            .as_ref()
            .is_some_and(|held| held.version == next.version && **held == next)
        {
            continue;
        }
        debug!(version = next.version, "config updated");
        let next = Arc::new(next);
        // Saved first, then published: once a version is in use it is also
        // the one a restart starts from (a few milliseconds of the file's
        // write before a change serves, never a restart that goes back).
        if let Some(path) = options.snapshot_path.clone() {
            let saving = next.clone();
            let saved = tokio::task::spawn_blocking(move || save_snapshot(&path, &saving)).await;
            if let Ok(Err(err)) = saved {
                warn!(error = %err, "could not save the config snapshot");
            }
        }
        sender.send_replace(Some(next));
    }
    Ok(())
}

/// Reads a snapshot file; a missing or unreadable one is `None` (logged).
pub fn load_snapshot(path: &Path) -> Option<ServingConfig> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            warn!(path = %path.display(), error = %err, "cannot read the saved config");
            return None;
        }
    };
    let decoded = v1::ConfigSnapshot::decode(bytes.as_slice())
        .map_err(|err| err.to_string())
        .and_then(|snapshot| config_snapshot_from_proto(snapshot).map_err(|v| format!("{v:?}")));
    match decoded {
        Ok(config) => Some(config),
        Err(err) => {
            warn!(path = %path.display(), error = %err, "ignoring a malformed saved config");
            None
        }
    }
}

/// Writes a snapshot file atomically (temporary file, sync, rename).
pub fn save_snapshot(path: &Path, config: &ServingConfig) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = config_snapshot_to_proto(config, SystemTime::now()).encode_to_vec();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
