//! Drift monitoring in the stream: each batch's scored rows are counted
//! into tumbling event-time windows (as deltas on the stored counts, staged
//! with the batch's other state, so that an event is counted once across
//! crashes and replays); each window, once the stream's event time is a
//! `lateness` past its end, is judged against the champion's reference:
//! gauges, hysteresis, alerts. Counting and the monitor's state are here;
//! judging, and the score's change detection, in `judge.rs`.

mod judge;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::DriftSettings;
use super::alerts::{Alert, AlertState};
use super::chance::{CHANCE_METRICS, ChanceThresholds};
use super::counting::{Columns, Grouped, count_columns};
pub use super::counting::{Observation, ScoredRow};
use super::performance::{PERFORMANCE, PERFORMANCE_METRICS};
use super::reference::References;
use super::store::{
    self, DriftExpiry, Progress, counts_key, hysteresis_prefix, parse_hysteresis_key, progress_key,
    references_key,
};
use super::window::ColumnCounts;
use super::{DECISION, SCORE};
use crate::batch::Assignment;
use crate::state::{Change, Checkpoint, Family, StateError};

/// What a batch gives: the state changes to stage with it, and the alerts
/// raised or cleared by the windows it closed.
#[derive(Debug, Default)]
pub struct Observed {
    pub changes: Vec<Change>,
    pub alerts: Vec<Alert>,
}

pub struct DriftMonitor {
    settings: DriftSettings,
    instance: String,
    /// The partitions this instance holds, when it reads Kafka.
    assignment: std::sync::OnceLock<Arc<Assignment>>,
    /// With state that follows its partitions: the input's partition
    /// count. Only the holder of partition 0 then judges, over every
    /// partition's counts and progress (copied in from the changelog), so
    /// the topic gets one judgement per window (ARCHITECTURE.md §2).
    topic_partitions: std::sync::OnceLock<i32>,
    expiry: Arc<DriftExpiry>,
    versions: Mutex<HashMap<String, VersionState>>,
    /// When each partition last gave this monitor a row (any version): a
    /// partition that did within [`RECENT`] is reading, not idle.
    active: Mutex<Activity>,
}

#[derive(Default)]
struct Activity {
    last_row: HashMap<i32, std::time::Instant>,
    /// When rows came again after a pause of [`RECENT`] or more: a backlog
    /// the consumer's statistics saw before then is out of date.
    resumed: Option<std::time::Instant>,
}

/// How recently a partition must have given a row to count as reading
/// (wall clock): a backlog the broker serves a partition at a time, and a
/// backlog produced since the consumer's last statistics (every second),
/// both show as rows within this.
const RECENT: std::time::Duration = std::time::Duration::from_secs(10);

/// The monitor of one model version: its reference, progress and alert
/// states.
struct VersionState {
    references: Arc<References>,
    /// The first event time this process saw for the version.
    first_seen: Option<i64>,
    progress: Progress,
    hysteresis: BTreeMap<(String, String), AlertState>,
    /// `p_value` thresholds by window size, simulated once per size.
    chance: ChanceThresholds,
    /// Whether this instance judged when the state was loaded: taking
    /// over (or handing on) the judging reloads the judge's state.
    judge: bool,
}

impl DriftMonitor {
    pub fn new(settings: DriftSettings) -> Self {
        Self {
            expiry: Arc::new(DriftExpiry::new(settings.retention_ms)),
            settings,
            instance: crate::instance::instance_id(),
            assignment: std::sync::OnceLock::new(),
            topic_partitions: std::sync::OnceLock::new(),
            versions: Mutex::new(HashMap::new()),
            active: Mutex::new(Activity::default()),
        }
    }

    /// Judges windows over the whole topic of `partitions` partitions, on
    /// the holder of partition 0 only (with a changelog).
    pub fn judge_for_topic(&self, partitions: i32) {
        let _ = self.topic_partitions.set(partitions);
    }

    /// Whether this instance judges: always, unless the topic's judging
    /// belongs to the holder of partition 0 and that is another instance.
    fn judges(&self) -> bool {
        self.topic_partitions.get().is_none()
            || self
                .assignment
                .get()
                .and_then(|a| a.current())
                .is_some_and(|held| held.contains(&0))
    }

    /// Waits, before judging a window, for every partition `assignment`
    /// holds (not only those seen so far).
    pub fn follow(&self, assignment: Arc<Assignment>) {
        let _ = self.assignment.set(assignment);
    }

    /// What drops old windows at compaction.
    pub fn expiry(&self) -> Arc<DriftExpiry> {
        Arc::clone(&self.expiry)
    }

    /// Refuses a reference the settings cannot be applied to: thresholds
    /// for features the model lacks, or `sigmas` thresholds without the
    /// reference's chunk statistics.
    pub fn check(&self, reference: Option<&serde_json::Value>) -> Result<(), String> {
        let references = match reference {
            Some(value) => References::of(value)?,
            None => {
                return Err(
                    "the model bundle has no reference distributions; train it here, \
                     or import it with `models import --reference FILE`"
                        .into(),
                );
            }
        };
        for feature in self.settings.thresholds.features.keys() {
            if !monitored(&references).any(|c| c == feature) {
                return Err(format!(
                    "`drift.features.{feature}` names no monitored column of the model \
                     (its features, `{SCORE}`, `{DECISION}`, `{PERFORMANCE}` when it has a \
                     reliability curve, or a categorical input)"
                ));
            }
        }
        if references.performance.is_none()
            && let Some(metric) = self.settings.thresholds.names_any(&PERFORMANCE_METRICS)
        {
            return Err(format!(
                "`{metric}` has a threshold, but the model's reference has no reliability \
                 curve to estimate performance from: train the bundle here, with its labels"
            ));
        }
        for column in monitored(&references) {
            for metric in super::alerts::threshold_metrics() {
                // Whether a `p_value` applies is known before any window is.
                let mut applies = |_| CHANCE_METRICS.contains(&metric).then_some(0.0);
                self.settings.thresholds.resolve(
                    column,
                    metric,
                    spread(&references, column, metric),
                    &mut applies,
                )?;
            }
        }
        Ok(())
    }

    /// Counts a batch into its windows and judges the windows it closes.
    pub fn observe(
        &self,
        checkpoint: &Checkpoint,
        batch: &Observation,
    ) -> Result<Observed, StateError> {
        let mut versions = self
            .versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut observed = Observed::default();
        let judge = self.judges();
        if versions
            .get(batch.version)
            .is_some_and(|v| v.judge != judge)
        {
            versions.remove(batch.version);
        }
        if !versions.contains_key(batch.version) {
            let state = self.load(checkpoint, batch)?;
            // Stored (again) once per process and version, so that the
            // report reads the store alone.
            observed.changes.push(Change {
                family: Family::Drift,
                key: references_key(batch.version),
                value: Some(store::encode(state.references.as_ref())),
            });
            versions.insert(batch.version.to_owned(), state);
        }
        let state = versions.get_mut(batch.version).expect("loaded just above");
        {
            let mut active = self
                .active
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            let paused = active
                .last_row
                .values()
                .max()
                .is_none_or(|last| now - *last >= RECENT);
            if paused && !batch.rows.is_empty() {
                active.resumed = Some(now);
            }
            for row in batch.rows {
                active.last_row.insert(row.partition, now);
            }
        }
        let updated = self.count(checkpoint, batch, state, &mut observed)?;
        if let Some(settings) = self.settings.change {
            self.detect_changes(checkpoint, batch, state, &settings, &mut observed)?;
        }
        if let Some(&partitions) = self.topic_partitions.get() {
            self.share_progress(checkpoint, batch.version, partitions, state, &mut observed)?;
        }
        if judge {
            self.judge_closed(checkpoint, batch, state, &updated, &mut observed)?;
            observed.changes.push(Change {
                family: Family::Drift,
                key: progress_key(batch.version),
                value: Some(store::encode(&state.progress)),
            });
        }
        Ok(observed)
    }

    /// Stages the newest event time of each partition this instance holds
    /// (under the partition, so that it follows it), and takes in the
    /// other partitions' from the store, where the changelog's copy puts
    /// them: the judge then waits for every partition of the topic.
    fn share_progress(
        &self,
        checkpoint: &Checkpoint,
        version: &str,
        partitions: i32,
        state: &mut VersionState,
        observed: &mut Observed,
    ) -> Result<(), StateError> {
        let held = self
            .assignment
            .get()
            .and_then(|a| a.current())
            .unwrap_or_default();
        let keys: Vec<Vec<u8>> = (0..partitions)
            .map(|p| store::watermark_key(version, p))
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let stored = checkpoint.get_many(Family::Drift, &refs)?;
        for ((partition, key), stored) in (0..partitions).zip(keys).zip(stored) {
            let stored = stored.and_then(|bytes| store::decode::<i64>(&key, &bytes));
            let mine = state.progress.watermarks.get(&partition).copied();
            match (held.contains(&partition), mine, stored) {
                (true, Some(mine), stored) if stored.is_none_or(|s| mine > s) => {
                    observed.changes.push(Change {
                        family: Family::Drift,
                        key,
                        value: Some(store::encode(&mine)),
                    });
                }
                (_, _, Some(stored)) => state.progress.saw(partition, stored),
                _ => {}
            }
        }
        Ok(())
    }

    fn load(
        &self,
        checkpoint: &Checkpoint,
        batch: &Observation,
    ) -> Result<VersionState, StateError> {
        // The first champion's references were checked at start; a version
        // swapped in later without readable ones still serves, monitored
        // on its decisions alone.
        let references = match batch.reference.map(References::of) {
            Some(Ok(references)) => references,
            problem => {
                let why = match problem {
                    Some(Err(e)) => e,
                    _ => "it has none".to_owned(),
                };
                tracing::warn!(
                    model = batch.model,
                    version = batch.version,
                    reason = %why,
                    "no reference distributions: only the model's decisions are monitored for drift"
                );
                References::default()
            }
        };
        let progress_key = progress_key(batch.version);
        let progress = checkpoint
            .get(Family::Drift, &progress_key)?
            .and_then(|bytes| store::decode::<Progress>(&progress_key, &bytes))
            .unwrap_or_default();
        let prefix = hysteresis_prefix(batch.version);
        let mut hysteresis = BTreeMap::new();
        for (key, value) in checkpoint.store().scan_prefix(Family::Drift, &prefix)? {
            if let (Some(at), Some(stored)) = (
                parse_hysteresis_key(&key, &prefix),
                store::decode(&key, &value),
            ) {
                hysteresis.insert(at, stored);
            }
        }
        if let Some(newest) = progress.newest() {
            self.expiry.advance(newest);
        }
        Ok(VersionState {
            first_seen: None,
            references: Arc::new(references),
            progress,
            hysteresis,
            chance: ChanceThresholds::default(),
            judge: self.judges(),
        })
    }

    /// Adds the batch's rows to the stored counts of their windows; returns
    /// the new values (merged with what was stored), which are also staged.
    fn count(
        &self,
        checkpoint: &Checkpoint,
        batch: &Observation,
        state: &mut VersionState,
        observed: &mut Observed,
    ) -> Result<HashMap<Vec<u8>, ColumnCounts>, StateError> {
        let references = Arc::clone(&state.references);
        let columns = Columns::of(batch, &references, &self.settings.event_time);
        let grouped = Grouped::of(
            batch,
            &columns,
            self.settings.window_ms,
            &mut state.progress,
            &mut state.first_seen,
        );
        let deltas = count_columns(&columns, &grouped);
        // The first batch of a version starts judging at its first window.
        if state.progress.next_window.is_none() {
            state.progress.next_window = grouped.first_window;
        }
        if let Some(newest) = state.progress.newest() {
            self.expiry.advance(newest);
        }
        self.merge_stored(checkpoint, batch.version, deltas, observed)
    }

    /// Merges each group's new counts into the stored ones, as changes to
    /// stage; returns the merged counts by key.
    fn merge_stored(
        &self,
        checkpoint: &Checkpoint,
        version: &str,
        deltas: Vec<((i64, i32, &str), ColumnCounts)>,
        observed: &mut Observed,
    ) -> Result<HashMap<Vec<u8>, ColumnCounts>, StateError> {
        let keys: Vec<Vec<u8>> = deltas
            .iter()
            .map(|((window, partition, column), _)| {
                counts_key(*window, version, *partition, column)
            })
            .collect();
        let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let stored = checkpoint.get_many(Family::Drift, &key_refs)?;
        let mut updated = HashMap::with_capacity(keys.len());
        for ((key, stored), (_, delta)) in keys.into_iter().zip(stored).zip(deltas) {
            let counts = match stored.and_then(|bytes| store::decode::<ColumnCounts>(&key, &bytes))
            {
                Some(mut counts) => {
                    counts.merge(&delta);
                    counts
                }
                None => delta,
            };
            observed.changes.push(Change {
                family: Family::Drift,
                key: key.clone(),
                value: Some(store::encode(&counts)),
            });
            updated.insert(key, counts);
        }
        Ok(updated)
    }

    /// This instance's partitions that are reading, not idle, however far
    /// behind their event time: those with records still to read (the
    /// consumer's statistics, every second), and those that gave a row
    /// within [`RECENT`]. `None` (any may be reading) before the first
    /// statistics, or when they predate rows that came after a pause (a
    /// backlog produced since: its first partition can run hours of event
    /// time ahead within a second). With the topic judged here, other
    /// instances' partitions are known by their event time alone. Without
    /// a consumer (tests, `train`), recent rows alone count.
    fn busy_partitions(&self) -> Option<BTreeSet<i32>> {
        let active = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut busy = match self.assignment.get() {
            Some(assignment) => {
                let (backlogged, seen_at) = assignment.backlogged()?;
                if active.resumed.is_some_and(|resumed| seen_at < resumed) {
                    return None;
                }
                backlogged
            }
            None => BTreeSet::new(),
        };
        busy.extend(
            active
                .last_row
                .iter()
                .filter(|(_, at)| at.elapsed() < RECENT)
                .map(|(&p, _)| p),
        );
        Some(busy)
    }
}

/// The columns monitored for a reference: the model's features, the score,
/// the decision, and the categorical inputs.
fn monitored(references: &References) -> impl Iterator<Item = &str> {
    references
        .features
        .keys()
        .map(String::as_str)
        .chain(references.score.as_ref().map(|_| SCORE))
        .chain(std::iter::once(DECISION))
        .chain(references.performance.as_ref().map(|_| PERFORMANCE))
        .chain(references.categories.keys().map(String::as_str))
}

/// A metric's mean and spread over the reference's own chunks.
fn spread(references: &References, column: &str, metric: &str) -> Option<(f64, f64)> {
    let s = references.chunks.get(column)?.get(metric)?;
    Some((s.mean, s.std))
}
