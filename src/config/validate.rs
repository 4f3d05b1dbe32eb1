//! The pipeline file checked section by section and built into a
//! [`Pipeline`]: each section has one function that refuses a bad value
//! with its key and says what would do (ARCHITECTURE.md §4). `windows.rs`
//! and `drift.rs` hold the larger sections' checks.

use std::path::Path;
use std::time::Duration;

use super::file::{
    AdminSection, BatchSection, DeadLetterSection, DriftSection, KafkaSection, LabelsSection,
    SchemaSection, ServeSection, ShutdownSection, StateSection, TelemetrySection, TransformSection,
    WindowsSection,
};
use super::windows::Invalid;
use super::{
    BatchSettings, ConfigError, DEAD_LETTER_OVERHEAD, Fallback, KafkaSettings, ModelSource,
    Partitioner, Pipeline, PipelineFile, Routing, ServeSettings, SqlFailureLimit, StateSettings,
    client_properties, drift, parse_duration, windows,
};
use crate::schema::{FieldType, RecordSchema};

impl PipelineFile {
    pub fn validate(self, path: &Path) -> Result<Pipeline, ConfigError> {
        let shown = path.display().to_string();
        let invalid = |(key, message): Invalid| ConfigError::Invalid {
            path: shown.clone(),
            key,
            message,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let read = |key: &'static str, relative: &Path| {
            let target = base.join(relative);
            std::fs::read_to_string(&target)
                .map(|text| (target.clone(), text))
                .map_err(|source| ConfigError::MissingFile {
                    path: shown.clone(),
                    key,
                    target: target.display().to_string(),
                    source,
                })
        };

        let sql_failure_limit = self.check_plain_sections(&shown)?;

        let max_future = parse_duration(&self.schema.max_future)
            .map_err(|e| invalid(("schema.max_future", e)))?;
        let (schema_path, _) = read("schema.path", &self.schema.path)?;
        let schema = RecordSchema::load(&schema_path)?;
        check_event_id(&schema, &schema_path, &self.schema.event_id_field).map_err(invalid)?;
        let (sql_path, sql) = read("transform.sql", &self.transform.sql)?;
        let model = self.model_source(base).map_err(invalid)?;
        let kafka = &self.kafka;
        let StateSections {
            state,
            drift,
            labels,
            windows: window_spec,
        } = state_sections(
            kafka,
            self.state,
            self.drift,
            self.labels.as_ref(),
            self.windows,
            base,
            &schema,
        )
        .map_err(invalid)?;
        let serve = match &self.serve {
            Some(section) => {
                Some(check_serve(section, window_spec.as_ref(), state.as_ref()).map_err(invalid)?)
            }
            None => None,
        };

        Ok(Pipeline {
            source_path: path.to_owned(),
            kafka: KafkaSettings {
                brokers: self.kafka.brokers,
                group_id: self.kafka.group_id,
                input_topic: self.kafka.input_topic,
                output_topic: self.kafka.output_topic,
                dead_letter_topic: self.kafka.dead_letter_topic,
                shadow_topic: self.kafka.shadow_topic,
                alerts_topic: drift.as_ref().and_then(|d| d.alerts_topic.clone()),
                consumer: self.kafka.consumer,
                producer: self.kafka.producer,
            },
            batch: BatchSettings {
                max_rows: self.batch.max_rows,
                max_bytes: self.batch.max_bytes,
                linger: Duration::from_millis(self.batch.linger_ms),
                max_record_bytes: self.schema.max_record_bytes,
                dead_letter_payload_bytes: self.dead_letter.max_payload_bytes,
                max_in_flight: self.batch.max_in_flight,
            },
            schema,
            event_id_field: self.schema.event_id_field,
            max_record_bytes: self.schema.max_record_bytes,
            max_future_ms: max_future.as_millis() as i64,
            sql_path,
            sql,
            sql_failure_limit,
            reasons: self.model.reasons,
            include_features: self.model.include_features,
            model,
            threshold_override: self.model.threshold,
            drain_timeout: Duration::from_millis(self.shutdown.drain_timeout_ms),
            admin_listen: self.admin.enabled.then_some(self.admin.listen),
            admin_token_file: self.admin.token_file.map(|f| base.join(f)),
            status_interval: Duration::from_millis(self.telemetry.status_interval_ms),
            state,
            windows: window_spec,
            labels,
            drift,
            serve,
        })
    }

    /// The sections that stand alone (no file to read, no other section
    /// to agree with), in the order the file lists them.
    fn check_plain_sections(&self, shown: &str) -> Result<SqlFailureLimit, ConfigError> {
        let invalid = |(key, message): Invalid| ConfigError::Invalid {
            path: shown.to_owned(),
            key,
            message,
        };
        check_kafka(&self.kafka).map_err(invalid)?;
        let message_max_bytes = check_client_properties(&self.kafka).map_err(|(section, r)| {
            ConfigError::RefusedProperty {
                path: shown.to_owned(),
                section,
                key: r.key,
                why: r.why,
            }
        })?;
        check_batch(&self.batch, &self.dead_letter, message_max_bytes).map_err(invalid)?;
        let sql_failure_limit = check_transform(&self.transform).map_err(invalid)?;
        check_service(&self.telemetry, &self.admin, &self.shutdown).map_err(invalid)?;
        check_schema_limits(&self.schema).map_err(invalid)?;
        if let Some(t) = self.model.threshold
            && !(t > 0.0 && t < 1.0)
        {
            return Err(invalid((
                "model.threshold",
                format!("is {t}; it must lie strictly between 0 and 1"),
            )));
        }
        Ok(sql_failure_limit)
    }

    /// `[model]` names a bundle, or a registry and a name. The bundle is read
    /// when the engine starts (and `train` writes it), so only paths are
    /// resolved here.
    fn model_source(&self, base: &Path) -> Result<ModelSource, Invalid> {
        let m = &self.model;
        match (&m.bundle, &m.registry, &m.name) {
            (Some(bundle), None, None) => Ok(ModelSource::Bundle(base.join(bundle))),
            (None, Some(registry), Some(name)) => {
                if !crate::model::bundle::manifest::is_path_safe(name) {
                    return Err((
                        "model.name",
                        format!("is {name:?}; use letters, digits, `.`, `_` and `-` only"),
                    ));
                }
                if m.registry_poll_ms == 0 {
                    return Err(("model.registry_poll_ms", "must be at least 1".into()));
                }
                Ok(ModelSource::Registry {
                    dir: base.join(registry),
                    name: name.clone(),
                    poll: Duration::from_millis(m.registry_poll_ms),
                })
            }
            (None, Some(_), None) => Err(("model.name", "is required with `registry`".into())),
            _ => Err((
                "model",
                "must set either `bundle` (a bundle directory) or `registry` and `name`, not \
                 both"
                    .into(),
            )),
        }
    }
}

/// What the stateful sections become together: `[state]`, `[drift]`,
/// `[labels]` and `[windows]` refer to each other (windows and drift need
/// a store, a label feature needs `[labels]`).
struct StateSections {
    state: Option<super::StateSettings>,
    drift: Option<crate::drift::DriftSettings>,
    labels: Option<super::LabelSettings>,
    windows: Option<crate::windows::WindowSpec>,
}

fn state_sections(
    kafka: &KafkaSection,
    state_section: Option<StateSection>,
    drift_section: Option<DriftSection>,
    labels_section: Option<&LabelsSection>,
    windows_section: Option<WindowsSection>,
    base: &Path,
    schema: &RecordSchema,
) -> Result<StateSections, Invalid> {
    let state = windows::state_settings(state_section, base, &kafka.group_id);
    if state
        .as_ref()
        .is_some_and(|s| s.standby && s.changelog_topic.is_none())
    {
        return Err((
            "state.standby",
            "keeps copies tailed from the changelog; set `changelog = true` too".into(),
        ));
    }
    if let Some(topic) = state.as_ref().and_then(|s| s.changelog_topic.as_ref()) {
        check_side_topic(kafka, "state.changelog_topic", topic)?;
        if windows_section
            .as_ref()
            .is_some_and(|w| w.scope == crate::windows::Scope::Instance)
        {
            return Err((
                "windows.scope",
                "is \"instance\", but [state] has a changelog: state that follows its \
                 partitions between instances must be kept per partition; use \"partition\" \
                 (a key whose events span partitions is then summed over them)"
                    .into(),
            ));
        }
    }
    let drift = drift::drift_settings(drift_section, state.is_some(), schema)?;
    if let Some(topic) = drift.as_ref().and_then(|d| d.alerts_topic.as_ref()) {
        check_side_topic(kafka, "drift.alerts_topic", topic)?;
    }
    let labels = windows::label_settings(labels_section, base)?;
    let window_spec = windows::window_spec(
        windows_section,
        state.is_some(),
        schema,
        labels
            .as_ref()
            .map(|(l, timing)| (&l.schema, timing.clone())),
    )?;
    if labels.is_some()
        && !window_spec.as_ref().is_some_and(|w| {
            w.features
                .iter()
                .any(|f| f.source == crate::windows::Source::Labels)
        })
    {
        return Err((
            "labels",
            "is set, but no window feature reads labels (`source = \"labels\"`)".into(),
        ));
    }
    if let Some((l, _)) = &labels {
        check_side_topic(kafka, "labels.topic", &l.topic)?;
    }
    Ok(StateSections {
        state,
        drift,
        labels: labels.map(|(settings, _)| settings),
        windows: window_spec,
    })
}

/// `[serve]`: an address, a deadline and limits. With windows kept per
/// partition, a request goes to the instance holding its key's partition:
/// that needs the key (`windows.partition_key`), the changelog (which
/// carries who holds each partition) and an address the others can reach.
fn check_serve(
    section: &ServeSection,
    windows: Option<&crate::windows::WindowSpec>,
    state: Option<&StateSettings>,
) -> Result<ServeSettings, Invalid> {
    let Ok(listen) = section.listen.parse::<std::net::SocketAddr>() else {
        return Err((
            "serve.listen",
            format!(
                "is `{}`; it must be an address and port such as 127.0.0.1:8080",
                section.listen
            ),
        ));
    };
    if section.deadline_ms == 0 {
        return Err(("serve.deadline_ms", "must be at least 1".into()));
    }
    let fallback = match section.fallback.as_str() {
        "none" => None,
        "pass" => Some(Fallback::Pass),
        "flag" => Some(Fallback::Flag),
        other => {
            return Err((
                "serve.fallback",
                format!("is `{other}`; it must be \"none\", \"pass\" or \"flag\""),
            ));
        }
    };
    if !(1..=10_000).contains(&section.max_items) {
        return Err(("serve.max_items", "must be between 1 and 10000".into()));
    }
    if !(1..=64).contains(&section.threads) {
        return Err(("serve.threads", "must be between 1 and 64".into()));
    }
    if section.max_body_bytes < 1024 {
        return Err(("serve.max_body_bytes", "must be at least 1024".into()));
    }
    let partitioner = match section.partitioner.as_str() {
        "consistent_random" | "consistent" => Partitioner::Consistent,
        "murmur2_random" | "murmur2" => Partitioner::Murmur2,
        other => {
            return Err((
                "serve.partitioner",
                format!(
                    "is `{other}`; it must be \"consistent_random\" (librdkafka's default) \
                     or \"murmur2_random\" (the Java client's), as the input's producers use"
                ),
            ));
        }
    };
    let routing = match windows.filter(|w| w.scope == crate::windows::Scope::Partition) {
        None => None,
        Some(windows) => Some(check_routing(section, windows, state, listen)?),
    };
    Ok(ServeSettings {
        listen: section.listen.clone(),
        deadline: Duration::from_millis(section.deadline_ms),
        fallback,
        publish: section.publish,
        max_items: section.max_items,
        max_body_bytes: section.max_body_bytes,
        advertise: section.advertise.clone(),
        routing,
        partitioner,
        threads: section.threads,
    })
}

/// What serving several instances, each holding part of the keys, needs.
fn check_routing(
    section: &ServeSection,
    windows: &crate::windows::WindowSpec,
    state: Option<&StateSettings>,
    listen: std::net::SocketAddr,
) -> Result<Routing, Invalid> {
    let Some(key) = windows.partition_key.clone() else {
        return Err((
            "serve",
            "with `windows.scope = \"partition\"` needs `windows.partition_key`, the field \
             the input is keyed by: a request is scored where its key's partition is held"
                .into(),
        ));
    };
    if state.is_none_or(|s| s.changelog_topic.is_none()) {
        return Err((
            "serve",
            "with `windows.scope = \"partition\"` needs `state.changelog = true`: the \
             changelog tells each instance which one holds a partition"
                .into(),
        ));
    }
    if listen.ip().is_unspecified() && section.advertise.is_none() {
        return Err((
            "serve.advertise",
            format!(
                "must be set when listening on {listen}: the other instances forward \
                 requests to it (for example \"http://10.0.0.5:8080\")"
            ),
        ));
    }
    Ok(Routing { key })
}

/// `[kafka]`: every name set, and no output topic that is also the input
/// (its scores would be scored again) or that mixes a challenger's scores
/// with the champion's.
fn check_kafka(k: &KafkaSection) -> Result<(), Invalid> {
    for (key, value) in [
        ("kafka.brokers", &k.brokers),
        ("kafka.group_id", &k.group_id),
        ("kafka.input_topic", &k.input_topic),
        ("kafka.output_topic", &k.output_topic),
        ("kafka.dead_letter_topic", &k.dead_letter_topic),
    ] {
        if value.trim().is_empty() {
            return Err((key, "must not be empty".into()));
        }
    }
    if k.output_topic == k.input_topic
        || k.dead_letter_topic == k.input_topic
        || k.shadow_topic.as_ref() == Some(&k.input_topic)
    {
        return Err((
            "kafka.input_topic",
            "must differ from the output, shadow and dead-letter topics, or scores would be \
             scored again"
                .into(),
        ));
    }
    if let Some(shadow) = &k.shadow_topic
        && (shadow == &k.output_topic || shadow == &k.dead_letter_topic)
    {
        return Err((
            "kafka.shadow_topic",
            "must differ from the output and dead-letter topics: a challenger's scores \
             must never pass for the champion's"
                .into(),
        ));
    }
    Ok(())
}

/// `[kafka.consumer]` and `[kafka.producer]`: no property that would void
/// at-least-once; gives the producer's `message.max.bytes`.
fn check_client_properties(
    k: &KafkaSection,
) -> Result<usize, (&'static str, client_properties::Refused)> {
    client_properties::check_consumer(&k.consumer).map_err(|r| ("kafka.consumer", r))?;
    client_properties::check_producer(&k.producer).map_err(|r| ("kafka.producer", r))?;
    client_properties::message_max_bytes(&k.producer).map_err(|r| ("kafka.producer", r))
}

/// `[batch]` and `[dead_letter]`: sizes within reach, and a dead letter's
/// payload that fits the producer's largest message beside its headers.
fn check_batch(
    batch: &BatchSection,
    dead_letter: &DeadLetterSection,
    message_max_bytes: usize,
) -> Result<(), Invalid> {
    if batch.max_rows == 0 || batch.max_rows > 1_000_000 {
        return Err(("batch.max_rows", "must be between 1 and 1000000".into()));
    }
    if !(1..=64).contains(&batch.max_in_flight) {
        return Err(("batch.max_in_flight", "must be between 1 and 64".into()));
    }
    if batch.max_bytes < 1024 {
        return Err(("batch.max_bytes", "must be at least 1024".into()));
    }
    // Headers (kind, message, provenance) and the key need room too.
    let dead_letter_room = message_max_bytes.saturating_sub(DEAD_LETTER_OVERHEAD);
    if !(1..=dead_letter_room).contains(&dead_letter.max_payload_bytes) {
        return Err((
            "dead_letter.max_payload_bytes",
            format!(
                "is {}; it must be between 1 and {dead_letter_room} (the producer's \
                 message.max.bytes, {message_max_bytes}, less {DEAD_LETTER_OVERHEAD} bytes \
                 for headers and key)",
                dead_letter.max_payload_bytes
            ),
        ));
    }
    if batch.linger_ms == 0 {
        return Err(("batch.linger_ms", "must be at least 1".into()));
    }
    Ok(())
}

/// `[transform]`: when a batch's SQL failures mean the SQL is wrong.
fn check_transform(transform: &TransformSection) -> Result<SqlFailureLimit, Invalid> {
    let share = transform.max_failed_share;
    if !(share > 0.0 && share <= 1.0) {
        return Err((
            "transform.max_failed_share",
            format!("is {share}; it must lie in (0, 1]"),
        ));
    }
    Ok(SqlFailureLimit {
        max_share: share,
        min_rows: transform.min_failed_rows_to_stop,
    })
}

/// `[telemetry]`, `[admin]` and `[shutdown]`: intervals of at least 1 ms
/// and an admin address that parses.
fn check_service(
    telemetry: &TelemetrySection,
    admin: &AdminSection,
    shutdown: &ShutdownSection,
) -> Result<(), Invalid> {
    if telemetry.status_interval_ms == 0 {
        return Err(("telemetry.status_interval_ms", "must be at least 1".into()));
    }
    if admin.enabled && admin.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err((
            "admin.listen",
            format!(
                "is `{}`; it must be an address and port such as 127.0.0.1:9464",
                admin.listen
            ),
        ));
    }
    if shutdown.drain_timeout_ms == 0 {
        return Err(("shutdown.drain_timeout_ms", "must be at least 1".into()));
    }
    Ok(())
}

/// `[schema]`'s limits.
fn check_schema_limits(schema: &SchemaSection) -> Result<(), Invalid> {
    if schema.max_record_bytes == 0 {
        return Err(("schema.max_record_bytes", "must be at least 1".into()));
    }
    Ok(())
}

/// `schema.event_id_field`: a required string or int64 field, which every
/// score echoes.
fn check_event_id(schema: &RecordSchema, path: &Path, field: &str) -> Result<(), Invalid> {
    match schema.field(field) {
        Some(f) if matches!(f.field_type, FieldType::String | FieldType::Int64) && f.required => {
            Ok(())
        }
        _ => Err((
            "schema.event_id_field",
            format!(
                "names `{field}`, which must be a required string or int64 field of {}",
                path.display()
            ),
        )),
    }
}

/// A topic beside the stream (alerts, labels) that must not be one of the
/// stream's own.
fn check_side_topic(k: &KafkaSection, key: &'static str, topic: &str) -> Result<(), Invalid> {
    if [&k.input_topic, &k.output_topic, &k.dead_letter_topic]
        .iter()
        .any(|t| t.as_str() == topic)
    {
        return Err((
            key,
            "must differ from the input, output and dead-letter topics".into(),
        ));
    }
    Ok(())
}
