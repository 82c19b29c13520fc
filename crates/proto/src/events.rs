//! The edge between the wire's events (`experiments.v1.Exposure`,
//! `experiments.v1.Outcome`) and the domain's ([`exp_core::event`]).
//!
//! Incoming messages are converted once, after validation. The event log
//! keeps the wire encoding as its record format, written straight from
//! the domain events by [`encode_exposure`] and [`encode_outcome`]
//! (field by field, as prost would, without building a message first) and
//! read back by [`decode_exposure`] and [`decode_outcome`].

use std::time::SystemTime;

use exp_core::{
    UnitType,
    event::{Exposure, Outcome},
    metrics::OutcomeType,
};
use prost::{Message, bytes::BufMut, encoding};

use crate::{
    convert::{outcome_type_from_proto, outcome_type_to_proto, unit_type_to_proto},
    v1,
};

/// A wire event that cannot become a domain event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    /// Not a valid encoding of the message.
    #[error("not a valid {message} encoding: {reason}")]
    Encoding {
        /// The message type.
        message: &'static str,
        /// What prost said.
        reason: String,
    },
    /// A field the domain needs is missing or out of range.
    #[error("{field}: {reason}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The domain exposure of a validated wire one; `unit_type` is the unit
/// validation settled on (the message's, or the experiment's rule when
/// the message names none).
pub fn exposure_from_proto(proto: v1::Exposure, unit_type: UnitType) -> Exposure {
    Exposure {
        event_id: proto.event_id,
        experiment_id: proto.experiment_id,
        variant: proto.variant,
        user_id: proto.user_id,
        session_id: proto.session_id,
        unit_type,
        placement: proto.placement,
        page_type: proto.page_type,
        revision: proto.revision,
        timestamp: time_from_proto(proto.timestamp),
    }
}

/// The domain outcome of a validated wire one; `None` when its type is
/// not set (validation refuses those).
pub fn outcome_from_proto(proto: v1::Outcome) -> Option<Outcome> {
    let outcome_type = v1::OutcomeType::try_from(proto.r#type)
        .ok()
        .and_then(outcome_type_from_proto)?;
    Some(Outcome {
        event_id: proto.event_id,
        outcome_type,
        user_id: proto.user_id,
        session_id: proto.session_id,
        placement: proto.placement,
        page_type: proto.page_type,
        item_id: proto.item_id,
        item_ids: proto.item_ids,
        from_recommendation: proto.from_recommendation,
        source_placement: proto.source_placement,
        value: proto.value,
        currency: proto.currency,
        quantity: proto.quantity,
        latency_ms: proto.latency_ms,
        timestamp: time_from_proto(proto.timestamp),
        attributes: proto.attributes.into_iter().collect(),
    })
}

/// The wire form of an exposure.
pub fn exposure_to_proto(exposure: &Exposure) -> v1::Exposure {
    v1::Exposure {
        event_id: exposure.event_id.clone(),
        experiment_id: exposure.experiment_id.clone(),
        variant: exposure.variant.clone(),
        user_id: exposure.user_id.clone(),
        session_id: exposure.session_id.clone(),
        unit_type: unit_type_to_proto(exposure.unit_type) as i32,
        placement: exposure.placement.clone(),
        page_type: exposure.page_type.clone(),
        revision: exposure.revision,
        timestamp: Some(exposure.timestamp.into()),
    }
}

/// The wire form of an outcome.
pub fn outcome_to_proto(outcome: &Outcome) -> v1::Outcome {
    v1::Outcome {
        event_id: outcome.event_id.clone(),
        r#type: outcome_type_to_proto(outcome.outcome_type) as i32,
        user_id: outcome.user_id.clone(),
        session_id: outcome.session_id.clone(),
        placement: outcome.placement.clone(),
        page_type: outcome.page_type.clone(),
        item_id: outcome.item_id.clone(),
        item_ids: outcome.item_ids.clone(),
        from_recommendation: outcome.from_recommendation,
        source_placement: outcome.source_placement.clone(),
        value: outcome.value,
        currency: outcome.currency.clone(),
        quantity: outcome.quantity,
        latency_ms: outcome.latency_ms,
        timestamp: Some(outcome.timestamp.into()),
        attributes: outcome
            .attributes
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    }
}

/// Appends the wire encoding of `exposure` (an `experiments.v1.Exposure`)
/// to `buffer`.
pub fn encode_exposure(exposure: &Exposure, buffer: &mut impl BufMut) {
    string(1, &exposure.event_id, buffer);
    string(2, &exposure.experiment_id, buffer);
    string(3, &exposure.variant, buffer);
    string(4, &exposure.user_id, buffer);
    string(5, &exposure.session_id, buffer);
    encoding::int32::encode(6, &(unit_type_to_proto(exposure.unit_type) as i32), buffer);
    string(7, &exposure.placement, buffer);
    string(8, &exposure.page_type, buffer);
    if exposure.revision != 0 {
        encoding::uint64::encode(9, &exposure.revision, buffer);
    }
    encoding::message::encode(10, &time_to_proto(exposure.timestamp), buffer);
}

/// Appends the wire encoding of `outcome` (an `experiments.v1.Outcome`)
/// to `buffer`.
pub fn encode_outcome(outcome: &Outcome, buffer: &mut impl BufMut) {
    string(1, &outcome.event_id, buffer);
    encoding::int32::encode(
        2,
        &(outcome_type_to_proto(outcome.outcome_type) as i32),
        buffer,
    );
    string(3, &outcome.user_id, buffer);
    string(4, &outcome.session_id, buffer);
    string(5, &outcome.placement, buffer);
    string(6, &outcome.page_type, buffer);
    string(7, &outcome.item_id, buffer);
    encoding::string::encode_repeated(8, &outcome.item_ids, buffer);
    if outcome.from_recommendation {
        encoding::bool::encode(9, &outcome.from_recommendation, buffer);
    }
    string(10, &outcome.source_placement, buffer);
    if outcome.value != 0.0 {
        encoding::double::encode(11, &outcome.value, buffer);
    }
    string(12, &outcome.currency, buffer);
    if outcome.quantity != 0 {
        encoding::uint32::encode(13, &outcome.quantity, buffer);
    }
    if outcome.latency_ms != 0.0 {
        encoding::double::encode(14, &outcome.latency_ms, buffer);
    }
    encoding::message::encode(15, &time_to_proto(outcome.timestamp), buffer);
    if !outcome.attributes.is_empty() {
        encoding::btree_map::encode(
            encoding::string::encode,
            encoding::string::encoded_len,
            encoding::string::encode,
            encoding::string::encoded_len,
            16,
            &outcome.attributes,
            buffer,
        );
    }
}

/// The exposure an `experiments.v1.Exposure` encoding holds.
pub fn decode_exposure(bytes: &[u8]) -> Result<Exposure, EventDecodeError> {
    let proto = v1::Exposure::decode(bytes).map_err(|error| EventDecodeError::Encoding {
        message: "Exposure",
        reason: error.to_string(),
    })?;
    let unit_type = match v1::UnitType::try_from(proto.unit_type) {
        Ok(v1::UnitType::User) => UnitType::User,
        Ok(v1::UnitType::Session) => UnitType::Session,
        _ => {
            return Err(EventDecodeError::Field {
                field: "unit_type",
                reason: "must be UNIT_TYPE_USER or UNIT_TYPE_SESSION",
            });
        }
    };
    Ok(exposure_from_proto(proto, unit_type))
}

/// The outcome an `experiments.v1.Outcome` encoding holds.
pub fn decode_outcome(bytes: &[u8]) -> Result<Outcome, EventDecodeError> {
    let proto = v1::Outcome::decode(bytes).map_err(|error| EventDecodeError::Encoding {
        message: "Outcome",
        reason: error.to_string(),
    })?;
    outcome_from_proto(proto).ok_or(EventDecodeError::Field {
        field: "type",
        reason: "is not set",
    })
}

/// The wire name of a domain outcome type, as the Parquet `type` column
/// and the docs spell it (`add_to_cart`).
pub fn outcome_type_name(outcome_type: OutcomeType) -> &'static str {
    match outcome_type {
        OutcomeType::Impression => "impression",
        OutcomeType::Click => "click",
        OutcomeType::AddToCart => "add_to_cart",
        OutcomeType::Purchase => "purchase",
        OutcomeType::PageView => "page_view",
        OutcomeType::PageLoad => "page_load",
    }
}

/// The domain outcome type of a name made by [`outcome_type_name`].
pub fn outcome_type_from_name(name: &str) -> Option<OutcomeType> {
    [
        OutcomeType::Impression,
        OutcomeType::Click,
        OutcomeType::AddToCart,
        OutcomeType::Purchase,
        OutcomeType::PageView,
        OutcomeType::PageLoad,
    ]
    .into_iter()
    .find(|outcome_type| outcome_type_name(*outcome_type) == name)
}

fn string(tag: u32, value: &String, buffer: &mut impl BufMut) {
    if !value.is_empty() {
        encoding::string::encode(tag, value, buffer);
    }
}

fn time_to_proto(time: SystemTime) -> prost_types::Timestamp {
    time.into()
}

fn time_from_proto(timestamp: Option<prost_types::Timestamp>) -> SystemTime {
    timestamp
        .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;

    fn exposure() -> Exposure {
        Exposure {
            event_id: "e-1".into(),
            experiment_id: "reco_ymal_v1".into(),
            variant: "treatment".into(),
            user_id: String::new(),
            session_id: "s-1".into(),
            unit_type: UnitType::Session,
            placement: "you_may_also_like".into(),
            page_type: "product_detail".into(),
            revision: 3,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_946_700_123_456),
        }
    }

    fn purchase() -> Outcome {
        Outcome {
            event_id: "o-1".into(),
            outcome_type: OutcomeType::Purchase,
            user_id: "u-1".into(),
            session_id: "s-1".into(),
            placement: String::new(),
            page_type: String::new(),
            item_id: "sku-1".into(),
            item_ids: vec!["sku-1".into(), "sku-2".into()],
            from_recommendation: true,
            source_placement: "you_may_also_like".into(),
            value: 59.9,
            currency: "USD".into(),
            quantity: 2,
            latency_ms: 0.0,
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_946_700),
            attributes: BTreeMap::from([("ab_debug".into(), "1".into()), ("k".into(), "v".into())]),
        }
    }

    #[test]
    fn an_encoded_exposure_is_byte_for_byte_what_prost_encodes_of_its_message() {
        let mut ours = Vec::new();
        encode_exposure(&exposure(), &mut ours);
        assert_eq!(ours, exposure_to_proto(&exposure()).encode_to_vec());
        assert_eq!(decode_exposure(&ours), Ok(exposure()));
    }

    #[test]
    fn an_encoded_outcome_is_byte_for_byte_what_prost_encodes_of_its_message() {
        let mut ours = Vec::new();
        encode_outcome(&purchase(), &mut ours);
        // prost encodes a map in its iteration order; the domain's is a
        // sorted map, so compare one key at a time.
        let mut single = purchase();
        single.attributes.remove("k");
        let mut one = Vec::new();
        encode_outcome(&single, &mut one);
        assert_eq!(one, outcome_to_proto(&single).encode_to_vec());
        assert_eq!(decode_outcome(&ours), Ok(purchase()));
    }

    #[test]
    fn an_outcome_without_a_type_or_an_exposure_without_a_unit_type_does_not_decode() {
        let untyped = v1::Outcome {
            event_id: "o-1".into(),
            ..Default::default()
        };
        assert!(matches!(
            decode_outcome(&untyped.encode_to_vec()),
            Err(EventDecodeError::Field { field: "type", .. })
        ));
        let mut proto = exposure_to_proto(&exposure());
        proto.unit_type = 0;
        assert!(matches!(
            decode_exposure(&proto.encode_to_vec()),
            Err(EventDecodeError::Field {
                field: "unit_type",
                ..
            })
        ));
    }

    #[test]
    fn outcome_type_names_round_trip() {
        for name in [
            "impression",
            "click",
            "add_to_cart",
            "purchase",
            "page_view",
            "page_load",
        ] {
            let outcome_type = outcome_type_from_name(name).expect("known");
            assert_eq!(outcome_type_name(outcome_type), name);
        }
        assert_eq!(outcome_type_from_name("unspecified"), None);
    }
}
