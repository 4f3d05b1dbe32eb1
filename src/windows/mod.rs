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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Schema, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::state::{Change, Checkpoint, Expiry, Family, StateError};

mod tiles;

use tiles::{Summary, Tiles};

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
    fn of(self, s: &Summary) -> Option<f64> {
        match self {
            Aggregate::Count => Some(s.events as f64),
            Aggregate::Sum => Some(s.sum),
            Aggregate::Mean => (s.values > 0).then(|| s.sum / s.values as f64),
            Aggregate::Min => (s.values > 0).then_some(s.min),
            Aggregate::Max => (s.values > 0).then_some(s.max),
        }
    }
}

/// One declared window feature.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowFeature {
    /// The column the SQL sees.
    pub name: String,
    /// The column whose value keys the window (card, terminal, ...).
    pub key: String,
    /// The column aggregated; none for `count`.
    pub column: Option<String>,
    pub aggregate: Aggregate,
    pub window_ms: i64,
    /// Whether the current event counts in its own window.
    pub include_current: bool,
}

/// The window features of a pipeline and how their state is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    /// The timestamp column giving each event's time.
    pub event_time: String,
    pub tile_ms: i64,
    pub features: Vec<WindowFeature>,
}

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("window features: {0}")]
    Input(String),
}

/// Events that share a key column and an aggregated column share one tile
/// series, so each event reads and writes each key once.
#[derive(Debug, Clone)]
struct Series {
    /// Stable across restarts and edits of other features: a hash of the
    /// key and value column names.
    id: [u8; 8],
    key: String,
    column: Option<String>,
    /// The longest window of its features, in tiles.
    retention_tiles: i64,
}

#[derive(Debug, Clone)]
struct Planned {
    series: usize,
    tiles: i64,
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
}

/// What one batch did to the window state.
#[derive(Debug, Default)]
pub struct WindowOutput {
    /// One Float64 column per feature, in the batch's row order.
    pub columns: Vec<ArrayRef>,
    pub changes: Vec<Change>,
    /// Events older than their key's retained history.
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
                    s.key == feature.key && (feature.column.is_none() || s.column == feature.column)
                })
                .unwrap_or_else(|| {
                    series.push(Series {
                        id: series_id(&feature.key, feature.column.as_deref()),
                        key: feature.key.clone(),
                        column: feature.column.clone(),
                        retention_tiles: 0,
                    });
                    series.len() - 1
                });
            let tiles = feature.window_ms / spec.tile_ms;
            series[at].retention_tiles = series[at].retention_tiles.max(tiles);
            by_feature.insert(feature.name.clone(), at);
        }
        for feature in &spec.features {
            planned.push(Planned {
                series: by_feature[&feature.name],
                tiles: feature.window_ms / spec.tile_ms,
                aggregate: feature.aggregate,
                include_current: feature.include_current,
            });
        }
        let expiry = Arc::new(WindowExpiry {
            retention: series.iter().map(|s| (s.id, s.retention_tiles)).collect(),
            watermarks: RwLock::default(),
        });
        Self {
            spec,
            series,
            planned,
            expiry,
        }
    }

    pub fn spec(&self) -> &WindowSpec {
        &self.spec
    }

    /// The compaction filter's view: which stored keys no event can need.
    pub fn expiry(&self) -> Arc<dyn Expiry> {
        self.expiry.clone()
    }

    /// The columns the features add to the table the SQL reads.
    pub fn fields(&self) -> Vec<arrow::datatypes::Field> {
        self.spec
            .features
            .iter()
            .map(|f| arrow::datatypes::Field::new(&f.name, DataType::Float64, true))
            .collect()
    }

    /// The input table plus the feature columns.
    pub fn extend_schema(&self, schema: &Schema) -> Arc<Schema> {
        let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(self.fields());
        Arc::new(Schema::new(fields))
    }

    /// Computes every feature of the rows of `decoded` and the state
    /// changes that fold them in. Rows are folded in `order` (the stream's
    /// order, or event time in training); `partitions[row]` is each row's
    /// input partition, which every state key carries.
    pub fn compute(
        &self,
        decoded: &RecordBatch,
        partitions: &[i32],
        order: &[usize],
        state: &Checkpoint,
    ) -> Result<WindowOutput, WindowError> {
        let column = |name: &str| {
            decoded
                .column_by_name(name)
                .ok_or_else(|| WindowError::Input(format!("the batch has no column `{name}`")))
        };
        let cast_to = |name: &str, to: &DataType| {
            cast(column(name)?, to).map_err(|e| {
                WindowError::Input(format!("column `{name}` does not cast to {to}: {e}"))
            })
        };
        let times = column(&self.spec.event_time)?;
        let times = times
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| {
                WindowError::Input(format!(
                    "`{}` is not a millisecond timestamp",
                    self.spec.event_time
                ))
            })?;
        let keys = self
            .series
            .iter()
            .map(|s| cast_to(&s.key, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        let values = self
            .series
            .iter()
            .map(|s| {
                s.column
                    .as_deref()
                    .map(|c| cast_to(c, &DataType::Float64))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;

        let rows = decoded.num_rows();
        let mut out: Vec<Vec<Option<f64>>> = vec![vec![None; rows]; self.planned.len()];
        let mut loaded: HashMap<Vec<u8>, (Tiles, bool)> = HashMap::new();
        let mut late = 0;
        let mut watermarks: HashMap<i32, i64> = HashMap::new();
        for &row in order {
            if times.is_null(row) {
                continue;
            }
            let bucket = times.value(row).div_euclid(self.spec.tile_ms);
            let partition = partitions[row];
            let newest_seen = watermarks.entry(partition).or_insert(bucket);
            *newest_seen = (*newest_seen).max(bucket);
            for (s, series) in self.series.iter().enumerate() {
                let key_column = keys[s].as_string::<i32>();
                if key_column.is_null(row) {
                    continue;
                }
                let value = values[s].as_ref().and_then(|v| {
                    let v = v.as_primitive::<Float64Type>();
                    v.is_valid(row).then(|| v.value(row))
                });
                let key = state_key(partition, &series.id, key_column.value(row));
                let (tiles, dirty) = match loaded.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let tiles = match state.get(Family::Windows, e.key())? {
                            Some(bytes) => {
                                Tiles::decode(&bytes).map_err(|message| StateError::Damaged {
                                    family: Family::Windows.name(),
                                    message,
                                })?
                            }
                            None => Tiles::default(),
                        };
                        e.insert((tiles, false))
                    }
                };
                let is_late = tiles
                    .newest()
                    .is_some_and(|newest| bucket <= newest - series.retention_tiles);
                for (f, planned) in self.planned.iter().enumerate() {
                    if planned.series != s {
                        continue;
                    }
                    let mut summary = tiles.summary(bucket - planned.tiles + 1, bucket);
                    if planned.include_current {
                        summary.add(value);
                    }
                    out[f][row] = planned.aggregate.of(&summary);
                }
                if is_late {
                    late += 1;
                    continue;
                }
                tiles.add(bucket, value);
                if let Some(newest) = tiles.newest() {
                    tiles.expire(newest - series.retention_tiles + 1);
                }
                *dirty = true;
            }
        }
        self.expiry.advance(&watermarks);
        let changes = loaded
            .into_iter()
            .filter(|(_, (_, dirty))| *dirty)
            .map(|(key, (tiles, _))| Change {
                family: Family::Windows,
                key,
                value: (!tiles.is_empty()).then(|| tiles.encode()),
            })
            .collect();
        Ok(WindowOutput {
            columns: out
                .into_iter()
                .map(|values| Arc::new(Float64Array::from(values)) as ArrayRef)
                .collect(),
            changes,
            late,
        })
    }
}

fn series_id(key: &str, column: Option<&str>) -> [u8; 8] {
    let mut hash = Sha256::new();
    hash.update(key.as_bytes());
    hash.update([0]);
    hash.update(column.unwrap_or("").as_bytes());
    let digest = hash.finalize();
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// Input partition, series, key value: a partition's state is one key
/// range, so it can follow its partition to another instance.
fn state_key(partition: i32, series: &[u8; 8], value: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(12 + value.len());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(series);
    key.extend_from_slice(value.as_bytes());
    key
}

/// Per input partition, the newest tile seen; a stored key whose newest
/// tile is a whole retention behind it can serve no in-order event again.
#[derive(Debug)]
struct WindowExpiry {
    retention: HashMap<[u8; 8], i64>,
    watermarks: RwLock<HashMap<i32, i64>>,
}

impl WindowExpiry {
    fn advance(&self, seen: &HashMap<i32, i64>) {
        let mut watermarks = self
            .watermarks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (&partition, &bucket) in seen {
            let w = watermarks.entry(partition).or_insert(bucket);
            *w = (*w).max(bucket);
        }
    }
}

impl Expiry for WindowExpiry {
    fn expired(&self, key: &[u8], value: &[u8]) -> bool {
        let (Some(partition), Some(series)) = (key.get(..4), key.get(4..12)) else {
            return false;
        };
        let partition = i32::from_be_bytes(partition.try_into().unwrap_or_default());
        let series: [u8; 8] = series.try_into().unwrap_or_default();
        // A series no longer declared keeps its state: the feature may come
        // back, and its keys are few compared with the live ones.
        let Some(retention) = self.retention.get(&series) else {
            return false;
        };
        let Some(newest) = Tiles::newest_encoded(value) else {
            return false;
        };
        let watermarks = self
            .watermarks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watermarks
            .get(&partition)
            .is_some_and(|&watermark| newest <= watermark - retention)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, TimeUnit};

    use super::*;
    use crate::state::MemoryStore;

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
            window_ms: hours * HOUR,
            include_current: true,
        }
    }

    fn windows() -> Windows {
        Windows::new(WindowSpec {
            event_time: "time".into(),
            tile_ms: HOUR,
            features: vec![
                feature("count_24h", None, Aggregate::Count, 24),
                feature("mean_24h", Some("amount"), Aggregate::Mean, 24),
                feature("max_2h", Some("amount"), Aggregate::Max, 2),
                WindowFeature {
                    include_current: false,
                    ..feature("sum_before_24h", Some("amount"), Aggregate::Sum, 24)
                },
            ],
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
        let out = windows.compute(&first, &[0; 3], &[0, 1, 2], &checkpoint)?;
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
        let out = windows.compute(&second, &[0], &[0], &checkpoint)?;
        assert_eq!(column(&out, 0), [Some(2.0)]);
        assert_eq!(column(&out, 1), [Some(17.5)]);
        // Another partition's card `a` is another key.
        let out = windows.compute(&second, &[1], &[0], &checkpoint)?;
        assert_eq!(column(&out, 0), [Some(1.0)]);
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
        let out = windows.compute(&rows, &[0; 3], &[0, 1, 2], &checkpoint)?;
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
        let out = windows.compute(&batch(&[("old", 0, 1.0)]), &[0], &[0], &checkpoint)?;
        let (key, value) = (
            &out.changes[0].key,
            out.changes[0].value.clone().unwrap_or_default(),
        );
        let expiry = windows.expiry();
        assert!(!expiry.expired(key, &value));
        windows.compute(&batch(&[("new", 24 * HOUR, 1.0)]), &[1], &[0], &checkpoint)?;
        assert!(
            !expiry.expired(key, &value),
            "another partition's time does not expire it"
        );
        windows.compute(&batch(&[("new", 24 * HOUR, 1.0)]), &[0], &[0], &checkpoint)?;
        assert!(expiry.expired(key, &value));
        Ok(())
    }
}
