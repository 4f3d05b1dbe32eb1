//! What an operator sees of a running engine: the events that log and
//! count together (`events.rs`), metric names (all of them, in [`names`]), the Prometheus recorder, the counters behind the status line,
//! librdkafka's statistics turned into gauges, and readiness.
//!
//! Counting happens once per batch, not per row, and labels are bounded:
//! topic, partition, kind, model name and version; never a card or event id.

pub mod events;
mod handles;
pub mod health;
pub mod kafka_stats;
mod latency;
pub mod stats;
pub mod status;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use health::Health;
pub use stats::{BatchDelivered, Snapshot, Stats};

pub mod names {
    pub const CONSUMED: &str = "streamscore_events_consumed_total";
    pub const SCORED: &str = "streamscore_events_scored_total";
    pub const FLAGGED: &str = "streamscore_events_flagged_total";
    /// Labelled by `kind`, the dead-letter kind.
    pub const DEAD_LETTERED: &str = "streamscore_events_dead_lettered_total";
    pub const BATCHES: &str = "streamscore_batches_total";
    /// Records read again after a restart whose events were already folded
    /// into the window state (and scored): skipped, not counted twice.
    pub const ALREADY_FOLDED: &str = "streamscore_state_already_folded_total";
    /// Records of the labels topic that do not decode (skipped, logged).
    pub const LABELS_REFUSED: &str = "streamscore_labels_refused_total";
    /// Labels that found their kept score, and those that did not (never
    /// scored here, or kept past `labels.score_retention`).
    pub const LABELS_MATCHED: &str = "streamscore_labels_matched_total";
    pub const LABELS_UNMATCHED: &str = "streamscore_labels_unmatched_total";
    /// The newest transaction day a label arrived for (its start, seconds
    /// since the epoch), and that day's metrics over its labels so far.
    pub const LABELS_DAY: &str = "streamscore_labels_day_timestamp_seconds";
    pub const LABELS_DAY_LABELLED: &str = "streamscore_labels_day_labelled";
    pub const LABELS_DAY_AUC: &str = "streamscore_labels_day_auc";
    pub const LABELS_DAY_AP: &str = "streamscore_labels_day_average_precision";
    pub const LABELS_DAY_CARD_PRECISION: &str = "streamscore_labels_day_card_precision_at_100";
    /// Events older than their key's retained window history.
    pub const LATE_EVENTS: &str = "streamscore_window_late_events_total";
    /// Stored values that did not read, by `family`: each was dropped and
    /// its key started afresh (`state::quarantined`).
    pub const STATE_DAMAGED: &str = "streamscore_state_damaged_total";
    /// One checkpoint: a batch's state changes and offsets, written at once.
    pub const CHECKPOINT_SECONDS: &str = "streamscore_state_checkpoint_seconds";
    /// Changelog records applied while restoring assigned partitions.
    pub const RESTORED_RECORDS: &str = "streamscore_state_restored_records_total";
    /// How long each partition's restore from the changelog took.
    pub const RESTORE_SECONDS: &str = "streamscore_state_restore_seconds";
    /// State changes appended to the changelog by checkpoints.
    pub const CHANGELOG_RECORDS: &str = "streamscore_state_changelog_records_total";
    /// Rows per batch.
    pub const BATCH_ROWS: &str = "streamscore_batch_rows";
    /// From a batch closing to its offsets being stored: decode, SQL, score,
    /// produce and every ack.
    pub const BATCH_SECONDS: &str = "streamscore_batch_seconds";
    /// From a record's Kafka timestamp to its score's acknowledgement; a
    /// histogram counted per batch (`latency.rs`).
    pub const KAFKA_TO_SCORE_SECONDS: &str = "streamscore_kafka_to_score_seconds";
    pub const KAFKA_TO_SCORE_SECONDS_BUCKET: &str = "streamscore_kafka_to_score_seconds_bucket";
    pub const KAFKA_TO_SCORE_SECONDS_COUNT: &str = "streamscore_kafka_to_score_seconds_count";
    pub const KAFKA_TO_SCORE_SECONDS_SUM: &str = "streamscore_kafka_to_score_seconds_sum";
    /// Per partition, from librdkafka's statistics: end offset less the
    /// committed offset.
    pub const CONSUMER_LAG: &str = "streamscore_consumer_lag";
    pub const PARTITIONS_ASSIGNED: &str = "streamscore_partitions_assigned";
    /// Messages in the producer's local queue, from librdkafka's statistics.
    pub const PRODUCER_QUEUE: &str = "streamscore_producer_queue_messages";
    /// librdkafka's own produce-request retries, from its statistics.
    pub const PRODUCER_RETRIES: &str = "streamscore_producer_retries_total";
    /// Drift alerts and challenger scores Kafka refused, kept to be offered
    /// again with the next batch (`kafka/side.rs`), and those dropped: past
    /// the cap of kept ones, or refused for good; by `topic`.
    pub const SIDE_OUTPUTS_KEPT: &str = "streamscore_side_outputs_kept";
    pub const SIDE_OUTPUTS_DROPPED: &str = "streamscore_side_outputs_dropped_total";
    /// Rounds in which streamscore sent a batch's refused outputs again.
    pub const DELIVERY_RETRIES: &str = "streamscore_delivery_retries_total";
    /// Requests to the scoring API, labelled by `status` (the HTTP code),
    /// and their time from arrival to answer.
    pub const REQUESTS: &str = "streamscore_requests_total";
    pub const REQUEST_SECONDS: &str = "streamscore_request_seconds";
    /// Requests answered with `serve.fallback` past the deadline.
    pub const REQUEST_FALLBACKS: &str = "streamscore_request_fallbacks_total";
    /// Requests sent on to the instance holding their records' partition,
    /// by `outcome` (answered, failed).
    pub const REQUESTS_FORWARDED: &str = "streamscore_requests_forwarded_total";
    /// 1 for each model that is scoring, labelled by name, version and role
    /// (champion or challenger); 0 for one swapped out.
    pub const MODEL_INFO: &str = "streamscore_model_info";
    /// Lineup changes (promotions, rollbacks, challengers set).
    pub const MODEL_SWAPS: &str = "streamscore_model_swaps_total";
    /// Versions refused before serving, labelled by `reason` (checksum,
    /// does_not_fit, invalid_manifest, check_row, ...).
    pub const MODEL_REFUSALS: &str = "streamscore_model_refusals_total";
    /// Over the last scored events, per `role`: the share flagged.
    pub const CHALLENGER_FLAG_RATE: &str = "streamscore_challenger_flag_rate";
    /// Share of events where champion and challenger decide differently.
    pub const CHALLENGER_DISAGREEMENT: &str = "streamscore_challenger_disagreement_rate";
    /// Spearman's rank correlation of champion and challenger scores.
    pub const CHALLENGER_RANK_CORRELATION: &str = "streamscore_challenger_rank_correlation";
    /// The last judged drift window's value of each `metric` of each
    /// `feature` (model features, `score`, categorical inputs, `decision`).
    pub const DRIFT_VALUE: &str = "streamscore_drift_value";
    /// Per `feature` and `metric`: 0 normal, 1 suspected, 2 detected.
    pub const DRIFT_LEVEL: &str = "streamscore_drift_level";
    /// Alerts raised and cleared, by `feature`, `metric` and `level`.
    pub const DRIFT_ALERTS: &str = "streamscore_drift_alerts_total";
    /// The start of the last judged window (seconds since the epoch), and
    /// the events scored in it.
    pub const DRIFT_WINDOW: &str = "streamscore_drift_window_start_timestamp_seconds";
    pub const DRIFT_WINDOW_EVENTS: &str = "streamscore_drift_window_events";

    /// Every name above, for checks that the dashboard knows them all.
    pub const ALL: &[&str] = &[
        CONSUMED,
        SCORED,
        FLAGGED,
        DEAD_LETTERED,
        BATCHES,
        BATCH_ROWS,
        BATCH_SECONDS,
        KAFKA_TO_SCORE_SECONDS,
        CONSUMER_LAG,
        PARTITIONS_ASSIGNED,
        PRODUCER_QUEUE,
        PRODUCER_RETRIES,
        DELIVERY_RETRIES,
        REQUESTS,
        REQUEST_SECONDS,
        REQUEST_FALLBACKS,
        REQUESTS_FORWARDED,
        SIDE_OUTPUTS_KEPT,
        SIDE_OUTPUTS_DROPPED,
        MODEL_INFO,
        MODEL_SWAPS,
        MODEL_REFUSALS,
        CHALLENGER_FLAG_RATE,
        CHALLENGER_DISAGREEMENT,
        CHALLENGER_RANK_CORRELATION,
        ALREADY_FOLDED,
        LATE_EVENTS,
        CHECKPOINT_SECONDS,
        RESTORED_RECORDS,
        RESTORE_SECONDS,
        CHANGELOG_RECORDS,
        STATE_DAMAGED,
        LABELS_REFUSED,
        LABELS_MATCHED,
        LABELS_UNMATCHED,
        LABELS_DAY,
        LABELS_DAY_LABELLED,
        LABELS_DAY_AUC,
        LABELS_DAY_AP,
        LABELS_DAY_CARD_PRECISION,
        DRIFT_VALUE,
        DRIFT_LEVEL,
        DRIFT_ALERTS,
        DRIFT_WINDOW,
        DRIFT_WINDOW_EVENTS,
    ];
}

/// Latency buckets, seconds: 1 ms to 1 minute.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
const ROWS_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// Installs the Prometheus recorder once per process and returns the handle
/// that renders `/metrics`. Later calls return the same handle.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), ROWS_BUCKETS))
            .expect("the bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (an embedding program's own)
        // keeps receiving the metrics; /metrics then shows nothing.
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics stays empty");
        }
        handle
    })
}
