//! What the engine writes: one score record per valid input, and the
//! dead-letter copy of every refused one. Both are plain data here; the sink
//! decides how they travel.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::batch::SourceRecord;
use crate::model::{Lineup, Role};
use crate::reject::RejectKind;

/// The JSON value on the output topic (documented in `schemas/score.json`).
/// Strings borrow, so that serialising a batch of them allocates little.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreRecord<'a> {
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub topic: Cow<'a, str>,
    pub partition: i32,
    pub offset: i64,
    /// Probability of fraud, 0..1.
    pub score: f64,
    pub decision: Decision,
    #[serde(borrow)]
    pub model_name: Cow<'a, str>,
    #[serde(borrow)]
    pub model_version: Cow<'a, str>,
    /// `champion` on the output topic, `challenger` on the shadow topic.
    pub role: Role,
    /// Features that raised the score most, largest first.
    #[serde(borrow)]
    pub reasons: Vec<ReasonRecord<'a>>,
    /// With `model.include_features`: the model's input values by name,
    /// window features included, as the model saw them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<std::collections::BTreeMap<Cow<'a, str>, f64>>,
    /// RFC 3339, UTC.
    #[serde(borrow)]
    pub scored_at: Cow<'a, str>,
}

/// One reason on a score: the feature and how much it raised the score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReasonRecord<'a> {
    #[serde(borrow)]
    pub feature: Cow<'a, str>,
    pub contribution: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// At or above the threshold: hold for review or decline.
    Flag,
    Pass,
}

/// A score to produce: key and payload as bytes, and the index in its batch
/// of the record it answers (should Kafka refuse the score, that record is
/// dead-lettered instead).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub source_index: usize,
}

/// A refused input with headers that say why: its key and payload
/// unchanged, the payload cut to a size the producer can always send.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The payload's size as sent; more than `payload` holds when it was cut.
    pub original_size: usize,
    pub kind: RejectKind,
    pub message: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
}

/// Header names on dead-letter messages.
pub mod headers {
    pub const ERROR_KIND: &str = "streamscore.error.kind";
    pub const ERROR_MESSAGE: &str = "streamscore.error.message";
    pub const SOURCE_TOPIC: &str = "streamscore.source.topic";
    pub const SOURCE_PARTITION: &str = "streamscore.source.partition";
    pub const SOURCE_OFFSET: &str = "streamscore.source.offset";
    /// The payload's size in bytes as it was sent.
    pub const PAYLOAD_ORIGINAL_BYTES: &str = "streamscore.payload.original_bytes";
    /// `true` when the dead letter carries only the first bytes of the
    /// payload (or none of it).
    pub const PAYLOAD_TRUNCATED: &str = "streamscore.payload.truncated";
}

impl DeadLetter {
    /// The dead letter of `record` (from a batch of `topic`), its payload
    /// cut to at most `max_payload_bytes`.
    pub fn for_record(
        record: &SourceRecord,
        topic: &str,
        kind: RejectKind,
        message: String,
        max_payload_bytes: usize,
    ) -> Self {
        let payload = record
            .payload
            .as_ref()
            .map(|p| p[..p.len().min(max_payload_bytes)].to_vec());
        Self {
            key: record.key.clone(),
            payload,
            original_size: record.payload_size,
            kind,
            message,
            source_topic: topic.to_owned(),
            source_partition: record.partition,
            source_offset: record.offset,
        }
    }

    pub fn is_truncated(&self) -> bool {
        self.payload.as_ref().map_or(0, Vec::len) < self.original_size
    }

    /// The headers as (name, value) pairs, in a fixed order.
    pub fn header_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (headers::ERROR_KIND, self.kind.as_str().to_owned()),
            (headers::ERROR_MESSAGE, self.message.clone()),
            (headers::SOURCE_TOPIC, self.source_topic.clone()),
            (headers::SOURCE_PARTITION, self.source_partition.to_string()),
            (headers::SOURCE_OFFSET, self.source_offset.to_string()),
            (
                headers::PAYLOAD_ORIGINAL_BYTES,
                self.original_size.to_string(),
            ),
        ];
        if self.is_truncated() {
            pairs.push((headers::PAYLOAD_TRUNCATED, "true".to_owned()));
        }
        pairs
    }
}

/// Everything one batch produces.
#[derive(Debug, Default)]
pub struct BatchOutput {
    pub scores: Vec<Outgoing>,
    /// The challenger's scores, for the shadow topic.
    pub shadow: Vec<Outgoing>,
    /// Drift alerts raised or cleared by the windows the batch closed, for
    /// the alerts topic.
    pub alerts: Vec<Outgoing>,
    pub dead_letters: Vec<DeadLetter>,
    pub flagged: usize,
    /// The models loaded to score the batch.
    pub lineup: Option<Arc<Lineup>>,
    /// The batch's state changes and offsets, for the checkpoint once its
    /// outputs are acknowledged; none when the pipeline keeps no state.
    pub staged: Option<crate::state::Staged>,
}
