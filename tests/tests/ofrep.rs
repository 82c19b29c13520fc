//! OpenFeature's Remote Evaluation Protocol on the HTTP port, against a
//! real `expd`: a flag's answer is `Assign`'s (variant and parameters)
//! with the protocol's reasons; every error code the protocol names; the
//! bulk answer's `ETag` and 304; CORS preflight; the data-plane token; a
//! single evaluation logs the exposure and a bulk one does not. (The
//! OpenFeature SDKs themselves are driven by `tests/ofrep/`.)

use std::time::{Duration, Instant};

use exp_e2e::{
    DATA_PLANE_TOKEN, HttpAnswer, TestServer, http_request, seed_experiment, with_token,
    write_tokens_file, ymal_request,
};
use exp_proto::v1::{
    self, assignment_service_client::AssignmentServiceClient,
    results_service_client::ResultsServiceClient,
};
use serde_json::{Value, json};

const FLAG: &str = "/ofrep/v1/evaluate/flags/reco_ymal_v1";
const FLAGS: &str = "/ofrep/v1/evaluate/flags";

async fn post(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> HttpAnswer {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http_request(server.http_addr, "POST", path, &all, &body.to_string()).await
}

fn json_of(answer: &HttpAnswer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|_| panic!("not JSON: {}", answer.body))
}

fn context(user: &str) -> Value {
    json!({"context": {"targetingKey": user, "session_id": format!("s-{user}"), "placement": "you_may_also_like"}})
}

/// A server with the seed running at 100%, answering `Assign`.
async fn running_seed() -> TestServer {
    let server = TestServer::start().await;
    let mut seed = seed_experiment();
    seed.traffic_percent = 100;
    exp_e2e::create_and_start(&mut server.admin().await, seed).await;
    exp_e2e::wait_until_assign_is_current(server.channel().await).await;
    server
}

#[tokio::test]
async fn a_flag_answers_the_variant_and_parameters_assign_gives() {
    let server = running_seed().await;
    let mut assign = AssignmentServiceClient::new(server.channel().await);
    for index in 0..200 {
        let user = format!("ofrep-user-{index}");
        let expected = assign
            .assign(ymal_request(&user, &format!("s-{user}")))
            .await
            .expect("assign")
            .into_inner();
        let answer = post(&server, FLAG, &[], &context(&user)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let flag = json_of(&answer);
        assert_eq!(flag["key"], "reco_ymal_v1");
        assert_eq!(flag["variant"], expected.variant.as_str(), "{user}");
        assert_eq!(flag["reason"], "SPLIT");
        let params = exp_proto::convert::struct_to_json(
            expected.params.as_ref().expect("params"),
            "params",
            &mut Vec::new(),
        );
        assert_eq!(
            flag["value"],
            Value::Object(params.into_iter().collect()),
            "{user}"
        );
        assert_eq!(flag["metadata"]["experiment_id"], "reco_ymal_v1");
        assert_eq!(flag["metadata"]["unit_type"], "user");
        assert!(
            flag["metadata"]["revision"]
                .as_u64()
                .is_some_and(|r| r >= 2)
        );
    }
}

#[tokio::test]
async fn every_error_the_protocol_names_is_answered_with_its_code_and_the_field() {
    let server = running_seed().await;
    let expect = |answer: &HttpAnswer, status: u16, code: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        let body = json_of(answer);
        assert_eq!(body["errorCode"], code, "{body}");
        body["errorDetails"].as_str().unwrap_or_default().to_owned()
    };
    let missing = post(
        &server,
        "/ofrep/v1/evaluate/flags/no_such_experiment",
        &[],
        &context("u-1"),
    )
    .await;
    expect(&missing, 404, "FLAG_NOT_FOUND");
    assert_eq!(json_of(&missing)["key"], "no_such_experiment");

    let parse = http_request(server.http_addr, "POST", FLAG, &[], "{\"context\": ").await;
    expect(&parse, 400, "PARSE_ERROR");
    let no_context = post(&server, FLAG, &[], &json!({"targetingKey": "u-1"})).await;
    assert!(expect(&no_context, 400, "INVALID_CONTEXT").contains("context"));
    let bad_value = post(
        &server,
        FLAG,
        &[],
        &json!({"context": {"targetingKey": "u-1", "placement": 3}}),
    )
    .await;
    assert!(expect(&bad_value, 400, "INVALID_CONTEXT").contains("context.placement"));
    let too_long = post(
        &server,
        FLAG,
        &[],
        &json!({"context": {"targetingKey": "u".repeat(10_000)}}),
    )
    .await;
    assert!(expect(&too_long, 400, "INVALID_CONTEXT").contains("context.targetingKey"));
    let no_unit = post(
        &server,
        FLAG,
        &[],
        &json!({"context": {"placement": "you_may_also_like"}}),
    )
    .await;
    expect(&no_unit, 400, "TARGETING_KEY_MISSING");
    let bulk_no_unit = post(&server, FLAGS, &[], &json!({"context": {}})).await;
    expect(&bulk_no_unit, 400, "TARGETING_KEY_MISSING");
    assert!(
        json_of(&bulk_no_unit).get("key").is_none(),
        "a bulk failure names no flag"
    );
}

#[tokio::test]
async fn the_reason_says_why_a_unit_got_its_value_or_none() {
    let server = running_seed().await;
    let mut admin = server.admin().await;
    let channel = server.channel().await;

    // Not eligible (another placement): DEFAULT, no value.
    let elsewhere = post(
        &server,
        FLAG,
        &[],
        &json!({"context": {"targetingKey": "u-1", "placement": "search_results"}}),
    )
    .await;
    let flag = json_of(&elsewhere);
    assert_eq!(flag["reason"], "DEFAULT", "{flag}");
    assert!(flag.get("value").is_none(), "{flag}");
    assert_eq!(flag["variant"], Value::Null, "{flag}");

    // A QA override: TARGETING_MATCH.
    let own = json_of(&post(&server, FLAG, &[], &context("qa-1")).await)["variant"]
        .as_str()
        .expect("a variant")
        .to_owned();
    let other = if own == "control" {
        "treatment"
    } else {
        "control"
    };
    admin
        .set_override(v1::SetOverrideRequest {
            qa_override: Some(v1::QaOverride {
                experiment_id: "reco_ymal_v1".into(),
                unit_type: v1::UnitType::User as i32,
                unit_id: "qa-1".into(),
                variant: other.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("override");
    exp_e2e::wait_until_assign_is_current(channel.clone()).await;
    let forced = json_of(&post(&server, FLAG, &[], &context("qa-1")).await);
    assert_eq!(
        (forced["reason"].as_str(), forced["variant"].as_str()),
        (Some("TARGETING_MATCH"), Some(other))
    );

    // Paused: DISABLED, no value.
    admin
        .pause_experiment(v1::PauseExperimentRequest {
            id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("pause");
    exp_e2e::wait_until_assign_is_current(channel.clone()).await;
    let paused = json_of(&post(&server, FLAG, &[], &context("u-1")).await);
    assert_eq!(paused["reason"], "DISABLED", "{paused}");
    assert!(paused.get("value").is_none(), "{paused}");
    assert_eq!(paused["metadata"]["status"], "paused");

    // Stopped, shipping the treatment: STATIC, everyone.
    admin
        .stop_experiment(v1::StopExperimentRequest {
            id: "reco_ymal_v1".into(),
            ship_variant: "treatment".into(),
            reason: "the treatment won".into(),
            ..Default::default()
        })
        .await
        .expect("stop");
    exp_e2e::wait_until_assign_is_current(channel).await;
    let shipped = json_of(&post(&server, FLAG, &[], &context("u-1")).await);
    assert_eq!(
        (shipped["reason"].as_str(), shipped["variant"].as_str()),
        (Some("STATIC"), Some("treatment"))
    );
}

#[tokio::test]
async fn the_bulk_answer_carries_an_etag_that_answers_304_until_the_config_or_context_changes() {
    let server = running_seed().await;
    let first = post(&server, FLAGS, &[], &context("u-1")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let flags = json_of(&first);
    let keys: Vec<&str> = flags["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(|f| f["key"].as_str())
        .collect();
    assert_eq!(keys, ["reco_ymal_v1"]);
    assert!(flags["metadata"]["config_version"].as_u64().is_some());
    let etag = first.header("etag").expect("an ETag").to_owned();

    let again = post(&server, FLAGS, &[("If-None-Match", &etag)], &context("u-1")).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let other_user = post(&server, FLAGS, &[("If-None-Match", &etag)], &context("u-2")).await;
    assert_eq!(other_user.status, 200, "another context is another answer");
    assert_ne!(other_user.header("etag"), Some(etag.as_str()));

    server
        .admin()
        .await
        .pause_experiment(v1::PauseExperimentRequest {
            id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("pause");
    exp_e2e::wait_until_assign_is_current(server.channel().await).await;
    let changed = post(&server, FLAGS, &[("If-None-Match", &etag)], &context("u-1")).await;
    assert_eq!(changed.status, 200, "a new config version is a new answer");
    assert_eq!(
        json_of(&changed)["flags"],
        json!([]),
        "a paused experiment gives no one a value"
    );
}

#[tokio::test]
async fn a_browser_may_call_it_from_another_origin() {
    let server = running_seed().await;
    let preflight = http_request(
        server.http_addr,
        "OPTIONS",
        FLAG,
        &[
            ("Origin", "https://shop.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type, if-none-match",
            ),
        ],
        "",
    )
    .await;
    assert!(
        preflight.status == 200 || preflight.status == 204,
        "{preflight:?}"
    );
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_lowercase();
    for header in ["authorization", "content-type", "if-none-match"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(
        preflight
            .header("access-control-allow-methods")
            .unwrap_or_default()
            .contains("POST")
    );

    let answer = post(
        &server,
        FLAGS,
        &[("Origin", "https://shop.example")],
        &context("u-1"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    assert!(
        answer
            .header("access-control-expose-headers")
            .unwrap_or_default()
            .to_lowercase()
            .contains("etag")
    );
}

#[tokio::test]
async fn with_a_tokens_file_it_takes_the_data_plane_token_and_nothing_else() {
    let tokens_dir = tempfile::tempdir().expect("dir");
    let (tokens_file, editor, _viewer) = write_tokens_file(tokens_dir.path());
    let server = TestServer::start_with(&["--tokens-file", &tokens_file]).await;
    let mut seed = seed_experiment();
    seed.traffic_percent = 100;
    let mut admin = server.admin().await;
    admin
        .create_experiment(with_token(
            v1::CreateExperimentRequest {
                experiment: Some(seed),
                reason: String::new(),
            },
            editor,
        ))
        .await
        .expect("create");
    admin
        .start_experiment(with_token(
            v1::StartExperimentRequest {
                id: "reco_ymal_v1".into(),
                ..Default::default()
            },
            editor,
        ))
        .await
        .expect("start");
    let none = post(&server, FLAG, &[], &context("u-1")).await;
    assert_eq!(none.status, 401, "{}", none.body);
    let bearer = format!("Bearer {editor}");
    let people = post(
        &server,
        FLAG,
        &[("Authorization", &bearer)],
        &context("u-1"),
    )
    .await;
    assert_eq!(people.status, 403, "{}", people.body);
    let data_plane = format!("Bearer {DATA_PLANE_TOKEN}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    loop {
        ticks.tick().await;
        let answer = post(
            &server,
            FLAG,
            &[("Authorization", &data_plane)],
            &context("u-1"),
        )
        .await;
        if answer.status == 200 && json_of(&answer)["reason"] == "SPLIT" {
            break;
        }
        // Assignment follows the start asynchronously: 404 until it has.
        assert!(Instant::now() < deadline, "{}", answer.body);
    }
    let preflight = http_request(
        server.http_addr,
        "OPTIONS",
        FLAG,
        &[
            ("Origin", "https://shop.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    )
    .await;
    assert!(
        preflight.status < 300,
        "a preflight carries no token and is answered: {preflight:?}"
    );
}

/// Units the results have counted as exposed.
async fn exposed(server: &TestServer) -> u64 {
    ResultsServiceClient::new(server.channel().await)
        .get_results(v1::GetResultsRequest {
            experiment_id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .map(|answer| {
            answer
                .into_inner()
                .variants
                .iter()
                .map(|v| v.exposed_units)
                .sum()
        })
        .unwrap_or_else(|status| {
            // Loading the log at start is "not yet"; anything else is a
            // failure of the service, not a count of 0.
            assert_eq!(
                status.code(),
                tonic::Code::Unavailable,
                "GetResults: {status}"
            );
            0
        })
}

/// Waits until the results count `units` exposed units. Exposures reach
/// the log through the exposure stage with no position to wait on, so
/// this asks again until a deadline.
async fn wait_for_exposed(server: &TestServer, units: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    loop {
        ticks.tick().await;
        let counted = exposed(server).await;
        assert!(
            counted <= units,
            "{counted} exposed units, more than the {units} evaluated"
        );
        if counted == units {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} of {units} exposures counted"
        );
    }
}

#[tokio::test]
async fn a_single_evaluation_logs_the_exposure_and_a_bulk_one_does_not() {
    let server = running_seed().await;
    for index in 0..30 {
        let answer = post(&server, FLAG, &[], &context(&format!("single-{index}"))).await;
        assert_eq!(json_of(&answer)["reason"], "SPLIT");
    }
    wait_for_exposed(&server, 30).await;
    for index in 0..30 {
        let answer = post(&server, FLAGS, &[], &context(&format!("bulk-{index}"))).await;
        assert_eq!(answer.status, 200);
    }
    // One more single evaluation: the queue is first in, first out, so
    // once it is counted, any exposure of the bulk calls would be too.
    post(&server, FLAG, &[], &context("last-single")).await;
    wait_for_exposed(&server, 31).await;
}
