//! Counting a batch for drift: its scored rows grouped by event-time
//! window and partition, and each monitored column counted into its
//! groups (bins for numbers and the score, values for categories, the
//! reliability curve's bins, the decisions). Pure: what is stored and
//! judged is `monitor.rs`'s.

use std::borrow::Cow;
use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use rustc_hash::FxHashMap;

use super::performance::{PERFORMANCE, PerformanceReference};
use super::reference::References;
use super::stats::{Reference, WindowCounts};
use super::store::Progress;
use super::window::{ColumnCounts, NULL, bound_unseen, category, numeric_reference};
use super::{DECISION, SCORE};

/// One scored row, as the monitor sees it.
#[derive(Debug, Clone, Copy)]
pub struct ScoredRow {
    /// Its row in the model's input features.
    pub feature_row: usize,
    /// Its row in the decoded input (event time, categorical columns).
    pub decoded_row: usize,
    pub partition: i32,
    pub score: f64,
    pub flagged: bool,
}

/// A batch's scored rows and where their values are.
pub struct Observation<'a> {
    pub model: &'a str,
    pub version: &'a str,
    /// The champion's manifest `reference`.
    pub reference: Option<&'a serde_json::Value>,
    pub features: &'a RecordBatch,
    pub decoded: &'a RecordBatch,
    pub rows: &'a [ScoredRow],
}

/// A batch's scored rows by (window, partition) group.
pub(super) struct Grouped<'a> {
    pub(super) groups: Vec<(i64, i32)>,
    /// Each row with its group's index.
    pub(super) rows: Vec<(usize, &'a ScoredRow)>,
    pub(super) first_window: Option<i64>,
}

impl<'a> Grouped<'a> {
    /// Each scored row's (window, partition) group, found once per row (a
    /// batch spans a window or two, so there are few groups); the rows'
    /// event times move the partitions' `progress`, and the first sets
    /// `first_seen`.
    pub(super) fn of(
        batch: &'a Observation,
        columns: &Columns,
        window_ms: i64,
        progress: &mut Progress,
        first_seen: &mut Option<i64>,
    ) -> Self {
        let mut groups: Vec<(i64, i32)> = Vec::new();
        let mut group_of: FxHashMap<(i64, i32), usize> = FxHashMap::default();
        let mut rows: Vec<(usize, &ScoredRow)> = Vec::with_capacity(batch.rows.len());
        let mut first_window = None;
        for row in batch.rows {
            let Some(time) = columns.time(row.decoded_row) else {
                continue;
            };
            let window = time.div_euclid(window_ms) * window_ms;
            progress.saw(row.partition, time);
            first_seen.get_or_insert(time);
            first_window = Some(first_window.map_or(window, |f: i64| f.min(window)));
            let group = *group_of.entry((window, row.partition)).or_insert_with(|| {
                groups.push((window, row.partition));
                groups.len() - 1
            });
            rows.push((group, row));
        }
        Grouped {
            groups,
            rows,
            first_window,
        }
    }
}

/// Each column counted over the rows into its groups' counts: the numeric
/// features and the score into their bins, categories by value, and the
/// decisions.
pub(super) fn count_columns<'r>(
    columns: &Columns<'r>,
    grouped: &Grouped,
) -> Vec<((i64, i32, &'r str), ColumnCounts)> {
    let (groups, rows) = (&grouped.groups, &grouped.rows);
    let mut deltas: Vec<((i64, i32, &str), ColumnCounts)> = Vec::new();
    let mut emit = |name, per_group: Vec<ColumnCounts>| {
        for (g, counts) in per_group.into_iter().enumerate() {
            if counts.events() > 0 {
                deltas.push(((groups[g].0, groups[g].1, name), counts));
            }
        }
    };
    for (name, reference, values) in &columns.numeric {
        let mut per_group = vec![WindowCounts::new(reference.edges.len() - 1); groups.len()];
        for &(group, row) in rows.iter() {
            let value = match values {
                None => Some(row.score),
                Some(v) => v
                    .is_valid(row.feature_row)
                    .then(|| v.value(row.feature_row)),
            };
            per_group[group].count(value, reference);
        }
        emit(
            name,
            per_group.into_iter().map(ColumnCounts::Numeric).collect(),
        );
    }
    for (name, categories, values) in &columns.categorical {
        let mut per_group: Vec<BTreeMap<Cow<str>, u64>> = vec![BTreeMap::new(); groups.len()];
        for &(group, row) in rows.iter() {
            let value = if values.is_valid(row.decoded_row) {
                category(values.value(row.decoded_row), categories)
            } else {
                Cow::Borrowed(NULL)
            };
            *per_group[group].entry(value).or_default() += 1;
        }
        let counts = per_group
            .into_iter()
            .map(|counts| {
                let mut counts = counts
                    .into_iter()
                    .map(|(v, n)| (v.into_owned(), n))
                    .collect();
                bound_unseen(&mut counts);
                ColumnCounts::Categorical { counts }
            })
            .collect();
        emit(name, counts);
    }
    if let Some(reference) = columns.performance {
        let empty = vec![0u64; reference.bins()];
        let mut per_group = vec![(empty.clone(), empty); groups.len()];
        for &(group, row) in rows.iter() {
            let bin = reference.bin(row.score);
            per_group[group].0[bin] += 1;
            per_group[group].1[bin] += u64::from(row.flagged);
        }
        emit(
            PERFORMANCE,
            per_group
                .into_iter()
                .map(|(scored, flagged)| ColumnCounts::Scores { scored, flagged })
                .collect(),
        );
    }
    let mut decisions = vec![(0u64, 0u64); groups.len()];
    for &(group, row) in rows.iter() {
        decisions[group].0 += u64::from(row.flagged);
        decisions[group].1 += 1;
    }
    emit(
        DECISION,
        decisions
            .into_iter()
            .map(|(flagged, scored)| ColumnCounts::Flags { flagged, scored })
            .collect(),
    );
    deltas
}

/// A batch's columns as the monitor reads them, cast once.
pub(super) struct Columns<'r> {
    times: Option<arrow::array::PrimitiveArray<TimestampMillisecondType>>,
    /// Per numeric column: its name, reference and values (none for the
    /// score, read from the rows).
    numeric: Vec<(&'r str, &'r Reference, Option<arrow::array::Float64Array>)>,
    /// Per categorical column: its name, the reference's categories, and
    /// its values.
    categorical: Vec<(
        &'r str,
        &'r BTreeMap<String, f64>,
        arrow::array::StringArray,
    )>,
    /// The reliability curve's bins the scores are counted on.
    performance: Option<&'r PerformanceReference>,
}

impl<'r> Columns<'r> {
    pub(super) fn of(batch: &Observation, references: &'r References, event_time: &str) -> Self {
        let mut numeric = Vec::new();
        for (name, reference) in &references.features {
            let values = batch
                .features
                .column_by_name(name)
                .and_then(|c| cast(c, &DataType::Float64).ok())
                .map(|c| c.as_primitive::<Float64Type>().clone());
            numeric.push((name.as_str(), reference, values));
        }
        if let Some(reference) = numeric_reference(SCORE, references) {
            numeric.push((SCORE, reference, None));
        }
        let categorical = references
            .categories
            .iter()
            .filter_map(|(name, categories)| {
                let column = batch.decoded.column_by_name(name)?;
                let text = cast(column, &DataType::Utf8).ok()?;
                Some((name.as_str(), categories, text.as_string::<i32>().clone()))
            })
            .collect();
        let times = batch
            .decoded
            .column_by_name(event_time)
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>().cloned());
        Self {
            times,
            numeric,
            categorical,
            performance: references.performance.as_ref(),
        }
    }

    pub(super) fn time(&self, row: usize) -> Option<i64> {
        let times = self.times.as_ref()?;
        times.is_valid(row).then(|| times.value(row))
    }
}
