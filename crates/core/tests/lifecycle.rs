//! Status transitions (legal and illegal, from every status), the change
//! rules of each status, field masks, stale revisions, rollback and layer
//! capacity.

use std::time::{Duration, SystemTime};

use exp_core::{
    Error, Experiment, ParamSchema, Status,
    examples::seed_experiment,
    lifecycle::{self, Change, Transition, Update},
};
use serde_json::json;

const ALL_STATUSES: [Status; 7] = [
    Status::Draft,
    Status::Scheduled,
    Status::Running,
    Status::Paused,
    Status::Stopped,
    Status::Completed,
    Status::Archived,
];

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn change(reason: &str) -> Change<'_> {
    Change {
        now: now(),
        author: "alice@example.com",
        reason,
    }
}

fn created() -> Experiment {
    lifecycle::create(&seed_experiment(), &ParamSchema::builtin(), change("new")).expect("valid")
}

fn in_status(status: Status) -> Experiment {
    let mut experiment = created();
    if status != Status::Draft {
        experiment =
            lifecycle::transition(&experiment, &Transition::Start, change("go")).expect("start");
    }
    experiment.status = status;
    experiment
}

#[test]
fn create_makes_a_draft_at_revision_1_with_author_and_times() {
    let experiment = created();
    assert_eq!(experiment.status, Status::Draft);
    assert_eq!(experiment.revision, 1);
    assert_eq!(experiment.updated_by, "alice@example.com");
    assert_eq!(experiment.create_time, now());
    assert!(experiment.randomization.is_none());
}

#[test]
fn create_refuses_an_invalid_experiment_with_every_violation() {
    let mut proposal = seed_experiment();
    proposal.traffic_percent = 101;
    proposal.control_variant = "nope".into();
    match lifecycle::create(&proposal, &ParamSchema::builtin(), change("")) {
        Err(Error::InvalidArgument(violations)) => assert_eq!(violations.len(), 2),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn every_transition_is_legal_exactly_from_its_documented_statuses() {
    let legal: &[(Transition, &[Status], Status)] = &[
        (Transition::Start, &[Status::Draft], Status::Running),
        (Transition::Pause, &[Status::Running], Status::Paused),
        (Transition::Resume, &[Status::Paused], Status::Running),
        (
            Transition::Stop { ship_variant: None },
            &[
                Status::Scheduled,
                Status::Running,
                Status::Paused,
                Status::Completed,
            ],
            Status::Stopped,
        ),
        (
            Transition::Archive,
            &[Status::Draft, Status::Stopped, Status::Completed],
            Status::Archived,
        ),
    ];
    for (transition, from, to) in legal {
        for status in ALL_STATUSES {
            let current = in_status(status);
            let outcome = lifecycle::transition(&current, transition, change("because"));
            if from.contains(&status) {
                let next =
                    outcome.unwrap_or_else(|err| panic!("{transition:?} from {status}: {err}"));
                assert_eq!(next.status, *to, "{transition:?} from {status}");
                assert_eq!(next.revision, current.revision + 1);
                assert_eq!(next.status_reason, "because");
            } else {
                match outcome {
                    Err(Error::FailedPrecondition(message)) => {
                        assert!(message.contains(status.as_str()), "{message}")
                    }
                    other => {
                        panic!("{transition:?} from {status} should be refused, got {other:?}")
                    }
                }
            }
        }
    }
}

#[test]
fn start_fixes_salts_from_layer_and_experiment() {
    let running =
        lifecycle::transition(&created(), &Transition::Start, change("go")).expect("start");
    let salts = running.randomization.expect("salts fixed at start");
    assert_eq!(salts.allocation_salt, "ymal_ranking:allocation");
    assert_eq!(salts.variant_salt, "reco_ymal_v1:variant:2");
}

#[test]
fn start_before_the_start_time_schedules_and_the_schedule_activates_it() {
    let mut draft = created();
    draft.schedule.start_time = Some(now() + Duration::from_secs(3600));
    let scheduled = lifecycle::transition(&draft, &Transition::Start, change("")).expect("start");
    assert_eq!(scheduled.status, Status::Scheduled);
    assert!(matches!(
        lifecycle::transition(&scheduled, &Transition::Activate, change("")),
        Err(Error::FailedPrecondition(_))
    ));
    let later = Change {
        now: now() + Duration::from_secs(3600),
        ..change("")
    };
    let running =
        lifecycle::transition(&scheduled, &Transition::Activate, later).expect("activate");
    assert_eq!(running.status, Status::Running);
}

#[test]
fn start_after_the_end_time_is_refused() {
    let mut draft = created();
    draft.schedule.end_time = Some(now() - Duration::from_secs(1));
    assert!(matches!(
        lifecycle::transition(&draft, &Transition::Start, change("")),
        Err(Error::FailedPrecondition(message)) if message.contains("end_time")
    ));
}

#[test]
fn the_schedule_completes_running_and_paused_experiments_at_their_end_time() {
    for status in [Status::Running, Status::Paused] {
        let mut current = in_status(status);
        current.schedule.end_time = Some(now() + Duration::from_secs(60));
        assert!(lifecycle::transition(&current, &Transition::Complete, change("")).is_err());
        let at_end = Change {
            now: now() + Duration::from_secs(60),
            ..change("")
        };
        let completed =
            lifecycle::transition(&current, &Transition::Complete, at_end).expect("complete");
        assert_eq!(completed.status, Status::Completed);
    }
}

#[test]
fn stop_needs_a_reason_and_ships_only_an_existing_variant() {
    let running = in_status(Status::Running);
    match lifecycle::transition(
        &running,
        &Transition::Stop {
            ship_variant: Some("winner".into()),
        },
        change(" "),
    ) {
        Err(Error::InvalidArgument(violations)) => {
            let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
            assert_eq!(fields, ["reason", "ship_variant"]);
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let stopped = lifecycle::transition(
        &running,
        &Transition::Stop {
            ship_variant: Some("treatment".into()),
        },
        change("treatment wins"),
    )
    .expect("stop");
    assert_eq!(stopped.shipped_variant.as_deref(), Some("treatment"));
    assert_eq!(stopped.status_reason, "treatment wins");
}

fn update(
    current: &Experiment,
    proposed: &Experiment,
    mask: &[&str],
    rerandomize: bool,
) -> Result<Experiment, Error> {
    let mask: Vec<String> = mask.iter().map(|path| path.to_string()).collect();
    lifecycle::update(
        current,
        Update {
            proposed,
            mask: &mask,
            rerandomize,
        },
        &ParamSchema::builtin(),
        change("edit"),
    )
}

#[test]
fn an_update_based_on_a_stale_revision_is_refused() {
    let current = in_status(Status::Running);
    let mut proposed = current.clone();
    proposed.revision -= 1;
    proposed.name = "new name".into();
    assert!(matches!(
        update(&current, &proposed, &[], false),
        Err(Error::StaleRevision { based_on, current: now_at }) if based_on + 1 == now_at
    ));
}

#[test]
fn an_update_without_a_base_revision_is_refused_as_invalid() {
    let current = in_status(Status::Running);
    let mut proposed = current.clone();
    proposed.revision = 0;
    match update(&current, &proposed, &[], false) {
        Err(Error::InvalidArgument(violations)) => {
            assert_eq!(violations[0].field, "revision");
            assert!(violations[0].description.contains("current one is 2"));
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn a_field_mask_takes_only_the_named_fields() {
    let current = created();
    let mut proposed = current.clone();
    proposed.traffic_percent = 40;
    proposed.name = "ignored".into();
    let next = update(&current, &proposed, &["traffic_percent"], false).expect("update");
    assert_eq!(next.traffic_percent, 40);
    assert_eq!(next.name, current.name);
    assert_eq!(next.revision, 2);
}

#[test]
fn a_field_mask_refuses_unknown_and_output_only_paths() {
    let current = created();
    match update(&current, &current, &["traffic", "status"], false) {
        Err(Error::InvalidArgument(violations)) => {
            let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
            assert_eq!(fields, ["update_mask.paths[0]", "update_mask.paths[1]"]);
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn a_draft_may_change_anything() {
    let current = created();
    let mut proposed = current.clone();
    proposed.layer = "other_layer".into();
    proposed.variants[0].weight = 90;
    proposed.variants[1].weight = 10;
    proposed.variants[1].name = "v3_model".into();
    proposed.bucketing_unit = exp_core::BucketingUnit::Session;
    assert!(update(&current, &proposed, &[], false).is_ok());
}

#[test]
fn a_running_experiment_ramps_and_retunes_but_keeps_its_structure() {
    let current = in_status(Status::Running);

    let mut ramp = current.clone();
    ramp.traffic_percent = 50;
    let ramped = update(&current, &ramp, &[], false).expect("ramp");
    assert_eq!(ramped.traffic_percent, 50);
    assert_eq!(
        ramped.randomization, current.randomization,
        "a ramp keeps the salts"
    );

    let mut retune = current.clone();
    retune.variants[1]
        .params
        .insert("rerank_weight_style".into(), json!(0.7));
    retune.eligibility.countries = vec!["US".into()];
    retune.name = "renamed".into();
    assert!(update(&current, &retune, &[], false).is_ok());

    for (label, mutate) in [
        (
            "layer",
            Box::new(|e: &mut Experiment| e.layer = "elsewhere".into())
                as Box<dyn Fn(&mut Experiment)>,
        ),
        (
            "bucketing_unit",
            Box::new(|e: &mut Experiment| e.bucketing_unit = exp_core::BucketingUnit::User),
        ),
        (
            "variants (names or count)",
            Box::new(|e: &mut Experiment| e.variants[1].name = "renamed".into()),
        ),
        (
            "schedule.start_time",
            Box::new(|e: &mut Experiment| e.schedule.start_time = Some(now())),
        ),
    ] {
        let mut proposed = current.clone();
        mutate(&mut proposed);
        match update(&current, &proposed, &[], false) {
            Err(Error::FailedPrecondition(message)) => {
                assert!(message.contains(label), "{message}")
            }
            other => panic!("{label}: expected FailedPrecondition, got {other:?}"),
        }
    }
}

#[test]
fn weights_of_a_started_experiment_change_only_with_rerandomization() {
    let current = in_status(Status::Running);
    let mut proposed = current.clone();
    proposed.variants[0].weight = 80;
    proposed.variants[1].weight = 20;
    assert!(matches!(
        update(&current, &proposed, &[], false),
        Err(Error::FailedPrecondition(message)) if message.contains("rerandomize")
    ));
    let next = update(&current, &proposed, &[], true).expect("re-randomised");
    let (old, new) = (
        current.randomization.expect("old"),
        next.randomization.expect("new"),
    );
    assert_eq!(new.allocation_salt, old.allocation_salt, "who is in stays");
    assert_ne!(
        new.variant_salt, old.variant_salt,
        "which arm is drawn again"
    );
}

#[test]
fn an_ended_experiment_only_changes_its_description() {
    for status in [Status::Stopped, Status::Completed] {
        let current = in_status(status);
        let mut describe = current.clone();
        describe.description = "what we learned".into();
        assert!(update(&current, &describe, &[], false).is_ok());
        let mut ramp = current.clone();
        ramp.traffic_percent = 90;
        assert!(matches!(
            update(&current, &ramp, &[], false),
            Err(Error::FailedPrecondition(_))
        ));
    }
}

#[test]
fn an_archived_experiment_is_read_only() {
    let current = in_status(Status::Archived);
    let mut proposed = current.clone();
    proposed.description = "x".into();
    assert!(matches!(
        update(&current, &proposed, &[], false),
        Err(Error::FailedPrecondition(message)) if message.contains("archived")
    ));
}

#[test]
fn rollback_restores_an_old_configuration_and_keeps_the_status() {
    let v1 = in_status(Status::Running);
    let mut proposed = v1.clone();
    proposed.traffic_percent = 50;
    proposed.variants[1]
        .params
        .insert("rerank_weight_style".into(), json!(0.9));
    let v2 = update(&v1, &proposed, &[], false).expect("update");
    let v3 = lifecycle::rollback(&v2, &v1, false, &ParamSchema::builtin(), change("undo"))
        .expect("rollback");
    assert_eq!(v3.revision, v2.revision + 1);
    assert_eq!(v3.traffic_percent, 10);
    assert_eq!(v3.variants, v1.variants);
    assert_eq!(v3.status, Status::Running);
    assert_eq!(v3.randomization, v2.randomization);
}

#[test]
fn a_layer_holds_at_most_100_percent_of_traffic() {
    let mut a = in_status(Status::Running);
    a.id = "exp_a".into();
    a.traffic_percent = 60;
    let mut b = in_status(Status::Running);
    b.id = "exp_b".into();
    b.traffic_percent = 50;
    match lifecycle::check_layer_capacity(&b, [&a]) {
        Err(Error::InvalidArgument(violations)) => {
            assert_eq!(violations[0].field, "traffic_percent");
            assert!(
                violations[0].description.contains("40% is free"),
                "{}",
                violations[0].description
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    b.traffic_percent = 40;
    assert!(lifecycle::check_layer_capacity(&b, [&a]).is_ok());
    b.traffic_percent = 50;
    b.layer = "another_layer".into();
    assert!(
        lifecycle::check_layer_capacity(&b, [&a]).is_ok(),
        "layers are independent"
    );
    b.layer = a.layer.clone();
    a.status = Status::Stopped;
    assert!(
        lifecycle::check_layer_capacity(&b, [&a]).is_ok(),
        "a stopped experiment frees its share"
    );
    a.status = Status::Paused;
    assert!(
        lifecycle::check_layer_capacity(&b, [&a]).is_err(),
        "a paused experiment keeps its share"
    );
}

#[test]
fn a_scheduled_experiment_past_its_start_time_is_live_for_the_change_rules() {
    let mut draft = created();
    draft.schedule.start_time = Some(now() + Duration::from_secs(60));
    let scheduled = lifecycle::transition(&draft, &Transition::Start, change("")).expect("start");
    let mut reweighted = scheduled.clone();
    reweighted.variants[0].weight = 70;
    reweighted.variants[1].weight = 30;
    assert!(
        update(&scheduled, &reweighted, &[], false).is_ok(),
        "before its start time it serves nobody"
    );
    let after_start = Change {
        now: now() + Duration::from_secs(61),
        ..change("")
    };
    let mask: Vec<String> = Vec::new();
    let refused = lifecycle::update(
        &scheduled,
        Update {
            proposed: &reweighted,
            mask: &mask,
            rerandomize: false,
        },
        &ParamSchema::builtin(),
        after_start,
    );
    assert!(
        matches!(refused, Err(Error::FailedPrecondition(_))),
        "it assigns by the clock already"
    );
}
