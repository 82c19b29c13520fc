//! Local assignment on the followed config.

use std::time::{Duration, SystemTime};

use exp_core::{
    Error,
    evaluate::{Evaluation, RequestContext},
};
use tokio::sync::watch;

use crate::{ConfigFollower, FollowerOptions, SnapshotCell};

/// Options of a [`Client`]; the same as a follower's.
pub type ClientOptions = FollowerOptions;

/// Why the client could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No config yet: the service has not answered and no snapshot file
    /// was saved.
    #[error("no experiment config yet")]
    NoConfig,
    /// The request is invalid (e.g. neither a user nor a session id).
    #[error(transparent)]
    InvalidRequest(Error),
    /// The options are wrong.
    #[error("{0}")]
    Options(String),
    /// `wait_for_config` gave up.
    #[error("no experiment config within {0:?}")]
    Timeout(Duration),
    /// The event sender's spool directory cannot be opened: not
    /// creatable, unreadable, or held by another sender.
    #[error("event spool {}: {source}", dir.display())]
    Spool {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The SDK: follows the service's config and assigns locally.
#[derive(Debug)]
pub struct Client {
    snapshot: SnapshotCell,
    _follower: ConfigFollower,
    _compiler: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Starts following `options.endpoint`. Must be called inside a Tokio
    /// runtime; returns at once (see [`Client::wait_for_config`]).
    pub fn start(options: ClientOptions) -> Result<Self, ClientError> {
        let follower = ConfigFollower::spawn(options).map_err(ClientError::Options)?;
        let snapshot = SnapshotCell::new();
        let compiler = snapshot.follow(follower.configs());
        Ok(Self {
            snapshot,
            _follower: follower,
            _compiler: compiler,
        })
    }

    /// Assigns a request now, locally: no I/O, no lock. The same answer as
    /// the server's `Assign` for the same config version.
    pub fn assign(
        &self,
        user_id: &str,
        session_id: &str,
        context: &RequestContext,
    ) -> Result<Evaluation, ClientError> {
        self.assign_at(user_id, session_id, context, SystemTime::now())
    }

    /// [`Client::assign`] at a given time (for schedules in tests).
    pub fn assign_at(
        &self,
        user_id: &str,
        session_id: &str,
        context: &RequestContext,
        now: SystemTime,
    ) -> Result<Evaluation, ClientError> {
        let snapshot = self.snapshot.load().ok_or(ClientError::NoConfig)?;
        snapshot
            .evaluate(user_id, session_id, context, now)
            .map_err(ClientError::InvalidRequest)
    }

    /// The config version in use, `None` before any.
    pub fn config_version(&self) -> Option<u64> {
        *self.snapshot.versions().borrow()
    }

    /// A receiver that wakes at every new config version: the change
    /// callback of the SDK.
    pub fn changes(&self) -> watch::Receiver<Option<u64>> {
        self.snapshot.versions()
    }

    /// Waits until a config is in use (returns its version).
    pub async fn wait_for_config(&self, timeout: Duration) -> Result<u64, ClientError> {
        self.wait_for_version(0, timeout).await
    }

    /// Waits until the config version in use is at least `version`.
    pub async fn wait_for_version(
        &self,
        version: u64,
        timeout: Duration,
    ) -> Result<u64, ClientError> {
        let mut versions = self.snapshot.versions();
        let reached = tokio::time::timeout(
            timeout,
            versions.wait_for(|current| current.is_some_and(|current| current >= version)),
        )
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
        .map_err(|_| ClientError::NoConfig)?;
        Ok(reached.unwrap_or(version))
    }
}
