//! The compiled snapshot that assignments evaluate, swapped atomically;
//! shared by the SDK's [`Client`](crate::Client) and `expd`'s assignment
//! service.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use exp_core::{evaluate::CompiledSnapshot, serving::ServingConfig};
use tokio::sync::watch;

/// Holds the current compiled snapshot, or none before the first config,
/// and announces the version of each one installed.
#[derive(Debug, Clone)]
pub struct SnapshotCell {
    // ArcSwap: a request loads the pointer without a lock; a config change
    // stores a new one; old snapshots live until their last reader is done.
    inner: Arc<ArcSwapOption<CompiledSnapshot>>,
    // `None` until a config is installed (a fresh service's config is at
    // version 0, so 0 cannot mean "none").
    versions: Arc<watch::Sender<Option<u64>>>,
}

impl Default for SnapshotCell {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            versions: Arc::new(watch::channel(None).0),
        }
    }
}

impl SnapshotCell {
    /// An empty cell.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current snapshot, if any config arrived yet.
    pub fn load(&self) -> Option<Arc<CompiledSnapshot>> {
        self.inner.load_full()
    }

    /// A receiver of the installed config version (`None` before any).
    pub fn versions(&self) -> watch::Receiver<Option<u64>> {
        self.versions.subscribe()
    }

    /// Compiles `config` and makes it current.
    pub fn install(&self, config: &ServingConfig) {
        self.store(CompiledSnapshot::compile(config));
    }

    fn store(&self, compiled: CompiledSnapshot) {
        let version = compiled.version();
        self.inner.store(Some(Arc::new(compiled)));
        self.versions.send_replace(Some(version));
    }

    /// Keeps the cell on the latest config of `configs` (`None`: no config
    /// yet) until the sender is dropped.
    pub fn follow(
        &self,
        mut configs: watch::Receiver<Option<Arc<ServingConfig>>>,
    ) -> tokio::task::JoinHandle<()> {
        let cell = self.clone();
        tokio::spawn(async move {
            loop {
                let latest = configs.borrow_and_update().clone();
                if let Some(config) = latest {
                    let installed = cell.load().map(|s| s.version());
                    if installed != Some(config.version) {
                        let compiled =
                            tokio::task::spawn_blocking(move || CompiledSnapshot::compile(&config))
                                .await;
                        if let Ok(compiled) = compiled {
                            cell.store(compiled);
                        }
                    }
                }
                if configs.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
