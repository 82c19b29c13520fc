//! Tower layers of the gRPC server that tonic and tower do not provide,
//! and the span of each call, both after the OpenTelemetry RPC semantic
//! conventions: span `{rpc.service}/{rpc.method}` (kind server), with
//! `rpc.system`, `rpc.service`, `rpc.method` and `rpc.grpc.status_code`,
//! a child of the caller's span when the request carries W3C trace
//! context (`traceparent`).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::{KeyValue, metrics::Histogram};
use tower::{Layer, Service};

/// The service and method of a gRPC path (`/pkg.Service/Method`).
pub fn rpc_names(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""))
}

/// The span of one gRPC call: named `{service}/{method}`, with the RPC
/// semantic-convention attributes, its parent taken from the request's
/// trace context. [`RpcMetrics`] records its status code.
pub fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let (service, method) = rpc_names(request.uri().path());
    let span = tracing::info_span!(
        "grpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    continue_trace(&span, request.headers());
    span
}

/// Makes `span` a child of the caller's span when `headers` carry W3C
/// trace context; without it the span starts its own trace.
fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// The HTTP port's counterpart, after the OpenTelemetry HTTP semantic
/// conventions (an axum route layer): a server span named
/// `{method} {route}` with `http.request.method`, `http.route` and
/// `http.response.status_code`, continuing the caller's trace, and the
/// `http.server.request.duration` histogram by the same three.
pub async fn http_metrics(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |path| path.as_str().to_owned(),
        );
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    continue_trace(&span, request.headers());
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    http_duration().record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
    response
}

fn http_duration() -> &'static Histogram<f64> {
    static DURATION: std::sync::OnceLock<Histogram<f64>> = std::sync::OnceLock::new();
    DURATION.get_or_init(|| {
        opentelemetry::global::meter("expd")
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Time until the response, per HTTP route")
            .build()
    })
}

/// Reads trace context from request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The name of services and methods the server does not have, in metrics
/// (the OpenTelemetry conventions' `_OTHER`).
const OTHER: &str = "_OTHER";

/// gRPC codes that are the server's failure (OpenTelemetry's rule for
/// server spans): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS.
fn is_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Records `rpc.server.duration` (seconds, by `rpc.system`, `rpc.service`,
/// `rpc.method` and `rpc.grpc.status_code`) through the global
/// OpenTelemetry meter, and the status code on the call's span. Without a
/// configured exporter the meter is a no-op.
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    duration: Histogram<f64>,
}

impl RpcMetricsLayer {
    /// A layer recording into the global meter `expd`.
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("expd");
        Self {
            duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("s")
                .with_description("Time until response headers, per gRPC method")
                .build(),
        }
    }
}

impl Default for RpcMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            duration: self.duration.clone(),
        }
    }
}

/// The service of [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S, B, ResBody> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = rpc_names(request.uri().path());
        let (service, method) = (service.to_owned(), method.to_owned());
        let started = Instant::now();
        let response = self.inner.call(request);
        let duration = self.duration.clone();
        Box::pin(async move {
            let response = response.await;
            // Errors answered before any message carry grpc-status in the
            // headers (trailers-only); successes carry it in trailers.
            let code = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0),
                // The connection failed: UNKNOWN.
                Err(_) => 2,
            };
            // A path no service serves (UNIMPLEMENTED) comes from the
            // caller: its names would let anyone add series.
            let (service, method) = if code == 12 {
                (OTHER.to_owned(), OTHER.to_owned())
            } else {
                (service, method)
            };
            let span = tracing::Span::current();
            span.record("rpc.grpc.status_code", code);
            if is_server_error(code) {
                span.record("otel.status_code", "ERROR");
            }
            duration.record(
                started.elapsed().as_secs_f64(),
                &[
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", service),
                    KeyValue::new("rpc.method", method),
                    KeyValue::new("rpc.grpc.status_code", code),
                ],
            );
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_path_is_its_service_and_method() {
        assert_eq!(
            rpc_names("/experiments.v1.AssignmentService/Assign"),
            ("experiments.v1.AssignmentService", "Assign")
        );
        assert_eq!(rpc_names("/odd"), ("/odd", ""));
    }
}
