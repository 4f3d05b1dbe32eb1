//! Logistic regression: the maths only. The payload file (`model.json`)
//! holds the coefficients and the intercept; the manifest holds the rest.

use ndarray::{Array1, ArrayView1, ArrayView2, Zip};
use serde::{Deserialize, Serialize};

use crate::model::{Explain, ModelOutput, REASON_COUNT, top_reasons};

/// The payload file of a logistic bundle.
pub const PAYLOAD_FILE: &str = "model.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logistic {
    /// One per feature, in the manifest's feature order, on the prepared
    /// (standardised) scale.
    pub coefficients: Vec<f64>,
    pub intercept: f64,
}

impl Logistic {
    /// Reads the payload for a model of `features` inputs.
    pub fn from_payload(bytes: &[u8], features: usize) -> Result<Self, String> {
        let model: Logistic = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if model.coefficients.len() != features {
            return Err(format!(
                "`coefficients` has {} values for {features} features",
                model.coefficients.len()
            ));
        }
        if !model
            .coefficients
            .iter()
            .chain([&model.intercept])
            .all(|v| v.is_finite())
        {
            return Err("`coefficients` and `intercept` must be finite numbers".into());
        }
        Ok(model)
    }

    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a logistic model serialises")
    }

    /// Scores prepared rows (rows x features). The reasons are the features
    /// whose terms raise the log-odds most. A row whose log-odds overflow (a
    /// finite but huge feature) gets a NaN probability: 1/(1+e^-inf) would
    /// pass as a confident 0 or 1 that no feature supports.
    pub fn score(&self, x: ArrayView2<f64>, explain: Explain) -> ModelOutput {
        let mut probability = Vec::with_capacity(x.nrows());
        let mut reasons = Vec::with_capacity(x.nrows());
        // One row's terms at a time: the whole rows x features matrix of
        // them was a batch's largest allocation, and its fresh pages a
        // visible share of the engine's CPU (bench/RESULTS.md, session 12).
        let coefficients = ArrayView1::from(&self.coefficients);
        let mut terms = Array1::zeros(coefficients.len());
        for row in x.rows() {
            Zip::from(&mut terms)
                .and(&row)
                .and(&coefficients)
                .for_each(|term, &value, &coefficient| *term = value * coefficient);
            let z = terms.sum() + self.intercept;
            let p = if z.is_finite() {
                1.0 / (1.0 + (-z).exp())
            } else {
                f64::NAN
            };
            probability.push(p);
            reasons.push(if explain.wants(p) {
                top_reasons(terms.view())
            } else {
                [None; REASON_COUNT]
            });
        }
        ModelOutput {
            probability,
            reasons,
        }
    }
}
