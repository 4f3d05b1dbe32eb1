//! The scoring stage: the champion (and the challenger, shadowed) scores the
//! SQL's output; one score record per row, or a dead letter for a row the
//! model cannot use.

use std::borrow::Cow;

use super::{Engine, EngineError, Purpose, TransformedRows};
use crate::batch::Batch;
use crate::config::ReasonsFor;
use crate::model::serving::comparison::Pair;
use crate::model::{Bundle, Explain, Lineup, Role, Scores};
use crate::outcomes;
use crate::output::{BatchOutput, Decision, Outgoing, ScoreJson};
use crate::reject::Rejected;

impl Engine {
    /// One bundle's scores of the rows, with the reasons the pipeline
    /// asks for (and the input values, when scores carry them).
    fn scores(
        &self,
        bundle: &Bundle,
        rows: &TransformedRows,
        include_features: bool,
    ) -> Result<Scores, EngineError> {
        let explain = match self.reasons {
            ReasonsFor::All => Explain::All,
            ReasonsFor::Flagged => Explain::AtOrAbove(self.models.threshold(bundle)),
        };
        let mut scores = bundle
            .score_explained(&rows.features, explain)
            .map_err(|e| EngineError::Internal(format!("scoring failed: {e}")))?;
        if include_features {
            scores.inputs =
                Some(bundle.feature_values(&rows.features).map_err(|e| {
                    EngineError::Internal(format!("feature values do not read: {e}"))
                })?);
        }
        Ok(scores)
    }

    /// Scores the SQL output and appends one score record per row (or a
    /// dead letter for a row the model cannot use); with a challenger, also
    /// its shadow score of every row both models can score.
    pub(super) fn score_rows(
        &self,
        batch: &Batch,
        rows: &TransformedRows,
        lineup: &Lineup,
        purpose: Purpose,
        output: &mut BatchOutput,
        rejected: &mut Vec<Rejected>,
    ) -> Result<ScoredRows, EngineError> {
        let include_features = match purpose {
            Purpose::Stream => self.include_features,
            Purpose::Request { include_features } => include_features,
        };
        let keeps_scores = self
            .state
            .as_ref()
            .filter(|s| s.labels.is_some())
            .and_then(|s| s.windows.as_ref());
        let mut kept = Vec::new();
        let mut scored = Vec::new();
        let champion = self.scores(&lineup.champion, rows, include_features)?;
        // The challenger shadows the stream; a request is scored by it when
        // the record arrives on the topic.
        let challenger = match (&lineup.challenger, purpose) {
            (Some(bundle), Purpose::Stream) => {
                Some((bundle, self.scores(bundle, rows, include_features)?))
            }
            _ => None,
        };
        let champion_threshold = self.models.threshold(&lineup.champion);
        let writer = RecordWriter::new(
            batch,
            rows,
            &lineup.champion,
            challenger.as_ref().map(|(bundle, _)| -> &Bundle { bundle }),
        );
        let mut pairs = Vec::new();
        let mut champion_invalid = champion.invalid.iter().peekable();
        let mut challenger_invalid = challenger
            .as_ref()
            .map(|(_, scores)| scores.invalid.iter().peekable());
        for (row, &index) in rows.source_index.iter().enumerate() {
            let challenger_cannot = challenger_invalid
                .as_mut()
                .is_some_and(|invalid| invalid.next_if(|(r, _, _)| *r == row).is_some());
            if let Some((_, kind, reason)) = champion_invalid.next_if(|(r, _, _)| *r == row) {
                rejected.push(Rejected {
                    index,
                    kind: *kind,
                    message: reason.clone(),
                });
                continue;
            }
            let flags = champion.probability[row] >= champion_threshold;
            output.flagged += usize::from(flags);
            scored.push((row, index, champion.probability[row], flags));
            if let Some(windows) = keeps_scores {
                kept.push((
                    windows.scoped(batch.records[index].partition),
                    rows.event_ids.value(row),
                    champion.probability[row],
                ));
            }
            output
                .scores
                .push(writer.record(row, &writer.champion, &champion, flags)?);
            let (Some(model), Some((bundle, scores))) = (
                &writer.challenger,
                challenger.as_ref().filter(|_| !challenger_cannot),
            ) else {
                continue;
            };
            let challenger_flags = scores.probability[row] >= self.models.threshold(bundle);
            output
                .shadow
                .push(writer.record(row, model, scores, challenger_flags)?);
            pairs.push(Pair {
                champion: champion.probability[row],
                challenger: scores.probability[row],
                champion_flags: flags,
                challenger_flags,
            });
        }
        // A request is scored again when it arrives on the topic: compared
        // then, once.
        if !pairs.is_empty() && matches!(purpose, Purpose::Stream) {
            self.models.compare(pairs);
        }
        Ok(ScoredRows {
            kept: outcomes::keep_scores(kept.into_iter()),
            rows: scored,
        })
    }
}

/// What scoring a batch gives besides its outputs.
pub(super) struct ScoredRows {
    /// The changes that keep the champion's scores for their labels (none
    /// unless the pipeline reads labels).
    pub kept: Vec<crate::state::Change>,
    /// The champion's scored rows: feature row, record index, score, flag.
    pub rows: Vec<(usize, usize, f64, bool)>,
}

/// Builds score records for the rows of one batch.
struct RecordWriter<'a> {
    batch: &'a Batch,
    rows: &'a TransformedRows,
    champion: ModelRecords<'a>,
    challenger: Option<ModelRecords<'a>>,
    /// The longest record written so far in the batch: the next one's
    /// buffer starts that large rather than growing to it.
    payload_bytes: std::cell::Cell<usize>,
}

/// One model's score records in a batch: its bundle (whose feature names
/// the records' features carry) and the pieces its records share.
struct ModelRecords<'a> {
    bundle: &'a Bundle,
    json: ScoreJson,
}

impl<'a> RecordWriter<'a> {
    fn new(
        batch: &'a Batch,
        rows: &'a TransformedRows,
        champion: &'a Bundle,
        challenger: Option<&'a Bundle>,
    ) -> Self {
        let scored_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let model = |bundle: &'a Bundle, role: Role| ModelRecords {
            bundle,
            json: ScoreJson::new(
                &batch.topic,
                bundle.name(),
                bundle.version(),
                role,
                bundle.manifest.feature_names(),
                &scored_at,
            ),
        };
        Self {
            batch,
            rows,
            champion: model(champion, Role::Champion),
            challenger: challenger.map(|bundle| model(bundle, Role::Challenger)),
            payload_bytes: std::cell::Cell::new(0),
        }
    }

    /// Row `row`'s score record by `model`.
    fn record(
        &self,
        row: usize,
        model: &ModelRecords,
        scores: &Scores,
        flags: bool,
    ) -> Result<Outgoing, EngineError> {
        let index = self.rows.source_index[row];
        let record = &self.batch.records[index];
        let features = scores.inputs.as_ref().map(|inputs| {
            model
                .bundle
                .manifest
                .feature_names()
                .zip(inputs.row(row))
                .map(|(name, value)| (Cow::Borrowed(name), *value))
                .collect()
        });
        let mut payload = Vec::with_capacity(self.payload_bytes.get());
        model.json.write(
            &mut payload,
            self.rows.event_ids.value(row),
            record.partition,
            record.offset,
            scores.probability[row],
            if flags {
                Decision::Flag
            } else {
                Decision::Pass
            },
            scores.reasons[row]
                .iter()
                .flatten()
                .map(|reason| (usize::from(reason.feature), reason.contribution)),
            features.as_ref(),
        );
        self.payload_bytes
            .set(self.payload_bytes.get().max(payload.len()));
        Ok(Outgoing {
            key: record.key.clone(),
            payload,
            source_index: index,
        })
    }
}
