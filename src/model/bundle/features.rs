//! From the SQL output to the model's input: the bundle's features, in its
//! order, as one float matrix, and the rows that cannot be scored.

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use ndarray::{Array2, ArrayView1};

/// The feature matrix (rows x features) and, per row, the first feature
/// that is null or not finite.
pub struct FeatureMatrix<'a> {
    pub values: Array2<f64>,
    pub unusable: Vec<Option<&'a str>>,
}

/// Reads `names` from `batch` as floats (booleans as 0/1).
pub fn feature_matrix<'a>(
    batch: &RecordBatch,
    names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<FeatureMatrix<'a>, ArrowError> {
    let rows = batch.num_rows();
    let mut values = Array2::<f64>::zeros((rows, names.len()));
    let mut unusable: Vec<Option<&str>> = vec![None; rows];
    for (j, name) in names.enumerate() {
        let column = batch.column_by_name(name).ok_or_else(|| {
            ArrowError::SchemaError(format!("feature column `{name}` is missing"))
        })?;
        let column = cast(column, &DataType::Float64)?;
        let column = column.as_primitive::<Float64Type>();
        values
            .column_mut(j)
            .assign(&ArrayView1::from(column.values().as_ref()));
        for (i, slot) in unusable.iter_mut().enumerate() {
            if slot.is_none() && (column.is_null(i) || !column.value(i).is_finite()) {
                *slot = Some(name);
            }
        }
    }
    Ok(FeatureMatrix { values, unusable })
}
