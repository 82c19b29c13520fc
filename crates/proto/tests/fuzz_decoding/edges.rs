//! The messages decoded: for each, example encodings to mutate and what
//! a service does with it once decoded.

use exp_core::{Error, UnitType, evaluate::CompiledSnapshot, examples::seed_experiment, validate};
use exp_proto::{
    convert::{
        experiment_to_proto, qa_override_from_proto, status_from_proto, unit_type_from_proto,
    },
    events::{
        decode_exposure, decode_outcome, encode_exposure, encode_outcome, exposure_from_proto,
        outcome_from_proto,
    },
    serving::{
        config_delta_from_proto, config_snapshot_from_proto, config_snapshot_to_proto,
        evaluation_to_proto, request_context_from_proto,
    },
    v1,
};
use proptest::prelude::*;
use prost::Message;

use crate::{Edge, Fixture, check_refusal, decoded, experiment_request, now, serve};

pub(crate) fn seed_proto() -> v1::Experiment {
    let mut experiment = experiment_to_proto(&seed_experiment());
    let eligibility = experiment.eligibility.get_or_insert_with(Default::default);
    eligibility.countries = vec!["US".into()];
    eligibility.attribute_rules = vec![v1::AttributeRule {
        attribute: "app_version".into(),
        operator: v1::AttributeOperator::SemverGreaterThanOrEqual as i32,
        values: vec!["5.2.0".into()],
    }];
    experiment.schedule = Some(v1::Schedule {
        start_time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 5,
        }),
    });
    let metrics = experiment.metrics.get_or_insert_with(Default::default);
    metrics.guardrails = vec![v1::Guardrail {
        metric: "page_load_time".into(),
        threshold: 0.1,
        action: v1::GuardrailAction::Pause as i32,
    }];
    experiment
}

pub(crate) fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

pub(crate) fn admin_edges() -> Vec<Edge> {
    let seed = seed_proto();
    vec![
        Edge {
            name: "CreateExperimentRequest",
            examples: vec![
                v1::CreateExperimentRequest {
                    experiment: Some(seed.clone()),
                    reason: "launch".into(),
                }
                .encode_to_vec(),
            ],
            take: |bytes, fixture| {
                let Some(request) = decoded::<v1::CreateExperimentRequest>(bytes) else {
                    return Ok(false);
                };
                experiment_request(request.experiment, &[], false, &fixture.seed)?;
                Ok(true)
            },
        },
        Edge {
            name: "UpdateExperimentRequest",
            examples: vec![
                v1::UpdateExperimentRequest {
                    experiment: Some(v1::Experiment {
                        revision: 2,
                        ..seed.clone()
                    }),
                    update_mask: mask(&["traffic_percent", "variants", "schedule.end_time"]),
                    reason: "ramp".into(),
                    rerandomize: true,
                }
                .encode_to_vec(),
            ],
            take: |bytes, fixture| {
                let Some(request) = decoded::<v1::UpdateExperimentRequest>(bytes) else {
                    return Ok(false);
                };
                let mask = request.update_mask.map(|m| m.paths).unwrap_or_default();
                experiment_request(
                    request.experiment,
                    &mask,
                    request.rerandomize,
                    &fixture.seed,
                )?;
                Ok(true)
            },
        },
        Edge {
            name: "ValidateExperimentRequest",
            examples: vec![
                v1::ValidateExperimentRequest {
                    experiment: Some(seed.clone()),
                    update_mask: mask(&["eligibility"]),
                    rerandomize: false,
                }
                .encode_to_vec(),
            ],
            take: |bytes, fixture| {
                let Some(request) = decoded::<v1::ValidateExperimentRequest>(bytes) else {
                    return Ok(false);
                };
                let mask = request.update_mask.map(|m| m.paths).unwrap_or_default();
                experiment_request(
                    request.experiment,
                    &mask,
                    request.rerandomize,
                    &fixture.seed,
                )?;
                Ok(true)
            },
        },
        Edge {
            name: "GetExperimentRequest",
            examples: vec![
                v1::GetExperimentRequest {
                    id: "reco_ymal_v1".into(),
                }
                .encode_to_vec(),
            ],
            take: |bytes, _| Ok(decoded::<v1::GetExperimentRequest>(bytes).is_some()),
        },
        Edge {
            name: "ListExperimentsRequest",
            examples: vec![
                v1::ListExperimentsRequest {
                    status: v1::ExperimentStatus::Running as i32,
                    placement: "you_may_also_like".into(),
                    owner: "reco-team@example.com".into(),
                    page_size: 20,
                    page_token: "reco_a".into(),
                }
                .encode_to_vec(),
            ],
            take: |bytes, _| {
                let Some(request) = decoded::<v1::ListExperimentsRequest>(bytes) else {
                    return Ok(false);
                };
                if let Err(violation) = status_from_proto(request.status, "status") {
                    check_refusal(Error::InvalidArgument(vec![violation]))?;
                }
                Ok(true)
            },
        },
        Edge {
            name: "lifecycle requests (Start, Pause, Resume, Stop, Archive)",
            examples: vec![
                v1::StopExperimentRequest {
                    id: "reco_ymal_v1".into(),
                    revision: 3,
                    reason: "ship it".into(),
                    ship_variant: "treatment".into(),
                }
                .encode_to_vec(),
            ],
            take: |bytes, _| {
                let decodes = [
                    decoded::<v1::StartExperimentRequest>(bytes).is_some(),
                    decoded::<v1::PauseExperimentRequest>(bytes).is_some(),
                    decoded::<v1::ResumeExperimentRequest>(bytes).is_some(),
                    decoded::<v1::StopExperimentRequest>(bytes).is_some(),
                    decoded::<v1::ArchiveExperimentRequest>(bytes).is_some(),
                ];
                Ok(decodes.contains(&true))
            },
        },
        Edge {
            name: "revision requests (ListExperimentRevisions, RollbackExperiment)",
            examples: vec![
                v1::RollbackExperimentRequest {
                    id: "reco_ymal_v1".into(),
                    to_revision: 2,
                    revision: 3,
                    reason: "page load".into(),
                    rerandomize: true,
                }
                .encode_to_vec(),
                v1::ListExperimentRevisionsRequest {
                    id: "reco_ymal_v1".into(),
                    page_size: 10,
                    page_token: "4".into(),
                }
                .encode_to_vec(),
            ],
            take: |bytes, _| {
                let rollback = decoded::<v1::RollbackExperimentRequest>(bytes).is_some();
                let list = decoded::<v1::ListExperimentRevisionsRequest>(bytes).is_some();
                Ok(rollback || list)
            },
        },
        Edge {
            name: "SetOverrideRequest",
            examples: vec![
                v1::SetOverrideRequest {
                    qa_override: Some(v1::QaOverride {
                        experiment_id: "reco_ymal_v1".into(),
                        unit_type: v1::UnitType::User as i32,
                        unit_id: "u-qa-1".into(),
                        variant: "treatment".into(),
                        expire_time: Some(prost_types::Timestamp {
                            seconds: 1_900_000_000,
                            nanos: 0,
                        }),
                        reason: "QA".into(),
                        ..Default::default()
                    }),
                }
                .encode_to_vec(),
            ],
            take: |bytes, fixture| {
                let Some(request) = decoded::<v1::SetOverrideRequest>(bytes) else {
                    return Ok(false);
                };
                let Some(proto) = request.qa_override else {
                    return Ok(true);
                };
                match qa_override_from_proto(proto, now(), "fuzz") {
                    Ok(qa_override) => {
                        let violations = validate::qa_override(&qa_override, &fixture.seed, now());
                        if !violations.is_empty() {
                            check_refusal(Error::InvalidArgument(violations))?;
                        }
                    }
                    Err(violations) => check_refusal(Error::InvalidArgument(violations))?,
                }
                Ok(true)
            },
        },
        Edge {
            name: "override requests (DeleteOverride, ListOverrides)",
            examples: vec![
                v1::DeleteOverrideRequest {
                    experiment_id: "reco_ymal_v1".into(),
                    unit_type: v1::UnitType::Session as i32,
                    unit_id: "s-1".into(),
                }
                .encode_to_vec(),
                v1::ListOverridesRequest {
                    experiment_id: "reco_ymal_v1".into(),
                    include_expired: true,
                }
                .encode_to_vec(),
            ],
            take: |bytes, _| {
                let list = decoded::<v1::ListOverridesRequest>(bytes).is_some();
                let Some(request) = decoded::<v1::DeleteOverrideRequest>(bytes) else {
                    return Ok(list);
                };
                if let Err(violation) = unit_type_from_proto(request.unit_type, "unit_type") {
                    check_refusal(Error::InvalidArgument(vec![violation]))?;
                }
                Ok(true)
            },
        },
    ]
}

pub(crate) fn data_plane_edges(fixture: &Fixture) -> Vec<Edge> {
    let exposure = v1::Exposure {
        event_id: "e-1".into(),
        experiment_id: "reco_ymal_v1".into(),
        variant: "treatment".into(),
        user_id: "u-1".into(),
        session_id: "s-1".into(),
        unit_type: v1::UnitType::User as i32,
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        revision: 2,
        timestamp: Some(now().into()),
    };
    let outcome = v1::Outcome {
        event_id: "o-1".into(),
        r#type: v1::OutcomeType::Purchase as i32,
        session_id: "s-1".into(),
        item_id: "sku-1".into(),
        item_ids: vec!["sku-1".into(), "sku-2".into()],
        value: 59.9,
        currency: "EUR".into(),
        quantity: 2,
        timestamp: Some(now().into()),
        attributes: [("k".to_owned(), "v".to_owned())].into(),
        ..Default::default()
    };
    let snapshot = config_snapshot_to_proto(&fixture.config, now());
    vec![
        Edge {
            name: "AssignRequest",
            examples: vec![
                v1::AssignRequest {
                    user_id: "u-18224".into(),
                    session_id: "s-5f1c9a".into(),
                    context: Some(v1::RequestContext {
                        page_type: "product_detail".into(),
                        placement: "you_may_also_like".into(),
                        country: "US".into(),
                        device: "mobile".into(),
                        attributes: [("app_version".to_owned(), "5.3.1".to_owned())].into(),
                    }),
                    defer_exposure: true,
                }
                .encode_to_vec(),
            ],
            take: |bytes, fixture| {
                let Some(request) = decoded::<v1::AssignRequest>(bytes) else {
                    return Ok(false);
                };
                let context = request_context_from_proto(request.context);
                let snapshot = CompiledSnapshot::compile(&fixture.config);
                match snapshot.evaluate(&request.user_id, &request.session_id, &context, now()) {
                    Ok(evaluation) => {
                        for assignment in &evaluation.assignments {
                            prop_assert!(fixture.seed.variant(&assignment.variant).is_some());
                        }
                        evaluation_to_proto(&evaluation).encode_to_vec();
                    }
                    Err(error) => check_refusal(error)?,
                }
                Ok(true)
            },
        },
        Edge {
            name: "config requests (WatchConfigs, GetConfigSnapshot)",
            examples: vec![
                v1::WatchConfigsRequest {
                    known_version: 7,
                    placements: vec!["you_may_also_like".into(), "home".into()],
                    client_id: "rec-service-7".into(),
                }
                .encode_to_vec(),
                v1::GetConfigSnapshotRequest {
                    placements: vec!["you_may_also_like".into()],
                }
                .encode_to_vec(),
            ],
            take: |bytes, fixture| {
                let watch = decoded::<v1::WatchConfigsRequest>(bytes).map(|r| r.placements);
                let get = decoded::<v1::GetConfigSnapshotRequest>(bytes).map(|r| r.placements);
                for placements in watch.iter().chain(&get) {
                    serve(&fixture.config.for_placements(placements))?;
                }
                Ok(watch.is_some() || get.is_some())
            },
        },
        Edge {
            name: "event requests (LogExposures, LogOutcomes)",
            examples: vec![
                v1::LogExposuresRequest {
                    exposures: vec![exposure],
                }
                .encode_to_vec(),
                v1::LogOutcomesRequest {
                    outcomes: vec![outcome],
                }
                .encode_to_vec(),
            ],
            take: |bytes, _| {
                // Validation (exp-ingest) decides what is logged; the
                // conversions and the log's encoding take anything.
                let exposures = decoded::<v1::LogExposuresRequest>(bytes);
                for exposure in exposures.iter().flat_map(|r| r.exposures.clone()) {
                    let exposure = exposure_from_proto(exposure, UnitType::Session);
                    let mut record = Vec::new();
                    encode_exposure(&exposure, &mut record);
                    prop_assert!(decode_exposure(&record).is_ok());
                }
                let outcomes = decoded::<v1::LogOutcomesRequest>(bytes);
                for outcome in outcomes.iter().flat_map(|r| r.outcomes.clone()) {
                    if let Some(outcome) = outcome_from_proto(outcome) {
                        let mut record = Vec::new();
                        encode_outcome(&outcome, &mut record);
                        prop_assert!(decode_outcome(&record).is_ok());
                    }
                }
                Ok(exposures.is_some() || outcomes.is_some())
            },
        },
        Edge {
            name: "results requests (GetResults, GetResultsTimeline)",
            examples: vec![
                v1::GetResultsRequest {
                    experiment_id: "reco_ymal_v1".into(),
                    alpha: 0.05,
                    min_position: 193_273_528_320,
                }
                .encode_to_vec(),
                v1::GetResultsTimelineRequest {
                    experiment_id: "reco_ymal_v1".into(),
                    granularity: v1::TimelineGranularity::Hour as i32,
                    alpha: 0.01,
                }
                .encode_to_vec(),
            ],
            take: |bytes, _| {
                let results = decoded::<v1::GetResultsRequest>(bytes).is_some();
                let timeline = decoded::<v1::GetResultsTimelineRequest>(bytes).is_some();
                Ok(results || timeline)
            },
        },
        Edge {
            name: "config answers a replica decodes (GetConfigSnapshot, WatchConfigs)",
            examples: vec![
                v1::GetConfigSnapshotResponse {
                    snapshot: Some(snapshot.clone()),
                }
                .encode_to_vec(),
                v1::WatchConfigsResponse {
                    config_version: 8,
                    payload: Some(v1::watch_configs_response::Payload::Delta(
                        v1::ConfigDelta {
                            upserted_experiments: snapshot.experiments.clone(),
                            removed_experiment_ids: vec!["old".into()],
                            upserted_qa_overrides: Vec::new(),
                            removed_qa_overrides: Vec::new(),
                            ..Default::default()
                        },
                    )),
                }
                .encode_to_vec(),
            ],
            take: |bytes, fixture| {
                let snapshot = decoded::<v1::GetConfigSnapshotResponse>(bytes);
                if let Some(proto) = snapshot.as_ref().and_then(|r| r.snapshot.clone()) {
                    match config_snapshot_from_proto(proto) {
                        Ok(config) => serve(&config)?,
                        Err(violations) => check_refusal(Error::InvalidArgument(violations))?,
                    }
                }
                let watched = decoded::<v1::WatchConfigsResponse>(bytes);
                if let Some(v1::watch_configs_response::Payload::Delta(delta)) =
                    watched.as_ref().and_then(|r| r.payload.clone())
                {
                    match config_delta_from_proto(delta) {
                        Ok(delta) => {
                            let mut config = fixture.config.clone();
                            config.apply(&delta, config.version + 1);
                            serve(&config)?;
                        }
                        Err(violations) => check_refusal(Error::InvalidArgument(violations))?,
                    }
                }
                Ok(snapshot.is_some() || watched.is_some())
            },
        },
    ]
}
