//! Judging: a closed window's counts against the reference (gauges,
//! hysteresis, alerts), and the score's change detection, for the monitor
//! that counted them (`mod.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMillisecondType;

use super::{DriftMonitor, Observed, VersionState, monitored, spread};
use crate::drift::alerts::{Alert, Level};
use crate::drift::change::{ChangeSettings, Direction, PAGE_HINKLEY, PageHinkley};
use crate::drift::counting::Observation;
use crate::drift::store::{
    self, alert_key, change_alert_key, change_key, counts_key, hysteresis_key,
};
use crate::drift::window::ColumnCounts;
use crate::drift::{DECISION, SCORE};
use crate::state::{Change, Checkpoint, Family, StateError};
use crate::telemetry::events::{DriftAlert, DriftMeasured, DriftWindowJudged, Event};

impl DriftMonitor {
    /// Steps each partition's Page-Hinkley test over the batch's scores, in
    /// the partition's order (`change.rs`), and stages the tests. An alarm
    /// is an alert on `score`, metric `page_hinkley`: its value is how far
    /// the cumulative deviation moved, in reference standard deviations,
    /// negative for a fall, and its window the alarming event's time.
    pub(super) fn detect_changes(
        &self,
        checkpoint: &Checkpoint,
        batch: &Observation,
        state: &VersionState,
        settings: &ChangeSettings,
        observed: &mut Observed,
    ) -> Result<(), StateError> {
        let Some(reference) = state.references.score.as_ref() else {
            return Ok(());
        };
        // A reference of one repeated score has no spread; any move is one.
        let std = reference.std.max(1e-6);
        let partitions: BTreeSet<i32> = batch.rows.iter().map(|r| r.partition).collect();
        let keys: Vec<Vec<u8>> = partitions
            .iter()
            .map(|&p| change_key(batch.version, p))
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let mut tests: BTreeMap<i32, PageHinkley> = BTreeMap::new();
        for ((&partition, key), stored) in partitions
            .iter()
            .zip(&keys)
            .zip(checkpoint.get_many(Family::Drift, &refs)?)
        {
            // A stored test that does not read, or holds numbers no step
            // can use, starts over (a value that does not read is
            // quarantined by `decode`).
            let test = stored
                .and_then(|bytes| store::decode::<PageHinkley>(key, &bytes))
                .filter(PageHinkley::usable)
                .unwrap_or_default();
            tests.insert(partition, test);
        }
        let times = batch
            .decoded
            .column_by_name(&self.settings.event_time)
            .and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>());
        for row in batch.rows {
            let test = tests.get_mut(&row.partition).expect("one per partition");
            let Some(alarm) = test.step((row.score - reference.mean) / std, settings) else {
                continue;
            };
            let at = times
                .filter(|t| t.is_valid(row.decoded_row))
                .map_or(0, |t| t.value(row.decoded_row));
            let moved = match alarm.direction {
                Direction::Up => alarm.moved,
                Direction::Down => -alarm.moved,
            };
            let alert = self.alert(
                batch,
                SCORE,
                PAGE_HINKLEY,
                moved,
                Some(settings.threshold),
                Level::Detected,
                (at, at),
                &[row.partition],
            );
            observed.changes.push(Change {
                family: Family::Drift,
                key: change_alert_key(at, batch.version, row.partition),
                value: Some(store::encode(&alert)),
            });
            observed.alerts.push(alert);
        }
        for (key, test) in keys.into_iter().zip(tests.values()) {
            observed.changes.push(Change {
                family: Family::Drift,
                key,
                value: Some(store::encode(test)),
            });
        }
        Ok(())
    }

    /// Judges every window whose end is a `lateness` behind the event time
    /// every (active) partition has reached, oldest first.
    pub(super) fn judge_closed(
        &self,
        checkpoint: &Checkpoint,
        batch: &Observation,
        state: &mut VersionState,
        updated: &HashMap<Vec<u8>, ColumnCounts>,
        observed: &mut Observed,
    ) -> Result<(), StateError> {
        let assigned = match self.topic_partitions.get() {
            Some(&partitions) => Some((0..partitions).collect()),
            None => self.assignment.get().and_then(|a| a.current()),
        };
        let (Some(mut next), Some(first_seen)) = (state.progress.next_window, state.first_seen)
        else {
            return Ok(());
        };
        let busy = self.busy_partitions();
        let Some(watermark) = state.progress.complete_until(
            self.settings.idle_ms,
            assigned.as_ref(),
            busy.as_ref(),
            first_seen,
        ) else {
            return Ok(());
        };
        let width = self.settings.window_ms;
        // After a long silence, windows past the retention are not judged
        // one by one: their counts are gone.
        let oldest = (watermark - self.settings.retention_ms).div_euclid(width) * width;
        next = next.max(oldest);
        while next + width + self.settings.lateness_ms <= watermark {
            self.judge(checkpoint, batch, state, updated, next, observed)?;
            next += width;
        }
        state.progress.next_window = Some(next);
        Ok(())
    }

    pub(super) fn judge(
        &self,
        checkpoint: &Checkpoint,
        batch: &Observation,
        state: &mut VersionState,
        updated: &HashMap<Vec<u8>, ColumnCounts>,
        window: i64,
        observed: &mut Observed,
    ) -> Result<(), StateError> {
        let references = Arc::clone(&state.references);
        let partitions = state.progress.partitions();
        let merged = |column: &str| {
            merged_counts(
                checkpoint,
                updated,
                window,
                batch.version,
                &partitions,
                column,
            )
        };
        let events = merged(DECISION)?.map_or(0, |c| c.events());
        if events < self.settings.min_events {
            // Too few events for the statistics to mean anything (PSI over
            // ten bins is about 9 / n by chance alone): counted, reported,
            // not judged.
            tracing::debug!(window, events, "drift window too small to judge");
            return Ok(());
        }
        for column in monitored(&references) {
            let Some(merged) = merged(column)? else {
                continue;
            };
            let sample = merged.sample_size();
            for (metric, value) in merged.measures(column, &references) {
                let chance = &mut state.chance;
                let mut by_chance = |p| chance.quantile(&references, column, metric, sample, p);
                let thresholds = match self.settings.thresholds.resolve(
                    column,
                    metric,
                    spread(&references, column, metric),
                    &mut by_chance,
                ) {
                    Ok(t) if t.suspected.is_some() || t.detected.is_some() => t,
                    // Checked at start for the first champion; a later
                    // version lacking chunk statistics is judged without it.
                    _ => continue,
                };
                let at = (column.to_owned(), metric.to_owned());
                let alert_state = state.hysteresis.entry(at).or_default();
                let moved = alert_state.step(
                    value,
                    &thresholds,
                    &self.settings.hysteresis,
                    window + self.settings.window_ms,
                );
                DriftMeasured {
                    feature: column,
                    metric,
                    value,
                    level: alert_state.level as u8,
                }
                .emit();
                observed.changes.push(Change {
                    family: Family::Drift,
                    key: hysteresis_key(batch.version, column, metric),
                    value: Some(store::encode(alert_state)),
                });
                let Some(level) = moved else {
                    continue;
                };
                let alert = self.alert(
                    batch,
                    column,
                    metric,
                    value,
                    thresholds.of(level),
                    level,
                    (window, window + self.settings.window_ms),
                    &partitions,
                );
                observed.changes.push(Change {
                    family: Family::Drift,
                    key: alert_key(window, batch.version, column, metric),
                    value: Some(store::encode(&alert)),
                });
                observed.alerts.push(alert);
            }
        }
        DriftWindowJudged {
            window_start_ms: window,
            events,
        }
        .emit();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn alert(
        &self,
        batch: &Observation,
        column: &str,
        metric: &str,
        value: f64,
        threshold: Option<f64>,
        level: Level,
        (start, end): (i64, i64),
        partitions: &[i32],
    ) -> Alert {
        let time = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        let alert = Alert {
            feature: column.to_owned(),
            metric: metric.to_owned(),
            value,
            threshold,
            level: level.name().to_owned(),
            window_start: time(start),
            window_end: time(end),
            model: batch.model.to_owned(),
            model_version: batch.version.to_owned(),
            instance: self.instance.clone(),
            partitions: partitions.to_vec(),
        };
        DriftAlert {
            feature: column,
            metric,
            value,
            threshold,
            level: level.name(),
            cleared: level == Level::Normal,
            window_start: &alert.window_start,
            model: batch.model,
            version: batch.version,
        }
        .emit();
        alert
    }
}

/// One column's counts in `window`, merged over `partitions`: this batch's
/// new values where it changed them, the checkpoint's otherwise.
fn merged_counts(
    checkpoint: &Checkpoint,
    updated: &HashMap<Vec<u8>, ColumnCounts>,
    window: i64,
    version: &str,
    partitions: &[i32],
    column: &str,
) -> Result<Option<ColumnCounts>, StateError> {
    let keys: Vec<Vec<u8>> = partitions
        .iter()
        .map(|&p| counts_key(window, version, p, column))
        .collect();
    let unread: Vec<&[u8]> = keys
        .iter()
        .filter(|k| !updated.contains_key(*k))
        .map(Vec::as_slice)
        .collect();
    let mut parts: Vec<ColumnCounts> = keys
        .iter()
        .filter_map(|k| updated.get(k).cloned())
        .collect();
    for (key, bytes) in unread
        .iter()
        .zip(checkpoint.get_many(Family::Drift, &unread)?)
    {
        parts.extend(bytes.and_then(|bytes| store::decode(key, &bytes)));
    }
    let mut parts = parts.into_iter();
    let Some(mut merged) = parts.next() else {
        return Ok(None);
    };
    for part in parts {
        merged.merge(&part);
    }
    Ok(Some(merged))
}
