//! Assignment and config delivery:
//!
//! 1. in-process evaluation (what the SDK and every server request run),
//!    with 10 and with 10,000 experiments on other placements, and the
//!    cost of an exposure on and off the request path;
//! 2. gRPC `Assign` over loopback, open loop at a fixed rate
//!    (default 10,000 requests/s) from 64 concurrent callers, without
//!    exposure logging, then with it off and on in alternate one-second
//!    windows (each request a new user, so logging on writes every
//!    exposure to the durable event log);
//! 3. HTTP JSON `POST /experiments/assign` with wrk, when wrk is installed;
//! 4. the time for one change to reach 1,000 WatchConfigs watchers;
//! 5. 2 again against the release `expd` in its own process pinned to one
//!    core, the load generator pinned to the other.
//!
//! Run: `cargo bench -p exp-benches --bench assign` (`ASSIGN_RPS` sets the
//! rate of 2, `ASSIGN_ALTERNATING_SECONDS` the length of its run with
//! exposure logging off and on in alternate one-second windows, default
//! 60).

use std::time::{Duration, Instant, SystemTime};

use exp_benches::{Summary, time_batched};
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
    .print_ns("repeat filter, a new unit (feed thread)");
    let repeat = record("user-7".into());
    time_batched(100, 10_000, || {
        std::hint::black_box(filter.is_first(&repeat));
    })
    .print_ns("repeat filter, a repeat (feed thread)");
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
/// logs writes an exposure through to the durable event log. Answers the
/// summaries of the requests without and with exposure logging.
async fn grpc_assign(
    addr: std::net::SocketAddr,
    rate: u64,
    seconds: u64,
    exposures: Exposures,
) -> (Summary, Option<Summary>) {
    const CALLERS: u64 = 64;
    let channels: Vec<Channel> = exp_benches::channels(addr, 4).await;
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
                let logging = match exposures {
                    Exposures::Off => false,
                    Exposures::On => true,
                    Exposures::Alternating(window) => {
                        ((due - started).as_nanos() / window.as_nanos()) % 2 == 1
                    }
                };
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                if sent - due > Duration::from_millis(2) {
                    late += 1;
                }
                let result = client
                    .assign(v1::AssignRequest {
                        user_id: format!("user-{caller}-{index}"),
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
                latencies.push((logging, sent.elapsed()));
            }
            (latencies, errors, late)
        }));
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut errors, mut late) = (0, 0);
    for task in tasks {
        let (latencies, failed, delayed) = task.await.expect("caller");
        for (logging, latency) in latencies {
            if logging {
                on.push(latency)
            } else {
                off.push(latency)
            }
        }
        errors += failed;
        late += delayed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = off.len() + on.len();
    // The load generator's own CPU (in the unpinned runs this process
    // also hosts the server).
    let process_cpu = exp_benches::own_cpu_seconds() - cpu_before;
    let off = if off.is_empty() {
        Summary::of(on.clone())
    } else {
        Summary::of(off)
    };
    let on = (!on.is_empty()).then(|| Summary::of(on));
    match (exposures, on) {
        (Exposures::On, _) => {
            on.expect("requests")
                .print(&format!("gRPC Assign at {rate}/s offered, logging on"));
        }
        (Exposures::Off, _) | (_, None) => {
            off.print(&format!("gRPC Assign at {rate}/s offered"));
        }
        (Exposures::Alternating(window), Some(on)) => {
            println!(
                "gRPC Assign at {rate}/s offered, exposure logging off and on in alternate {window:?} windows:"
            );
            off.print("  logging off");
            on.print("  logging on");
            println!(
                "  p99 on / off = {:.2}, p50 on / off = {:.2}",
                on.p99.as_secs_f64() / off.p99.as_secs_f64(),
                on.p50.as_secs_f64() / off.p50.as_secs_f64()
            );
        }
    }
    println!(
        "  achieved {:.0} requests/s over {elapsed:.1} s, {errors} errors, {late} of {count} sent > 2 ms late; this process: {:.1} us of CPU per request",
        count as f64 / elapsed,
        process_cpu / count as f64 * 1e6
    );
    (off, on)
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

/// gRPC `Assign` against the release `expd` binary in a process of its
/// own pinned to CPU 0, with this process (the load generator) pinned to
/// CPU 1: the server's tail without the load generator competing for its
/// core. Needs `cargo build --release -p expd` and `taskset`.
fn pinned_server(rate: u64, seconds: u64) {
    let expd = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("expd")))
        .filter(|path| path.exists());
    let Some(expd) = expd else {
        println!("pinned server: no release expd binary (cargo build --release -p expd); skipped");
        return;
    };
    let pinned_self = std::process::Command::new("taskset")
        .args(["-a", "-cp", "1", &std::process::id().to_string()])
        .output();
    if !pinned_self.is_ok_and(|output| output.status.success()) {
        println!("pinned server: taskset unavailable; skipped");
        return;
    }
    let data = tempfile::tempdir().expect("dir");
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let mut server = std::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(&expd)
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--grpc-addr",
            &grpc.to_string(),
            "--http-addr",
            &http.to_string(),
        ])
        .args(["--config-heartbeat", "60s", "--exposure-queue", "1000000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn expd");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel = loop {
            if let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
                && let Ok(channel) = endpoint.connect().await
            {
                break channel;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        exp_e2e::launch_seed_everywhere(&mut AdminServiceClient::new(channel.clone())).await;
        let launched = exp_e2e::current_config_version(channel.clone()).await;
        exp_e2e::wait_for_assign_version(channel, launched).await;
    });
    println!("pinned: expd alone on CPU 0, the load generator on CPU 1");
    // The server's CPU time per request, from /proc, with logging off and
    // on: immune to the latency noise of a shared host.
    let pid = server.id();
    for exposures in [Exposures::Off, Exposures::On, Exposures::Off, Exposures::On] {
        let before = exp_benches::cpu_seconds(pid);
        let started = Instant::now();
        runtime.block_on(grpc_assign(grpc, rate, 10, exposures));
        let used = exp_benches::cpu_seconds(pid) - before;
        let requests = rate as f64 * 10.0;
        println!(
            "  expd CPU: {:.1} us per request ({:.0}% of its core over {:.1} s)",
            used / requests * 1e6,
            used / started.elapsed().as_secs_f64() * 100.0,
            started.elapsed().as_secs_f64()
        );
    }
    runtime.block_on(grpc_assign(
        grpc,
        rate,
        seconds,
        Exposures::Alternating(Duration::from_secs(1)),
    ));
    let _ = server.kill();
    let _ = server.wait();
}

fn main() {
    evaluation(10);
    evaluation(10_000);
    exposure_costs();

    // The server gets a runtime of its own, as in production; callers
    // another. They still share the machine's two cores.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
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
    let rate = std::env::var("ASSIGN_RPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10_000);
    // Without exposure logging, then with it off and on in alternate
    // one-second windows.
    client_runtime.block_on(grpc_assign(grpc_addr, rate, 10, Exposures::Off));
    let seconds = std::env::var("ASSIGN_ALTERNATING_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    client_runtime.block_on(grpc_assign(
        grpc_addr,
        rate,
        seconds,
        Exposures::Alternating(Duration::from_secs(1)),
    ));
    http_assign(http_addr);
    client_runtime.block_on(propagation(grpc_addr, 1_000, 20));
    server_runtime.block_on(server.stop());
    drop(client_runtime);
    drop(server_runtime);
    pinned_server(rate, seconds);
}
