//! Property tests of the wire edge: random bytes, and valid encodings
//! with bits flipped, bytes cut or spliced in, decoded as every request
//! message of the `experiments.v1` services (and as the config answers a
//! replica or SDK decodes); whatever decodes goes through the conversions
//! of this crate and the domain's validation, as the services do.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 by
//! default); each property prints how its cases ended.

use std::time::{Duration, SystemTime};

use exp_core::{
    Error, ParamSchema, UnitType,
    evaluate::CompiledSnapshot,
    examples::seed_experiment,
    lifecycle::{self, Change, Transition, Update},
    serving::ServingConfig,
    validate,
};
use exp_proto::{
    convert::{experiment_from_proto, experiment_to_proto},
    serving::evaluation_to_proto,
    status::{MAX_DESCRIPTION_CHARS, MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, MAX_VIOLATIONS},
    to_status, v1,
};
use proptest::{prelude::*, test_runner::TestCaseError};
use prost::Message;
use tonic_types::StatusExt;

mod edges;

use edges::{admin_edges, data_plane_edges};

// === runner ===

#[path = "../../../../tests/support/fuzz_check.rs"]
mod fuzz_check;

use fuzz_check::check;

// === bytes ===

/// Bytes to decode: random ones, or one of `examples` encoded, with bits
/// flipped, cut short or with bytes spliced in.
fn bytes_like(examples: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop::sample::select(examples),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..3),
        prop::option::weighted(
            0.2,
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(any::<u8>(), 1..8),
            ),
        ),
        prop::option::weighted(0.1, any::<prop::sample::Index>()),
    )
        .prop_map(|(mut bytes, flips, splice, cut)| {
            if bytes.is_empty() {
                return bytes;
            }
            for (at, bit) in flips {
                let at = at.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
            if let Some((at, inserted)) = splice {
                let at = at.index(bytes.len());
                bytes.splice(at..at, inserted);
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            bytes
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..200),
        4 => mutated,
    ]
}

// === what the services do with what decodes ===

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn change() -> Change<'static> {
    Change {
        now: now(),
        author: "fuzz",
        reason: "fuzz",
    }
}

/// The seed's example, created and started at 100% of its traffic: what
/// requests are applied to.
fn running_seed() -> exp_core::Experiment {
    let mut seed = seed_experiment();
    seed.traffic_percent = 100;
    let schema = ParamSchema::builtin();
    let created = lifecycle::create(&seed, &schema, change()).expect("valid");
    let mut started = lifecycle::transition(&created, &Transition::Start, change()).expect("start");
    exp_core::allocation::allocate(&mut started, Some(&created), []).expect("fits");
    started
}

/// A refusal as a caller sees it: named fields, bounded.
fn check_refusal(error: Error) -> Result<(), TestCaseError> {
    if let Error::InvalidArgument(violations) = &error {
        prop_assert!(!violations.is_empty());
        for violation in violations {
            prop_assert!(!violation.field.is_empty(), "{violation:?}");
        }
    }
    let status = to_status(error);
    prop_assert!(status.message().chars().count() <= MAX_MESSAGE_CHARS + 40);
    if let Some(details) = status.get_details_bad_request() {
        prop_assert!(details.field_violations.len() <= MAX_VIOLATIONS);
        for violation in &details.field_violations {
            prop_assert!(violation.field.chars().count() <= MAX_FIELD_CHARS + 40);
            prop_assert!(violation.description.chars().count() <= MAX_DESCRIPTION_CHARS + 40);
        }
    }
    Ok(())
}

/// An experiment of Create, Update or Validate, and the update mask.
fn experiment_request(
    experiment: Option<v1::Experiment>,
    mask: &[String],
    rerandomize: bool,
    current: &exp_core::Experiment,
) -> Result<(), TestCaseError> {
    let Some(experiment) = experiment else {
        return Ok(());
    };
    let proposed = match experiment_from_proto(experiment) {
        Ok(proposed) => proposed,
        Err(violations) => return check_refusal(Error::InvalidArgument(violations)),
    };
    let schema = ParamSchema::builtin();
    let violations = validate::experiment(&proposed, &schema);
    match lifecycle::create(&proposed, &schema, change()) {
        Ok(_) => {
            prop_assert!(violations.is_empty());
            // An accepted experiment crosses the wire both ways unchanged.
            let back = experiment_from_proto(experiment_to_proto(&proposed));
            prop_assert_eq!(back.as_ref(), Ok(&proposed));
        }
        Err(error) => check_refusal(error)?,
    }
    let update = Update {
        proposed: &proposed,
        mask,
        rerandomize,
    };
    if let Err(error) = lifecycle::update(current, update, &schema, change()) {
        check_refusal(error)?;
    }
    Ok(())
}

/// A serving config a replica received: it compiles and assigns variants
/// of its experiments.
fn serve(config: &ServingConfig) -> Result<(), TestCaseError> {
    let snapshot = CompiledSnapshot::compile(config);
    let placements = config
        .experiments
        .iter()
        .flat_map(|e| e.eligibility.placements.first().cloned())
        .chain([String::new()]);
    for placement in placements {
        let context = exp_core::evaluate::RequestContext {
            placement,
            ..Default::default()
        };
        for (user_id, session_id) in [("u-1", "s-1"), ("", "s-2")] {
            let evaluation = match snapshot.evaluate(user_id, session_id, &context, now()) {
                Ok(evaluation) => evaluation,
                Err(error) => return check_refusal(error),
            };
            for assignment in &evaluation.assignments {
                let experiment = config
                    .experiments
                    .iter()
                    .find(|e| e.id == *assignment.experiment_id);
                prop_assert!(
                    experiment
                        .is_some_and(|e| e.variants.iter().any(|v| v.name == *assignment.variant)),
                    "{assignment:?} is no variant of the config"
                );
            }
            evaluation_to_proto(&evaluation).encode_to_vec();
        }
    }
    Ok(())
}

/// One message type: its name, example encodings, and what a service
/// does with it once decoded (`Ok(false)`: it did not decode).
struct Edge {
    name: &'static str,
    examples: Vec<Vec<u8>>,
    take: fn(&[u8], &Fixture) -> Result<bool, TestCaseError>,
}

struct Fixture {
    seed: exp_core::Experiment,
    config: ServingConfig,
}

fn decoded<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

fn fixture() -> Fixture {
    let seed = running_seed();
    let qa = exp_core::QaOverride {
        experiment_id: seed.id.clone(),
        unit_type: UnitType::User,
        unit_id: "u-qa-1".into(),
        variant: "treatment".into(),
        expire_time: None,
        reason: String::new(),
        create_time: now(),
        created_by: String::new(),
    };
    let config = ServingConfig::build(7, std::slice::from_ref(&seed), &[qa], now());
    Fixture { seed, config }
}

/// Checks every edge of `edges` on bytes made for it.
fn check_edges(name: &str, fixture: &Fixture, edges: Vec<Edge>) {
    let strategy = prop::strategy::Union::new(
        edges
            .iter()
            .enumerate()
            .map(|(index, edge)| (Just(index), bytes_like(edge.examples.clone())).boxed()),
    );
    let names: Vec<&'static str> = edges.iter().map(|edge| edge.name).collect();
    let outcomes: Vec<(&'static str, &'static str)> = names
        .iter()
        .map(|name| {
            let decoded: &'static str = format!("{name}: decoded").leak();
            let refused: &'static str = format!("{name}: not decoded").leak();
            (decoded, refused)
        })
        .collect();
    check(name, strategy, |(index, bytes)| {
        let edge = &edges[index];
        let took = (edge.take)(&bytes, fixture)?;
        Ok(if took {
            outcomes[index].0
        } else {
            outcomes[index].1
        })
    });
}

#[test]
fn any_bytes_sent_to_the_admin_are_decoded_and_converted_without_panic_or_an_unnamed_field() {
    let fixture = fixture();
    check_edges("admin_request_bytes", &fixture, admin_edges());
}

#[test]
fn any_bytes_on_the_data_plane_are_decoded_converted_and_served_without_panic() {
    let fixture = fixture();
    let edges = data_plane_edges(&fixture);
    check_edges("data_plane_bytes", &fixture, edges);
}
