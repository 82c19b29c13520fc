//! Assignment end to end: the admin's Assign, a sidecar following it, the
//! SDK evaluating locally and the HTTP JSON gateway all answer the same;
//! changes reach every watcher; WatchConfigs keeps a watcher exact.

use std::time::Duration;

use exp_client::{Client, ClientOptions};
use exp_core::evaluate::RequestContext;
use exp_e2e::{TestServer, seed_experiment};
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient, config_service_client::ConfigServiceClient,
    watch_configs_response::Payload,
};
use tonic::transport::Channel;

const UNITS: usize = 10_000;

/// Creates and starts the seed at 50% and a second-layer experiment at
/// 100% on every placement.
async fn launch(admin: &mut AdminServiceClient<Channel>) {
    let mut seed = seed_experiment();
    seed.traffic_percent = 50;
    let mut diversity = seed_experiment();
    diversity.id = "diversity_caps".into();
    diversity.layer = "diversity".into();
    diversity.traffic_percent = 100;
    diversity.eligibility = Some(v1::Eligibility::default());
    for (variant, cap) in diversity.variants.iter_mut().zip([5.0, 2.0]) {
        let mut params = prost_types::Struct::default();
        params.fields.insert(
            "diversity_max_per_brand".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(cap)),
            },
        );
        variant.params = Some(params);
    }
    for experiment in [seed, diversity] {
        let id = experiment.id.clone();
        admin
            .create_experiment(v1::CreateExperimentRequest {
                experiment: Some(experiment),
                reason: String::new(),
            })
            .await
            .expect("create");
        admin
            .start_experiment(v1::StartExperimentRequest {
                id,
                ..Default::default()
            })
            .await
            .expect("start");
    }
}

fn unit(index: usize) -> (String, String) {
    // Every fourth unit is anonymous: it is bucketed by its session.
    let user = if index % 4 == 3 {
        String::new()
    } else {
        format!("user-{index}")
    };
    (user, format!("session-{index}"))
}

fn ymal() -> RequestContext {
    RequestContext {
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        ..RequestContext::default()
    }
}

type Answer = Vec<(String, String)>;

async fn grpc_answers(channel: Channel) -> Vec<Answer> {
    let mut client = AssignmentServiceClient::new(channel);
    let mut answers = Vec::with_capacity(UNITS);
    for index in 0..UNITS {
        let (user_id, session_id) = unit(index);
        let response = client
            .assign(v1::AssignRequest {
                user_id,
                session_id,
                context: Some(v1::RequestContext {
                    placement: "you_may_also_like".into(),
                    page_type: "product_detail".into(),
                    ..Default::default()
                }),
                defer_exposure: false,
            })
            .await
            .expect("assign")
            .into_inner();
        answers.push(
            response
                .assignments
                .into_iter()
                .map(|a| (a.experiment_id, a.variant))
                .collect(),
        );
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_sidecar_and_sdk_give_every_unit_the_same_answer() {
    let admin_server = TestServer::start().await;
    launch(&mut admin_server.admin().await).await;
    let version = exp_e2e::current_config_version(admin_server.channel().await).await;
    exp_e2e::wait_for_assign_version(admin_server.channel().await, version).await;

    let source = format!("http://{}", admin_server.grpc_addr);
    let sidecar =
        TestServer::start_with(&["--services", "assign", "--config-source", &source]).await;
    exp_e2e::wait_for_assign_version(sidecar.channel().await, version).await;
    let sdk = Client::start(ClientOptions {
        endpoint: source.clone(),
        ..ClientOptions::default()
    })
    .expect("sdk");
    sdk.wait_for_version(version, Duration::from_secs(10))
        .await
        .expect("sdk config");

    let from_server = grpc_answers(admin_server.channel().await).await;
    let from_sidecar = grpc_answers(sidecar.channel().await).await;
    let from_sdk: Vec<Answer> = (0..UNITS)
        .map(|index| {
            let (user, session) = unit(index);
            sdk.assign(&user, &session, &ymal())
                .expect("local")
                .assignments
                .into_iter()
                .map(|a| (a.experiment_id.to_string(), a.variant.to_string()))
                .collect()
        })
        .collect();
    let in_seed = from_server
        .iter()
        .filter(|a| a.iter().any(|(e, _)| e == "reco_ymal_v1"))
        .count();
    assert!(
        (4_000..6_000).contains(&in_seed),
        "about half in the 50% experiment: {in_seed}"
    );
    assert!(
        from_server
            .iter()
            .all(|a| a.iter().any(|(e, _)| e == "diversity_caps"))
    );
    assert_eq!(from_sidecar, from_server, "sidecar differs from server");
    assert_eq!(from_sdk, from_server, "SDK differs from server");

    let data = admin_server.stop().await;
    let restarted = TestServer::start_in(data, &[]).await;
    exp_e2e::wait_for_assign_version(restarted.channel().await, version).await;
    assert_eq!(
        grpc_answers(restarted.channel().await).await,
        from_server,
        "restart changed answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_stop_take_effect_on_every_watcher() {
    let admin_server = TestServer::start().await;
    let mut admin = admin_server.admin().await;
    launch(&mut admin).await;
    let source = format!("http://{}", admin_server.grpc_addr);
    let sidecar =
        TestServer::start_with(&["--services", "assign", "--config-source", &source]).await;
    let sdk = Client::start(ClientOptions {
        endpoint: source,
        placements: vec!["you_may_also_like".into()],
        ..ClientOptions::default()
    })
    .expect("sdk");
    let seed_for = |answer: exp_core::evaluate::Evaluation| {
        answer
            .assignments
            .into_iter()
            .find(|a| &*a.experiment_id == "reco_ymal_v1")
            .map(|a| (a.variant.to_string(), a.reason))
    };
    // A unit inside the 50%.
    sdk.wait_for_config(Duration::from_secs(10))
        .await
        .expect("config");
    let user = (0..1000)
        .map(|i| format!("user-{i}"))
        .find(|user| seed_for(sdk.assign(user, "", &ymal()).expect("ok")).is_some())
        .expect("someone is in");

    admin
        .pause_experiment(v1::PauseExperimentRequest {
            id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("pause");
    let paused_version = exp_e2e::current_config_version(admin_server.channel().await).await;
    sdk.wait_for_version(paused_version, Duration::from_secs(10))
        .await
        .expect("sdk sees pause");
    assert_eq!(
        seed_for(sdk.assign(&user, "", &ymal()).expect("ok")),
        None,
        "paused on the SDK"
    );
    exp_e2e::wait_for_assign_version(sidecar.channel().await, paused_version).await;
    let on_sidecar = AssignmentServiceClient::new(sidecar.channel().await)
        .assign(exp_e2e::ymal_request(&user, ""))
        .await
        .expect("assign")
        .into_inner();
    assert!(
        on_sidecar
            .assignments
            .iter()
            .all(|a| a.experiment_id != "reco_ymal_v1"),
        "paused on the sidecar"
    );

    admin
        .stop_experiment(v1::StopExperimentRequest {
            id: "reco_ymal_v1".into(),
            reason: "treatment wins".into(),
            ship_variant: "treatment".into(),
            ..Default::default()
        })
        .await
        .expect("stop");
    let stopped_version = exp_e2e::current_config_version(admin_server.channel().await).await;
    sdk.wait_for_version(stopped_version, Duration::from_secs(10))
        .await
        .expect("sdk sees stop");
    for anyone in ["user-1", "user-2", "user-3", &user] {
        assert_eq!(
            seed_for(sdk.assign(anyone, "", &ymal()).expect("ok")),
            Some((
                "treatment".to_owned(),
                exp_core::evaluate::AssignmentReason::Shipped
            )),
        );
    }
}

#[tokio::test]
async fn watch_configs_sends_a_snapshot_then_deltas_and_heartbeats() {
    let server = TestServer::start_with(&["--config-heartbeat", "100ms"]).await;
    let mut admin = server.admin().await;
    launch(&mut admin).await;
    let version = exp_e2e::current_config_version(server.channel().await).await;
    let mut config = ConfigServiceClient::new(server.channel().await);

    let mut stream = config
        .watch_configs(v1::WatchConfigsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let first = stream.message().await.expect("ok").expect("message");
    let Some(Payload::Snapshot(snapshot)) = first.payload else {
        panic!("first message of a new watcher is a snapshot: {first:?}");
    };
    assert_eq!(
        (first.config_version, snapshot.experiments.len()),
        (version, 2)
    );

    admin
        .pause_experiment(v1::PauseExperimentRequest {
            id: "diversity_caps".into(),
            ..Default::default()
        })
        .await
        .expect("pause");
    let (mut saw_delta, mut saw_heartbeat) = (false, false);
    while !(saw_delta && saw_heartbeat) {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a message within 5 s")
            .expect("ok")
            .expect("message");
        match message.payload {
            Some(Payload::Delta(delta)) => {
                assert_eq!(message.config_version, version + 1);
                assert_eq!(delta.upserted_experiments.len(), 1);
                assert_eq!(
                    delta.upserted_experiments[0].status(),
                    v1::ExperimentStatus::Paused
                );
                saw_delta = true;
            }
            Some(Payload::Heartbeat(_)) => saw_heartbeat = true,
            other => panic!("unexpected {other:?}"),
        }
    }

    let reconnect = |known_version: u64, placements: Vec<String>| {
        let mut config = config.clone();
        async move {
            config
                .watch_configs(v1::WatchConfigsRequest {
                    known_version,
                    placements,
                    client_id: "test".into(),
                })
                .await
                .expect("watch")
                .into_inner()
                .message()
                .await
                .expect("ok")
                .expect("message")
        }
    };
    let up_to_date = reconnect(version + 1, vec![]).await;
    assert!(
        matches!(up_to_date.payload, Some(Payload::Heartbeat(_))),
        "nothing to send: {up_to_date:?}"
    );
    let behind = reconnect(version, vec![]).await;
    assert!(
        matches!(behind.payload, Some(Payload::Delta(_))),
        "only the changes: {behind:?}"
    );
    let filtered = reconnect(0, vec!["cart".into()]).await;
    let Some(Payload::Snapshot(cart)) = filtered.payload else {
        panic!("snapshot expected");
    };
    let ids: Vec<&str> = cart.experiments.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["diversity_caps"], "only what can apply on the cart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_is_resynchronised_not_truncated() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    launch(&mut admin).await;
    let mut config = ConfigServiceClient::new(server.channel().await);
    let mut stalled = config
        .watch_configs(v1::WatchConfigsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let first = stalled.message().await.expect("ok").expect("message");
    let Some(Payload::Snapshot(snapshot)) = first.payload else {
        panic!("snapshot first")
    };
    let mut held = exp_proto::serving::config_snapshot_from_proto(snapshot).expect("valid");

    // 400 changes of about 12 kB each while the watcher reads nothing:
    // more than the server buffers for it and more than HTTP/2 flow
    // control lets through. The admin is never held up by the watcher.
    let mut current = admin
        .get_experiment(v1::GetExperimentRequest {
            id: "reco_ymal_v1".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    if let Some(eligibility) = current.eligibility.as_mut() {
        eligibility
            .placements
            .extend((0..1000).map(|i| format!("placement_{i:04}")));
    }
    for index in 0..400 {
        current.traffic_percent = 10 + (index % 40);
        current = admin
            .update_experiment(v1::UpdateExperimentRequest {
                experiment: Some(current.clone()),
                ..Default::default()
            })
            .await
            .expect("update")
            .into_inner()
            .experiment
            .expect("experiment");
    }
    let target = exp_e2e::current_config_version(server.channel().await).await;
    let mut resynchronised = false;
    while held.version < target {
        let message = tokio::time::timeout(Duration::from_secs(10), stalled.message())
            .await
            .expect("the watcher catches up")
            .expect("ok")
            .expect("message");
        match message.payload {
            Some(Payload::Snapshot(snapshot)) => {
                resynchronised = true;
                held = exp_proto::serving::config_snapshot_from_proto(snapshot).expect("valid");
            }
            Some(Payload::Delta(delta)) => {
                let delta = exp_proto::serving::config_delta_from_proto(delta).expect("valid");
                held.apply(&delta, message.config_version);
            }
            _ => {}
        }
    }
    assert!(
        resynchronised,
        "a fresh snapshot replaced the changes it missed"
    );
    let truth = ConfigServiceClient::new(server.channel().await)
        .get_config_snapshot(v1::GetConfigSnapshotRequest::default())
        .await
        .expect("snapshot")
        .into_inner()
        .snapshot
        .expect("snapshot");
    let truth = exp_proto::serving::config_snapshot_from_proto(truth).expect("valid");
    assert_eq!(held, truth, "the watcher holds exactly the current config");
}

#[tokio::test]
async fn the_http_gateway_answers_the_seed_request_with_numbers_as_numbers() {
    let server = TestServer::start().await;
    launch(&mut server.admin().await).await;
    exp_e2e::wait_until_assign_is_current(server.channel().await).await;
    let body = r#"{"user_id": "user-5", "session_id": "session-5", "context": {"page_type": "product_detail", "placement": "you_may_also_like"}}"#;
    let (status, answer) = exp_e2e::http_post(server.http_addr, "/experiments/assign", body).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    assert!(
        answer["params"]["diversity_max_per_brand"].is_number(),
        "{answer}"
    );
    assert_eq!(answer["unit_type"], "user");
    let grpc = grpc_answers(server.channel().await).await;
    let from_http: Answer = answer["assignments"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| {
            (
                a["experiment_id"].as_str().expect("id").to_owned(),
                a["variant"].as_str().expect("v").to_owned(),
            )
        })
        .collect();
    assert_eq!(from_http, grpc[5], "HTTP and gRPC agree");
    if let Some(first) = from_http.first() {
        assert_eq!(answer["experiment_id"], first.0.as_str());
        assert_eq!(answer["variant"], first.1.as_str());
    }

    let (status, refused) = exp_e2e::http_post(
        server.http_addr,
        "/experiments/assign",
        r#"{"context": {}}"#,
    )
    .await;
    assert_eq!(status, 400);
    let refused: serde_json::Value = serde_json::from_str(&refused).expect("json error body");
    assert_eq!(refused["error"]["field_violations"][0]["field"], "user_id");
    let (status, malformed) =
        exp_e2e::http_post(server.http_addr, "/experiments/assign", "{not json").await;
    assert_eq!(status, 400);
    assert!(malformed.contains("INVALID_ARGUMENT"), "{malformed}");
}

#[tokio::test]
async fn watch_streams_beyond_the_limit_are_refused_not_queued() {
    let server = TestServer::start_with(&["--max-watchers", "2"]).await;
    let mut config = ConfigServiceClient::new(server.channel().await);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = config
            .watch_configs(v1::WatchConfigsRequest::default())
            .await
            .expect("within the limit")
            .into_inner();
        stream.message().await.expect("ok").expect("snapshot");
        open.push(stream);
    }
    let refused = config
        .watch_configs(v1::WatchConfigsRequest::default())
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    drop(open);
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(stream) = config
            .watch_configs(v1::WatchConfigsRequest::default())
            .await
        {
            reopened = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "closing streams frees their places");
}
