//! Holdouts against a real `expd`: created through `AdminService`, they
//! reach assignment with the next config version; a held-out unit gets no
//! experiment of the held-out layer and is answered HOLDOUT, the others
//! keep their experiment; both groups' exposures reach the event log, and
//! `GetResults` compares them.

use exp_e2e::{
    TestServer, http_post, launch_seed_everywhere, results_when, wait_until_assign_is_current,
    ymal_request,
};
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient,
};
use tonic::{Code, transport::Channel};

/// The seed experiment's layer.
const LAYER: &str = "ymal_ranking";

fn field_of(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

fn ymal_holdout(id: &str) -> v1::Holdout {
    v1::Holdout {
        id: id.into(),
        description: "what the YMAL ranking layer adds up to".into(),
        share_basis_points: 2_000,
        layers: vec![LAYER.into()],
        ..Default::default()
    }
}

async fn create_holdout(
    admin: &mut AdminServiceClient<Channel>,
    holdout: v1::Holdout,
) -> Result<v1::Holdout, tonic::Status> {
    admin
        .create_holdout(v1::CreateHoldoutRequest {
            holdout: Some(holdout),
        })
        .await
        .map(|answer| answer.into_inner().holdout.expect("the holdout"))
}

/// Whether `user` is held out by `holdout`, by the published rule:
/// bucket(salt, unit) below the share.
fn holds_out(holdout: &v1::Holdout, user: &str) -> bool {
    exp_core::bucketing::bucket(&holdout.salt, user) < holdout.share_basis_points
}

#[tokio::test]
async fn a_holdout_keeps_its_units_out_of_its_layer_and_results_compare_its_groups() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    launch_seed_everywhere(&mut admin).await;

    let holdout = create_holdout(&mut admin, ymal_holdout("ymal_holdout"))
        .await
        .expect("created");
    assert_eq!(holdout.salt, "ymal_holdout:holdout");
    assert_eq!(holdout.revision, 1);
    assert_eq!(holdout.status, v1::HoldoutStatus::Active as i32);
    wait_until_assign_is_current(channel.clone()).await;
    let snapshot = v1::config_service_client::ConfigServiceClient::new(channel.clone())
        .get_config_snapshot(v1::GetConfigSnapshotRequest::default())
        .await
        .expect("snapshot")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(snapshot.holdouts.len(), 1, "the serving config carries it");
    assert_eq!(snapshot.holdouts[0].salt, holdout.salt);

    let mut assign = AssignmentServiceClient::new(channel.clone());
    let users: Vec<String> = (0..300).map(|index| format!("h-{index}")).collect();
    let mut held_out = 0_u64;
    for user in &users {
        let answer = assign
            .assign(ymal_request(user, &format!("s-{user}")))
            .await
            .expect("assign")
            .into_inner();
        if holds_out(&holdout, user) {
            held_out += 1;
            assert_eq!(
                answer.experiment_id, "",
                "{user} is held out: no experiment"
            );
            assert_eq!(answer.assignments.len(), 1, "{:?}", answer.assignments);
            let marker = &answer.assignments[0];
            assert_eq!(marker.reason, v1::AssignmentReason::Holdout as i32);
            assert_eq!(marker.holdout_id, "ymal_holdout");
            assert_eq!(marker.revision, 1);
            assert_eq!(
                (marker.experiment_id.as_str(), marker.layer.as_str()),
                ("", "")
            );
        } else {
            assert_eq!(
                answer.experiment_id, "reco_ymal_v1",
                "{user} is not held out"
            );
            assert!(answer.assignments.iter().all(|a| a.holdout_id.is_empty()));
        }
    }
    assert!(held_out > 0 && held_out < users.len() as u64);

    // Both groups' exposures went to the event log, which results read.
    let results = results_when(channel.clone(), "ymal_holdout", |results| {
        results
            .variants
            .iter()
            .map(|v| v.exposed_units)
            .sum::<u64>()
            == users.len() as u64
    })
    .await;
    let groups: Vec<(&str, bool, u64)> = results
        .variants
        .iter()
        .map(|v| (v.variant.as_str(), v.is_control, v.exposed_units))
        .collect();
    assert_eq!(
        groups,
        [
            ("holdout", true, held_out),
            ("rest", false, users.len() as u64 - held_out)
        ]
    );
    assert_eq!(results.variants[0].metrics[0].metric, "add_to_cart_rate");
    // The experiment's own results count only the units it served.
    let seed = results_when(channel.clone(), "reco_ymal_v1", |results| {
        results
            .variants
            .iter()
            .map(|v| v.exposed_units)
            .sum::<u64>()
            == users.len() as u64 - held_out
    })
    .await;
    assert_eq!(seed.variants.len(), 2);

    // OFREP: the held-out unit's flag is DEFAULT (no value), naming the
    // holdout; the bulk answer lists no experiment and names the holdout.
    let held_user = users
        .iter()
        .find(|user| holds_out(&holdout, user))
        .expect("one was held out");
    let body = serde_json::json!({"context": {
        "targetingKey": held_user, "placement": "you_may_also_like"
    }})
    .to_string();
    let (status, flag) = http_post(
        server.http_addr,
        "/ofrep/v1/evaluate/flags/reco_ymal_v1",
        &body,
    )
    .await;
    assert_eq!(status, 200, "{flag}");
    let flag: serde_json::Value = serde_json::from_str(&flag).expect("JSON");
    assert_eq!(flag["reason"], "DEFAULT", "{flag}");
    assert_eq!(flag["variant"], serde_json::Value::Null);
    assert_eq!(flag["metadata"]["holdout_id"], "ymal_holdout", "{flag}");
    let (status, flags) = http_post(server.http_addr, "/ofrep/v1/evaluate/flags", &body).await;
    assert_eq!(status, 200, "{flags}");
    let flags: serde_json::Value = serde_json::from_str(&flags).expect("JSON");
    assert_eq!(flags["flags"], serde_json::json!([]), "{flags}");
    assert_eq!(
        flags["metadata"]["holdout_ids"],
        serde_json::json!(["ymal_holdout"])
    );

    // Ended, it holds nobody out any more.
    admin
        .end_holdout(v1::EndHoldoutRequest {
            id: "ymal_holdout".into(),
            revision: 1,
        })
        .await
        .expect("ended");
    wait_until_assign_is_current(channel.clone()).await;
    let answer = assign
        .assign(ymal_request(held_user, "s"))
        .await
        .expect("assign")
        .into_inner();
    assert_eq!(answer.experiment_id, "reco_ymal_v1");
}

#[tokio::test]
async fn a_holdout_may_not_take_an_experiments_id_nor_be_malformed() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    launch_seed_everywhere(&mut admin).await;

    let taken = create_holdout(&mut admin, ymal_holdout("reco_ymal_v1"))
        .await
        .expect_err("an experiment has the id");
    assert_eq!(taken.code(), Code::InvalidArgument);
    assert_eq!(field_of(&taken), "holdout.id");
    assert!(
        taken.message().contains("experiment"),
        "{}",
        taken.message()
    );

    let mut no_scope = ymal_holdout("no_scope_holdout");
    no_scope.layers.clear();
    let refused = create_holdout(&mut admin, no_scope)
        .await
        .expect_err("names nothing");
    assert_eq!(field_of(&refused), "holdout.layers");

    let mut too_big = ymal_holdout("big_holdout");
    too_big.share_basis_points = 6_000;
    let refused = create_holdout(&mut admin, too_big)
        .await
        .expect_err("over half");
    assert_eq!(field_of(&refused), "holdout.share_basis_points");

    let unknown = admin
        .get_holdout(v1::GetHoldoutRequest {
            id: "no_such_holdout".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_caller_deferring_exposures_is_told_both_groups_and_logging_them_fills_the_comparison() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    launch_seed_everywhere(&mut admin).await;
    let holdout = create_holdout(&mut admin, ymal_holdout("deferred_holdout"))
        .await
        .expect("created");
    wait_until_assign_is_current(channel.clone()).await;

    let mut assign = AssignmentServiceClient::new(channel.clone());
    let mut exposures = Vec::new();
    let mut held_out = 0_u64;
    for index in 0..200 {
        let user = format!("d-{index}");
        let mut request = ymal_request(&user, &format!("s-{user}"));
        request.defer_exposure = true;
        let answer = assign.assign(request).await.expect("assign").into_inner();
        // Every answer in scope names the unit's group, held out or not.
        assert_eq!(answer.holdouts.len(), 1, "{user}: {answer:?}");
        let group = &answer.holdouts[0];
        assert_eq!(group.holdout_id, holdout.id);
        assert_eq!(group.revision, holdout.revision);
        let expected = if holds_out(&holdout, &user) {
            held_out += 1;
            "holdout"
        } else {
            "rest"
        };
        assert_eq!(group.group, expected, "{user}");
        // What the caller logs when it renders.
        exposures.push(v1::Exposure {
            event_id: format!("{user}-{}", group.holdout_id),
            experiment_id: group.holdout_id.clone(),
            variant: group.group.clone(),
            user_id: user.clone(),
            session_id: format!("s-{user}"),
            unit_type: group.unit_type,
            placement: "you_may_also_like".into(),
            page_type: "product_detail".into(),
            revision: group.revision,
            timestamp: Some(std::time::SystemTime::now().into()),
        });
    }
    assert!(held_out > 0 && held_out < 200, "{held_out} held out");
    let logged = v1::event_service_client::EventServiceClient::new(channel.clone())
        .log_exposures(v1::LogExposuresRequest { exposures })
        .await
        .expect("logged")
        .into_inner();
    assert!(logged.rejections.is_empty(), "{:?}", logged.rejections);
    let results = results_when(channel.clone(), &holdout.id, |results| {
        results
            .variants
            .iter()
            .map(|v| v.exposed_units)
            .sum::<u64>()
            == 200
    })
    .await;
    let units: Vec<(String, u64)> = results
        .variants
        .iter()
        .map(|variant| (variant.variant.clone(), variant.exposed_units))
        .collect();
    assert_eq!(
        units,
        vec![
            ("holdout".to_owned(), held_out),
            ("rest".to_owned(), 200 - held_out)
        ]
    );
}
