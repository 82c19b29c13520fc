//! Assignment and config delivery:
//!
//! 1. in-process evaluation (what the SDK and every server request run),
//!    with 10 and with 10,000 experiments on other placements, and the
//!    cost of an exposure on and off the request path;
//! 2. HTTP JSON `POST /experiments/assign` with wrk, when wrk is
//!    installed, and the time for one change to reach 1,000 WatchConfigs
//!    watchers, against a server in this process;
//! 3. gRPC `Assign` over loopback at a fixed rate (default 10,000
//!    requests/s) against the release `expd` in a process of its own,
//!    first sharing both cores with the load generators, then pinned to
//!    one core with them on the other: driven by h2load (when installed)
//!    and by a tonic load generator in this process, each request a new
//!    user, so logging on writes every exposure to the durable event log:
//!    four pairs (`ASSIGN_PAIRS`) of separate ten-second runs, logging off
//!    and on, alternately first, each
//!    followed by a quiet pause, with a flush interval short enough that a
//!    run's exposures are rolled into Parquet by the end of its pause;
//!    and (shared) off and on in alternate one-second windows. Every run
//!    also measures the machine's own stalls
//!    ([`exp_benches::HiccupMeters`]).
//!
//! Run: `cargo build --release -p expd && cargo bench -p exp-benches
//! --bench assign` (`ASSIGN_RPS` sets the rate of 3,
//! `ASSIGN_ALTERNATING_SECONDS` the length of its alternating run,
//! default 60; `ASSIGN_ONLY=processes` runs 3 alone, `shared` or `pinned`
//! one placement of 3, `replica` the layout of `deploy/` (an assign replica
//! alone on a core, sending its exposures to the admin's `expd` on the
//! other), `in-process` 1 alone; `ASSIGN_EXPD` names
//! another `expd` binary for 3, to compare builds).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime},
};

use exp_benches::{Summary, Timeline, time_batched};
use exp_core::{
    Experiment, ParamSchema, allocation,
    evaluate::{CompiledSnapshot, RequestContext},
    examples::seed_experiment,
    lifecycle::{self, Change, Transition},
    serving::ServingConfig,
};
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient, config_service_client::ConfigServiceClient,
};
use tonic::transport::Channel;

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
    .print_with_mean_ns("repeat filter, a new unit (feed thread)");
    let repeat = record("user-7".into());
    time_batched(100, 10_000, || {
        std::hint::black_box(filter.is_first(&repeat));
    })
    .print_ns("repeat filter, a repeat (feed thread)");
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
    .print_with_mean_ns("repeat filter, a new unit, filter full (feed thread)");
    filter.run_pending_tasks();
    println!(
        "  (filter holds {} of {} keys)",
        filter.entry_count(),
        exp_assign::exposure::REPEAT_CAPACITY
    );
}

/// Whether `Assign` requests log exposures.
#[derive(Debug, Clone, Copy)]
enum Exposures {
    /// Every request sets `defer_exposure`.
    Off,
    /// No request sets it.
    On,
    /// Off and on in alternate windows of this length, so both halves see
    /// the same machine (the noise of a shared host moves over seconds).
    Alternating(Duration),
}

/// Open loop: `rate` requests/s for `seconds`, from 64 callers on 4
/// connections. Latency runs from the moment a request is sent; the
/// sends that left more than 2 ms after their scheduled time are counted,
/// so a server stall that delays the schedule is visible, not hidden
/// (Tokio's timer wakes up to 1 ms late, which is the client's, not the
/// server's, latency). Every request is a new user, so a request that
/// logs writes an exposure through to the durable event log. Prints the
/// latencies of the requests without and with exposure logging, set
/// against the machine's stalls (see [`exp_benches::HiccupMeters`]).
async fn grpc_assign(
    addr: std::net::SocketAddr,
    rate: u64,
    seconds: u64,
    exposures: Exposures,
) -> (Timeline, Timeline, Option<Vec<exp_benches::Stall>>) {
    const CALLERS: u64 = 64;
    // Users of earlier runs would be repeats, whose exposures the
    // server's dedup cache filters out: each run has users of its own.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let channels: Vec<Channel> = exp_benches::channels(addr, 4).await;
    let meters = exp_benches::HiccupMeters::start(&[0, 1]);
    let cpu_before = exp_benches::own_cpu_seconds();
    let started = Instant::now() + Duration::from_millis(100);
    let per_caller = rate * seconds / CALLERS;
    let interval = Duration::from_secs_f64(CALLERS as f64 / rate as f64);
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut client =
            AssignmentServiceClient::new(channels[caller as usize % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let offset = interval.mul_f64(caller as f64 / CALLERS as f64);
            let mut latencies = Vec::with_capacity(per_caller as usize);
            let mut errors = 0u64;
            let mut late = 0u64;
            for index in 0..per_caller {
                let due = started + offset + interval * index as u32;
                let window = match exposures {
                    Exposures::Off | Exposures::On => 0,
                    Exposures::Alternating(window) => {
                        ((due - started).as_nanos() / window.as_nanos()) as usize
                    }
                };
                let logging = match exposures {
                    Exposures::Off => false,
                    Exposures::On => true,
                    Exposures::Alternating(_) => window % 2 == 1,
                };
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                let sent_at = SystemTime::now();
                if sent - due > Duration::from_millis(2) {
                    late += 1;
                }
                let result = client
                    .assign(v1::AssignRequest {
                        user_id: format!("user-{run}-{caller}-{index}"),
                        context: Some(v1::RequestContext {
                            placement: "you_may_also_like".into(),
                            ..Default::default()
                        }),
                        defer_exposure: !logging,
                        ..Default::default()
                    })
                    .await;
                if result.is_err() {
                    errors += 1;
                }
                latencies.push((logging, window, sent_at, sent.elapsed()));
            }
            (latencies, errors, late)
        }));
    }
    let (mut off, mut on) = (Timeline::default(), Timeline::default());
    let (mut errors, mut late) = (0, 0);
    let mut windows: Vec<Vec<Duration>> = Vec::new();
    for task in tasks {
        let (latencies, failed, delayed) = task.await.expect("caller");
        for (logging, window, sent_at, latency) in latencies {
            if matches!(exposures, Exposures::Alternating(_)) {
                if windows.len() <= window {
                    windows.resize(window + 1, Vec::new());
                }
                windows[window].push(latency);
            }
            if logging {
                on.record(sent_at, latency)
            } else {
                off.record(sent_at, latency)
            }
        }
        errors += failed;
        late += delayed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stalls = meters.map(exp_benches::HiccupMeters::stop);
    let count = off.len() + on.len();
    // The load generator's own CPU.
    let process_cpu = exp_benches::own_cpu_seconds() - cpu_before;
    match exposures {
        Exposures::Off => {
            print_timeline(
                &off,
                stalls.as_deref(),
                &format!("gRPC Assign at {rate}/s offered"),
            );
        }
        Exposures::On => {
            print_timeline(
                &on,
                stalls.as_deref(),
                &format!("gRPC Assign at {rate}/s offered, logging on"),
            );
        }
        Exposures::Alternating(window) => {
            println!(
                "gRPC Assign at {rate}/s offered, exposure logging off and on in alternate {window:?} windows:"
            );
            print_timeline(&off, stalls.as_deref(), "  logging off");
            print_timeline(&on, stalls.as_deref(), "  logging on");
            let (off, on) = (off.summary(), on.summary());
            println!(
                "  p99 on / off = {:.2}, p50 on / off = {:.2}",
                on.p99.as_secs_f64() / off.p99.as_secs_f64(),
                on.p50.as_secs_f64() / off.p50.as_secs_f64()
            );
            print_window_pairs(windows);
        }
    }
    if let Some(stalls) = &stalls {
        exp_benches::print_stalls(stalls);
    }
    println!(
        "  achieved {:.0} requests/s over {elapsed:.1} s, {errors} errors, {late} of {count} sent > 2 ms late; this process: {:.1} us of CPU per request",
        count as f64 / elapsed,
        process_cpu / count as f64 * 1e6
    );
    (off, on, stalls)
}

/// Prints, over each pair of adjacent windows (logging off, then on),
/// the ratio of their p99s: its median and quartiles. A stall of the
/// machine lands in one window and moves the p99 of the whole run; the
/// median of the pairs' ratios is the typical effect of logging, which
/// the stalls, as likely in an off window as in an on one, do not bias.
fn print_window_pairs(windows: Vec<Vec<Duration>>) {
    let mut ratios = Vec::new();
    let mut windows = windows.into_iter();
    while let (Some(off), Some(on)) = (windows.next(), windows.next()) {
        if !off.is_empty() && !on.is_empty() {
            ratios.push(Summary::of(on).p99.as_secs_f64() / Summary::of(off).p99.as_secs_f64());
        }
    }
    if ratios.is_empty() {
        return;
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    println!(
        "  p99 on / off within each of {} pairs of adjacent windows: median {:.2}, quartiles {:.2} - {:.2}",
        ratios.len(),
        at(0.5),
        at(0.25),
        at(0.75)
    );
}

/// The shortest machine stall a request is said to meet.
const STALL_THRESHOLD: Duration = Duration::from_millis(1);
/// How long after a stall began a request sent is said to meet it: the
/// server answers the queue that built up during the stall afterwards.
const STALL_BACKLOG: Duration = Duration::from_millis(5);

/// Prints `timeline`'s summary under `name`, and with `stalls`, how many
/// of its requests over 2 ms met a machine stall of 1 ms or more (in
/// flight, or sent within 5 ms after it), against how many of all did.
fn print_timeline(timeline: &Timeline, stalls: Option<&[exp_benches::Stall]>, name: &str) {
    let summary = timeline.summary();
    summary.print(name);
    let Some(stalls) = stalls else {
        return;
    };
    let share = timeline.stall_share(
        stalls,
        STALL_THRESHOLD,
        Duration::from_millis(2),
        STALL_BACKLOG,
    );
    println!(
        "    {} requests over 2 ms ({:.2}%), {} of them ({:.0}%) met a machine stall >= 1 ms; of all requests {:.0}% did",
        share.slow,
        share.slow as f64 / share.all as f64 * 100.0,
        share.slow_met_stall,
        share.slow_met_stall as f64 / share.slow.max(1) as f64 * 100.0,
        share.all_met_stall as f64 / share.all as f64 * 100.0
    );
}

fn http_assign(addr: std::net::SocketAddr) {
    let Ok(version) = std::process::Command::new("wrk").arg("--version").output() else {
        println!("HTTP JSON: wrk not installed (apt-get install wrk); skipped");
        return;
    };
    let _ = version;
    let script = std::env::temp_dir().join("expd-assign.lua");
    std::fs::write(
        &script,
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = '{"user_id": "user-' .. counter .. '", "session_id": "s", "context": {"placement": "you_may_also_like", "page_type": "product_detail"}}'
  return wrk.format(nil, "/experiments/assign", nil, body)
end
"#,
    )
    .expect("write script");
    let output = std::process::Command::new("wrk")
        .args(["-t2", "-c32", "-d10s", "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("HTTP JSON POST /experiments/assign (wrk -t2 -c32 -d10s, closed loop):");
    for line in text
        .lines()
        .filter(|l| l.contains('%') || l.contains("Requests/sec") || l.contains("Non-2xx"))
    {
        println!("  {}", line.trim());
    }
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

/// gRPC `Assign` driven by h2load (nghttp2's HTTP/2 load generator,
/// written in C), on `cpu` if given: `rate` requests/s in all for
/// `seconds`, from 40 connections opened 4 per millisecond, each sending
/// `rate / 40` requests/s. (h2load paces a connection with a timer of at
/// least 10 ms, so 4 connections at 2,500/s each would send 25 requests
/// at once; 40 connections with staggered starts spread them over the
/// 10 ms.) h2load sends one body over and over, so every request is the
/// same user: with logging on, every exposure after the first is a
/// repeat the filter drops. Latencies come from h2load's per-request log;
/// it checks HTTP status only, so the bench first checks with tonic that
/// the same request is answered OK with an assignment. `server` is the
/// pid of `expd`, whose CPU time is read.
fn h2load_assign(
    grpc: std::net::SocketAddr,
    server: u32,
    cpu: Option<usize>,
    rate: u64,
    seconds: u64,
    logging: bool,
) {
    use prost::Message;
    if std::process::Command::new("h2load")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("h2load not installed (apt-get install nghttp2-client); skipped");
        return;
    }
    let request = v1::AssignRequest {
        user_id: "user-h2load".into(),
        context: Some(v1::RequestContext {
            placement: "you_may_also_like".into(),
            ..Default::default()
        }),
        defer_exposure: !logging,
        ..Default::default()
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            AssignmentServiceClient::new(exp_e2e::connect(grpc).await)
                .assign(request.clone())
                .await
        })
        .expect("the request h2load repeats is answered OK")
        .into_inner();
    assert_eq!(answer.experiment_id, "reco_ymal_v1", "{answer:?}");
    let request = request.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(request.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(&request);
    let dir = tempfile::tempdir().expect("dir");
    let body = dir.path().join("assign.bin");
    let log = dir.path().join("h2load.tsv");
    std::fs::write(&body, framed).expect("write body");
    let connections = 40;
    let meters = exp_benches::HiccupMeters::start(&[0, 1]);
    let cpu_before = exp_benches::children_cpu_seconds();
    let server_cpu_before = exp_benches::cpu_seconds(server);
    let mut command = match cpu {
        None => std::process::Command::new("h2load"),
        Some(cpu) => {
            let mut taskset = std::process::Command::new("taskset");
            taskset.arg("-c").arg(cpu.to_string()).arg("h2load");
            taskset
        }
    };
    let output = command
        .arg("-c")
        .arg(connections.to_string())
        .args(["-r", "4", "--rate-period", "1ms", "-m", "16", "--rps"])
        .arg((rate / connections).to_string())
        .arg("-n")
        .arg((rate * seconds).to_string())
        .arg("-d")
        .arg(&body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("--log-file")
        .arg(&log)
        .arg(format!(
            "http://{grpc}/experiments.v1.AssignmentService/Assign"
        ))
        .output()
        .expect("run h2load");
    let h2load_cpu = exp_benches::children_cpu_seconds() - cpu_before;
    let server_cpu = exp_benches::cpu_seconds(server) - server_cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    let stalls = meters.map(exp_benches::HiccupMeters::stop);
    let mut timeline = Timeline::default();
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        let mut fields = line.split('\t');
        let (Some(start), Some(_status), Some(latency)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if let (Ok(start), Ok(latency)) = (start.parse(), latency.parse()) {
            timeline.record(
                SystemTime::UNIX_EPOCH + Duration::from_micros(start),
                Duration::from_micros(latency),
            );
        }
    }
    if timeline.is_empty() {
        println!("h2load: no requests logged:\n{text}");
        return;
    }
    let count = timeline.len();
    print_timeline(
        &timeline,
        stalls.as_deref(),
        &format!(
            "h2load Assign {rate}/s, logging {}",
            if logging { "on (a repeat)" } else { "off" }
        ),
    );
    if let Some(stalls) = &stalls {
        exp_benches::print_stalls(stalls);
    }
    for line in text.lines().filter(|l| {
        l.starts_with("finished in")
            || l.starts_with("requests:")
            || l.starts_with("status codes:")
            || l.starts_with("traffic:")
    }) {
        println!("  {}", line.trim());
    }
    println!(
        "  CPU per request: expd {:.1} us, h2load {:.1} us",
        server_cpu / count as f64 * 1e6,
        h2load_cpu / count as f64 * 1e6
    );
}

/// Where the release `expd` and the load generators run in
/// [`release_server`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Anywhere: the two processes share the machine's cores, as a
    /// service and its neighbours do.
    Shared,
    /// `expd` alone on CPU 0, the load generators on CPU 1: the server's
    /// cost and tail without the load generator competing for its core.
    Pinned,
    /// The layout of `deploy/`: an assign replica (`--services assign
    /// --config-source`) alone on CPU 0, which only filters its exposures
    /// and sends them on; the admin's `expd` (which writes, rolls and
    /// analyses them) and the load generators on CPU 1.
    Replica,
}

/// gRPC `Assign` against the release `expd` binary in a process of its
/// own (so the server's CPU time per request can be read from `/proc`):
/// driven by h2load, then by this process's tonic load generator (a
/// current-thread runtime: one core at most), with exposure logging off
/// and on. Needs `cargo build --release -p expd`, and `taskset` when
/// pinned.
fn release_server(placement: Placement, rate: u64, seconds: u64) {
    let expd = std::env::var_os("ASSIGN_EXPD")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.join("expd"))
        })
        .filter(|path| path.exists());
    let Some(expd) = expd else {
        match std::env::var("ASSIGN_EXPD") {
            Ok(named) => println!("release expd: ASSIGN_EXPD={named} does not exist; skipped"),
            Err(_) => println!("release expd: no binary (cargo build --release -p expd); skipped"),
        }
        return;
    };
    if placement != Placement::Shared {
        let pinned_self = std::process::Command::new("taskset")
            .args(["-a", "-cp", "1", &std::process::id().to_string()])
            .output();
        if !pinned_self.is_ok_and(|output| output.status.success()) {
            println!("pinned server: taskset unavailable; skipped");
            return;
        }
    }
    let data = tempfile::tempdir().expect("dir");
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let on_cpu = |cpu: Option<&str>| match cpu {
        None => std::process::Command::new(&expd),
        Some(cpu) => {
            let mut taskset = std::process::Command::new("taskset");
            taskset.args(["-c", cpu]).arg(&expd);
            taskset
        }
    };
    let spawn = |mut command: std::process::Command| {
        command
            .args(["--config-heartbeat", "60s", "--exposure-queue", "1000000"])
            .args(["--events-flush-interval", BENCH_FLUSH_INTERVAL])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn expd")
    };
    let listening_on = |command: &mut std::process::Command,
                        data: &std::path::Path,
                        grpc: std::net::SocketAddr,
                        http: std::net::SocketAddr| {
        command.arg("--data-dir").arg(data).args([
            "--grpc-addr",
            &grpc.to_string(),
            "--http-addr",
            &http.to_string(),
        ]);
    };
    // The server measured; with a replica, also the admin it follows and
    // sends its exposures to.
    let (server, admin) = match placement {
        Placement::Shared | Placement::Pinned => {
            let mut command = on_cpu((placement == Placement::Pinned).then_some("0"));
            listening_on(&mut command, data.path(), grpc, http);
            (spawn(command), None)
        }
        Placement::Replica => {
            let admin_data = tempfile::tempdir().expect("dir");
            let [admin_grpc, admin_http] = [(); 2].map(|()| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|listener| listener.local_addr())
                    .expect("free port")
            });
            let mut command = on_cpu(Some("1"));
            listening_on(&mut command, admin_data.path(), admin_grpc, admin_http);
            let admin = spawn(command);
            let mut command = on_cpu(Some("0"));
            listening_on(&mut command, data.path(), grpc, http);
            command.args([
                "--services",
                "assign",
                "--config-source",
                &format!("http://{admin_grpc}"),
            ]);
            (spawn(command), Some((admin, admin_grpc, admin_data)))
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let connect = |addr: std::net::SocketAddr| async move {
            loop {
                if let Ok(endpoint) =
                    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    && let Ok(channel) = endpoint.connect().await
                {
                    break channel;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let channel = connect(grpc).await;
        let admin_channel = match &admin {
            Some((_, admin_grpc, _)) => connect(*admin_grpc).await,
            None => channel.clone(),
        };
        exp_e2e::launch_seed_everywhere(&mut AdminServiceClient::new(admin_channel.clone())).await;
        let version = exp_e2e::current_config_version(admin_channel).await;
        exp_e2e::wait_for_assign_version(channel, version).await;
    });
    let h2load_cpu = match placement {
        Placement::Shared => {
            println!(
                "release expd in its own process, load generators in others, all sharing both cores"
            );
            None
        }
        Placement::Pinned => {
            println!("pinned: expd alone on CPU 0, the load generators on CPU 1");
            Some(1)
        }
        Placement::Replica => {
            println!(
                "replica: an assign replica alone on CPU 0 (CPU figures are its own), sending its exposures to the admin's expd on CPU 1 with the load generators"
            );
            Some(1)
        }
    };
    let pid = server.id();
    h2load_assign(grpc, pid, h2load_cpu, rate, 10, false);
    h2load_assign(grpc, pid, h2load_cpu, rate, 10, true);
    logging_in_separate_runs(&runtime, grpc, pid, rate);
    if placement == Placement::Shared {
        runtime.block_on(grpc_assign(
            grpc,
            rate,
            seconds,
            Exposures::Alternating(Duration::from_secs(1)),
        ));
    }
    let (admin, admin_data) = admin.map(|(admin, _, data)| (admin, data)).unzip();
    for mut process in [Some(server), admin].into_iter().flatten() {
        let _ = process.kill();
        let _ = process.wait();
    }
    // Removed once no process writes to it.
    drop(admin_data);
}

/// The release `expd`'s `--events-flush-interval` in these runs: short, so
/// that a ten-second run with logging on rolls most of its exposures
/// within the run and the rest in the pause after it (rolling costs the
/// same per event at any interval; with the default 30 s a run's roll
/// would land in the next run).
const BENCH_FLUSH_INTERVAL: &str = "3s";
/// The pause after each run: longer than the flush interval, so the
/// background work a run leaves (its last roll) ends within it, is
/// counted in the run's CPU, and does not reach the next run.
const QUIET_AFTER_RUN: Duration = Duration::from_secs(5);
/// Pairs of separate runs unless `ASSIGN_PAIRS` says how many (at least
/// 2): even, so that off and on go first equally often.
const LOGGING_PAIRS: usize = 4;

/// Exposure logging's cost, every request a new unit: pairs of ten-second
/// runs, logging off and on, each followed by a quiet pause; the pairs
/// alternate which goes first (off then on, on then off), so whatever
/// drifts over a pair (the server's heap, the cache of the page tables)
/// favours neither side. Each run prints its latencies and the server's
/// CPU per request over the run and its pause, in all and by thread (from
/// /proc, less noisy than latencies on a shared host); the last lines set
/// on against off, pair by pair and by thread, and estimate the ratio of
/// p99s as the geometric mean of the pairs' ratios, with a 90% confidence
/// interval from their spread. One `expd` serves all the pairs, and what
/// it holds (the repeat filter, the analyzer's units) grows with every run
/// with logging on: the estimate is over the state sizes the pairs went
/// through, and logging costs more late in a long run than early.
fn logging_in_separate_runs(
    runtime: &tokio::runtime::Runtime,
    grpc: std::net::SocketAddr,
    pid: u32,
    rate: u64,
) {
    const SECONDS: u64 = 10;
    let pair_count = match std::env::var("ASSIGN_PAIRS") {
        Err(_) => LOGGING_PAIRS,
        Ok(pairs) => pairs
            .parse()
            .ok()
            .filter(|&pairs: &usize| pairs >= 2)
            .unwrap_or_else(|| {
                panic!("ASSIGN_PAIRS={pairs}: expected a whole number of pairs, at least 2")
            }),
    };
    let mut pairs = Vec::new();
    std::thread::sleep(QUIET_AFTER_RUN);
    for pair in 0..pair_count {
        let order = if pair % 2 == 0 {
            [Exposures::Off, Exposures::On]
        } else {
            [Exposures::On, Exposures::Off]
        };
        let [first, second] = order.map(|exposures| {
            let before = exp_benches::cpu_seconds(pid);
            let threads_before = exp_benches::cpu_seconds_by_thread(pid);
            let started = Instant::now();
            let (off, on, stalls) = runtime.block_on(grpc_assign(grpc, rate, SECONDS, exposures));
            let elapsed = started.elapsed().as_secs_f64();
            std::thread::sleep(QUIET_AFTER_RUN);
            let used = exp_benches::cpu_seconds(pid) - before;
            let timeline = if matches!(exposures, Exposures::On) {
                on
            } else {
                off
            };
            let requests = timeline.len() as f64;
            let cpu_per_request = used / requests;
            let threads: BTreeMap<String, f64> = exp_benches::cpu_seconds_by_thread_name(
                &threads_before,
                &exp_benches::cpu_seconds_by_thread(pid),
                used,
            )
            .into_iter()
            .map(|(name, seconds)| (name, seconds / requests * 1e6))
            .collect();
            println!(
                "  expd CPU, the run and the pause after it: {:.1} us per request ({:.0}% of a core over the {elapsed:.1} s run); by thread: {}",
                cpu_per_request * 1e6,
                used / elapsed * 100.0,
                by_thread(threads.iter().map(|(name, us)| (name.as_str(), *us))),
            );
            let clear = stalls.as_deref().map(|stalls| {
                (
                    timeline.clear_of_stalls(stalls, STALL_THRESHOLD, STALL_BACKLOG),
                    exp_benches::stall_time(stalls, STALL_THRESHOLD),
                )
            });
            RunCost {
                p99: timeline.summary().p99.as_secs_f64(),
                clear_of_stalls: clear.and_then(|(clear, stall_time)| {
                    (!clear.is_empty()).then(|| ClearOfStalls {
                        p99: clear.summary().p99.as_secs_f64(),
                        share: clear.len() as f64 / requests,
                        stall_time: stall_time.as_secs_f64(),
                    })
                }),
                share_over_2ms: timeline.count_slower_than(Duration::from_millis(2)) as f64
                    / requests,
                cpu_per_request,
                threads,
            }
        });
        pairs.push(match order[0] {
            Exposures::Off => (first, second),
            _ => (second, first),
        });
    }
    let ratios: Vec<f64> = pairs.iter().map(|(off, on)| on.p99 / off.p99).collect();
    let cpu: Vec<f64> = pairs
        .iter()
        .map(|(off, on)| (on.cpu_per_request - off.cpu_per_request) * 1e6)
        .collect();
    let on_worse = pairs
        .iter()
        .filter(|(off, on)| on.share_over_2ms > off.share_over_2ms)
        .count();
    println!(
        "logging on / off in {pair_count} pairs of separate {SECONDS}-s runs, alternately off or on first (flush interval {BENCH_FLUSH_INTERVAL}):\n  \
         p99 ratio {} (median {:.2}); requests over 2 ms off / on: {}; expd CPU per request on - off: {} us",
        list(ratios.iter().map(|ratio| format!("{ratio:.2}"))),
        median(&ratios),
        list(pairs.iter().map(|(off, on)| format!(
            "{:.1}% / {:.1}%",
            off.share_over_2ms * 100.0,
            on.share_over_2ms * 100.0
        ))),
        list(cpu.iter().map(|us| format!("{us:+.1}"))),
    );
    let p99 = exp_benches::Interval::geometric(&ratios, 0.90);
    let cpu = exp_benches::Interval::arithmetic(&cpu, 0.90);
    println!(
        "  p99 on / off, geometric mean over the pairs: {:.3} (90% CI {:.3} to {:.3}); \
         on has more requests over 2 ms in {on_worse} of {pair_count}; \
         expd CPU per request on - off: {:+.1} us (90% CI {:+.1} to {:+.1})",
        p99.estimate, p99.low, p99.high, cpu.estimate, cpu.low, cpu.high,
    );
    let names: std::collections::BTreeSet<&str> = pairs
        .iter()
        .flat_map(|(off, on)| off.threads.keys().chain(on.threads.keys()))
        .map(String::as_str)
        .collect();
    let thread_cost = |run: &RunCost, name: &str| run.threads.get(name).copied().unwrap_or(0.0);
    println!(
        "  expd CPU per request on - off by thread, mean over the pairs: {}",
        by_thread(names.into_iter().map(|name| {
            let sum: f64 = pairs
                .iter()
                .map(|(off, on)| thread_cost(on, name) - thread_cost(off, name))
                .sum();
            (name, sum / pairs.len() as f64)
        })),
    );
    print_clear_of_stalls(&pairs);
}

/// Prints, when every run of `pairs` had hiccup meters, the p99 of the
/// requests that met no machine stall: each pair's ratio (on / off), the
/// share of requests that were clear of stalls, and the machine's stall
/// time in each run, then their geometric mean with its interval. A
/// stall hits logging on and off alike, but far more in some runs than
/// in others; without the requests it hit, the ratio measures what
/// logging does to the server's own latency, with somewhat less noise
/// (narrower intervals in every run recorded in `RESULTS.md`). Whether
/// logging itself stalls the machine, which this would hide, shows in
/// the stall time of its runs against the others'.
fn print_clear_of_stalls(pairs: &[(RunCost, RunCost)]) {
    let Some(clear): Option<Vec<(&ClearOfStalls, &ClearOfStalls)>> = pairs
        .iter()
        .map(|(off, on)| Some((off.clear_of_stalls.as_ref()?, on.clear_of_stalls.as_ref()?)))
        .collect()
    else {
        println!("  p99 clear of stalls: no hiccup meters in every run; skipped");
        return;
    };
    let ratios: Vec<f64> = clear.iter().map(|(off, on)| on.p99 / off.p99).collect();
    println!(
        "  p99 clear of stalls ratio {} (median {:.2}); requests clear of stalls off / on: {}; machine stall time off / on: {} ms",
        list(ratios.iter().map(|ratio| format!("{ratio:.3}"))),
        median(&ratios),
        list(clear.iter().map(|(off, on)| format!(
            "{:.1}% / {:.1}%",
            off.share * 100.0,
            on.share * 100.0
        ))),
        list(clear.iter().map(|(off, on)| format!(
            "{:.1} / {:.1}",
            off.stall_time * 1e3,
            on.stall_time * 1e3
        ))),
    );
    let p99 = exp_benches::Interval::geometric(&ratios, 0.90);
    let mean = |side: fn(&(&ClearOfStalls, &ClearOfStalls)) -> f64| {
        clear.iter().map(side).sum::<f64>() / clear.len() as f64
    };
    let more_stalls_on = clear
        .iter()
        .filter(|(off, on)| on.stall_time > off.stall_time)
        .count();
    println!(
        "  p99 clear of stalls on / off, geometric mean over the pairs: {:.3} (90% CI {:.3} to {:.3}); \
         requests clear of stalls off / on: {:.1}% / {:.1}%; machine stall time per run off / on: {:.1} / {:.1} ms, \
         more with logging on in {more_stalls_on} of {}",
        p99.estimate,
        p99.low,
        p99.high,
        mean(|(off, _)| off.share) * 100.0,
        mean(|(_, on)| on.share) * 100.0,
        mean(|(off, _)| off.stall_time) * 1e3,
        mean(|(_, on)| on.stall_time) * 1e3,
        clear.len(),
    );
}

/// `values` separated by commas.
fn list(values: impl Iterator<Item = String>) -> String {
    values.collect::<Vec<_>>().join(", ")
}

/// The median of `values` (not empty; the upper one of an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// `name +x.x` per thread of at least 0.5 us (either sign), most first.
fn by_thread<'a>(costs: impl Iterator<Item = (&'a str, f64)>) -> String {
    let mut costs: Vec<(&str, f64)> = costs.filter(|(_, us)| us.abs() >= 0.5).collect();
    costs.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    costs
        .iter()
        .map(|(name, us)| format!("{name} {us:+.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one run of [`logging_in_separate_runs`] measured.
struct RunCost {
    /// p99 latency, seconds.
    p99: f64,
    /// The requests that met no machine stall, when hiccup meters ran.
    clear_of_stalls: Option<ClearOfStalls>,
    /// The share of requests over 2 ms.
    share_over_2ms: f64,
    /// `expd` CPU seconds per request, the run and its pause.
    cpu_per_request: f64,
    /// `expd` CPU microseconds per request by thread name, the run and its
    /// pause.
    threads: BTreeMap<String, f64>,
}

/// The requests of one run that met no machine stall ([`STALL_THRESHOLD`]
/// or longer, in flight or in the [`STALL_BACKLOG`] before they were
/// sent).
struct ClearOfStalls {
    /// Their p99 latency, seconds.
    p99: f64,
    /// Their share of all the run's requests.
    share: f64,
    /// The machine's stall time of the run (stalls of at least
    /// [`STALL_THRESHOLD`], summed over both CPUs), seconds.
    stall_time: f64,
}

fn main() {
    exp_benches::run_hiccup_meter_if_asked();
    let rate = std::env::var("ASSIGN_RPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000);
    let seconds = std::env::var("ASSIGN_ALTERNATING_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let only = std::env::var("ASSIGN_ONLY");
    match only.as_deref() {
        Ok("processes") => {
            release_server(Placement::Shared, rate, seconds);
            release_server(Placement::Pinned, rate, seconds);
            return;
        }
        Ok("shared") => return release_server(Placement::Shared, rate, seconds),
        Ok("pinned") => return release_server(Placement::Pinned, rate, seconds),
        Ok("replica") => return release_server(Placement::Replica, rate, seconds),
        Ok("in-process") | Err(_) => {}
        Ok(other) => {
            panic!("ASSIGN_ONLY={other}: expected processes, shared, pinned, replica or in-process")
        }
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
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
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
    // gRPC Assign against the release binary.
    release_server(Placement::Shared, rate, seconds);
    release_server(Placement::Pinned, rate, seconds);
}
