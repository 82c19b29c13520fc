//! `expd`: parses flags, sets up telemetry, binds the listeners and serves
//! until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use expd::{Config, serve, telemetry};
use tokio::net::TcpListener;

/// mimalloc: each call allocates and frees many small buffers (HTTP/2
/// frames, headers, messages) across worker threads; it took the CPU per
/// `Assign` call down by about 4% against the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(message) = config.check() {
        eprintln!("expd: {message}");
        return ExitCode::from(2);
    }
    // Telemetry lives outside the serving runtime: its exporters own a
    // runtime of their own, which must not be dropped inside another.
    let telemetry = match telemetry::init(config.log_format, config.otlp_endpoint.as_deref()) {
        Ok(guard) => guard,
        Err(message) => {
            eprintln!("expd: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match expd::server::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("expd: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let shutdown = shutdown_signal();
        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|err| format!("--grpc-addr {}: {err}", config.grpc_addr))?;
        let http = TcpListener::bind(config.http_addr)
            .await
            .map_err(|err| format!("--http-addr {}: {err}", config.http_addr))?;
        serve(config, grpc, http, shutdown)
            .await
            .map_err(|err| err.to_string())
    });
    drop(runtime);
    drop(telemetry);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("expd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Listens for SIGINT (Ctrl-C) and SIGTERM (what Kubernetes sends) from
/// the moment it is called, before the server starts, so a signal arriving
/// during start-up still drains instead of killing the process; the
/// future resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
