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
mod tests;
