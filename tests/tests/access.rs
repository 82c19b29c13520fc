//! Every caller is someone: with a tokens file, the data plane
//! (assignment, config delivery, events) takes `data_plane` tokens and
//! nothing else does; people's tokens cannot write events; a data-plane
//! token cannot read or change experiments; health and reflection stay
//! open; a sidecar presents its token to the admin it follows.

use std::time::{Duration, SystemTime};

use exp_e2e::{
    DATA_PLANE_TOKEN, TestServer, http_post_with, seed_experiment, with_token, write_tokens_file,
    ymal_request,
};
use exp_proto::v1::{
    self, assignment_service_client::AssignmentServiceClient,
    config_service_client::ConfigServiceClient, event_service_client::EventServiceClient,
};
use tonic::Code;

/// A server with a tokens file, its editor's and viewer's tokens, and the
/// seed experiment running (started by the editor).
async fn guarded() -> (TestServer, tempfile::TempDir, &'static str, &'static str) {
    let tokens_dir = tempfile::tempdir().expect("dir");
    let (tokens_file, editor, viewer) = write_tokens_file(tokens_dir.path());
    let server = TestServer::start_with(&["--tokens-file", &tokens_file]).await;
    let mut admin = server.admin().await;
    let mut seed = seed_experiment();
    seed.traffic_percent = 100;
    admin
        .create_experiment(with_token(
            v1::CreateExperimentRequest {
                experiment: Some(seed),
                reason: String::new(),
            },
            editor,
        ))
        .await
        .expect("created");
    admin
        .start_experiment(with_token(
            v1::StartExperimentRequest {
                id: "reco_ymal_v1".into(),
                ..Default::default()
            },
            editor,
        ))
        .await
        .expect("started");
    (server, tokens_dir, editor, viewer)
}

fn outcomes() -> v1::LogOutcomesRequest {
    v1::LogOutcomesRequest {
        outcomes: vec![v1::Outcome {
            event_id: "forged-page-view-1".into(),
            r#type: v1::OutcomeType::PageView as i32,
            session_id: "s-1".into(),
            timestamp: Some(SystemTime::now().into()),
            ..Default::default()
        }],
    }
}

fn exposures() -> v1::LogExposuresRequest {
    v1::LogExposuresRequest {
        exposures: vec![v1::Exposure {
            event_id: "forged-exposure-1".into(),
            experiment_id: "reco_ymal_v1".into(),
            variant: "treatment".into(),
            user_id: "u-1".into(),
            timestamp: Some(SystemTime::now().into()),
            ..Default::default()
        }],
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.map_or_else(|status| status.code(), |_| Code::Ok)
}

#[tokio::test]
async fn events_need_a_data_plane_token_and_peoples_tokens_cannot_write_them() {
    let (server, _tokens, editor, viewer) = guarded().await;
    let mut events = EventServiceClient::new(server.channel().await);
    assert_eq!(
        code_of(events.log_outcomes(outcomes()).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(events.log_exposures(exposures()).await),
        Code::Unauthenticated
    );
    for person in [viewer, editor] {
        assert_eq!(
            code_of(events.log_outcomes(with_token(outcomes(), person)).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code_of(events.log_exposures(with_token(exposures(), person)).await),
            Code::PermissionDenied
        );
    }
    let accepted = events
        .log_outcomes(with_token(outcomes(), DATA_PLANE_TOKEN))
        .await
        .expect("a data-plane token logs outcomes")
        .into_inner();
    assert_eq!(accepted.accepted_count, 1);
    let accepted = events
        .log_exposures(with_token(exposures(), DATA_PLANE_TOKEN))
        .await
        .expect("a data-plane token logs exposures")
        .into_inner();
    assert_eq!(accepted.accepted_count, 1, "{:?}", accepted.rejections);
}

#[tokio::test]
async fn assignment_and_config_delivery_need_a_data_plane_token_on_both_ports() {
    let (server, _tokens, _editor, viewer) = guarded().await;
    let mut assign = AssignmentServiceClient::new(server.channel().await);
    assert_eq!(
        code_of(assign.assign(ymal_request("u-1", "s-1")).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(
            assign
                .assign(with_token(ymal_request("u-1", "s-1"), viewer))
                .await
        ),
        Code::PermissionDenied
    );
    // Assignment follows the admin's config a moment after the start
    // is answered: wait for the started revision (config version 2).
    let mut answer = v1::AssignResponse::default();
    for _ in 0..100 {
        answer = assign
            .assign(with_token(ymal_request("u-1", "s-1"), DATA_PLANE_TOKEN))
            .await
            .expect("a data-plane token assigns")
            .into_inner();
        if answer.config_version >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!answer.variant.is_empty(), "{answer:?}");
    let mut config = ConfigServiceClient::new(server.channel().await);
    assert_eq!(
        code_of(
            config
                .get_config_snapshot(v1::GetConfigSnapshotRequest::default())
                .await
        ),
        Code::Unauthenticated
    );
    assert!(
        config
            .get_config_snapshot(with_token(
                v1::GetConfigSnapshotRequest::default(),
                DATA_PLANE_TOKEN
            ))
            .await
            .is_ok()
    );

    let body = r#"{"user_id": "u-1", "context": {"placement": "you_may_also_like"}}"#;
    let (status, refused) =
        http_post_with(server.http_addr, "/experiments/assign", &[], body).await;
    assert_eq!(status, 401, "{refused}");
    assert!(refused.contains("UNAUTHENTICATED"), "{refused}");
    let bearer = format!("Bearer {DATA_PLANE_TOKEN}");
    let (status, answer) = http_post_with(
        server.http_addr,
        "/experiments/assign",
        &[("Authorization", &bearer)],
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // Health and reflection stay open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    assert!(
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_data_plane_token_can_neither_read_nor_change_an_experiment() {
    let (server, _tokens, _editor, _viewer) = guarded().await;
    let mut admin = server.admin().await;
    let read = admin
        .get_experiment(with_token(
            v1::GetExperimentRequest {
                id: "reco_ymal_v1".into(),
            },
            DATA_PLANE_TOKEN,
        ))
        .await;
    assert_eq!(code_of(read), Code::PermissionDenied);
    let paused = admin
        .pause_experiment(with_token(
            v1::PauseExperimentRequest {
                id: "reco_ymal_v1".into(),
                ..Default::default()
            },
            DATA_PLANE_TOKEN,
        ))
        .await;
    assert_eq!(code_of(paused), Code::PermissionDenied);
    let results = v1::results_service_client::ResultsServiceClient::new(server.channel().await)
        .get_results(with_token(
            v1::GetResultsRequest {
                experiment_id: "reco_ymal_v1".into(),
                ..Default::default()
            },
            DATA_PLANE_TOKEN,
        ))
        .await;
    assert_eq!(code_of(results), Code::PermissionDenied);
}

#[tokio::test]
async fn a_sidecar_with_a_token_follows_its_admin_and_sends_it_exposures() {
    let (admin, _tokens, _editor, viewer) = guarded().await;
    let source = format!("http://{}", admin.grpc_addr);
    let sidecar = TestServer::start_with(&[
        "--services",
        "assign",
        "--config-source",
        &source,
        "--source-token",
        DATA_PLANE_TOKEN,
    ])
    .await;
    // The sidecar serves once it has the admin's config (its own Assign
    // is on loopback without a tokens file).
    let mut assign = AssignmentServiceClient::new(sidecar.channel().await);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let answer = loop {
        if let Ok(answer) = assign.assign(ymal_request("sidecar-user-1", "")).await
            && !answer.get_ref().variant.is_empty()
        {
            break answer.into_inner();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar never got the admin's config"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    sidecar.stop().await;
    // Its exposure reached the admin's log under its token.
    let data = admin.stop().await;
    let mut written = Vec::new();
    for file in exp_ingest::parquet::list(
        &data.path().join("events"),
        exp_core::event::EventKind::Exposure,
    )
    .expect("list")
    {
        for event in exp_ingest::parquet::read_events(&file, exp_core::event::EventKind::Exposure)
            .expect("read")
        {
            if let exp_core::event::Event::Exposure(exposure) = event {
                written.push((exposure.user_id, exposure.variant));
            }
        }
    }
    assert!(
        written.contains(&("sidecar-user-1".to_owned(), answer.variant.clone())),
        "{written:?}"
    );

    // A sidecar with a person's token never gets a config.
    let (admin, _tokens, _editor, _viewer) = guarded().await;
    let source = format!("http://{}", admin.grpc_addr);
    let refused = TestServer::start_with(&[
        "--services",
        "assign",
        "--config-source",
        &source,
        "--source-token",
        viewer,
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = AssignmentServiceClient::new(refused.channel().await)
        .assign(ymal_request("sidecar-user-2", ""))
        .await
        .expect_err("no config");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn metrics_need_a_token_that_may_read() {
    let (server, _tokens, editor, viewer) = guarded().await;
    let get = |token: Option<&'static str>| {
        let header = token.map(|token| format!("Bearer {token}"));
        async move {
            let headers: Vec<(&str, &str)> = header
                .as_deref()
                .map(|value| vec![("authorization", value)])
                .unwrap_or_default();
            exp_e2e::http_get_with(server.http_addr, "/metrics", &headers)
                .await
                .0
        }
    };
    assert_eq!(get(None).await, 401);
    assert_eq!(get(Some(DATA_PLANE_TOKEN)).await, 403);
    assert_eq!(get(Some(viewer)).await, 200);
    assert_eq!(get(Some(editor)).await, 200);
}
