//! OTLP export against a real OTLP/gRPC collector endpoint (the collector
//! service from opentelemetry-proto, served here): spans and metrics of
//! real calls arrive; an unreachable collector changes nothing for callers.

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use exp_proto::v1::{
    GetExperimentRequest, ListExperimentsRequest, admin_service_client::AdminServiceClient,
};
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
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
}

/// What the test reads of an exported span.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    kind: i32,
    trace_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| {
                    Span {
                        name: span.name,
                        kind: span.kind,
                        trace_id: span.trace_id,
                        parent_span_id: span.parent_span_id,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                            .collect(),
                    }
                }));
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

/// The trace and parent span the test's calls carry (`traceparent`).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

async fn list_experiments_until_served(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("uri")
                .connect()
                .await
        {
            let mut admin = AdminServiceClient::new(channel);
            let mut listed = Request::new(ListExperimentsRequest::default());
            listed.metadata_mut().insert(
                "traceparent",
                format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
                    .parse()
                    .expect("header"),
            );
            admin.list_experiments(listed).await.expect("served");
            let missing = admin
                .get_experiment(GetExperimentRequest {
                    id: "no_such_experiment".into(),
                })
                .await
                .expect_err("not found");
            assert_eq!(missing.code(), tonic::Code::NotFound);
            return;
        }
        assert!(Instant::now() < deadline, "expd did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn spans_follow_the_rpc_conventions_continue_the_callers_trace_and_metrics_arrive() {
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

    let listed_name = "experiments.v1.AdminService/ListExperiments";
    let missing_name = "experiments.v1.AdminService/GetExperiment";
    let deadline = Instant::now() + Duration::from_secs(20);
    let (listed, missing) = loop {
        let spans = collector.spans.lock().expect("lock").clone();
        let metrics = collector.metric_names.lock().expect("lock").clone();
        let listed = spans.iter().find(|span| span.name == listed_name).cloned();
        let missing = spans.iter().find(|span| span.name == missing_name).cloned();
        if let (Some(listed), Some(missing)) = (listed, missing)
            && metrics.iter().any(|name| name == "rpc.server.duration")
        {
            break (listed, missing);
        }
        assert!(
            Instant::now() < deadline,
            "collector saw spans {spans:?} and metrics {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // SPAN_KIND_SERVER.
    assert_eq!(listed.kind, 2, "{listed:?}");
    assert_eq!(listed.attribute("rpc.system"), Some("grpc"), "{listed:?}");
    assert_eq!(
        listed.attribute("rpc.service"),
        Some("experiments.v1.AdminService")
    );
    assert_eq!(listed.attribute("rpc.method"), Some("ListExperiments"));
    assert_eq!(listed.attribute("rpc.grpc.status_code"), Some("0"));
    assert_eq!(hex(&listed.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&listed.parent_span_id),
        PARENT_SPAN_ID,
        "the caller's span"
    );
    assert_eq!(
        missing.attribute("rpc.grpc.status_code"),
        Some("5"),
        "{missing:?}"
    );
    assert_ne!(
        hex(&missing.trace_id),
        TRACE_ID,
        "a call without context starts a trace"
    );
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
