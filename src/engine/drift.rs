//! The drift stage: the champion's scored rows counted into the drift
//! windows; the alerts of the windows a batch closes go out with its outputs.

use arrow::record_batch::RecordBatch;

use super::{Engine, EngineError, EngineState, TransformedRows};
use crate::batch::Batch;
use crate::drift::{DriftMonitor, Observation, ScoredRow};
use crate::model::Lineup;
use crate::output::{BatchOutput, Outgoing};

impl Engine {
    /// The state and its drift monitor, when the pipeline monitors drift.
    pub(super) fn drift(&self) -> Option<(&EngineState, &DriftMonitor)> {
        self.state
            .as_ref()
            .and_then(|s| s.drift.as_ref().map(|d| (s, d)))
    }

    /// Counts the champion's scored rows into the drift windows; alerts from
    /// the windows this batch closed go out with its outputs. `decoded` is
    /// the decoded table and, per row, its record's index.
    pub(super) fn observe_drift(
        &self,
        batch: &Batch,
        lineup: &Lineup,
        rows: &TransformedRows,
        (decoded, decoded_index): (&RecordBatch, &[usize]),
        scored: Vec<(usize, usize, f64, bool)>,
        output: &mut BatchOutput,
    ) -> Result<Vec<crate::state::Change>, EngineError> {
        let Some((state, drift)) = self.drift() else {
            return Ok(Vec::new());
        };
        let scored_rows: Vec<ScoredRow> = scored
            .into_iter()
            .filter_map(|(row, index, score, flagged)| {
                // Decoded rows are in record order, so the record's index
                // finds its row.
                let decoded_row = decoded_index.binary_search(&index).ok()?;
                Some(ScoredRow {
                    feature_row: row,
                    decoded_row,
                    partition: batch.records[index].partition,
                    score,
                    flagged,
                })
            })
            .collect();
        let manifest = &lineup.champion.manifest;
        let observed = drift.observe(
            &state.checkpoint,
            &Observation {
                model: &manifest.name,
                version: &manifest.version,
                reference: manifest.reference.as_ref(),
                features: &rows.features,
                decoded,
                rows: &scored_rows,
            },
        )?;
        output.alerts = observed
            .alerts
            .iter()
            .map(|alert| Outgoing {
                key: Some(alert.feature.clone().into_bytes()),
                payload: serde_json::to_vec(alert).expect("an alert serialises"),
                source_index: 0,
            })
            .collect();
        Ok(observed.changes)
    }
}
