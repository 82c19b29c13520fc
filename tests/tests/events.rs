//! EventService end to end: validation per event, retries counted once,
//! exposures from Assign deduplicated per unit, and Parquet output on the
//! flush interval and at shutdown.

use std::{collections::HashMap, path::Path, time::Duration};

use exp_core::event::EventKind;
use exp_e2e::TestServer;
use exp_ingest::parquet;
use exp_proto::v1::{self, event_service_client::EventServiceClient};
use tonic::{Code, transport::Channel};

fn now() -> prost_types::Timestamp {
    std::time::SystemTime::now().into()
}

fn add_to_cart(id: &str, session: &str) -> v1::Outcome {
    v1::Outcome {
        event_id: id.into(),
        r#type: v1::OutcomeType::AddToCart as i32,
        session_id: session.into(),
        placement: "you_may_also_like".into(),
        item_id: "sku-991".into(),
        from_recommendation: true,
        source_placement: "you_may_also_like".into(),
        quantity: 1,
        timestamp: Some(now()),
        ..Default::default()
    }
}

async fn events(server: &TestServer) -> EventServiceClient<Channel> {
    EventServiceClient::new(server.channel().await)
}

/// `(event id, occurrences)` over every Parquet file of `kind`.
fn parquet_ids(data_dir: &Path, kind: EventKind) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for file in parquet::list(&data_dir.join("events"), kind).expect("list") {
        for id in parquet::read_event_ids(&file).expect("read") {
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

#[tokio::test]
async fn invalid_events_are_refused_by_index_and_field_and_the_rest_are_kept() {
    let server = TestServer::start().await;
    let mut late = add_to_cart("o-2", "s-2");
    late.timestamp = Some((std::time::SystemTime::now() + Duration::from_secs(3600)).into());
    let mut no_item = add_to_cart("o-3", "s-3");
    no_item.item_id.clear();
    let answer = events(&server)
        .await
        .log_outcomes(v1::LogOutcomesRequest {
            outcomes: vec![add_to_cart("o-1", "s-1"), late, no_item],
        })
        .await
        .expect("logged")
        .into_inner();
    assert_eq!(answer.accepted_count, 1);
    assert_eq!(answer.duplicate_count, 0);
    let refused: Vec<(u32, &str)> = answer
        .rejections
        .iter()
        .map(|r| (r.index, r.field.as_str()))
        .collect();
    assert_eq!(refused, [(1, "timestamp"), (2, "item_id")]);
    assert!(answer.rejections[0].reason.contains("in the future"));

    let data = server.stop().await;
    assert_eq!(
        parquet_ids(data.path(), EventKind::Outcome),
        HashMap::from([("o-1".to_owned(), 1)])
    );
}

#[tokio::test]
async fn exposures_must_name_a_known_experiment_and_variant() {
    let server = TestServer::start().await;
    exp_e2e::launch_seed_everywhere(&mut server.admin().await).await;
    let exposure = |id: &str, experiment: &str, variant: &str| v1::Exposure {
        event_id: id.into(),
        experiment_id: experiment.into(),
        variant: variant.into(),
        user_id: "u-1".into(),
        unit_type: v1::UnitType::User as i32,
        placement: "you_may_also_like".into(),
        revision: 2,
        timestamp: Some(now()),
        ..Default::default()
    };
    let mut client = events(&server).await;
    let mut answer = v1::LogExposuresResponse::default();
    // The catalog follows the store a moment after the admin's answer.
    for _ in 0..100 {
        answer = client
            .log_exposures(v1::LogExposuresRequest {
                exposures: vec![
                    exposure("e-1", "reco_ymal_v1", "treatment"),
                    exposure("e-2", "reco_ymal_v2", "treatment"),
                    exposure("e-3", "reco_ymal_v1", "style_boost"),
                ],
            })
            .await
            .expect("logged")
            .into_inner();
        if answer.accepted_count + answer.duplicate_count == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer.accepted_count + answer.duplicate_count, 1);
    let refused: Vec<(u32, &str)> = answer
        .rejections
        .iter()
        .map(|r| (r.index, r.field.as_str()))
        .collect();
    assert_eq!(refused, [(1, "experiment_id"), (2, "variant")]);
}

#[tokio::test]
async fn a_retried_batch_is_counted_once_and_written_once() {
    let server = TestServer::start().await;
    let batch: Vec<v1::Outcome> = (0..100)
        .map(|i| add_to_cart(&format!("retry-{i}"), &format!("s-{i}")))
        .collect();
    let mut client = events(&server).await;
    let first = client
        .log_outcomes(v1::LogOutcomesRequest {
            outcomes: batch.clone(),
        })
        .await
        .expect("first")
        .into_inner();
    assert_eq!((first.accepted_count, first.duplicate_count), (100, 0));
    // The client did not see the answer and sends it again, with a
    // straggler of its own.
    let mut again = batch.clone();
    again.push(add_to_cart("retry-100", "s-100"));
    let retry = client
        .log_outcomes(v1::LogOutcomesRequest { outcomes: again })
        .await
        .expect("retry")
        .into_inner();
    assert_eq!((retry.accepted_count, retry.duplicate_count), (1, 100));

    // Across a restart too: the ids are remembered from the log and files.
    let data = server.stop().await;
    let restarted = TestServer::start_in(data, &[]).await;
    let mut client = events(&restarted).await;
    let after_restart = loop {
        match client
            .log_outcomes(v1::LogOutcomesRequest {
                outcomes: batch.clone(),
            })
            .await
        {
            Ok(answer) => break answer.into_inner(),
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    assert_eq!(
        (after_restart.accepted_count, after_restart.duplicate_count),
        (0, 100)
    );
    let data = restarted.stop().await;
    let ids = parquet_ids(data.path(), EventKind::Outcome);
    assert_eq!(ids.len(), 101);
    assert!(ids.values().all(|count| *count == 1), "{ids:?}");
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole_naming_the_limit() {
    let server = TestServer::start().await;
    let batch: Vec<v1::Outcome> = (0..5_001)
        .map(|i| add_to_cart(&format!("big-{i}"), "s-1"))
        .collect();
    let refused = events(&server)
        .await
        .log_outcomes(v1::LogOutcomesRequest { outcomes: batch })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("outcomes: at most 5000 events"),
        "{}",
        refused.message()
    );
    let data = server.stop().await;
    assert!(parquet_ids(data.path(), EventKind::Outcome).is_empty());
}

#[tokio::test]
async fn assign_exposures_reach_the_log_once_per_unit_and_variant() {
    let server = TestServer::start().await;
    exp_e2e::launch_seed_everywhere(&mut server.admin().await).await;
    exp_e2e::wait_until_assign_is_current(server.channel().await).await;
    let mut assign =
        v1::assignment_service_client::AssignmentServiceClient::new(server.channel().await);
    let request = |user: &str, defer: bool| v1::AssignRequest {
        user_id: user.into(),
        session_id: format!("session-of-{user}"),
        context: Some(v1::RequestContext {
            placement: "you_may_also_like".into(),
            page_type: "product_detail".into(),
            ..Default::default()
        }),
        defer_exposure: defer,
    };
    let mut variants = HashMap::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        // A page refreshed 25 times.
        for _ in 0..25 {
            let answer = assign
                .assign(request(&user, false))
                .await
                .expect("assign")
                .into_inner();
            variants.insert(user.clone(), answer.variant);
        }
    }
    // Deferred exposures are the caller's to log.
    assign
        .assign(request("user-deferred", true))
        .await
        .expect("assign");

    let data = server.stop().await;
    let mut written = Vec::new();
    for file in parquet::list(&data.path().join("events"), EventKind::Exposure).expect("list") {
        written.extend(parquet::read_events(&file, EventKind::Exposure).expect("read"));
    }
    let mut seen: Vec<(String, String)> = written
        .iter()
        .map(|event| match event {
            exp_core::event::Event::Exposure(exposure) => {
                assert_eq!(exposure.experiment_id, "reco_ymal_v1");
                assert_eq!(exposure.unit_type, exp_core::UnitType::User);
                assert_eq!(
                    exposure.session_id,
                    format!("session-of-{}", exposure.user_id)
                );
                assert_eq!(exposure.page_type, "product_detail");
                (exposure.user_id.clone(), exposure.variant.clone())
            }
            exp_core::event::Event::Outcome(_) => panic!("an outcome among exposures"),
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, String)> = variants.into_iter().collect();
    expected.sort();
    assert_eq!(seen, expected, "one exposure per user, in its variant");
}

#[tokio::test]
async fn events_reach_parquet_within_the_flush_interval() {
    let server = TestServer::start_with(&["--events-flush-interval", "200ms"]).await;
    let answer = events(&server)
        .await
        .log_outcomes(v1::LogOutcomesRequest {
            outcomes: vec![add_to_cart("soon", "s-1")],
        })
        .await
        .expect("logged")
        .into_inner();
    assert_eq!(answer.accepted_count, 1);
    let mut found = HashMap::new();
    for _ in 0..100 {
        found = parquet_ids(server.data_dir.path(), EventKind::Outcome);
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found, HashMap::from([("soon".to_owned(), 1)]));
}

#[tokio::test]
async fn a_graceful_shutdown_rolls_everything_pending_into_parquet() {
    let server = TestServer::start_with(&["--events-flush-interval", "1h"]).await;
    let outcomes: Vec<v1::Outcome> = (0..300)
        .map(|i| add_to_cart(&format!("pending-{i}"), "s-1"))
        .collect();
    events(&server)
        .await
        .log_outcomes(v1::LogOutcomesRequest { outcomes })
        .await
        .expect("logged");
    assert!(parquet_ids(server.data_dir.path(), EventKind::Outcome).is_empty());
    let data = server.stop().await;
    assert_eq!(parquet_ids(data.path(), EventKind::Outcome).len(), 300);
    let leftover = std::fs::read_dir(data.path().join("events/wal"))
        .expect("wal dir")
        .count();
    assert_eq!(leftover, 0, "no segment left behind");
}

#[tokio::test]
async fn a_sidecar_sends_its_assign_exposures_to_the_admin_event_log() {
    let admin = TestServer::start().await;
    exp_e2e::launch_seed_everywhere(&mut admin.admin().await).await;
    let launched = exp_e2e::current_config_version(admin.channel().await).await;
    let source = format!("http://{}", admin.grpc_addr);
    let sidecar =
        TestServer::start_with(&["--services", "assign", "--config-source", &source]).await;
    exp_e2e::wait_for_assign_version(sidecar.channel().await, launched).await;
    let mut assign =
        v1::assignment_service_client::AssignmentServiceClient::new(sidecar.channel().await);
    let mut expected = Vec::new();
    for user in 0..10 {
        for _ in 0..3 {
            let answer = assign
                .assign(exp_e2e::ymal_request(&format!("sidecar-user-{user}"), ""))
                .await
                .expect("assign")
                .into_inner();
            expected.push((format!("sidecar-user-{user}"), answer.variant));
        }
    }
    expected.dedup();
    // The sidecar's graceful stop sends what it holds; then the admin's
    // rolls it into Parquet.
    sidecar.stop().await;
    let data = admin.stop().await;
    let mut written = Vec::new();
    for file in parquet::list(&data.path().join("events"), EventKind::Exposure).expect("list") {
        for event in parquet::read_events(&file, EventKind::Exposure).expect("read") {
            if let exp_core::event::Event::Exposure(exposure) = event {
                written.push((exposure.user_id, exposure.variant));
            }
        }
    }
    written.retain(|(user, _)| user.starts_with("sidecar-user-"));
    written.sort();
    expected.sort();
    assert_eq!(written, expected);
}

#[tokio::test]
async fn a_client_stalled_mid_body_neither_holds_up_shutdown_nor_loses_the_queued_exposures() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    exp_e2e::launch_seed_everywhere(&mut server.admin().await).await;
    exp_e2e::wait_until_assign_is_current(server.channel().await).await;
    // A connection whose request body never arrives: the HTTP server
    // keeps its connection task (and with it a copy of the assigner).
    let mut stalled = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .expect("connect");
    stalled
        .write_all(
            b"POST /experiments/assign HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"user_id\":",
        )
        .await
        .expect("write");
    let mut assign =
        v1::assignment_service_client::AssignmentServiceClient::new(server.channel().await);
    for user in 0..20 {
        assign
            .assign(exp_e2e::ymal_request(&format!("stall-user-{user}"), ""))
            .await
            .expect("assign");
    }
    let started = std::time::Instant::now();
    let data = tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("expd stops although a client never sends its body");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        started.elapsed()
    );
    let written = parquet_ids(data.path(), EventKind::Exposure);
    assert_eq!(written.len(), 20, "every queued exposure reached Parquet");
    drop(stalled);
}
