//! Test support: a real `expd` serving on ephemeral loopback ports in this
//! process, real tonic clients, and the seed's example experiment as a
//! proto message.
//!
//! The tests in `tests/` use it; `grpcurl_e2e.sh` and
//! `readme_walkthrough.sh` drive a separate `expd` process with grpcurl.

use std::{net::SocketAddr, path::Path};

use exp_proto::v1::{self, admin_service_client::AdminServiceClient};
use expd::{Config, ServeError};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// An `expd` serving on `127.0.0.1:0` with a fresh data directory.
#[derive(Debug)]
pub struct TestServer {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// The data directory, removed on drop.
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts `expd` with default flags.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts `expd` with extra flags, e.g. `["--tokens-file", path]`.
    pub async fn start_with(extra_args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(data_dir, extra_args).await
    }

    /// Starts `expd` on an existing data directory.
    pub async fn start_in(data_dir: tempfile::TempDir, extra_args: &[&str]) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        Self::start_on(grpc, data_dir, extra_args).await
    }

    /// Starts `expd` on an existing data directory with gRPC on `grpc`
    /// (e.g. the address of a server stopped earlier).
    pub async fn start_on(
        grpc: TcpListener,
        data_dir: tempfile::TempDir,
        extra_args: &[&str],
    ) -> Self {
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc_addr = grpc.local_addr().expect("grpc addr");
        let http_addr = http.local_addr().expect("http addr");
        let data = data_dir.path().to_str().expect("utf-8 path").to_owned();
        let args = ["expd", "--data-dir", &data, "--shutdown-grace", "2s"]
            .into_iter()
            .chain(extra_args.iter().copied());
        let config = <Config as clap::Parser>::try_parse_from(args).expect("flags parse");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(expd::serve(config, grpc, http, async {
            let _ = stopped.await;
        }));
        let server = Self {
            grpc_addr,
            http_addr,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_until_events_are_served().await;
        server
    }

    /// Waits until `EventService` reports SERVING (its log opens in the
    /// background), unless this server does not run it.
    async fn wait_until_events_are_served(&self) {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let mut health = HealthClient::new(self.channel().await);
        for _ in 0..500 {
            let answer = health
                .check(HealthCheckRequest {
                    service: "experiments.v1.EventService".into(),
                })
                .await;
            match answer {
                Ok(answer) if answer.get_ref().status == 1 => return,
                Err(status) if status.code() == tonic::Code::NotFound => return,
                _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        panic!("EventService never became SERVING");
    }

    /// A channel to the gRPC port.
    pub async fn channel(&self) -> Channel {
        connect(self.grpc_addr).await
    }

    /// An `AdminService` client.
    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Shuts the server down gracefully and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown().await;
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, placeholder)
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The `data_plane` token of [`write_tokens_file`] (a rec service).
pub const DATA_PLANE_TOKEN: &str = "data-plane-token-5c2e8a1f9b7d4e63";

/// Writes a tokens file with an editor (alice), a viewer (bob) and a
/// data-plane token ([`DATA_PLANE_TOKEN`], the rec service) into `dir`;
/// returns its path and the editor's and viewer's tokens.
pub fn write_tokens_file(dir: &Path) -> (String, &'static str, &'static str) {
    let editor = "editor-token-7d9f2c41e8a64b0f";
    let viewer = "viewer-token-3b1e9d7c5a2f4e60";
    let path = dir.join("tokens.json");
    std::fs::write(
        &path,
        serde_json::json!({"tokens": [
            {"token": editor, "identity": "alice@example.com", "role": "editor"},
            {"token": viewer, "identity": "bob@example.com", "role": "viewer"},
            {"token": DATA_PLANE_TOKEN, "identity": "rec-service", "role": "data_plane"}
        ]})
        .to_string(),
    )
    .expect("write tokens");
    // Tokens are secrets: expd refuses a file other users can read.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    (path.to_str().expect("utf-8").to_owned(), editor, viewer)
}

/// The seed's example `reco_ymal_v1` as a proto message.
pub fn seed_experiment() -> v1::Experiment {
    exp_proto::convert::experiment_to_proto(&exp_core_seed())
}

fn exp_core_seed() -> exp_core::Experiment {
    exp_core::examples::seed_experiment()
}

/// Adds `authorization: Bearer token` to a request.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// POSTs `body` to `path` over HTTP/1.1; returns the status and body.
pub async fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_post_with(addr, path, &[], body).await
}

/// [`http_post`] with extra request headers.
pub async fn http_post_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    http_send(addr, "POST", path, headers, body).await
}

/// `GET path` with extra `headers`: the status and the body.
pub async fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    http_send(addr, "GET", path, headers, "").await
}

async fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let answer = http_request(addr, method, path, &all, body).await;
    (answer.status, answer.body)
}

/// An HTTP answer: status, headers (names in lower case), body.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// Every header, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl HttpAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request with `headers` (the body's length, and a `Host`
/// unless `headers` name one, are added) on its own connection.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let host = if headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        String::new()
    } else {
        format!("Host: {addr}\r\n")
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\n{host}{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Creates the seed's example at 100% of traffic and starts it.
pub async fn launch_seed_everywhere(admin: &mut AdminServiceClient<Channel>) {
    let mut seed = seed_experiment();
    seed.traffic_percent = 100;
    create_and_start(admin, seed).await;
}

/// Creates `experiment` and starts it.
pub async fn create_and_start(admin: &mut AdminServiceClient<Channel>, experiment: v1::Experiment) {
    let id = experiment.id.clone();
    admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(experiment),
            reason: String::new(),
        })
        .await
        .expect("create");
    admin
        .start_experiment(v1::StartExperimentRequest {
            id,
            ..Default::default()
        })
        .await
        .expect("start");
}

/// An `Assign` request for `user_id` and `session_id` on the seed's
/// placement, "you may also like".
pub fn ymal_request(user_id: &str, session_id: &str) -> v1::AssignRequest {
    v1::AssignRequest {
        user_id: user_id.into(),
        session_id: session_id.into(),
        context: Some(v1::RequestContext {
            placement: "you_may_also_like".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A channel to the gRPC server at `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// Waits (up to 10 s) until `Assign` on `channel` answers from config
/// `version` or later. Assignment follows its config source
/// asynchronously: a few scheduler turns behind the admin's answer in
/// process, a stream message behind it in a sidecar.
pub async fn wait_for_assign_version(channel: Channel, version: u64) {
    let mut client = v1::assignment_service_client::AssignmentServiceClient::new(channel);
    for _ in 0..400 {
        if let Ok(response) = client
            .assign(v1::AssignRequest {
                session_id: "config-version-probe".into(),
                defer_exposure: true,
                ..Default::default()
            })
            .await
            && response.get_ref().config_version >= version
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("assignment never reached config version {version}");
}

/// Waits until `Assign` on `channel` serves the config version the same
/// server publishes now (after a change made through its admin).
pub async fn wait_until_assign_is_current(channel: Channel) {
    let version = current_config_version(channel.clone()).await;
    wait_for_assign_version(channel, version).await;
}

/// The serving config version `ConfigService` answers with now.
pub async fn current_config_version(channel: Channel) -> u64 {
    v1::config_service_client::ConfigServiceClient::new(channel)
        .get_config_snapshot(v1::GetConfigSnapshotRequest::default())
        .await
        .expect("snapshot")
        .into_inner()
        .snapshot
        .expect("snapshot")
        .config_version
}

/// A PYTHONPATH under which `import {modules}` works: empty when the
/// environment has them, else `target/python-deps/<name>` after installing
/// the pinned `packages` there with pip (one directory per test binary, so
/// concurrent installs do not collide).
pub fn python_packages(name: &str, modules: &str, packages: &[&str]) -> String {
    use std::process::Command;
    let importable = |path: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {modules}")])
            .env("PYTHONPATH", path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if importable("") {
        return String::new();
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/python-deps")
        .join(name);
    let target = target.to_str().expect("utf-8").to_owned();
    if !importable(&target) {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                &target,
            ])
            .args(packages)
            .status()
            .expect("run pip");
        assert!(status.success(), "pip could not install {packages:?}");
    }
    assert!(
        importable(&target),
        "{modules} still not importable from {target}"
    );
    target
}

/// Assigns `users` users and returns each one's variant.
pub async fn assign_users(channel: Channel, prefix: &str, users: usize) -> Vec<(String, String)> {
    let mut assign =
        exp_proto::v1::assignment_service_client::AssignmentServiceClient::new(channel);
    let mut assigned = Vec::new();
    for index in 0..users {
        let user = format!("{prefix}-{index}");
        let answer = assign
            .assign(ymal_request(&user, &format!("s-{user}")))
            .await
            .expect("assign")
            .into_inner();
        if !answer.variant.is_empty() {
            assigned.push((user, answer.variant));
        }
    }
    assigned
}

/// An outcome of `user` on the seed's placement, just after now;
/// `index` tells a user's outcomes of one type apart.
pub fn outcome(user: &str, outcome_type: v1::OutcomeType, index: usize) -> v1::Outcome {
    v1::Outcome {
        event_id: format!("{user}-{}-{index}", outcome_type.as_str_name()),
        r#type: outcome_type as i32,
        user_id: user.into(),
        session_id: format!("s-{user}"),
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        item_id: "sku-1".into(),
        from_recommendation: true,
        quantity: 1,
        timestamp: Some(
            (std::time::SystemTime::now() + std::time::Duration::from_millis(5)).into(),
        ),
        ..Default::default()
    }
}

/// Logs `outcomes` in batches of 1,000; every one must be accepted.
pub async fn log_outcomes(channel: Channel, outcomes: Vec<v1::Outcome>) {
    let mut events = exp_proto::v1::event_service_client::EventServiceClient::new(channel);
    for batch in outcomes.chunks(1000) {
        let answer = events
            .log_outcomes(v1::LogOutcomesRequest {
                outcomes: batch.to_vec(),
            })
            .await
            .expect("log outcomes")
            .into_inner();
        assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
    }
}

/// The seed at 100% of traffic with a bounce-rate guardrail (5%) that
/// stops it.
pub fn bounce_guarded_seed() -> v1::Experiment {
    let mut experiment = seed_experiment();
    experiment.traffic_percent = 100;
    experiment.metrics = Some(v1::MetricsConfig {
        primary_metric: "add_to_cart_rate".into(),
        guardrails: vec![v1::Guardrail {
            metric: "bounce_rate".into(),
            threshold: 0.05,
            action: v1::GuardrailAction::Stop as i32,
        }],
        ..Default::default()
    });
    experiment
}

/// Page views of `assigned` users in which treatment bounces far more
/// often: one page view for 8 in 10 of its users, for 3 in 10 of
/// control's; three for the rest.
pub fn treatment_bounces(assigned: &[(String, String)]) -> Vec<v1::Outcome> {
    let mut outcomes = Vec::new();
    for (index, (user, variant)) in assigned.iter().enumerate() {
        let bounce_share = if variant == "treatment" { 8 } else { 3 };
        let pages = if index % 10 < bounce_share { 1 } else { 3 };
        for page in 0..pages {
            outcomes.push(outcome(user, v1::OutcomeType::PageView, page));
        }
    }
    outcomes
}

/// `GetResults` of `id` once `ready` holds: exposures and outcomes reach
/// the analysis through the event log asynchronously (and Assign's
/// exposures give the caller no log position to wait on), so this asks
/// again every 100 ms, for at most 30 s.
pub async fn results_when(
    channel: Channel,
    id: &str,
    ready: impl Fn(&v1::GetResultsResponse) -> bool,
) -> v1::GetResultsResponse {
    let mut results = exp_proto::v1::results_service_client::ResultsServiceClient::new(channel);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = results
            .get_results(v1::GetResultsRequest {
                experiment_id: id.into(),
                ..Default::default()
            })
            .await;
        match answer {
            Ok(answer) if ready(answer.get_ref()) => return answer.into_inner(),
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::Unavailable => {}
            Err(status) => panic!("GetResults: {status:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "results never got ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
