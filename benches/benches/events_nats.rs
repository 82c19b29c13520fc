//! Event ingest through one NATS JetStream node against the embedded log,
//! in one run: `EventService/LogOutcomes` with batches of 1,000 into two
//! `expd` servers in this process, one on its embedded log (group commit,
//! fsync) and one with `--events-sink nats://` (every event published to
//! the stream, the answer after JetStream's acknowledgements; file
//! storage, one replica). The two are measured alternately, three rounds
//! each, so the machine's drift falls on both:
//!
//! 1. closed loop, 16 callers: acknowledged events per second and the
//!    acknowledgement p50 and p99;
//! 2. open loop at a rate both sustain (default 20,000 events/s): the
//!    acknowledgement latency at the same load;
//!
//! and the CPU `nats-server` spent per acknowledged event.
//!
//! Needs Debian's `nats-server` on the PATH (`apt-get install
//! nats-server`); fails without it. Run: `cargo bench -p exp-benches
//! --bench events_nats` (`EVENTS_SECONDS` sets each run's length, default
//! 5; `EVENTS_RATE` the offered rate of 2).

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use exp_benches::events::{Load, closed_loop, open_loop};
use exp_proto::v1::{self, event_service_client::EventServiceClient};

// The allocator `expd` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 3;
const BATCH: usize = 1_000;
const CALLERS: usize = 16;

/// A `nats-server` with JetStream on a loopback port of its own,
/// stopped when dropped.
struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> Self {
        let store = tempfile::tempdir().expect("dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        // EXPD_NATS_SERVER as the tests take it; Debian installs it in
        // /usr/sbin, not on every user's PATH.
        let binary = std::env::var("EXPD_NATS_SERVER").unwrap_or_else(|_| {
            if std::path::Path::new("/usr/sbin/nats-server").exists() {
                "/usr/sbin/nats-server".into()
            } else {
                "nats-server".into()
            }
        });
        let mut child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "{binary}: {err}; this benchmark needs Debian's nats-server \
                     (apt-get install nats-server), or its path in EXPD_NATS_SERVER"
                )
            });
        // nats-server logs "Server is ready" once it accepts clients: its
        // log is read until then (a blocking read, woken by each line),
        // and drained afterwards so the server never blocks on the pipe.
        let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let ready = log
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Server is ready"));
        assert!(
            ready,
            "nats-server on port {port} exited before it was ready"
        );
        std::thread::spawn(move || log.for_each(drop));
        Self {
            child,
            port,
            _store: store,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one batch until it is acknowledged: the stream is created in the
/// background once `expd` has connected.
async fn until_acknowledged(addr: SocketAddr) {
    let mut client = EventServiceClient::new(exp_e2e::connect(addr).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    loop {
        let outcomes = exp_benches::events::batch("warmup", 0, round, 10);
        round += 1;
        match client
            .log_outcomes(v1::LogOutcomesRequest { outcomes })
            .await
        {
            Ok(_) => return,
            Err(status) => {
                assert!(Instant::now() < deadline, "never acknowledged: {status}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let seconds = std::env::var("EVENTS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rate: u64 = std::env::var("EVENTS_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    let nats = NatsServer::start();
    let sink = format!("nats://127.0.0.1:{}", nats.port);
    let server_runtime = expd::server::runtime().expect("runtime");
    let common = [
        "--services",
        "admin,ingest",
        "--events-flush-interval",
        "10s",
        "--events-max-pending",
        "1000000",
    ];
    let embedded = server_runtime.block_on(exp_e2e::TestServer::start_with(&common));
    let with_sink = [&common[..], &["--events-sink", &sink]].concat();
    let jetstream = server_runtime.block_on(exp_e2e::TestServer::start_with(&with_sink));
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    client_runtime.block_on(until_acknowledged(jetstream.grpc_addr));
    let targets = [
        ("embedded log", embedded.grpc_addr),
        ("JetStream, 1 node", jetstream.grpc_addr),
    ];

    println!("closed loop, batches of {BATCH}, {CALLERS} callers, {seconds} s a run, alternately:");
    let mut closed: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
    let mut nats_cpu_per_event = Vec::new();
    for round in 0..ROUNDS {
        for (index, (name, addr)) in targets.iter().enumerate() {
            let cpu_before = exp_benches::cpu_seconds(nats.child.id());
            let load = client_runtime.block_on(closed_loop(
                *addr,
                &format!("closed-{round}-{index}-"),
                BATCH,
                CALLERS,
                seconds,
            ));
            let cpu = exp_benches::cpu_seconds(nats.child.id()) - cpu_before;
            print!("{name:<18} ");
            load.print();
            if index == 1 {
                let events = load.events_per_second * load.seconds;
                nats_cpu_per_event.push(cpu / events * 1e6);
                println!(
                    "  nats-server CPU {:.2} us per acknowledged event",
                    cpu / events * 1e6
                );
            }
            closed[index].push(load);
        }
    }
    println!("\nopen loop at {rate} events/s offered, batches of {BATCH}, alternately:");
    let mut open: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (index, (name, addr)) in targets.iter().enumerate() {
            let load = client_runtime.block_on(open_loop(
                *addr,
                &format!("open-{round}-{index}-"),
                BATCH,
                rate,
                seconds,
            ));
            print!("{name:<18} ");
            load.print();
            open[index].push(load);
        }
    }

    let rates = |loads: &[Load]| median(loads.iter().map(|l| l.events_per_second).collect());
    let p99 = |loads: &[Load]| {
        median(
            loads
                .iter()
                .map(|l| l.summary.p99.as_secs_f64() * 1e3)
                .collect(),
        )
    };
    let p50 = |loads: &[Load]| {
        median(
            loads
                .iter()
                .map(|l| l.summary.p50.as_secs_f64() * 1e3)
                .collect(),
        )
    };
    println!("\nmedians of {ROUNDS} rounds:");
    for (index, (name, _)) in targets.iter().enumerate() {
        println!(
            "  {name:<18} closed loop {:>8.0} events/s, ack p50 {:>6.1} ms, p99 {:>6.1} ms; open loop at {rate}/s: ack p50 {:>6.1} ms, p99 {:>6.1} ms",
            rates(&closed[index]),
            p50(&closed[index]),
            p99(&closed[index]),
            p50(&open[index]),
            p99(&open[index]),
        );
    }
    println!(
        "  JetStream / embedded: {:.2}x the events/s (closed loop), {:.2}x the ack p99 (open loop); nats-server {:.2} us CPU per event",
        rates(&closed[1]) / rates(&closed[0]),
        p99(&open[1]) / p99(&open[0]),
        median(nats_cpu_per_event),
    );
    server_runtime.block_on(async {
        jetstream.stop().await;
        embedded.stop().await;
    });
}
