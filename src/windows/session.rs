//! One pass of events (or labels) over the window state: the tiles of each
//! key touched are loaded once, updated in memory, and handed back as
//! changes at the end. A batch in the stream is one session over the
//! checkpoint; training is one session over all of history.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use arrow::array::{Array, AsArray, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;

use super::expiry::set_state_key;
use super::tiles::{Summary, Tiles};
use super::{Source, WindowError, WindowOutput, Windows, to_columns};
use crate::state::{Change, Checkpoint, Family, StateError};

/// A batch's columns as the windows read them, cast once: per series its
/// key as text and its value as a float, where the batch has them.
pub(super) struct Columns {
    times: TimestampMillisecondArray,
    keys: Vec<Option<StringArray>>,
    values: Vec<Option<Float64Array>>,
}

impl Columns {
    /// An events batch: every series' key (label features look their key
    /// up too), the values of event series.
    pub(super) fn of_events(windows: &Windows, batch: &RecordBatch) -> Result<Self, WindowError> {
        Self::of(windows, batch, &windows.spec.event_time, Source::Events)
    }

    /// A labels batch: the key and value of label series.
    pub(super) fn of_labels(windows: &Windows, batch: &RecordBatch) -> Result<Self, WindowError> {
        let time = windows
            .spec
            .labels
            .as_ref()
            .map_or("event_time", |l| l.event_time.as_str());
        Self::of(windows, batch, time, Source::Labels)
    }

    fn of(
        windows: &Windows,
        batch: &RecordBatch,
        time: &str,
        source: Source,
    ) -> Result<Self, WindowError> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| WindowError::Input(format!("the batch has no column `{name}`")))
        };
        let cast_to = |name: &str, to: &DataType| {
            cast(column(name)?, to).map_err(|e| {
                WindowError::Input(format!("column `{name}` does not cast to {to}: {e}"))
            })
        };
        let times = column(time)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| WindowError::Input(format!("`{time}` is not a millisecond timestamp")))?
            .clone();
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for series in &windows.series {
            let wanted = source == Source::Events || series.source == source;
            keys.push(match wanted {
                true => Some(
                    cast_to(&series.key, &DataType::Utf8)?
                        .as_string::<i32>()
                        .clone(),
                ),
                false => None,
            });
            values.push(match (&series.column, series.source == source) {
                (Some(c), true) => Some(
                    cast_to(c, &DataType::Float64)?
                        .as_primitive::<arrow::datatypes::Float64Type>()
                        .clone(),
                ),
                _ => None,
            });
        }
        Ok(Self {
            times,
            keys,
            values,
        })
    }

    pub(super) fn rows(&self) -> usize {
        self.times.len()
    }

    pub(super) fn time(&self, row: usize) -> Option<i64> {
        self.times.is_valid(row).then(|| self.times.value(row))
    }

    fn key(&self, series: usize, row: usize) -> Option<&str> {
        let keys = self.keys[series].as_ref()?;
        keys.is_valid(row).then(|| keys.value(row))
    }

    fn value(&self, series: usize, row: usize) -> Option<f64> {
        let values = self.values[series].as_ref()?;
        values.is_valid(row).then(|| values.value(row))
    }
}

/// A key a row does not have.
const NO_SLOT: u32 = u32::MAX;

pub(super) struct Session<'w> {
    windows: &'w Windows,
    /// Where keys not yet touched are read from; none starts empty.
    state: Option<&'w Checkpoint>,
    /// Per state key touched, its place in `slots`: each key is allocated
    /// once a session, and looked up through `key` after that.
    loaded: FxHashMap<Vec<u8>, usize>,
    /// The tiles of each key touched, and whether they changed.
    slots: Vec<(Tiles, bool)>,
    /// Per row prefetched, the slot of each key it touches, so that the
    /// per-row pass does not look its keys up again: per series (from
    /// `series_at`) its key in the row's own partition, then in the others
    /// its features sum; [`NO_SLOT`] where the row has none.
    row_slots: Vec<u32>,
    /// Where each series' keys start within a row's, and the row's width
    /// last.
    series_at: Vec<usize>,
    /// Scratch for the state key being looked up.
    key: Vec<u8>,
    watermarks: HashMap<i32, i64>,
    late: u64,
    /// Scratch for each event: per feature its window's summary, and per
    /// window length one walk's sums (`WindowsEnding::add_summaries`).
    summaries: Vec<Summary>,
    by_length: Vec<Summary>,
}

impl<'w> Session<'w> {
    pub(super) fn new(windows: &'w Windows, state: Option<&'w Checkpoint>) -> Self {
        Self {
            windows,
            state,
            loaded: FxHashMap::default(),
            slots: Vec::new(),
            row_slots: Vec::new(),
            series_at: Vec::new(),
            key: Vec::new(),
            watermarks: HashMap::new(),
            late: 0,
            summaries: vec![Summary::default(); windows.planned.len()],
            by_length: Vec::new(),
        }
    }

    /// Loads the tiles of every key the rows of `columns` touch, in one
    /// read of the store, so that the per-row pass finds them in memory
    /// and their slots by row. Once a session.
    pub(super) fn prefetch(
        &mut self,
        columns: &Columns,
        rows: impl Iterator<Item = (usize, i32)>,
        source: Source,
    ) -> Result<(), StateError> {
        let Some(state) = self.state else {
            return Ok(());
        };
        let first_new = self.slots.len();
        let rows = rows.into_iter();
        // A key per series and row at most: sized once, not grown.
        let most = rows.size_hint().0 * self.windows.series.len();
        self.loaded.reserve(most);
        self.slots.reserve(most);
        let windows = self.windows;
        self.series_at = std::iter::once(0)
            .chain(windows.series.iter().enumerate().scan(0, |at, (s, _)| {
                *at += windows.keys_per_event(s);
                Some(*at)
            }))
            .collect();
        let width = self.series_at[windows.series.len()];
        self.row_slots = vec![NO_SLOT; columns.rows() * width];
        for (row, partition) in rows {
            let partition = windows.scoped(partition);
            for (s, series) in windows.series.iter().enumerate() {
                if source == Source::Labels && series.source != Source::Labels {
                    continue;
                }
                let Some(key) = columns.key(s, row) else {
                    continue;
                };
                let others = windows.other_partitions(s, partition);
                let places = row * width + self.series_at[s]..row * width + self.series_at[s + 1];
                for (place, partition) in places.zip(std::iter::once(partition).chain(others)) {
                    set_state_key(&mut self.key, partition, &series.id, key);
                    let slot = match self.loaded.get(self.key.as_slice()) {
                        Some(&slot) => slot,
                        None => {
                            let slot = self.slots.len();
                            self.loaded.insert(self.key.clone(), slot);
                            self.slots.push((Tiles::default(), false));
                            slot
                        }
                    };
                    self.row_slots[place] = slot as u32;
                }
            }
        }
        // The checkpoint puts the keys it reads from the store in order.
        let wanted: Vec<(&[u8], usize)> = self
            .loaded
            .iter()
            .filter(|&(_, &slot)| slot >= first_new)
            .map(|(key, &slot)| (key.as_slice(), slot))
            .collect();
        let keys: Vec<&[u8]> = wanted.iter().map(|(key, _)| *key).collect();
        let slots = &mut self.slots;
        state.read_many(Family::Windows, &keys, |i, value| {
            let (key, slot) = wanted[i];
            slots[slot].0 = stored_tiles(key, value);
        })
    }

    /// The slot of row `row`'s key `value` of series `s` in `partition`
    /// (the `nth` of the partitions its features sum: its own first):
    /// where the prefetch put it, else looked up.
    fn slot_of(
        &mut self,
        row: usize,
        s: usize,
        nth: usize,
        partition: i32,
        value: &str,
    ) -> Result<usize, StateError> {
        let remembered = match (self.series_at.get(s), self.series_at.get(s + 1)) {
            (Some(&start), Some(&end)) if start + nth < end => {
                let width = self.series_at[self.series_at.len() - 1];
                self.row_slots.get(row * width + start + nth).copied()
            }
            _ => None,
        };
        let windows = self.windows;
        match remembered {
            Some(slot) if slot != NO_SLOT => Ok(slot as usize),
            _ => self.slot(partition, &windows.series[s].id, value),
        }
    }

    /// The slot of a state key, read from the state if not yet touched.
    fn slot(&mut self, partition: i32, series: &[u8; 8], value: &str) -> Result<usize, StateError> {
        set_state_key(&mut self.key, partition, series, value);
        if let Some(&slot) = self.loaded.get(self.key.as_slice()) {
            return Ok(slot);
        }
        let stored = match self.state {
            Some(state) => state.get(Family::Windows, &self.key)?,
            None => None,
        };
        let slot = self.slots.len();
        self.slots
            .push((stored_tiles(&self.key, stored.as_deref()), false));
        self.loaded.insert(self.key.clone(), slot);
        Ok(slot)
    }

    /// Writes the features of event `row` into `out` (feature x row), then
    /// folds the event into its event series.
    pub(super) fn event(
        &mut self,
        columns: &Columns,
        row: usize,
        partition: i32,
        fold: bool,
        out: &mut [Vec<Option<f64>>],
    ) -> Result<(), WindowError> {
        let Some(time) = columns.time(row) else {
            return Ok(());
        };
        let partition = self.windows.scoped(partition);
        if fold {
            self.seen(partition, time);
        }
        let windows = self.windows;
        let mut summaries = std::mem::take(&mut self.summaries);
        let mut by_length = std::mem::take(&mut self.by_length);
        for (s, series) in windows.series.iter().enumerate() {
            let Some(key) = columns.key(s, row) else {
                continue;
            };
            let bucket = time.div_euclid(series.tile_ms);
            let value = columns.value(s, row);
            for ending in &series.ends {
                for &(_, f) in &ending.features {
                    summaries[f] = Summary::default();
                }
            }
            self.add_elsewhere(
                (row, s),
                partition,
                key,
                bucket,
                &mut summaries,
                &mut by_length,
            )?;
            let slot = self.slot_of(row, s, 0, partition, key)?;
            // An event only reads a label series' tiles: each key has one
            // writer, events for event series and labels for label series,
            // so the two topics' batches, computed and staged concurrently,
            // never write one key from two stale reads (a label was lost
            // that way while events expired label tiles; ARCHITECTURE.md
            // §2). Label tiles age with the labels (`label`).
            let (tiles, dirty) = &mut self.slots[slot];
            for ending in &series.ends {
                ending.add_summaries(tiles, bucket, &mut summaries, &mut by_length);
                for &(_, f) in &ending.features {
                    let planned = &windows.planned[f];
                    let mut summary = summaries[f];
                    if planned.include_current {
                        summary.add(value);
                    }
                    out[f][row] = planned.aggregate.of(&summary);
                }
            }
            if series.source != Source::Events || !fold {
                continue;
            }
            if fold_value(tiles, bucket, value, series.retention_tiles) {
                *dirty = true;
            } else {
                self.late += 1;
            }
        }
        self.summaries = summaries;
        self.by_length = by_length;
        Ok(())
    }

    /// For a series spread over partitions: adds the summaries of the
    /// tiles of `key` (row `row`'s key of series `s`) in the other
    /// partitions, for the event in tile `bucket`, to `into` (indexed by
    /// feature; only this series' are touched).
    fn add_elsewhere(
        &mut self,
        (row, s): (usize, usize),
        partition: i32,
        key: &str,
        bucket: i64,
        into: &mut [Summary],
        by_length: &mut Vec<Summary>,
    ) -> Result<(), StateError> {
        let windows = self.windows;
        let others = windows.other_partitions(s, partition);
        let series = &windows.series[s];
        for (nth, other) in (1..).zip(others) {
            let slot = self.slot_of(row, s, nth, other, key)?;
            let tiles = &self.slots[slot].0;
            for ending in &series.ends {
                ending.add_summaries(tiles, bucket, into, by_length);
            }
        }
        Ok(())
    }

    /// Folds label `row` into its label series.
    pub(super) fn label(
        &mut self,
        columns: &Columns,
        row: usize,
        partition: i32,
    ) -> Result<(), WindowError> {
        let Some(time) = columns.time(row) else {
            return Ok(());
        };
        let partition = self.windows.scoped(partition);
        let windows = self.windows;
        for (s, series) in windows.series.iter().enumerate() {
            if series.source != Source::Labels {
                continue;
            }
            let Some(key) = columns.key(s, row) else {
                continue;
            };
            let bucket = time.div_euclid(series.tile_ms);
            let value = columns.value(s, row);
            let slot = self.slot_of(row, s, 0, partition, key)?;
            let (tiles, dirty) = &mut self.slots[slot];
            // As an event's: older than its key's newest label by the
            // retention or more, no event reads it; the tiles that far
            // behind the newest label go. Events arrive no earlier than
            // the transactions labels name, so no event that is not late
            // itself reads below that.
            if fold_value(tiles, bucket, value, series.retention_tiles) {
                *dirty = true;
            } else {
                self.late += 1;
            }
        }
        Ok(())
    }

    fn seen(&mut self, partition: i32, time: i64) {
        let newest = self.watermarks.entry(partition).or_insert(time);
        *newest = (*newest).max(time);
    }

    pub(super) fn finish(self, out: Vec<Vec<Option<f64>>>) -> WindowOutput {
        self.windows.expiry.advance(&self.watermarks);
        let slots = &self.slots;
        let mut changes: Vec<Change> = self
            .loaded
            .into_iter()
            .filter(|&(_, slot)| slots[slot].1)
            .map(|(key, slot)| {
                let tiles = &slots[slot].0;
                Change {
                    family: Family::Windows,
                    key,
                    value: (!tiles.is_empty()).then(|| tiles.encode()),
                }
            })
            .collect();
        // In key order, RocksDB's memtable inserts each key near the last
        // one rather than searching its skip list afresh (the search was a
        // tenth of the batch's time in a profile).
        changes.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        WindowOutput {
            columns: to_columns(out),
            changes,
            late: self.late,
        }
    }
}

/// The tiles of a stored window value; a value that does not read is
/// quarantined and its key starts with no history.
fn stored_tiles(key: &[u8], stored: Option<&[u8]>) -> Tiles {
    let Some(bytes) = stored else {
        return Tiles::default();
    };
    Tiles::decode(bytes).unwrap_or_else(|reason| {
        let partition = key
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes);
        crate::state::quarantined(Family::Windows, partition, &reason);
        Tiles::default()
    })
}

/// Adds one event to its tile and drops the tiles no feature reaches any
/// more; false, and nothing folded, for an event older than that.
fn fold_value(tiles: &mut Tiles, bucket: i64, value: Option<f64>, retention_tiles: i64) -> bool {
    if tiles
        .newest()
        .is_some_and(|newest| bucket <= newest - retention_tiles)
    {
        return false;
    }
    tiles.add(bucket, value);
    if let Some(newest) = tiles.newest() {
        tiles.expire(newest - retention_tiles + 1);
    }
    true
}
