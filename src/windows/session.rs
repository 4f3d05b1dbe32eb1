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

/// A key's tiles within a session. A batch's keys are read together but
/// used one row at a time, and decoded tiles are several times the size of
/// their bytes: decoding them all up front, and encoding them all at the
/// end, had each row walk tiles the cache no longer held (most of the walk's
/// time in a profile; bench/RESULTS.md, session 13). So a key is decoded
/// when a row first uses it, and encoded again after the last row that
/// does, while its tiles are still in the cache.
struct Slot {
    /// Its tiles, unless `encoded` holds them.
    tiles: Tiles,
    /// Its tiles as bytes, to be decoded when a row uses them.
    encoded: Option<Encoded>,
    /// Whether this session changed its tiles.
    dirty: bool,
    /// The last row of the prefetch that uses it ([`NO_SLOT`]: unknown,
    /// kept decoded to the end).
    last_row: u32,
    /// The partition its key carries, for a damaged value's report.
    partition: i32,
    /// Where the value its tiles were decoded from lies in
    /// [`Session::read`], and its tiles' offsets in [`Session::offsets`]:
    /// encoded again, the unchanged tiles' bytes are copied from it.
    decoded_from: Option<DecodedFrom>,
}

/// Where a value lies in [`Session::read`], and its tiles' offsets in
/// [`Session::offsets`].
type DecodedFrom = (std::ops::Range<usize>, std::ops::Range<usize>);

enum Encoded {
    /// As read from the state, at this range of [`Session::read`].
    Read(std::ops::Range<usize>),
    /// Changed, and encoded again after the last row that uses it (`None`:
    /// no tiles left, the key is deleted).
    Written(Option<Vec<u8>>),
}

impl Slot {
    fn new(tiles: Tiles, partition: i32) -> Self {
        Self {
            tiles,
            encoded: None,
            dirty: false,
            last_row: NO_SLOT,
            partition,
            decoded_from: None,
        }
    }
}

pub(super) struct Session<'w> {
    windows: &'w Windows,
    /// Where keys not yet touched are read from; none starts empty.
    state: Option<&'w Checkpoint>,
    /// Per state key touched, its place in `slots`: each key is allocated
    /// once a session, and looked up through `key` after that.
    loaded: FxHashMap<Vec<u8>, usize>,
    /// The tiles of each key touched.
    slots: Vec<Slot>,
    /// The bytes of the values the prefetch read, one after another
    /// ([`Encoded::Read`]).
    read: Vec<u8>,
    /// Where the tiles of each value decoded from `read` start in it
    /// ([`Slot::decoded_from`]).
    offsets: Vec<u32>,
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
            read: Vec::new(),
            offsets: Vec::new(),
            row_slots: Vec::new(),
            series_at: Vec::new(),
            key: Vec::new(),
            watermarks: HashMap::new(),
            late: 0,
            summaries: vec![Summary::default(); windows.planned.len()],
            by_length: Vec::new(),
        }
    }

    /// Reads the values of every key the rows of `columns` touch, in one
    /// read of the store, so that the per-row pass finds them in memory
    /// and their slots by row, and notes each key's last row. Once a
    /// session.
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
                            self.slots.push(Slot::new(Tiles::default(), partition));
                            slot
                        }
                    };
                    self.row_slots[place] = slot as u32;
                    self.slots[slot].last_row = row as u32;
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
        // Room for a few hundred bytes a key (a card's month of hour tiles
        // at a few events a day), so that the bytes are seldom moved as
        // they grow.
        self.read.reserve(keys.len() * 256);
        let (slots, read) = (&mut self.slots, &mut self.read);
        state.read_many(Family::Windows, &keys, |i, value| {
            if let Some(bytes) = value {
                read.extend_from_slice(bytes);
                let range = read.len() - bytes.len()..read.len();
                slots[wanted[i].1].encoded = Some(Encoded::Read(range));
            }
        })
    }

    /// The tiles of `slot`, decoded if not yet, and whether they changed.
    fn open(&mut self, slot: usize) -> (&mut Tiles, &mut bool) {
        let slot = &mut self.slots[slot];
        match slot.encoded.take() {
            Some(Encoded::Read(range)) => {
                let first = self.offsets.len();
                slot.tiles = stored_tiles(
                    slot.partition,
                    Some(&self.read[range.clone()]),
                    Some(&mut self.offsets),
                );
                slot.decoded_from = Some((range, first..self.offsets.len()));
            }
            Some(Encoded::Written(bytes)) => {
                slot.tiles = stored_tiles(slot.partition, bytes.as_deref(), None);
                slot.decoded_from = None;
            }
            None => {}
        }
        (&mut slot.tiles, &mut slot.dirty)
    }

    /// After row `row`'s use of `slot` (opened by it): a changed key the
    /// prefetch saw no later row use is encoded now, while its tiles are in
    /// the cache.
    fn done_with(&mut self, slot: usize, row: usize) {
        let slot = &mut self.slots[slot];
        if slot.dirty && slot.last_row == row as u32 {
            let tiles = std::mem::take(&mut slot.tiles);
            let value = encoded(&tiles, slot.decoded_from.take(), &self.read, &self.offsets);
            slot.encoded = Some(Encoded::Written(value));
        }
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
        self.slots.push(Slot::new(
            stored_tiles(partition, stored.as_deref(), None),
            partition,
        ));
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
            let (tiles, dirty) = self.open(slot);
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
            self.done_with(slot, row);
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
            let (tiles, _) = self.open(slot);
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
            let (tiles, dirty) = self.open(slot);
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
            self.done_with(slot, row);
        }
        Ok(())
    }

    fn seen(&mut self, partition: i32, time: i64) {
        let newest = self.watermarks.entry(partition).or_insert(time);
        *newest = (*newest).max(time);
    }

    pub(super) fn finish(mut self, out: Vec<Vec<Option<f64>>>) -> WindowOutput {
        self.windows.expiry.advance(&self.watermarks);
        let (slots, read, offsets) = (&mut self.slots, &self.read, &self.offsets);
        let mut changes: Vec<Change> = self
            .loaded
            .into_iter()
            .filter_map(|(key, slot)| {
                let slot = &mut slots[slot];
                if !slot.dirty {
                    return None;
                }
                let value = match slot.encoded.take() {
                    Some(Encoded::Written(bytes)) => bytes,
                    // Changed, so decoded: `open` took these bytes.
                    Some(Encoded::Read(_)) | None => {
                        encoded(&slot.tiles, slot.decoded_from.take(), read, offsets)
                    }
                };
                Some(Change {
                    family: Family::Windows,
                    key,
                    value,
                })
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
fn stored_tiles(partition: i32, stored: Option<&[u8]>, offsets: Option<&mut Vec<u32>>) -> Tiles {
    let Some(bytes) = stored else {
        return Tiles::default();
    };
    Tiles::decode_noting(bytes, offsets).unwrap_or_else(|reason| {
        crate::state::quarantined(Family::Windows, Some(partition), &reason);
        Tiles::default()
    })
}

/// A key's value for its tiles: none once it has none. `decoded_from`:
/// where in `read` the value they were decoded from lies, and where in
/// `offsets` its tiles' offsets.
fn encoded(
    tiles: &Tiles,
    decoded_from: Option<DecodedFrom>,
    read: &[u8],
    offsets: &[u32],
) -> Option<Vec<u8>> {
    if tiles.is_empty() {
        return None;
    }
    Some(match decoded_from {
        Some((value, tiles_at)) => tiles.encode_after(&read[value], &offsets[tiles_at]),
        None => tiles.encode(),
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
