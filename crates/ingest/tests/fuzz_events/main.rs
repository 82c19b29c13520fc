//! Property tests of event validation: arbitrary wire exposures and
//! outcomes (random strings, timestamps anywhere, enum numbers known and
//! unknown), and arbitrary bytes decoded as `LogExposures` and
//! `LogOutcomes` requests. An event is refused by a named field, or
//! accepted as its domain event, which the event log writes and reads
//! back unchanged.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 by
//! default); each property prints how its cases ended.

use std::{
    cell::RefCell,
    collections::HashSet,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use exp_core::{
    ManualClock, UnitType,
    event::{Event, EventKind},
};
use exp_ingest::{
    Cursor, EventGrpc, EventLog, LogOptions, LogSlot,
    validate::{self, Catalog, Rejection},
    wal,
};
use exp_proto::{
    events::exposure_to_proto,
    status::{MAX_DESCRIPTION_CHARS, MAX_FIELD_CHARS},
    v1::{self, event_service_server::EventService},
};
use proptest::{prelude::*, test_runner::TestCaseError};
use prost::Message;

mod events;

use events::*;

// === runner ===

#[path = "../../../../tests/support/fuzz_check.rs"]
mod fuzz_check;

use fuzz_check::check;

// === properties ===

/// Fields of an exposure or an outcome a rejection may name.
const FIELDS: &[&str] = &[
    "event_id",
    "experiment_id",
    "variant",
    "user_id",
    "session_id",
    "unit_type",
    "placement",
    "page_type",
    "timestamp",
    "type",
    "item_id",
    "item_ids",
    "source_placement",
    "value",
    "currency",
    "quantity",
    "latency_ms",
    "attributes",
];

fn names_a_field(field: &str) -> bool {
    FIELDS.contains(&field.split(['[', '.']).next().unwrap_or_default())
}

fn check_rejection(rejection: &Rejection) -> Result<(), TestCaseError> {
    prop_assert!(
        names_a_field(&rejection.field),
        "{rejection:?} names no field"
    );
    prop_assert!(!rejection.reason.is_empty(), "{rejection:?}");
    Ok(())
}

/// The event as the log writes it (a framed segment record) and reads it
/// back.
fn through_the_log(event: Event, segment: &Path) -> Result<(), TestCaseError> {
    let mut record = Vec::new();
    wal::encode(&event, &mut record);
    std::fs::write(segment, &record).map_err(|err| TestCaseError::fail(err.to_string()))?;
    let (read, length) = wal::read(segment).map_err(|err| TestCaseError::fail(err.to_string()))?;
    prop_assert_eq!(length, record.len() as u64);
    prop_assert_eq!(read, vec![event]);
    Ok(())
}

fn check_exposure(
    proto: v1::Exposure,
    catalog: &Catalog,
    segment: &Path,
) -> Result<&'static str, TestCaseError> {
    match validate::exposure(proto.clone(), catalog, now()) {
        Err(rejection) => {
            check_rejection(&rejection)?;
            Ok("refused")
        }
        Ok(exposure) => {
            // The domain event is the message, with the unit settled.
            let mut expected = proto;
            expected.unit_type = exposure_to_proto(&exposure).unit_type;
            let expected_time = expected
                .timestamp
                .map(|t| SystemTime::try_from(t).map_err(|e| TestCaseError::fail(e.to_string())))
                .transpose()?;
            prop_assert_eq!(Some(exposure.timestamp), expected_time);
            prop_assert_eq!(
                (
                    &exposure.event_id,
                    &exposure.experiment_id,
                    &exposure.variant
                ),
                (
                    &expected.event_id,
                    &expected.experiment_id,
                    &expected.variant
                )
            );
            prop_assert_eq!(
                (&exposure.user_id, &exposure.session_id, exposure.revision),
                (&expected.user_id, &expected.session_id, expected.revision)
            );
            prop_assert!(!exposure.unit_id().is_empty(), "bucketed by an empty id");
            if proto_unit(expected.unit_type).is_some() {
                prop_assert_eq!(proto_unit(expected.unit_type), Some(exposure.unit_type));
            }
            through_the_log(exposure.into(), segment)?;
            Ok("accepted")
        }
    }
}

fn proto_unit(value: i32) -> Option<UnitType> {
    match v1::UnitType::try_from(value) {
        Ok(v1::UnitType::User) => Some(UnitType::User),
        Ok(v1::UnitType::Session) => Some(UnitType::Session),
        _ => None,
    }
}

fn check_outcome(proto: v1::Outcome, segment: &Path) -> Result<&'static str, TestCaseError> {
    match validate::outcome(proto.clone(), now()) {
        Err(rejection) => {
            check_rejection(&rejection)?;
            Ok("refused")
        }
        Ok(outcome) => {
            prop_assert_eq!(&outcome.event_id, &proto.event_id);
            prop_assert_eq!(&outcome.item_ids, &proto.item_ids);
            prop_assert_eq!(outcome.attributes.len(), proto.attributes.len());
            prop_assert!(outcome.value.is_finite() && outcome.latency_ms.is_finite());
            through_the_log(outcome.into(), segment)?;
            Ok("accepted")
        }
    }
}

fn segment() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn an_exposure_is_refused_by_a_named_field_or_logged_as_it_came() {
    let catalog = catalog();
    let dir = segment();
    let path = dir.path().join("1-0.wal");
    check("exposures", exposure(), |proto| {
        check_exposure(proto, &catalog, &path)
    });
}

#[test]
fn an_outcome_is_refused_by_a_named_field_or_logged_as_it_came() {
    let dir = segment();
    let path = dir.path().join("1-0.wal");
    check("outcomes", outcome(), |proto| check_outcome(proto, &path));
}

/// Bytes to decode as a request: random ones, or a valid encoding with
/// bits flipped, bytes cut or spliced in.
fn request_bytes(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        valid,
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        prop::option::of((
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 0..8),
        )),
    )
        .prop_map(|(mut bytes, flips, splice)| {
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
            bytes
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        4 => mutated,
    ]
}

#[test]
fn any_bytes_decoded_as_an_event_batch_are_refused_or_validated_event_by_event() {
    let catalog = catalog();
    let dir = segment();
    let path = dir.path().join("1-0.wal");
    let exposures = prop::collection::vec(exposure(), 0..3)
        .prop_map(|exposures| v1::LogExposuresRequest { exposures }.encode_to_vec());
    let outcomes = prop::collection::vec(outcome(), 0..3)
        .prop_map(|outcomes| v1::LogOutcomesRequest { outcomes }.encode_to_vec());
    check(
        "event_batch_bytes",
        (request_bytes(exposures), request_bytes(outcomes)),
        |(exposure_bytes, outcome_bytes)| {
            let exposures = v1::LogExposuresRequest::decode(exposure_bytes.as_slice());
            let outcomes = v1::LogOutcomesRequest::decode(outcome_bytes.as_slice());
            if let Ok(request) = &exposures {
                for exposure in request.exposures.clone() {
                    check_exposure(exposure, &catalog, &path)?;
                }
            }
            if let Ok(request) = &outcomes {
                for outcome in request.outcomes.clone() {
                    check_outcome(outcome, &path)?;
                }
            }
            Ok(match (exposures.is_ok(), outcomes.is_ok()) {
                (true, true) => "both decoded",
                (true, false) | (false, true) => "one decoded",
                (false, false) => "neither decoded",
            })
        },
    );
}

// === a batch through EventService and the log ===

/// `EventService` over a real log (on tmpfs where there is one: every
/// batch is fsynced), with the server's clock held at [`now`].
struct Service {
    grpc: EventGrpc,
    /// A reader of the log from its start, as results follow it.
    reader: RefCell<Cursor>,
    _log: Arc<EventLog>,
    _dir: tempfile::TempDir,
}

impl Service {
    fn open() -> Self {
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("temp dir");
        let log = Arc::new(
            EventLog::open(LogOptions {
                dir: dir.path().join("events"),
                flush_interval: Duration::from_secs(3_600),
                max_pending_events: 200_000,
                dedup_window: Duration::from_secs(24 * 3_600),
            })
            .expect("log"),
        );
        let slot = LogSlot::default();
        slot.set(log.clone());
        let catalog = Arc::new(arc_swap::ArcSwap::from_pointee(catalog()));
        let grpc = EventGrpc::new(
            exp_ingest::EventDestination::Log(slot),
            catalog,
            Arc::new(ManualClock::new(now())),
        );
        Self {
            grpc,
            reader: RefCell::new(log.cursor()),
            _log: log,
            _dir: dir,
        }
    }

    /// Every event committed since the last call.
    fn read_new(&self) -> Result<Vec<Event>, TestCaseError> {
        let mut reader = self.reader.borrow_mut();
        let mut events = Vec::new();
        loop {
            let chunk = reader
                .read()
                .map_err(|err| TestCaseError::fail(format!("read: {err}")))?;
            if chunk.is_empty() {
                return Ok(events);
            }
            events.extend(chunk);
        }
    }
}

/// The answer to a batch: every event counted once, each rejection of an
/// event validation refuses, naming its field, bounded like an error
/// (an answer lists up to 5,000 of them, whatever they echo).
fn check_answer(
    rejections: &[v1::EventRejection],
    counted: u32,
    refused: &[usize],
    batch: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(counted as usize + rejections.len(), batch);
    let indices: Vec<usize> = rejections.iter().map(|r| r.index as usize).collect();
    prop_assert_eq!(indices, refused.to_vec());
    for rejection in rejections {
        prop_assert!(
            names_a_field(&rejection.field),
            "{rejection:?} names no field"
        );
        prop_assert!(
            rejection.field.chars().count() <= MAX_FIELD_CHARS + 40,
            "a field path of {} characters",
            rejection.field.chars().count()
        );
        prop_assert!(
            rejection.reason.chars().count() <= MAX_DESCRIPTION_CHARS + 40,
            "a reason of {} characters",
            rejection.reason.chars().count()
        );
    }
    Ok(())
}

/// What validation makes of a batch: the valid events in order, and the
/// indices it refuses.
fn validated<T>(
    batch: &[T],
    check: impl Fn(T) -> Result<Event, Rejection>,
) -> (Vec<Event>, Vec<usize>)
where
    T: Clone,
{
    let mut valid = Vec::new();
    let mut refused = Vec::new();
    for (index, event) in batch.iter().cloned().enumerate() {
        match check(event) {
            Ok(event) => valid.push(event),
            Err(_) => refused.push(index),
        }
    }
    (valid, refused)
}

#[test]
fn a_batch_is_answered_event_by_event_and_the_log_holds_what_validation_accepted() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service = Service::open();
    let catalog = catalog();
    // Event ids the log has taken, by kind: a later copy is a duplicate.
    let seen = RefCell::new(HashSet::<(EventKind, String)>::new());
    check(
        "event_batches",
        (
            prop::collection::vec(exposure(), 0..6),
            prop::collection::vec(outcome(), 0..6),
        ),
        |(exposures, outcomes)| {
            let (mut expected, refused) = validated(&exposures, |exposure| {
                validate::exposure(exposure, &catalog, now()).map(Event::from)
            });
            let answer = runtime
                .block_on(service.grpc.log_exposures(tonic::Request::new(
                    v1::LogExposuresRequest {
                        exposures: exposures.clone(),
                    },
                )))
                .map_err(|status| TestCaseError::fail(format!("LogExposures: {status}")))?
                .into_inner();
            let counted = answer.accepted_count + answer.duplicate_count;
            check_answer(&answer.rejections, counted, &refused, exposures.len())?;
            let mut accepted = answer.accepted_count as usize;
            let (outcomes_valid, refused) = validated(&outcomes, |outcome| {
                validate::outcome(outcome, now()).map(Event::from)
            });
            let answer =
                runtime
                    .block_on(service.grpc.log_outcomes(tonic::Request::new(
                        v1::LogOutcomesRequest {
                            outcomes: outcomes.clone(),
                        },
                    )))
                    .map_err(|status| TestCaseError::fail(format!("LogOutcomes: {status}")))?
                    .into_inner();
            let counted = answer.accepted_count + answer.duplicate_count;
            check_answer(&answer.rejections, counted, &refused, outcomes.len())?;
            accepted += answer.accepted_count as usize;
            expected.extend(outcomes_valid);
            let mut seen = seen.borrow_mut();
            expected.retain(|event| seen.insert((event.kind(), event.event_id().to_owned())));
            prop_assert_eq!(
                accepted,
                expected.len(),
                "fresh events are counted accepted"
            );
            prop_assert_eq!(service.read_new()?, expected, "the log holds them");
            Ok(match (accepted, exposures.len() + outcomes.len()) {
                (0, _) => "nothing new logged",
                (logged, sent) if logged == sent => "every event logged",
                _ => "some events logged",
            })
        },
    );
}
