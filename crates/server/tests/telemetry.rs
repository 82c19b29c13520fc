//! OTLP export against a real OTLP/gRPC collector endpoint (the collector
//! service from opentelemetry-proto, served here): spans and metrics of
//! real calls arrive; an unreachable collector changes nothing for callers.

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use exp_proto::v1::{ListExperimentsRequest, admin_service_client::AdminServiceClient};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

#[derive(Default, Clone)]
struct Collector {
    span_names: Arc<Mutex<Vec<String>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut names = self.span_names.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            for scope in resource_spans.scope_spans {
                names.extend(scope.spans.into_iter().map(|span| span.name));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut names = self.metric_names.lock().expect("lock");
        for resource_metrics in request.into_inner().resource_metrics {
            for scope in resource_metrics.scope_metrics {
                names.extend(scope.metrics.into_iter().map(|metric| metric.name));
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn spawn_expd(data_dir: &std::path::Path, grpc_port: u16, otlp_endpoint: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_expd"))
        .args(["--data-dir", data_dir.to_str().expect("utf-8")])
        .args([
            "--grpc-addr",
            &format!("127.0.0.1:{grpc_port}"),
            "--http-addr",
            "127.0.0.1:0",
        ])
        .args(["--otlp-endpoint", otlp_endpoint])
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn expd")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn list_experiments_until_served(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("uri")
                .connect()
                .await
        {
            AdminServiceClient::new(channel)
                .list_experiments(ListExperimentsRequest::default())
                .await
                .expect("served");
            return;
        }
        assert!(Instant::now() < deadline, "expd did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn spans_and_rpc_metrics_reach_an_otlp_collector() {
    let collector = Collector::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let collector_addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let data = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut expd = spawn_expd(data.path(), port, &format!("http://{collector_addr}"));
    list_experiments_until_served(port).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = collector.span_names.lock().expect("lock").clone();
        let metrics = collector.metric_names.lock().expect("lock").clone();
        if spans.iter().any(|name| name == "grpc")
            && metrics.iter().any(|name| name == "rpc.server.duration")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "collector saw spans {spans:?} and metrics {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expd.kill().expect("stop");
    let _ = expd.wait();
}

#[tokio::test]
async fn an_unreachable_collector_does_not_disturb_serving() {
    let data = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut expd = spawn_expd(
        data.path(),
        port,
        &format!("http://127.0.0.1:{}", free_port()),
    );
    for _ in 0..3 {
        list_experiments_until_served(port).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        expd.try_wait().expect("status").is_none(),
        "expd still running"
    );
    expd.kill().expect("stop");
    let _ = expd.wait();
}
