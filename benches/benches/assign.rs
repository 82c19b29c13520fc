//! Assignment and config delivery:
//!
//! 1. in-process evaluation (what the SDK and every server request run),
//!    with 10 and with 10,000 experiments on other placements, and the
//!    cost of an exposure on and off the request path;
//! 2. HTTP JSON `POST /experiments/assign` with wrk, when wrk is
//!    installed, and the time for one change to reach 1,000 WatchConfigs
//!    watchers, against a server in this process;
//! 3. gRPC `Assign` against the release `expd` in a process of its own, at
//!    a fixed rate (default 10,000 requests/s) from a load generator in
//!    this process, every request a new unit whose exposure is logged
//!    through to the durable event log and the analysis (the worst case):
//!    the server's CPU per request, from `/proc`. With `BENCH_BUILDS`
//!    naming several builds (`name=path,name=path`; the first is the
//!    baseline), pairs of ten-second runs compare them in one run, each
//!    build in a fresh process, alternately first: CPU per request of
//!    each, and each one's ratio to the baseline as the geometric mean of
//!    the pairs' ratios with a 90% confidence interval. Latencies are
//!    printed too, but on these shared machines only the CPU is a measure.
//!
//! 4. What `GET /metrics` costs: pairs of the same runs with and without
//!    a scraper reading it every second, and the server's CPU per scrape
//!    measured alone (`ASSIGN_ONLY=scrape`).
//! 5. OFREP's single evaluation against `POST /experiments/assign` in
//!    requests per second, alternating 5 s wrk runs of each, in one run
//!    (`ASSIGN_ONLY=ofrep`).
//!
//! Run: `cargo build --release -p expd && cargo bench -p exp-benches
//! --bench assign` (`ASSIGN_RPS` sets the rate, `ASSIGN_PAIRS` the pairs,
//! default 4; `ASSIGN_ONLY=in-process` runs 1 alone, `builds` 3 alone,
//! `scrape` 4 alone, `ofrep` 5 alone).

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use exp_benches::{Interval, ReleaseExpd, Summary, time_batched};
use exp_core::{
    Experiment, ParamSchema, allocation,
    evaluate::{CompiledSnapshot, RequestContext},
    examples::seed_experiment,
    lifecycle::{self, Change, Transition},
    serving::ServingConfig,
};
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient, config_service_client::ConfigServiceClient,
};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn running(id: &str, placement: &str) -> Experiment {
    let change = Change {
        now: now(),
        author: "bench",
        reason: "",
    };
    let mut proposal = seed_experiment();
    proposal.id = id.into();
    proposal.layer = String::new();
    proposal.traffic_percent = 100;
    proposal.eligibility.placements = vec![placement.into()];
    let draft = lifecycle::create(&proposal, &ParamSchema::builtin(), change).expect("valid");
    let mut started = lifecycle::transition(&draft, &Transition::Start, change).expect("start");
    allocation::allocate(&mut started, Some(&draft), []).expect("fits");
    started
}

fn evaluation(others: usize) {
    let mut experiments: Vec<Experiment> = (0..others)
        .map(|index| {
            running(
                &format!("other_{index:05}"),
                &format!("placement_{index:05}"),
            )
        })
        .collect();
    experiments.push(running("reco_ymal_v1", "you_may_also_like"));
    let snapshot = CompiledSnapshot::compile(&ServingConfig::build(1, &experiments, &[], now()));
    let context = RequestContext {
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        ..RequestContext::default()
    };
    let users: Vec<String> = (0..1024).map(|i| format!("user-{i}")).collect();
    let mut next = 0;
    time_batched(200, 10_000, || {
        next = (next + 1) % users.len();
        let answer = snapshot
            .evaluate(&users[next], "s", &context, now())
            .expect("ok");
        std::hint::black_box(answer);
    })
    .print_ns(&format!("evaluate, 1 experiment here + {others} elsewhere"));
}

/// The cost of an exposure on the request path (offering it to the
/// queue), and off it (the repeat filter its consumer applies: a new
/// unit's, a repeat's).
fn exposure_costs() {
    let (queue, mut receiver) = exp_assign::ExposureQueue::bounded(4_000_000);
    let record = |user: String| exp_assign::ExposureRecord {
        experiment_id: "reco_ymal_v1".into(),
        variant: "treatment".into(),
        user_id: user,
        session_id: "s".into(),
        unit_type: exp_core::UnitType::User,
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        revision: 2,
        timestamp: now(),
    };
    let mut next = 0;
    time_batched(100, 10_000, || {
        next += 1;
        queue.offer(record(format!("user-{next}")));
    })
    .print_ns("offer an exposure (request path)");
    // What counting an assignment costs the request path, with the SDK's
    // meter installed as `expd` installs it (one series per experiment
    // and reason, as in production).
    let meters = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::ManualReader::builder().build())
        .build();
    opentelemetry::global::set_meter_provider(meters);
    let snapshot = CompiledSnapshot::compile(&ServingConfig::build(
        1,
        &[running("reco_ymal_v1", "you_may_also_like")],
        &[],
        now(),
    ));
    let context = RequestContext {
        placement: "you_may_also_like".into(),
        ..RequestContext::default()
    };
    let evaluation = snapshot
        .evaluate("user-1", "s", &context, now())
        .expect("evaluates");
    let assignment = evaluation.assignments.first().expect("assigned").clone();
    time_batched(100, 10_000, || {
        exp_assign::grpc::count_assignment(std::hint::black_box(&assignment));
    })
    .print_ns("count an assignment by experiment and reason (request path)");
    let filter = exp_assign::RepeatFilter::default();
    let mut records = Vec::new();
    while let Ok(record) = receiver.try_recv() {
        records.push(record);
    }
    let mut records = records.into_iter();
    time_batched(100, 10_000, || {
        let record = records.next().expect("enough records");
        std::hint::black_box(filter.is_first(&record));
    })
    .print_with_mean_ns("repeat filter, a new unit (exposure stage)");
    let repeat = record("user-7".into());
    time_batched(100, 10_000, || {
        std::hint::black_box(filter.is_first(&repeat));
    })
    .print_ns("repeat filter, a repeat (exposure stage)");
    // The filter now holds about a million units: full. Each new unit
    // evicts the least recent, as in a server past its first million.
    filter.run_pending_tasks();
    drop(records);
    let mut late = (0..1_000_000)
        .map(|i| record(format!("late-{i}")))
        .collect::<Vec<_>>()
        .into_iter();
    time_batched(100, 10_000, || {
        let record = late.next().expect("enough records");
        std::hint::black_box(filter.is_first(&record));
    })
    .print_with_mean_ns("repeat filter, a new unit, filter full (exposure stage)");
    filter.run_pending_tasks();
    println!(
        "  (filter holds {} of {} keys)",
        filter.entry_count(),
        exp_assign::exposure::REPEAT_CAPACITY
    );
}

/// What one run of gRPC `Assign` cost the server.
#[derive(Debug, Clone, Copy)]
struct RunCost {
    /// Server CPU seconds per request, over the run and the pause after
    /// it (the run's last roll into Parquet).
    cpu_per_request: f64,
    latency: Summary,
    achieved: f64,
    errors: u64,
}

/// The pause after a run: longer than the flush interval, so the work a
/// run leaves behind (its last roll) is counted in its CPU.
const QUIET_AFTER_RUN: Duration = Duration::from_secs(5);
/// `--events-flush-interval` of the measured servers.
const FLUSH_INTERVAL: &str = "3s";

/// One ten-second run against a fresh `expd` from `binary`, with
/// `GET /metrics` every `scrape` during it when given.
async fn run_build(
    binary: &std::path::Path,
    rate: u64,
    run: u64,
    scrape: Option<Duration>,
) -> RunCost {
    const SECONDS: u64 = 10;
    let server = ReleaseExpd::start(
        binary,
        &[
            "--exposure-queue",
            "1000000",
            "--events-flush-interval",
            FLUSH_INTERVAL,
        ],
    )
    .await;
    let channel = exp_e2e::connect(server.grpc).await;
    exp_e2e::launch_seed_everywhere(&mut AdminServiceClient::new(channel.clone())).await;
    let version = exp_e2e::current_config_version(channel.clone()).await;
    exp_e2e::wait_for_assign_version(channel, version).await;
    // A short warm-up: connections, the runtime's workers, the first
    // segment.
    exp_benches::drive_assign(server.grpc, rate, 1, run * 2 + 1_000_000).await;
    tokio::time::sleep(QUIET_AFTER_RUN).await;
    let scraper = scrape.map(|interval| {
        let http = server.http;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                let (status, _) = exp_e2e::http_get_with(http, "/metrics", &[]).await;
                assert_eq!(status, 200, "GET /metrics");
            }
        })
    });
    let before = server.cpu_seconds();
    let (latencies, errors, elapsed) =
        exp_benches::drive_assign(server.grpc, rate, SECONDS, run * 2).await;
    tokio::time::sleep(QUIET_AFTER_RUN).await;
    let used = server.cpu_seconds() - before;
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    let requests = latencies.len() as f64;
    RunCost {
        cpu_per_request: used / requests,
        achieved: requests / elapsed,
        latency: Summary::of(latencies),
        errors,
    }
}

/// The builds `BENCH_BUILDS` names (`name=path,...`), else the release
/// `expd` alone.
fn builds() -> Vec<(String, PathBuf)> {
    match std::env::var("BENCH_BUILDS") {
        Ok(list) => list
            .split(',')
            .map(|entry| {
                let (name, path) = entry
                    .split_once('=')
                    .unwrap_or_else(|| panic!("BENCH_BUILDS entry {entry:?}: expected name=path"));
                let path = PathBuf::from(path);
                assert!(
                    path.exists(),
                    "BENCH_BUILDS: {} does not exist",
                    path.display()
                );
                (name.to_owned(), path)
            })
            .collect(),
        Err(_) => ReleaseExpd::binary()
            .map(|path| vec![("this build".to_owned(), path)])
            .unwrap_or_default(),
    }
}

/// `ASSIGN_PAIRS`: rounds of runs compared (default 4, at least 2 for an
/// interval).
fn pairs() -> usize {
    let pairs = std::env::var("ASSIGN_PAIRS")
        .ok()
        .map(|pairs| pairs.parse().expect("ASSIGN_PAIRS: a whole number"))
        .unwrap_or(4);
    assert!(pairs >= 2, "ASSIGN_PAIRS: at least 2, for an interval");
    pairs
}

/// The runtime the load generator runs on: two workers, as the machine.
fn load_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// gRPC `Assign` against every build, in pairs of runs (see the module
/// doc).
fn compare_builds(rate: u64) {
    let builds = builds();
    if builds.is_empty() {
        return;
    }
    let (pairs, runtime) = (pairs(), load_runtime());
    println!(
        "gRPC Assign at {rate}/s, every request a new unit with its exposure logged; {pairs} rounds of a 10-s run per build, each in a fresh expd, the order rotating:"
    );
    let mut costs: Vec<Vec<RunCost>> = vec![Vec::new(); builds.len()];
    let mut run = 0;
    for round in 0..pairs {
        for offset in 0..builds.len() {
            let index = (round + offset) % builds.len();
            run += 1;
            let cost = runtime.block_on(run_build(&builds[index].1, rate, run, None));
            println!(
                "  round {round}, {}: {:.1} us of expd CPU per request; achieved {:.0}/s, {} errors; p50 {:.0} us, p99 {:.0} us",
                builds[index].0,
                cost.cpu_per_request * 1e6,
                cost.achieved,
                cost.errors,
                cost.latency.p50.as_secs_f64() * 1e6,
                cost.latency.p99.as_secs_f64() * 1e6,
            );
            costs[index].push(cost);
        }
    }
    for (index, (name, path)) in builds.iter().enumerate() {
        let cpu: Vec<f64> = costs[index]
            .iter()
            .map(|c| c.cpu_per_request * 1e6)
            .collect();
        let mean = Interval::arithmetic(&cpu, 0.90);
        print!(
            "  {name} ({}): expd CPU per request {:.1} us (90% CI {:.1} to {:.1})",
            path.display(),
            mean.estimate,
            mean.low,
            mean.high
        );
        if index > 0 {
            let ratios: Vec<f64> = costs[index]
                .iter()
                .zip(&costs[0])
                .map(|(this, baseline)| this.cpu_per_request / baseline.cpu_per_request)
                .collect();
            let ratio = Interval::geometric(&ratios, 0.90);
            print!(
                "; against {}: {:.3} (90% CI {:.3} to {:.3})",
                builds[0].0, ratio.estimate, ratio.low, ratio.high
            );
        }
        println!();
    }
}

/// How often the scraping runs of [`compare_scrape`] read `/metrics`:
/// fifteen times Prometheus's default interval.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// What `GET /metrics` costs the server: pairs of runs of the release
/// build at `rate`, with and without a scraper, the order alternating;
/// then the server's CPU per scrape, read alone after a loaded run.
fn compare_scrape(rate: u64) {
    let Some(binary) = ReleaseExpd::binary() else {
        return;
    };
    let (pairs, runtime) = (pairs(), load_runtime());
    println!(
        "gRPC Assign at {rate}/s with and without GET /metrics every {SCRAPE_EVERY:?}; {pairs} pairs of 10-s runs, each in a fresh expd, the order alternating:"
    );
    let mut ratios = Vec::new();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let mut costs = [0.0; 2];
        for order in 0..2 {
            let scraped = (pair + order) % 2 == 0;
            let run = (pair * 2 + order) as u64 + 1;
            let cost = runtime.block_on(run_build(
                &binary,
                rate,
                run,
                scraped.then_some(SCRAPE_EVERY),
            ));
            println!(
                "  pair {pair}, {}: {:.1} us of expd CPU per request; achieved {:.0}/s, {} errors",
                if scraped { "scraped" } else { "not scraped" },
                cost.cpu_per_request * 1e6,
                cost.achieved,
                cost.errors,
            );
            costs[usize::from(scraped)] = cost.cpu_per_request;
        }
        without.push(costs[0] * 1e6);
        with.push(costs[1] * 1e6);
        ratios.push(costs[1] / costs[0]);
    }
    let ratio = Interval::geometric(&ratios, 0.90);
    let (with, without) = (
        Interval::arithmetic(&with, 0.90),
        Interval::arithmetic(&without, 0.90),
    );
    println!(
        "  CPU per request scraped {:.1} us, not scraped {:.1} us; scraped / not scraped {:.3} (90% CI {:.3} to {:.3})",
        with.estimate, without.estimate, ratio.estimate, ratio.low, ratio.high
    );
    runtime.block_on(cpu_per_scrape(&binary, rate));
}

/// The server's CPU per scrape, measured alone: after a loaded run (so
/// every series exists), 300 scrapes back to back against the quiet
/// server, its CPU over them divided by their number; and that cost as a
/// share of the server's CPU at `rate` with one scrape per
/// [`SCRAPE_EVERY`].
async fn cpu_per_scrape(binary: &std::path::Path, rate: u64) {
    const SCRAPES: u32 = 300;
    let server = ReleaseExpd::start(binary, &["--exposure-queue", "1000000"]).await;
    let channel = exp_e2e::connect(server.grpc).await;
    exp_e2e::launch_seed_everywhere(&mut AdminServiceClient::new(channel.clone())).await;
    let version = exp_e2e::current_config_version(channel.clone()).await;
    exp_e2e::wait_for_assign_version(channel, version).await;
    let loaded_before = server.cpu_seconds();
    let (latencies, _, elapsed) = exp_benches::drive_assign(server.grpc, rate, 5, 9_000).await;
    let loaded_cpu_per_second = (server.cpu_seconds() - loaded_before) / elapsed;
    let requests = latencies.len();
    tokio::time::sleep(QUIET_AFTER_RUN).await;
    let (_, sample) = exp_e2e::http_get_with(server.http, "/metrics", &[]).await;
    let quiet_before = server.cpu_seconds();
    let quiet = Duration::from_secs(2);
    tokio::time::sleep(quiet).await;
    let idle_per_second = (server.cpu_seconds() - quiet_before) / quiet.as_secs_f64();
    let before = server.cpu_seconds();
    let started = Instant::now();
    for _ in 0..SCRAPES {
        let (status, _) = exp_e2e::http_get_with(server.http, "/metrics", &[]).await;
        assert_eq!(status, 200);
    }
    let took = started.elapsed().as_secs_f64();
    let used = server.cpu_seconds() - before - idle_per_second * took;
    let per_scrape = used / f64::from(SCRAPES);
    println!(
        "  one scrape ({} bytes, {} lines, after {requests} requests): {:.0} us of expd CPU; at {rate}/s expd uses {:.2} CPU s per s, so one scrape every {SCRAPE_EVERY:?} is {:.3}% of it",
        sample.len(),
        sample.lines().count(),
        per_scrape * 1e6,
        loaded_cpu_per_second,
        100.0 * per_scrape / SCRAPE_EVERY.as_secs_f64() / loaded_cpu_per_second,
    );
    server.stop();
}

/// A wrk run of `-c32` closed-loop connections for `seconds` against
/// `path`, each request a new user (`body` is a Lua expression of
/// `counter`); prints wrk's latency lines and returns requests per second.
fn wrk(addr: std::net::SocketAddr, path: &str, body: &str, seconds: u32) -> Option<f64> {
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("HTTP: wrk not installed (apt-get install wrk); skipped");
        return None;
    }
    let script = std::env::temp_dir().join(format!("expd-wrk-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!(
            r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = {body}
  return wrk.format(nil, "{path}", nil, body)
end
"#
        ),
    )
    .expect("write script");
    let output = std::process::Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("POST {path} (wrk -t2 -c32 -d{seconds}s, closed loop):");
    for line in text
        .lines()
        .filter(|l| l.contains('%') || l.contains("Requests/sec") || l.contains("Non-2xx"))
    {
        println!("  {}", line.trim());
    }
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
}

const ASSIGN_BODY: &str = r#"'{"user_id": "user-' .. counter .. '", "session_id": "s", "context": {"placement": "you_may_also_like", "page_type": "product_detail"}}'"#;
const OFREP_BODY: &str = r#"'{"context": {"targetingKey": "user-' .. counter .. '", "session_id": "s", "placement": "you_may_also_like", "page_type": "product_detail"}}'"#;
const OFREP_FLAG: &str = "/ofrep/v1/evaluate/flags/reco_ymal_v1";

fn http_assign(addr: std::net::SocketAddr) {
    wrk(addr, "/experiments/assign", ASSIGN_BODY, 10);
}

/// OFREP's single evaluation against `POST /experiments/assign`, in one
/// run: three alternating pairs of 5 s each, so the machine's drift falls
/// on both; the ratio of the sums is the figure.
fn compare_ofrep() {
    let server_runtime = expd::server::runtime().expect("runtime");
    let server = server_runtime.block_on(exp_e2e::TestServer::start_with(&[
        "--exposure-queue",
        "1000000",
    ]));
    let client_runtime = load_runtime();
    client_runtime.block_on(async {
        let channel = exp_e2e::connect(server.grpc_addr).await;
        exp_e2e::launch_seed_everywhere(&mut AdminServiceClient::new(channel.clone())).await;
        exp_e2e::wait_until_assign_is_current(channel).await;
    });
    let (mut assign, mut ofrep) = (0.0, 0.0);
    for _ in 0..3 {
        let (Some(a), Some(o)) = (
            wrk(server.http_addr, "/experiments/assign", ASSIGN_BODY, 5),
            wrk(server.http_addr, OFREP_FLAG, OFREP_BODY, 5),
        ) else {
            return;
        };
        assign += a;
        ofrep += o;
    }
    println!(
        "OFREP single evaluation: {:.0} requests/s against POST /experiments/assign {:.0}: {:.2}x (target: within 1.5x)",
        ofrep / 3.0,
        assign / 3.0,
        assign / ofrep
    );
    server_runtime.block_on(server.stop());
}

async fn propagation(addr: std::net::SocketAddr, watchers: usize, rounds: usize) {
    let channels = exp_benches::channels(addr, 10).await;
    let mut streams = Vec::new();
    for index in 0..watchers {
        let mut client = ConfigServiceClient::new(channels[index % channels.len()].clone());
        let mut stream = client
            .watch_configs(v1::WatchConfigsRequest {
                client_id: format!("bench-{index}"),
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        stream.message().await.expect("ok").expect("first snapshot");
        streams.push(stream);
    }
    let (sender, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    for mut stream in streams {
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                if matches!(
                    message.payload,
                    Some(v1::watch_configs_response::Payload::Delta(_))
                ) {
                    let _ = sender.send((message.config_version, Instant::now()));
                }
            }
        });
    }
    let mut admin = AdminServiceClient::new(exp_e2e::connect(addr).await);
    let mut current = admin
        .get_experiment(v1::GetExperimentRequest {
            id: "reco_ymal_v1".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    let mut samples = Vec::new();
    for round in 0..rounds {
        current.traffic_percent = 50 + (round % 40) as u32;
        let sent = Instant::now();
        current = admin
            .update_experiment(v1::UpdateExperimentRequest {
                experiment: Some(current.clone()),
                ..Default::default()
            })
            .await
            .expect("update")
            .into_inner()
            .experiment
            .expect("experiment");
        let target = exp_e2e::current_config_version(exp_e2e::connect(addr).await).await;
        let mut reached = 0;
        let mut last = sent;
        while reached < watchers {
            let (version, at) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .expect("every watcher hears of the change")
                .expect("open");
            if version >= target {
                reached += 1;
                last = last.max(at);
            }
        }
        samples.push(last - sent);
    }
    Summary::of(samples).print(&format!(
        "change -> all {watchers} watchers (update RPC included)"
    ));
}

fn main() {
    let rate = std::env::var("ASSIGN_RPS")
        .ok()
        .map(|rate| rate.parse().expect("ASSIGN_RPS: requests per second"))
        .unwrap_or(10_000);
    let only = std::env::var("ASSIGN_ONLY");
    match only.as_deref() {
        Ok("builds") => return compare_builds(rate),
        Ok("scrape") => return compare_scrape(rate),
        Ok("ofrep") => return compare_ofrep(),
        Ok("in-process") | Err(_) => {}
        Ok(other) => panic!("ASSIGN_ONLY={other}: expected in-process, builds, scrape or ofrep"),
    }
    evaluation(10);
    evaluation(10_000);
    exposure_costs();
    if only.as_deref() == Ok("in-process") {
        return;
    }

    // HTTP JSON and config propagation against a server in this process,
    // on a runtime of its own, as in production; callers on another.
    let server_runtime = expd::server::runtime().expect("runtime");
    let server = server_runtime.block_on(exp_e2e::TestServer::start_with(&[
        "--config-heartbeat",
        "60s",
        "--exposure-queue",
        "1000000",
    ]));
    let (grpc_addr, http_addr) = (server.grpc_addr, server.http_addr);
    let client_runtime = load_runtime();
    client_runtime.block_on(async {
        exp_e2e::launch_seed_everywhere(&mut AdminServiceClient::new(
            exp_e2e::connect(grpc_addr).await,
        ))
        .await;
        // Let the assignment snapshot catch up with the start.
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    http_assign(http_addr);
    client_runtime.block_on(propagation(grpc_addr, 1_000, 20));
    server_runtime.block_on(server.stop());
    drop(client_runtime);
    drop(server_runtime);
    compare_builds(rate);
    compare_scrape(rate);
}
