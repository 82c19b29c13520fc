//! Logs through `tracing`; metrics read by `GET /metrics` (Prometheus text
//! format, from the default `prometheus` registry); and, when
//! `--otlp-endpoint` is set, traces and the same metrics exported over
//! OTLP/gRPC. Export never blocks or fails serving: an unreachable
//! collector only costs dropped telemetry.
//!
//! OpenTelemetry's batch processors export from their own OS threads, while
//! the tonic exporter needs a Tokio reactor; [`OnRuntime`] runs each export
//! on a small runtime owned by the telemetry guard.

use std::{sync::Arc, time::Duration};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{
        PeriodicReader, SdkMeterProvider, Temporality, data::ResourceMetrics,
        exporter::PushMetricExporter,
    },
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Keeps exporters alive; flushes them on drop.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
        if let Some(provider) = self.meter_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global `tracing` subscriber (filtered by `RUST_LOG`,
/// default `info`) and, with an endpoint, OTLP export of traces and
/// metrics.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<TelemetryGuard, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    };
    let mut guard = TelemetryGuard::default();
    // Incoming W3C trace context (`traceparent`) continues the caller's
    // trace.
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let resource = Resource::builder().with_service_name("expd").build();
    let prometheus = opentelemetry_prometheus::exporter()
        .with_registry(prometheus::default_registry().clone())
        .build()
        .map_err(|err| format!("the Prometheus exporter: {err}"))?;
    let mut meters = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(prometheus);
    let otel_layer = match otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let runtime = Arc::new(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-export")
                    .enable_all()
                    .build()
                    .map_err(|err| format!("starting the OTLP export runtime: {err}"))?,
            );
            let spans = {
                let _entered = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|err| format!("--otlp-endpoint {endpoint}: {err}"))?
            };
            let metrics = {
                let _entered = runtime.enter();
                opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|err| format!("--otlp-endpoint {endpoint}: {err}"))?
            };
            let tracer_provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(OnRuntime::new(spans, runtime.clone()))
                .build();
            // The push interval is the SDK's: OTEL_METRIC_EXPORT_INTERVAL in
            // milliseconds, 60 s by default.
            meters = meters
                .with_reader(PeriodicReader::builder(OnRuntime::new(metrics, runtime)).build());
            let tracer = tracer_provider.tracer("expd");
            guard.tracer_provider = Some(tracer_provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
    };
    let meter_provider = meters.build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());
    guard.meter_provider = Some(meter_provider);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel_layer)
        .try_init()
        .map_err(|err| format!("installing the log subscriber: {err}"))?;
    Ok(guard)
}

/// An exporter whose exports run on a runtime of its own, so they work
/// from the SDK's plain export threads.
#[derive(Debug)]
pub struct OnRuntime<E> {
    inner: E,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl<E> OnRuntime<E> {
    fn new(inner: E, runtime: Arc<tokio::runtime::Runtime>) -> Self {
        Self { inner, runtime }
    }
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.runtime.block_on(self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for OnRuntime<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.runtime.block_on(self.inner.export(metrics))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
