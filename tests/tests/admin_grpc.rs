//! AdminService over real gRPC: a real expd on an ephemeral port, a real
//! tonic client.

use exp_e2e::{TestServer, seed_experiment, with_token, write_tokens_file};
use exp_proto::v1::{self, ExperimentStatus, RevisionAction, UnitType};
use prost_types::FieldMask;
use tonic::Code;
use tonic_types::StatusExt;

async fn create_seed(
    admin: &mut v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
) -> v1::Experiment {
    admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(seed_experiment()),
            reason: "launch plan".into(),
        })
        .await
        .expect("created")
        .into_inner()
        .experiment
        .expect("experiment")
}

#[tokio::test]
async fn create_get_list_and_update_round_trip_the_whole_experiment() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let created = create_seed(&mut admin).await;
    assert_eq!(created.revision, 1);
    assert_eq!(created.status(), ExperimentStatus::Draft);
    assert_eq!(created.updated_by, "anonymous");
    let params = &created.variants[1].params.as_ref().expect("params").fields;
    assert_eq!(
        params["rerank_weight_style"].kind,
        Some(prost_types::value::Kind::NumberValue(0.6)),
        "numbers stay numbers"
    );

    let got = admin
        .get_experiment(v1::GetExperimentRequest {
            id: "reco_ymal_v1".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!(got, created);

    let listed = admin
        .list_experiments(v1::ListExperimentsRequest {
            placement: "you_may_also_like".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.experiments.len(), 1);
    let none = admin
        .list_experiments(v1::ListExperimentsRequest {
            owner: "someone-else@example.com".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(none.experiments.is_empty());

    let mut edited = got.clone();
    edited.name = "Renamed".into();
    edited.traffic_percent = 25;
    let updated = admin
        .update_experiment(v1::UpdateExperimentRequest {
            experiment: Some(edited),
            update_mask: Some(FieldMask {
                paths: vec!["traffic_percent".into()],
            }),
            reason: "ramp".into(),
            rerandomize: false,
        })
        .await
        .expect("update")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!((updated.revision, updated.traffic_percent), (2, 25));
    assert_eq!(updated.name, created.name, "the mask kept the name");
}

#[tokio::test]
async fn an_update_from_a_stale_revision_is_aborted_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let created = create_seed(&mut admin).await;
    let mut first = created.clone();
    first.traffic_percent = 20;
    admin
        .update_experiment(v1::UpdateExperimentRequest {
            experiment: Some(first),
            ..Default::default()
        })
        .await
        .expect("first editor wins");
    let mut second = created.clone();
    second.traffic_percent = 30;
    let refused = admin
        .update_experiment(v1::UpdateExperimentRequest {
            experiment: Some(second),
            ..Default::default()
        })
        .await
        .expect_err("second editor is stale");
    assert_eq!(refused.code(), Code::Aborted);
    assert!(
        refused.message().contains("current revision is 2"),
        "{}",
        refused.message()
    );
    let current = admin
        .get_experiment(v1::GetExperimentRequest { id: created.id })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!(current.traffic_percent, 20);
}

fn broken_experiment() -> v1::Experiment {
    let mut broken = seed_experiment();
    broken.id = "Bad Id".into();
    broken.variants[1].weight = 40;
    broken.control_variant = "baseline".into();
    broken.traffic_percent = 150;
    broken.variants[1]
        .params
        .as_mut()
        .expect("params")
        .fields
        .insert(
            "rerank_weight_price".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(1.5)),
            },
        );
    broken
}

const BROKEN_PATHS: [&str; 5] = [
    "id",
    "variants[1].params.rerank_weight_price",
    "variants",
    "control_variant",
    "traffic_percent",
];

#[tokio::test]
async fn an_invalid_experiment_is_refused_with_every_field_path_in_bad_request_details() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let refused = admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(broken_experiment()),
            reason: String::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let details = refused
        .get_details_bad_request()
        .expect("google.rpc.BadRequest");
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, BROKEN_PATHS);
    for path in BROKEN_PATHS {
        assert!(
            refused.message().contains(path),
            "message lacks {path}: {}",
            refused.message()
        );
    }
    let missing = admin
        .create_experiment(v1::CreateExperimentRequest::default())
        .await
        .expect_err("refused");
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("experiment: is required"));
}

#[tokio::test]
async fn validate_is_a_dry_run_listing_every_problem() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let report = admin
        .validate_experiment(v1::ValidateExperimentRequest {
            experiment: Some(broken_experiment()),
            ..Default::default()
        })
        .await
        .expect("validated")
        .into_inner();
    assert!(!report.valid);
    let fields: Vec<&str> = report.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, BROKEN_PATHS);
    let clean = admin
        .validate_experiment(v1::ValidateExperimentRequest {
            experiment: Some(seed_experiment()),
            ..Default::default()
        })
        .await
        .expect("validated")
        .into_inner();
    assert!(clean.valid && clean.violations.is_empty());
    let listed = admin
        .list_experiments(v1::ListExperimentsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.experiments.is_empty(), "validation wrote nothing");
}

#[tokio::test]
async fn the_lifecycle_runs_start_pause_resume_stop_archive_and_refuses_illegal_moves() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let id = create_seed(&mut admin).await.id;
    let status_of = |e: Option<v1::Experiment>| e.expect("experiment").status();

    let started = admin
        .start_experiment(v1::StartExperimentRequest {
            id: id.clone(),
            revision: 1,
            reason: "go".into(),
        })
        .await
        .expect("start")
        .into_inner()
        .experiment;
    let salts = started
        .as_ref()
        .and_then(|e| e.randomization.clone())
        .expect("salts fixed");
    assert_eq!(salts.allocation_salt, "ymal_ranking:allocation");
    assert_eq!(status_of(started), ExperimentStatus::Running);

    let illegal = admin
        .resume_experiment(v1::ResumeExperimentRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("cannot resume a running experiment");
    assert_eq!(illegal.code(), Code::FailedPrecondition);

    let paused = admin
        .pause_experiment(v1::PauseExperimentRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("pause")
        .into_inner()
        .experiment;
    assert_eq!(status_of(paused), ExperimentStatus::Paused);
    let resumed = admin
        .resume_experiment(v1::ResumeExperimentRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner()
        .experiment;
    assert_eq!(status_of(resumed), ExperimentStatus::Running);

    let no_reason = admin
        .stop_experiment(v1::StopExperimentRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a stop needs a reason");
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    let stopped = admin
        .stop_experiment(v1::StopExperimentRequest {
            id: id.clone(),
            reason: "treatment wins".into(),
            ship_variant: "treatment".into(),
            ..Default::default()
        })
        .await
        .expect("stop")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!(stopped.status(), ExperimentStatus::Stopped);
    assert_eq!(stopped.shipped_variant, "treatment");

    let archived = admin
        .archive_experiment(v1::ArchiveExperimentRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect("archive")
        .into_inner()
        .experiment;
    assert_eq!(status_of(archived), ExperimentStatus::Archived);
    let frozen = admin
        .start_experiment(v1::StartExperimentRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("archived is final");
    assert_eq!(frozen.code(), Code::FailedPrecondition);
    let missing = admin
        .pause_experiment(v1::PauseExperimentRequest {
            id: "no_such_exp".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn revisions_record_every_change_and_rollback_restores_an_old_one() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let created = create_seed(&mut admin).await;
    admin
        .start_experiment(v1::StartExperimentRequest {
            id: created.id.clone(),
            ..Default::default()
        })
        .await
        .expect("start");
    let mut ramp = created.clone();
    ramp.revision = 2;
    ramp.traffic_percent = 50;
    admin
        .update_experiment(v1::UpdateExperimentRequest {
            experiment: Some(ramp),
            reason: "ramp to 50%".into(),
            ..Default::default()
        })
        .await
        .expect("ramp");
    let rolled = admin
        .rollback_experiment(v1::RollbackExperimentRequest {
            id: created.id.clone(),
            to_revision: 2,
            revision: 3,
            reason: "page load regressed".into(),
            rerandomize: false,
        })
        .await
        .expect("rollback")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!((rolled.revision, rolled.traffic_percent), (4, 10));
    assert_eq!(rolled.status(), ExperimentStatus::Running);

    let history = admin
        .list_experiment_revisions(v1::ListExperimentRevisionsRequest {
            id: created.id.clone(),
            ..Default::default()
        })
        .await
        .expect("revisions")
        .into_inner()
        .revisions;
    let summary: Vec<(u64, RevisionAction, &str)> = history
        .iter()
        .map(|r| (r.revision, r.action(), r.reason.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (4, RevisionAction::Rollback, "page load regressed"),
            (3, RevisionAction::Update, "ramp to 50%"),
            (2, RevisionAction::Start, ""),
            (1, RevisionAction::Create, "launch plan"),
        ]
    );
    assert_eq!(history[0].rolled_back_to, 2);
    assert_eq!(
        history[1]
            .experiment
            .as_ref()
            .expect("snapshot")
            .traffic_percent,
        50
    );
}

#[tokio::test]
async fn qa_overrides_are_set_listed_and_deleted() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let created = create_seed(&mut admin).await;
    let qa = |variant: &str| v1::QaOverride {
        experiment_id: created.id.clone(),
        unit_type: UnitType::User as i32,
        unit_id: "qa-user-1".into(),
        variant: variant.into(),
        reason: "QA of v3".into(),
        ..Default::default()
    };
    let stored = admin
        .set_override(v1::SetOverrideRequest {
            qa_override: Some(qa("treatment")),
        })
        .await
        .expect("set")
        .into_inner()
        .qa_override
        .expect("override");
    assert_eq!(stored.created_by, "anonymous");
    let refused = admin
        .set_override(v1::SetOverrideRequest {
            qa_override: Some(qa("nope")),
        })
        .await
        .expect_err("unknown variant");
    let details = refused.get_details_bad_request().expect("details");
    assert_eq!(details.field_violations[0].field, "qa_override.variant");
    let listed = admin
        .list_overrides(v1::ListOverridesRequest {
            experiment_id: created.id.clone(),
            include_expired: false,
        })
        .await
        .expect("list")
        .into_inner()
        .qa_overrides;
    assert_eq!(listed, [stored]);
    let delete = || v1::DeleteOverrideRequest {
        experiment_id: created.id.clone(),
        unit_type: UnitType::User as i32,
        unit_id: "qa-user-1".into(),
    };
    admin.delete_override(delete()).await.expect("deleted");
    assert_eq!(
        admin
            .delete_override(delete())
            .await
            .expect_err("gone")
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn tokens_give_viewers_reads_and_editors_changes_under_their_identity() {
    let tokens_dir = tempfile::tempdir().expect("dir");
    let (tokens_file, editor, viewer) = write_tokens_file(tokens_dir.path());
    let server = TestServer::start_with(&["--tokens-file", &tokens_file]).await;
    let mut admin = server.admin().await;

    let anonymous = admin
        .list_experiments(v1::ListExperimentsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let wrong = admin
        .list_experiments(with_token(
            v1::ListExperimentsRequest::default(),
            "not-a-real-token-at-all",
        ))
        .await
        .expect_err("unknown token");
    assert_eq!(wrong.code(), Code::Unauthenticated);

    let by_viewer = admin
        .create_experiment(with_token(
            v1::CreateExperimentRequest {
                experiment: Some(seed_experiment()),
                reason: String::new(),
            },
            viewer,
        ))
        .await
        .expect_err("viewers cannot create");
    assert_eq!(by_viewer.code(), Code::PermissionDenied);

    let created = admin
        .create_experiment(with_token(
            v1::CreateExperimentRequest {
                experiment: Some(seed_experiment()),
                reason: String::new(),
            },
            editor,
        ))
        .await
        .expect("editors create")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!(created.updated_by, "alice@example.com");

    let read = admin
        .get_experiment(with_token(
            v1::GetExperimentRequest {
                id: created.id.clone(),
            },
            viewer,
        ))
        .await
        .expect("viewers read");
    assert_eq!(
        read.into_inner().experiment.expect("experiment").id,
        created.id
    );
    let validated = admin
        .validate_experiment(with_token(
            v1::ValidateExperimentRequest {
                experiment: Some(seed_experiment()),
                ..Default::default()
            },
            viewer,
        ))
        .await;
    assert!(validated.is_ok(), "validation is a read");
    for denied in [
        admin
            .start_experiment(with_token(
                v1::StartExperimentRequest {
                    id: created.id.clone(),
                    ..Default::default()
                },
                viewer,
            ))
            .await
            .map(|_| ()),
        admin
            .set_override(with_token(v1::SetOverrideRequest::default(), viewer))
            .await
            .map(|_| ()),
    ] {
        assert_eq!(denied.expect_err("viewer").code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn a_restart_serves_every_change_made_before_it() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let created = create_seed(&mut admin).await;
    admin
        .start_experiment(v1::StartExperimentRequest {
            id: created.id.clone(),
            ..Default::default()
        })
        .await
        .expect("start");
    let data_dir = server.stop().await;
    let restarted = TestServer::start_in(data_dir, &[]).await;
    let mut admin = restarted.admin().await;
    let experiment = admin
        .get_experiment(v1::GetExperimentRequest { id: created.id })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    assert_eq!(
        (experiment.revision, experiment.status()),
        (2, ExperimentStatus::Running)
    );
}
