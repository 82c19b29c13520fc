use std::{path::Path, sync::Mutex};

use exp_core::{Error, Experiment, QaOverride, Revision, UnitType};
use serde::{Serialize, de::DeserializeOwned};
use sled::{
    Transactional, Tree,
    transaction::{ConflictableTransactionError, TransactionError},
};
use tokio::sync::watch;

const CONFIG_VERSION_KEY: &[u8] = b"config_version";

/// The sled-backed config store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    db: sled::Db,
    experiments: Tree,
    revisions: Tree,
    overrides: Tree,
    meta: Tree,
    // Serialises writers: each `write` reads, decides and writes without
    // another writer in between. Writes are rare (admin actions), so one
    // lock costs nothing; readers never take it.
    write_lock: Mutex<()>,
    version: watch::Sender<u64>,
}

/// A write in progress: reads see the committed state; staged writes land
/// together when the closure passed to [`Store::write`] returns `Ok`.
#[derive(Debug)]
pub struct WriteTxn<'a> {
    store: &'a Store,
    revisions: Vec<Revision>,
    overrides_set: Vec<QaOverride>,
    overrides_deleted: Vec<(String, UnitType, String)>,
}

// === impl Store ===

impl Store {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let db = open_db(path.as_ref())?;
        let open_tree = |name: &str| {
            db.open_tree(name)
                .map_err(|err| storage("opening tree", err))
        };
        let experiments = open_tree("experiments")?;
        let revisions = open_tree("revisions")?;
        let overrides = open_tree("overrides")?;
        let meta = open_tree("meta")?;
        let current = meta
            .get(CONFIG_VERSION_KEY)
            .map_err(|err| storage("reading config version", err))?
            .map(|bytes| decode_u64(&bytes))
            .transpose()?
            .unwrap_or(0);
        let (version, _) = watch::channel(current);
        Ok(Self {
            db,
            experiments,
            revisions,
            overrides,
            meta,
            write_lock: Mutex::new(()),
            version,
        })
    }

    /// The global config version: incremented by every committed change.
    pub fn config_version(&self) -> u64 {
        *self.version.borrow()
    }

    /// A receiver that sees every new config version.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The current revision of experiment `id`.
    pub fn experiment(&self, id: &str) -> Result<Option<Experiment>, Error> {
        get_json(&self.experiments, id.as_bytes())
    }

    /// Every experiment, ordered by id.
    pub fn experiments(&self) -> Result<Vec<Experiment>, Error> {
        self.experiments
            .iter()
            .values()
            .map(|value| decode(&value.map_err(|err| storage("listing experiments", err))?))
            .collect()
    }

    /// Revision `revision` of experiment `id`.
    pub fn revision(&self, id: &str, revision: u64) -> Result<Option<Revision>, Error> {
        get_json(&self.revisions, &revision_key(id, revision))
    }

    /// Up to `limit` revisions of `id`, newest first, older than `before`
    /// when given.
    pub fn revisions(
        &self,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Revision>, Error> {
        let start = revision_key(id, 0);
        let end = revision_key(id, before.unwrap_or(u64::MAX));
        self.revisions
            .range(start..end)
            .rev()
            .take(limit)
            .map(|entry| decode(&entry.map_err(|err| storage("listing revisions", err))?.1))
            .collect()
    }

    /// QA overrides of experiment `id`, or of every experiment for `None`,
    /// ordered by experiment, unit type and unit id.
    pub fn overrides(&self, experiment_id: Option<&str>) -> Result<Vec<QaOverride>, Error> {
        let entries = match experiment_id {
            Some(id) => {
                let mut prefix = id.as_bytes().to_vec();
                prefix.push(0);
                self.overrides.scan_prefix(prefix)
            }
            None => self.overrides.iter(),
        };
        entries
            .values()
            .map(|value| decode(&value.map_err(|err| storage("listing overrides", err))?))
            .collect()
    }

    /// The one way to change the store. `change` reads through the
    /// [`WriteTxn`] and stages writes; when it returns `Ok` and staged
    /// anything, the writes and a config version bump commit atomically
    /// and are flushed to disk before this returns. Blocks on the disk:
    /// call it from a blocking context.
    pub fn write<T>(
        &self,
        change: impl FnOnce(&mut WriteTxn<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut txn = WriteTxn {
            store: self,
            revisions: Vec::new(),
            overrides_set: Vec::new(),
            overrides_deleted: Vec::new(),
        };
        let result = change(&mut txn)?;
        if txn.revisions.is_empty()
            && txn.overrides_set.is_empty()
            && txn.overrides_deleted.is_empty()
        {
            return Ok(result);
        }
        let next_version = self.config_version() + 1;
        let encoded = txn.encode()?;
        (
            &self.experiments,
            &self.revisions,
            &self.overrides,
            &self.meta,
        )
            .transaction(|(experiments, revisions, overrides, meta)| {
                for (id, experiment, key, revision) in &encoded.revisions {
                    experiments.insert(id.as_bytes(), experiment.as_slice())?;
                    revisions.insert(key.as_slice(), revision.as_slice())?;
                }
                for (key, value) in &encoded.overrides_set {
                    overrides.insert(key.as_slice(), value.as_slice())?;
                }
                for key in &encoded.overrides_deleted {
                    overrides.remove(key.as_slice())?;
                }
                meta.insert(CONFIG_VERSION_KEY, &next_version.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(|err| match err {
                TransactionError::Abort(err) => err,
                TransactionError::Storage(err) => storage("committing", err),
            })?;
        // Durable before anyone hears of it: an OK answer survives kill -9.
        let flushed = self.db.flush();
        // The transaction is committed either way: readers see it, so the
        // feed must announce it too.
        self.version.send_replace(next_version);
        flushed.map_err(|err| {
            Error::Storage(format!(
                "the change was committed but not confirmed on disk ({err}); \
                 read it back before retrying"
            ))
        })?;
        Ok(result)
    }
}

// === impl WriteTxn ===

/// A staged revision, encoded: (id, experiment JSON, revision key,
/// revision JSON).
type EncodedRevision = (String, Vec<u8>, Vec<u8>, Vec<u8>);

struct Encoded {
    revisions: Vec<EncodedRevision>,
    overrides_set: Vec<(Vec<u8>, Vec<u8>)>,
    overrides_deleted: Vec<Vec<u8>>,
}

impl WriteTxn<'_> {
    /// The committed current revision of `id`, or a staged one.
    pub fn experiment(&self, id: &str) -> Result<Option<Experiment>, Error> {
        if let Some(staged) = self.revisions.iter().rev().find(|r| r.experiment.id == id) {
            return Ok(Some(staged.experiment.clone()));
        }
        self.store.experiment(id)
    }

    /// Every experiment, staged writes included.
    pub fn experiments(&self) -> Result<Vec<Experiment>, Error> {
        let mut all = self.store.experiments()?;
        for staged in &self.revisions {
            match all.iter_mut().find(|e| e.id == staged.experiment.id) {
                Some(existing) => *existing = staged.experiment.clone(),
                None => all.push(staged.experiment.clone()),
            }
        }
        Ok(all)
    }

    /// A committed revision.
    pub fn revision(&self, id: &str, revision: u64) -> Result<Option<Revision>, Error> {
        self.store.revision(id, revision)
    }

    /// The overrides of one experiment.
    pub fn overrides(&self, experiment_id: &str) -> Result<Vec<QaOverride>, Error> {
        self.store.overrides(Some(experiment_id))
    }

    /// Stages a new revision; it also becomes the current experiment.
    pub fn put_revision(&mut self, revision: Revision) {
        self.revisions.push(revision);
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
        let exists = self
            .store
            .overrides
            .contains_key(&key)
            .map_err(|err| storage("reading override", err))?;
        if exists {
            self.overrides_deleted
                .push((experiment_id.to_owned(), unit_type, unit_id.to_owned()));
        }
        Ok(exists)
    }

    fn encode(&self) -> Result<Encoded, Error> {
        let revisions = self
            .revisions
            .iter()
            .map(|revision| {
                let id = revision.experiment.id.clone();
                Ok((
                    id.clone(),
                    encode(&revision.experiment)?,
                    revision_key(&id, revision.number()),
                    encode(revision)?,
                ))
            })
            .collect::<Result<_, Error>>()?;
        let overrides_set = self
            .overrides_set
            .iter()
            .map(|o| {
                Ok((
                    override_key(&o.experiment_id, o.unit_type, &o.unit_id),
                    encode(o)?,
                ))
            })
            .collect::<Result<_, Error>>()?;
        let overrides_deleted = self
            .overrides_deleted
            .iter()
            .map(|(id, unit_type, unit_id)| override_key(id, *unit_type, unit_id))
            .collect();
        Ok(Encoded {
            revisions,
            overrides_set,
            overrides_deleted,
        })
    }
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
