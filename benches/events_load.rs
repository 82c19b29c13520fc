//! `EventService/LogOutcomes` load over loopback, shared by the event
//! benches: an open loop at a fixed offered rate and a closed loop, each
//! giving the acknowledgement latencies and the acknowledged events per
//! second.

use std::time::{Duration, Instant, SystemTime};

use exp_proto::v1::{self, event_service_client::EventServiceClient};

use crate::Summary;

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct Load {
    /// What ran, e.g. `LogOutcomes ack, batches of 1000, 16 callers`.
    pub name: String,
    /// Acknowledgement latency of the calls answered OK.
    pub summary: Summary,
    /// New events acknowledged per second of the run.
    pub events_per_second: f64,
    /// Calls refused.
    pub refused: u64,
    /// Open loop: sends that left more than 5 ms after their schedule.
    pub late: Option<u64>,
    /// Length of the run.
    pub seconds: f64,
}

impl Load {
    /// Prints the summary line and the rate line.
    pub fn print(&self) {
        self.summary.print(&self.name);
        let late = self.late.map_or(String::new(), |late| {
            format!(", {late} of {} sent > 5 ms late", self.summary.count)
        });
        println!(
            "  {:.0} acknowledged events/s over {:.1} s, {} calls refused{late}",
            self.events_per_second, self.seconds, self.refused
        );
    }
}

/// A batch of distinct clicks (`run` keeps ids of different runs apart,
/// so no event is a duplicate).
pub fn batch(run: &str, caller: usize, round: usize, size: usize) -> Vec<v1::Outcome> {
    let timestamp = Some(SystemTime::now().into());
    (0..size)
        .map(|index| v1::Outcome {
            event_id: format!("bench-{run}-{caller}-{round}-{index}"),
            r#type: v1::OutcomeType::Click as i32,
            user_id: format!("u-{}", (caller * 7_919 + index) % 100_000),
            session_id: format!("s-{caller}-{round}"),
            placement: "you_may_also_like".into(),
            page_type: "product_detail".into(),
            item_id: format!("sku-{}", index % 5_000),
            from_recommendation: true,
            source_placement: "you_may_also_like".into(),
            timestamp,
            ..Default::default()
        })
        .collect()
}

/// `rate` events/s in batches of `size` from 64 callers, each on its own
/// schedule; latency is measured from the actual send, and sends that left
/// more than 5 ms after their scheduled time are counted. `run` names the
/// events' ids apart from other runs'.
pub async fn open_loop(
    addr: std::net::SocketAddr,
    run: &str,
    size: usize,
    rate: u64,
    seconds: u64,
) -> Load {
    const CALLERS: usize = 64;
    let channels = crate::channels(addr, 4).await;
    let calls_per_second = rate as f64 / size as f64;
    let interval = Duration::from_secs_f64(CALLERS as f64 / calls_per_second);
    let per_caller = (calls_per_second * seconds as f64 / CALLERS as f64).round() as usize;
    let started = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut client = EventServiceClient::new(channels[caller % channels.len()].clone());
        let run = format!("{run}{size}");
        tasks.push(tokio::spawn(async move {
            let offset = interval.mul_f64(caller as f64 / CALLERS as f64);
            let mut latencies = Vec::with_capacity(per_caller);
            let (mut acked, mut refused, mut late) = (0u64, 0u64, 0u64);
            for round in 0..per_caller {
                let outcomes = batch(&run, caller, round, size);
                let due = started + offset + interval.mul_f64(round as f64);
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                if sent - due > Duration::from_millis(5) {
                    late += 1;
                }
                match client
                    .log_outcomes(v1::LogOutcomesRequest { outcomes })
                    .await
                {
                    Ok(answer) => {
                        latencies.push(sent.elapsed());
                        acked += u64::from(answer.into_inner().accepted_count);
                    }
                    Err(_) => refused += 1,
                }
            }
            (latencies, acked, refused, late)
        }));
    }
    let mut all = Vec::new();
    let (mut acked, mut refused, mut late) = (0, 0, 0);
    for task in tasks {
        let (latencies, events, failures, delayed) = task.await.expect("caller");
        all.extend(latencies);
        acked += events;
        refused += failures;
        late += delayed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Load {
        name: format!("LogOutcomes ack at {rate} events/s offered, batches of {size}"),
        summary: Summary::of(all),
        events_per_second: acked as f64 / elapsed,
        refused,
        late: Some(late),
        seconds: elapsed,
    }
}

/// `callers` clients, each sending its next batch when the last is acked.
pub async fn closed_loop(
    addr: std::net::SocketAddr,
    run: &str,
    size: usize,
    callers: usize,
    seconds: u64,
) -> Load {
    let channels = crate::channels(addr, 4).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let mut client = EventServiceClient::new(channels[caller % channels.len()].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let run = format!("{run}{size}");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut acked, mut refused) = (0u64, 0u64);
            let mut round = 0;
            while Instant::now() < deadline {
                let outcomes = batch(&run, caller, round, size);
                round += 1;
                let sent = Instant::now();
                match client
                    .log_outcomes(v1::LogOutcomesRequest { outcomes })
                    .await
                {
                    Ok(answer) => {
                        latencies.push(sent.elapsed());
                        acked += u64::from(answer.into_inner().accepted_count);
                    }
                    Err(_) => refused += 1,
                }
            }
            (latencies, acked, refused)
        }));
    }
    let mut all = Vec::new();
    let (mut acked, mut refused) = (0, 0);
    for task in tasks {
        let (latencies, events, failures) = task.await.expect("caller");
        all.extend(latencies);
        acked += events;
        refused += failures;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Load {
        name: format!("LogOutcomes ack, batches of {size}, {callers} callers"),
        summary: Summary::of(all),
        events_per_second: acked as f64 / elapsed,
        refused,
        late: None,
        seconds: elapsed,
    }
}
