//! The pipeline file (`pipelines/<name>.toml`) and the checks that turn it
//! into a [`Pipeline`] that cannot be invalid. What the file may say, and
//! its defaults, are in `file.rs`. Paths in the file are relative to the
//! file itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::schema::{RecordSchema, SchemaError};

pub mod client_properties;
mod decoders;
mod drift;
mod file;
mod validate;
mod windows;

pub use crate::drift::DriftSettings;
pub use file::{PipelineFile, ReasonsFor};
pub use windows::{LabelSettings, StateSettings, parse_duration};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("pipeline file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("pipeline file {path}: `{key}` {message}")]
    Invalid {
        path: String,
        key: &'static str,
        message: String,
    },
    #[error("pipeline file {path}: `{section}` sets `{key}`, which is refused: {why}")]
    RefusedProperty {
        path: String,
        section: &'static str,
        key: String,
        why: String,
    },
    #[error("pipeline file {path}: `{key}` points to {target}, which cannot be read: {source}")]
    MissingFile {
        path: String,
        key: &'static str,
        target: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Room a dead letter needs beyond its payload: headers and the key.
pub const DEAD_LETTER_OVERHEAD: usize = 16 * 1024;

impl KafkaSettings {
    /// The same cluster and client properties, reading the labels topic in
    /// a group of its own (`<group_id>-labels`).
    pub fn for_labels(&self, topic: &str) -> Self {
        // Labels come days after their transactions, so a quick answer to
        // an empty fetch buys nothing. With the input's short wait (10 ms
        // in the bench, on Tansu) the idle labels consumer fetched a
        // hundred times a second (bench/RESULTS.md, the profile of
        // 2026-12-06).
        let mut consumer = self.consumer.clone();
        let wait = consumer
            .get(FETCH_WAIT)
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(LABELS_FETCH_WAIT_MS, |ms| ms.max(LABELS_FETCH_WAIT_MS));
        consumer.insert(FETCH_WAIT.into(), wait.to_string());
        Self {
            input_topic: topic.to_owned(),
            group_id: format!("{}-labels", self.group_id),
            consumer,
            ..self.clone()
        }
    }
}

/// The consumer property that bounds how long a fetch waits for records.
const FETCH_WAIT: &str = "fetch.wait.max.ms";
/// The shortest fetch wait of the labels consumer (librdkafka's default).
const LABELS_FETCH_WAIT_MS: u64 = 500;

/// Kafka settings after validation.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub output_topic: String,
    pub dead_letter_topic: String,
    pub shadow_topic: Option<String>,
    /// Drift alerts (`drift.alerts_topic`).
    pub alerts_topic: Option<String>,
    pub consumer: BTreeMap<String, String>,
    pub producer: BTreeMap<String, String>,
}

/// The request API's settings (`[serve]`), checked.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: String,
    /// Past this, a request is answered 504, or with the fallback.
    pub deadline: Duration,
    pub fallback: Option<Fallback>,
    pub publish: bool,
    pub max_items: usize,
    pub max_body_bytes: usize,
    /// The URL this instance is reached at (`serve.advertise`); `None`: the
    /// bound address.
    pub advertise: Option<String>,
    /// With windows kept per partition: how a request finds the partition,
    /// and so the instance, that holds its key's state.
    pub routing: Option<Routing>,
    /// How the input's producers partition by key; the API's own producer
    /// (`publish`) is set the same way.
    pub partitioner: Partitioner,
    /// Worker threads of the API's own runtime.
    pub threads: usize,
}

/// How a request is sent to the instance that holds its key's partition
/// (README "Scoring at authorisation time", several instances).
#[derive(Debug, Clone)]
pub struct Routing {
    /// The field the input topic is keyed by (`windows.partition_key`).
    pub key: String,
}

/// A Kafka producer's choice of partition for a keyed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// CRC-32 of the key: librdkafka's default (`consistent_random`).
    Consistent,
    /// Murmur2 of the key: the Java client's default (`murmur2_random`).
    Murmur2,
}

impl Partitioner {
    /// librdkafka's name for it (its `partitioner` property).
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::Consistent => "consistent_random",
            Partitioner::Murmur2 => "murmur2_random",
        }
    }
}

/// The decision given past the deadline, marked as a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Pass,
    Flag,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub max_rows: usize,
    /// A batch closes once its payloads reach this many bytes.
    pub max_bytes: usize,
    pub linger: Duration,
    /// Records larger than this are not decoded (`oversized`)...
    pub max_record_bytes: usize,
    /// ...and only this much of them is kept, for the dead letter.
    pub dead_letter_payload_bytes: usize,
    /// Batches sent and awaiting their acknowledgements at once.
    pub max_in_flight: usize,
}

/// When the SQL fails on many rows of a batch, the SQL is wrong, not the
/// data: stop instead of dead-lettering the stream.
#[derive(Debug, Clone, Copy)]
pub struct SqlFailureLimit {
    /// Stop when more than this share of a batch's decoded rows fails...
    pub max_share: f64,
    /// ...and at least this many rows did (so one bad record in a tiny
    /// batch is dead-lettered, not fatal).
    pub min_rows: usize,
}

/// Where the models come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// One bundle directory, served until the process stops.
    Bundle(PathBuf),
    /// A registry's champion and challenger for `name`, followed as they
    /// change (file watch, and a poll every `poll`).
    Registry {
        dir: PathBuf,
        name: String,
        poll: Duration,
    },
}

/// A pipeline whose files exist and whose values are in range.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub source_path: PathBuf,
    pub kafka: KafkaSettings,
    pub batch: BatchSettings,
    pub schema: RecordSchema,
    pub event_id_field: String,
    pub max_record_bytes: usize,
    /// The input's event times must lie between 1990 and this far past the
    /// wall clock (`schema.max_future`).
    pub max_future_ms: i64,
    pub sql_path: PathBuf,
    pub sql: String,
    pub sql_failure_limit: SqlFailureLimit,
    pub model: ModelSource,
    pub threshold_override: Option<f64>,
    pub reasons: ReasonsFor,
    /// Each score carries the model's input values.
    pub include_features: bool,
    /// How long a stop may take to finish the batch in flight and commit.
    pub drain_timeout: Duration,
    /// Where the admin server listens, when it is on.
    pub admin_listen: Option<String>,
    /// The file with the model routes' bearer token, if the file names one.
    pub admin_token_file: Option<PathBuf>,
    pub status_interval: Duration,
    /// This instance's state store, when the pipeline keeps state.
    pub state: Option<StateSettings>,
    pub windows: Option<crate::windows::WindowSpec>,
    /// The labels topic, when a window feature reads labels.
    pub labels: Option<LabelSettings>,
    /// Drift monitoring, when the pipeline asks for it.
    pub drift: Option<DriftSettings>,
    /// The request API, when `[serve]` is set.
    pub serve: Option<ServeSettings>,
}

impl Pipeline {
    /// Keeps this instance's state in `dir` instead of the file's
    /// `state.path`.
    pub fn use_state_dir(&mut self, dir: PathBuf) -> Result<(), ConfigError> {
        match &mut self.state {
            Some(state) => {
                state.path = dir;
                Ok(())
            }
            None => Err(ConfigError::Invalid {
                path: self.source_path.display().to_string(),
                key: "state",
                message: "is not set, so there is no state directory to override".into(),
            }),
        }
    }

    /// The state stores a report reads beside the running instances: those
    /// `given` (one per instance), or else this pipeline's own.
    pub fn state_paths(&self, given: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
        match (given, &self.state) {
            ([], Some(state)) => Ok(vec![state.path.clone()]),
            ([], None) => Err(ConfigError::Invalid {
                path: self.source_path.display().to_string(),
                key: "state",
                message: "is not set, so there is no state to report on (pass --state)".into(),
            }),
            (given, _) => Ok(given.to_vec()),
        }
    }

    /// Reads and validates a pipeline file; `brokers` replaces the file's.
    pub fn load(path: &Path, brokers: Option<&str>) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut file: PipelineFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            source: Box::new(e),
        })?;
        if let Some(brokers) = brokers {
            file.kafka.brokers = brokers.to_owned();
        }
        file.validate(path)
    }
}

#[cfg(test)]
pub(crate) mod tests;
