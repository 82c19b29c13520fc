//! The gRPC server's tower stack under pressure: calls beyond the
//! concurrency limit are refused at once with RESOURCE_EXHAUSTED, and a
//! call slower than the timeout is cut off, never left hanging.

use std::time::Duration;

use clap::Parser;
use exp_proto::v1::{
    GetResultsRequest, GetResultsResponse,
    results_service_client::ResultsServiceClient,
    results_service_server::{ResultsService, ResultsServiceServer},
};
use expd::{Config, server::grpc_server_builder};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status, transport::Channel};

/// A service that takes as long as the request's `alpha` says, in seconds.
struct Slow;

#[tonic::async_trait]
impl ResultsService for Slow {
    async fn get_results(
        &self,
        request: Request<GetResultsRequest>,
    ) -> Result<Response<GetResultsResponse>, Status> {
        tokio::time::sleep(Duration::from_secs_f64(request.get_ref().alpha)).await;
        Ok(Response::new(GetResultsResponse::default()))
    }
}

async fn serve_slow(flags: &[&str]) -> ResultsServiceClient<Channel> {
    let config = Config::try_parse_from(std::iter::once("expd").chain(flags.iter().copied()))
        .expect("flags");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = grpc_server_builder(&config)
        .add_service(ResultsServiceServer::new(Slow))
        .serve_with_incoming(expd::server::connections_for(&config).incoming(listener));
    tokio::spawn(server);
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    ResultsServiceClient::new(channel)
}

fn taking(seconds: f64) -> GetResultsRequest {
    GetResultsRequest {
        alpha: seconds,
        ..Default::default()
    }
}

#[tokio::test]
async fn calls_beyond_the_concurrency_limit_get_resource_exhausted_at_once() {
    let client = serve_slow(&["--max-concurrent-requests", "2"]).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut client = client.clone();
        busy.push(tokio::spawn(async move {
            client.get_results(taking(1.0)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let refused = client
        .clone()
        .get_results(taking(0.0))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused without waiting"
    );
    for call in busy {
        call.await
            .expect("task")
            .expect("calls within the limit succeed");
    }
    client
        .clone()
        .get_results(taking(0.0))
        .await
        .expect("capacity is back");
}

#[tokio::test]
async fn a_call_slower_than_the_request_timeout_is_cut_off() {
    let mut client = serve_slow(&["--request-timeout", "100ms"]).await;
    let started = std::time::Instant::now();
    let cut = client
        .get_results(taking(5.0))
        .await
        .expect_err("timed out");
    assert_eq!(cut.code(), Code::Cancelled, "{cut:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    client
        .get_results(taking(0.0))
        .await
        .expect("fast calls still pass");
}
