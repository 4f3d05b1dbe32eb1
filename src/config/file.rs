//! The pipeline file as written: its sections, and every default in one
//! place. Every field is documented in `pipelines/fraud.toml`; unknown keys
//! are refused. `mod.rs` validates it into a [`super::Pipeline`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The file as written. Every field is documented in `pipelines/fraud.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub kafka: KafkaSection,
    #[serde(default)]
    pub batch: BatchSection,
    pub schema: SchemaSection,
    pub transform: TransformSection,
    pub model: ModelSection,
    #[serde(default)]
    pub dead_letter: DeadLetterSection,
    #[serde(default)]
    pub shutdown: ShutdownSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    pub state: Option<StateSection>,
    pub windows: Option<WindowsSection>,
    pub labels: Option<LabelsSection>,
    pub drift: Option<DriftSection>,
    pub serve: Option<ServeSection>,
}

/// The request API: `POST /v1/score` on a listener of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    pub listen: String,
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// `"none"` (504 past the deadline), `"pass"` or `"flag"`.
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Produce each scored request to the input topic before answering.
    #[serde(default)]
    pub publish: bool,
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The URL other instances and clients reach this listener at, for
    /// forwarding and `GET /v1/owner` (default: the bound address).
    pub advertise: Option<String>,
    /// How the input's producers choose a record's partition from its key:
    /// `"consistent_random"` (librdkafka's default) or `"murmur2_random"`
    /// (the Java client's).
    #[serde(default = "default_partitioner")]
    pub partitioner: String,
    /// Worker threads of the API's own runtime.
    #[serde(default = "default_serve_threads")]
    pub threads: usize,
}

fn default_serve_threads() -> usize {
    2
}

fn default_partitioner() -> String {
    "consistent_random".into()
}

fn default_deadline_ms() -> u64 {
    50
}

fn default_fallback() -> String {
    "none".into()
}

fn default_max_items() -> usize {
    1000
}

fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

/// Drift monitoring of the model's features and score against the
/// reference in its bundle, over tumbling event-time windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSection {
    /// The event-time field windows are cut by.
    pub event_time: String,
    #[serde(default = "default_drift_window")]
    pub window: String,
    /// A window is judged once events this much past its end have arrived.
    #[serde(default = "default_drift_lateness")]
    pub lateness: String,
    /// A partition this far behind the newest (event time) is idle: windows
    /// are judged without waiting for it.
    #[serde(default = "default_drift_idle")]
    pub idle: String,
    /// Windows older than this are dropped from the store.
    #[serde(default = "default_drift_retention")]
    pub retention: String,
    /// Windows with fewer scored events are not judged.
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    /// Where alerts go as JSON; without it they are logged and counted only.
    pub alerts_topic: Option<String>,
    /// Consecutive windows over a threshold before its level is raised.
    #[serde(default = "default_raise_after")]
    pub raise_after: u32,
    /// Consecutive windows under the `suspected` threshold before it clears.
    #[serde(default = "default_raise_after")]
    pub clear_after: u32,
    /// Event time between two alerts raised for one feature and metric.
    #[serde(default = "default_cooldown")]
    pub cooldown: String,
    /// Per metric; `psi` has the credit-risk defaults 0.1 and 0.25.
    #[serde(default)]
    pub thresholds: BTreeMap<String, ThresholdSection>,
    /// Per feature, per metric: overrides of `thresholds`.
    #[serde(default)]
    pub features: BTreeMap<String, BTreeMap<String, ThresholdSection>>,
    /// A Page-Hinkley test on the champion's scores.
    pub change: Option<ChangeSection>,
}

/// `[drift.change]`: the change detector on the score stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSection {
    /// Shifts smaller than this, in the reference's score standard
    /// deviations, are tolerated.
    #[serde(default = "default_change_delta")]
    pub delta: f64,
    /// The cumulative deviation (in the same units) that raises an alert.
    #[serde(default = "default_change_threshold")]
    pub threshold: f64,
    /// Scores seen (per partition, since the start or the last alert)
    /// before an alert may be raised.
    #[serde(default = "default_change_min_events")]
    pub min_events: u64,
}

fn default_change_delta() -> f64 {
    0.1
}

fn default_change_threshold() -> f64 {
    50.0
}

fn default_change_min_events() -> u64 {
    500
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSection {
    pub suspected: Option<crate::drift::alerts::Limit>,
    pub detected: Option<crate::drift::alerts::Limit>,
}

fn default_drift_window() -> String {
    "1h".into()
}

fn default_drift_lateness() -> String {
    "1m".into()
}

fn default_min_events() -> u64 {
    300
}

fn default_drift_idle() -> String {
    "6h".into()
}

fn default_drift_retention() -> String {
    "30d".into()
}

fn default_raise_after() -> u32 {
    3
}

fn default_cooldown() -> String {
    "6h".into()
}

/// Where fraud labels come from, for window features over them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsSection {
    pub topic: String,
    pub schema: PathBuf,
    /// The labelled event's time, in the labels' schema.
    #[serde(default = "default_label_time")]
    pub event_time: String,
    /// How long after its event a label arrives: `train` makes labels
    /// visible this late, as the stream sees them.
    #[serde(default = "default_label_delay")]
    pub delay: String,
    /// How long each score is kept for its label to find.
    #[serde(default = "default_score_retention")]
    pub score_retention: String,
}

fn default_score_retention() -> String {
    "30d".into()
}

fn default_label_time() -> String {
    "event_time".into()
}

fn default_label_delay() -> String {
    "7d".into()
}

/// Where this instance keeps its state (window features, offsets).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    pub path: PathBuf,
    /// Fsync each checkpoint (survives a machine crash, not only a process
    /// crash).
    #[serde(default = "yes")]
    pub sync: bool,
    /// Delivered batches' state is written (with their offsets) at most
    /// this often; 0 writes every batch.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_ms: u64,
    /// Copy every checkpoint to a compacted changelog topic, so that a
    /// partition's state follows it between instances.
    #[serde(default)]
    pub changelog: bool,
    /// The changelog's topic; `<kafka.group_id>-changelog` by default.
    pub changelog_topic: Option<String>,
    /// Keep a warm copy of every partition this instance does not hold,
    /// tailed from the changelog, so that a failover restores in seconds.
    #[serde(default)]
    pub standby: bool,
}

fn default_checkpoint_ms() -> u64 {
    1_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsSection {
    pub event_time: String,
    #[serde(default)]
    pub scope: crate::windows::Scope,
    /// The column the input topic is keyed by: its windows live in one
    /// partition, so they are not summed over partitions.
    pub partition_key: Option<String>,
    #[serde(default = "default_tile")]
    pub tile: String,
    #[serde(rename = "feature", default)]
    pub features: Vec<WindowFeatureSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFeatureSection {
    pub name: String,
    pub key: String,
    pub aggregate: crate::windows::Aggregate,
    pub column: Option<String>,
    pub window: String,
    /// Overrides `windows.tile` for this feature.
    pub tile: Option<String>,
    #[serde(default)]
    pub source: crate::windows::Source,
    pub shift: Option<String>,
    #[serde(default = "yes")]
    pub include_current: bool,
}

fn yes() -> bool {
    true
}

fn default_tile() -> String {
    "1h".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub enabled: bool,
    pub listen: String,
    /// File holding the bearer token of the model routes.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
            token_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    pub status_interval_ms: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            status_interval_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub output_topic: String,
    pub dead_letter_topic: String,
    /// The challenger's scores; without it they are compared, not sent.
    pub shadow_topic: Option<String>,
    /// librdkafka consumer properties, passed through as written.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// librdkafka producer properties, passed through as written.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSection {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub linger_ms: u64,
    pub max_in_flight: usize,
}

impl Default for BatchSection {
    fn default() -> Self {
        Self {
            max_rows: 2_000,
            max_bytes: 16 * 1024 * 1024,
            linger_ms: 20,
            // One batch processed while the one before waits for its acks
            // (README, Benchmarks, "The producer"); see fraud.toml.
            max_in_flight: 2,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterSection {
    pub max_payload_bytes: usize,
}

impl Default for DeadLetterSection {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        Self {
            drain_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSection {
    pub path: PathBuf,
    #[serde(default = "default_event_id_field")]
    pub event_id_field: String,
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// How far past the wall clock an event time may lie.
    #[serde(default = "default_max_future")]
    pub max_future: String,
}

fn default_max_future() -> String {
    "1h".into()
}

fn default_event_id_field() -> String {
    "event_id".into()
}

fn default_max_record_bytes() -> usize {
    64 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSection {
    pub sql: PathBuf,
    #[serde(default = "default_max_failed_share")]
    pub max_failed_share: f64,
    #[serde(default = "default_min_failed_rows_to_stop")]
    pub min_failed_rows_to_stop: usize,
}

fn default_max_failed_share() -> f64 {
    0.5
}

fn default_min_failed_rows_to_stop() -> usize {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A bundle directory, served as it is...
    pub bundle: Option<PathBuf>,
    /// ...or a registry directory and a model name in it, whose champion
    /// and challenger are followed as they change.
    pub registry: Option<PathBuf>,
    pub name: Option<String>,
    /// Overrides the bundles' own decision threshold.
    pub threshold: Option<f64>,
    /// How often the registry's state is read again besides the file watch.
    #[serde(default = "default_registry_poll_ms")]
    pub registry_poll_ms: u64,
    /// Which scores carry reasons: every one, or only flagged ones.
    #[serde(default)]
    pub reasons: ReasonsFor,
    /// Each score carries the model's input values.
    #[serde(default)]
    pub include_features: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonsFor {
    #[default]
    All,
    Flagged,
}

fn default_registry_poll_ms() -> u64 {
    2_000
}
