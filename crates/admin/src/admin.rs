//! The experiment-management use cases, on domain types. Every write runs
//! inside one [`Store::write`], so the rules are checked against the state
//! it replaces and nothing interleaves.

use std::sync::Arc;

use exp_core::{
    Clock, Error, Experiment, FieldViolation, ParamSchema, QaOverride, Revision, RevisionAction,
    Status, UnitType, allocation,
    lifecycle::{self, Change, Transition, Update},
    validate,
};
use exp_store::{Store, WriteTxn};

use crate::Principal;

/// Default and largest page sizes of list calls.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page size of list calls; larger requests are clamped.
pub const MAX_PAGE_SIZE: usize = 500;

/// Filters of [`Admin::list`]; they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status; `None`: every status but archived.
    pub status: Option<Status>,
    /// Only experiments that can run on this placement.
    pub placement: Option<String>,
    /// Only this owner.
    pub owner: Option<String>,
}

/// A page of results and the token of the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Token of the next page; empty when this is the last.
    pub next_page_token: String,
}

/// The experiment-management use cases.
#[derive(Debug, Clone)]
pub struct Admin {
    store: Arc<Store>,
    schema: Arc<ParamSchema>,
    clock: Arc<dyn Clock>,
}

impl Admin {
    /// Use cases over `store`, checking params against `schema`, with time
    /// from `clock`.
    pub fn new(store: Arc<Store>, schema: Arc<ParamSchema>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            schema,
            clock,
        }
    }

    /// The store, for readers such as the config service.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The parameter schema variants are checked against.
    pub fn schema(&self) -> &Arc<ParamSchema> {
        &self.schema
    }

    /// The clock changes are stamped with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Creates a draft at revision 1.
    pub fn create(
        &self,
        proposed: &Experiment,
        author: &Principal,
        reason: &str,
    ) -> Result<Experiment, Error> {
        let change = self.change(author, reason);
        let created = lifecycle::create(proposed, &self.schema, change)?;
        self.store.write(|txn| {
            if txn.experiment(&created.id)?.is_some() {
                return Err(Error::AlreadyExists {
                    kind: "experiment",
                    id: created.id.clone(),
                });
            }
            if txn.holdout(&created.id).is_some() {
                return Err(Error::invalid(
                    "id",
                    format!(
                        "{:?} is the id of a holdout: experiments and holdouts share one \
                         namespace (an exposure names either by its experiment_id)",
                        created.id
                    ),
                ));
            }
            put(txn, &created, RevisionAction::Create, author, reason, None);
            Ok(created.clone())
        })
    }

    /// The current revision of `id`.
    pub fn get(&self, id: &str) -> Result<Experiment, Error> {
        require_id("id", id)?;
        self.store.experiment(id)?.ok_or_else(|| not_found(id))
    }

    /// Experiments matching `filter`, ordered by id, one page at a time.
    pub fn list(
        &self,
        filter: &ListFilter,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page<Experiment>, Error> {
        let page_size = page_size_or_default(page_size);
        let matching = self.store.experiments()?.into_iter().filter(|experiment| {
            let status_matches = match filter.status {
                Some(status) => experiment.status == status,
                None => experiment.status != Status::Archived,
            };
            let placement_matches = filter.placement.as_ref().is_none_or(|placement| {
                let placements = &experiment.eligibility.placements;
                placements.is_empty() || placements.contains(placement)
            });
            let owner_matches = filter
                .owner
                .as_ref()
                .is_none_or(|owner| &experiment.owner == owner);
            status_matches
                && placement_matches
                && owner_matches
                && experiment.id.as_str() > page_token
        });
        let mut items: Vec<Experiment> = matching.take(page_size + 1).collect();
        let next_page_token = if items.len() > page_size {
            items.truncate(page_size);
            items.last().map(|last| last.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Applies an update based on `update.proposed.revision`.
    pub fn update(
        &self,
        update: Update<'_>,
        author: &Principal,
        reason: &str,
    ) -> Result<Experiment, Error> {
        let change = self.change(author, reason);
        self.store.write(|txn| {
            let current = current(txn, &update.proposed.id)?;
            let mut next = lifecycle::update(&current, update, &self.schema, change)?;
            place(&mut next, &current, &txn.experiments()?)?;
            put(txn, &next, RevisionAction::Update, author, reason, None);
            Ok(next)
        })
    }

    /// Every problem Create or Update would refuse for `update.proposed`,
    /// without writing anything.
    pub fn validate(&self, update: Update<'_>) -> Result<Vec<FieldViolation>, Error> {
        let proposed = update.proposed;
        let Some(current) = self.store.experiment(&proposed.id)? else {
            let mut violations = validate::experiment(proposed, &self.schema);
            if self.store.holdout(&proposed.id)?.is_some() {
                violations.push(FieldViolation::new(
                    "id",
                    format!("{:?} is the id of a holdout", proposed.id),
                ));
            }
            return Ok(violations);
        };
        let change = Change {
            now: self.clock.now(),
            author: "validation",
            reason: "",
        };
        let outcome = lifecycle::update(&current, update, &self.schema, change)
            .and_then(|mut next| place(&mut next, &current, &self.store.experiments()?));
        Ok(match outcome {
            Ok(()) => Vec::new(),
            Err(Error::InvalidArgument(violations)) => violations,
            Err(Error::StaleRevision { based_on, current }) => vec![FieldViolation::new(
                "revision",
                format!("{based_on} is stale: the current revision is {current}"),
            )],
            Err(Error::FailedPrecondition(message)) => vec![FieldViolation::new("status", message)],
            Err(other) => return Err(other),
        })
    }

    /// Applies a status transition, only if `expected_revision` (when
    /// given) is current.
    pub fn transition(
        &self,
        id: &str,
        transition: &Transition,
        expected_revision: Option<u64>,
        author: &Principal,
        reason: &str,
    ) -> Result<Experiment, Error> {
        require_id("id", id)?;
        let change = self.change(author, reason);
        self.store.write(|txn| {
            let current = current(txn, id)?;
            check_expected(&current, expected_revision)?;
            let mut next = lifecycle::transition(&current, transition, change)?;
            place(&mut next, &current, &txn.experiments()?)?;
            let action = match transition {
                Transition::Start | Transition::Activate => RevisionAction::Start,
                Transition::Pause => RevisionAction::Pause,
                Transition::Resume => RevisionAction::Resume,
                Transition::Stop { .. } => RevisionAction::Stop,
                Transition::Archive => RevisionAction::Archive,
                Transition::Complete => RevisionAction::Complete,
            };
            put(txn, &next, action, author, reason, None);
            Ok(next)
        })
    }

    /// Revisions of `id`, newest first; `page_token` is the revision
    /// number the previous page ended at.
    pub fn revisions(
        &self,
        id: &str,
        page_size: usize,
        page_token: &str,
    ) -> Result<Page<Revision>, Error> {
        require_id("id", id)?;
        let before = if page_token.is_empty() {
            None
        } else {
            Some(page_token.parse::<u64>().map_err(|_| {
                Error::invalid(
                    "page_token",
                    "is not a token returned by ListExperimentRevisions",
                )
            })?)
        };
        if self.store.experiment(id)?.is_none() {
            return Err(not_found(id));
        }
        let page_size = page_size_or_default(page_size);
        let mut items = self.store.revisions(id, before, page_size + 1)?;
        let next_page_token = if items.len() > page_size {
            items.truncate(page_size);
            items
                .last()
                .map(|last| last.number().to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Revision `revision` of `id`.
    pub fn revision(&self, id: &str, revision: u64) -> Result<Revision, Error> {
        require_id("id", id)?;
        self.store
            .revision(id, revision)?
            .ok_or_else(|| Error::NotFound {
                kind: "revision",
                id: format!("{id}@{revision}"),
            })
    }

    /// Makes the configuration of revision `to_revision` current as a new
    /// revision; `rerandomize` as in an update.
    #[allow(clippy::too_many_arguments)]
    pub fn rollback(
        &self,
        id: &str,
        to_revision: u64,
        rerandomize: bool,
        expected_revision: Option<u64>,
        author: &Principal,
        reason: &str,
    ) -> Result<Experiment, Error> {
        require_id("id", id)?;
        let change = self.change(author, reason);
        self.store.write(|txn| {
            let current = current(txn, id)?;
            check_expected(&current, expected_revision)?;
            let target = txn.revision(id, to_revision)?;
            let next = rolled_back(
                &current,
                target,
                to_revision,
                rerandomize,
                &self.schema,
                change,
                &txn.experiments()?,
            )?;
            put(
                txn,
                &next,
                RevisionAction::Rollback,
                author,
                reason,
                Some(to_revision),
            );
            Ok(next)
        })
    }

    /// What [`Admin::rollback`] would make current now, by the same rules,
    /// without writing anything: the preview before the button.
    pub fn plan_rollback(
        &self,
        id: &str,
        to_revision: u64,
        rerandomize: bool,
        author: &Principal,
    ) -> Result<Experiment, Error> {
        require_id("id", id)?;
        let current = self.store.experiment(id)?.ok_or_else(|| not_found(id))?;
        let target = self.store.revision(id, to_revision)?;
        rolled_back(
            &current,
            target,
            to_revision,
            rerandomize,
            &self.schema,
            self.change(author, "preview"),
            &self.store.experiments()?,
        )
    }

    /// Creates or replaces a QA override; its creation time is now.
    pub fn set_override(&self, mut qa_override: QaOverride) -> Result<QaOverride, Error> {
        require_id("experiment_id", &qa_override.experiment_id)?;
        let now = self.clock.now();
        qa_override.create_time = now;
        self.store.write(|txn| {
            let experiment = current(txn, &qa_override.experiment_id)?;
            if experiment.status == Status::Archived {
                return Err(Error::FailedPrecondition(format!(
                    "experiment {:?} is archived and read-only",
                    experiment.id
                )));
            }
            Error::check(validate::qa_override(&qa_override, &experiment, now))?;
            txn.put_override(qa_override.clone());
            Ok(qa_override.clone())
        })
    }

    /// Deletes a QA override.
    pub fn delete_override(
        &self,
        experiment_id: &str,
        unit_type: UnitType,
        unit_id: &str,
    ) -> Result<(), Error> {
        require_id("experiment_id", experiment_id)?;
        self.store.write(|txn| {
            if txn.delete_override(experiment_id, unit_type, unit_id)? {
                Ok(())
            } else {
                Err(Error::NotFound {
                    kind: "override",
                    id: format!("{experiment_id}/{}/{unit_id}", unit_type.as_str()),
                })
            }
        })
    }

    /// QA overrides of one experiment or all, without expired ones unless
    /// asked.
    pub fn overrides(
        &self,
        experiment_id: Option<&str>,
        include_expired: bool,
    ) -> Result<Vec<QaOverride>, Error> {
        let now = self.clock.now();
        Ok(self
            .store
            .overrides(experiment_id)?
            .into_iter()
            .filter(|o| include_expired || o.is_active_at(now))
            .collect())
    }

    /// Moves experiments whose start or end time has come. Returns what
    /// changed, as (experiment id, new status).
    pub fn apply_schedule(&self) -> Result<Vec<(String, Status)>, Error> {
        let scheduler = Principal::system("scheduler");
        let mut changed = Vec::new();
        for experiment in self.store.experiments()? {
            let now = self.clock.now();
            let due = |e: &Experiment| match e.status {
                Status::Scheduled if e.schedule.start_time.is_none_or(|start| start <= now) => {
                    Some((Transition::Activate, "schedule.start_time reached"))
                }
                Status::Running | Status::Paused
                    if e.schedule.end_time.is_some_and(|end| end <= now) =>
                {
                    Some((Transition::Complete, "schedule.end_time reached"))
                }
                _ => None,
            };
            let mut state = experiment;
            // An experiment whose start and end both passed (say, while the
            // server was down) activates and completes in one pass.
            while let Some((transition, reason)) = due(&state) {
                // One experiment that cannot move must not hold up the rest.
                match self.transition(
                    &state.id,
                    &transition,
                    Some(state.revision),
                    &scheduler,
                    reason,
                ) {
                    Ok(next) => {
                        changed.push((next.id.clone(), next.status));
                        state = next;
                    }
                    Err(err) => {
                        tracing::warn!(experiment = %state.id, error = %err, "scheduled change refused");
                        break;
                    }
                }
            }
        }
        Ok(changed)
    }

    fn change<'a>(&self, author: &'a Principal, reason: &'a str) -> Change<'a> {
        Change {
            now: self.clock.now(),
            author: &author.identity,
            reason,
        }
    }
}

fn put(
    txn: &mut WriteTxn<'_>,
    experiment: &Experiment,
    action: RevisionAction,
    author: &Principal,
    reason: &str,
    rolled_back_to: Option<u64>,
) {
    txn.put_revision(Revision {
        experiment: experiment.clone(),
        action,
        author: author.identity.clone(),
        reason: reason.to_owned(),
        rolled_back_to,
    });
}

/// Fits `next` among the other experiments: its buckets in the layer (as
/// far as possible the ones `current` held), and no parameter shared with
/// a serving experiment of another layer on a common placement.
/// `current` with the configuration of `target` (revision `to_revision`)
/// placed among `all`: the rule of a rollback and of its preview.
fn rolled_back(
    current: &Experiment,
    target: Option<Revision>,
    to_revision: u64,
    rerandomize: bool,
    schema: &ParamSchema,
    change: Change<'_>,
    all: &[Experiment],
) -> Result<Experiment, Error> {
    if to_revision == 0 || to_revision >= current.revision {
        return Err(Error::invalid(
            "to_revision",
            format!(
                "must be an earlier revision, from 1 to {}",
                current.revision.saturating_sub(1)
            ),
        ));
    }
    let target = target.ok_or_else(|| Error::NotFound {
        kind: "revision",
        id: format!("{}@{to_revision}", current.id),
    })?;
    let mut next = lifecycle::rollback(current, &target.experiment, rerandomize, schema, change)?;
    place(&mut next, current, all)?;
    Ok(next)
}

fn place(next: &mut Experiment, current: &Experiment, all: &[Experiment]) -> Result<(), Error> {
    allocation::allocate(next, Some(current), all)?;
    lifecycle::check_param_conflicts(next, all)
}

fn current(txn: &WriteTxn<'_>, id: &str) -> Result<Experiment, Error> {
    txn.experiment(id)?.ok_or_else(|| not_found(id))
}

fn check_expected(current: &Experiment, expected: Option<u64>) -> Result<(), Error> {
    match expected {
        Some(based_on) if based_on != current.revision => Err(Error::StaleRevision {
            based_on,
            current: current.revision,
        }),
        _ => Ok(()),
    }
}

fn require_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        Err(Error::invalid(field, "is required"))
    } else {
        Ok(())
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        kind: "experiment",
        id: id.to_owned(),
    }
}

fn page_size_or_default(page_size: usize) -> usize {
    match page_size {
        0 => DEFAULT_PAGE_SIZE,
        size => size.min(MAX_PAGE_SIZE),
    }
}
