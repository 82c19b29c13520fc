//! The warehouse output: events rolled from log segments into Parquet
//! files, one dataset per kind, in hourly Hive-style partitions by the
//! event's UTC `timestamp`:
//!
//! ```text
//! <data-dir>/events/exposures/date=2026-11-29/hour=10/part-<opened ms>-<seq>.parquet
//! <data-dir>/events/outcomes/date=2026-11-29/hour=10/part-<opened ms>-<seq>.parquet
//! ```
//!
//! A file is written as `.tmp`, fsynced, then renamed: it is never visible
//! half-written. Its name comes from the segment it was rolled from, so
//! rolling a segment again after a crash replaces the same files instead
//! of adding copies.
//!
//! Columns are the contract's fields, in proto order. Strings that may be
//! absent (`user_id`, `session_id`, `placement`, `page_type`, `item_id`,
//! `source_placement`, `currency`) are NULL when empty; enums are
//! lower-case words (`unit_type`: `user`, `session`; `type`:
//! `impression`, `click`, `add_to_cart`, `purchase`, `page_view`,
//! `page_load`); `timestamp` is a UTC timestamp in microseconds;
//! `item_ids` is a list of strings and `attributes` a map of strings.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, btree_map::Entry},
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, ListArray, MapArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array,
    builder::{ListBuilder, MapBuilder, StringBuilder},
    cast::AsArray,
    types::{TimestampMicrosecondType, UInt32Type, UInt64Type},
};
use arrow_schema::{Field, Schema};
use exp_core::{
    UnitType,
    event::{Event, EventKind, Exposure, Outcome, from_unix_micros, unix_micros},
};
use exp_proto::events::{outcome_type_from_name, outcome_type_name};
use parquet::{
    arrow::{
        ArrowWriter, ProjectionMask,
        arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder},
    },
    basic::Compression,
    file::properties::WriterProperties,
};

use crate::wal::{SegmentId, sync_dir};

/// The Parquet file name of what segment `id` holds.
pub fn file_name(id: SegmentId) -> String {
    format!("part-{}-{:012}.parquet", id.opened_ms, id.seq)
}

/// The segment a file name made by [`file_name`] came from.
pub fn parse_file_name(name: &str) -> Option<SegmentId> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (opened_ms, seq) = stem.split_once('-')?;
    Some(SegmentId {
        seq: seq.parse().ok()?,
        opened_ms: opened_ms.parse().ok()?,
    })
}

/// The partition directory (`date=YYYY-MM-DD/hour=HH`) of an event time
/// (times before the Unix epoch, which validation refuses, count as the
/// epoch).
pub fn partition(time: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(time.max(SystemTime::UNIX_EPOCH)).to_string();
    format!("date={}/hour={}", &text[..10], &text[11..13])
}

/// Events per row group. A roll holds at most this many events of each
/// partition in memory, whatever the size of the segment.
pub const ROW_GROUP_EVENTS: usize = 8_192;

/// Writes the events of segment `id` into their partitions under
/// `events_dir`, returning the files written. Events stream through: each
/// partition's file takes a row group whenever [`ROW_GROUP_EVENTS`] of its
/// events are waiting. An error from `events` ends the roll before any
/// file is renamed into place, and its `.tmp` files are removed; an error
/// while the files are finished leaves those finished before it, which
/// rolling the segment again replaces. A segment holds events of at most
/// about 170 hours of each kind (the timestamps `validate` accepts), so a
/// roll has at most about 340 files open.
pub fn roll<E: Borrow<Event>>(
    events_dir: &Path,
    id: SegmentId,
    events: impl IntoIterator<Item = io::Result<E>>,
) -> io::Result<Vec<PathBuf>> {
    let mut files: BTreeMap<(&'static str, i64), PartitionFile<E>> = BTreeMap::new();
    for event in events {
        let event = event?;
        let (kind, time) = (event.borrow().kind(), event.borrow().timestamp());
        let file = match files.entry((kind.dataset(), hours_since_epoch(time))) {
            Entry::Occupied(file) => file.into_mut(),
            Entry::Vacant(entry) => {
                entry.insert(PartitionFile::create(events_dir, id, kind, time)?)
            }
        };
        file.pending.push(event);
        if file.pending.len() == ROW_GROUP_EVENTS {
            file.write_pending()?;
        }
    }
    files.into_values().map(PartitionFile::finish).collect()
}

/// The hour an event time falls in, counted from the Unix epoch (the key of
/// its [`partition`]; times before the epoch count as the epoch, as in the
/// `timestamp` column).
fn hours_since_epoch(time: SystemTime) -> i64 {
    unix_micros(time) / 3_600_000_000
}

/// One partition's file of a roll, written as `.tmp` and renamed when
/// finished; dropped unfinished, it removes its `.tmp`.
struct PartitionFile<E> {
    kind: EventKind,
    path: PathBuf,
    temporary: PathBuf,
    /// `None` once finished.
    writer: Option<ArrowWriter<File>>,
    pending: Vec<E>,
    renamed: bool,
}

impl<E: Borrow<Event>> PartitionFile<E> {
    fn create(
        events_dir: &Path,
        id: SegmentId,
        kind: EventKind,
        time: SystemTime,
    ) -> io::Result<Self> {
        let dir = events_dir.join(kind.dataset()).join(partition(time));
        create_dirs_durably(events_dir, &dir)?;
        let path = dir.join(file_name(id));
        let temporary = path.with_extension("parquet.tmp");
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_EVENTS));
        // Columns of (nearly) one value per row gain nothing from a
        // dictionary, and building one cost about a third of a roll: event
        // ids, and the units of exposures (one exposure per unit and
        // variant).
        let unique_per_row: &[&str] = match kind {
            EventKind::Exposure => &["event_id", "user_id", "session_id"],
            EventKind::Outcome => &["event_id"],
        };
        for column in unique_per_row {
            properties = properties.set_column_dictionary_enabled((*column).into(), false);
        }
        let writer = ArrowWriter::try_new(
            File::create(&temporary)?,
            batch_of_kind::<E>(kind, &[])?.schema(),
            Some(properties.build()),
        )
        .map_err(|error| {
            let _ = fs::remove_file(&temporary);
            io::Error::other(error)
        })?;
        Ok(Self {
            kind,
            path,
            temporary,
            writer: Some(writer),
            // Grown as events come: most partitions of a segment hold few.
            pending: Vec::new(),
            renamed: false,
        })
    }

    /// Writes the waiting events: a full row group goes to the file at
    /// once, the last, partial one when the writer closes.
    fn write_pending(&mut self) -> io::Result<()> {
        let batch = batch_of_kind(self.kind, &self.pending)?;
        self.pending.clear();
        self.writer
            .as_mut()
            .ok_or_else(|| io::Error::other("partition file already finished"))?
            .write(&batch)
            .map_err(io::Error::other)
    }

    /// Writes what waits, makes the file durable and renames it into place.
    fn finish(mut self) -> io::Result<PathBuf> {
        if !self.pending.is_empty() {
            self.write_pending()?;
        }
        let writer = self
            .writer
            .take()
            .ok_or_else(|| io::Error::other("partition file already finished"))?;
        let file = writer.into_inner().map_err(io::Error::other)?;
        file.sync_all()?;
        fs::rename(&self.temporary, &self.path)?;
        self.renamed = true;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        Ok(std::mem::take(&mut self.path))
    }
}

/// The record batch of `events`, all of `kind`.
fn batch_of_kind<E: Borrow<Event>>(kind: EventKind, events: &[E]) -> io::Result<RecordBatch> {
    let events = events.iter().map(Borrow::borrow);
    match kind {
        EventKind::Exposure => exposures_batch(events.filter_map(|event| match event {
            Event::Exposure(exposure) => Some(exposure),
            Event::Outcome(_) => None,
        })),
        EventKind::Outcome => outcomes_batch(events.filter_map(|event| match event {
            Event::Outcome(outcome) => Some(outcome),
            Event::Exposure(_) => None,
        })),
    }
    .map_err(io::Error::other)
}

impl<E> Drop for PartitionFile<E> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.temporary);
        }
    }
}

fn create_dirs_durably(root: &Path, dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let mut current = dir;
    while let Some(parent) = current.parent() {
        sync_dir(parent)?;
        if parent == root {
            break;
        }
        current = parent;
    }
    Ok(())
}

/// Every Parquet file of `kind` under `events_dir`, in name order (files
/// being written, `.tmp`, are not listed).
pub fn list(events_dir: &Path, kind: EventKind) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for_each_file(events_dir, kind, |file, name| {
        if name.ends_with(".parquet") {
            files.push(file);
        }
        Ok(())
    })?;
    files.sort();
    Ok(files)
}

/// Removes the `.tmp` files an interrupted roll left behind (at open,
/// before anything rolls).
pub fn remove_temporaries(events_dir: &Path) -> io::Result<()> {
    for kind in EventKind::ALL {
        for_each_file(events_dir, kind, |file, name| {
            if name.ends_with(".parquet.tmp") {
                fs::remove_file(file)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn for_each_file(
    events_dir: &Path,
    kind: EventKind,
    mut visit: impl FnMut(PathBuf, &str) -> io::Result<()>,
) -> io::Result<()> {
    let root = events_dir.join(kind.dataset());
    if !root.is_dir() {
        return Ok(());
    }
    for date in fs::read_dir(&root)? {
        let date = date?.path();
        if !date.is_dir() {
            continue;
        }
        for hour in fs::read_dir(&date)? {
            let hour = hour?.path();
            if !hour.is_dir() {
                continue;
            }
            for file in fs::read_dir(&hour)? {
                let file = file?.path();
                let name = file
                    .file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or("")
                    .to_owned();
                visit(file, &name)?;
            }
        }
    }
    Ok(())
}

/// How often each event id occurs across every file of `kind` under
/// `events_dir`: the check that each acknowledged event landed exactly
/// once.
pub fn count_event_ids(
    events_dir: &Path,
    kind: EventKind,
) -> io::Result<std::collections::HashMap<String, usize>> {
    let mut counts = std::collections::HashMap::new();
    for file in list(events_dir, kind)? {
        for id in read_event_ids(&file)? {
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(counts)
}

/// The `event_id` column of a file.
pub fn read_event_ids(path: &Path) -> io::Result<Vec<String>> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(path)?).map_err(io::Error::other)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [0]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(io::Error::other)?;
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.map_err(io::Error::other)?;
        let column = batch
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong_type("event_id"))?;
        ids.extend(column.iter().map(|id| id.unwrap_or_default().to_owned()));
    }
    Ok(ids)
}

/// Every event of a file of `kind`, read whole (tests and tools; the log
/// reads files with [`FileEvents`]).
pub fn read_events(path: &Path, kind: EventKind) -> io::Result<Vec<Event>> {
    let mut events = Vec::new();
    for chunk in FileEvents::open(path, kind)? {
        events.extend(chunk?);
    }
    Ok(events)
}

/// The events of one file of one kind, [`ROW_GROUP_EVENTS`] at a time: a
/// reader holds one record batch of the file in memory, whatever its size.
pub struct FileEvents {
    kind: EventKind,
    batches: ParquetRecordBatchReader,
}

impl std::fmt::Debug for FileEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEvents")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl FileEvents {
    /// Opens `path`, a file of `kind`.
    pub fn open(path: &Path, kind: EventKind) -> io::Result<Self> {
        let batches = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)
            .map_err(io::Error::other)?
            .with_batch_size(ROW_GROUP_EVENTS)
            .build()
            .map_err(io::Error::other)?;
        Ok(Self { kind, batches })
    }

    /// Rows in a file, from its footer alone.
    pub fn rows(path: &Path) -> io::Result<u64> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)
            .map_err(io::Error::other)?;
        Ok(u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0))
    }
}

impl Iterator for FileEvents {
    type Item = io::Result<Vec<Event>>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.batches.next()? {
            Ok(batch) => batch,
            Err(error) => return Some(Err(io::Error::other(error))),
        };
        Some(match self.kind {
            EventKind::Exposure => exposures_of(&batch).map(|rows| rows.collect()),
            EventKind::Outcome => outcomes_of(&batch).map(|rows| rows.collect()),
        })
    }
}

// === exposures ===

fn exposures_batch<'a>(
    exposures: impl Iterator<Item = &'a Exposure> + Clone,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let strings = |get: fn(&Exposure) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(exposures.clone().map(get)))
    };
    let optional = |get: fn(&Exposure) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter(
            exposures.clone().map(get).map(non_empty),
        ))
    };
    let columns: Vec<(&str, ArrayRef, bool)> = vec![
        ("event_id", strings(|e| &e.event_id), false),
        ("experiment_id", strings(|e| &e.experiment_id), false),
        ("variant", strings(|e| &e.variant), false),
        ("user_id", optional(|e| &e.user_id), true),
        ("session_id", optional(|e| &e.session_id), true),
        (
            "unit_type",
            Arc::new(StringArray::from_iter_values(
                exposures.clone().map(|e| e.unit_type.as_str()),
            )),
            false,
        ),
        ("placement", optional(|e| &e.placement), true),
        ("page_type", optional(|e| &e.page_type), true),
        (
            "revision",
            Arc::new(UInt64Array::from_iter_values(
                exposures.clone().map(|e| e.revision),
            )),
            false,
        ),
        (
            "timestamp",
            timestamps(exposures.clone().map(|e| e.timestamp)),
            false,
        ),
    ];
    batch_of(columns)
}

fn exposures_of(batch: &RecordBatch) -> io::Result<impl Iterator<Item = Event> + use<'_>> {
    let string = |name: &str| -> io::Result<&StringArray> {
        column(batch, name)?
            .as_string_opt()
            .ok_or_else(|| wrong_type(name))
    };
    let (event_id, experiment_id, variant, user_id, session_id, unit_type, placement, page_type) = (
        string("event_id")?,
        string("experiment_id")?,
        string("variant")?,
        string("user_id")?,
        string("session_id")?,
        string("unit_type")?,
        string("placement")?,
        string("page_type")?,
    );
    let revision = column(batch, "revision")?
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| wrong_type("revision"))?;
    let timestamp = column(batch, "timestamp")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| wrong_type("timestamp"))?;
    // The unit type is the one column a rebuild cannot do without: a row
    // whose value is unknown is refused rather than guessed.
    let unit_types = (0..batch.num_rows())
        .map(|row| {
            unit_type_value(unit_type.value(row)).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "unit_type {:?} is neither user nor session",
                        unit_type.value(row)
                    ),
                )
            })
        })
        .collect::<io::Result<Vec<UnitType>>>()?;
    Ok((0..batch.num_rows()).map(move |row| {
        Event::Exposure(Exposure {
            event_id: text(event_id, row),
            experiment_id: text(experiment_id, row),
            variant: text(variant, row),
            user_id: text(user_id, row),
            session_id: text(session_id, row),
            unit_type: unit_types[row],
            placement: text(placement, row),
            page_type: text(page_type, row),
            revision: revision.value(row),
            timestamp: from_unix_micros(timestamp.value(row)),
        })
    }))
}

// === outcomes ===

fn outcomes_batch<'a>(
    outcomes: impl Iterator<Item = &'a Outcome> + Clone,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let strings = |get: fn(&Outcome) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(outcomes.clone().map(get)))
    };
    let optional = |get: fn(&Outcome) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter(
            outcomes.clone().map(get).map(non_empty),
        ))
    };
    let mut item_ids = ListBuilder::new(StringBuilder::new());
    let mut attributes = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for outcome in outcomes.clone() {
        for item in &outcome.item_ids {
            item_ids.values().append_value(item);
        }
        item_ids.append(true);
        for (key, value) in &outcome.attributes {
            attributes.keys().append_value(key);
            attributes.values().append_value(value);
        }
        attributes.append(true)?;
    }
    let columns: Vec<(&str, ArrayRef, bool)> = vec![
        ("event_id", strings(|o| &o.event_id), false),
        (
            "type",
            Arc::new(StringArray::from_iter_values(
                outcomes.clone().map(|o| outcome_type_name(o.outcome_type)),
            )),
            false,
        ),
        ("user_id", optional(|o| &o.user_id), true),
        ("session_id", optional(|o| &o.session_id), true),
        ("placement", optional(|o| &o.placement), true),
        ("page_type", optional(|o| &o.page_type), true),
        ("item_id", optional(|o| &o.item_id), true),
        ("item_ids", Arc::new(item_ids.finish()), false),
        (
            "from_recommendation",
            Arc::new(BooleanArray::from_iter(
                outcomes.clone().map(|o| Some(o.from_recommendation)),
            )),
            false,
        ),
        ("source_placement", optional(|o| &o.source_placement), true),
        (
            "value",
            Arc::new(Float64Array::from_iter_values(
                outcomes.clone().map(|o| o.value),
            )),
            false,
        ),
        ("currency", optional(|o| &o.currency), true),
        (
            "quantity",
            Arc::new(UInt32Array::from_iter_values(
                outcomes.clone().map(|o| o.quantity),
            )),
            false,
        ),
        (
            "latency_ms",
            Arc::new(Float64Array::from_iter_values(
                outcomes.clone().map(|o| o.latency_ms),
            )),
            false,
        ),
        (
            "timestamp",
            timestamps(outcomes.clone().map(|o| o.timestamp)),
            false,
        ),
        ("attributes", Arc::new(attributes.finish()), false),
    ];
    batch_of(columns)
}

fn outcomes_of(batch: &RecordBatch) -> io::Result<impl Iterator<Item = Event> + use<'_>> {
    let string = |name: &str| -> io::Result<&StringArray> {
        column(batch, name)?
            .as_string_opt()
            .ok_or_else(|| wrong_type(name))
    };
    let float = |name: &str| -> io::Result<&Float64Array> {
        column(batch, name)?
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| wrong_type(name))
    };
    let event_id = string("event_id")?;
    let kind = string("type")?;
    let user_id = string("user_id")?;
    let session_id = string("session_id")?;
    let placement = string("placement")?;
    let page_type = string("page_type")?;
    let item_id = string("item_id")?;
    let source_placement = string("source_placement")?;
    let currency = string("currency")?;
    let value = float("value")?;
    let latency_ms = float("latency_ms")?;
    let item_ids = column(batch, "item_ids")?
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| wrong_type("item_ids"))?;
    let from_recommendation = column(batch, "from_recommendation")?
        .as_boolean_opt()
        .ok_or_else(|| wrong_type("from_recommendation"))?;
    let quantity = column(batch, "quantity")?
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| wrong_type("quantity"))?;
    let timestamp = column(batch, "timestamp")?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| wrong_type("timestamp"))?;
    let attributes = column(batch, "attributes")?
        .as_any()
        .downcast_ref::<MapArray>()
        .ok_or_else(|| wrong_type("attributes"))?;
    // The lists' and maps' element types, checked once: the rows below
    // then read them without a failure path.
    if item_ids.values().as_string_opt::<i32>().is_none() {
        return Err(wrong_type("item_ids"));
    }
    if attributes.keys().as_string_opt::<i32>().is_none()
        || attributes.values().as_string_opt::<i32>().is_none()
    {
        return Err(wrong_type("attributes"));
    }
    let outcome_types = (0..batch.num_rows())
        .map(|row| {
            outcome_type_from_name(kind.value(row)).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("type {:?} is not an outcome type", kind.value(row)),
                )
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok((0..batch.num_rows()).map(move |row| {
        let items = item_ids.value(row);
        let items = items.as_string::<i32>();
        let entries = attributes.value(row);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        Event::Outcome(Outcome {
            event_id: text(event_id, row),
            outcome_type: outcome_types[row],
            user_id: text(user_id, row),
            session_id: text(session_id, row),
            placement: text(placement, row),
            page_type: text(page_type, row),
            item_id: text(item_id, row),
            item_ids: (0..items.len()).map(|index| text(items, index)).collect(),
            from_recommendation: from_recommendation.value(row),
            source_placement: text(source_placement, row),
            value: value.value(row),
            currency: text(currency, row),
            quantity: quantity.value(row),
            latency_ms: latency_ms.value(row),
            timestamp: from_unix_micros(timestamp.value(row)),
            attributes: (0..keys.len())
                .map(|index| (text(keys, index), text(values, index)))
                .collect(),
        })
    }))
}

// === shared ===

fn batch_of(columns: Vec<(&str, ArrayRef, bool)>) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, array, nullable)| Field::new(*name, array.data_type().clone(), *nullable))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, array, _)| array).collect(),
    )
}

fn timestamps(times: impl Iterator<Item = SystemTime>) -> ArrayRef {
    // Validation refuses times before the epoch; were one stored, it would
    // read as the epoch, as its partition does.
    let micros = times.map(|time| unix_micros(time).max(0));
    Arc::new(TimestampMicrosecondArray::from_iter_values(micros).with_timezone("UTC"))
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn text(array: &StringArray, row: usize) -> String {
    if array.is_null(row) {
        String::new()
    } else {
        array.value(row).to_owned()
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> io::Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("event file has no column {name:?}"),
        )
    })
}

fn wrong_type(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("event file column {name:?} has an unexpected type"),
    )
}

fn unit_type_value(name: &str) -> Option<UnitType> {
    match name {
        "user" => Some(UnitType::User),
        "session" => Some(UnitType::Session),
        _ => None,
    }
}

#[cfg(test)]
fn schema_of(kind: EventKind) -> Vec<(String, arrow_schema::DataType)> {
    batch_of_kind::<Event>(kind, &[])
        .map(|batch| {
            batch
                .schema()
                .fields()
                .iter()
                .map(|field| (field.name().clone(), field.data_type().clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn exposure(id: &str, time: SystemTime) -> Event {
        Event::Exposure(crate::testing::exposure(id, time))
    }

    fn purchase(id: &str, time: SystemTime) -> Event {
        Event::Outcome(crate::testing::purchase(id, time))
    }

    #[test]
    fn partitions_are_utc_date_and_hour_of_the_event() {
        // 2026-11-29T10:05:00Z
        assert_eq!(partition(at(1_795_946_700)), "date=2026-11-29/hour=10");
        assert_eq!(partition(at(0)), "date=1970-01-01/hour=00");
        assert_eq!(hours_since_epoch(at(1_795_946_700)), 498_874);
        assert_eq!(hours_since_epoch(at(3_599)), 0);
        let half_a_second_before = SystemTime::UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(hours_since_epoch(half_a_second_before), 0);
        assert_eq!(partition(half_a_second_before), "date=1970-01-01/hour=00");
    }

    #[test]
    fn file_names_round_trip_to_their_segment() {
        let id = SegmentId {
            seq: 42,
            opened_ms: 1_795_946_700_000,
        };
        assert_eq!(file_name(id), "part-1795946700000-000000000042.parquet");
        assert_eq!(parse_file_name(&file_name(id)), Some(id));
    }

    #[test]
    fn rolled_events_read_back_equal_split_by_kind_and_hour() {
        let dir = tempfile::tempdir().expect("dir");
        let ten = at(1_795_946_700);
        let eleven = at(1_795_946_700 + 3_600);
        let events = [
            exposure("e-1", ten),
            purchase("o-1", ten),
            exposure("e-2", eleven),
        ];
        let id = SegmentId {
            seq: 1,
            opened_ms: 7,
        };
        let files = roll(dir.path(), id, events.iter().map(Ok)).expect("roll");
        assert_eq!(files.len(), 3);
        let exposures = list(dir.path(), EventKind::Exposure).expect("list");
        assert_eq!(exposures.len(), 2);
        assert!(
            exposures[0].ends_with("exposures/date=2026-11-29/hour=10/part-7-000000000001.parquet")
        );
        let read: Vec<Event> = exposures
            .iter()
            .flat_map(|path| read_events(path, EventKind::Exposure).expect("read"))
            .collect();
        assert_eq!(read, vec![events[0].clone(), events[2].clone()]);
        let outcomes = list(dir.path(), EventKind::Outcome).expect("list");
        assert_eq!(
            read_events(&outcomes[0], EventKind::Outcome).expect("read"),
            vec![events[1].clone()]
        );
        assert_eq!(read_event_ids(&outcomes[0]).expect("ids"), ["o-1"]);
    }

    #[test]
    fn a_partition_larger_than_a_row_group_is_written_in_row_groups_and_reads_back_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let ten = at(1_795_946_700);
        let eleven = at(1_795_946_700 + 3_600);
        // Two partitions, interleaved: 2.5 row groups in the first.
        let events: Vec<Event> = (0..ROW_GROUP_EVENTS * 5 / 2)
            .flat_map(|index| {
                let late = (index % 100 == 0).then(|| exposure(&format!("l-{index}"), eleven));
                std::iter::once(exposure(&format!("e-{index}"), ten)).chain(late)
            })
            .collect();
        let id = SegmentId {
            seq: 1,
            opened_ms: 7,
        };
        let temporary = dir
            .path()
            .join("exposures")
            .join(partition(ten))
            .join(file_name(id))
            .with_extension("parquet.tmp");
        let mut written_before_the_end = 0;
        let last = events.len() - 1;
        let streamed = events.iter().enumerate().map(|(index, event)| {
            if index == last {
                written_before_the_end = fs::metadata(&temporary).map_or(0, |file| file.len());
            }
            Ok(event)
        });
        let files = roll(dir.path(), id, streamed).expect("roll");
        assert!(
            written_before_the_end > 1_000,
            "full row groups reach the file while events still come: {written_before_the_end} bytes"
        );
        assert_eq!(files.len(), 2);
        let row_groups = |path: &Path| {
            ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open"))
                .expect("parquet")
                .metadata()
                .num_row_groups()
        };
        assert_eq!((row_groups(&files[0]), row_groups(&files[1])), (3, 1));
        let (ten_events, eleven_events): (Vec<Event>, Vec<Event>) = events
            .iter()
            .cloned()
            .partition(|event| event.event_id().starts_with("e-"));
        assert_eq!(
            read_events(&files[0], EventKind::Exposure).expect("read"),
            ten_events
        );
        assert_eq!(
            read_events(&files[1], EventKind::Exposure).expect("read"),
            eleven_events
        );
    }

    #[test]
    fn an_error_reading_the_events_ends_the_roll_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("dir");
        let ten = at(1_795_946_700);
        let events = (0..ROW_GROUP_EVENTS + 1)
            .map(|index| Ok(exposure(&format!("e-{index}"), ten)))
            .chain([Err(io::Error::other("disk gone"))]);
        let id = SegmentId {
            seq: 1,
            opened_ms: 7,
        };
        let error = roll(dir.path(), id, events).expect_err("the error ends the roll");
        assert_eq!(error.to_string(), "disk gone");
        let partition = dir.path().join("exposures").join(partition(ten));
        let left: Vec<_> = fs::read_dir(&partition).expect("dir").collect();
        assert!(left.is_empty(), "neither the file nor its .tmp: {left:?}");
    }

    #[test]
    fn rolling_a_segment_again_replaces_its_files_and_clears_leftovers() {
        let dir = tempfile::tempdir().expect("dir");
        let id = SegmentId {
            seq: 1,
            opened_ms: 7,
        };
        let events = [exposure("e-1", at(1_795_946_700))];
        let first = roll(dir.path(), id, events.iter().map(Ok)).expect("roll");
        let second = roll(dir.path(), id, events.iter().map(Ok)).expect("roll again");
        assert_eq!(first, second);
        fs::write(first[0].with_extension("parquet.tmp"), b"torn").expect("leftover");
        assert_eq!(list(dir.path(), EventKind::Exposure).expect("list"), first);
        assert!(
            first[0].with_extension("parquet.tmp").exists(),
            "listing leaves files being written alone"
        );
        remove_temporaries(dir.path()).expect("clean");
        assert!(!first[0].with_extension("parquet.tmp").exists());
    }

    #[test]
    fn the_schema_names_columns_after_the_proto_fields() {
        let names =
            |kind| -> Vec<String> { schema_of(kind).into_iter().map(|(name, _)| name).collect() };
        assert_eq!(
            names(EventKind::Exposure),
            [
                "event_id",
                "experiment_id",
                "variant",
                "user_id",
                "session_id",
                "unit_type",
                "placement",
                "page_type",
                "revision",
                "timestamp"
            ]
        );
        let outcome_schema = schema_of(EventKind::Outcome);
        assert_eq!(outcome_schema.len(), 16);
        assert_eq!(
            outcome_schema[14],
            (
                "timestamp".to_owned(),
                arrow_schema::DataType::Timestamp(
                    arrow_schema::TimeUnit::Microsecond,
                    Some("UTC".into())
                )
            )
        );
    }
}
