//! Command-line flags and their `EXPD_` environment variables.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

/// The services `expd` can run; `--services` picks any subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceKind {
    /// AdminService and ConfigService, on the config store.
    Admin,
    /// AssignmentService and the HTTP assignment gateway.
    Assign,
    /// EventService.
    Ingest,
    /// ResultsService.
    Results,
    /// The writer: partitions of the JetStream event stream into Parquet
    /// under `--data-dir` (with `--events-sink nats://`).
    Writer,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Flags of `expd`. Defaults run everything on loopback with data in
/// `./data`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "expd",
    version,
    about = "Experimentation service for recommendation teams"
)]
pub struct Config {
    /// Address of the gRPC server (every service, reflection, health).
    #[arg(long, env = "EXPD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP server (health; the JSON assignment gateway).
    #[arg(long, env = "EXPD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Directory of the sled store and other data.
    #[arg(long, env = "EXPD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// JSON file of bearer tokens with roles (viewer, editor). Without it
    /// admin calls are unauthenticated and expd binds only to loopback.
    #[arg(long, env = "EXPD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Services to run, comma-separated.
    #[arg(
        long,
        env = "EXPD_SERVICES",
        value_enum,
        value_delimiter = ',',
        default_value = "admin,assign,ingest,results"
    )]
    pub services: Vec<ServiceKind>,

    /// Log format.
    #[arg(long, env = "EXPD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// JSON parameter schema replacing the built-in one.
    #[arg(long, env = "EXPD_PARAM_SCHEMA")]
    pub param_schema: Option<PathBuf>,

    /// OTLP/gRPC collector for traces and metrics, e.g.
    /// http://127.0.0.1:4317. Unset: no export.
    #[arg(long, env = "EXPD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Longest a unary RPC may take before it is cancelled, e.g. `10s`.
    #[arg(long, env = "EXPD_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,

    /// Longest a request's headers and body may take to arrive, on both
    /// ports, e.g. `5s`; must be below `--request-timeout`. A stalled
    /// request holds no slot meanwhile and is then answered
    /// DEADLINE_EXCEEDED (gRPC) or 408 (HTTP).
    #[arg(long, env = "EXPD_READ_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub read_timeout: Duration,

    /// Open connections, both ports together; beyond it new ones are
    /// closed at once. Lowered at start to fit the open-file limit.
    #[arg(long, env = "EXPD_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    pub max_connections: u32,

    /// Open connections from one client address, both ports together;
    /// beyond it its new ones are closed at once. `0`: no per-address
    /// limit (behind a service mesh or a proxy that rewrites source
    /// addresses every client arrives from one address).
    #[arg(long, env = "EXPD_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_connections_per_client: u32,

    /// RPCs in flight at once; beyond it calls get RESOURCE_EXHAUSTED.
    #[arg(long, env = "EXPD_MAX_CONCURRENT_REQUESTS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_requests: u32,

    /// How long a graceful shutdown waits for in-flight calls, e.g. `10s`.
    #[arg(long, env = "EXPD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_positive_duration)]
    pub shutdown_grace: Duration,

    /// How often scheduled starts and ends are applied, e.g. `1s`.
    #[arg(long, env = "EXPD_SCHEDULER_TICK", default_value = "1s", value_parser = parse_positive_duration)]
    pub scheduler_tick: Duration,

    /// Serve assignment from this admin's ConfigService/WatchConfigs
    /// (sidecar mode, with `--services assign`), e.g.
    /// http://expd-admin:50051. The last known good config is kept in
    /// `--data-dir` and served while the admin is unreachable.
    #[arg(long, env = "EXPD_CONFIG_SOURCE", value_parser = parse_config_source)]
    pub config_source: Option<String>,

    /// The token this process presents to its config source (for
    /// WatchConfigs, and LogExposures of its exposures) when the admin has
    /// a tokens file: a `data_plane` token. Prefer the environment variable
    /// to the flag, which other users can read in the process list.
    #[arg(long, env = "EXPD_SOURCE_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub source_token: Option<String>,

    /// `--source-token` from a file (its first line), e.g. a mounted
    /// Kubernetes secret.
    #[arg(long, env = "EXPD_SOURCE_TOKEN_FILE", conflicts_with = "source_token")]
    pub source_token_file: Option<PathBuf>,

    /// Interval of WatchConfigs heartbeats, e.g. `10s`.
    #[arg(long, env = "EXPD_CONFIG_HEARTBEAT", default_value = "10s", value_parser = parse_positive_duration)]
    pub config_heartbeat: Duration,

    /// Most WatchConfigs streams one client address holds; more are
    /// refused with RESOURCE_EXHAUSTED. `0`: no per-address limit (as for
    /// `--max-connections-per-client`).
    #[arg(long, env = "EXPD_MAX_WATCHERS_PER_CLIENT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_watchers_per_client: u32,

    /// Most WatchConfigs streams open at once; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "EXPD_MAX_WATCHERS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_watchers: u32,

    /// Exposure records queued before new ones are dropped (assignment
    /// never waits for logging).
    #[arg(long, env = "EXPD_EXPOSURE_QUEUE", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub exposure_queue: u32,

    /// Most MiB a replica's or sidecar's unsent exposures may take on
    /// disk (`<data-dir>/spool/exposures`) while its `--config-source`
    /// cannot take them; beyond it new ones are dropped and counted. 0: no
    /// spool (unsent exposures are held in memory and lost at a restart).
    #[arg(long, env = "EXPD_EXPOSURE_SPOOL_MIB", default_value_t = 128, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub exposure_spool_mib: u32,

    /// Longest time an acknowledged event waits before it is rolled into
    /// a Parquet file under `<data-dir>/events`, e.g. `30s` (at most 1h).
    #[arg(long, env = "EXPD_EVENTS_FLUSH_INTERVAL", default_value = "30s", value_parser = parse_flush_interval)]
    pub events_flush_interval: Duration,

    /// Events accepted but not yet written before EventService pushes back
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, env = "EXPD_EVENTS_MAX_PENDING", default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(5_000..=10_000_000))]
    pub events_max_pending: u32,

    /// How long an event id is remembered, so a retry is counted once, e.g.
    /// `24h` (at least 24h).
    #[arg(long, env = "EXPD_EVENTS_DEDUP_WINDOW", default_value = "24h", value_parser = parse_dedup_window)]
    pub events_dedup_window: Duration,

    /// How often the guardrail monitor judges every running experiment's
    /// guardrails, e.g. `10s` (1s to 1h).
    #[arg(long, env = "EXPD_GUARDRAIL_INTERVAL", default_value = "1m", value_parser = parse_guardrail_interval)]
    pub guardrail_interval: Duration,

    /// Where acknowledged events go. Unset: the embedded log under
    /// `--data-dir` (one machine). `nats://HOST:PORT[,HOST:PORT...]` (or
    /// `tls://`): a NATS JetStream stream, created if absent;
    /// EventService and Assign (replicas and sidecars too) publish to it,
    /// `--services writer` turns it into Parquet, results follow it.
    #[arg(long, env = "EXPD_EVENTS_SINK", value_parser = parse_events_sink)]
    pub events_sink: Option<NatsServers>,

    /// A NATS credentials file (`.creds`: JWT and NKey seed).
    #[arg(long, env = "EXPD_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// A NATS user (with `--nats-password`).
    #[arg(long, env = "EXPD_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// The NATS user's password; prefer the environment variable.
    #[arg(
        long,
        env = "EXPD_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,

    /// A NATS token; prefer the environment variable.
    #[arg(long, env = "EXPD_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// A CA certificate (PEM) for NATS servers with TLS.
    #[arg(long, env = "EXPD_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// The JetStream stream of events.
    #[arg(long, env = "EXPD_NATS_STREAM", default_value = "EXPD_EVENTS", value_parser = exp_ingest::jetstream::parse_stream_name)]
    pub nats_stream: String,

    /// Copies of each event in the stream, when `expd` creates it (3 in a
    /// three-node cluster: one node may be lost).
    #[arg(long, env = "EXPD_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,

    /// How long the stream keeps an event, when `expd` creates it, e.g.
    /// `90d`. Results are rebuilt from the stream: keep it longer than an
    /// experiment runs.
    #[arg(long, env = "EXPD_NATS_MAX_AGE", default_value = "90d", value_parser = parse_positive_duration)]
    pub nats_max_age: Duration,

    /// How long JetStream remembers an event id (its duplicate window),
    /// when `expd` creates the stream, e.g. `10m`. Ids are kept in the
    /// servers' memory; results and the writer also drop repeats within
    /// `--events-dedup-window`.
    #[arg(long, env = "EXPD_NATS_DUPLICATE_WINDOW", default_value = "10m", value_parser = parse_positive_duration)]
    pub nats_duplicate_window: Duration,

    /// The stream's partitions this writer owns (`--services writer`),
    /// e.g. `0-7` or `0,4,8,12`, of 0 to 15. Each partition must have one
    /// writer at a time.
    #[arg(long, env = "EXPD_WRITER_PARTITIONS", default_value = "0-15", value_parser = parse_writer_partitions)]
    pub writer_partitions: WriterPartitions,

    /// Allow binding to a non-loopback address without --tokens-file
    /// (anyone who can reach the port may change experiments).
    #[arg(long, env = "EXPD_ALLOW_INSECURE_REMOTE")]
    pub allow_insecure_remote: bool,
}

impl Config {
    /// Whether `kind` is among `--services`.
    pub fn runs(&self, kind: ServiceKind) -> bool {
        self.services.contains(&kind)
    }

    /// Checks what flags alone cannot: the loopback rule.
    pub fn check(&self) -> Result<(), String> {
        if self.services.is_empty() {
            return Err(
                "--services: name at least one of admin, assign, ingest, results, writer".into(),
            );
        }
        if self.runs(ServiceKind::Ingest) && !self.runs(ServiceKind::Admin) {
            return Err(
                "--services ingest checks exposures against the admin's experiments; run it \
                 in the admin's process (`--services admin,ingest`)"
                    .into(),
            );
        }
        let nats = self.events_sink.is_some();
        let nats_flags = [
            ("--nats-creds", self.nats_creds.is_some()),
            ("--nats-user", self.nats_user.is_some()),
            ("--nats-token", self.nats_token.is_some()),
            ("--nats-tls-ca", self.nats_tls_ca.is_some()),
        ];
        if let Some((flag, _)) = nats_flags.iter().find(|(_, given)| *given && !nats) {
            return Err(format!(
                "{flag} is how this process reaches NATS; give --events-sink nats://... too, or drop it"
            ));
        }
        if self.runs(ServiceKind::Writer) && !nats {
            return Err(
                "--services writer turns the JetStream event stream into Parquet; give \
                 --events-sink nats://HOST:PORT"
                    .into(),
            );
        }
        if self.runs(ServiceKind::Results) && nats && !self.runs(ServiceKind::Admin) {
            return Err(
                "--services results reads experiments from the admin's store; run it with \
                 the admin (`--services admin,results`)"
                    .into(),
            );
        }
        if self.runs(ServiceKind::Results) && !nats && !self.runs(ServiceKind::Ingest) {
            return Err(
                "--services results reads the event log of its own process; run it with \
                 ingest and the admin (`--services admin,ingest,results`), or follow a \
                 JetStream stream with --events-sink nats://..."
                    .into(),
            );
        }
        if (self.source_token.is_some() || self.source_token_file.is_some())
            && self.config_source.is_none()
        {
            return Err(
                "--source-token is what this process presents to its --config-source; give that \
                 too, or drop the token"
                    .into(),
            );
        }
        if self.read_timeout >= self.request_timeout {
            return Err(format!(
                "--read-timeout ({:?}) must be below --request-timeout ({:?}): a request that \
                 arrives late must still have time to run",
                self.read_timeout, self.request_timeout
            ));
        }
        if self.max_connections_per_client > self.max_connections {
            return Err(format!(
                "--max-connections-per-client ({}) cannot exceed --max-connections ({})",
                self.max_connections_per_client, self.max_connections
            ));
        }
        if self.config_source.is_some() && self.runs(ServiceKind::Admin) {
            return Err(
                "--config-source makes assignment follow a remote admin; it cannot be combined \
                 with --services admin (run `--services assign`)"
                    .into(),
            );
        }
        // Tokens guard the admin RPCs; an assign-only process (a replica or
        // sidecar) serves the data plane and may bind anywhere.
        if self.runs(ServiceKind::Admin)
            && self.tokens_file.is_none()
            && !self.allow_insecure_remote
        {
            for (flag, addr) in [
                ("--grpc-addr", self.grpc_addr),
                ("--http-addr", self.http_addr),
            ] {
                if !is_loopback(addr.ip()) {
                    return Err(format!(
                        "{flag} {addr}: without --tokens-file expd binds only to loopback \
                         (127.0.0.1 or ::1); configure tokens, or pass --allow-insecure-remote \
                         to accept unauthenticated changes from the network"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// The token to present to `--config-source`: `--source-token`, or
    /// the first line of `--source-token-file` (read now).
    pub fn source_token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.source_token_file else {
            return Ok(self.source_token.clone());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("--source-token-file {}: {err}", path.display()))?;
        let token = text.lines().next().unwrap_or_default().trim();
        parse_token(token)
            .map(Some)
            .map_err(|reason| format!("--source-token-file {}: the token {reason}", path.display()))
    }
}

/// Whether `ip` is loopback, an IPv4 address mapped into IPv6
/// (`::ffff:127.0.0.1`) included.
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
    }
}

fn parse_token(text: &str) -> Result<String, String> {
    if text.len() < 16 || !text.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err("must be at least 16 printable ASCII characters without spaces".into());
    }
    Ok(text.to_owned())
}

fn parse_config_source(text: &str) -> Result<String, String> {
    if !(text.starts_with("http://") || text.starts_with("https://"))
        || text.len() <= "http://".len()
    {
        return Err(format!(
            "{text:?}: expected an http:// or https:// URL of an expd admin, e.g. http://expd-admin:50051"
        ));
    }
    Ok(text.to_owned())
}

/// The servers of `--events-sink`.
#[derive(Debug, Clone)]
pub struct NatsServers(pub Vec<exp_ingest::jetstream::ServerAddr>);

/// The partitions of `--writer-partitions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterPartitions(pub Vec<u32>);

fn parse_writer_partitions(text: &str) -> Result<WriterPartitions, String> {
    exp_ingest::jetstream::parse_partitions(text).map(WriterPartitions)
}

fn parse_events_sink(text: &str) -> Result<NatsServers, String> {
    exp_ingest::jetstream::parse_servers(text).map(NatsServers)
}

fn parse_flush_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_positive_duration(text)?;
    if interval > Duration::from_secs(3600) {
        return Err(format!("{text:?}: at most 1h"));
    }
    Ok(interval)
}

fn parse_guardrail_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_positive_duration(text)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&interval) {
        return Err(format!("{text:?}: between 1s and 1h"));
    }
    Ok(interval)
}

fn parse_dedup_window(text: &str) -> Result<Duration, String> {
    let window = parse_positive_duration(text)?;
    if window < Duration::from_secs(24 * 3600) {
        return Err(format!(
            "{text:?}: at least 24h (retries can come a day later)"
        ));
    }
    Ok(window)
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|err| format!("{text:?}: {err} (e.g. 500ms, 10s, 1m)"))?;
    if duration.is_zero() {
        return Err(format!("{text:?}: must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("expd").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_serve_everything_on_loopback_from_data() {
        let config = parse(&[]).expect("defaults parse");
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.services.len(), 4);
        assert!(config.check().is_ok());
    }

    #[test]
    fn non_loopback_without_tokens_is_refused_unless_allowed() {
        let config = parse(&["--grpc-addr", "0.0.0.0:50051"]).expect("parses");
        let refusal = config.check().expect_err("refused");
        assert!(refusal.contains("--grpc-addr 0.0.0.0:50051"), "{refusal}");
        let allowed =
            parse(&["--grpc-addr", "0.0.0.0:50051", "--allow-insecure-remote"]).expect("parses");
        assert!(allowed.check().is_ok());
        let with_tokens = parse(&[
            "--http-addr",
            "0.0.0.0:8080",
            "--tokens-file",
            "tokens.json",
        ])
        .expect("parses");
        assert!(with_tokens.check().is_ok());
    }

    #[test]
    fn an_ipv4_address_mapped_into_ipv6_is_loopback_when_its_ipv4_is() {
        let mapped = parse(&["--grpc-addr", "[::ffff:127.0.0.1]:50051"]).expect("parses");
        assert!(mapped.check().is_ok());
        let remote = parse(&["--grpc-addr", "[::ffff:10.0.0.7]:50051"]).expect("parses");
        assert!(remote.check().is_err());
    }

    #[test]
    fn a_source_token_needs_a_config_source_and_printable_ascii() {
        let orphan = parse(&[
            "--services",
            "assign",
            "--source-token",
            "data-plane-token-0123456",
        ])
        .expect("parses");
        assert!(
            orphan
                .check()
                .expect_err("no source")
                .contains("--config-source")
        );
        assert!(parse(&["--source-token", "short"]).is_err());
        let sidecar = parse(&[
            "--services",
            "assign",
            "--config-source",
            "http://expd-admin:50051",
            "--source-token",
            "data-plane-token-0123456",
        ])
        .expect("parses");
        assert!(sidecar.check().is_ok());
    }

    #[test]
    fn a_source_token_file_gives_its_first_line_and_a_bad_one_names_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("token");
        std::fs::write(&file, "data-plane-token-0123456\n").expect("write");
        let path = file.to_str().expect("utf-8");
        let args = [
            "--services",
            "assign",
            "--config-source",
            "http://expd-admin:50051",
            "--source-token-file",
            path,
        ];
        let config = parse(&args).expect("parses");
        assert_eq!(
            config.source_token(),
            Ok(Some("data-plane-token-0123456".to_owned()))
        );
        std::fs::write(&file, "short\n").expect("write");
        assert!(
            config
                .source_token()
                .expect_err("too short")
                .contains("--source-token-file")
        );
        let both = [&args[..], &["--source-token", "data-plane-token-0123456"]].concat();
        assert!(parse(&both).is_err(), "one or the other");
    }

    #[test]
    fn an_assign_only_process_may_bind_beyond_loopback_without_tokens() {
        let sidecar = parse(&[
            "--services",
            "assign",
            "--grpc-addr",
            "0.0.0.0:50051",
            "--config-source",
            "http://expd-admin:50051",
        ])
        .expect("parses");
        assert!(sidecar.check().is_ok());
        let with_admin =
            parse(&["--services", "admin,assign", "--grpc-addr", "0.0.0.0:50051"]).expect("parses");
        assert!(with_admin.check().is_err());
        let both = parse(&["--config-source", "http://a:1"]).expect("parses");
        assert!(
            both.check()
                .expect_err("admin and a config source")
                .contains("--config-source")
        );
        assert!(
            parse(&["--config-source", "expd-admin:50051"]).is_err(),
            "not a URL"
        );
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_reason() {
        let err = parse(&["--request-timeout", "0s"])
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("--request-timeout") && err.contains("longer than zero"),
            "{err}"
        );
        let err = parse(&["--services", "admin,billing"])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("billing"), "{err}");
        let err = parse(&["--max-concurrent-requests", "0"])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("--max-concurrent-requests"), "{err}");
    }

    #[test]
    fn event_flags_bound_the_flush_interval_and_the_dedup_window() {
        let defaults = parse(&[]).expect("defaults");
        assert!(defaults.events_flush_interval <= Duration::from_secs(60));
        assert_eq!(defaults.events_dedup_window, Duration::from_secs(24 * 3600));
        assert_eq!(
            parse(&["--events-flush-interval", "5s"])
                .expect("parses")
                .events_flush_interval,
            Duration::from_secs(5)
        );
        let err = parse(&["--events-flush-interval", "2h"])
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("--events-flush-interval") && err.contains("at most 1h"),
            "{err}"
        );
        let err = parse(&["--events-dedup-window", "12h"])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("at least 24h"), "{err}");
    }

    #[test]
    fn the_exposure_spool_is_bounded_in_mib_and_zero_turns_it_off() {
        assert_eq!(parse(&[]).expect("defaults").exposure_spool_mib, 128);
        assert_eq!(
            parse(&["--exposure-spool-mib", "0"])
                .expect("parses")
                .exposure_spool_mib,
            0
        );
        for bad in ["-1", "2000000", "1GiB"] {
            let err = parse(&[&format!("--exposure-spool-mib={bad}")])
                .expect_err("refused")
                .to_string();
            assert!(
                err.contains("--exposure-spool-mib") && err.contains(bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn ingest_runs_beside_the_admin_whose_experiments_it_checks() {
        let alone = parse(&["--services", "ingest"]).expect("parses");
        assert!(
            alone
                .check()
                .expect_err("refused")
                .contains("--services admin,ingest")
        );
        assert!(
            parse(&["--services", "admin,ingest"])
                .expect("parses")
                .check()
                .is_ok()
        );
    }

    #[test]
    fn nats_roles_and_flags_need_an_events_sink_and_name_what_is_missing() {
        let writer = parse(&["--services", "writer"]).expect("parses");
        let refusal = writer.check().expect_err("no sink");
        assert!(refusal.contains("--events-sink nats://"), "{refusal}");
        assert!(
            !refusal.contains("  "),
            "one space between words: {refusal}"
        );
        let orphan_creds = parse(&["--nats-creds", "x.creds"]).expect("parses");
        assert!(
            orphan_creds
                .check()
                .expect_err("no sink")
                .starts_with("--nats-creds")
        );
        let writer = parse(&[
            "--services",
            "writer",
            "--events-sink",
            "nats://n1:4222,n2:4222",
            "--writer-partitions",
            "0-7",
        ])
        .expect("parses");
        assert!(writer.check().is_ok());
        assert_eq!(writer.writer_partitions.0, (0..8).collect::<Vec<u32>>());
        assert_eq!(writer.events_sink.expect("a sink").0.len(), 2);
        // Results follow the stream beside the admin, without ingest.
        let results = parse(&[
            "--services",
            "admin,results",
            "--events-sink",
            "nats://n1:4222",
        ])
        .expect("parses");
        assert!(results.check().is_ok());
        let alone =
            parse(&["--services", "results", "--events-sink", "nats://n1:4222"]).expect("parses");
        assert!(
            alone
                .check()
                .expect_err("no admin")
                .contains("admin,results")
        );
        for (flag, bad) in [
            ("--events-sink", "http://n1:4222"),
            ("--writer-partitions", "0-16"),
            ("--nats-replicas", "7"),
            ("--nats-stream", "a.b"),
        ] {
            let err = parse(&[flag, bad]).expect_err("refused").to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
        let user = parse(&["--nats-user", "expd"]).expect_err("needs a password");
        assert!(user.to_string().contains("--nats-password"), "{user}");
    }
}
