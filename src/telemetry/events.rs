//! The catalogue of what the engine tells an operator: one type per event,
//! whose [`Event::emit`] writes its log line and its metrics together, so a
//! log and its metric cannot drift apart and every metric has one place
//! that sets it. The rooms emit events; this file knows only plain values
//! (ARCHITECTURE.md §4: telemetry imports only shared types).

use std::fmt::Display;

use super::names;

/// Something worth a log line or a metric.
pub trait Event {
    fn emit(self);
}

// The stream's records.

/// Events older than their key's retained history: not folded.
pub struct LateEvents<'a> {
    pub topic: &'a str,
    pub count: u64,
}

impl Event for LateEvents<'_> {
    fn emit(self) {
        if self.count > 0 {
            metrics::counter!(names::LATE_EVENTS, "topic" => self.topic.to_owned())
                .increment(self.count);
        }
    }
}

/// Records read again below their partition's checkpointed offset: scored,
/// not folded again (ARCHITECTURE.md §2). `deepest` is the one furthest
/// below (partition, offset, checkpointed offset); `far` says it is a
/// rewind, not the tail a crash leaves.
pub struct RecordsAlreadyFolded<'a> {
    pub topic: &'a str,
    pub count: usize,
    pub deepest: Option<(i32, i64, i64)>,
    pub far: bool,
}

impl Event for RecordsAlreadyFolded<'_> {
    fn emit(self) {
        if self.count == 0 {
            return;
        }
        metrics::counter!(names::ALREADY_FOLDED, "topic" => self.topic.to_owned())
            .increment(self.count as u64);
        match self.deepest {
            Some((partition, offset, checkpoint)) if self.far => tracing::warn!(
                topic = %self.topic,
                partition,
                offset,
                checkpoint,
                "records far below the checkpointed offset: a rewind (or a recreated \
                 topic); they are scored, and not folded into the window state again"
            ),
            _ => tracing::info!(
                records = self.count,
                "records already folded into state before a restart: scored again, \
                 not folded again"
            ),
        }
    }
}

/// A batch's state and offsets written (ARCHITECTURE.md §2 step 3).
pub struct CheckpointWritten {
    pub seconds: f64,
}

impl Event for CheckpointWritten {
    fn emit(self) {
        metrics::histogram!(names::CHECKPOINT_SECONDS).record(self.seconds);
    }
}

/// A checkpoint's changes appended to the changelog.
pub struct ChangelogAppended {
    pub records: usize,
}

impl Event for ChangelogAppended {
    fn emit(self) {
        metrics::counter!(names::CHANGELOG_RECORDS).increment(self.records as u64);
    }
}

/// An assigned partition's state read back from the changelog before its
/// first record is scored (ARCHITECTURE.md §2).
pub struct PartitionRestored<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// The changelog offsets read: from the store's position to the end.
    pub from: i64,
    pub to: i64,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl Event for PartitionRestored<'_> {
    fn emit(self) {
        metrics::counter!(names::RESTORED_RECORDS).increment(self.records);
        metrics::histogram!(names::RESTORE_SECONDS).record(self.seconds);
        tracing::info!(
            changelog = self.topic,
            partition = self.partition,
            from = self.from,
            to = self.to,
            records = self.records,
            bytes = self.bytes,
            seconds = format!("{:.3}", self.seconds),
            "partition state restored"
        );
    }
}

/// An assignment's wait for the changelog mirror: every partition not
/// held copied to the end it had, before the first record is scored
/// (ARCHITECTURE.md §2).
pub struct MirrorCaughtUp<'a> {
    pub topic: &'a str,
    /// The partitions not held, whose logs the mirror copies.
    pub partitions: usize,
    /// How many records it had yet to copy when the wait began.
    pub records: i64,
    pub seconds: f64,
}

impl Event for MirrorCaughtUp<'_> {
    fn emit(self) {
        tracing::info!(
            changelog = self.topic,
            partitions = self.partitions,
            records = self.records,
            seconds = format!("{:.3}", self.seconds),
            "other partitions' state mirrored"
        );
    }
}

/// A stored value that does not read, dropped (ARCHITECTURE.md §3); `first`
/// when it is the first for its family and partition, which alone is said.
pub struct StateDamaged<'a> {
    pub family: &'static str,
    pub partition: Option<i32>,
    pub reason: &'a str,
    pub first: bool,
}

impl Event for StateDamaged<'_> {
    fn emit(self) {
        metrics::counter!(names::STATE_DAMAGED, "family" => self.family).increment(1);
        if self.first {
            tracing::warn!(
                family = self.family,
                partition = self.partition,
                reason = self.reason,
                "a stored state value does not read: it is dropped and its key starts afresh \
                 (counted in streamscore_state_damaged_total; said once per family and partition)"
            );
        }
    }
}

// Labels.

/// A labels batch folded: how many did not decode, and how many met their
/// kept score.
pub struct LabelsFolded<'a> {
    pub topic: &'a str,
    pub refused: usize,
    pub matched: u64,
    pub unmatched: u64,
}

impl Event for LabelsFolded<'_> {
    fn emit(self) {
        if self.refused > 0 {
            metrics::counter!(names::LABELS_REFUSED, "topic" => self.topic.to_owned())
                .increment(self.refused as u64);
        }
        metrics::counter!(names::LABELS_MATCHED).increment(self.matched);
        metrics::counter!(names::LABELS_UNMATCHED).increment(self.unmatched);
    }
}

/// One label skipped because it does not decode.
pub struct LabelSkipped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
}

impl Event for LabelSkipped<'_> {
    fn emit(self) {
        tracing::warn!(
            topic = %self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = %self.reason,
            "label skipped: it does not decode"
        );
    }
}

/// The newest labelled day's metrics, once its outcomes are checkpointed.
pub struct LabelDay {
    /// The day's start, seconds since the epoch.
    pub day_start_s: i64,
    pub labelled: u64,
    pub auc: Option<f64>,
    pub average_precision: Option<f64>,
    pub card_precision_at_100: Option<f64>,
}

impl Event for LabelDay {
    fn emit(self) {
        for (name, value) in [
            (names::LABELS_DAY_AUC, self.auc),
            (names::LABELS_DAY_AP, self.average_precision),
            (names::LABELS_DAY_CARD_PRECISION, self.card_precision_at_100),
        ] {
            metrics::gauge!(name).set(value.unwrap_or(f64::NAN));
        }
        metrics::gauge!(names::LABELS_DAY_LABELLED).set(self.labelled as f64);
        metrics::gauge!(names::LABELS_DAY).set(self.day_start_s as f64);
    }
}

// Models.

/// A bundle in a lineup, as the model-info gauge labels it.
pub struct ModelShown<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub role: &'static str,
}

/// The champion (and challenger) swapped: the old lineup's info gauges go
/// to 0, the new one's to 1.
pub struct ModelSwapped<'a> {
    pub previous: Vec<ModelShown<'a>>,
    pub current: Vec<ModelShown<'a>>,
}

impl Event for ModelSwapped<'_> {
    fn emit(self) {
        show_models(&self.previous, 0.0);
        show_models(&self.current, 1.0);
        metrics::counter!(names::MODEL_SWAPS).increment(1);
        let version = |models: &[ModelShown], role: &str| {
            models
                .iter()
                .find(|m| m.role == role)
                .map_or("none", |m| m.version)
                .to_owned()
        };
        tracing::info!(
            model = self.current.first().map_or("", |m| m.name),
            champion = %version(&self.current, "champion"),
            challenger = %version(&self.current, "challenger"),
            previous_champion = %version(&self.previous, "champion"),
            "model lineup swapped"
        );
    }
}

/// A model lineup shown for the first time (at start).
pub struct ModelServing<'a> {
    pub current: Vec<ModelShown<'a>>,
}

impl Event for ModelServing<'_> {
    fn emit(self) {
        show_models(&self.current, 1.0);
    }
}

/// The model-info gauge of each bundle set to `value` (1 serving, 0 not).
fn show_models(models: &[ModelShown], value: f64) {
    for m in models {
        metrics::gauge!(names::MODEL_INFO,
            "name" => m.name.to_owned(),
            "version" => m.version.to_owned(),
            "role" => m.role)
        .set(value);
    }
}

/// A model version refused; the current one keeps serving.
pub struct ModelRefused<'a> {
    pub reason: &'static str,
    pub error: &'a dyn Display,
}

impl Event for ModelRefused<'_> {
    fn emit(self) {
        tracing::error!(reason = self.reason, error = %self.error,
            "model version refused; the current version keeps serving");
        metrics::counter!(names::MODEL_REFUSALS, "reason" => self.reason).increment(1);
    }
}

/// The champion-challenger window now; `None` while there is nothing to
/// compare (the gauges then show a gap).
pub struct ChallengerCompared {
    pub champion_flag_rate: f64,
    pub challenger_flag_rate: f64,
    pub disagreement: f64,
    pub rank_correlation: Option<f64>,
}

impl Event for Option<ChallengerCompared> {
    fn emit(self) {
        let nan = f64::NAN;
        let (champion, challenger, disagreement, rank) = match self {
            Some(c) => (
                c.champion_flag_rate,
                c.challenger_flag_rate,
                c.disagreement,
                c.rank_correlation.unwrap_or(nan),
            ),
            None => (nan, nan, nan, nan),
        };
        metrics::gauge!(names::CHALLENGER_FLAG_RATE, "role" => "champion").set(champion);
        metrics::gauge!(names::CHALLENGER_FLAG_RATE, "role" => "challenger").set(challenger);
        metrics::gauge!(names::CHALLENGER_DISAGREEMENT).set(disagreement);
        metrics::gauge!(names::CHALLENGER_RANK_CORRELATION).set(rank);
    }
}

// Drift.

/// One measure of one column in a judged window, and the alert level it
/// leaves.
pub struct DriftMeasured<'a> {
    pub feature: &'a str,
    pub metric: &'static str,
    pub value: f64,
    pub level: u8,
}

impl Event for DriftMeasured<'_> {
    fn emit(self) {
        metrics::gauge!(names::DRIFT_VALUE, "feature" => self.feature.to_owned(), "metric" => self.metric)
            .set(self.value);
        metrics::gauge!(names::DRIFT_LEVEL, "feature" => self.feature.to_owned(), "metric" => self.metric)
            .set(f64::from(self.level));
    }
}

/// A window judged.
pub struct DriftWindowJudged {
    pub window_start_ms: i64,
    pub events: u64,
}

impl Event for DriftWindowJudged {
    fn emit(self) {
        // One line a window (a day in the example): the bench counts them.
        tracing::info!(
            window_start_ms = self.window_start_ms,
            events = self.events,
            "drift window judged"
        );
        metrics::gauge!(names::DRIFT_WINDOW).set(self.window_start_ms as f64 / 1000.0);
        metrics::gauge!(names::DRIFT_WINDOW_EVENTS).set(self.events as f64);
    }
}

/// An alert raised or cleared.
pub struct DriftAlert<'a> {
    pub feature: &'a str,
    pub metric: &'a str,
    pub value: f64,
    pub threshold: Option<f64>,
    pub level: &'static str,
    pub cleared: bool,
    pub window_start: &'a str,
    pub model: &'a str,
    pub version: &'a str,
}

impl Event for DriftAlert<'_> {
    fn emit(self) {
        tracing::warn!(
            feature = self.feature,
            metric = self.metric,
            value = self.value,
            threshold = ?self.threshold,
            level = self.level,
            window_start = %self.window_start,
            model = self.model,
            version = self.version,
            "drift {}",
            if self.cleared { "cleared" } else { "alert" }
        );
        metrics::counter!(names::DRIFT_ALERTS,
            "feature" => self.feature.to_owned(),
            "metric" => self.metric.to_owned(),
            "level" => self.level)
        .increment(1);
    }
}

// Delivery.

/// A round of transient delivery failures, about to be retried.
pub struct DeliveryRetried<'a> {
    pub topic: &'a str,
    pub failed: usize,
    pub error: &'a dyn Display,
    pub attempt: u32,
}

impl Event for DeliveryRetried<'_> {
    fn emit(self) {
        tracing::warn!(topic = self.topic, failed = self.failed, error = %self.error,
            attempt = self.attempt, "delivery failed; retrying");
        metrics::counter!(names::DELIVERY_RETRIES, "topic" => self.topic.to_owned()).increment(1);
    }
}

/// Side outputs (alerts, shadow scores) kept for another offer.
pub struct SideOutputsKept {
    pub kept: usize,
}

impl Event for SideOutputsKept {
    fn emit(self) {
        metrics::gauge!(names::SIDE_OUTPUTS_KEPT).set(self.kept as f64);
    }
}

/// A side output dropped: past the cap, or refused for good.
pub struct SideOutputDropped<'a> {
    pub topic: &'a str,
}

impl Event for SideOutputDropped<'_> {
    fn emit(self) {
        metrics::counter!(names::SIDE_OUTPUTS_DROPPED, "topic" => self.topic.to_owned())
            .increment(1);
    }
}

// The request API.

/// A request answered.
pub struct RequestServed {
    pub status: u16,
    pub seconds: f64,
    /// Answered with the fallback decision past the deadline.
    pub fallback: bool,
}

/// Records of a request sent on to the instance holding their partition.
pub struct RequestForwarded {
    /// `answered`, or `failed` (not reached, or not ready).
    pub outcome: &'static str,
}

impl Event for RequestForwarded {
    fn emit(self) {
        metrics::counter!(names::REQUESTS_FORWARDED, "outcome" => self.outcome).increment(1);
    }
}

impl Event for RequestServed {
    fn emit(self) {
        metrics::counter!(names::REQUESTS, "status" => self.status.to_string()).increment(1);
        metrics::histogram!(names::REQUEST_SECONDS).record(self.seconds);
        if self.fallback {
            metrics::counter!(names::REQUEST_FALLBACKS).increment(1);
        }
    }
}
