//! Scoring a batch with a logistic-regression bundle, column at a time.

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use ndarray::{Array1, Array2, ArrayView1, Zip};

use super::ModelBundle;

/// How many reason codes each score carries.
pub const REASON_COUNT: usize = 3;

/// The model's answer for each row of a feature batch.
#[derive(Debug, Default)]
pub struct Scores {
    /// Probability of fraud, per row; meaningless for rows in `invalid`.
    pub probability: Vec<f64>,
    /// Per row, the features that pushed the score up most, as indexes into
    /// the bundle's feature list, largest first.
    pub reasons: Vec<[Option<u16>; REASON_COUNT]>,
    /// Rows the model could not score: (row, why).
    pub invalid: Vec<(usize, String)>,
}

impl ModelBundle {
    /// Scores every row of `features` (the pipeline SQL output). A row with a
    /// null or non-finite feature is reported in `invalid`, not scored.
    pub fn score(&self, features: &RecordBatch) -> Result<Scores, ArrowError> {
        let rows = features.num_rows();
        let k = self.features.len();
        let mut invalid_reason: Vec<Option<String>> = vec![None; rows];
        // contributions[j, i]: how much feature j adds to row i's log-odds.
        let mut contributions = Array2::<f64>::zeros((k, rows));
        for (j, name) in self.features.iter().enumerate() {
            let column = features.column_by_name(name).ok_or_else(|| {
                ArrowError::SchemaError(format!("feature column `{name}` is missing"))
            })?;
            let column = cast(column, &DataType::Float64)?;
            let values = column.as_primitive::<Float64Type>();
            let weight = self.coefficients[j] / self.std[j];
            let mean = self.mean[j];
            Zip::from(contributions.row_mut(j))
                .and(&ArrayView1::from(values.values().as_ref()))
                .for_each(|c, &x| *c = (x - mean) * weight);
            for (i, reason) in invalid_reason.iter_mut().enumerate() {
                if reason.is_none() && (values.is_null(i) || !values.value(i).is_finite()) {
                    *reason = Some(format!("feature `{name}` is null or not a finite number"));
                }
            }
        }
        let logit: Array1<f64> = contributions.sum_axis(ndarray::Axis(0)) + self.intercept;
        let probability = logit.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect();
        let reasons = (0..rows)
            .map(|i| top_reasons(contributions.column(i)))
            .collect();
        let invalid = invalid_reason
            .into_iter()
            .enumerate()
            .filter_map(|(i, reason)| reason.map(|r| (i, r)))
            .collect();
        Ok(Scores {
            probability,
            reasons,
            invalid,
        })
    }
}

/// The features with the largest positive contributions, largest first.
fn top_reasons(contributions: ArrayView1<f64>) -> [Option<u16>; REASON_COUNT] {
    let mut top: [Option<(u16, f64)>; REASON_COUNT] = [None; REASON_COUNT];
    for (j, &c) in contributions.iter().enumerate() {
        if c.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let Some(slot) = top.iter().position(|t| t.is_none_or(|(_, v)| c > v)) else {
            continue;
        };
        top[slot..].rotate_right(1);
        top[slot] = Some((j as u16, c));
    }
    top.map(|t| t.map(|(j, _)| j))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::model::BUNDLE_FORMAT;

    fn bundle() -> ModelBundle {
        ModelBundle {
            format: BUNDLE_FORMAT.into(),
            name: "t".into(),
            version: "1".into(),
            features: vec!["a".into(), "b".into(), "c".into()],
            mean: vec![1.0, 0.0, 0.0],
            std: vec![2.0, 1.0, 1.0],
            coefficients: vec![0.5, -1.0, 2.0],
            intercept: -0.25,
            threshold: 0.5,
            trained: BTreeMap::new(),
        }
    }

    #[test]
    fn scores_match_the_logistic_formula_and_name_the_reasons() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![Some(5.0), Some(1.0), None])),
                Arc::new(Int64Array::from(vec![Some(-1), Some(2), Some(0)])),
                Arc::new(Float64Array::from(vec![
                    Some(0.1),
                    Some(f64::NAN),
                    Some(0.0),
                ])),
            ],
        )
        .unwrap();
        let scores = bundle().score(&batch).unwrap();
        // Row 0: (5-1)/2*0.5 = 1.0, -1*-1 = 1.0, 0.1*2 = 0.2; logit 2.2 - 0.25.
        let expected = 1.0 / (1.0 + (-(1.0 + 1.0 + 0.2 - 0.25f64)).exp());
        assert!((scores.probability[0] - expected).abs() < 1e-12);
        // a and b tie at 1.0; the first one found stays first.
        assert_eq!(scores.reasons[0], [Some(0), Some(1), Some(2)]);
        assert_eq!(
            scores.invalid,
            vec![
                (1, "feature `c` is null or not a finite number".to_string()),
                (2, "feature `a` is null or not a finite number".to_string()),
            ]
        );
    }
}
