//! Whether the analysis keeps up with the traffic the service accepts.
//!
//! A release `expd` in a process of its own takes, together, `Assign` at
//! 10,000 new units/s (the server logs every exposure) and `LogOutcomes`
//! at 20,000 outcomes/s (batches of 100, for units assigned a moment
//! before), for `LAG_SECONDS` (default 30). Meanwhile a sampler asks
//! `GetResults` four times a second how far behind the log the results
//! are (`lag_seconds`: how long the oldest committed event not yet
//! counted has waited; `pending_events`). When the load stops, the
//! sampler asks every 20 ms until nothing is pending. It prints the lag's
//! p50, p99 and max under load and the time from the end of the load to
//! a lag of zero, with the server's CPU.
//!
//! Run: `cargo build --release -p expd && cargo bench -p exp-benches
//! --bench lag` (`LAG_SECONDS`, `LAG_ASSIGN_RPS`, `LAG_OUTCOMES_PER_S`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use exp_benches::ReleaseExpd;
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient, event_service_client::EventServiceClient,
    results_service_client::ResultsServiceClient,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|value| value.parse().unwrap_or_else(|_| panic!("{name}: a number")))
        .unwrap_or(default)
}

/// The Assign driver's user of a caller's request (see
/// `exp_benches::drive_assign`).
fn assigned_user(run: u64, caller: u64, index: u64) -> String {
    format!("user-{run}-{caller}-{index}")
}

/// `LogOutcomes` at `rate` outcomes/s in batches of 100 until `stop`:
/// add-to-carts and page views of users the Assign driver assigned about
/// a second before. Answers the outcomes accepted.
async fn log_outcomes(
    addr: std::net::SocketAddr,
    rate: u64,
    assign_rate: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    const BATCH: u64 = 100;
    const CALLERS: u64 = 64;
    let mut events = EventServiceClient::new(exp_e2e::connect(addr).await);
    let interval = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let started = Instant::now();
    let mut next = started;
    let mut accepted = 0;
    let mut serial = 0u64;
    while !stop.load(Ordering::Relaxed) {
        next += interval;
        tokio::time::sleep_until(next.into()).await;
        // Requests each Assign caller has sent about a second ago.
        let sent_per_caller =
            (started.elapsed().as_secs_f64() - 1.0).max(0.0) * assign_rate as f64 / CALLERS as f64;
        let outcomes = (0..BATCH)
            .map(|_| {
                serial += 1;
                let caller = serial % CALLERS;
                let index = (serial / CALLERS) % (sent_per_caller as u64).max(1);
                let user = assigned_user(0, caller, index);
                v1::Outcome {
                    event_id: format!("lag-{serial}"),
                    r#type: if serial.is_multiple_of(5) {
                        v1::OutcomeType::AddToCart
                    } else {
                        v1::OutcomeType::PageView
                    } as i32,
                    session_id: format!("s-{user}"),
                    user_id: user,
                    placement: "you_may_also_like".into(),
                    item_id: "sku-1".into(),
                    from_recommendation: true,
                    quantity: 1,
                    timestamp: Some(SystemTime::now().into()),
                    ..Default::default()
                }
            })
            .collect();
        if let Ok(answer) = events
            .log_outcomes(v1::LogOutcomesRequest { outcomes })
            .await
        {
            accepted += u64::from(answer.into_inner().accepted_count);
        }
    }
    accepted
}

/// One look at how far behind the results are: (lag seconds, pending
/// events).
async fn look(results: &mut ResultsServiceClient<tonic::transport::Channel>) -> Option<(f64, u64)> {
    let answer = results
        .get_results(v1::GetResultsRequest {
            experiment_id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    Some((answer.lag_seconds, answer.pending_events))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let Some(binary) = ReleaseExpd::binary() else {
        return;
    };
    let seconds = env_or("LAG_SECONDS", 30);
    let assign_rate = env_or("LAG_ASSIGN_RPS", 10_000);
    let outcome_rate = env_or("LAG_OUTCOMES_PER_S", 20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = ReleaseExpd::start(&binary, &["--exposure-queue", "1000000"]).await;
        let channel = exp_e2e::connect(server.grpc).await;
        exp_e2e::launch_seed_everywhere(&mut AdminServiceClient::new(channel.clone())).await;
        let version = exp_e2e::current_config_version(channel.clone()).await;
        exp_e2e::wait_for_assign_version(channel.clone(), version).await;
        let mut results = ResultsServiceClient::new(channel);
        let cpu_before = server.cpu_seconds();

        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            let mut results = results.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut ticks = tokio::time::interval(Duration::from_millis(250));
                while !stop.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    if let Some(sample) = look(&mut results).await {
                        samples.push(sample);
                    }
                }
                samples
            })
        };
        let outcomes = tokio::spawn(log_outcomes(
            server.grpc,
            outcome_rate,
            assign_rate,
            stop.clone(),
        ));
        let (latencies, errors, elapsed) =
            exp_benches::drive_assign(server.grpc, assign_rate, seconds, 0).await;
        stop.store(true, Ordering::Relaxed);
        let load_ended = Instant::now();
        let accepted = outcomes.await.expect("outcomes");
        let samples = sampler.await.expect("sampler");
        // Until nothing is pending (the last exposures reach the log
        // within the exposure stage's linger, then are counted).
        let drained = loop {
            if let Some((lag, pending)) = look(&mut results).await
                && pending == 0
                && lag == 0.0
                && load_ended.elapsed() > Duration::from_millis(100)
            {
                break load_ended.elapsed();
            }
            assert!(
                load_ended.elapsed() < Duration::from_secs(60),
                "the results never caught up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let cpu = server.cpu_seconds() - cpu_before;
        let mut lags: Vec<f64> = samples.iter().map(|(lag, _)| *lag).collect();
        lags.sort_by(f64::total_cmp);
        let pending_max = samples.iter().map(|(_, pending)| *pending).max().unwrap_or(0);
        println!(
            "{seconds} s of Assign at {assign_rate}/s (achieved {:.0}/s, {errors} errors, every request a new unit, exposures logged by the server) and LogOutcomes at {outcome_rate}/s ({:.0}/s accepted), together:",
            latencies.len() as f64 / elapsed,
            accepted as f64 / elapsed,
        );
        println!(
            "  results lag behind the log, {} looks of GetResults: p50 {:.3} s, p99 {:.3} s, max {:.3} s; most events pending at a look: {pending_max}",
            lags.len(),
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            percentile(&lags, 1.0),
        );
        println!(
            "  from the end of the load to nothing pending: {:.3} s; expd CPU {:.0}% of a core over the run ({:.1} us per event offered)",
            drained.as_secs_f64(),
            cpu / (elapsed + drained.as_secs_f64()) * 100.0,
            cpu / (latencies.len() as f64 + accepted as f64) * 1e6,
        );
    });
}
