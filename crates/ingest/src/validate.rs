//! Validation of incoming events, one at a time: an invalid event is
//! refused with its field path and reason; the rest of its batch is kept.
//! A valid event leaves as its domain form ([`exp_core::event`]): this is
//! the one place the wire's events are converted.
//!
//! | rule | limit |
//! |---|---|
//! | batch size | at most [`MAX_BATCH`] events |
//! | `event_id` | 1 to 128 characters |
//! | `user_id`, `session_id` | at most 256 characters; at least one of them |
//! | `unit_type` (exposure) | its id present; when not set, the unit `Assign` buckets by for the experiment (its `bucketing_unit`), whose id must be present |
//! | `experiment_id`, `variant` (exposure) | an experiment in the store and one of its variants |
//! | `timestamp` | set; at most [`MAX_FUTURE`] ahead of the server clock and [`MAX_PAST`] behind it |
//! | `item_ids` (impression) | 1 to 1,000 items |
//! | `item_ids` (any type) | at most 1,000 items of at most 128 characters |
//! | `value`, `latency_ms` (any type) | finite, 0 or more |
//! | `quantity` | at most 1,000,000 |
//! | `item_id` (click, add-to-cart) | set |
//! | `value`, `currency` (purchase) | finite and not negative; three upper-case letters |
//! | `latency_ms` (page load) | finite, 0 to 600,000 |
//! | `attributes` | at most 64; keys 1 to 64 characters, values at most 1,024 |

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use exp_core::{
    BucketingUnit, UnitType,
    event::{Exposure, Outcome},
};
use exp_proto::{
    events::{exposure_from_proto, outcome_from_proto},
    v1,
};

/// Most events in one `LogExposures` or `LogOutcomes` call.
pub const MAX_BATCH: usize = 5_000;
/// How far ahead of the server clock an event's time may be (clock skew).
pub const MAX_FUTURE: Duration = Duration::from_secs(10 * 60);
/// How far behind the server clock an event's time may be (late uploads
/// from offline devices).
pub const MAX_PAST: Duration = Duration::from_secs(7 * 24 * 3600);

const MAX_EVENT_ID: usize = 128;
const MAX_UNIT_ID: usize = 256;
const MAX_NAME: usize = 128;
const MAX_ITEMS: usize = 1_000;
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_KEY: usize = 64;
const MAX_ATTRIBUTE_VALUE: usize = 1_024;
const MAX_LATENCY_MS: f64 = 600_000.0;
const MAX_QUANTITY: u32 = 1_000_000;

/// One refused event: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Path of the field within the event, e.g. `timestamp`.
    pub field: String,
    /// What is wrong, e.g. `more than 10m in the future`.
    pub reason: String,
}

impl Rejection {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The experiments exposures may name, with their variants and how they
/// bucket. Every experiment in the store counts, stopped and archived ones
/// included: an exposure may arrive after its experiment ended.
/// The default catalog is the one before the store was first read: every
/// exposure waits (`UNAVAILABLE`) rather than being refused.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    experiments: HashMap<String, CatalogExperiment>,
    loaded: bool,
}

/// What validation needs of an experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogExperiment {
    /// Its variants' names.
    pub variants: Vec<String>,
    /// Which id `Assign` buckets by.
    pub bucketing_unit: BucketingUnit,
}

impl Catalog {
    /// A catalog of experiments by id.
    pub fn new(experiments: impl IntoIterator<Item = (String, CatalogExperiment)>) -> Self {
        Self {
            experiments: experiments.into_iter().collect(),
            loaded: true,
        }
    }

    /// Whether the store has been read (false for the default catalog).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    fn check(&self, experiment_id: &str, variant: &str) -> Result<&CatalogExperiment, Rejection> {
        let Some(experiment) = self.experiments.get(experiment_id) else {
            return Err(Rejection::new(
                "experiment_id",
                format!("no experiment {experiment_id:?}"),
            ));
        };
        if experiment.variants.iter().any(|name| name == variant) {
            Ok(experiment)
        } else {
            Err(Rejection::new(
                "variant",
                format!(
                    "experiment {experiment_id:?} has no variant {variant:?} (it has {})",
                    experiment.variants.join(", ")
                ),
            ))
        }
    }
}

/// Shared, swappable catalog: the server replaces it when experiments
/// change.
pub type SharedCatalog = Arc<arc_swap::ArcSwap<Catalog>>;

/// Checks one exposure; the valid one as a domain exposure.
pub fn exposure(
    exposure: v1::Exposure,
    catalog: &Catalog,
    now: SystemTime,
) -> Result<Exposure, Rejection> {
    event_id(&exposure.event_id)?;
    units(&exposure.user_id, &exposure.session_id)?;
    let experiment = catalog.check(&exposure.experiment_id, &exposure.variant)?;
    let unit_type = match v1::UnitType::try_from(exposure.unit_type) {
        Ok(v1::UnitType::User) if exposure.user_id.is_empty() => {
            return Err(Rejection::new(
                "user_id",
                "is empty but unit_type is UNIT_TYPE_USER",
            ));
        }
        Ok(v1::UnitType::Session) if exposure.session_id.is_empty() => {
            return Err(Rejection::new(
                "session_id",
                "is empty but unit_type is UNIT_TYPE_SESSION",
            ));
        }
        Ok(v1::UnitType::User) => explicit_unit(UnitType::User, experiment)?,
        Ok(v1::UnitType::Session) => explicit_unit(UnitType::Session, experiment)?,
        // Not set: the unit Assign buckets by, as an exposure in the
        // shape of the spec (ids, no unit type) expects.
        Ok(v1::UnitType::Unspecified) => experiment
            .bucketing_unit
            .unit_type(&exposure.user_id, &exposure.session_id)
            .ok_or_else(|| {
                Rejection::new(
                    "unit_type",
                    format!(
                        "is not set, and experiment {:?} buckets by {}, which is empty",
                        exposure.experiment_id,
                        match experiment.bucketing_unit {
                            BucketingUnit::User => "user_id",
                            BucketingUnit::Session | BucketingUnit::UserOrSession => "session_id",
                        }
                    ),
                )
            })?,
        Err(_) => {
            return Err(Rejection::new(
                "unit_type",
                format!(
                    "{} is not a unit type: UNIT_TYPE_USER, UNIT_TYPE_SESSION, or unset for the experiment's own rule",
                    exposure.unit_type
                ),
            ));
        }
    };
    name("placement", &exposure.placement)?;
    name("page_type", &exposure.page_type)?;
    timestamp(exposure.timestamp, now)?;
    Ok(exposure_from_proto(exposure, unit_type))
}

/// An explicit unit type, if the experiment can bucket by it (one that
/// buckets by user or session takes either: a user may sign in between
/// assignment and the exposure).
fn explicit_unit(
    unit_type: UnitType,
    experiment: &CatalogExperiment,
) -> Result<UnitType, Rejection> {
    match (experiment.bucketing_unit, unit_type) {
        (BucketingUnit::User, UnitType::Session) => Err(Rejection::new(
            "unit_type",
            "is UNIT_TYPE_SESSION, but the experiment buckets by user_id only",
        )),
        (BucketingUnit::Session, UnitType::User) => Err(Rejection::new(
            "unit_type",
            "is UNIT_TYPE_USER, but the experiment buckets by session_id only",
        )),
        _ => Ok(unit_type),
    }
}

/// Checks one outcome; the valid one as a domain outcome.
pub fn outcome(outcome: v1::Outcome, now: SystemTime) -> Result<Outcome, Rejection> {
    check_outcome(&outcome, now)?;
    outcome_from_proto(outcome).ok_or_else(|| Rejection::new("type", "is not set"))
}

fn check_outcome(outcome: &v1::Outcome, now: SystemTime) -> Result<(), Rejection> {
    event_id(&outcome.event_id)?;
    units(&outcome.user_id, &outcome.session_id)?;
    name("placement", &outcome.placement)?;
    name("page_type", &outcome.page_type)?;
    name("source_placement", &outcome.source_placement)?;
    name("item_id", &outcome.item_id)?;
    let kind = v1::OutcomeType::try_from(outcome.r#type).unwrap_or(v1::OutcomeType::Unspecified);
    match kind {
        v1::OutcomeType::Unspecified => {
            return Err(Rejection::new(
                "type",
                "must be one of OUTCOME_TYPE_IMPRESSION, _CLICK, _ADD_TO_CART, _PURCHASE, \
                 _PAGE_VIEW, _PAGE_LOAD",
            ));
        }
        v1::OutcomeType::Impression => {
            if outcome.item_ids.is_empty() || outcome.item_ids.len() > MAX_ITEMS {
                return Err(Rejection::new(
                    "item_ids",
                    format!(
                        "an impression lists 1 to {MAX_ITEMS} items, got {}",
                        outcome.item_ids.len()
                    ),
                ));
            }
            for (index, item) in outcome.item_ids.iter().enumerate() {
                if item.is_empty() || item.chars().count() > MAX_NAME {
                    return Err(Rejection::new(
                        format!("item_ids[{index}]"),
                        format!("must be 1 to {MAX_NAME} characters"),
                    ));
                }
            }
        }
        v1::OutcomeType::Click | v1::OutcomeType::AddToCart => {
            if outcome.item_id.is_empty() {
                return Err(Rejection::new(
                    "item_id",
                    format!("is required for {}", kind.as_str_name()),
                ));
            }
        }
        v1::OutcomeType::Purchase => {
            if !outcome.value.is_finite() || outcome.value < 0.0 {
                return Err(Rejection::new(
                    "value",
                    format!(
                        "must be a finite amount of 0 or more, got {}",
                        outcome.value
                    ),
                ));
            }
            let currency = &outcome.currency;
            if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
                return Err(Rejection::new(
                    "currency",
                    format!("must be an ISO 4217 code such as \"USD\", got {currency:?}"),
                ));
            }
        }
        v1::OutcomeType::PageLoad => {
            if !outcome.latency_ms.is_finite()
                || outcome.latency_ms < 0.0
                || outcome.latency_ms > MAX_LATENCY_MS
            {
                return Err(Rejection::new(
                    "latency_ms",
                    format!(
                        "must be 0 to {MAX_LATENCY_MS} milliseconds, got {}",
                        outcome.latency_ms
                    ),
                ));
            }
        }
        v1::OutcomeType::PageView => {}
    }
    // Fields outside their type's rules still go to the warehouse: bounded
    // and sane for every type.
    if outcome.item_ids.len() > MAX_ITEMS {
        return Err(Rejection::new(
            "item_ids",
            format!("at most {MAX_ITEMS} items, got {}", outcome.item_ids.len()),
        ));
    }
    for (index, item) in outcome.item_ids.iter().enumerate() {
        if item.chars().count() > MAX_NAME {
            return Err(Rejection::new(
                format!("item_ids[{index}]"),
                format!("must be at most {MAX_NAME} characters"),
            ));
        }
    }
    if !outcome.value.is_finite() || outcome.value < 0.0 {
        return Err(Rejection::new(
            "value",
            format!(
                "must be a finite amount of 0 or more, got {}",
                outcome.value
            ),
        ));
    }
    if !outcome.latency_ms.is_finite() || outcome.latency_ms < 0.0 {
        return Err(Rejection::new(
            "latency_ms",
            format!("must be a finite 0 or more, got {}", outcome.latency_ms),
        ));
    }
    if outcome.quantity > MAX_QUANTITY {
        return Err(Rejection::new(
            "quantity",
            format!("at most {MAX_QUANTITY}, got {}", outcome.quantity),
        ));
    }
    name("currency", &outcome.currency)?;
    if outcome.attributes.len() > MAX_ATTRIBUTES {
        return Err(Rejection::new(
            "attributes",
            format!(
                "at most {MAX_ATTRIBUTES} entries, got {}",
                outcome.attributes.len()
            ),
        ));
    }
    for (key, value) in &outcome.attributes {
        if key.is_empty() || key.chars().count() > MAX_ATTRIBUTE_KEY {
            return Err(Rejection::new(
                format!("attributes[{key:?}]"),
                format!("keys are 1 to {MAX_ATTRIBUTE_KEY} characters"),
            ));
        }
        if value.chars().count() > MAX_ATTRIBUTE_VALUE {
            return Err(Rejection::new(
                format!("attributes[{key:?}]"),
                format!("values are at most {MAX_ATTRIBUTE_VALUE} characters"),
            ));
        }
    }
    timestamp(outcome.timestamp, now)
}

fn event_id(id: &str) -> Result<(), Rejection> {
    let length = id.chars().count();
    if length == 0 || length > MAX_EVENT_ID {
        return Err(Rejection::new(
            "event_id",
            format!("must be 1 to {MAX_EVENT_ID} characters, got {length}"),
        ));
    }
    Ok(())
}

fn units(user_id: &str, session_id: &str) -> Result<(), Rejection> {
    if user_id.is_empty() && session_id.is_empty() {
        return Err(Rejection::new(
            "session_id",
            "user_id and session_id are both empty; set at least one",
        ));
    }
    for (field, id) in [("user_id", user_id), ("session_id", session_id)] {
        if id.chars().count() > MAX_UNIT_ID {
            return Err(Rejection::new(
                field,
                format!("must be at most {MAX_UNIT_ID} characters"),
            ));
        }
    }
    Ok(())
}

fn name(field: &str, value: &str) -> Result<(), Rejection> {
    if value.chars().count() > MAX_NAME {
        return Err(Rejection::new(
            field,
            format!("must be at most {MAX_NAME} characters"),
        ));
    }
    Ok(())
}

fn timestamp(timestamp: Option<prost_types::Timestamp>, now: SystemTime) -> Result<(), Rejection> {
    let Some(timestamp) = timestamp else {
        return Err(Rejection::new("timestamp", "is required"));
    };
    let Ok(time) = SystemTime::try_from(timestamp) else {
        return Err(Rejection::new("timestamp", "is not a valid time"));
    };
    if time > now + MAX_FUTURE {
        return Err(Rejection::new(
            "timestamp",
            format!("more than {} in the future", humanize(MAX_FUTURE)),
        ));
    }
    if time + MAX_PAST < now {
        return Err(Rejection::new(
            "timestamp",
            format!("more than {} in the past", humanize(MAX_PAST)),
        ));
    }
    Ok(())
}

fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds.is_multiple_of(86_400) {
        format!("{}d", seconds / 86_400)
    } else if seconds.is_multiple_of(3_600) {
        format!("{}h", seconds / 3_600)
    } else {
        format!("{}m", seconds / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn catalog() -> Catalog {
        let experiment = |bucketing_unit| CatalogExperiment {
            variants: vec!["control".to_owned(), "treatment".to_owned()],
            bucketing_unit,
        };
        Catalog::new([
            (
                "reco_ymal_v1".to_owned(),
                experiment(BucketingUnit::UserOrSession),
            ),
            ("by_user".to_owned(), experiment(BucketingUnit::User)),
            ("by_session".to_owned(), experiment(BucketingUnit::Session)),
        ])
    }

    fn good_exposure() -> v1::Exposure {
        v1::Exposure {
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
        }
    }

    fn good_outcome(kind: v1::OutcomeType) -> v1::Outcome {
        v1::Outcome {
            event_id: "o-1".into(),
            r#type: kind as i32,
            session_id: "s-1".into(),
            item_id: "sku-1".into(),
            item_ids: vec!["sku-1".into()],
            value: 10.0,
            currency: "EUR".into(),
            latency_ms: 120.0,
            timestamp: Some(now().into()),
            ..Default::default()
        }
    }

    fn field_of<T: std::fmt::Debug>(result: Result<T, Rejection>) -> String {
        result.expect_err("refused").field
    }

    #[test]
    fn a_complete_exposure_of_a_known_variant_passes_as_its_domain_exposure() {
        let valid = exposure(good_exposure(), &catalog(), now()).expect("valid");
        assert_eq!(
            (valid.event_id.as_str(), valid.unit_type, valid.timestamp),
            ("e-1", UnitType::User, now())
        );
    }

    #[test]
    fn an_exposure_without_a_unit_type_takes_the_unit_assign_buckets_by() {
        let unset = |experiment: &str, user: &str, session: &str| {
            let mut proto = good_exposure();
            proto.experiment_id = experiment.into();
            proto.user_id = user.into();
            proto.session_id = session.into();
            proto.unit_type = 0;
            exposure(proto, &catalog(), now())
        };
        let unit = |result: Result<Exposure, Rejection>| result.expect("valid").unit_type;
        assert_eq!(unit(unset("reco_ymal_v1", "u-1", "s-1")), UnitType::User);
        assert_eq!(unit(unset("reco_ymal_v1", "", "s-1")), UnitType::Session);
        assert_eq!(unit(unset("by_session", "u-1", "s-1")), UnitType::Session);
        assert_eq!(unit(unset("by_user", "u-1", "s-1")), UnitType::User);
        let refused = unset("by_user", "", "s-1").expect_err("no user id");
        assert_eq!(refused.field, "unit_type");
        assert!(refused.reason.contains("user_id"), "{refused:?}");
    }

    #[test]
    fn an_explicit_unit_type_must_be_one_the_experiment_buckets_by() {
        let mut session = good_exposure();
        session.experiment_id = "by_user".into();
        session.unit_type = v1::UnitType::Session as i32;
        assert_eq!(field_of(exposure(session, &catalog(), now())), "unit_type");
        let mut either = good_exposure();
        either.unit_type = v1::UnitType::Session as i32;
        assert_eq!(
            exposure(either, &catalog(), now())
                .expect("valid")
                .unit_type,
            UnitType::Session,
            "a user may sign in between assignment and the exposure"
        );
    }

    #[test]
    fn exposures_of_unknown_experiments_or_variants_are_refused() {
        let mut unknown = good_exposure();
        unknown.experiment_id = "nope".into();
        assert_eq!(
            field_of(exposure(unknown, &catalog(), now())),
            "experiment_id"
        );
        let mut bad_variant = good_exposure();
        bad_variant.variant = "style_boost".into();
        let refused = exposure(bad_variant, &catalog(), now()).expect_err("refused");
        assert_eq!(refused.field, "variant");
        assert!(refused.reason.contains("control, treatment"), "{refused:?}");
    }

    #[test]
    fn an_exposure_names_a_unit_type_whose_id_is_present() {
        let mut unknown_type = good_exposure();
        unknown_type.unit_type = 7;
        assert_eq!(
            field_of(exposure(unknown_type, &catalog(), now())),
            "unit_type"
        );
        let mut no_user = good_exposure();
        no_user.user_id.clear();
        assert_eq!(field_of(exposure(no_user, &catalog(), now())), "user_id");
    }

    #[test]
    fn timestamps_far_in_the_future_or_past_are_refused() {
        let mut future = good_exposure();
        future.timestamp = Some((now() + MAX_FUTURE + Duration::from_secs(1)).into());
        let refused = exposure(future, &catalog(), now()).expect_err("refused");
        assert_eq!(
            refused,
            Rejection::new("timestamp", "more than 10m in the future")
        );
        let mut past = good_outcome(v1::OutcomeType::Click);
        past.timestamp = Some((now() - MAX_PAST - Duration::from_secs(1)).into());
        assert_eq!(
            outcome(past, now()),
            Err(Rejection::new("timestamp", "more than 7d in the past"))
        );
        let mut missing = good_outcome(v1::OutcomeType::Click);
        missing.timestamp = None;
        assert_eq!(field_of(outcome(missing, now())), "timestamp");
    }

    #[test]
    fn each_outcome_type_requires_its_own_fields() {
        for kind in [
            v1::OutcomeType::Impression,
            v1::OutcomeType::Click,
            v1::OutcomeType::AddToCart,
            v1::OutcomeType::Purchase,
            v1::OutcomeType::PageView,
            v1::OutcomeType::PageLoad,
        ] {
            assert!(outcome(good_outcome(kind), now()).is_ok(), "{kind:?}");
        }
        let mut no_items = good_outcome(v1::OutcomeType::Impression);
        no_items.item_ids.clear();
        assert_eq!(field_of(outcome(no_items, now())), "item_ids");
        let mut no_item = good_outcome(v1::OutcomeType::AddToCart);
        no_item.item_id.clear();
        assert_eq!(field_of(outcome(no_item, now())), "item_id");
        let mut bad_currency = good_outcome(v1::OutcomeType::Purchase);
        bad_currency.currency = "eur".into();
        assert_eq!(field_of(outcome(bad_currency, now())), "currency");
        let mut negative = good_outcome(v1::OutcomeType::Purchase);
        negative.value = -1.0;
        assert_eq!(field_of(outcome(negative, now())), "value");
        let mut slow = good_outcome(v1::OutcomeType::PageLoad);
        slow.latency_ms = f64::NAN;
        assert_eq!(field_of(outcome(slow, now())), "latency_ms");
        let mut untyped = good_outcome(v1::OutcomeType::Click);
        untyped.r#type = 0;
        assert_eq!(field_of(outcome(untyped, now())), "type");
    }

    #[test]
    fn fields_outside_their_type_are_still_bounded() {
        let mut click = good_outcome(v1::OutcomeType::Click);
        click.value = f64::NAN;
        assert_eq!(field_of(outcome(click, now())), "value");
        let mut view = good_outcome(v1::OutcomeType::PageView);
        view.item_ids = vec!["sku".into(); MAX_ITEMS + 1];
        assert_eq!(field_of(outcome(view, now())), "item_ids");
        let mut many = good_outcome(v1::OutcomeType::AddToCart);
        many.quantity = MAX_QUANTITY + 1;
        assert_eq!(field_of(outcome(many, now())), "quantity");
    }

    #[test]
    fn events_without_any_unit_id_or_event_id_are_refused() {
        let mut anonymous = good_outcome(v1::OutcomeType::PageView);
        anonymous.session_id.clear();
        assert_eq!(field_of(outcome(anonymous, now())), "session_id");
        let mut no_id = good_outcome(v1::OutcomeType::PageView);
        no_id.event_id.clear();
        assert_eq!(field_of(outcome(no_id, now())), "event_id");
        let mut empty_item = good_outcome(v1::OutcomeType::Impression);
        empty_item.item_ids = vec!["sku-1".into(), String::new()];
        assert_eq!(field_of(outcome(empty_item, now())), "item_ids[1]");
    }
}
