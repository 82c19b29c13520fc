//! Time-driven transitions: a background task that, every tick, starts
//! experiments whose start time has come and completes those whose end
//! time has passed, as revisions written by "scheduler".

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Admin;

/// How often the scheduler looks, by default: the worst-case lateness of
/// a scheduled start or end.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(admin: Admin, tick: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let admin = admin.clone();
        match tokio::task::spawn_blocking(move || admin.apply_schedule()).await {
            Ok(Ok(changed)) => {
                for (id, status) in changed {
                    info!(experiment = %id, %status, "schedule applied");
                }
            }
            Ok(Err(err)) => warn!(error = %err, "scheduler tick failed; retrying next tick"),
            Err(err) => warn!(error = %err, "scheduler task panicked; retrying next tick"),
        }
    }
}
