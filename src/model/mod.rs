//! Models: the bundle (a manifest and the model's own payload files), the
//! scoring maths behind one [`Model`] enum, training with linfa, and
//! evaluation. The file format (bundle, manifest) and the maths (logistic,
//! later trees and imported models) live apart.

pub mod bundle;
pub mod maths;
pub mod serving;

use std::collections::BTreeMap;

use ndarray::{ArrayView1, ArrayView2};

pub use bundle::manifest::{FeatureSpec, Manifest, ModelKind, Preprocessing};
pub use bundle::{Bundle, BundleError, BundleParts, SharedBundle, is_feature_type};
pub use maths::logistic::Logistic;
pub use serving::slot::{Lineup, ModelSlot, Role};

use maths::{import, logistic, trees};

use crate::reject::RejectKind;

/// Every payload file name any model kind writes.
pub const PAYLOAD_FILES: &[&str] = &[
    logistic::PAYLOAD_FILE,
    trees::PAYLOAD_FILE,
    import::xgboost::PAYLOAD_FILE,
    import::lightgbm::PAYLOAD_FILE,
    import::onnx::PAYLOAD_FILE,
];

/// The payload file an imported kind keeps its original model in.
fn imported_file(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Lightgbm => import::lightgbm::PAYLOAD_FILE,
        ModelKind::Onnx => import::onnx::PAYLOAD_FILE,
        _ => import::xgboost::PAYLOAD_FILE,
    }
}

/// How many reason codes each score carries.
pub const REASON_COUNT: usize = 3;

/// The scoring maths of one bundle.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    Logistic(Logistic),
    /// A tree, a forest or boosted trees trained here: `kind` says which.
    Trees {
        kind: ModelKind,
        ensemble: trees::Ensemble,
    },
    /// Boosted trees from another library: its own file, kept as the
    /// payload, and the ensemble read from it.
    Imported {
        kind: ModelKind,
        file: Vec<u8>,
        ensemble: trees::Ensemble,
    },
    /// Any other model, as ONNX: its file, kept as the payload, planned by
    /// tract. It gives no reasons.
    Onnx {
        file: Vec<u8>,
        model: std::sync::Arc<import::onnx::OnnxModel>,
    },
}

/// What a model says about prepared rows.
pub struct ModelOutput {
    /// Probability of fraud per row; NaN where the model has no finite score.
    pub probability: Vec<f64>,
    pub reasons: Vec<[Option<Reason>; REASON_COUNT]>,
}

/// Which rows get reasons: all, or (where explaining costs more than
/// scoring, as TreeSHAP on a large forest does) only those flagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Explain {
    All,
    AtOrAbove(f64),
}

impl Explain {
    pub fn wants(self, probability: f64) -> bool {
        match self {
            Explain::All => true,
            Explain::AtOrAbove(threshold) => probability >= threshold,
        }
    }
}

/// A feature that raised a score, and by how much: its term in the
/// log-odds for a logistic regression, its SHAP value (log-odds for boosted
/// trees, probability for trees and forests) for tree models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    /// Index into the bundle's feature list.
    pub feature: u16,
    pub contribution: f64,
}

impl Model {
    pub fn kind(&self) -> ModelKind {
        match self {
            Model::Logistic(_) => ModelKind::Logistic,
            Model::Trees { kind, .. } | Model::Imported { kind, .. } => *kind,
            Model::Onnx { .. } => ModelKind::Onnx,
        }
    }

    /// The payload files, by name, as written into a bundle.
    pub fn payload_files(&self) -> Vec<(&'static str, Vec<u8>)> {
        match self {
            Model::Logistic(m) => vec![(logistic::PAYLOAD_FILE, m.to_payload())],
            Model::Trees { ensemble, .. } => vec![(trees::PAYLOAD_FILE, ensemble.to_payload())],
            Model::Imported { kind, file, .. } => vec![(imported_file(*kind), file.clone())],
            Model::Onnx { file, .. } => vec![(import::onnx::PAYLOAD_FILE, file.clone())],
        }
    }

    /// Reads a model of `kind` from its verified payload files. `Err` names
    /// the file and what is wrong with it.
    pub fn from_payload(
        kind: ModelKind,
        files: &BTreeMap<String, Vec<u8>>,
        features: usize,
    ) -> Result<Self, (String, String)> {
        let file = |name: &str| {
            files
                .get(name)
                .ok_or_else(|| (name.to_owned(), "the manifest does not list it".to_owned()))
        };
        match kind {
            ModelKind::Logistic => {
                let name = logistic::PAYLOAD_FILE;
                Logistic::from_payload(file(name)?, features)
                    .map(Model::Logistic)
                    .map_err(|message| (name.to_owned(), message))
            }
            ModelKind::Xgboost | ModelKind::Lightgbm | ModelKind::Onnx => {
                let name = imported_file(kind);
                let bytes = file(name)?;
                Self::import(kind, bytes.clone(), features).map_err(|m| (name.to_owned(), m))
            }
            ModelKind::Tree | ModelKind::Forest | ModelKind::Gbm => {
                let name = trees::PAYLOAD_FILE;
                trees::Ensemble::from_payload(file(name)?, features)
                    .map(|ensemble| Model::Trees { kind, ensemble })
                    .map_err(|message| (name.to_owned(), message))
            }
        }
    }

    /// Scores prepared rows (rows x features, in the manifest's order);
    /// rows `explain` wants get reasons.
    pub fn score(&self, x: ArrayView2<f64>, explain: Explain) -> ModelOutput {
        match self {
            Model::Logistic(m) => m.score(x, explain),
            Model::Trees { ensemble, .. } | Model::Imported { ensemble, .. } => {
                ensemble.score(x, explain)
            }
            Model::Onnx { model, .. } => ModelOutput {
                probability: model.probabilities(x),
                reasons: vec![[None; REASON_COUNT]; x.nrows()],
            },
        }
    }

    /// Probabilities for raw feature rows, prepared by `preprocessing`,
    /// without reasons.
    pub fn predict(&self, preprocessing: &Preprocessing, x: ArrayView2<f64>) -> Vec<f64> {
        let mut x = x.to_owned();
        if let Preprocessing::Standardize { mean, std } = preprocessing {
            x -= &ArrayView1::from(mean);
            x /= &ArrayView1::from(std);
        }
        self.score(x.view(), Explain::AtOrAbove(f64::INFINITY))
            .probability
    }

    /// Reads another library's model file of `kind` for `features` inputs.
    pub fn import(kind: ModelKind, file: Vec<u8>, features: usize) -> Result<Self, String> {
        let ensemble = match kind {
            ModelKind::Xgboost => import::xgboost::parse(&file, features)?,
            ModelKind::Lightgbm => import::lightgbm::parse(&file, features)?,
            ModelKind::Onnx => {
                let model = import::onnx::OnnxModel::parse(&file, features)?;
                return Ok(Model::Onnx {
                    file,
                    model: std::sync::Arc::new(model),
                });
            }
            other => return Err(format!("`{}` models are not imported", other.as_str())),
        };
        Ok(Model::Imported {
            kind,
            file,
            ensemble,
        })
    }
}

/// The model's answer for each row of a feature batch.
#[derive(Debug, Default)]
pub struct Scores {
    /// Probability of fraud, per row; meaningless for rows in `invalid`.
    pub probability: Vec<f64>,
    /// Per row, the features that pushed the score up most, largest first.
    pub reasons: Vec<[Option<Reason>; REASON_COUNT]>,
    /// Rows the model could not score, in row order: (row, kind, why).
    pub invalid: Vec<(usize, RejectKind, String)>,
    /// The input values (rows x features), when the scores are to carry
    /// them.
    pub inputs: Option<ndarray::Array2<f64>>,
}

/// The features with the largest positive contributions, largest first.
pub(crate) fn top_reasons(contributions: ArrayView1<f64>) -> [Option<Reason>; REASON_COUNT] {
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
    top.map(|t| {
        t.map(|(feature, contribution)| Reason {
            feature,
            contribution,
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    use super::bundle::tests::bundle;
    use super::*;

    fn batch(a: ArrayRef, b: ArrayRef, c: ArrayRef) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", a.data_type().clone(), true),
            Field::new("b", b.data_type().clone(), true),
            Field::new("c", c.data_type().clone(), true),
        ]));
        RecordBatch::try_new(schema, vec![a, b, c]).unwrap()
    }

    #[test]
    fn scores_match_the_logistic_formula_and_name_the_reasons() {
        let batch = batch(
            Arc::new(Float64Array::from(vec![Some(5.0), Some(1.0), None])),
            Arc::new(Int64Array::from(vec![Some(-1), Some(2), Some(0)])),
            Arc::new(Float64Array::from(vec![
                Some(0.1),
                Some(f64::NAN),
                Some(0.0),
            ])),
        );
        let scores = bundle().score(&batch).unwrap();
        // Row 0: (5-1)/2*0.5 = 1.0, -1*-1 = 1.0, 0.1*2 = 0.2; logit 2.2 - 0.25.
        let expected = 1.0 / (1.0 + (-(1.0 + 1.0 + 0.2 - 0.25f64)).exp());
        assert!((scores.probability[0] - expected).abs() < 1e-12);
        // a and b tie at 1.0; the first one found stays first.
        let named: Vec<(u16, f64)> = scores.reasons[0]
            .iter()
            .flatten()
            .map(|r| (r.feature, r.contribution))
            .collect();
        assert_eq!(named, [(0, 1.0), (1, 1.0), (2, 0.2)]);
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
        let column = |v: Vec<f64>| Arc::new(Float64Array::from(v)) as ArrayRef;
        let batch = batch(
            column(vec![1.0, 1.0, 1.0]),
            column(vec![0.0, 0.0, 0.0]),
            // c's weight is 2: 2e308 overflows to infinity.
            column(vec![1e308, -1e308, 0.0]),
        );
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
