//! The bundle's manifest (`manifest.json`): what the model is, which features
//! it reads in which order, how they are prepared, where it flags, where it
//! came from, and a checksum of every payload file. The manifest carries a
//! checksum of itself too, so a hand-edited threshold or standardisation is
//! refused rather than served.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::maths::calibration::Calibration;

/// The manifest format this engine reads and writes.
pub const BUNDLE_FORMAT: &str = "streamscore.bundle.v1";
/// The manifest's file name inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The scoring maths a bundle's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Logistic,
    /// One decision tree; its probability is the class frequency of a leaf.
    Tree,
    /// A random forest: trees on bootstrap samples, features drawn per
    /// split; probabilities averaged.
    Forest,
    /// Gradient-boosted trees trained by `train` (forust-ml); leaves in
    /// log-odds, summed.
    Gbm,
    /// Imported gradient-boosted trees: XGBoost JSON, binary:logistic.
    Xgboost,
    /// Imported gradient-boosted trees: LightGBM text, binary objective.
    Lightgbm,
    /// Any other imported model, as ONNX (run by tract).
    Onnx,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Logistic => "logistic",
            ModelKind::Tree => "tree",
            ModelKind::Forest => "forest",
            ModelKind::Gbm => "gbm",
            ModelKind::Xgboost => "xgboost",
            ModelKind::Lightgbm => "lightgbm",
            ModelKind::Onnx => "onnx",
        }
    }
}

/// One model input: a column of the pipeline SQL output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    /// The Arrow type the column had when the model was trained (any numeric
    /// or boolean type is read as a float when scoring).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// How a feature row becomes the model's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocessing {
    /// Features enter the model as they come.
    None,
    /// Feature j enters as (x - mean[j]) / std[j].
    Standardize { mean: Vec<f64>, std: Vec<f64> },
}

/// A feature row and the score the model gave it when the bundle was
/// written. Scored again before a bundle serves: a payload that loads but
/// scores differently (a wrong kind, a bug) is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRow {
    pub features: Vec<f64>,
    pub score: f64,
}

/// Everything in `manifest.json` but its own checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub version: String,
    pub kind: ModelKind,
    /// The model's inputs, in the order the payload expects them.
    pub features: Vec<FeatureSpec>,
    pub preprocessing: Preprocessing,
    /// Scores at or above this are flagged.
    pub threshold: f64,
    /// Where the model came from (data, options, time), for audits.
    #[serde(default)]
    pub provenance: BTreeMap<String, String>,
    /// Training metrics (hold-out AUC and the like).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Reference distributions of the features and the score, where the
    /// bundle has them (drift monitoring reads them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<serde_json::Value>,
    /// The cross-validation table that chose this kind, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<serde_json::Value>,
    /// The map from the model's score to the probability served
    /// (`train --calibrate`); absent, the model's score is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    pub check_row: CheckRow,
    /// Payload file name (inside the bundle directory) -> `sha256:<hex>` of
    /// its raw bytes.
    pub payload: BTreeMap<String, String>,
}

impl Manifest {
    pub fn feature_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    /// Parses `manifest.json` and verifies its own checksum. `Err` is the
    /// reason, for the caller to place.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let mut fields: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let found = match fields.remove("checksum") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err("`checksum` is missing or not a string".into()),
        };
        let computed = checksum_of_fields(&fields);
        if found != computed {
            return Err(format!(
                "the manifest has checksum {found} but its content hashes to {computed}; it \
                 was changed after it was written"
            ));
        }
        let manifest: Manifest =
            serde_json::from_value(serde_json::Value::Object(fields.into_iter().collect()))
                .map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest as written, its checksum included.
    pub fn to_json(&self) -> Vec<u8> {
        let mut fields = match serde_json::to_value(self).expect("a manifest serialises") {
            serde_json::Value::Object(map) => map.into_iter().collect::<BTreeMap<_, _>>(),
            _ => unreachable!("a struct serialises to a JSON object"),
        };
        let sum = checksum_of_fields(&fields);
        fields.insert("checksum".into(), serde_json::Value::String(sum));
        let mut out = serde_json::to_vec_pretty(&fields).expect("a map of JSON values serialises");
        out.push(b'\n');
        out
    }

    fn validate(&self) -> Result<(), String> {
        if self.format != BUNDLE_FORMAT {
            return Err(format!(
                "`format` is {:?}; this engine reads {BUNDLE_FORMAT:?}",
                self.format
            ));
        }
        for (key, value) in [("name", &self.name), ("version", &self.version)] {
            if !is_path_safe(value) {
                return Err(format!(
                    "`{key}` is {value:?}; use letters, digits, `.`, `_` and `-` only"
                ));
            }
        }
        let k = self.features.len();
        if k == 0 {
            return Err("`features` is empty".into());
        }
        if self.check_row.features.len() != k {
            return Err(format!(
                "`check_row` has {} values for {k} features",
                self.check_row.features.len()
            ));
        }
        if let Preprocessing::Standardize { mean, std } = &self.preprocessing {
            for (name, len) in [("mean", mean.len()), ("std", std.len())] {
                if len != k {
                    return Err(format!(
                        "`preprocessing.standardize.{name}` has {len} values for {k} features"
                    ));
                }
            }
            if !mean.iter().all(|m| m.is_finite()) {
                return Err("`preprocessing.standardize.mean` must be finite numbers".into());
            }
            if let Some(j) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(format!(
                    "`preprocessing.standardize.std` of feature `{}` is {}; it must be a \
                     positive number",
                    self.features[j].name, std[j]
                ));
            }
        }
        if let Some(calibration) = &self.calibration {
            calibration
                .check()
                .map_err(|message| format!("`calibration`: {message}"))?;
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(format!(
                "`threshold` is {}; it must lie strictly between 0 and 1",
                self.threshold
            ));
        }
        if self.payload.is_empty() {
            return Err("`payload` names no file".into());
        }
        if let Some(file) = self.payload.keys().find(|f| !is_path_safe(f)) {
            return Err(format!(
                "`payload` names {file:?}; payload files sit beside the manifest"
            ));
        }
        Ok(())
    }
}

/// A name that is one plain path component: registry directories and
/// payload files are built from these.
pub fn is_path_safe(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `sha256:<hex>` of raw bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn checksum_of_fields(fields: &BTreeMap<String, serde_json::Value>) -> String {
    sha256(&serde_json::to_vec(fields).expect("a map of JSON values serialises"))
}
