//! A bundle on disk: a directory with `manifest.json` and the model's own
//! payload file(s). Loading verifies everything before anything serves: the
//! manifest's own checksum, each payload file's checksum over its raw bytes,
//! the payload against the manifest, and the check row's score.

pub(crate) mod features;
pub mod foreign;
pub mod manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use crate::model::maths::calibration::Calibration;
use crate::model::{Model, Scores};
use crate::reject::RejectKind;
use features::feature_matrix;
use manifest::{
    BUNDLE_FORMAT, CheckRow, FeatureSpec, MANIFEST_FILE, Manifest, Preprocessing, sha256,
};

/// How far the check row's score may move between writing and loading.
const CHECK_ROW_TOLERANCE: f64 = 1e-9;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read model bundle {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("model bundle {path}: the manifest is not valid: {message}")]
    Manifest { path: String, message: String },
    #[error(
        "model bundle {path}: payload file {file} has checksum {computed}, but the manifest \
         says {expected}; the file was changed or truncated after the bundle was written"
    )]
    Checksum {
        path: String,
        file: String,
        expected: String,
        computed: String,
    },
    #[error("model bundle {path}: payload file {file} is not valid: {message}")]
    Payload {
        path: String,
        file: String,
        message: String,
    },
    #[error(
        "model bundle {path}: the check row scores {computed}, but the bundle was written \
         with {expected}; the payload does not compute what was trained"
    )]
    CheckRow {
        path: String,
        expected: f64,
        computed: f64,
    },
    #[error("model {model} does not fit this pipeline: {message}")]
    DoesNotFit { model: String, message: String },
    #[error("cannot write model bundle {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl BundleError {
    /// A short, bounded label for metrics (`reason="checksum"`).
    pub fn reason(&self) -> &'static str {
        match self {
            BundleError::Read { .. } => "unreadable",
            BundleError::Manifest { .. } => "invalid_manifest",
            BundleError::Checksum { .. } => "checksum",
            BundleError::Payload { .. } => "invalid_payload",
            BundleError::CheckRow { .. } => "check_row",
            BundleError::DoesNotFit { .. } => "does_not_fit",
            BundleError::Write { .. } => "unwritable",
        }
    }
}

/// What a new bundle is made from; [`Bundle::assemble`] adds the checksums
/// and the check row's score.
pub struct BundleParts {
    pub name: String,
    pub version: String,
    pub features: Vec<FeatureSpec>,
    pub preprocessing: Preprocessing,
    pub threshold: f64,
    pub provenance: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    pub model: Model,
    /// A real feature row (a training row, say), kept to score again on load.
    pub check_features: Vec<f64>,
}

/// A verified bundle, ready to score.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    pub model: Model,
}

/// A bundle shared between the engine and whoever swaps it.
pub type SharedBundle = Arc<Bundle>;

impl Bundle {
    pub fn assemble(parts: BundleParts) -> Result<Self, BundleError> {
        let payload = parts
            .model
            .payload_files()
            .iter()
            .map(|(file, bytes)| ((*file).to_owned(), sha256(bytes)))
            .collect();
        let mut bundle = Bundle {
            manifest: Manifest {
                format: BUNDLE_FORMAT.into(),
                name: parts.name,
                version: parts.version,
                kind: parts.model.kind(),
                features: parts.features,
                preprocessing: parts.preprocessing,
                threshold: parts.threshold,
                provenance: parts.provenance,
                metrics: parts.metrics,
                reference: None,
                cv: None,
                calibration: None,
                check_row: CheckRow {
                    features: parts.check_features,
                    score: f64::NAN,
                },
                payload,
            },
            model: parts.model,
        };
        let origin = format!("{} {}", bundle.name(), bundle.version());
        bundle.manifest.check_row.score =
            bundle
                .score_check_row()
                .map_err(|message| BundleError::Manifest {
                    path: origin.clone(),
                    message,
                })?;
        // What is written is what loads: the same checks, before any file.
        Manifest::from_json(&bundle.manifest.to_json()).map_err(|message| {
            BundleError::Manifest {
                path: origin,
                message,
            }
        })?;
        Ok(bundle)
    }

    /// The bundle serving `calibration` of its model's scores (`None`:
    /// the scores as they are); its check row is scored again, and the
    /// manifest checked as a load would.
    pub fn with_calibration(
        mut self,
        calibration: Option<Calibration>,
    ) -> Result<Self, BundleError> {
        self.manifest.calibration = calibration;
        let origin = format!("{} {}", self.name(), self.version());
        let manifest_error = |message| BundleError::Manifest {
            path: origin.clone(),
            message,
        };
        self.manifest.check_row.score = self.score_check_row().map_err(manifest_error)?;
        Manifest::from_json(&self.manifest.to_json()).map_err(manifest_error)?;
        Ok(self)
    }

    /// The probability served for the model's score.
    fn calibrated(&self, mut probability: Vec<f64>) -> Vec<f64> {
        if let Some(calibration) = &self.manifest.calibration {
            for p in &mut probability {
                *p = calibration.apply(*p);
            }
        }
        probability
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// Loads a bundle directory (or the `manifest.json` inside one).
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let dir = bundle_dir(path);
        let shown = dir.display().to_string();
        let read = |file: &Path| {
            std::fs::read(file).map_err(|source| BundleError::Read {
                path: file.display().to_string(),
                source,
            })
        };
        let manifest =
            Manifest::from_json(&read(&dir.join(MANIFEST_FILE))?).map_err(|message| {
                BundleError::Manifest {
                    path: shown.clone(),
                    message,
                }
            })?;
        let mut files = BTreeMap::new();
        for (file, expected) in &manifest.payload {
            let bytes = read(&dir.join(file))?;
            let computed = sha256(&bytes);
            if &computed != expected {
                return Err(BundleError::Checksum {
                    path: shown,
                    file: file.clone(),
                    expected: expected.clone(),
                    computed,
                });
            }
            files.insert(file.clone(), bytes);
        }
        let model = Model::from_payload(manifest.kind, &files, manifest.features.len()).map_err(
            |(file, message)| BundleError::Payload {
                path: shown.clone(),
                file,
                message,
            },
        )?;
        let bundle = Bundle { manifest, model };
        let expected = bundle.manifest.check_row.score;
        let computed = bundle
            .score_check_row()
            .map_err(|message| BundleError::Manifest {
                path: shown.clone(),
                message,
            })?;
        // NaN on either side fails too.
        let agrees = (computed - expected).abs() <= CHECK_ROW_TOLERANCE;
        if !agrees {
            return Err(BundleError::CheckRow {
                path: shown,
                expected,
                computed,
            });
        }
        Ok(bundle)
    }

    /// Writes the bundle into `dir` (created if need be): payload first,
    /// manifest last, so a half-written bundle has no manifest. A bundle
    /// already there is replaced whole: its manifest and every payload file
    /// any kind writes go first, so no stale payload is left beside the new.
    pub fn save(&self, dir: &Path) -> Result<(), BundleError> {
        let write = |path: PathBuf, bytes: &[u8]| {
            std::fs::write(&path, bytes).map_err(|source| BundleError::Write {
                path: path.display().to_string(),
                source,
            })
        };
        std::fs::create_dir_all(dir).map_err(|source| BundleError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        for stale in
            std::iter::once(MANIFEST_FILE).chain(crate::model::PAYLOAD_FILES.iter().copied())
        {
            match std::fs::remove_file(dir.join(stale)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(BundleError::Write {
                        path: dir.join(stale).display().to_string(),
                        source: e,
                    });
                }
                _ => {}
            }
        }
        for (file, bytes) in self.model.payload_files() {
            write(dir.join(file), &bytes)?;
        }
        write(dir.join(MANIFEST_FILE), &self.manifest.to_json())
    }

    /// Scores every row of `features` (the pipeline SQL output). A row with
    /// a null or non-finite feature, or that the model cannot give a finite
    /// score, is reported in `invalid`, not scored.
    pub fn score(&self, features: &RecordBatch) -> Result<Scores, ArrowError> {
        self.score_explained(features, crate::model::Explain::All)
    }

    /// The model's input values of each row of the SQL output, before any
    /// preprocessing (rows x features, in the manifest's order).
    pub fn feature_values(
        &self,
        features: &RecordBatch,
    ) -> Result<ndarray::Array2<f64>, ArrowError> {
        Ok(feature_matrix(features, self.manifest.feature_names())?.values)
    }

    /// [`Self::score`], with reasons only for the rows `explain` wants.
    pub fn score_explained(
        &self,
        features: &RecordBatch,
        explain: crate::model::Explain,
    ) -> Result<Scores, ArrowError> {
        let matrix = feature_matrix(features, self.manifest.feature_names())?;
        let mut x = matrix.values;
        if let Preprocessing::Standardize { mean, std } = &self.manifest.preprocessing {
            x -= &ndarray::ArrayView1::from(mean);
            x /= &ndarray::ArrayView1::from(std);
        }
        let output = self.model.score(x.view(), explain);
        let invalid = matrix
            .unusable
            .iter()
            .zip(&output.probability)
            .enumerate()
            .filter_map(|(row, (unusable, p))| match unusable {
                Some(name) => Some((
                    row,
                    RejectKind::InvalidFeature,
                    format!("feature `{name}` is null or not a finite number"),
                )),
                None if !p.is_finite() => Some((
                    row,
                    RejectKind::NonFiniteScore,
                    "the model gives no finite score: a feature value is too large for the \
                     model's weights"
                        .into(),
                )),
                None => None,
            })
            .collect();
        Ok(Scores {
            probability: self.calibrated(output.probability),
            reasons: output.reasons,
            invalid,
            inputs: None,
        })
    }

    /// Probabilities for raw feature rows (rows x features, the manifest's
    /// order), without reasons; `None` if the matrix has another width.
    pub fn score_matrix(&self, x: ndarray::ArrayView2<f64>) -> Option<Vec<f64>> {
        if x.ncols() != self.manifest.features.len() {
            return None;
        }
        Some(self.calibrated(self.model.predict(&self.manifest.preprocessing, x)))
    }

    /// Checks that every feature is a numeric column of the SQL output.
    pub fn check_fits(&self, sql_output: &Schema) -> Result<(), BundleError> {
        for feature in self.manifest.feature_names() {
            let message = match sql_output.field_with_name(feature) {
                Err(_) => format!(
                    "feature `{feature}` is not a column of the pipeline SQL output (columns: {})",
                    sql_output
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Ok(field) if is_feature_type(field.data_type()) => continue,
                Ok(field) => format!(
                    "feature `{feature}` is {} in the pipeline SQL output; it must be numeric",
                    field.data_type()
                ),
            };
            return Err(BundleError::DoesNotFit {
                model: format!("{} {}", self.name(), self.version()),
                message,
            });
        }
        Ok(())
    }

    /// Scores the manifest's check row through the serving path.
    fn score_check_row(&self) -> Result<f64, String> {
        let fields: Vec<Field> = self
            .manifest
            .feature_names()
            .map(|name| Field::new(name, DataType::Float64, true))
            .collect();
        let columns: Vec<ArrayRef> = self
            .manifest
            .check_row
            .features
            .iter()
            .map(|&v| std::sync::Arc::new(Float64Array::from(vec![v])) as ArrayRef)
            .collect();
        let row = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| format!("the check row does not form a batch: {e}"))?;
        let scores = self
            .score(&row)
            .map_err(|e| format!("the check row does not score: {e}"))?;
        match scores.invalid.first() {
            Some((_, _, why)) => Err(format!("the check row does not score: {why}")),
            None => Ok(scores.probability[0]),
        }
    }
}

/// The directory of a bundle named by its directory or its manifest.
fn bundle_dir(path: &Path) -> PathBuf {
    if path.file_name().is_some_and(|f| f == MANIFEST_FILE) {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        path.to_path_buf()
    }
}

pub fn is_feature_type(data_type: &DataType) -> bool {
    data_type.is_numeric() || *data_type == DataType::Boolean
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Logistic;

    /// A three-feature logistic bundle: a = (x-1)/2 * 0.5, b * -1, c * 2.
    pub(crate) fn bundle() -> Bundle {
        Bundle::assemble(BundleParts {
            name: "test".into(),
            version: "1".into(),
            features: ["a", "b", "c"]
                .map(|name| FeatureSpec {
                    name: name.into(),
                    data_type: "Float64".into(),
                })
                .to_vec(),
            preprocessing: Preprocessing::Standardize {
                mean: vec![1.0, 0.0, 0.0],
                std: vec![2.0, 1.0, 1.0],
            },
            threshold: 0.5,
            provenance: BTreeMap::new(),
            metrics: BTreeMap::new(),
            model: Model::Logistic(Logistic {
                coefficients: vec![0.5, -1.0, 2.0],
                intercept: -0.25,
            }),
            check_features: vec![3.0, 1.0, 0.5],
        })
        .unwrap()
    }

    #[test]
    fn round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        bundle().save(dir.path()).unwrap();
        let loaded = Bundle::load(dir.path()).unwrap();
        assert_eq!(loaded.manifest, bundle().manifest);
        let again = Bundle::load(&dir.path().join(MANIFEST_FILE)).unwrap();
        assert_eq!(again.manifest.version, "1");
    }

    #[test]
    fn a_tampered_payload_is_refused_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        bundle().save(dir.path()).unwrap();
        let payload = dir.path().join("model.json");
        let text = std::fs::read_to_string(&payload).unwrap();
        std::fs::write(&payload, text.replace("-0.25", "-0.24")).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert_eq!(err.reason(), "checksum", "{err}");
        assert!(err.to_string().contains("model.json"), "{err}");
    }

    #[test]
    fn an_edited_or_truncated_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        bundle().save(dir.path()).unwrap();
        let manifest = dir.path().join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(
            &manifest,
            text.replace("\"threshold\": 0.5", "\"threshold\": 0.9"),
        )
        .unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert_eq!(err.reason(), "invalid_manifest", "{err}");
        assert!(err.to_string().contains("changed after"), "{err}");
        std::fs::write(&manifest, &text.as_bytes()[..text.len() / 2]).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert_eq!(err.reason(), "invalid_manifest", "{err}");
    }

    /// A payload that verifies but computes something else than what was
    /// trained (here: a check row written by other maths) is refused.
    #[test]
    fn a_check_row_that_scores_differently_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bundle();
        b.manifest.check_row.score = 0.123;
        b.save(dir.path()).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert_eq!(err.reason(), "check_row", "{err}");
    }

    #[test]
    fn inconsistent_manifests_are_refused_with_the_field_named() {
        let mut b = bundle();
        if let Preprocessing::Standardize { std, .. } = &mut b.manifest.preprocessing {
            std[1] = 0.0;
        }
        let err = Manifest::from_json(&b.manifest.to_json()).unwrap_err();
        assert!(err.contains("std` of feature `b`"), "{err}");
        let mut b = bundle();
        b.manifest.version = "../x".into();
        let err = Manifest::from_json(&b.manifest.to_json()).unwrap_err();
        assert!(err.contains("`version`"), "{err}");
    }
}
