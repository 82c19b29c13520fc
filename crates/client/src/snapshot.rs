//! The compiled snapshot that requests evaluate, swapped atomically.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use exp_core::{evaluate::CompiledSnapshot, serving::ServingConfig};
use tokio::sync::watch;

/// Holds the current compiled snapshot, or none before the first config.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCell {
    // ArcSwap: a request loads the pointer without a lock; a config change
    // stores a new one; old snapshots live until their last reader is done.
    inner: Arc<ArcSwapOption<CompiledSnapshot>>,
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

    /// Compiles `config` and makes it current.
    pub fn install(&self, config: &ServingConfig) {
        self.inner
            .store(Some(Arc::new(CompiledSnapshot::compile(config))));
    }

    /// Keeps the cell on the latest config of `configs` (`None`: no config
    /// yet) until the sender is dropped. Calls `on_first` once, when the
    /// first config is installed.
    pub fn follow(
        &self,
        mut configs: watch::Receiver<Option<Arc<ServingConfig>>>,
        on_first: impl FnOnce() + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let cell = self.clone();
        tokio::spawn(async move {
            let mut on_first = Some(on_first);
            loop {
                let latest = configs.borrow_and_update().clone();
                if let Some(config) = latest {
                    let installed = cell.load().map(|s| s.version());
                    if installed != Some(config.version) {
                        let compiled =
                            tokio::task::spawn_blocking(move || CompiledSnapshot::compile(&config))
                                .await;
                        if let Ok(compiled) = compiled {
                            cell.inner.store(Some(Arc::new(compiled)));
                        }
                    }
                    if let Some(first) = on_first.take() {
                        first();
                    }
                }
                if configs.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
