//! Scoring a batch with a logistic-regression bundle, column at a time.

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use ndarray::{Array1, Array2, ArrayView1, Zip};

use super::ModelBundle;
use crate::reject::RejectKind;

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
    /// Rows the model could not score, in row order: (row, kind, why).
    pub invalid: Vec<(usize, RejectKind, String)>,
}

impl ModelBundle {
    /// Scores every row of `features` (the pipeline SQL output). A row with a
    /// null or non-finite feature, or whose log-odds overflow (a finite but
    /// huge feature), is reported in `invalid`, not scored: an infinite
    /// logit would otherwise pass as a score of exactly 0 or 1.
    pub fn score(&self, features: &RecordBatch) -> Result<Scores, ArrowError> {
        let rows = features.num_rows();
        let k = self.features.len();
        let mut invalid_reason: Vec<Option<(RejectKind, String)>> = vec![None; rows];
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
                    *reason = Some((
                        RejectKind::InvalidFeature,
                        format!("feature `{name}` is null or not a finite number"),
                    ));
                }
            }
        }
        let logit: Array1<f64> = contributions.sum_axis(ndarray::Axis(0)) + self.intercept;
        for (reason, z) in invalid_reason.iter_mut().zip(&logit) {
            if reason.is_none() && !z.is_finite() {
                *reason = Some((
                    RejectKind::NonFiniteScore,
                    "the model's log-odds are not finite: a feature value is too large for \
                     the model's weights"
                        .into(),
                ));
            }
        }
        let probability = logit.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect();
        let reasons = (0..rows)
            .map(|i| top_reasons(contributions.column(i)))
            .collect();
        let invalid = invalid_reason
            .into_iter()
            .enumerate()
            .filter_map(|(i, reason)| reason.map(|(kind, why)| (i, kind, why)))
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
        let why = |f: &str| format!("feature `{f}` is null or not a finite number");
        assert_eq!(
            scores.invalid,
            vec![
                (1, RejectKind::InvalidFeature, why("c")),
                (2, RejectKind::InvalidFeature, why("a")),
            ]
        );
    }

    /// A finite feature so large that its contribution overflows: the logit
    /// is infinite, and 1/(1+e^-z) would have been a confident 1.0 (flag) or
    /// 0.0 (pass) that no feature supports.
    #[test]
    fn an_overflowing_logit_is_not_a_score() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("c", DataType::Float64, true),
        ]));
        let column = |v: Vec<f64>| Arc::new(Float64Array::from(v)) as arrow::array::ArrayRef;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                column(vec![1.0, 1.0, 1.0]),
                column(vec![0.0, 0.0, 0.0]),
                // c's weight is 2: 2e308 overflows to infinity.
                column(vec![1e308, -1e308, 0.0]),
            ],
        )
        .unwrap();
        let scores = bundle().score(&batch).unwrap();
        let kinds: Vec<(usize, RejectKind)> = scores
            .invalid
            .iter()
            .map(|(row, kind, _)| (*row, *kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, RejectKind::NonFiniteScore),
                (1, RejectKind::NonFiniteScore)
            ]
        );
        assert!(scores.probability[2].is_finite());
    }
}
