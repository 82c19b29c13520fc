//! What the NATS tests share: Debian's `nats-server` with JetStream as a
//! child process (one node, or a cluster of three), its monitoring
//! endpoint, and DuckDB (the Python package) reading Parquet.
//!
//! Both tools are required: a test that cannot find one fails saying how
//! to install it, it is never skipped.

// Each test uses a part of this module.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{free_addr, wait_until};

/// How long a node may take to serve JetStream (a cluster elects its
/// meta leader first).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The `nats-server` binary: `EXPD_NATS_SERVER`, else the first on
/// `PATH`, else Debian's `/usr/sbin/nats-server` (`/usr/sbin` is not on
/// every user's `PATH`). Panics saying how to install it when there is
/// none.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EXPD_NATS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "EXPD_NATS_SERVER={} is not a file: these tests need Debian's nats-server \
             (apt-get install nats-server)",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found on PATH nor in /usr/sbin: the NATS tests run a real \
                 NATS server with JetStream. Install Debian's (`sudo apt-get install \
                 nats-server`, as .ci/run does) or name a binary with EXPD_NATS_SERVER."
            )
        })
}

/// `nats-server --version`, e.g. `nats-server: v2.9.10`.
pub fn nats_server_version() -> String {
    let output = Command::new(nats_server_binary())
        .arg("--version")
        .output()
        .expect("run nats-server --version");
    assert!(output.status.success(), "nats-server --version: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// One `nats-server -js` child with its own store directory, killed when
/// dropped. Its ports stay the same across [`NatsServer::kill`] and
/// [`NatsServer::restart`].
#[derive(Debug)]
pub struct NatsServer {
    /// `--server_name`.
    pub name: String,
    /// Clients connect here.
    pub client: SocketAddr,
    /// The monitoring endpoint (`/healthz`, `/jsz`).
    pub monitor: SocketAddr,
    /// Where JetStream keeps its files (`-sd`).
    pub store: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    fn new(dir: &Path, name: &str, cluster: Option<(&str, SocketAddr, &[SocketAddr])>) -> Self {
        let (client, monitor) = (free_addr(), free_addr());
        let store = dir.join(format!("{name}-store"));
        let log = dir.join(format!("{name}.log"));
        std::fs::create_dir_all(&store).expect("store dir");
        let mut args: Vec<String> = vec![
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            client.port().to_string(),
            "-m".into(),
            monitor.port().to_string(),
            "--server_name".into(),
            name.into(),
            "-l".into(),
            log.display().to_string(),
        ];
        if let Some((cluster_name, listen, routes)) = cluster {
            args.extend([
                "--cluster_name".into(),
                cluster_name.into(),
                "-cluster".into(),
                format!("nats://{listen}"),
                "--routes".into(),
                routes
                    .iter()
                    .map(|route| format!("nats://{route}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        let mut server = Self {
            name: name.into(),
            client,
            monitor,
            store,
            log,
            args,
            child: None,
        };
        server.spawn();
        server
    }

    /// A single node with JetStream, its store under `dir`, once it
    /// serves JetStream.
    pub async fn start(dir: &Path) -> Self {
        let server = Self::new(dir, "single", None);
        server.wait_ready().await;
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let child = Command::new(nats_server_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.client)
    }

    /// Waits until `/healthz` says JetStream serves (a cluster node: once
    /// it knows the meta leader); panics with its log after
    /// [`READY_WITHIN`].
    pub async fn wait_ready(&self) {
        let ready = wait_until(READY_WITHIN, async || {
            let (code, _) = http_get(self.monitor, "/healthz").await?;
            (code == 200).then_some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "nats-server {} did not serve JetStream within {READY_WITHIN:?}; its log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL nats-server");
        child.wait().expect("reaped");
    }

    /// Starts it again with the same ports, name and store, once it
    /// serves JetStream.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three `nats-server -js` nodes routed to each other (`n1`, `n2`, `n3`),
/// each with its own store.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Three nodes under `dir`, once each serves JetStream.
    pub async fn start(dir: &Path) -> Self {
        let routes: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let nodes: Vec<NatsServer> = (0..3)
            .map(|index| {
                let others: Vec<SocketAddr> = routes
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .map(|(_, route)| *route)
                    .collect();
                NatsServer::new(
                    dir,
                    &format!("n{}", index + 1),
                    Some(("expd-test", routes[index], &others)),
                )
            })
            .collect();
        for node in &nodes {
            node.wait_ready().await;
        }
        Self { nodes }
    }

    /// `--events-sink`: every node.
    pub fn servers(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node leading `stream`, and how many of its
    /// followers are current, as the leader's own `/jsz` says (a
    /// follower's view of the others is not kept current).
    pub async fn stream_leader(&self, stream: &str) -> Option<(usize, usize)> {
        for (index, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let Some((200, body)) = http_get(node.monitor, "/jsz?accounts=true&streams=true").await
            else {
                continue;
            };
            let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let found = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|account| account["stream_detail"].as_array())
                .flatten()
                .find(|detail| detail["name"] == stream)
                .map(|detail| detail["cluster"].clone());
            let Some(cluster) = found else { continue };
            if cluster["leader"] != node.name.as_str() {
                continue;
            }
            let current = cluster["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|replica| replica["current"] == true)
                .count();
            return Some((index, current));
        }
        None
    }
}

impl NatsCluster {
    /// The durable consumers of `stream` as its leader's `/jsz` reports
    /// them, one line each (name, delivered, ack floor, pending acks,
    /// redelivered, pending): for failure messages.
    pub async fn consumers(&self, stream: &str) -> Vec<String> {
        let Some((leader, _)) = self.stream_leader(stream).await else {
            return vec![format!("no leader of {stream}")];
        };
        let Some((200, body)) = http_get(
            self.nodes[leader].monitor,
            "/jsz?accounts=true&streams=true&consumers=true&config=true",
        )
        .await
        else {
            return vec!["/jsz did not answer".into()];
        };
        let jsz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let mut lines: Vec<String> = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|account| account["stream_detail"].as_array())
            .flatten()
            .filter(|detail| detail["name"] == stream)
            .filter_map(|detail| detail["consumer_detail"].as_array())
            .flatten()
            .filter(|consumer| consumer["config"]["durable_name"].is_string())
            .map(|consumer| {
                format!(
                    "{}: delivered stream seq {}, ack floor stream seq {}, ack pending {}, \
                     redelivered {}, pending {}",
                    consumer["name"].as_str().unwrap_or("?"),
                    consumer["delivered"]["stream_seq"],
                    consumer["ack_floor"]["stream_seq"],
                    consumer["num_ack_pending"],
                    consumer["num_redelivered"],
                    consumer["num_pending"],
                )
            })
            .collect();
        lines.sort();
        lines
    }
}

/// `GET path` on `addr` (HTTP/1.0, so the body is never chunked): the
/// status code and body, or `None` when nothing answers (within 2 s).
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.ok()?;
        let code = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Where the `duckdb` Python package is: `EXPD_DUCKDB_PYTHONPATH`, else
/// `target/ci-tools/python-nats` of this workspace (where `.ci/run`
/// installs it).
pub fn duckdb_pythonpath() -> PathBuf {
    std::env::var_os("EXPD_DUCKDB_PYTHONPATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ci-tools/python-nats")
        })
}

/// Runs `script` with `python3` and the `duckdb` package, with `args`;
/// its standard output, or its failure.
fn python_duckdb(script: &str, args: &[String]) -> Result<String, String> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", duckdb_pythonpath())
        .output()
        .map_err(|err| format!("python3: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "python3 ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// DuckDB's version; panics saying how to install it when it cannot be
/// imported.
pub fn require_duckdb() -> String {
    python_duckdb("import duckdb; print(duckdb.__version__)", &[]).unwrap_or_else(|err| {
        panic!(
            "DuckDB is not importable from {} ({err}): the NATS tests count Parquet rows \
             with it. Install it as .ci/run does: python3 -m pip install --target \
             target/ci-tools/python-nats duckdb==2.0.1 (or point EXPD_DUCKDB_PYTHONPATH at \
             a directory holding it).",
            duckdb_pythonpath().display()
        )
    })
}

/// DuckDB's count of each `event_id` over every Parquet file of `kind`
/// (`exposures` or `outcomes`) under the `events` directory of each data
/// directory in `data_dirs`:
/// `SELECT event_id, count(*) FROM read_parquet([...]) GROUP BY 1`.
/// Empty while there is no file yet.
pub fn duckdb_event_id_counts(
    data_dirs: &[&Path],
    kind: &str,
) -> Result<HashMap<String, usize>, String> {
    const SCRIPT: &str = r#"
import glob, json, sys
import duckdb
kind, dirs = sys.argv[1], sys.argv[2:]
files = sorted(f for d in dirs for f in glob.glob(f"{d}/events/{kind}/**/*.parquet", recursive=True))
rows = []
if files:
    rows = duckdb.execute(
        "SELECT event_id, count(*) FROM read_parquet(?) GROUP BY 1", [files]
    ).fetchall()
print(json.dumps(rows))
"#;
    let mut args = vec![kind.to_owned()];
    args.extend(data_dirs.iter().map(|dir| dir.display().to_string()));
    let rows: Vec<(String, usize)> = serde_json::from_str(&python_duckdb(SCRIPT, &args)?)
        .map_err(|err| format!("DuckDB's answer: {err}"))?;
    Ok(rows.into_iter().collect())
}
