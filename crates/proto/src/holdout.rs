//! Holdouts between the wire and the domain: the admin's resource and its
//! serving form in the config stream.

use std::time::SystemTime;

use exp_core::{FieldViolation, Holdout, HoldoutStatus, serving::ServingHoldout};
use prost_types::Timestamp;

use crate::{convert::unknown_enum, v1};

/// The domain form of a holdout given to Create or Update: output-only
/// fields (salt, status, times, author) are left for the use case to set;
/// `revision` is kept, as the revision an update is based on.
pub fn holdout_from_proto(proto: v1::Holdout) -> Holdout {
    Holdout {
        id: proto.id,
        description: proto.description,
        share_basis_points: proto.share_basis_points,
        salt: String::new(),
        layers: proto.layers,
        placements: proto.placements,
        status: HoldoutStatus::Active,
        revision: proto.revision,
        create_time: SystemTime::UNIX_EPOCH,
        update_time: SystemTime::UNIX_EPOCH,
        updated_by: String::new(),
    }
}

/// The wire form of a holdout.
pub fn holdout_to_proto(holdout: &Holdout) -> v1::Holdout {
    v1::Holdout {
        id: holdout.id.clone(),
        description: holdout.description.clone(),
        share_basis_points: holdout.share_basis_points,
        salt: holdout.salt.clone(),
        layers: holdout.layers.clone(),
        placements: holdout.placements.clone(),
        status: holdout_status_to_proto(holdout.status) as i32,
        revision: holdout.revision,
        create_time: Some(Timestamp::from(holdout.create_time)),
        update_time: Some(Timestamp::from(holdout.update_time)),
        updated_by: holdout.updated_by.clone(),
    }
}

/// The wire form of a holdout status.
pub fn holdout_status_to_proto(status: HoldoutStatus) -> v1::HoldoutStatus {
    match status {
        HoldoutStatus::Active => v1::HoldoutStatus::Active,
        HoldoutStatus::Ended => v1::HoldoutStatus::Ended,
    }
}

/// The domain status of a wire one; `None` for unspecified.
pub fn holdout_status_from_proto(
    value: i32,
    field: &str,
) -> Result<Option<HoldoutStatus>, FieldViolation> {
    match v1::HoldoutStatus::try_from(value) {
        Ok(v1::HoldoutStatus::Unspecified) => Ok(None),
        Ok(v1::HoldoutStatus::Active) => Ok(Some(HoldoutStatus::Active)),
        Ok(v1::HoldoutStatus::Ended) => Ok(Some(HoldoutStatus::Ended)),
        Err(_) => Err(unknown_enum(field, value)),
    }
}

/// The wire form of a serving holdout.
pub fn serving_holdout_to_proto(holdout: &ServingHoldout) -> v1::ServingHoldout {
    v1::ServingHoldout {
        id: holdout.id.clone(),
        revision: holdout.revision,
        salt: holdout.salt.clone(),
        share_basis_points: holdout.share_basis_points,
        layers: holdout.layers.clone(),
        placements: holdout.placements.clone(),
    }
}

/// The domain form of a received serving holdout. A share beyond the
/// buckets means nothing and is refused.
pub fn serving_holdout_from_proto(
    proto: v1::ServingHoldout,
) -> Result<ServingHoldout, Vec<FieldViolation>> {
    if proto.share_basis_points > exp_core::BUCKETS {
        return Err(vec![FieldViolation::new(
            "share_basis_points",
            "lies outside 0..10000",
        )]);
    }
    Ok(ServingHoldout {
        id: proto.id,
        revision: proto.revision,
        salt: proto.salt,
        share_basis_points: proto.share_basis_points,
        layers: proto.layers,
        placements: proto.placements,
    })
}

#[cfg(test)]
mod tests {
    use exp_core::serving::{ConfigDelta, ServingConfig};

    use super::*;
    use crate::serving::{
        config_delta_from_proto, config_delta_to_proto, config_snapshot_from_proto,
        config_snapshot_to_proto,
    };

    fn serving_holdout() -> ServingHoldout {
        ServingHoldout {
            id: "ranking_holdout".into(),
            revision: 2,
            salt: "ranking_holdout:holdout".into(),
            share_basis_points: 500,
            layers: vec!["ymal_ranking".into()],
            placements: vec!["home_feed".into()],
        }
    }

    #[test]
    fn holdouts_survive_the_wire_in_snapshots_and_deltas() {
        let config = ServingConfig {
            version: 9,
            holdouts: vec![serving_holdout()],
            ..ServingConfig::default()
        };
        let wire = config_snapshot_to_proto(&config, SystemTime::UNIX_EPOCH);
        assert_eq!(config_snapshot_from_proto(wire).expect("valid"), config);

        let delta = ConfigDelta {
            upserted_holdouts: vec![serving_holdout()],
            removed_holdout_ids: vec!["old_holdout".into()],
            ..ConfigDelta::default()
        };
        let wire = config_delta_to_proto(&delta);
        assert_eq!(config_delta_from_proto(wire).expect("valid"), delta);
    }

    #[test]
    fn a_received_share_beyond_the_buckets_is_refused_with_its_path() {
        let mut wire = serving_holdout_to_proto(&serving_holdout());
        wire.share_basis_points = 10_001;
        let snapshot = v1::ConfigSnapshot {
            holdouts: vec![wire],
            ..Default::default()
        };
        let violations = config_snapshot_from_proto(snapshot).expect_err("refused");
        assert_eq!(violations[0].field, "holdouts[0].share_basis_points");
    }

    #[test]
    fn a_holdout_round_trips_through_its_wire_form_but_output_only_fields() {
        let wire = v1::Holdout {
            id: "ranking_holdout".into(),
            share_basis_points: 500,
            layers: vec!["ymal_ranking".into()],
            salt: "chosen by the caller".into(),
            status: v1::HoldoutStatus::Ended as i32,
            revision: 3,
            ..Default::default()
        };
        let domain = holdout_from_proto(wire);
        assert_eq!(domain.salt, "", "the salt is drawn at creation");
        assert_eq!(domain.status, HoldoutStatus::Active);
        assert_eq!(domain.revision, 3, "the revision an update is based on");
        let back = holdout_to_proto(&domain);
        assert_eq!(back.layers, ["ymal_ranking"]);
        assert_eq!(
            holdout_status_from_proto(back.status, "status"),
            Ok(Some(HoldoutStatus::Active))
        );
        assert!(holdout_status_from_proto(9, "status").is_err());
    }
}
