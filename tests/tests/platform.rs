//! What every expd offers besides the admin RPCs: health, reflection (v1
//! and v1alpha), the pending services of the contract, the HTTP probes,
//! and a bounded graceful shutdown.

use exp_e2e::TestServer;
use exp_proto::v1;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in [
        "",
        "experiments.v1.AdminService",
        "experiments.v1.AssignmentService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_v1_lists_the_five_services_health_and_reflection() {
    let server = TestServer::start().await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected answer {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "experiments.v1.AdminService",
        "experiments.v1.AssignmentService",
        "experiments.v1.ConfigService",
        "experiments.v1.EventService",
        "experiments.v1.ResultsService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|name| name.starts_with("grpc.reflection.")),
        "{names:?}"
    );
}

#[tokio::test]
async fn services_flag_serves_only_the_named_services() {
    let server = TestServer::start_with(&["--services", "assign"]).await;
    let refused = server
        .admin()
        .await
        .list_experiments(v1::ListExperimentsRequest::default())
        .await
        .expect_err("admin not served");
    assert_eq!(refused.code(), Code::Unimplemented);
    let mut health = HealthClient::new(server.channel().await);
    let admin_health = health
        .check(HealthCheckRequest {
            service: "experiments.v1.AdminService".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(admin_health.code(), Code::NotFound);
}

#[tokio::test]
async fn http_probes_answer_on_the_http_port() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz"] {
        let answer = http_get(server.http_addr, path).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
}

#[tokio::test]
async fn shutdown_stops_serving_and_returns_within_the_grace_period() {
    let server = TestServer::start().await;
    let addr = server.grpc_addr;
    let started = std::time::Instant::now();
    let _ = server.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}
