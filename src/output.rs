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

/// Writes [`ScoreRecord`]s' JSON byte for byte as serialising them does,
/// with what the records of one batch and model share (the field names, the
/// topic, the model, the role, the time, the reasons' feature names)
/// escaped once rather than per record: serialising each record whole
/// was a twelfth of the scoring thread (bench/RESULTS.md, session 14).
/// The rest goes through serde_json; a test holds the two equal.
pub struct ScoreJson {
    /// `,"topic":"…","partition":`
    topic: Vec<u8>,
    /// `,"model_name":"…","model_version":"…","role":"…","reasons":[`
    model: Vec<u8>,
    /// Per model feature: `{"feature":"…","contribution":`
    reason_heads: Vec<Vec<u8>>,
    /// `,"scored_at":"…"}`
    tail: Vec<u8>,
}

/// `,"name":value`, appended.
fn append_field(out: &mut Vec<u8>, name: &str, value: &(impl Serialize + ?Sized)) {
    out.push(b',');
    append_json(out, name);
    out.push(b':');
    append_json(out, value);
}

/// `value` as JSON, appended: infallible for the strings and numbers given
/// it here (serde_json fails only on a writer's error or a map with
/// non-string keys; a Vec never fails to take bytes).
fn append_json(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    let _ = serde_json::to_writer(out, value);
}

impl ScoreJson {
    pub fn new<'f>(
        topic: &str,
        model_name: &str,
        model_version: &str,
        role: Role,
        features: impl Iterator<Item = &'f str>,
        scored_at: &str,
    ) -> Self {
        let mut head = Vec::new();
        append_field(&mut head, "topic", topic);
        head.extend_from_slice(b",\"partition\":");
        let mut model = Vec::new();
        append_field(&mut model, "model_name", model_name);
        append_field(&mut model, "model_version", model_version);
        append_field(&mut model, "role", &role);
        model.extend_from_slice(b",\"reasons\":[");
        let reason_heads = features
            .map(|name| {
                let mut head = b"{\"feature\":".to_vec();
                append_json(&mut head, name);
                head.extend_from_slice(b",\"contribution\":");
                head
            })
            .collect();
        let mut tail = Vec::new();
        append_field(&mut tail, "scored_at", scored_at);
        tail.push(b'}');
        Self {
            topic: head,
            model,
            reason_heads,
            tail,
        }
    }

    /// Appends one record. `reasons` are (feature index, contribution);
    /// `features` the input values by name, when scores carry them.
    #[allow(clippy::too_many_arguments)]
    pub fn write<'f>(
        &self,
        out: &mut Vec<u8>,
        event_id: &str,
        partition: i32,
        offset: i64,
        score: f64,
        decision: Decision,
        reasons: impl Iterator<Item = (usize, f64)>,
        features: Option<&std::collections::BTreeMap<Cow<'f, str>, f64>>,
    ) {
        out.extend_from_slice(b"{\"event_id\":");
        append_json(out, event_id);
        out.extend_from_slice(&self.topic);
        append_json(out, &partition);
        out.extend_from_slice(b",\"offset\":");
        append_json(out, &offset);
        out.extend_from_slice(b",\"score\":");
        append_json(out, &score);
        out.extend_from_slice(match decision {
            Decision::Flag => b",\"decision\":\"flag\"",
            Decision::Pass => b",\"decision\":\"pass\"",
        });
        out.extend_from_slice(&self.model);
        for (i, (feature, contribution)) in reasons.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match self.reason_heads.get(feature) {
                Some(head) => out.extend_from_slice(head),
                // Not a feature of this model: said as serde would say an
                // empty name, rather than dropped.
                None => out.extend_from_slice(b"{\"feature\":\"\",\"contribution\":"),
            }
            append_json(out, &contribution);
            out.push(b'}');
        }
        out.push(b']');
        if let Some(features) = features {
            out.extend_from_slice(b",\"features\":");
            append_json(out, features);
        }
        out.extend_from_slice(&self.tail);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the strings and numbers, the pieces give what serialising
    /// the record whole gives.
    #[test]
    fn score_json_writes_what_serialising_the_record_writes() {
        let features = ["amount", "say \"hi\"\n", "naïve\u{1}"];
        let values: std::collections::BTreeMap<Cow<str>, f64> = features
            .iter()
            .map(|name| (Cow::Borrowed(*name), 1.5))
            .collect();
        for (event_id, score, reasons, with_values, role) in [
            (
                "e-1",
                0.25,
                vec![(0, 0.5), (2, -1e-300)],
                false,
                Role::Champion,
            ),
            (
                "quote\"and\\slash",
                f64::NAN,
                vec![],
                true,
                Role::Challenger,
            ),
            (
                "tab\t€",
                1.0,
                vec![(1, f64::INFINITY)],
                true,
                Role::Champion,
            ),
        ] {
            let writer = ScoreJson::new(
                "trans\"actions",
                "fraud-lr",
                "v1 \"b\"",
                role,
                features.iter().copied(),
                "2026-12-07T10:00:00.000Z",
            );
            let decision = if score >= 0.5 {
                Decision::Flag
            } else {
                Decision::Pass
            };
            let mut written = Vec::new();
            writer.write(
                &mut written,
                event_id,
                -3,
                i64::MAX,
                score,
                decision,
                reasons.iter().copied(),
                with_values.then_some(&values),
            );
            let record = ScoreRecord {
                event_id: Cow::Borrowed(event_id),
                topic: Cow::Borrowed("trans\"actions"),
                partition: -3,
                offset: i64::MAX,
                score,
                decision,
                model_name: Cow::Borrowed("fraud-lr"),
                model_version: Cow::Borrowed("v1 \"b\""),
                role,
                reasons: reasons
                    .iter()
                    .map(|&(feature, contribution)| ReasonRecord {
                        feature: Cow::Borrowed(features[feature]),
                        contribution,
                    })
                    .collect(),
                features: with_values.then(|| values.clone()),
                scored_at: Cow::Borrowed("2026-12-07T10:00:00.000Z"),
            };
            let whole = serde_json::to_vec(&record).expect("a record serialises");
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&whole)
            );
        }
    }
}
