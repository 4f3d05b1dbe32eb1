//! The model bundle: a JSON file with the model, its feature list in order,
//! the standardisation it was trained with, its decision threshold and a
//! checksum, so a truncated or hand-edited file is refused instead of served.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::datatypes::{DataType, Schema};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const BUNDLE_FORMAT: &str = "streamscore.logistic-regression.v1";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read model bundle {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("model bundle {path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "model bundle {path} has checksum {found} but its content hashes to {computed}; \
         the file was changed or truncated after it was written"
    )]
    Checksum {
        path: String,
        found: String,
        computed: String,
    },
    #[error("model {model} does not fit this pipeline: {message}")]
    DoesNotFit { model: String, message: String },
    #[error("cannot write model bundle {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Everything in a bundle file but its checksum. The fields are flat so that
/// the canonical form (keys sorted) is simple to reproduce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBundle {
    pub format: String,
    pub name: String,
    pub version: String,
    /// Feature columns of the pipeline SQL output, in coefficient order.
    pub features: Vec<String>,
    /// Standardisation: a feature enters the model as (x - mean) / std.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Scores at or above this are flagged.
    pub threshold: f64,
    /// Training provenance, for people and audits.
    #[serde(default)]
    pub trained: BTreeMap<String, String>,
}

impl ModelBundle {
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| BundleError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_json(&bytes, &shown)
    }

    /// Parses and verifies a bundle; `origin` names it in errors.
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Self, BundleError> {
        let invalid = |message: String| BundleError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let mut fields: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let found = match fields.remove("checksum") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(invalid("`checksum` is missing or not a string".into())),
        };
        let computed = checksum(&fields);
        if found != computed {
            return Err(BundleError::Checksum {
                path: origin.to_owned(),
                found,
                computed,
            });
        }
        let bundle: ModelBundle =
            serde_json::from_value(serde_json::Value::Object(fields.into_iter().collect()))
                .map_err(|e| invalid(e.to_string()))?;
        bundle.validate().map_err(invalid)?;
        Ok(bundle)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut fields = self.canonical_fields();
        let sum = checksum(&fields);
        fields.insert("checksum".into(), serde_json::Value::String(sum));
        let mut out = serde_json::to_vec_pretty(&fields).expect("a map of JSON values serialises");
        out.push(b'\n');
        out
    }

    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        std::fs::write(path, self.to_json()).map_err(|source| BundleError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    fn canonical_fields(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self).expect("a bundle serialises") {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => unreachable!("a struct serialises to a JSON object"),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.format != BUNDLE_FORMAT {
            return Err(format!(
                "`format` is {:?}; this engine reads {BUNDLE_FORMAT:?}",
                self.format
            ));
        }
        let k = self.features.len();
        if k == 0 {
            return Err("`features` is empty".into());
        }
        for (name, len) in [
            ("mean", self.mean.len()),
            ("std", self.std.len()),
            ("coefficients", self.coefficients.len()),
        ] {
            if len != k {
                return Err(format!("`{name}` has {len} values for {k} features"));
            }
        }
        let all_finite = self
            .mean
            .iter()
            .chain(&self.coefficients)
            .chain([&self.intercept])
            .all(|v| v.is_finite());
        if !all_finite {
            return Err("`mean`, `coefficients` and `intercept` must be finite numbers".into());
        }
        if let Some(i) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "`std` of feature `{}` is {}; it must be a positive number",
                self.features[i], self.std[i]
            ));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(format!(
                "`threshold` is {}; it must lie strictly between 0 and 1",
                self.threshold
            ));
        }
        Ok(())
    }

    /// Checks that every feature is a numeric column of the SQL output.
    pub fn check_fits(&self, sql_output: &Schema) -> Result<(), BundleError> {
        for feature in &self.features {
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
                model: format!("{} {}", self.name, self.version),
                message,
            });
        }
        Ok(())
    }
}

pub fn is_feature_type(data_type: &DataType) -> bool {
    data_type.is_numeric() || *data_type == DataType::Boolean
}

fn checksum(fields: &BTreeMap<String, serde_json::Value>) -> String {
    let canonical = serde_json::to_vec(fields).expect("a map of JSON values serialises");
    format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn bundle() -> ModelBundle {
        ModelBundle {
            format: BUNDLE_FORMAT.into(),
            name: "test".into(),
            version: "1".into(),
            features: vec!["a".into(), "b".into()],
            mean: vec![1.0, 0.0],
            std: vec![2.0, 1.0],
            coefficients: vec![0.5, -1.0],
            intercept: -0.25,
            threshold: 0.5,
            trained: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_and_verifies_its_checksum() {
        let json = bundle().to_json();
        assert_eq!(ModelBundle::from_json(&json, "mem").unwrap(), bundle());
    }

    #[test]
    fn an_edited_bundle_is_refused() {
        let text = String::from_utf8(bundle().to_json()).unwrap();
        let edited = text.replace("-0.25", "-0.24");
        let err = ModelBundle::from_json(edited.as_bytes(), "m.json").unwrap_err();
        assert!(matches!(err, BundleError::Checksum { .. }), "{err}");
        let truncated = &text.as_bytes()[..text.len() / 2];
        let err = ModelBundle::from_json(truncated, "m.json").unwrap_err();
        assert!(err.to_string().contains("m.json"), "{err}");
    }

    #[test]
    fn inconsistent_bundles_are_refused_with_the_field_named() {
        let mut b = bundle();
        b.std[1] = 0.0;
        let err = ModelBundle::from_json(&b.to_json(), "m.json").unwrap_err();
        assert!(err.to_string().contains("`std` of feature `b`"), "{err}");
        let mut b = bundle();
        b.coefficients.pop();
        let err = ModelBundle::from_json(&b.to_json(), "m.json").unwrap_err();
        assert!(
            err.to_string().contains("`coefficients` has 1 values"),
            "{err}"
        );
    }
}
