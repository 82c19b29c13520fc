//! What the process tests share: free ports, a child `expd` that is
//! killed if its test fails, and a bare HTTP/1.1 GET.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback address no one listens on now.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// A running `expd`, killed if its test ends before stopping it.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on `addr` over a fresh connection: the status code and the
/// body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// A running `expd` child, its addresses as it logged them and the rest
/// of its log lines (JSON); killed if its test ends before stopping it.
pub struct Expd {
    pub child: Child,
    pub grpc: String,
    pub http: String,
    pub logs: mpsc::Receiver<String>,
}

impl Drop for Expd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Expd {
    /// Starts `expd` on `data_dir` with gRPC on `grpc_addr` (`127.0.0.1:0`
    /// for any port) and `extra` flags; returns once it logs that it
    /// serves.
    pub fn start(data_dir: &Path, grpc_addr: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_expd"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--grpc-addr", grpc_addr, "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn expd");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Keep draining even when no one listens, so the child
                // never blocks on a full pipe.
                let _ = lines.send(line);
            }
        });
        let (grpc, http) = loop {
            let line = logs
                .recv_timeout(Duration::from_secs(20))
                .expect("expd logs that it serves");
            let entry: serde_json::Value = serde_json::from_str(&line).expect("json log line");
            if entry["fields"]["message"] == "expd serving" {
                let address =
                    |field: &str| entry["fields"][field].as_str().expect("address").to_owned();
                break (address("grpc"), address("http"));
            }
        };
        Self {
            child,
            grpc,
            http,
            logs,
        }
    }

    /// A channel to its gRPC port.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(term.success());
        let status = self.child.wait().expect("exit");
        assert!(status.success(), "expd stopped with {status}");
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// Asks `probe` every 50 ms until it answers, for at most `within`.
pub async fn wait_until<T>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `expd` with `flags` on ports of its own choosing (`127.0.0.1:0`) and
/// `data`, its log read for the addresses it bound ([`Expd::start`]): the
/// child, its gRPC and HTTP addresses and a channel. No port is picked
/// ahead of the process, so none can be taken by another test's first.
pub async fn start_quiet(
    data: &Path,
    flags: &[&str],
) -> (Expd, SocketAddr, SocketAddr, tonic::transport::Channel) {
    let data = data.to_owned();
    let flags: Vec<String> = flags.iter().map(|flag| (*flag).to_owned()).collect();
    // Reading the log until it serves blocks: off the runtime's workers.
    let expd = tokio::task::spawn_blocking(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Expd::start(&data, "127.0.0.1:0", &flags)
    })
    .await
    .expect("expd started");
    let grpc = expd.grpc.parse().expect("a gRPC address");
    let http = expd.http.parse().expect("an HTTP address");
    let channel = expd.channel().await;
    (expd, grpc, http, channel)
}

/// Waits until `Assign` on `channel` puts a user in experiment `id`:
/// assignment follows a change a moment after the admin answers it.
pub async fn wait_until_assigned(channel: &tonic::transport::Channel, id: &str) {
    use exp_proto::v1;
    let mut assignment =
        v1::assignment_service_client::AssignmentServiceClient::new(channel.clone());
    let assigned = wait_until(Duration::from_secs(10), async || {
        let answer = assignment
            .assign(v1::AssignRequest {
                user_id: "wait-until-assigned".into(),
                defer_exposure: true,
                context: Some(v1::RequestContext {
                    placement: "you_may_also_like".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        answer
            .assignments
            .iter()
            .any(|assignment| assignment.experiment_id == id)
            .then_some(())
    })
    .await;
    assert!(assigned.is_some(), "assignment never served {id}");
}
