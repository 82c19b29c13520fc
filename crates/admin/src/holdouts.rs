//! The holdout use cases, on domain types. Each write runs inside one
//! [`exp_store::Store::write`], so the id namespace shared with experiments
//! is checked against the state it replaces, and the config version bump
//! of the write brings the change to every watcher.

use exp_core::{
    Error, FieldViolation, Holdout, HoldoutStatus,
    holdout::{self, HoldoutUpdate},
};

use crate::{Admin, Principal};

/// The fields an update mask may name.
pub const UPDATABLE: [&str; 4] = ["description", "share_basis_points", "layers", "placements"];

impl Admin {
    /// Creates `proposed` as an active holdout at revision 1, its salt
    /// drawn now. Refused when an experiment or a holdout has its id:
    /// exposures name either by one `experiment_id`.
    pub fn create_holdout(&self, proposed: &Holdout, author: &Principal) -> Result<Holdout, Error> {
        let created = holdout::create(proposed, self.clock().now(), &author.identity)?;
        self.store().write(|txn| {
            if txn.holdout(&created.id).is_some() {
                return Err(Error::AlreadyExists {
                    kind: "holdout",
                    id: created.id.clone(),
                });
            }
            if txn.experiment(&created.id)?.is_some() {
                return Err(Error::invalid(
                    "id",
                    format!(
                        "{:?} is the id of an experiment: holdouts and experiments share one \
                         namespace (an exposure names either by its experiment_id)",
                        created.id
                    ),
                ));
            }
            txn.put_holdout(created.clone());
            Ok(created.clone())
        })
    }

    /// The current state of holdout `id`.
    pub fn holdout(&self, id: &str) -> Result<Holdout, Error> {
        if id.is_empty() {
            return Err(Error::invalid("id", "is required"));
        }
        self.store()
            .holdout(id)?
            .ok_or_else(|| holdout_not_found(id))
    }

    /// What results analyse under `id`: the experiment, or the
    /// comparison of holdout `id`'s two groups
    /// ([`exp_core::holdout::comparison`]).
    pub fn results_subject(&self, id: &str) -> Result<exp_core::Experiment, Error> {
        match self.get(id) {
            Err(Error::NotFound { .. }) => match self.store().holdout(id)? {
                Some(holdout) => Ok(holdout::comparison(&holdout)),
                None => Err(Error::NotFound {
                    kind: "experiment or holdout",
                    id: id.to_owned(),
                }),
            },
            other => other,
        }
    }

    /// Every holdout, or those in `status`, ordered by id.
    pub fn holdouts(&self, status: Option<HoldoutStatus>) -> Result<Vec<Holdout>, Error> {
        Ok(self
            .store()
            .holdouts()?
            .into_iter()
            .filter(|h| status.is_none_or(|status| h.status == status))
            .collect())
    }

    /// Applies the fields of `proposed` named by `mask` (every updatable
    /// field when empty) to holdout `proposed.id`, only if
    /// `proposed.revision` (when not 0) is current.
    pub fn update_holdout(
        &self,
        proposed: &Holdout,
        mask: &[String],
        author: &Principal,
    ) -> Result<Holdout, Error> {
        let update = holdout_update(proposed, mask)?;
        self.store().write(|txn| {
            let current = current_holdout(txn, &proposed.id)?;
            check_expected(&current, proposed.revision)?;
            let next = holdout::update(&current, update, self.clock().now(), &author.identity)?;
            txn.put_holdout(next.clone());
            Ok(next)
        })
    }

    /// Ends holdout `id`, only if `expected_revision` (when not 0) is
    /// current: its units get experiments again; its results stay.
    pub fn end_holdout(
        &self,
        id: &str,
        expected_revision: u64,
        author: &Principal,
    ) -> Result<Holdout, Error> {
        self.store().write(|txn| {
            let current = current_holdout(txn, id)?;
            check_expected(&current, expected_revision)?;
            let next = holdout::end(&current, self.clock().now(), &author.identity)?;
            txn.put_holdout(next.clone());
            Ok(next)
        })
    }
}

fn holdout_update(proposed: &Holdout, mask: &[String]) -> Result<HoldoutUpdate, Error> {
    let unknown: Vec<FieldViolation> = mask
        .iter()
        .filter(|path| !UPDATABLE.contains(&path.as_str()))
        .map(|path| {
            FieldViolation::new(
                "update_mask",
                format!(
                    "{path:?} cannot be updated; updatable: {}",
                    UPDATABLE.join(", ")
                ),
            )
        })
        .collect();
    Error::check(unknown)?;
    let named = |field: &str| mask.is_empty() || mask.iter().any(|path| path == field);
    Ok(HoldoutUpdate {
        description: named("description").then(|| proposed.description.clone()),
        share_basis_points: named("share_basis_points").then_some(proposed.share_basis_points),
        layers: named("layers").then(|| proposed.layers.clone()),
        placements: named("placements").then(|| proposed.placements.clone()),
    })
}

fn current_holdout(txn: &exp_store::WriteTxn<'_>, id: &str) -> Result<Holdout, Error> {
    if id.is_empty() {
        return Err(Error::invalid("id", "is required"));
    }
    txn.holdout(id).ok_or_else(|| holdout_not_found(id))
}

fn check_expected(current: &Holdout, expected: u64) -> Result<(), Error> {
    if expected != 0 && expected != current.revision {
        return Err(Error::StaleRevision {
            based_on: expected,
            current: current.revision,
        });
    }
    Ok(())
}

fn holdout_not_found(id: &str) -> Error {
    Error::NotFound {
        kind: "holdout",
        id: id.to_owned(),
    }
}
