//! Events on NATS JetStream, for deployments past one machine
//! (`--events-sink nats://...`). JetStream is the replicated log (Raft,
//! `--nats-replicas`); `expd` publishes to it, turns it into Parquet, and
//! follows it for results. Nothing here is a log of our own.
//!
//! ```text
//! EventService, Assign's exposure feed ──publish, wait for the ack──> stream EXPD_EVENTS
//!     (any process, replicas and sidecars too)                         subjects expd.events.<partition>.<kind>.<key>
//!                                                                        │                 │
//!            writer role: one durable pull consumer per partition <─────┘                 └──> results: an ordered consumer
//!            -> the embedded event log (dedup by id, fsync) -> ack                              from the start (positions are
//!            -> the same hourly Parquet partitions as today                                     stream sequences)
//! ```
//!
//! - **Subjects.** `expd.events.<partition>.exposure.<experiment_id>` and
//!   `expd.events.<partition>.outcome.<type>` (`add_to_cart`, ...): a
//!   consumer selects an experiment's exposures with
//!   `expd.events.*.exposure.<experiment_id>`, purchases with
//!   `expd.events.*.outcome.purchase`. The partition (0 to
//!   [`PARTITIONS`] - 1) is a hash of the event's kind and id, so a retry
//!   lands in the same one; it is what writers divide between them.
//! - **Messages** are `experiments.v1.Exposure` and `experiments.v1.Outcome`
//!   in their protobuf encoding (the shared schema), with the event id in
//!   `Nats-Msg-Id`: JetStream drops a retry within its duplicate window.
//! - **Acked means replicated**: an OK goes back only after JetStream's
//!   publish acknowledgement, which the stream's leader sends once a
//!   quorum of its replicas has the message.
//!
//! # Layout
//!
//! - this module: connection options, the connection and its state, the
//!   stream's creation, subjects and the message format;
//! - [`publish`]: [`StreamPublisher`], publishing a batch and waiting for
//!   every acknowledgement (`EventService`, and Assign's [`StreamSink`]);
//! - [`writer`]: the writer role, partitions of the stream into Parquet
//!   exactly once;
//! - [`claim`]: one writer per partition, by claims in a key-value bucket;
//! - [`follow`]: [`StreamSource`], the stream read in order from the
//!   start, as results read the embedded log.

pub mod claim;
pub mod follow;
pub mod publish;
pub mod writer;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use async_nats::ServerAddr;
use async_nats::jetstream;
use exp_core::event::{Event, EventKind};
use exp_proto::events::{decode_exposure, decode_outcome, encode_exposure, encode_outcome};
use prost::bytes::Bytes;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::dedup::digest;

pub use follow::{StreamCursor, StreamSource};
pub use publish::{PublishError, Published, StreamPublisher, StreamSink};
pub use writer::{WriterOptions, WriterStats};

/// Partitions of the stream's subjects: at most this many writers share
/// the work. Fixed, so every publisher and writer agrees without asking.
pub const PARTITIONS: u32 = 16;
/// The first tokens of every subject.
pub const SUBJECT_ROOT: &str = "expd.events";

/// How to reach NATS, and the stream the admin creates if it is absent.
#[derive(Clone)]
pub struct NatsOptions {
    /// The servers, e.g. `nats://nats-0:4222`; the client finds the rest
    /// of a cluster from them.
    pub servers: Vec<ServerAddr>,
    /// A `.creds` file (JWT and NKey seed), as `nats context` makes.
    pub credentials_file: Option<PathBuf>,
    /// User and password.
    pub user_password: Option<(String, String)>,
    /// A token.
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust, for servers with TLS.
    pub tls_ca: Option<PathBuf>,
    /// The name this connection shows in the server's monitoring.
    pub client_name: String,
    /// The stream.
    pub stream: StreamOptions,
}

impl std::fmt::Debug for NatsOptions {
    /// Credentials are not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |given: bool| if given { "<hidden>" } else { "none" };
        f.debug_struct("NatsOptions")
            .field("servers", &self.servers)
            .field("credentials_file", &self.credentials_file)
            .field(
                "user",
                &self.user_password.as_ref().map(|(user, _)| user.as_str()),
            )
            .field("password", &hidden(self.user_password.is_some()))
            .field("token", &hidden(self.token.is_some()))
            .field("tls_ca", &self.tls_ca)
            .field("client_name", &self.client_name)
            .field("stream", &self.stream)
            .finish()
    }
}

/// The stream's settings, applied when `expd` creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// Its name.
    pub name: String,
    /// Copies of each message (1, 3 or 5 in a cluster).
    pub replicas: usize,
    /// How long a message is kept (zero: until `max_bytes`).
    pub max_age: Duration,
    /// Most bytes kept (zero: no limit); the oldest are dropped beyond.
    pub max_bytes: u64,
    /// How long JetStream remembers a message id, so a retry within it
    /// is answered as a duplicate.
    pub duplicate_window: Duration,
}

/// What went wrong talking to NATS.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NatsError {
    /// A credentials or CA file could not be read.
    #[error("{flag} {path}: {reason}")]
    File {
        /// The flag naming the file.
        flag: &'static str,
        /// The path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The client could not be set up.
    #[error("NATS client: {0}")]
    Client(String),
    /// A JetStream request failed.
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// A connection to NATS with JetStream, and whether it is up.
#[derive(Debug, Clone)]
pub struct Nats {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: StreamOptions,
    connected: watch::Receiver<bool>,
    /// The last error the client met connecting (a refused password, a
    /// certificate), until it connects.
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    servers: String,
}

/// How long a JetStream request or a publish acknowledgement may take.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt to connect to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Nats {
    /// Starts connecting to `options.servers` and returns at once: the
    /// client connects (and reconnects) in the background, so `expd`
    /// starts, and assignment serves, while NATS is down.
    pub async fn connect(options: &NatsOptions) -> Result<Arc<Self>, NatsError> {
        let (state, connected) = watch::channel(false);
        let servers = options
            .servers
            .iter()
            .map(|server| format!("{}:{}", server.host(), server.port()))
            .collect::<Vec<_>>()
            .join(",");
        let mut connect = async_nats::ConnectOptions::new();
        if let Some(path) = &options.credentials_file {
            connect = connect
                .credentials_file(path)
                .await
                .map_err(|err| NatsError::File {
                    flag: "--nats-creds",
                    path: path.display().to_string(),
                    reason: err.to_string(),
                })?;
        }
        if let Some((user, password)) = &options.user_password {
            connect = connect.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &options.token {
            connect = connect.token(token.clone());
        }
        if let Some(path) = &options.tls_ca {
            std::fs::metadata(path).map_err(|err| NatsError::File {
                flag: "--nats-tls-ca",
                path: path.display().to_string(),
                reason: err.to_string(),
            })?;
            connect = connect
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        let watched = servers.clone();
        let last_error = Arc::new(std::sync::Mutex::new(None::<String>));
        let errors = last_error.clone();
        let client = connect
            .name(&options.client_name)
            .connection_timeout(CONNECT_TIMEOUT)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let (state, servers, errors) = (state.clone(), watched.clone(), errors.clone());
                async move {
                    let mut last_error = errors.lock().unwrap_or_else(|p| p.into_inner());
                    match event {
                        async_nats::Event::Connected => {
                            info!(%servers, "connected to NATS");
                            *last_error = None;
                            state.send_replace(true);
                        }
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            warn!(%servers, "NATS is unreachable: EventService answers UNAVAILABLE and exposures are dropped (counted) until it is back");
                            state.send_replace(false);
                        }
                        // Each failed attempt to connect: logged when it
                        // says something new (a refused password, a
                        // certificate, a server down), and kept for
                        // /readyz.
                        async_nats::Event::ClientError(error) => {
                            let error = error.to_string();
                            if last_error.as_deref() != Some(error.as_str()) {
                                warn!(%servers, %error, "cannot connect to NATS (check --events-sink and the --nats-* credentials)");
                            }
                            *last_error = Some(error);
                        }
                        other => warn!(%servers, event = %other, "NATS"),
                    }
                }
            })
            .connect(options.servers.as_slice())
            .await
            .map_err(|err| NatsError::Client(err.to_string()))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(JETSTREAM_TIMEOUT)
            .ack_timeout(JETSTREAM_TIMEOUT)
            .build(client.clone());
        Ok(Arc::new(Self {
            client,
            jetstream,
            stream: options.stream.clone(),
            connected,
            last_error,
            servers,
        }))
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The connection's state as it changes.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// The last error met connecting, while not connected.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The servers, as given.
    pub fn servers(&self) -> &str {
        &self.servers
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream.name
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The stream, looked up (writers, results, replicas): it is an error
    /// until the admin has created it.
    pub async fn stream(&self) -> Result<jetstream::stream::Stream, NatsError> {
        self.jetstream
            .get_stream(&self.stream.name)
            .await
            .map_err(|err| {
                NatsError::JetStream(format!(
                    "stream {}: {err} (the admin, `--services admin` with --events-sink, \
                     creates it; or create it with `nats stream add`)",
                    self.stream.name
                ))
            })
    }

    /// Creates the stream with [`StreamOptions`] if it is absent: the
    /// admin's process does, once at start. An existing stream is used as
    /// it is; settings that differ from the flags are logged, not changed
    /// (a stream's replicas and limits are an operator's decision).
    pub async fn create_stream(&self) -> Result<jetstream::stream::Stream, NatsError> {
        let options = &self.stream;
        let config = jetstream::stream::Config {
            name: options.name.clone(),
            description: Some(format!(
                "expd exposures and outcomes: {SUBJECT_ROOT}.<partition>.<kind>.<experiment or type>, \
                 experiments.v1 protobuf"
            )),
            subjects: vec![format!("{SUBJECT_ROOT}.>")],
            num_replicas: options.replicas,
            max_age: options.max_age,
            max_bytes: i64::try_from(options.max_bytes)
                .ok()
                .filter(|bytes| *bytes > 0)
                .unwrap_or(-1),
            duplicate_window: options.duplicate_window,
            ..Default::default()
        };
        let mut stream = self
            .jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|err| NatsError::JetStream(format!("stream {}: {err}", options.name)))?;
        let found = &stream
            .info()
            .await
            .map_err(|err| NatsError::JetStream(format!("stream {}: {err}", options.name)))?
            .config;
        for (flag, wanted, has) in [
            (
                "--nats-replicas",
                options.replicas.to_string(),
                found.num_replicas.to_string(),
            ),
            (
                "--nats-max-age",
                format!("{:?}", options.max_age),
                format!("{:?}", found.max_age),
            ),
            (
                "--nats-duplicate-window",
                format!("{:?}", options.duplicate_window),
                format!("{:?}", found.duplicate_window),
            ),
        ] {
            if wanted != has {
                warn!(
                    stream = %options.name, flag, wanted, has,
                    "the stream exists with another setting; it is used as it is (change it with `nats stream edit`)"
                );
            }
        }
        Ok(stream)
    }
}

/// `--events-sink nats://HOST:PORT[,HOST:PORT...]`: the servers, each
/// checked (`nats://`, or `tls://` for TLS; the port defaults to 4222).
pub fn parse_servers(text: &str) -> Result<Vec<ServerAddr>, String> {
    let mut servers = Vec::new();
    for (index, part) in text.split(',').enumerate() {
        let part = part.trim();
        // Later entries may leave out the scheme of the first.
        let url = if index > 0 && !part.contains("://") {
            let scheme = text.split("://").next().unwrap_or("nats");
            format!("{scheme}://{part}")
        } else {
            part.to_owned()
        };
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(format!(
                "{part:?}: expected nats://HOST:PORT or tls://HOST:PORT, e.g. nats://nats-0:4222,nats-1:4222"
            ));
        }
        let server: ServerAddr = url
            .parse()
            .map_err(|err| format!("{part:?}: not a NATS server address: {err}"))?;
        if server.host().is_empty() {
            return Err(format!("{part:?}: no host"));
        }
        servers.push(server);
    }
    Ok(servers)
}

/// `--writer-partitions`: partitions as a list and ranges (`0-7`,
/// `0,4,8,12`), each below [`PARTITIONS`], none twice.
pub fn parse_partitions(text: &str) -> Result<Vec<u32>, String> {
    let mut partitions = Vec::new();
    for part in text.split(',').map(str::trim) {
        let number = |text: &str| -> Result<u32, String> {
            let value: u32 = text
                .trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a partition number"))?;
            if value >= PARTITIONS {
                return Err(format!(
                    "partition {value}: partitions are 0 to {}",
                    PARTITIONS - 1
                ));
            }
            Ok(value)
        };
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => (number(part)?, number(part)?),
        };
        if first > last {
            return Err(format!("{part:?}: a range goes up"));
        }
        for partition in first..=last {
            if partitions.contains(&partition) {
                return Err(format!("partition {partition} is named twice"));
            }
            partitions.push(partition);
        }
    }
    partitions.sort_unstable();
    Ok(partitions)
}

/// `--nats-stream`: a JetStream stream name (no spaces, `.`, `*`, `>`,
/// path separators; at most 255 characters).
pub fn parse_stream_name(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text.len() > 255
        || !text
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(format!(
            "{text:?}: a stream name is 1 to 255 printable characters without . * > / or \\"
        ));
    }
    Ok(text.to_owned())
}

/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait after failures.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sleeps `backoff`, then doubles it up to [`MAX_BACKOFF`]; `false` if
/// `stop` is cancelled first.
pub(crate) async fn back_off(
    backoff: &mut Duration,
    stop: &tokio_util::sync::CancellationToken,
) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = stop.cancelled() => false,
    }
}

/// The partition of an event: a hash of its kind and id.
pub fn partition_of(event: &Event) -> u32 {
    (digest(event.kind(), event.event_id()) % u128::from(PARTITIONS)) as u32
}

/// The subject an event is published on.
pub fn subject(event: &Event) -> String {
    let partition = partition_of(event);
    match event {
        Event::Exposure(exposure) => format!(
            "{SUBJECT_ROOT}.{partition}.exposure.{}",
            subject_token(&exposure.experiment_id)
        ),
        Event::Outcome(outcome) => format!(
            "{SUBJECT_ROOT}.{partition}.outcome.{}",
            exp_proto::events::outcome_type_name(outcome.outcome_type)
        ),
    }
}

/// The subjects of one partition.
pub fn partition_subjects(partition: u32) -> String {
    format!("{SUBJECT_ROOT}.{partition}.>")
}

/// A subject token for `text`: itself when it is one (experiment ids are
/// lowercase letters, digits, `-` and `_`), else with every character a
/// token cannot hold replaced by `_`.
fn subject_token(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `Nats-Msg-Id` of an event: its kind and id (a printable id as it
/// is, any other as the hex of its digest).
pub fn message_id(event: &Event) -> String {
    let kind = kind_token(event.kind());
    let id = event.event_id();
    if id.bytes().all(|byte| byte.is_ascii_graphic()) {
        format!("{kind}:{id}")
    } else {
        format!("{kind}:#{:032x}", digest(event.kind(), id))
    }
}

/// The protobuf encoding of an event, the message's payload.
pub fn encode(event: &Event) -> Bytes {
    let mut buffer = Vec::with_capacity(256);
    match event {
        Event::Exposure(exposure) => encode_exposure(exposure, &mut buffer),
        Event::Outcome(outcome) => encode_outcome(outcome, &mut buffer),
    }
    Bytes::from(buffer)
}

/// The event a message of `subject` holds.
pub fn decode(subject: &str, payload: &[u8]) -> Result<Event, String> {
    let kind = subject
        .strip_prefix(SUBJECT_ROOT)
        .and_then(|rest| rest.split('.').nth(2))
        .ok_or_else(|| format!("subject {subject:?} is not {SUBJECT_ROOT}.<partition>.<kind>.*"))?;
    match kind {
        "exposure" => decode_exposure(payload)
            .map(Event::Exposure)
            .map_err(|err| err.to_string()),
        "outcome" => decode_outcome(payload)
            .map(Event::Outcome)
            .map_err(|err| err.to_string()),
        other => Err(format!("subject {subject:?}: unknown kind {other:?}")),
    }
}

fn kind_token(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Exposure => "exposure",
        EventKind::Outcome => "outcome",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::click;

    #[test]
    fn an_event_round_trips_through_its_subject_and_payload() {
        let event: Event = click("c-1").into();
        let subject = subject(&event);
        assert!(
            subject.starts_with("expd.events.") && subject.ends_with(".outcome.click"),
            "{subject}"
        );
        assert_eq!(decode(&subject, &encode(&event)), Ok(event.clone()));
        assert_eq!(message_id(&event), "outcome:c-1");
        let partition: u32 = subject
            .split('.')
            .nth(2)
            .expect("parses")
            .parse()
            .expect("parses");
        assert!(partition < PARTITIONS);
        assert_eq!(
            partition,
            partition_of(&event),
            "a retry lands in the same partition"
        );
    }

    #[test]
    fn flags_name_servers_partitions_and_streams_or_say_what_is_wrong() {
        let servers = parse_servers("nats://a:4222,b:4223").expect("two servers");
        assert_eq!(servers.len(), 2);
        assert_eq!((servers[1].host(), servers[1].port()), ("b", 4223));
        assert!(
            parse_servers("http://a:4222")
                .expect_err("refused")
                .contains("nats://")
        );
        assert!(parse_servers("nats://").is_err());
        assert_eq!(
            parse_partitions("0-3,8").expect("parses"),
            vec![0, 1, 2, 3, 8]
        );
        assert!(
            parse_partitions("16")
                .expect_err("refused")
                .contains("0 to 15")
        );
        assert!(
            parse_partitions("3,1-4")
                .expect_err("refused")
                .contains("twice")
        );
        assert!(parse_partitions("5-2").is_err());
        assert!(parse_partitions("x").is_err());
        assert_eq!(
            parse_stream_name("EXPD_EVENTS").expect("parses"),
            "EXPD_EVENTS"
        );
        for bad in ["", "a.b", "a b", "a>"] {
            assert!(parse_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_and_keys_a_subject_or_header_cannot_hold_are_made_safe() {
        assert_eq!(subject_token("exp.a*b>c d"), "exp_a_b_c_d");
        let mut outcome = click("x");
        outcome.event_id = "two words\n".into();
        let id = message_id(&outcome.into());
        assert!(
            id.starts_with("outcome:#") && id.len() == "outcome:#".len() + 32,
            "{id}"
        );
        assert!(decode("other.subject", b"").is_err());
        assert!(
            decode("expd.events.3.refund.x", b"")
                .expect_err("refused")
                .contains("refund")
        );
    }
}
