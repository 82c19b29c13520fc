//! WatchConfigs streams cannot be hoarded: a watcher that reads nothing is
//! dropped once its queue has stayed full for the stall limit, freeing its
//! place, and one client address holds at most its share of the watcher
//! limit, so another client still gets a stream. A real tonic server on an
//! ephemeral port; the stuck watcher is a raw HTTP/2 client that grants
//! the server no flow-control window.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use exp_admin::{
    Admin, ConfigGrpc, ConfigPublisher, Principal,
    config::{MAX_WATCHERS_PER_CLIENT, OpenWatchers},
};
use exp_core::SystemClock;
use exp_proto::v1::{self, config_service_client::ConfigServiceClient};
use exp_store::Store;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

const HEARTBEAT: Duration = Duration::from_millis(50);
const STALL: Duration = Duration::from_millis(300);

/// A ConfigService of at most `max_watchers` streams on an ephemeral port,
/// dropping a stuck stream after `stall`; its address, store and open
/// streams.
async fn serve_with(
    max_watchers: usize,
    stall: Duration,
    dir: &std::path::Path,
) -> (SocketAddr, Arc<Store>, OpenWatchers) {
    let store = Arc::new(Store::open(dir).expect("store"));
    let shutdown = CancellationToken::new();
    let (publisher, publishing) =
        ConfigPublisher::start(store.clone(), Arc::new(SystemClock), shutdown.clone())
            .expect("publisher");
    tokio::spawn(publishing);
    let service = ConfigGrpc::new(
        publisher,
        Arc::new(SystemClock),
        HEARTBEAT,
        shutdown,
        max_watchers,
    )
    .with_stall(stall);
    let open = service.open_watchers();
    let service = service.into_server();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, store, open)
}

async fn serve(max_watchers: usize, dir: &std::path::Path) -> SocketAddr {
    serve_with(max_watchers, STALL, dir).await.0
}

/// A WatchConfigs stream from `from` over raw HTTP/2 that grants the
/// server `window` bytes of flow control: with 0 it reads nothing. Answers
/// the response's grpc-status (`None` for a stream that was accepted) and
/// its body, unread (dropping it would cancel the stream).
async fn raw_watch(addr: SocketAddr, from: &str, window: u32) -> (Option<String>, h2::RecvStream) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(from.parse().expect("addr")).expect("bind");
    let stream = socket.connect(addr).await.expect("connect");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(stream)
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut ready = client.clone().ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{addr}/experiments.v1.ConfigService/WatchConfigs"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (response, mut body) = ready.send_request(request, false).expect("send");
    // One empty WatchConfigsRequest: no compression, length 0.
    body.send_data(&[0, 0, 0, 0, 0][..], true).expect("body");
    let response = response.await.expect("response headers");
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|status| status.to_str().ok())
        .map(str::to_owned);
    (status, response.into_body())
}

async fn watch(
    channel: &Channel,
) -> Result<tonic::Streaming<v1::WatchConfigsResponse>, tonic::Status> {
    ConfigServiceClient::new(channel.clone())
        .watch_configs(v1::WatchConfigsRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_watcher_that_reads_nothing_is_dropped_and_frees_its_place() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = serve(1, dir.path()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    let (status, _stuck) = raw_watch(addr, "127.0.0.1:0", 0).await;
    assert_eq!(status, None, "the stuck watcher's stream was accepted");
    let opened = Instant::now();
    let refused = watch(&channel).await.expect_err("the one place is taken");
    assert_eq!(refused.code(), Code::ResourceExhausted);

    let mut admitted = None;
    while opened.elapsed() < Duration::from_secs(10) {
        if let Ok(stream) = watch(&channel).await {
            admitted = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stream = admitted.expect("the stuck watcher was dropped within 10 s");
    let waited = opened.elapsed();
    // Its queue filled with heartbeats, then stayed full for the stall.
    assert!(
        waited >= STALL,
        "dropped after {waited:?}, before the stall limit"
    );
    stream
        .message()
        .await
        .expect("the new watcher reads")
        .expect("its snapshot");
    println!("the stuck watcher's place came back after {waited:?}");
}

#[tokio::test]
async fn one_client_holds_at_most_its_share_and_another_client_still_gets_a_stream() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = serve(1_000, dir.path()).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut held = Vec::new();
    for _ in 0..MAX_WATCHERS_PER_CLIENT {
        held.push(watch(&channel).await.expect("within the client's share"));
    }
    let refused = watch(&channel).await.expect_err("past the client's share");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("this client holds"),
        "{}",
        refused.message()
    );

    let (status, _other) = raw_watch(addr, "127.0.0.2:0", 65_535).await;
    assert_eq!(status, None, "another client's stream is accepted");

    drop(held.pop());
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(stream) = watch(&channel).await {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "a closed stream gives its place back");
}

#[tokio::test]
async fn a_stuck_watcher_shows_how_many_versions_behind_it_is() {
    let dir = tempfile::tempdir().expect("dir");
    let (addr, store, open) = serve_with(10, Duration::from_secs(60), dir.path()).await;
    let (status, _stuck) = raw_watch(addr, "127.0.0.1:0", 0).await;
    assert_eq!(status, None);
    assert_eq!(open.count(), 1);
    // Its queue fills with heartbeats; then a change cannot reach it.
    tokio::time::sleep(HEARTBEAT * 20).await;
    assert_eq!(open.most_behind(), 0, "nothing changed yet");
    let admin = Admin::new(
        store,
        Arc::new(exp_core::ParamSchema::builtin()),
        Arc::new(SystemClock),
    );
    admin
        .create(
            &exp_core::examples::seed_experiment(),
            &Principal::system("qa@example.com"),
            "",
        )
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(5);
    while open.most_behind() == 0 {
        assert!(
            Instant::now() < deadline,
            "the stuck watcher never fell behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open.most_behind(), 1, "one change it was not sent");
}

/// The next message of `stream` that is not a heartbeat.
async fn next_change(
    stream: &mut tonic::Streaming<v1::WatchConfigsResponse>,
) -> v1::watch_configs_response::Payload {
    loop {
        let message = stream
            .message()
            .await
            .expect("stream healthy")
            .expect("stream open");
        match message.payload.expect("a payload") {
            v1::watch_configs_response::Payload::Heartbeat(_) => continue,
            change => return change,
        }
    }
}

#[tokio::test]
async fn a_holdout_reaches_watchers_as_a_delta_and_its_end_as_a_removal() {
    use v1::watch_configs_response::Payload;
    let dir = tempfile::tempdir().expect("dir");
    let (addr, store, _open) = serve_with(4, STALL, dir.path()).await;
    let admin = Admin::new(
        store,
        Arc::new(exp_core::ParamSchema::builtin()),
        Arc::new(SystemClock),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut stream = watch(&channel).await.expect("a stream");
    assert!(matches!(
        next_change(&mut stream).await,
        Payload::Snapshot(_)
    ));

    let proposed = exp_core::Holdout {
        id: "ranking_holdout".into(),
        description: String::new(),
        share_basis_points: 1_000,
        salt: String::new(),
        layers: vec!["ymal_ranking".into()],
        placements: Vec::new(),
        status: exp_core::HoldoutStatus::Active,
        revision: 0,
        create_time: std::time::SystemTime::UNIX_EPOCH,
        update_time: std::time::SystemTime::UNIX_EPOCH,
        updated_by: String::new(),
    };
    let writer = admin.clone();
    tokio::task::spawn_blocking(move || {
        writer.create_holdout(&proposed, &Principal::system("alice"))
    })
    .await
    .expect("task")
    .expect("created");
    let Payload::Delta(delta) = next_change(&mut stream).await else {
        panic!("a delta");
    };
    assert_eq!(delta.upserted_holdouts.len(), 1);
    assert_eq!(delta.upserted_holdouts[0].id, "ranking_holdout");
    assert_eq!(delta.upserted_holdouts[0].salt, "ranking_holdout:holdout");
    assert_eq!(delta.upserted_holdouts[0].share_basis_points, 1_000);

    let writer = admin.clone();
    tokio::task::spawn_blocking(move || {
        writer.end_holdout("ranking_holdout", 0, &Principal::system("alice"))
    })
    .await
    .expect("task")
    .expect("ended");
    let Payload::Delta(delta) = next_change(&mut stream).await else {
        panic!("a delta");
    };
    assert_eq!(delta.removed_holdout_ids, ["ranking_holdout"]);
    assert!(delta.upserted_holdouts.is_empty());
}
