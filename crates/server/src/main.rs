//! `expd`: parses flags, sets up telemetry, binds the listeners and serves
//! until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use expd::{Config, serve, telemetry};
use tokio::net::TcpListener;

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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("expd: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|err| format!("--grpc-addr {}: {err}", config.grpc_addr))?;
        let http = TcpListener::bind(config.http_addr)
            .await
            .map_err(|err| format!("--http-addr {}: {err}", config.http_addr))?;
        serve(config, grpc, http, shutdown_signal())
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

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
