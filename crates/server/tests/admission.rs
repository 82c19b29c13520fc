//! What a call must show before it runs, against a real `expd`.
//!
//! No client holds what others need. From `127.0.0.2`, one client opens
//! 5,000 gRPC calls whose body never comes and 3,000 HTTP connections
//! that send headers and never their body; meanwhile a client on
//! `127.0.0.1` calls `Assign` and `GetExperiment` (on a channel opened
//! before, and on fresh ones) and `GET /healthz`, and every one of its
//! calls succeeds within the request timeout. The stalled calls hold no
//! concurrency slot: they are answered DEADLINE_EXCEEDED once the read
//! timeout passes; the client's connections past its share are closed at
//! once, and those admitted are answered 408.
//!
//! Codes as documented: bytes that are no protobuf message are
//! INVALID_ARGUMENT, a request over its method's limit OUT_OF_RANGE.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    task::JoinSet,
};
use tonic::transport::Channel;

const STALLED_CALLS: usize = 5_000;
const CALLS_PER_CONNECTION: usize = 100;
const STALLED_HTTP: usize = 3_000;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const PER_CLIENT: usize = 256;

mod common;

use common::{Expd, http_get, start_quiet, wait_until_assigned};

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect")
}

/// A socket from the attacking client's address.
async fn from_attacker(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse().expect("addr"))?;
    socket.connect(addr).await
}

/// Opens `STALLED_CALLS` `Assign` calls over HTTP/2 that never send their
/// body; each task answers the call's grpc-status and when it came.
/// How a stalled call ended: its grpc-status, or the stream reset by the
/// server (either frees it), and after how long.
type Ended = (Result<String, String>, Duration);

async fn stall_grpc(addr: SocketAddr, answers: &mut JoinSet<Ended>) -> usize {
    let mut opened = 0;
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..STALLED_CALLS / CALLS_PER_CONNECTION {
        let stream = from_attacker(addr).await.expect("attacker connects");
        let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
        tokio::spawn(connection);
        for _ in 0..CALLS_PER_CONNECTION {
            let mut ready = client.clone().ready().await.expect("stream capacity");
            let request = http::Request::post(format!(
                "http://{addr}/experiments.v1.AssignmentService/Assign"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
            let (response, body) = ready.send_request(request, false).expect("call opened");
            // The body is never sent, and the stream never ended.
            held.push(body);
            opened += 1;
            answers.spawn(async move {
                let ended = match response.await {
                    Ok(response) => Ok(response
                        .headers()
                        .get("grpc-status")
                        .and_then(|status| status.to_str().ok())
                        .unwrap_or("none")
                        .to_owned()),
                    Err(error) => Err(error.to_string()),
                };
                (ended, started.elapsed())
            });
        }
    }
    // The bodies stay unsent until the calls are answered.
    tokio::spawn(async move {
        tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
        drop(held);
    });
    opened
}

/// Opens `STALLED_HTTP` connections that send a POST's headers and never
/// its body; each task answers the status line's code, or `None` for a
/// connection closed without an answer.
async fn stall_http(addr: SocketAddr, answers: &mut JoinSet<Option<u16>>) {
    for _ in 0..STALLED_HTTP {
        let Ok(mut stream) = from_attacker(addr).await else {
            continue;
        };
        answers.spawn(async move {
            stream
                .write_all(
                    b"POST /experiments/assign HTTP/1.1\r\nHost: x\r\n\
                      Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
                )
                .await
                .ok()?;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer)
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
        });
    }
}

/// `Assign` and `GetExperiment` on `channel`: how long both took.
async fn honest_calls(channel: Channel, id: &str) -> Duration {
    let started = Instant::now();
    let assigned = tokio::time::timeout(
        REQUEST_TIMEOUT,
        AssignmentServiceClient::new(channel.clone()).assign(v1::AssignRequest {
            user_id: "honest-user".into(),
            context: Some(v1::RequestContext {
                placement: "you_may_also_like".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .await
    .expect("Assign within the request timeout")
    .expect("Assign succeeds");
    assert!(!assigned.into_inner().assignments.is_empty());
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        AdminServiceClient::new(channel).get_experiment(v1::GetExperimentRequest { id: id.into() }),
    )
    .await
    .expect("GetExperiment within the request timeout")
    .expect("GetExperiment succeeds");
    started.elapsed()
}

/// `expd` on free ports with the test's timeouts and per-client share;
/// its gRPC and HTTP addresses and a channel to it.
async fn start(data: &std::path::Path) -> (Expd, SocketAddr, SocketAddr, Channel) {
    start_quiet(
        data,
        &[
            "--read-timeout",
            &format!("{}s", READ_TIMEOUT.as_secs()),
            "--request-timeout",
            &format!("{}s", REQUEST_TIMEOUT.as_secs()),
            "--max-connections-per-client",
            &PER_CLIENT.to_string(),
        ],
    )
    .await
}

/// One unary call of `path` whose request body is the gRPC frame of
/// `message`: the answer's grpc-status and grpc-message.
async fn raw_call(addr: SocketAddr, path: &str, message: &[u8]) -> (String, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut ready = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = ready.send_request(request, false).expect("call");
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("length").to_be_bytes());
    frame.extend_from_slice(message);
    body.send_data(frame.into(), true).expect("body");
    let response = response.await.expect("answer");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (header("grpc-status"), header("grpc-message"))
}

#[tokio::test]
async fn bytes_that_are_no_message_are_invalid_argument_and_an_oversized_request_out_of_range() {
    let data = tempfile::tempdir().expect("dir");
    let (_expd, grpc, _, _) = start(data.path()).await;
    // Field 1 (user_id) as a varint: the wrong wire type.
    let (status, message) = raw_call(
        grpc,
        "/experiments.v1.AssignmentService/Assign",
        &[0x08, 0x96, 0x01],
    )
    .await;
    assert_eq!(status, "3", "{message}");
    assert!(message.contains("not%20a%20valid%20protobuf"), "{message}");
    let (status, message) = raw_call(
        grpc,
        "/experiments.v1.AssignmentService/Assign",
        &vec![0; 300 * 1024],
    )
    .await;
    assert_eq!(status, "11", "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_calls_and_connections_of_one_client_do_not_keep_another_from_being_served() {
    // The attacker holds 3,000 sockets.
    rlimit::increase_nofile_limit(16_384).expect("open-file limit");
    let data = tempfile::tempdir().expect("dir");
    let (_expd, grpc, http, before) = start(data.path()).await;
    let mut seed = exp_core::examples::seed_experiment();
    seed.traffic_percent = 100;
    let id = seed.id.clone();
    let mut admin = AdminServiceClient::new(before.clone());
    admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(exp_proto::convert::experiment_to_proto(&seed)),
            reason: String::new(),
        })
        .await
        .expect("create");
    admin
        .start_experiment(v1::StartExperimentRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("start");
    wait_until_assigned(&before, &id).await;
    honest_calls(before.clone(), &id).await;

    // The attack.
    let mut grpc_answers = JoinSet::new();
    let opened = stall_grpc(grpc, &mut grpc_answers).await;
    let mut http_answers = JoinSet::new();
    stall_http(http, &mut http_answers).await;
    let attack_opened = Instant::now();

    // The honest client, until the read timeout has passed twice.
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    while attack_opened.elapsed() < READ_TIMEOUT * 2 {
        slowest = slowest.max(honest_calls(before.clone(), &id).await);
        slowest = slowest.max(honest_calls(channel(grpc).await, &id).await);
        assert_eq!(
            http_get(http, "/healthz").await.0,
            200,
            "GET /healthz during the attack"
        );
        calls += 2;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{opened} stalled calls, {STALLED_HTTP} stalled HTTP connections; \
         {calls} honest Assign + GetExperiment pairs, the slowest pair {slowest:?}"
    );
    assert_eq!(opened, STALLED_CALLS, "every stalled call was opened");
    assert!(slowest < REQUEST_TIMEOUT);

    // The stalled calls were answered DEADLINE_EXCEEDED once the read
    // timeout passed, well within the request timeout.
    let (mut answered, mut reset) = (0, Vec::new());
    while let Some(ended) = tokio::time::timeout(REQUEST_TIMEOUT, grpc_answers.join_next())
        .await
        .expect("every stalled call ends")
    {
        let (how, after) = ended.expect("task");
        assert!(
            after < REQUEST_TIMEOUT + READ_TIMEOUT,
            "ended after {after:?}"
        );
        match how {
            Ok(status) => {
                assert_eq!(status, "4", "a stalled call is DEADLINE_EXCEEDED");
                answered += 1;
            }
            // The server may reset a stream whose request never ended
            // right after answering it; the client can see the reset first.
            Err(error) => reset.push(error),
        }
    }
    println!(
        "stalled calls: {answered} answered DEADLINE_EXCEEDED, {} reset {:?}",
        reset.len(),
        reset.first()
    );
    assert_eq!(answered + reset.len(), STALLED_CALLS);
    assert!(
        reset.len() * 100 <= STALLED_CALLS,
        "most are answered, not reset"
    );

    // HTTP: past the client's share closed at once, the rest answered 408.
    let (mut timed_out, mut closed) = (0, 0);
    while let Some(answer) = tokio::time::timeout(REQUEST_TIMEOUT, http_answers.join_next())
        .await
        .expect("every stalled HTTP connection is answered or closed")
    {
        match answer.expect("task") {
            Some(408) => timed_out += 1,
            None => closed += 1,
            Some(other) => panic!("a stalled HTTP request answered {other}"),
        }
    }
    println!("HTTP: {timed_out} answered 408, {closed} closed at once");
    // The attacker's gRPC connections count against its share too.
    let grpc_connections = STALLED_CALLS / CALLS_PER_CONNECTION;
    assert!(timed_out > 0 && timed_out <= PER_CLIENT - grpc_connections);
    assert_eq!(timed_out + closed, STALLED_HTTP);
}
