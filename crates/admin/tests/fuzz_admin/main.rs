//! Property tests of the admin's create and update path, through the
//! tonic service in process (conversion at the edge, the use cases, a
//! real sled store): episodes of calls on one experiment whose requests
//! are the seed's example with fields mutated (wrong types and ranges,
//! unknown enum numbers, non-finite numbers, impossible timestamps, huge
//! strings, masks naming anything).
//!
//! `PROPTEST_CASES` sets the number of episodes (256 by default); the
//! property prints how the calls ended.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use exp_admin::{Admin, AdminGrpc, Authenticator};
use exp_core::{
    Clock, ManualClock, ParamSchema,
    evaluate::{CompiledSnapshot, RequestContext},
    examples::seed_experiment,
    serving::ServingConfig,
};
use exp_proto::{
    convert::experiment_to_proto,
    serving::{config_snapshot_from_proto, config_snapshot_to_proto},
    status::{MAX_DESCRIPTION_CHARS, MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, MAX_VIOLATIONS},
    v1::{self, admin_service_server::AdminService},
};
use exp_store::Store;
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

mod mutations;

use mutations::*;

// === the admin under test ===

/// Episodes share a store for a while: opening one per episode would cost
/// more than the episode, and a store with thousands of experiments makes
/// every write scan them all.
const EPISODES_PER_STORE: u32 = 64;

struct Fixture {
    grpc: AdminGrpc,
    admin: Admin,
    clock: Arc<ManualClock>,
    episodes: Cell<u32>,
    // Removed on drop, after the store.
    _dir: tempfile::TempDir,
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

impl Fixture {
    fn new() -> Self {
        // The store flushes every write; on tmpfs that costs nothing, and
        // durability is not what these properties are about.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("temp dir");
        let clock = Arc::new(ManualClock::new(now()));
        let store = Arc::new(Store::open(dir.path()).expect("store"));
        let admin = Admin::new(store, Arc::new(ParamSchema::builtin()), clock.clone());
        Self {
            grpc: AdminGrpc::new(admin.clone(), Authenticator::open()),
            admin,
            clock,
            episodes: Cell::new(0),
            _dir: dir,
        }
    }
}

// === properties ===

/// An error answer must come from the table, name fields for bad input
/// and stay bounded, whatever the request echoed.
fn check_refusal(status: &Status) -> Result<&'static str, TestCaseError> {
    let outcome = match status.code() {
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        other => {
            return Err(TestCaseError::fail(format!(
                "{other:?} is no answer to a bad request: {}",
                status.message()
            )));
        }
    };
    prop_assert!(
        status.message().chars().count() <= MAX_MESSAGE_CHARS + 40,
        "a message of {} characters",
        status.message().chars().count()
    );
    if status.code() == Code::InvalidArgument {
        let details = status.get_details_bad_request();
        prop_assert!(details.is_some(), "no field named: {}", status.message());
        let violations = details.map(|d| d.field_violations).unwrap_or_default();
        prop_assert!((1..=MAX_VIOLATIONS).contains(&violations.len()));
        for violation in &violations {
            prop_assert!(!violation.field.is_empty(), "{violation:?}");
            prop_assert!(violation.field.chars().count() <= MAX_FIELD_CHARS + 40);
            prop_assert!(violation.description.chars().count() <= MAX_DESCRIPTION_CHARS + 40);
        }
    }
    Ok(outcome)
}

/// A written experiment reads back as answered.
async fn check_stored(
    fixture: &Fixture,
    answered: Option<v1::Experiment>,
) -> Result<v1::Experiment, TestCaseError> {
    let answered =
        answered.ok_or_else(|| TestCaseError::fail("an answer without its experiment"))?;
    let read = fixture
        .grpc
        .get_experiment(Request::new(v1::GetExperimentRequest {
            id: answered.id.clone(),
        }))
        .await
        .map_err(|status| TestCaseError::fail(format!("read back: {status}")))?
        .into_inner()
        .experiment;
    prop_assert_eq!(read.as_ref(), Some(&answered), "stored as answered");
    Ok(answered)
}

fn revision(base: Base, current: u64) -> u64 {
    match base {
        Base::Current => current,
        Base::Missing => 0,
        Base::Stale => current.saturating_sub(1),
        Base::Any(revision) => revision,
    }
}

/// Runs one episode: create, then the steps; returns how each call ended.
async fn episode(
    fixture: &Fixture,
    id: String,
    create: Vec<Mutation>,
    steps: Vec<Step>,
) -> Result<Vec<String>, TestCaseError> {
    let mut outcomes = Vec::new();
    let mut proposal = experiment_to_proto(&seed_experiment());
    proposal.id = id;
    // A layer of its own: episodes sharing a store do not compete.
    proposal.layer = String::new();
    for mutation in &create {
        apply(&mut proposal, mutation);
    }
    let validation = fixture
        .grpc
        .validate_experiment(Request::new(v1::ValidateExperimentRequest {
            experiment: Some(proposal.clone()),
            ..Default::default()
        }))
        .await;
    let created = fixture
        .grpc
        .create_experiment(Request::new(v1::CreateExperimentRequest {
            experiment: Some(proposal.clone()),
            reason: "fuzz".into(),
        }))
        .await;
    let mut current = match created {
        Ok(answer) => {
            outcomes.push("create: ok".to_owned());
            prop_assert!(
                validation.is_ok_and(|v| v.into_inner().valid),
                "Validate agrees"
            );
            check_stored(fixture, answer.into_inner().experiment).await?
        }
        Err(status) => {
            outcomes.push(format!("create: {}", check_refusal(&status)?));
            if status.code() == Code::InvalidArgument {
                prop_assert!(
                    validation.is_ok_and(|v| !v.into_inner().valid),
                    "Validate agrees"
                );
            }
            proposal
        }
    };
    for step in steps {
        let id = current.id.clone();
        let (name, answer) = match step {
            Step::Update {
                mutations,
                mask,
                base,
                rerandomize,
            } => {
                let mut proposed = current.clone();
                for mutation in &mutations {
                    apply(&mut proposed, mutation);
                }
                proposed.revision = revision(base, current.revision);
                let update_mask = Some(prost_types::FieldMask { paths: mask });
                let validation = fixture
                    .grpc
                    .validate_experiment(Request::new(v1::ValidateExperimentRequest {
                        experiment: Some(proposed.clone()),
                        update_mask: update_mask.clone(),
                        rerandomize,
                    }))
                    .await;
                let answer = fixture
                    .grpc
                    .update_experiment(Request::new(v1::UpdateExperimentRequest {
                        experiment: Some(proposed.clone()),
                        update_mask,
                        reason: "fuzz".into(),
                        rerandomize,
                    }))
                    .await
                    .map(|answer| answer.into_inner().experiment);
                // Validate answers what Update would, for an experiment
                // that exists.
                if proposed.id == id && current.revision > 0 {
                    let valid = validation.is_ok_and(|v| v.into_inner().valid);
                    match &answer {
                        Ok(_) => prop_assert!(valid, "Validate refused what Update took"),
                        Err(status) if status.code() != Code::NotFound => {
                            prop_assert!(!valid, "Validate took what Update refused: {status}");
                        }
                        Err(_) => {}
                    }
                }
                ("update", answer)
            }
            Step::Start(base) => {
                let request = v1::StartExperimentRequest {
                    id,
                    revision: revision(base, current.revision),
                    reason: "fuzz".into(),
                };
                let answer = fixture.grpc.start_experiment(Request::new(request)).await;
                ("start", answer.map(|a| a.into_inner().experiment))
            }
            Step::Pause => {
                let request = v1::PauseExperimentRequest {
                    id,
                    ..Default::default()
                };
                let answer = fixture.grpc.pause_experiment(Request::new(request)).await;
                ("pause", answer.map(|a| a.into_inner().experiment))
            }
            Step::Resume => {
                let request = v1::ResumeExperimentRequest {
                    id,
                    ..Default::default()
                };
                let answer = fixture.grpc.resume_experiment(Request::new(request)).await;
                ("resume", answer.map(|a| a.into_inner().experiment))
            }
            Step::Stop(ship_variant) => {
                let request = v1::StopExperimentRequest {
                    id,
                    ship_variant,
                    reason: "fuzz".into(),
                    ..Default::default()
                };
                let answer = fixture.grpc.stop_experiment(Request::new(request)).await;
                ("stop", answer.map(|a| a.into_inner().experiment))
            }
            Step::Archive => {
                let request = v1::ArchiveExperimentRequest {
                    id,
                    ..Default::default()
                };
                let answer = fixture.grpc.archive_experiment(Request::new(request)).await;
                ("archive", answer.map(|a| a.into_inner().experiment))
            }
            Step::Rollback(to_revision, rerandomize) => {
                let request = v1::RollbackExperimentRequest {
                    id,
                    to_revision,
                    rerandomize,
                    reason: "fuzz".into(),
                    ..Default::default()
                };
                let answer = fixture
                    .grpc
                    .rollback_experiment(Request::new(request))
                    .await;
                ("rollback", answer.map(|a| a.into_inner().experiment))
            }
            Step::Override(unit_type, unit_id, variant, expire_time) => {
                let request = v1::SetOverrideRequest {
                    qa_override: Some(v1::QaOverride {
                        experiment_id: id,
                        unit_type,
                        unit_id,
                        variant,
                        expire_time,
                        ..Default::default()
                    }),
                };
                let answer = fixture.grpc.set_override(Request::new(request)).await;
                match answer {
                    Ok(_) => outcomes.push("override: ok".to_owned()),
                    Err(status) => {
                        outcomes.push(format!("override: {}", check_refusal(&status)?));
                    }
                }
                continue;
            }
        };
        match answer {
            Ok(experiment) => {
                outcomes.push(format!("{name}: ok"));
                current = check_stored(fixture, experiment).await?;
            }
            Err(status) => outcomes.push(format!("{name}: {}", check_refusal(&status)?)),
        }
    }
    check_serving(fixture)?;
    // Out of the way of later episodes on this store.
    let _ = fixture
        .grpc
        .stop_experiment(Request::new(v1::StopExperimentRequest {
            id: current.id,
            reason: "episode over".into(),
            ..Default::default()
        }))
        .await;
    Ok(outcomes)
}

/// The serving config of what the store holds reaches replicas as it is,
/// and assigns variants of the experiments it holds.
fn check_serving(fixture: &Fixture) -> Result<(), TestCaseError> {
    let store = fixture.admin.store();
    let experiments = store
        .experiments()
        .map_err(|err| TestCaseError::fail(format!("listing: {err}")))?;
    let overrides = store
        .overrides(None)
        .map_err(|err| TestCaseError::fail(format!("overrides: {err}")))?;
    let config = ServingConfig::build(
        store.config_version(),
        &experiments,
        &overrides,
        fixture.clock.now(),
    );
    let received = config_snapshot_from_proto(config_snapshot_to_proto(&config, now()));
    prop_assert_eq!(
        received.as_ref(),
        Ok(&config),
        "replicas receive it as it is"
    );
    let snapshot = CompiledSnapshot::compile(&config);
    for (user_id, session_id) in [("u-1", ""), ("u-2", "s-2"), ("", "s-3")] {
        let context = RequestContext {
            placement: "you_may_also_like".into(),
            ..RequestContext::default()
        };
        let evaluation = snapshot
            .evaluate(user_id, session_id, &context, fixture.clock.now())
            .map_err(|err| TestCaseError::fail(format!("evaluate: {err}")))?;
        for assignment in &evaluation.assignments {
            let experiment = experiments
                .iter()
                .find(|e| e.id == *assignment.experiment_id);
            prop_assert!(
                experiment.is_some_and(|e| e.variant(&assignment.variant).is_some()),
                "{assignment:?} is no variant of a stored experiment"
            );
        }
    }
    Ok(())
}

#[test]
fn any_admin_call_is_answered_from_the_error_table_and_what_it_writes_is_stored_as_answered() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fixture = RefCell::new(Fixture::new());
    let next_id = Cell::new(0_u64);
    let outcomes = RefCell::new(BTreeMap::<String, u32>::new());
    let mut runner = TestRunner::new(Config {
        source_file: Some(file!()),
        // Beside this file: a tests/ file has no src/ to mirror.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    });
    let strategy = (mutations(), prop::collection::vec(step(), 1..6));
    let result = runner.run(&strategy, |(create, steps)| {
        if fixture.borrow().episodes.get() >= EPISODES_PER_STORE {
            fixture.replace(Fixture::new());
        }
        let fixture = fixture.borrow();
        fixture.episodes.set(fixture.episodes.get() + 1);
        next_id.set(next_id.get() + 1);
        let id = format!("fuzz_{}", next_id.get());
        let ended = runtime.block_on(episode(&fixture, id, create, steps))?;
        let mut outcomes = outcomes.borrow_mut();
        for outcome in ended {
            *outcomes.entry(outcome).or_default() += 1;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("admin_calls: {failure}");
    }
    let outcomes = outcomes.into_inner();
    let described: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
    println!(
        "property admin_calls: {} cases, {} calls ({})",
        runner.config().cases,
        outcomes.values().sum::<u32>(),
        described.join(", ")
    );
}
