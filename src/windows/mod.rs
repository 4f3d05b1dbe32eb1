//! Window features: per key (card, terminal, any column), an aggregate
//! (count, sum, mean, min, max) of the events in a window of event time
//! ending at the current event. Declared in the pipeline file, they reach
//! the SQL as columns. The same code serves the stream (against RocksDB,
//! through the [`Checkpoint`]) and `train` (against the in-memory store, in
//! event-time order), so both compute the same values.
//!
//! Exactness: state is kept in tiles of `tile` event time. A window of W
//! covers the current event's tile and the W/tile - 1 before it, so it
//! reaches back between W - tile and W from the event: exact at the tile
//! boundaries, up to one tile short at the far edge. An event whose tile
//! is older than the key's newest tile by the longest window or more is
//! *late*: it gets its features from what remains and is not folded in.
//!
//! Labels (fraud confirmations, from the labels topic) fold into series of
//! their own. A feature over them is usually *shifted* back by the label
//! delay: the window ends that long before the event, where the labels
//! have had time to arrive (the handbook's terminal risk). A shifted window
//! ends at the start of the tile holding the event's time less the shift,
//! so it holds nothing later than that time; it covers `window` of whole
//! tiles before that.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::state::{Change, Checkpoint, Expiry, StateError};

mod expiry;
mod session;
mod tiles;

use expiry::WindowExpiry;
pub use expiry::partition_of_key;
use session::{Columns, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Count,
    Sum,
    Mean,
    Min,
    Max,
}

impl Aggregate {
    /// The feature's value; null where it has no value (the mean, min or
    /// max of no values).
    fn of(self, s: &tiles::Summary) -> Option<f64> {
        match self {
            Aggregate::Count => Some(s.events as f64),
            Aggregate::Sum => Some(s.sum),
            Aggregate::Mean => (s.values > 0).then(|| s.sum / s.values as f64),
            Aggregate::Min => (s.values > 0).then_some(s.min),
            Aggregate::Max => (s.values > 0).then_some(s.max),
        }
    }
}

/// What a feature aggregates: the events themselves, or their labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    #[default]
    Events,
    Labels,
}

/// One declared window feature.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowFeature {
    /// The column the SQL sees.
    pub name: String,
    /// The column whose value keys the window (card, terminal, ...); the
    /// events and, for a label feature, the labels both carry it.
    pub key: String,
    /// The column aggregated; none for `count`.
    pub column: Option<String>,
    pub aggregate: Aggregate,
    pub source: Source,
    pub window_ms: i64,
    /// The tile span of this feature's state: a window reaches back
    /// between `window_ms - tile_ms` and `window_ms`.
    pub tile_ms: i64,
    /// The window ends this long before the event (0: at the event).
    pub shift_ms: i64,
    /// Whether the current event counts in its own window (unshifted event
    /// features only).
    pub include_current: bool,
}

/// Whose events a key's windows count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Each input partition's own: state keys carry the partition, so a
    /// partition's state can follow it to another instance. A key whose
    /// events span partitions (a terminal, on a topic keyed by card) is
    /// counted per partition.
    #[default]
    Partition,
    /// Every partition this instance reads: exact for any key while one
    /// instance reads the whole topic; with several, each counts its share.
    Instance,
}

/// How labels are read and, in training, when they become visible.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelTiming {
    /// The labels' timestamp column: the labelled event's time.
    pub event_time: String,
    /// `train` folds a label in this long after its event, as it would
    /// arrive in the stream.
    pub delay_ms: i64,
}

/// The window features of a pipeline and how their state is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    /// The timestamp column giving each event's time.
    pub event_time: String,
    pub scope: Scope,
    /// The column the input topic is keyed by (`windows.partition_key`):
    /// a key of it lives in one partition. The windows of every other key
    /// are summed over the topic's partitions ([`Windows::spread_over`]).
    pub partition_key: Option<String>,
    pub features: Vec<WindowFeature>,
    /// Present when a feature reads labels.
    pub labels: Option<LabelTiming>,
}

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("window features: {0}")]
    Input(String),
}

/// Events (or labels) that share a key column and an aggregated column
/// share one tile series, so each event reads and writes each key once.
#[derive(Debug, Clone)]
struct Series {
    /// Stable across restarts and edits of other features: a hash of the
    /// source, key and value column names.
    id: [u8; 8],
    source: Source,
    key: String,
    column: Option<String>,
    tile_ms: i64,
    /// The furthest back any of its features reaches, in tiles.
    retention_tiles: i64,
    /// Whether its keys' events can come from any partition (its key is
    /// not the topic's partitioning key).
    spread: bool,
    /// Its features' windows by where they end: one walk back over a key's
    /// tiles sums every window ending there, and features over the same
    /// window (a count and a mean) share its sum.
    ends: Vec<WindowsEnding>,
}

/// The windows of one series that end at the same tile (the same shift).
#[derive(Debug, Clone)]
struct WindowsEnding {
    shift_tiles: i64,
    /// The distinct window lengths in tiles, shortest first.
    lengths: Vec<i64>,
    /// Each feature's window: (index into `lengths`, feature index).
    features: Vec<(usize, usize)>,
}

impl WindowsEnding {
    /// A series' windows, each `(shift, length, feature)` in tiles, grouped
    /// by where they end, with each group's distinct lengths.
    fn grouped(mut windows: Vec<(i64, i64, usize)>) -> Vec<Self> {
        windows.sort_unstable();
        windows
            .chunk_by(|a, b| a.0 == b.0)
            .map(|same_end| {
                let mut lengths: Vec<i64> = same_end.iter().map(|w| w.1).collect();
                lengths.dedup();
                let features = same_end
                    .iter()
                    .map(|&(_, length, f)| (lengths.partition_point(|&l| l < length), f))
                    .collect();
                Self {
                    shift_tiles: same_end[0].0,
                    lengths,
                    features,
                }
            })
            .collect()
    }

    /// The newest tile the windows of an event in tile `bucket` cover. A
    /// shifted window ends before the tile holding the event's time less
    /// the shift: it then holds nothing later than that time (with tiles
    /// of a day, the tile holding it also holds later hours, whose labels
    /// may not have arrived yet).
    fn last_tile(&self, bucket: i64) -> i64 {
        match self.shift_tiles {
            0 => bucket,
            shift => bucket - shift - 1,
        }
    }

    /// Adds the summary of `tiles` over each feature's window, for an event
    /// in tile `bucket`, to `into` (indexed by feature); `by_length` is
    /// scratch space, kept by the caller so that no event allocates.
    fn add_summaries(
        &self,
        tiles: &tiles::Tiles,
        bucket: i64,
        into: &mut [tiles::Summary],
        by_length: &mut Vec<tiles::Summary>,
    ) {
        tiles.nested_summaries(self.last_tile(bucket), &self.lengths, by_length);
        for &(length, feature) in &self.features {
            into[feature].merge(&by_length[length]);
        }
    }
}

#[derive(Debug, Clone)]
struct Planned {
    aggregate: Aggregate,
    include_current: bool,
}

/// A spec resolved into series, with the expiry its store's compaction
/// filter uses.
#[derive(Debug, Clone)]
pub struct Windows {
    spec: WindowSpec,
    series: Vec<Series>,
    planned: Vec<Planned>,
    expiry: Arc<WindowExpiry>,
    /// The input topic's partition count, once the stream knows it: with
    /// `scope = "partition"`, a spread series' features then sum its
    /// key's tiles of every partition.
    partitions: std::sync::OnceLock<i32>,
}

/// What one batch did to the window state.
#[derive(Debug, Default)]
pub struct WindowOutput {
    /// One Float64 column per feature, in the batch's row order (none for
    /// a batch of labels).
    pub columns: Vec<ArrayRef>,
    pub changes: Vec<Change>,
    /// Events (or labels) older than their key's retained history.
    pub late: u64,
}

impl Windows {
    pub fn new(spec: WindowSpec) -> Self {
        let mut series: Vec<Series> = Vec::new();
        let mut planned = Vec::new();
        // Value features first, so that a count joins a series its key
        // already has rather than adding one.
        let mut order: Vec<&WindowFeature> = spec.features.iter().collect();
        order.sort_by_key(|f| f.column.is_none());
        let mut by_feature = HashMap::new();
        for feature in order {
            let at = series
                .iter()
                .position(|s| {
                    s.source == feature.source
                        && s.tile_ms == feature.tile_ms
                        && s.key == feature.key
                        && (feature.column.is_none() || s.column == feature.column)
                })
                .unwrap_or_else(|| {
                    series.push(Series {
                        id: series_id(feature),
                        source: feature.source,
                        key: feature.key.clone(),
                        column: feature.column.clone(),
                        tile_ms: feature.tile_ms,
                        retention_tiles: 0,
                        spread: spec.partition_key.as_ref() != Some(&feature.key),
                        ends: Vec::new(),
                    });
                    series.len() - 1
                });
            let reach = (feature.window_ms + feature.shift_ms) / feature.tile_ms
                + i64::from(feature.shift_ms > 0);
            series[at].retention_tiles = series[at].retention_tiles.max(reach);
            by_feature.insert(feature.name.clone(), at);
        }
        // Per series, each feature's window: (shift, length, feature).
        let mut windows_of = vec![Vec::new(); series.len()];
        for (f, feature) in spec.features.iter().enumerate() {
            let at = by_feature[&feature.name];
            planned.push(Planned {
                aggregate: feature.aggregate,
                include_current: feature.include_current
                    && feature.shift_ms == 0
                    && feature.source == Source::Events,
            });
            windows_of[at].push((
                feature.shift_ms / feature.tile_ms,
                feature.window_ms / feature.tile_ms,
                f,
            ));
        }
        for (series, windows) in series.iter_mut().zip(windows_of) {
            series.ends = WindowsEnding::grouped(windows);
        }
        let expiry = Arc::new(WindowExpiry::new(
            series
                .iter()
                .map(|s| (s.id, (s.retention_tiles, s.tile_ms)))
                .collect(),
        ));
        Self {
            spec,
            series,
            planned,
            expiry,
            partitions: std::sync::OnceLock::new(),
        }
    }

    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// Tells per-partition windows (`scope = "partition"`) how many
    /// partitions the input has: the features of a key whose events span
    /// partitions (a terminal, on a topic keyed by card) then sum its
    /// tiles of every partition, so they equal `train`'s with any number of
    /// instances (ARCHITECTURE.md §2). Set once, before the first batch.
    pub fn spread_over(&self, partitions: i32) {
        if self.spec.scope == Scope::Partition && partitions > 1 {
            let _ = self.partitions.set(partitions);
        }
    }

    /// Whether a stored key is of a series spread over partitions: the keys
    /// an instance copies from the partitions it does not hold.
    pub fn is_spread_key(&self, key: &[u8]) -> bool {
        let Some(id) = key.get(4..12) else {
            return false;
        };
        self.series.iter().any(|s| s.spread && s.id == id)
    }

    /// The partitions whose tiles a series' features sum, besides the
    /// event's own (`partition`).
    fn other_partitions(&self, series: usize, partition: i32) -> impl Iterator<Item = i32> {
        let count = match self.series[series].spread {
            true => self.partitions.get().copied().unwrap_or(1),
            false => 1,
        };
        (0..count).filter(move |p| count > 1 && *p != partition)
    }

    /// How many keys an event has in a series: its own partition's, and
    /// for a spread series every other partition's
    /// ([`Windows::other_partitions`]).
    fn keys_per_event(&self, series: usize) -> usize {
        match self.series[series].spread {
            true => self
                .partitions
                .get()
                .map_or(1, |&count| count.max(1) as usize),
            false => 1,
        }
    }

    /// The partition a state key carries: the input's, or one for the
    /// whole instance.
    pub fn scoped(&self, partition: i32) -> i32 {
        match self.spec.scope {
            Scope::Partition => partition,
            Scope::Instance => -1,
        }
    }

    /// Whether any feature reads labels (then the labels topic is read).
    pub fn reads_labels(&self) -> bool {
        self.series.iter().any(|s| s.source == Source::Labels)
    }

    /// The compaction filter's view: which stored keys no event can need.
    pub fn expiry(&self) -> Arc<dyn Expiry> {
        self.expiry.clone()
    }

    /// The input table plus the feature columns.
    pub fn extend_schema(&self, schema: &Schema) -> Arc<Schema> {
        let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(
            self.spec
                .features
                .iter()
                .map(|f| arrow::datatypes::Field::new(&f.name, DataType::Float64, true)),
        );
        Arc::new(Schema::new(fields))
    }

    /// Computes every feature of the rows of `decoded` and the state
    /// changes that fold them in. Rows are folded in `order` (the stream's
    /// order); `partitions[row]` is each row's input partition, which every
    /// state key carries. A row marked in `already_folded` (read again
    /// below the checkpoint: a rewind) gets its features from the state as
    /// it is and is not folded again; rows past its end are folded.
    pub fn compute(
        &self,
        decoded: &RecordBatch,
        partitions: &[i32],
        order: &[usize],
        already_folded: &[bool],
        state: &Checkpoint,
    ) -> Result<WindowOutput, WindowError> {
        let columns = Columns::of_events(self, decoded)?;
        let mut session = Session::new(self, Some(state));
        session.prefetch(
            &columns,
            order.iter().map(|&r| (r, partitions[r])),
            Source::Events,
        )?;
        let mut out = vec![vec![None; decoded.num_rows()]; self.planned.len()];
        for &row in order {
            let fold = !already_folded.get(row).copied().unwrap_or(false);
            session.event(&columns, row, partitions[row], fold, &mut out)?;
        }
        Ok(session.finish(out))
    }

    /// Folds a batch of labels into their series (no features come out).
    pub fn fold_labels(
        &self,
        labels: &RecordBatch,
        partitions: &[i32],
        state: &Checkpoint,
    ) -> Result<WindowOutput, WindowError> {
        let columns = Columns::of_labels(self, labels)?;
        let mut session = Session::new(self, Some(state));
        session.prefetch(
            &columns,
            partitions.iter().copied().enumerate(),
            Source::Labels,
        )?;
        for (row, &partition) in partitions.iter().enumerate() {
            session.label(&columns, row, partition)?;
        }
        Ok(session.finish(Vec::new()))
    }

    /// Training: the features of history as the stream would have computed
    /// them, from an empty state, as one partition. Events fold in
    /// event-time order (ties in file order); each event's label, read from
    /// the same rows, folds in `labels.delay` after it, before the events
    /// at or after that time.
    pub fn history(&self, decoded: &RecordBatch) -> Result<Vec<ArrayRef>, WindowError> {
        Ok(self.replay(decoded, None)?.columns)
    }

    /// Folds history into `state` as [`Windows::history`] computes it, so
    /// that a stream starting after it has its windows full (`streamscore
    /// state warm`). Only for `scope = "instance"`: history does not say
    /// which partition each event would have come from.
    pub fn warm(
        &self,
        decoded: &RecordBatch,
        state: &Checkpoint,
    ) -> Result<WindowOutput, WindowError> {
        if self.spec.scope != Scope::Instance {
            return Err(WindowError::Input(
                "warming state from history needs `windows.scope = \"instance\"`: with \
                 per-partition state, history does not say which partition each event \
                 belongs to"
                    .into(),
            ));
        }
        self.replay(decoded, Some(state))
    }

    fn replay(
        &self,
        decoded: &RecordBatch,
        state: Option<&Checkpoint>,
    ) -> Result<WindowOutput, WindowError> {
        let events = Columns::of_events(self, decoded)?;
        let labels = match (&self.spec.labels, self.reads_labels()) {
            (Some(timing), true) => Some((Columns::of_labels(self, decoded)?, timing.delay_ms)),
            _ => None,
        };
        let time = |row: usize| events.time(row);
        let mut order: Vec<usize> = (0..decoded.num_rows()).collect();
        // Events without a time get no window features; their place is moot.
        order.sort_by_key(|&row| time(row));
        let mut session = Session::new(self, state);
        let mut out = vec![vec![None; decoded.num_rows()]; self.planned.len()];
        let mut next_label = 0;
        for &row in &order {
            if let (Some((label_columns, delay)), Some(now)) = (&labels, time(row)) {
                while let Some(&labelled) = order.get(next_label) {
                    match label_columns.time(labelled) {
                        Some(t) if t + delay <= now => {
                            session.label(label_columns, labelled, 0)?;
                        }
                        Some(_) => break,
                        None => {}
                    }
                    next_label += 1;
                }
            }
            session.event(&events, row, 0, true, &mut out)?;
        }
        Ok(session.finish(out))
    }
}

fn to_columns(out: Vec<Vec<Option<f64>>>) -> Vec<ArrayRef> {
    out.into_iter()
        .map(|values| Arc::new(Float64Array::from(values)) as ArrayRef)
        .collect()
}

fn series_id(feature: &WindowFeature) -> [u8; 8] {
    let mut hash = Sha256::new();
    hash.update(match feature.source {
        Source::Events => b"events\0".as_slice(),
        Source::Labels => b"labels\0".as_slice(),
    });
    hash.update(feature.tile_ms.to_be_bytes());
    hash.update(feature.key.as_bytes());
    hash.update([0]);
    hash.update(feature.column.as_deref().unwrap_or("").as_bytes());
    let digest = hash.finalize();
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{AsArray, Float64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Float64Type, TimeUnit};

    use super::*;
    use crate::state::{Family, MemoryStore};

    const HOUR: i64 = 3_600_000;

    fn feature(
        name: &str,
        column: Option<&str>,
        aggregate: Aggregate,
        hours: i64,
    ) -> WindowFeature {
        WindowFeature {
            name: name.into(),
            key: "card".into(),
            column: column.map(Into::into),
            aggregate,
            source: Source::Events,
            window_ms: hours * HOUR,
            tile_ms: HOUR,
            shift_ms: 0,
            include_current: true,
        }
    }

    fn windows() -> Windows {
        Windows::new(WindowSpec {
            event_time: "time".into(),
            scope: Scope::Partition,
            partition_key: None,
            features: vec![
                feature("count_24h", None, Aggregate::Count, 24),
                feature("mean_24h", Some("amount"), Aggregate::Mean, 24),
                feature("max_2h", Some("amount"), Aggregate::Max, 2),
                WindowFeature {
                    include_current: false,
                    ..feature("sum_before_24h", Some("amount"), Aggregate::Sum, 24)
                },
            ],
            labels: None,
        })
    }

    fn batch(rows: &[(&str, i64, f64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("card", DataType::Utf8, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("amount", DataType::Float64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .expect("a valid batch")
    }

    fn column(output: &WindowOutput, f: usize) -> Vec<Option<f64>> {
        output.columns[f]
            .as_primitive::<Float64Type>()
            .iter()
            .collect()
    }

    #[test]
    fn features_cover_their_window_of_tiles_and_survive_between_batches() -> Result<(), WindowError>
    {
        let windows = windows();
        // Count and mean share the card's amount series: one key per card.
        assert_eq!(windows.series.len(), 1);
        let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let first = batch(&[("a", 0, 10.0), ("b", HOUR, 1.0), ("a", 2 * HOUR, 30.0)]);
        let out = windows.compute(&first, &[0; 3], &[0, 1, 2], &[], &checkpoint)?;
        assert_eq!(column(&out, 0), [Some(1.0), Some(1.0), Some(2.0)]);
        assert_eq!(column(&out, 1), [Some(10.0), Some(1.0), Some(20.0)]);
        // Two tiles back from hour 2 is hour 1: the hour-0 event is out.
        assert_eq!(column(&out, 2), [Some(10.0), Some(1.0), Some(30.0)]);
        assert_eq!(column(&out, 3), [Some(0.0), Some(0.0), Some(10.0)]);
        let staged = checkpoint.stage("t", &BTreeMap::from([(0, 3)]), out.changes);
        checkpoint.commit(staged)?;

        // A day later the hour-0 event has left the 24-hour window; the
        // hour-2 one has not (hours 2..=25).
        let second = batch(&[("a", 25 * HOUR, 5.0)]);
        let out = windows.compute(&second, &[0], &[0], &[], &checkpoint)?;
        assert_eq!(column(&out, 0), [Some(2.0)]);
        assert_eq!(column(&out, 1), [Some(17.5)]);
        // Another partition's card `a` is another key.
        let out = windows.compute(&second, &[1], &[0], &[], &checkpoint)?;
        assert_eq!(column(&out, 0), [Some(1.0)]);
        Ok(())
    }

    /// A batch's keys are decoded when a row first uses them and encoded
    /// after the last (`session::Slot`): batches of many rows, several of
    /// a key, some staged and some written, folded in an order that is not
    /// the rows', give each row the features, and leave the state, that
    /// one row at a time does.
    #[test]
    fn a_batch_of_many_rows_a_key_computes_what_rows_one_at_a_time_do() -> Result<(), WindowError> {
        let windows = windows();
        let rows: Vec<(String, i64, f64)> = (0..120i64)
            .map(|i| (format!("card-{}", i * 7 % 5), i * HOUR / 3, (i % 11) as f64))
            .collect();
        let row_refs: Vec<(&str, i64, f64)> =
            rows.iter().map(|(c, t, a)| (c.as_str(), *t, *a)).collect();

        let one_at_a_time = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let mut expected = vec![Vec::new(); windows.planned.len()];
        for row in &row_refs {
            let out = windows.compute(&batch(&[*row]), &[0], &[0], &[], &one_at_a_time)?;
            for (f, values) in expected.iter_mut().enumerate() {
                values.extend(column(&out, f));
            }
            one_at_a_time.commit(one_at_a_time.stage("t", &BTreeMap::new(), out.changes))?;
        }

        let batched = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let mut unwritten = Vec::new();
        for (n, chunk) in row_refs.chunks(17).enumerate() {
            // Each chunk folded in time order; its rows given newest first.
            let reversed: Vec<_> = chunk.iter().rev().copied().collect();
            let order: Vec<usize> = (0..chunk.len()).rev().collect();
            let out = windows.compute(
                &batch(&reversed),
                &vec![0; chunk.len()],
                &order,
                &[],
                &batched,
            )?;
            let keys: Vec<&Vec<u8>> = out.changes.iter().map(|c| &c.key).collect();
            assert!(
                keys.windows(2).all(|k| k[0] < k[1]),
                "each key once, in order"
            );
            for (f, expected) in expected.iter().enumerate() {
                let mut got = column(&out, f);
                got.reverse();
                assert_eq!(
                    got,
                    expected[n * 17..n * 17 + chunk.len()],
                    "feature {f}, chunk {n}"
                );
            }
            unwritten.push(batched.stage("t", &BTreeMap::new(), out.changes));
            // Every other chunk is written; the others are read staged.
            if n % 2 == 1 {
                batched.commit_all(std::mem::take(&mut unwritten))?;
            }
        }
        batched.commit_all(unwritten)?;
        assert_eq!(
            batched.store().scan(Family::Windows)?,
            one_at_a_time.store().scan(Family::Windows)?
        );
        Ok(())
    }

    /// A record read again below the checkpoint (a rewind) is scored from
    /// the state as it is and not folded in a second time (at a342126 it
    /// got no output at all).
    #[test]
    fn rows_already_folded_get_features_and_leave_the_state_alone() -> Result<(), WindowError> {
        let windows = windows();
        let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let rows = batch(&[("a", 0, 10.0), ("a", HOUR, 30.0)]);
        let out = windows.compute(&rows, &[0; 2], &[0, 1], &[], &checkpoint)?;
        checkpoint.commit(checkpoint.stage("t", &BTreeMap::from([(0, 2)]), out.changes))?;
        let again = windows.compute(&rows, &[0; 2], &[0, 1], &[true, true], &checkpoint)?;
        assert!(again.changes.is_empty(), "nothing folded again");
        // Each sees the state up to its own tile, itself included, and
        // counts itself once more as the current event.
        assert_eq!(column(&again, 0), [Some(2.0), Some(3.0)]);
        let next = windows.compute(
            &batch(&[("a", 2 * HOUR, 5.0)]),
            &[0],
            &[0],
            &[],
            &checkpoint,
        )?;
        assert_eq!(
            column(&next, 0),
            [Some(3.0)],
            "the two events counted once each"
        );
        Ok(())
    }

    #[test]
    fn an_event_older_than_the_retained_history_is_late_and_not_folded() -> Result<(), WindowError>
    {
        let windows = windows();
        let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let rows = batch(&[
            ("a", 100 * HOUR, 10.0),
            ("a", 50 * HOUR, 99.0),
            ("a", 100 * HOUR, 20.0),
        ]);
        let out = windows.compute(&rows, &[0; 3], &[0, 1, 2], &[], &checkpoint)?;
        assert_eq!(out.late, 1);
        assert_eq!(
            column(&out, 0),
            [Some(1.0), Some(1.0), Some(2.0)],
            "the late event counts only itself"
        );
        assert_eq!(column(&out, 1)[2], Some(15.0), "and is not folded in");
        Ok(())
    }

    #[test]
    fn the_compaction_filter_expires_keys_a_whole_retention_behind() -> Result<(), WindowError> {
        let windows = windows();
        let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let out = windows.compute(&batch(&[("old", 0, 1.0)]), &[0], &[0], &[], &checkpoint)?;
        let (key, value) = (
            &out.changes[0].key,
            out.changes[0].value.clone().unwrap_or_default(),
        );
        let expiry = windows.expiry();
        assert!(!expiry.expired(key, &value));
        windows.compute(
            &batch(&[("new", 24 * HOUR, 1.0)]),
            &[1],
            &[0],
            &[],
            &checkpoint,
        )?;
        assert!(
            !expiry.expired(key, &value),
            "another partition's time does not expire it"
        );
        windows.compute(
            &batch(&[("new", 24 * HOUR, 1.0)]),
            &[0],
            &[0],
            &[],
            &checkpoint,
        )?;
        assert!(expiry.expired(key, &value));
        Ok(())
    }

    const DAY: i64 = 24 * HOUR;

    /// Terminal `t` on days 0..12, one event a day, frauds on days 1 and 2.
    fn terminal_history() -> RecordBatch {
        terminal_days(&(0..12).map(|d| (d, d == 1 || d == 2)).collect::<Vec<_>>())
    }

    /// Terminal `t`, a row per (day, fraud).
    fn terminal_days(days: &[(i64, bool)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("terminal", DataType::Utf8, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new("is_fraud", DataType::Boolean, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values(days.iter().map(|_| "t"))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    days.iter().map(|(d, _)| d * DAY),
                )),
                Arc::new(arrow::array::BooleanArray::from_iter(
                    days.iter().map(|(_, fraud)| Some(*fraud)),
                )),
            ],
        )
        .expect("a valid batch")
    }

    fn terminal_windows() -> Windows {
        let terminal =
            |name: &str, source, column: Option<&str>, aggregate, shift_days| WindowFeature {
                name: name.into(),
                key: "terminal".into(),
                column: column.map(Into::into),
                aggregate,
                source,
                window_ms: 7 * DAY,
                tile_ms: DAY,
                shift_ms: shift_days * DAY,
                include_current: true,
            };
        Windows::new(WindowSpec {
            event_time: "time".into(),
            scope: Scope::Partition,
            partition_key: None,
            features: vec![
                terminal(
                    "frauds_shifted",
                    Source::Labels,
                    Some("is_fraud"),
                    Aggregate::Sum,
                    7,
                ),
                terminal("tx_shifted", Source::Events, None, Aggregate::Count, 7),
                WindowFeature {
                    window_ms: 10 * DAY,
                    ..terminal(
                        "frauds_unshifted",
                        Source::Labels,
                        Some("is_fraud"),
                        Aggregate::Sum,
                        0,
                    )
                },
            ],
            labels: Some(LabelTiming {
                event_time: "time".into(),
                delay_ms: 7 * DAY,
            }),
        })
    }

    #[test]
    fn label_features_see_labels_only_after_their_delay() -> Result<(), WindowError> {
        let windows = terminal_windows();
        let history = windows.history(&terminal_history())?;
        let values = |f: usize| -> Vec<f64> {
            history[f]
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.unwrap_or(f64::NAN))
                .collect()
        };
        // Day 9's shifted window ends before day 2 (9 - 7, which may hold
        // labels not yet arrived): days -5..=1, one fraud, two events.
        assert_eq!(values(0)[9], 1.0);
        assert_eq!(values(1)[9], 2.0);
        // Day 10's is -4..=2: both frauds; day 8's is -6..=0: none.
        assert_eq!(values(0)[10], 2.0);
        assert_eq!(values(0)[8], 0.0);
        // Unshifted (over 10 days), the day-1 fraud is visible only from
        // day 8, when its label has arrived.
        assert_eq!(
            &values(2)[..10],
            &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0]
        );
        Ok(())
    }

    /// The stream, one event at a time with each label folded in once its
    /// delay has passed, computes what `history` computes.
    #[test]
    fn the_stream_with_delayed_labels_matches_history() -> Result<(), WindowError> {
        let windows = terminal_windows();
        let batch = terminal_history();
        let expected = windows.history(&batch)?;
        let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let mut labelled = 0;
        for day in 0..12 {
            while labelled < 12 && labelled as i64 * DAY + 7 * DAY <= day as i64 * DAY {
                let out = windows.fold_labels(&batch.slice(labelled, 1), &[0], &checkpoint)?;
                let staged = checkpoint.stage("labels", &BTreeMap::new(), out.changes);
                checkpoint.commit(staged)?;
                labelled += 1;
            }
            let out = windows.compute(&batch.slice(day, 1), &[0], &[0], &[], &checkpoint)?;
            for (f, column) in out.columns.iter().enumerate() {
                assert_eq!(
                    column.as_primitive::<Float64Type>().value(0),
                    expected[f].as_primitive::<Float64Type>().value(day),
                    "feature {f} on day {day}"
                );
            }
            let staged = checkpoint.stage("events", &BTreeMap::new(), out.changes);
            checkpoint.commit(staged)?;
        }
        Ok(())
    }

    /// The terminal's events and labels spread over three partitions (day
    /// d in partition d % 3), each folded under its own partition: with the
    /// partition count known, every feature sums the three and equals the
    /// history's, computed as one partition.
    #[test]
    fn a_key_spread_over_partitions_sums_them_as_history_does() -> Result<(), WindowError> {
        let windows = terminal_windows();
        windows.spread_over(3);
        let batch = terminal_history();
        let expected = terminal_windows().history(&batch)?;
        let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let mut labelled = 0;
        for day in 0..12usize {
            while labelled < 12 && labelled as i64 * DAY + 7 * DAY <= day as i64 * DAY {
                let partition = [labelled as i32 % 3];
                let out =
                    windows.fold_labels(&batch.slice(labelled, 1), &partition, &checkpoint)?;
                checkpoint.commit(checkpoint.stage("labels", &BTreeMap::new(), out.changes))?;
                labelled += 1;
            }
            let partition = [day as i32 % 3];
            let out = windows.compute(&batch.slice(day, 1), &partition, &[0], &[], &checkpoint)?;
            for (f, column) in out.columns.iter().enumerate() {
                assert_eq!(
                    column.as_primitive::<Float64Type>().value(0),
                    expected[f].as_primitive::<Float64Type>().value(day),
                    "feature {f} on day {day}"
                );
            }
            checkpoint.commit(checkpoint.stage("events", &BTreeMap::new(), out.changes))?;
        }
        Ok(())
    }

    /// The two topics' batches run concurrently: here an events batch and
    /// a labels batch are both computed from the same staged state, the
    /// labels batch staged first. The label must survive the events batch
    /// written after it: events never write a label series, even when
    /// their time has left its old tiles behind.
    #[test]
    fn a_label_folded_beside_an_events_batch_is_not_lost() -> Result<(), WindowError> {
        let windows = terminal_windows();
        let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
        let commit = |topic: &str, changes| {
            checkpoint.commit(checkpoint.stage(topic, &BTreeMap::new(), changes))
        };
        let out = windows.fold_labels(&terminal_days(&[(1, true)]), &[0], &checkpoint)?;
        commit("labels", out.changes)?;
        // Day 30's event is past the day-1 label's retention (15 day tiles:
        // the shifted feature reaches 7 + 7 days and one more).
        let events =
            windows.compute(&terminal_days(&[(30, false)]), &[0], &[0], &[], &checkpoint)?;
        let labels = windows.fold_labels(&terminal_days(&[(25, true)]), &[0], &checkpoint)?;
        let labels = checkpoint.stage("labels", &BTreeMap::new(), labels.changes);
        let events = checkpoint.stage("events", &BTreeMap::new(), events.changes);
        checkpoint.commit_all(vec![labels, events])?;
        let later =
            windows.compute(&terminal_days(&[(26, false)]), &[0], &[0], &[], &checkpoint)?;
        // frauds_unshifted: days 17..=26 hold the day-25 fraud.
        assert_eq!(column(&later, 2), vec![Some(1.0)]);
        Ok(())
    }
}
