//! What ops read, checked against a scrape: a guardrail breach on a real
//! server shows in `GET /metrics`, and every metric the Grafana dashboard
//! (`deploy/grafana/expd-dashboard.json`) and the alerting rules
//! (`deploy/prometheus/expd-alerts.yaml`) query is in that scrape.
//!
//! This binary installs the process's telemetry (as `expd` does at start),
//! so the in-process server's instruments reach the Prometheus registry.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use exp_e2e::{
    TestServer, assign_users, bounce_guarded_seed, create_and_start, log_outcomes,
    treatment_bounces, wait_until_assign_is_current,
};
use exp_proto::v1::{self, config_service_client::ConfigServiceClient};

/// Every metric name a PromQL expression reads (`expd_*` and the RPC and
/// HTTP histograms' series).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(
        r"\b(expd_[a-z_]+|rpc_server_duration_seconds(?:_bucket|_count|_sum)?)\b",
    )
    .expect("regex");
    name.find_iter(expr)
        .map(|found| found.as_str().to_owned())
        .collect()
}

/// The sample names of a Prometheus text scrape.
fn scraped_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/expd-dashboard.json"
    ))
    .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard parses");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("a target's expr").to_owned())
        .collect()
}

fn alert_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/expd-alerts.yaml"
    ))
    .expect("the alert rules");
    let rules: serde_json::Value = serde_yaml_ng::from_str(&text).expect("the rules parse");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .map(|rule| rule["expr"].as_str().expect("a rule's expr").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardrail_stop_shows_in_metrics_and_every_metric_the_dashboard_and_alerts_query_is_scraped()
 {
    let _telemetry = expd::telemetry::init(expd::config::LogFormat::Text, None).expect("telemetry");
    // Segments roll into Parquet every second, so a roll is in the scrape.
    let server = TestServer::start_with(&[
        "--guardrail-interval",
        "1s",
        "--events-flush-interval",
        "1s",
    ])
    .await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    create_and_start(&mut admin, bounce_guarded_seed()).await;
    wait_until_assign_is_current(channel.clone()).await;
    // A replica's stream: its snapshot is counted.
    let mut watching = ConfigServiceClient::new(channel.clone())
        .watch_configs(v1::WatchConfigsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    watching.message().await.expect("ok").expect("snapshot");
    // Treatment bounces far more often: the monitor stops the experiment.
    let assigned = assign_users(channel.clone(), "o", 1200).await;
    log_outcomes(channel.clone(), treatment_bounces(&assigned)).await;

    let action = r#"expd_guardrail_actions_total{action="stop",experiment="reco_ymal_v1""#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let (status, scrape) = exp_e2e::http_get_with(server.http_addr, "/metrics", &[]).await;
        assert_eq!(status, 200);
        if scrape
            .lines()
            .any(|line| line.starts_with(action) && line.ends_with(" 1"))
        {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "no guardrail action or no roll in:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        scrape
            .lines()
            .any(|line| line.starts_with(r#"expd_guardrail_looks_total{experiment="reco_ymal_v1""#)),
        "{scrape}"
    );

    // Once more: the scrapes before are in this one's HTTP histogram.
    let (_, scrape) = exp_e2e::http_get_with(server.http_addr, "/metrics", &[]).await;
    assert!(
        scrape.lines().any(
            |line| line.starts_with("http_server_request_duration_seconds_count")
                && line.contains(r#"http_route="/metrics""#)
        ),
        "{scrape}"
    );
    let scraped = scraped_names(&scrape);
    let queried: BTreeSet<String> = dashboard_exprs()
        .iter()
        .chain(alert_exprs().iter())
        .flat_map(|expr| metric_names(expr))
        .collect();
    assert!(queried.len() >= 15, "{queried:?}");
    let missing: Vec<_> = queried.difference(&scraped).collect();
    assert!(missing.is_empty(), "queried but not scraped: {missing:?}");
    println!(
        "{} metrics queried by the dashboard and the alerts, all scraped",
        queried.len()
    );
}
