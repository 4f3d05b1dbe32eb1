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
mod tests {
    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/fraud.toml")
    }

    /// Writes a variant of the example pipeline next to it (so its relative
    /// paths still resolve) and loads it.
    fn load_variant(edit: impl Fn(String) -> String) -> Result<Pipeline, ConfigError> {
        let text = edit(std::fs::read_to_string(example_path()).unwrap());
        let dir = example_path().parent().unwrap().to_owned();
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile_in(dir)
            .unwrap();
        std::fs::write(file.path(), text).unwrap();
        Pipeline::load(file.path(), None)
    }

    /// The labels consumer waits at least 500 ms on an empty fetch, and
    /// keeps a longer wait it was given; its group is its own.
    #[test]
    fn the_labels_consumer_does_not_fetch_hot() {
        let mut kafka = Pipeline::load(&example_path(), None).unwrap().kafka;
        kafka
            .consumer
            .insert("fetch.wait.max.ms".into(), "10".into());
        let labels = kafka.for_labels("labels");
        assert_eq!(labels.consumer["fetch.wait.max.ms"], "500");
        assert_eq!(labels.group_id, format!("{}-labels", kafka.group_id));
        assert_eq!(kafka.consumer["fetch.wait.max.ms"], "10");
        kafka
            .consumer
            .insert("fetch.wait.max.ms".into(), "900".into());
        assert_eq!(
            kafka.for_labels("labels").consumer["fetch.wait.max.ms"],
            "900"
        );
    }

    #[test]
    fn the_example_pipeline_loads() {
        let p = Pipeline::load(&example_path(), None).unwrap();
        assert_eq!(p.kafka.input_topic, "transactions");
        assert_eq!(p.batch.max_rows, 2000);
        assert_eq!(p.schema.name, "transactions");
        assert!(p.sql.contains("FROM transactions"));
        assert!(
            matches!(&p.model, ModelSource::Bundle(path) if path.ends_with("models/fraud-lr")),
            "{:?}",
            p.model
        );
        assert_eq!(p.kafka.consumer["session.timeout.ms"], "10000");
    }

    #[test]
    fn a_model_is_a_bundle_or_a_registry_and_name_not_both() {
        let p = load_variant(|t| {
            t.replace(
                "bundle = \"models/fraud-lr\"",
                "registry = \"models\"\nname = \"fraud-lr\"",
            )
        })
        .unwrap();
        assert!(
            matches!(&p.model, ModelSource::Registry { name, .. } if name == "fraud-lr"),
            "{:?}",
            p.model
        );
        let err = load_variant(|t| {
            t.replace(
                "bundle = \"models/fraud-lr\"",
                "bundle = \"models/fraud-lr\"\nregistry = \"models\"\nname = \"x\"",
            )
        })
        .unwrap_err();
        assert!(err.to_string().contains("`model`"), "{err}");
        let err = load_variant(|t| t.replace("bundle = \"models/fraud-lr\"", "registry = \"m\""))
            .unwrap_err();
        assert!(err.to_string().contains("`model.name`"), "{err}");
    }

    #[test]
    fn brokers_can_be_overridden() {
        let p = Pipeline::load(&example_path(), Some("kafka-1:9092")).unwrap();
        assert_eq!(p.kafka.brokers, "kafka-1:9092");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load_variant(|t| t.replace("max_rows = 2000", "max_rows = 2000\nmax_rowz = 1"))
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("unknown field `max_rowz`"), "{message}");
        assert!(message.contains(".toml"), "{message}");
    }

    #[test]
    fn a_missing_file_is_refused_with_key_and_path() {
        let err = load_variant(|t| t.replace("sql = \"fraud.sql\"", "sql = \"nope.sql\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`transform.sql`") && err.contains("nope.sql"),
            "{err}"
        );
        let err = load_variant(|t| t.replace("../schemas/transaction.json", "gone.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`schema.path`") && err.contains("gone.json"),
            "{err}"
        );
    }

    #[test]
    fn bad_window_features_and_labels_are_refused_with_their_key() {
        let count_1d = "name = \"card_tx_count_1d\"\nkey = \"card_id\"\naggregate = \"count\"\nwindow = \"1d\"";
        let cases = [
            (
                count_1d,
                count_1d.replace("key = \"card_id\"", "key = \"no_such\""),
                "key `no_such` is not a field",
            ),
            (
                count_1d,
                count_1d.replace("aggregate", "column = \"amount\"\naggregate"),
                "takes no `column`",
            ),
            (
                count_1d,
                count_1d.replace("\"1d\"", "\"90m\""),
                "whole number of tiles",
            ),
            (
                "topic = \"transaction-labels\"",
                "topic = \"transactions\"".to_owned(),
                "`labels.topic`",
            ),
            (
                "tile = \"1h\"",
                "tile = \"1h\"\nsurprise = 1".to_owned(),
                "unknown field",
            ),
        ];
        for (from, to, needle) in cases {
            let err = load_variant(|t| {
                assert!(t.contains(from), "the example no longer has {from:?}");
                t.replacen(from, &to, 1)
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{to:?}: {err}");
        }
    }

    #[test]
    fn bad_drift_settings_are_refused_with_their_key() {
        let cases = [
            ("window = \"1d\"", "window = \"0s\"", "`drift.window`"),
            (
                "psi = { suspected = 0.1, detected = 0.25 }",
                "pis = { suspected = 0.1 }",
                "`pis` is not a drift metric",
            ),
            (
                "psi = { suspected = 0.1, detected = 0.25 }",
                "psi = { suspected = 0.3, detected = 0.25 }",
                "suspected (0.3) is above detected (0.25)",
            ),
            (
                "alerts_topic = \"drift-alerts\"",
                "alerts_topic = \"scores\"",
                "`drift.alerts_topic`",
            ),
            (
                "event_time = \"event_time\"\n# A day",
                "event_time = \"amount\"\n# A day",
                "`drift.event_time`",
            ),
            ("raise_after = 3", "raise_after = 0", "`drift.raise_after`"),
            (
                "psi = { suspected = 0.1, detected = 0.25 }",
                "null_rate = { suspected = { p_value = 0.01 } }",
                "`null_rate` cannot take a `p_value`",
            ),
            (
                "psi = { suspected = 0.1, detected = 0.25 }",
                "psi = { suspected = { p_value = 0.7 } }",
                "p_value 0.7 must lie between 0 and 0.5",
            ),
            (
                "psi = { suspected = 0.1, detected = 0.25 }",
                "psi = { suspected = { p_value = 0.001 }, detected = { p_value = 0.01 } }",
                "the suspected p_value (0.001) is below the detected one (0.01)",
            ),
            (
                "[drift.features.is_weekend]",
                "[drift.change]\nthreshold = -1.0\n[drift.features.is_weekend]",
                "`drift.change.threshold`",
            ),
            (
                "[drift.features.is_weekend]",
                "[drift.change]\ndelta = nan\n[drift.features.is_weekend]",
                "`drift.change.delta`",
            ),
            (
                "[drift.features.is_weekend]",
                "[drift.change]\nlambda = 50.0\n[drift.features.is_weekend]",
                "unknown field `lambda`",
            ),
        ];
        for (from, to, needle) in cases {
            let err = load_variant(|t| {
                assert!(t.contains(from), "the example no longer has {from:?}");
                t.replacen(from, to, 1)
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{to:?}: {err}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused_by_key() {
        let cases = [
            ("max_rows = 2000", "max_rows = 0", "`batch.max_rows`"),
            ("linger_ms = 20", "linger_ms = 0", "`batch.linger_ms`"),
            ("# threshold = 0.5", "threshold = 1.5", "`model.threshold`"),
            (
                "output_topic = \"scores\"",
                "output_topic = \"transactions\"",
                "`kafka.input_topic`",
            ),
            (
                "# shadow_topic = \"scores-shadow\"",
                "shadow_topic = \"scores\"",
                "`kafka.shadow_topic`",
            ),
            (
                "group_id = \"streamscore-fraud\"",
                "group_id = \"\"",
                "`kafka.group_id`",
            ),
            (
                "\"auto.commit.interval.ms\" = \"1000\"",
                "\"enable.auto.offset.store\" = \"true\"",
                "`kafka.consumer` sets `enable.auto.offset.store`",
            ),
            (
                "\"auto.commit.interval.ms\" = \"1000\"",
                "\"enable.auto.commit\" = \"false\"",
                "`kafka.consumer` sets `enable.auto.commit`",
            ),
            (
                "\"linger.ms\" = \"5\"",
                "\"acks\" = \"1\"",
                "`kafka.producer` sets `acks`",
            ),
            (
                "\"linger.ms\" = \"5\"",
                "\"max.in.flight.requests.per.connection\" = \"3\"",
                "`kafka.producer` sets `max.in.flight.requests.per.connection`",
            ),
            (
                "\"linger.ms\" = \"5\"",
                "\"message.max.bytes\" = \"20000\"",
                "`dead_letter.max_payload_bytes`",
            ),
            (
                "max_payload_bytes = 65536",
                "max_payload_bytes = 0",
                "`dead_letter.max_payload_bytes`",
            ),
            (
                "drain_timeout_ms = 30000",
                "drain_timeout_ms = 0",
                "`shutdown.drain_timeout_ms`",
            ),
            (
                "listen = \"127.0.0.1:9464\"",
                "listen = \"localhost\"",
                "`admin.listen`",
            ),
            (
                "status_interval_ms = 10000",
                "status_interval_ms = 0",
                "`telemetry.status_interval_ms`",
            ),
            (
                "max_failed_share = 0.5",
                "max_failed_share = 1.5",
                "`transform.max_failed_share`",
            ),
            (
                "event_id_field = \"event_id\"",
                "event_id_field = \"amount\"",
                "`schema.event_id_field`",
            ),
        ];
        for (from, to, needle) in cases {
            let err = load_variant(|t| t.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{to}: {err}");
        }
    }

    #[test]
    fn serving_several_instances_needs_the_key_the_changelog_and_an_address() {
        let per_partition = |extra: &'static str, serve: &'static str| {
            move |t: String| {
                format!(
                    "{}\n[serve]\n{serve}\n",
                    t.replace(
                        "checkpoint_ms = 1000\n",
                        &format!("checkpoint_ms = 1000\n{extra}"),
                    )
                    .replace("\nscope = \"instance\"", "\nscope = \"partition\"")
                )
            }
        };
        let refused = |edit: &dyn Fn(String) -> String, needle: &str| {
            let err = load_variant(edit).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        };
        refused(
            &per_partition("changelog = true\n", "listen = \"127.0.0.1:0\""),
            "windows.partition_key",
        );
        let keyed = |extra: &'static str, serve: &'static str| {
            let edit = per_partition(extra, serve);
            move |t: String| {
                edit(t).replace(
                    "\nscope = \"partition\"",
                    "\nscope = \"partition\"\npartition_key = \"card_id\"",
                )
            }
        };
        refused(
            &keyed("", "listen = \"127.0.0.1:0\""),
            "state.changelog = true",
        );
        refused(
            &keyed("changelog = true\n", "listen = \"0.0.0.0:8080\""),
            "`serve.advertise`",
        );
        refused(
            &keyed(
                "changelog = true\n",
                "listen = \"127.0.0.1:0\"\npartitioner = \"fnv\"",
            ),
            "`serve.partitioner`",
        );
        let p = load_variant(keyed(
            "changelog = true\n",
            "listen = \"0.0.0.0:8080\"\nadvertise = \"http://10.0.0.5:8080\"\npartitioner = \"murmur2_random\"",
        ))
        .unwrap();
        let serve = p.serve.unwrap();
        assert_eq!(serve.routing.unwrap().key, "card_id");
        assert_eq!(serve.partitioner, Partitioner::Murmur2);
    }
}
