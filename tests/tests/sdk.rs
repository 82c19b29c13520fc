//! The client SDK: it reconnects until the service answers, saves the
//! last known good config, starts from it while the service is down, and
//! tells its owner about every new version.

use std::time::Duration;

use exp_client::{Client, ClientError, ClientOptions};
use exp_core::evaluate::RequestContext;
use exp_e2e::TestServer;
use exp_proto::v1;

fn ymal() -> RequestContext {
    RequestContext {
        placement: "you_may_also_like".into(),
        ..RequestContext::default()
    }
}

#[tokio::test]
async fn the_sdk_saves_its_config_and_starts_from_it_while_the_service_is_down() {
    let cache = tempfile::tempdir().expect("dir");
    let snapshot_path = cache.path().join("expd-config.pb");
    let server = TestServer::start().await;
    exp_e2e::launch_seed_everywhere(&mut server.admin().await).await;
    let options = ClientOptions {
        endpoint: format!("http://{}", server.grpc_addr),
        snapshot_path: Some(snapshot_path.clone()),
        ..ClientOptions::default()
    };
    let online = Client::start(options.clone()).expect("start");
    let version = online
        .wait_for_version(2, Duration::from_secs(10))
        .await
        .expect("config");
    let expected = online.assign("user-9", "", &ymal()).expect("assigned");
    for _ in 0..100 {
        if snapshot_path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(online);
    let _ = server.stop().await;

    let offline = Client::start(options).expect("start");
    assert_eq!(
        offline
            .wait_for_config(Duration::from_secs(5))
            .await
            .expect("saved config"),
        version
    );
    assert_eq!(
        offline.assign("user-9", "", &ymal()).expect("assigned"),
        expected
    );
}

#[tokio::test]
async fn the_sdk_keeps_retrying_until_the_service_comes_up_and_reports_changes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = Client::start(ClientOptions {
        endpoint: format!("http://{addr}"),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..ClientOptions::default()
    })
    .expect("start");
    assert!(matches!(
        client.assign("u", "", &ymal()),
        Err(ClientError::NoConfig)
    ));
    assert!(matches!(
        client.wait_for_config(Duration::from_millis(300)).await,
        Err(ClientError::Timeout(_))
    ));

    // The service comes up on the address the client keeps trying.
    let grpc = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let data = tempfile::tempdir().expect("dir");
    let config = <expd::Config as clap::Parser>::try_parse_from([
        "expd",
        "--data-dir",
        data.path().to_str().expect("utf-8"),
    ])
    .expect("flags");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(expd::serve(config, grpc, http, async {
        let _ = stopped.await;
    }));
    let mut changes = client.changes();
    client
        .wait_for_config(Duration::from_secs(10))
        .await
        .expect("connected");

    let mut admin = v1::admin_service_client::AdminServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    exp_e2e::launch_seed_everywhere(&mut admin).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        changes.wait_for(|version| version.is_some_and(|v| v >= 2)),
    )
    .await
    .expect("the change callback fired")
    .expect("open");
    let answer = client.assign("user-1", "", &ymal()).expect("assigned");
    assert_eq!(&*answer.assignments[0].experiment_id, "reco_ymal_v1");
    let _ = stop.send(());
    let _ = server.await;
}
