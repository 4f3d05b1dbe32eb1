//! Fitting a logistic regression with linfa on features produced by the
//! same decode + SQL path that serves.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};

use super::{
    Bundle, BundleError, BundleParts, FeatureSpec, Logistic, Model, Preprocessing,
    evaluate::auc_roc, is_feature_type,
};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no usable training rows: {0}")]
    NoData(String),
    #[error("feature `{0}` is not a numeric column of the pipeline SQL output, or is the label")]
    BadFeature(String),
    #[error("label column: {0}")]
    BadLabel(String),
    #[error("linfa could not fit the model: {0}")]
    Fit(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub name: String,
    pub version: String,
    /// Features to use; empty means every numeric SQL output column.
    pub features: Vec<String>,
    /// L2 penalty; fraud data is rare-positive and a little shrinkage keeps
    /// the coefficients stable.
    pub l2_penalty: f64,
    pub max_iterations: u64,
    pub threshold: f64,
    /// The last fraction of rows (in file order, so in time) held out.
    pub holdout_fraction: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            name: "fraud-lr".into(),
            version: "1".into(),
            features: Vec::new(),
            l2_penalty: 0.1,
            max_iterations: 200,
            threshold: 0.5,
            holdout_fraction: 0.2,
        }
    }
}

/// What training produced and how well it did on held-out rows.
#[derive(Debug)]
pub struct TrainReport {
    pub bundle: Bundle,
    pub training_rows: usize,
    pub holdout_rows: usize,
    pub holdout_auc: Option<f64>,
}

/// Fits on `features` (SQL output) with `labels` (one per row), read from
/// the column named `label`, which is never used as a feature.
pub fn fit_logistic(
    features: &RecordBatch,
    labels: &[bool],
    label: &str,
    options: &TrainOptions,
) -> Result<TrainReport, TrainError> {
    let names = feature_names(features, &options.features, label)?;
    let x = feature_matrix(features, &names)?;
    let rows = x.nrows();
    let holdout_rows = ((rows as f64) * options.holdout_fraction) as usize;
    let train_rows = rows - holdout_rows;
    if train_rows < 2 {
        return Err(TrainError::NoData(format!("{rows} rows")));
    }
    let (x_train, x_holdout) = x.view().split_at(ndarray::Axis(0), train_rows);
    let (y_train, y_holdout) = labels.split_at(train_rows);

    let mean = x_train
        .mean_axis(ndarray::Axis(0))
        .expect("at least two rows");
    let std = x_train
        .std_axis(ndarray::Axis(0), 0.0)
        .mapv(|s| if s > 1e-12 { s } else { 1.0 });
    let standardise = |x: ndarray::ArrayView2<f64>| (&x - &mean) / &std;

    let dataset = Dataset::new(standardise(x_train), Array1::from(y_train.to_vec()));
    let fitted = LogisticRegression::default()
        .alpha(options.l2_penalty)
        .max_iterations(options.max_iterations)
        .fit(&dataset)
        .map_err(|e| TrainError::Fit(e.to_string()))?;
    // linfa calls the first label it meets "positive"; store log-odds of fraud.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let coefficients: Vec<f64> = fitted.params().iter().map(|c| c * sign).collect();
    let intercept = fitted.intercept() * sign;

    let holdout_auc = (holdout_rows > 0)
        .then(|| {
            let logits =
                standardise(x_holdout).dot(&Array1::from(coefficients.clone())) + intercept;
            auc_roc(
                logits.as_slice().expect("a fresh array is contiguous"),
                y_holdout,
            )
        })
        .flatten();

    let mut provenance = BTreeMap::new();
    provenance.insert(
        "trainer".into(),
        "streamscore train (linfa-logistic)".into(),
    );
    provenance.insert("training_rows".into(), train_rows.to_string());
    provenance.insert(
        "fraud_rows".into(),
        y_train.iter().filter(|y| **y).count().to_string(),
    );
    provenance.insert("l2_penalty".into(), options.l2_penalty.to_string());
    provenance.insert("at".into(), chrono::Utc::now().to_rfc3339());
    let mut metrics = BTreeMap::new();
    if let Some(auc) = holdout_auc {
        metrics.insert("holdout_auc".into(), auc);
    }
    let schema = features.schema();
    let bundle = Bundle::assemble(BundleParts {
        name: options.name.clone(),
        version: options.version.clone(),
        features: names
            .iter()
            .map(|name| FeatureSpec {
                name: name.clone(),
                data_type: schema
                    .field_with_name(name)
                    .map(|f| f.data_type().to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        preprocessing: Preprocessing::Standardize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        },
        threshold: options.threshold,
        provenance,
        metrics,
        model: Model::Logistic(Logistic {
            coefficients,
            intercept,
        }),
        check_features: x.row(0).to_vec(),
    })?;
    Ok(TrainReport {
        bundle,
        training_rows: train_rows,
        holdout_rows,
        holdout_auc,
    })
}

/// The wanted features, or by default every numeric column but the label.
fn feature_names(
    features: &RecordBatch,
    wanted: &[String],
    label: &str,
) -> Result<Vec<String>, TrainError> {
    let schema = features.schema();
    if wanted.is_empty() {
        return Ok(schema
            .fields()
            .iter()
            .filter(|f| is_feature_type(f.data_type()) && f.name() != label)
            .map(|f| f.name().clone())
            .collect());
    }
    for name in wanted {
        match schema.field_with_name(name) {
            Ok(f) if is_feature_type(f.data_type()) && name != label => {}
            _ => return Err(TrainError::BadFeature(name.clone())),
        }
    }
    Ok(wanted.to_vec())
}

fn feature_matrix(features: &RecordBatch, names: &[String]) -> Result<Array2<f64>, TrainError> {
    let rows = features.num_rows();
    let mut x = Array2::<f64>::zeros((rows, names.len()));
    for (j, name) in names.iter().enumerate() {
        let column = cast(
            features
                .column_by_name(name)
                .ok_or_else(|| TrainError::BadFeature(name.clone()))?,
            &DataType::Float64,
        )?;
        let values = column.as_primitive::<Float64Type>();
        if values.null_count() > 0 || values.values().iter().any(|v| !v.is_finite()) {
            return Err(TrainError::NoData(format!(
                "feature `{name}` has null or non-finite values; fix the data or the SQL"
            )));
        }
        x.column_mut(j)
            .assign(&ndarray::ArrayView1::from(values.values().as_ref()));
    }
    Ok(x)
}

/// Reads a label column (boolean, or numbers where non-zero means fraud).
pub fn labels_from(batch: &RecordBatch, column: &str) -> Result<Vec<bool>, TrainError> {
    let array = batch
        .column_by_name(column)
        .ok_or_else(|| TrainError::BadLabel(format!("`{column}` is not in the data")))?;
    if array.null_count() > 0 {
        return Err(TrainError::BadLabel(format!(
            "`{column}` is missing on {} rows",
            array.null_count()
        )));
    }
    let as_bool = cast(array, &DataType::Boolean)
        .map_err(|e| TrainError::BadLabel(format!("`{column}` is not boolean or numeric: {e}")))?;
    Ok(as_bool
        .as_boolean()
        .iter()
        .map(|v| v.unwrap_or(false))
        .collect())
}
