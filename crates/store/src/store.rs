use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use arc_swap::ArcSwap;
use exp_core::{Error, Experiment, Holdout, QaOverride, Revision, UnitType};
use serde::{Serialize, de::DeserializeOwned};
use sled::{
    Transactional, Tree,
    transaction::{ConflictableTransactionError, TransactionError},
};
use tokio::sync::watch;
use tracing::{info, warn};

const CONFIG_VERSION_KEY: &[u8] = b"config_version";

/// The sled-backed config store. Cheap to share behind an `Arc`.
///
/// A change is seen by no one before it is on disk: every read is answered
/// from the [`Confirmed`] state, which a write replaces only after sled's
/// flush succeeded (revision history, read from sled, is bounded by the
/// confirmed revision of its experiment). A write the disk refused was not
/// applied: the store stops writing, reopens sled from disk, undoes the
/// refused change if it reached the disk after all, and writes again
/// once a flush succeeds ([`Store::recover`]).
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    // The sled handles: `None` while they are being reopened.
    disk: RwLock<Option<Arc<Disk>>>,
    confirmed: ArcSwap<Confirmed>,
    // Serialises writers (and recovery): each reads, decides and writes
    // without another in between. Writes are rare (admin actions), so one
    // lock costs nothing; readers never take it.
    writer: Mutex<WriterState>,
    version: watch::Sender<u64>,
    health: watch::Sender<StoreHealth>,
}

#[derive(Debug)]
struct Disk {
    db: sled::Db,
    experiments: Tree,
    revisions: Tree,
    overrides: Tree,
    holdouts: Tree,
    meta: Tree,
}

/// What is on disk and so may be served: the config version, every
/// current experiment, every QA override, every holdout. Replaced whole
/// by each write.
#[derive(Debug, Clone, Default)]
pub struct Confirmed {
    /// The global config version: incremented by every change.
    pub version: u64,
    experiments: BTreeMap<String, Experiment>,
    overrides: BTreeMap<Vec<u8>, QaOverride>,
    holdouts: BTreeMap<String, Holdout>,
}

/// Whether the store can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Writes reach the disk.
    Writable,
    /// The last write or recovery failed; reads still answer from the
    /// confirmed state.
    CannotWrite {
        /// What the disk said.
        reason: String,
    },
}

#[derive(Debug, Default)]
struct WriterState {
    // The change the disk refused, kept until recovery has made sure it
    // is not on disk.
    refused: Option<Encoded>,
    // Set when a write failed: writes wait for a successful recovery.
    broken: bool,
}

/// A write in progress: reads see the confirmed state; staged writes land
/// together when the closure passed to [`Store::write`] returns `Ok`.
#[derive(Debug)]
pub struct WriteTxn<'a> {
    store: &'a Store,
    confirmed: &'a Confirmed,
    revisions: Vec<Revision>,
    overrides_set: Vec<QaOverride>,
    overrides_deleted: Vec<(String, UnitType, String)>,
    holdouts: Vec<Holdout>,
}

// === impl Confirmed ===

impl Confirmed {
    /// The current revision of experiment `id`.
    pub fn experiment(&self, id: &str) -> Option<&Experiment> {
        self.experiments.get(id)
    }

    /// Every experiment, ordered by id.
    pub fn experiments(&self) -> impl Iterator<Item = &Experiment> {
        self.experiments.values()
    }

    /// QA overrides of experiment `id`, or of every experiment for `None`,
    /// ordered by experiment, unit type and unit id.
    pub fn overrides(&self, experiment_id: Option<&str>) -> Vec<QaOverride> {
        match experiment_id {
            Some(id) => {
                let mut prefix = id.as_bytes().to_vec();
                prefix.push(0);
                self.overrides
                    .range(prefix.clone()..)
                    .take_while(|(key, _)| key.starts_with(&prefix))
                    .map(|(_, value)| value.clone())
                    .collect()
            }
            None => self.overrides.values().cloned().collect(),
        }
    }

    /// The current state of holdout `id`.
    pub fn holdout(&self, id: &str) -> Option<&Holdout> {
        self.holdouts.get(id)
    }

    /// Every holdout, ordered by id.
    pub fn holdouts(&self) -> impl Iterator<Item = &Holdout> {
        self.holdouts.values()
    }

    fn load(disk: &Disk) -> Result<Self, Error> {
        let version = read_version(disk)?;
        let experiments = disk
            .experiments
            .iter()
            .values()
            .map(|value| {
                let experiment: Experiment =
                    decode(&value.map_err(|err| storage("listing experiments", err))?)?;
                Ok((experiment.id.clone(), experiment))
            })
            .collect::<Result<_, Error>>()?;
        let overrides = disk
            .overrides
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(|err| storage("listing overrides", err))?;
                Ok((key.to_vec(), decode(&value)?))
            })
            .collect::<Result<_, Error>>()?;
        let holdouts = disk
            .holdouts
            .iter()
            .values()
            .map(|value| {
                let holdout: Holdout =
                    decode(&value.map_err(|err| storage("listing holdouts", err))?)?;
                Ok((holdout.id.clone(), holdout))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            version,
            experiments,
            overrides,
            holdouts,
        })
    }

    /// This state with `staged` applied, at `version`.
    fn with(&self, staged: &WriteTxn<'_>, version: u64) -> Self {
        let mut next = self.clone();
        next.version = version;
        for revision in &staged.revisions {
            next.experiments
                .insert(revision.experiment.id.clone(), revision.experiment.clone());
        }
        for qa_override in &staged.overrides_set {
            next.overrides.insert(
                override_key(
                    &qa_override.experiment_id,
                    qa_override.unit_type,
                    &qa_override.unit_id,
                ),
                qa_override.clone(),
            );
        }
        for (id, unit_type, unit_id) in &staged.overrides_deleted {
            next.overrides
                .remove(&override_key(id, *unit_type, unit_id));
        }
        for holdout in &staged.holdouts {
            next.holdouts.insert(holdout.id.clone(), holdout.clone());
        }
        next
    }
}

// === impl Store ===

impl Store {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_owned();
        let disk = Disk::open(&path)?;
        let confirmed = Confirmed::load(&disk)?;
        let (version, _) = watch::channel(confirmed.version);
        let (health, _) = watch::channel(StoreHealth::Writable);
        Ok(Self {
            path,
            disk: RwLock::new(Some(Arc::new(disk))),
            confirmed: ArcSwap::from_pointee(confirmed),
            writer: Mutex::new(WriterState::default()),
            version,
            health,
        })
    }

    /// The confirmed state: what is on disk, read in one piece.
    pub fn confirmed(&self) -> Arc<Confirmed> {
        self.confirmed.load_full()
    }

    /// The global config version: incremented by every change.
    pub fn config_version(&self) -> u64 {
        self.confirmed.load().version
    }

    /// A receiver that sees every new config version.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Whether writes reach the disk, and changes of it.
    pub fn health(&self) -> watch::Receiver<StoreHealth> {
        self.health.subscribe()
    }

    /// The current revision of experiment `id`.
    pub fn experiment(&self, id: &str) -> Result<Option<Experiment>, Error> {
        Ok(self.confirmed.load().experiment(id).cloned())
    }

    /// Every experiment, ordered by id.
    pub fn experiments(&self) -> Result<Vec<Experiment>, Error> {
        Ok(self.confirmed.load().experiments().cloned().collect())
    }

    /// Revision `revision` of experiment `id`.
    pub fn revision(&self, id: &str, revision: u64) -> Result<Option<Revision>, Error> {
        if revision > self.confirmed_revision(id) {
            return Ok(None);
        }
        get_json(&self.disk()?.revisions, &revision_key(id, revision))
    }

    /// Up to `limit` revisions of `id`, newest first, older than `before`
    /// when given.
    pub fn revisions(
        &self,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Revision>, Error> {
        // A revision past the confirmed one is a refused change still in
        // sled's memory: never listed.
        let end = before
            .unwrap_or(u64::MAX)
            .min(self.confirmed_revision(id).saturating_add(1));
        self.disk()?
            .revisions
            .range(revision_key(id, 0)..revision_key(id, end))
            .rev()
            .take(limit)
            .map(|entry| decode(&entry.map_err(|err| storage("listing revisions", err))?.1))
            .collect()
    }

    /// QA overrides of experiment `id`, or of every experiment for `None`,
    /// ordered by experiment, unit type and unit id.
    pub fn overrides(&self, experiment_id: Option<&str>) -> Result<Vec<QaOverride>, Error> {
        Ok(self.confirmed.load().overrides(experiment_id))
    }

    /// The current state of holdout `id`.
    pub fn holdout(&self, id: &str) -> Result<Option<Holdout>, Error> {
        Ok(self.confirmed.load().holdout(id).cloned())
    }

    /// Every holdout, ordered by id.
    pub fn holdouts(&self) -> Result<Vec<Holdout>, Error> {
        Ok(self.confirmed.load().holdouts().cloned().collect())
    }

    /// The one way to change the store. `change` reads through the
    /// [`WriteTxn`] and stages writes; when it returns `Ok` and staged
    /// anything, the writes and a config version bump commit atomically
    /// and are flushed to disk, and only then become visible to readers
    /// and watchers. An error from the disk means the change was not
    /// applied and never will be. Blocks on the disk: call it from a
    /// blocking context.
    pub fn write<T>(
        &self,
        change: impl FnOnce(&mut WriteTxn<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut writer = self.lock_writer();
        if writer.broken {
            self.recover_locked(&mut writer).map_err(|err| {
                Error::Storage(format!(
                    "the config store cannot write, so the change was not applied: {err}"
                ))
            })?;
        }
        let confirmed = self.confirmed.load_full();
        let mut txn = WriteTxn {
            store: self,
            confirmed: &confirmed,
            revisions: Vec::new(),
            overrides_set: Vec::new(),
            overrides_deleted: Vec::new(),
            holdouts: Vec::new(),
        };
        let result = change(&mut txn)?;
        if txn.revisions.is_empty()
            && txn.overrides_set.is_empty()
            && txn.overrides_deleted.is_empty()
            && txn.holdouts.is_empty()
        {
            return Ok(result);
        }
        let next_version = confirmed.version + 1;
        let encoded = txn.encode(next_version)?;
        let disk = self.disk()?;
        if let Err(err) = disk.commit(&encoded).and_then(|()| disk.flush()) {
            warn!(error = %err, "the config store could not write a change; it was not applied");
            self.health.send_replace(StoreHealth::CannotWrite {
                reason: err.to_string(),
            });
            *writer = WriterState {
                refused: Some(encoded),
                broken: true,
            };
            return Err(Error::Storage(format!(
                "the disk refused the change, so it was not applied ({err}); \
                 the store writes again once the disk takes writes"
            )));
        }
        // On disk: now, and only now, anyone may see it.
        self.confirmed
            .store(Arc::new(confirmed.with(&txn, next_version)));
        self.version.send_replace(next_version);
        Ok(result)
    }

    /// Makes a store that could not write writable again, if the disk lets
    /// it: reopens sled from disk (what a refused change left in memory is
    /// dropped), undoes the refused change if it reached the disk after
    /// all, and flushes. A no-op on a writable store. Blocks on the disk.
    pub fn recover(&self) -> Result<(), Error> {
        let mut writer = self.lock_writer();
        if writer.broken {
            self.recover_locked(&mut writer)?;
        }
        Ok(())
    }

    fn recover_locked(&self, writer: &mut WriterState) -> Result<(), Error> {
        let result = self.reopen(writer.refused.as_ref());
        match &result {
            Ok(()) => {
                info!("the config store writes again");
                *writer = WriterState::default();
                self.health.send_replace(StoreHealth::Writable);
            }
            Err(err) => {
                self.health.send_replace(StoreHealth::CannotWrite {
                    reason: err.to_string(),
                });
            }
        }
        result
    }

    fn reopen(&self, refused: Option<&Encoded>) -> Result<(), Error> {
        // Opening sled writes: while the disk takes no write, the old
        // handles stay, so revision history still reads. Past the probe,
        // history answers UNAVAILABLE until the reopen succeeds.
        probe_disk(&self.path)?;
        // sled cannot write again after a failed flush: drop it (readers of
        // revision history wait for the new handles) and open it afresh.
        let mut slot = self
            .disk
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(slot.take());
        let disk = Disk::open(&self.path)?;
        let confirmed = self.confirmed.load_full();
        let on_disk = read_version(&disk)?;
        if on_disk != confirmed.version {
            let Some(refused) = refused.filter(|refused| refused.version == on_disk) else {
                return Err(Error::Storage(format!(
                    "config version {on_disk} on disk, {} confirmed, and no refused change \
                     explains the difference",
                    confirmed.version
                )));
            };
            warn!(
                version = on_disk,
                "a refused change reached the disk after all; undoing it"
            );
            disk.commit(&refused.undo(&confirmed)?)?;
        }
        // Writing the confirmed version again proves the disk takes a write.
        disk.meta
            .insert(CONFIG_VERSION_KEY, &confirmed.version.to_be_bytes())
            .map_err(|err| storage("writing the config version", err))?;
        disk.flush()?;
        *slot = Some(Arc::new(disk));
        Ok(())
    }

    fn disk(&self) -> Result<Arc<Disk>, Error> {
        self.disk
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| Error::Unavailable("the config store is being reopened".into()))
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn confirmed_revision(&self, id: &str) -> u64 {
        self.confirmed
            .load()
            .experiment(id)
            .map_or(0, |experiment| experiment.revision)
    }
}

// === impl Disk ===

impl Disk {
    fn open(path: &Path) -> Result<Self, Error> {
        let db = open_db(path)?;
        let open_tree = |name: &str| {
            db.open_tree(name)
                .map_err(|err| storage("opening tree", err))
        };
        Ok(Self {
            experiments: open_tree("experiments")?,
            revisions: open_tree("revisions")?,
            overrides: open_tree("overrides")?,
            holdouts: open_tree("holdouts")?,
            meta: open_tree("meta")?,
            db,
        })
    }

    /// Commits `change` atomically (one transaction across the trees).
    fn commit(&self, change: &Encoded) -> Result<(), Error> {
        (
            &self.experiments,
            &self.revisions,
            &self.overrides,
            &self.holdouts,
            &self.meta,
        )
            .transaction(|(experiments, revisions, overrides, holdouts, meta)| {
                for (id, experiment) in &change.experiments {
                    match experiment {
                        Some(value) => experiments.insert(id.as_bytes(), value.as_slice())?,
                        None => experiments.remove(id.as_bytes())?,
                    };
                }
                for (key, revision) in &change.revisions {
                    match revision {
                        Some(value) => revisions.insert(key.as_slice(), value.as_slice())?,
                        None => revisions.remove(key.as_slice())?,
                    };
                }
                for (key, value) in &change.overrides {
                    match value {
                        Some(value) => overrides.insert(key.as_slice(), value.as_slice())?,
                        None => overrides.remove(key.as_slice())?,
                    };
                }
                for (id, value) in &change.holdouts {
                    match value {
                        Some(value) => holdouts.insert(id.as_bytes(), value.as_slice())?,
                        None => holdouts.remove(id.as_bytes())?,
                    };
                }
                meta.insert(CONFIG_VERSION_KEY, &change.version.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(|err| match err {
                TransactionError::Abort(err) => err,
                TransactionError::Storage(err) => storage("committing", err),
            })
    }

    fn flush(&self) -> Result<(), Error> {
        self.db
            .flush()
            .map(drop)
            .map_err(|err| storage("flushing to disk", err))
    }
}

// === impl WriteTxn ===

/// A change, encoded: each key with its new value, `None` to remove it.
#[derive(Debug)]
struct Encoded {
    version: u64,
    experiments: Vec<(String, Option<Vec<u8>>)>,
    revisions: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    overrides: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    holdouts: Vec<(String, Option<Vec<u8>>)>,
}

impl Encoded {
    /// The change that puts back what this one replaced in `confirmed`.
    fn undo(&self, confirmed: &Confirmed) -> Result<Self, Error> {
        Ok(Self {
            version: confirmed.version,
            experiments: self
                .experiments
                .iter()
                .map(|(id, _)| {
                    Ok((
                        id.clone(),
                        confirmed.experiment(id).map(encode).transpose()?,
                    ))
                })
                .collect::<Result<_, Error>>()?,
            // Revisions are only ever added: the refused ones go.
            revisions: self
                .revisions
                .iter()
                .map(|(key, _)| (key.clone(), None))
                .collect(),
            overrides: self
                .overrides
                .iter()
                .map(|(key, _)| {
                    Ok((
                        key.clone(),
                        confirmed.overrides.get(key).map(encode).transpose()?,
                    ))
                })
                .collect::<Result<_, Error>>()?,
            holdouts: self
                .holdouts
                .iter()
                .map(|(id, _)| Ok((id.clone(), confirmed.holdout(id).map(encode).transpose()?)))
                .collect::<Result<_, Error>>()?,
        })
    }
}

impl WriteTxn<'_> {
    /// The confirmed current revision of `id`, or a staged one.
    pub fn experiment(&self, id: &str) -> Result<Option<Experiment>, Error> {
        if let Some(staged) = self.revisions.iter().rev().find(|r| r.experiment.id == id) {
            return Ok(Some(staged.experiment.clone()));
        }
        Ok(self.confirmed.experiment(id).cloned())
    }

    /// Every experiment, staged writes included.
    pub fn experiments(&self) -> Result<Vec<Experiment>, Error> {
        let mut all: Vec<Experiment> = self.confirmed.experiments().cloned().collect();
        for staged in &self.revisions {
            match all.iter_mut().find(|e| e.id == staged.experiment.id) {
                Some(existing) => *existing = staged.experiment.clone(),
                None => all.push(staged.experiment.clone()),
            }
        }
        Ok(all)
    }

    /// A confirmed revision.
    pub fn revision(&self, id: &str, revision: u64) -> Result<Option<Revision>, Error> {
        self.store.revision(id, revision)
    }

    /// The overrides of one experiment.
    pub fn overrides(&self, experiment_id: &str) -> Result<Vec<QaOverride>, Error> {
        Ok(self.confirmed.overrides(Some(experiment_id)))
    }

    /// Stages a new revision; it also becomes the current experiment.
    pub fn put_revision(&mut self, revision: Revision) {
        self.revisions.push(revision);
    }

    /// The confirmed current state of holdout `id`, or a staged one.
    pub fn holdout(&self, id: &str) -> Option<Holdout> {
        self.holdouts
            .iter()
            .rev()
            .find(|h| h.id == id)
            .or_else(|| self.confirmed.holdout(id))
            .cloned()
    }

    /// Stages the new state of a holdout (created, updated or ended).
    pub fn put_holdout(&mut self, holdout: Holdout) {
        self.holdouts.push(holdout);
    }

    /// Stages an override, replacing any for the same unit.
    pub fn put_override(&mut self, qa_override: QaOverride) {
        self.overrides_set.push(qa_override);
    }

    /// Stages the removal of an override; `false` when there is none.
    pub fn delete_override(
        &mut self,
        experiment_id: &str,
        unit_type: UnitType,
        unit_id: &str,
    ) -> Result<bool, Error> {
        let key = override_key(experiment_id, unit_type, unit_id);
        let exists = self.confirmed.overrides.contains_key(&key);
        if exists {
            self.overrides_deleted
                .push((experiment_id.to_owned(), unit_type, unit_id.to_owned()));
        }
        Ok(exists)
    }

    fn encode(&self, version: u64) -> Result<Encoded, Error> {
        let mut experiments = Vec::with_capacity(self.revisions.len());
        let mut revisions = Vec::with_capacity(self.revisions.len());
        for revision in &self.revisions {
            let id = &revision.experiment.id;
            experiments.push((id.clone(), Some(encode(&revision.experiment)?)));
            revisions.push((revision_key(id, revision.number()), Some(encode(revision)?)));
        }
        let mut overrides = self
            .overrides_set
            .iter()
            .map(|o| {
                Ok((
                    override_key(&o.experiment_id, o.unit_type, &o.unit_id),
                    Some(encode(o)?),
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        overrides.extend(
            self.overrides_deleted
                .iter()
                .map(|(id, unit_type, unit_id)| (override_key(id, *unit_type, unit_id), None)),
        );
        let holdouts = self
            .holdouts
            .iter()
            .map(|h| Ok((h.id.clone(), Some(encode(h)?))))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Encoded {
            version,
            experiments,
            revisions,
            overrides,
            holdouts,
        })
    }
}

/// Bytes the disk must take before sled is reopened: one sled segment.
const PROBE_BYTES: usize = 512 * 1024;

/// Writes and syncs [`PROBE_BYTES`] in `dir`, then removes them: whether
/// the disk takes a write now.
fn probe_disk(dir: &Path) -> Result<(), Error> {
    use std::io::Write;
    let path = dir.join("write_probe");
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&vec![0; PROBE_BYTES])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written.map_err(|err| storage("the disk takes no write", err))
}

/// Opens the sled database, waiting up to 2 s for a previous owner in
/// this process (a server being restarted) to let go of its file lock.
fn open_db(path: &Path) -> Result<sled::Db, Error> {
    let mut attempts = 0;
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return Ok(db),
            // sled reports a held lock only as an `Other` I/O error with this
            // message; there is no typed variant to match.
            Err(sled::Error::Io(err))
                if attempts < 100 && err.to_string().contains("could not acquire lock") =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(err) => return Err(storage(format!("opening {}", path.display()), err)),
        }
    }
}

// === encoding ===

fn revision_key(id: &str, revision: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 9);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key.extend_from_slice(&revision.to_be_bytes());
    key
}

fn override_key(experiment_id: &str, unit_type: UnitType, unit_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(experiment_id.len() + unit_id.len() + 10);
    key.extend_from_slice(experiment_id.as_bytes());
    key.push(0);
    key.extend_from_slice(unit_type.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(unit_id.as_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|err| storage("encoding", err))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|err| storage("decoding a stored record", err))
}

fn get_json<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> Result<Option<T>, Error> {
    tree.get(key)
        .map_err(|err| storage("reading", err))?
        .map(|bytes| decode(&bytes))
        .transpose()
}

fn read_version(disk: &Disk) -> Result<u64, Error> {
    disk.meta
        .get(CONFIG_VERSION_KEY)
        .map_err(|err| storage("reading config version", err))?
        .map(|bytes| decode_u64(&bytes))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn decode_u64(bytes: &[u8]) -> Result<u64, Error> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| {
        Error::Storage(format!(
            "config version has {} bytes, expected 8",
            bytes.len()
        ))
    })?;
    Ok(u64::from_be_bytes(array))
}

fn storage(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{what}: {err}"))
}
