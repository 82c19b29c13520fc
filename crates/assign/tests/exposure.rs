//! Exposure emission: bucketed assignments offer a record with both ids
//! and the request's context; deferred, overridden and shipped ones do
//! not; a full queue drops and counts instead of waiting.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use exp_assign::{Assigner, ExposureQueue, SnapshotCell};
use exp_core::{
    ManualClock, ParamSchema, QaOverride, UnitType, allocation,
    evaluate::RequestContext,
    examples::seed_experiment,
    lifecycle::{self, Change, Transition},
    serving::ServingConfig,
};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The seed experiment started on 100% of its layer.
fn running_seed() -> exp_core::Experiment {
    let change = Change {
        now: now(),
        author: "t",
        reason: "",
    };
    let mut proposal = seed_experiment();
    proposal.traffic_percent = 100;
    let draft = lifecycle::create(&proposal, &ParamSchema::builtin(), change).expect("valid");
    let mut running = lifecycle::transition(&draft, &Transition::Start, change).expect("start");
    allocation::allocate(&mut running, Some(&draft), []).expect("fits");
    running
}

fn assigner(
    capacity: usize,
    overrides: &[QaOverride],
) -> (
    Assigner,
    ExposureQueue,
    tokio::sync::mpsc::Receiver<exp_assign::ExposureRecord>,
) {
    let running = running_seed();
    let cell = SnapshotCell::new();
    cell.install(&ServingConfig::build(3, &[running], overrides, now()));
    let (queue, receiver) = ExposureQueue::bounded(capacity);
    let clock = Arc::new(ManualClock::new(now()));
    (Assigner::new(cell, queue.clone(), clock), queue, receiver)
}

fn ymal() -> RequestContext {
    RequestContext {
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        ..RequestContext::default()
    }
}

#[test]
fn a_bucketed_assignment_offers_an_exposure_with_both_ids() {
    let (assigner, queue, mut receiver) = assigner(16, &[]);
    let answer = assigner
        .assign("u-1", "s-1", &ymal(), false)
        .expect("assigned");
    let record = receiver.try_recv().expect("one exposure");
    assert_eq!(&*record.experiment_id, "reco_ymal_v1");
    assert_eq!(record.variant, answer.assignments[0].variant);
    assert_eq!(
        (record.user_id.as_str(), record.session_id.as_str()),
        ("u-1", "s-1")
    );
    assert_eq!(record.unit_type, UnitType::User);
    assert_eq!(
        (record.placement.as_str(), record.page_type.as_str()),
        ("you_may_also_like", "product_detail")
    );
    assert_eq!((record.revision, record.timestamp), (2, now()));
    assert_eq!(queue.offered(), 1);
}

#[test]
fn a_deferred_exposure_is_not_logged() {
    let (assigner, queue, mut receiver) = assigner(16, &[]);
    assigner
        .assign("u-1", "s-1", &ymal(), true)
        .expect("assigned");
    assert!(receiver.try_recv().is_err());
    assert_eq!(queue.offered(), 0);
}

#[test]
fn a_qa_override_is_not_an_exposure() {
    let qa = QaOverride {
        experiment_id: "reco_ymal_v1".into(),
        unit_type: UnitType::User,
        unit_id: "qa".into(),
        variant: "treatment".into(),
        expire_time: None,
        reason: String::new(),
        create_time: now(),
        created_by: "qa".into(),
    };
    let (assigner, _queue, mut receiver) = assigner(16, &[qa]);
    let answer = assigner.assign("qa", "", &ymal(), false).expect("assigned");
    assert_eq!(&*answer.assignments[0].variant, "treatment");
    assert!(receiver.try_recv().is_err());
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking_assignment() {
    let (assigner, queue, _receiver) = assigner(2, &[]);
    for user in 0..10 {
        assigner
            .assign(&format!("u-{user}"), "", &ymal(), false)
            .expect("assigned");
    }
    assert_eq!((queue.offered(), queue.dropped()), (10, 8));
}

#[test]
fn no_config_yet_is_unavailable_not_an_empty_answer() {
    let (queue, _receiver) = ExposureQueue::bounded(1);
    let assigner = Assigner::new(
        SnapshotCell::new(),
        queue,
        Arc::new(ManualClock::new(now())),
    );
    assert!(matches!(
        assigner.assign("u-1", "", &ymal(), false),
        Err(exp_assign::AssignError::NoConfig)
    ));
}

#[test]
fn a_unit_refreshing_the_page_is_one_exposure_per_variant() {
    let (assigner, queue, mut receiver) = assigner(64, &[]);
    for _ in 0..25 {
        assigner
            .assign("u-1", "s-1", &ymal(), false)
            .expect("assigned");
    }
    assigner
        .assign("u-2", "s-2", &ymal(), false)
        .expect("assigned");
    let repeats = exp_assign::RepeatFilter::default();
    let mut users = Vec::new();
    while let Ok(record) = receiver.try_recv() {
        if repeats.is_first(&record) {
            users.push(record.user_id);
        }
    }
    assert_eq!(users, ["u-1", "u-2"]);
    assert_eq!((queue.offered(), repeats.repeats()), (26, 24));
}

#[test]
fn an_exposure_record_becomes_an_exposure_event_with_a_stable_event_id() {
    let (assigner, _queue, mut receiver) = assigner(16, &[]);
    assigner
        .assign("", "s-9", &ymal(), false)
        .expect("assigned");
    let record = receiver.try_recv().expect("one exposure");
    let first = record.clone().into_exposure();
    let again = record.into_exposure();
    assert_eq!(first.event_id, again.event_id, "a resend is a duplicate");
    assert!(first.event_id.starts_with("assign-"), "{}", first.event_id);
    assert_eq!(first.unit_type, UnitType::Session);
    assert_eq!(
        (first.session_id.as_str(), first.user_id.as_str()),
        ("s-9", "")
    );
    assert_eq!(first.timestamp, now());
}

#[test]
fn a_forgotten_exposure_passes_the_repeat_filter_again() {
    let (assigner, _queue, mut receiver) = assigner(16, &[]);
    for _ in 0..2 {
        assigner
            .assign("u-1", "s-1", &ymal(), false)
            .expect("assigned");
    }
    let first = receiver.try_recv().expect("first");
    let second = receiver.try_recv().expect("second");
    let repeats = exp_assign::RepeatFilter::default();
    assert!(repeats.is_first(&first));
    assert!(!repeats.is_first(&second), "a repeat");
    // The first was dropped on its way to the log: forget it.
    repeats.forget(&first.into_exposure());
    assert!(repeats.is_first(&second), "passes again");
}

fn exposure_of(user: &str) -> exp_assign::ExposureRecord {
    exp_assign::ExposureRecord {
        experiment_id: "exp-1".into(),
        variant: "treatment".into(),
        user_id: user.to_owned(),
        session_id: format!("s-{user}"),
        unit_type: UnitType::User,
        placement: "pdp".to_owned(),
        page_type: "product".to_owned(),
        revision: 1,
        timestamp: now(),
    }
}

#[test]
fn a_full_repeat_filter_remembers_each_new_unit_and_forgets_the_least_recent() {
    let repeats = exp_assign::RepeatFilter::with_capacity(100);
    // A flood of units seen once fills the filter many times over.
    for user in 0..1_000 {
        assert!(repeats.is_first(&exposure_of(&format!("flood-{user}"))));
        repeats.run_pending_tasks();
    }
    // A new unit is still remembered once the filter is full: its refresh,
    // after 50 other new units, is a repeat.
    for round in 0..20 {
        let refreshing = exposure_of(&format!("refreshing-{round}"));
        assert!(repeats.is_first(&refreshing));
        repeats.run_pending_tasks();
        for other in 0..50 {
            assert!(repeats.is_first(&exposure_of(&format!("other-{round}-{other}"))));
            repeats.run_pending_tasks();
        }
        assert!(
            !repeats.is_first(&refreshing),
            "round {round}: the refresh of a unit seen 50 units ago was logged again"
        );
    }
    // It holds the 100 most recent: 99 new units and, before them, the
    // last refresh. The unit before that went to make room.
    for tail in 0..99 {
        assert!(repeats.is_first(&exposure_of(&format!("tail-{tail}"))));
        repeats.run_pending_tasks();
    }
    assert_eq!(repeats.entry_count(), 100);
    assert!(
        !repeats.is_first(&exposure_of("refreshing-19")),
        "the 100th most recent is remembered"
    );
    assert!(
        repeats.is_first(&exposure_of("other-19-49")),
        "the 101st most recent is forgotten"
    );
}

/// An assigner of the seed (100% of traffic) with a holdout of half the
/// units of its layer.
fn assigner_with_holdout() -> (
    Assigner,
    exp_core::Holdout,
    tokio::sync::mpsc::Receiver<exp_assign::ExposureRecord>,
) {
    let running = running_seed();
    let holdout = exp_core::holdout::create(
        &exp_core::Holdout {
            id: "ymal_holdout".into(),
            description: String::new(),
            share_basis_points: 5_000,
            salt: String::new(),
            layers: vec![running.layer.clone()],
            placements: Vec::new(),
            status: exp_core::HoldoutStatus::Active,
            revision: 0,
            create_time: now(),
            update_time: now(),
            updated_by: String::new(),
        },
        now(),
        "t",
    )
    .expect("valid holdout");
    let cell = SnapshotCell::new();
    cell.install(
        &ServingConfig::build(3, &[running], &[], now())
            .with_holdouts(std::slice::from_ref(&holdout)),
    );
    let (queue, receiver) = ExposureQueue::bounded(16);
    let clock = Arc::new(ManualClock::new(now()));
    (Assigner::new(cell, queue, clock), holdout, receiver)
}

#[test]
fn both_groups_of_a_holdout_are_exposed_and_only_the_rest_gets_the_experiment() {
    let (assigner, holdout, mut receiver) = assigner_with_holdout();
    let held = (0..)
        .map(|i| format!("u-{i}"))
        .find(|u| holdout.holds_out(u))
        .expect("half are held out");
    let rest = (0..)
        .map(|i| format!("u-{i}"))
        .find(|u| !holdout.holds_out(u))
        .expect("half are not");

    let answer = assigner.assign(&held, "s", &ymal(), false).expect("ok");
    assert!(answer.primary().is_none(), "held out: no experiment");
    let record = receiver.try_recv().expect("the holdout's exposure");
    assert_eq!(
        (&*record.experiment_id, &*record.variant),
        ("ymal_holdout", "holdout")
    );
    assert_eq!(record.revision, holdout.revision);
    assert!(receiver.try_recv().is_err(), "no experiment exposure");

    let answer = assigner.assign(&rest, "s", &ymal(), false).expect("ok");
    assert_eq!(
        answer.primary().map(|a| &*a.experiment_id),
        Some("reco_ymal_v1")
    );
    let mut records = [
        receiver.try_recv().expect("one exposure"),
        receiver.try_recv().expect("another"),
    ];
    records.sort_by(|a, b| a.experiment_id.cmp(&b.experiment_id));
    assert_eq!(
        (&*records[0].experiment_id, records[0].user_id.as_str()),
        ("reco_ymal_v1", rest.as_str())
    );
    assert_eq!(
        (&*records[1].experiment_id, &*records[1].variant),
        ("ymal_holdout", "rest")
    );

    assigner.assign(&held, "s", &ymal(), true).expect("ok");
    assert!(receiver.try_recv().is_err(), "deferred: nothing logged");
}
