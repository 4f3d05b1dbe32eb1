//! The reference distributions a bundle carries for drift monitoring,
//! computed on the training rows as the pipeline's decode and SQL gave
//! them: by `train` (with the evaluated scores and labels) and by
//! `models import --reference` (without).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use super::data::TrainingSet;
use super::fit::{TrainError, feature_matrix};
use crate::model::Bundle;

/// Puts reference distributions computed on `set` (history through the
/// pipeline's decode and SQL) into `bundle`: for models trained elsewhere
/// (`models import --reference`).
pub fn attach_reference(bundle: &mut Bundle, set: &TrainingSet) -> Result<(), TrainError> {
    bundle.check_fits(&set.features.schema())?;
    let names: Vec<String> = bundle.manifest.feature_names().map(str::to_owned).collect();
    let x = feature_matrix(&set.features, &names)?;
    bundle.manifest.reference = Some(reference(bundle, &x, &set.decoded, None));
    Ok(())
}

/// What `train` knows of the labels: the label column's name, and the
/// evaluated rows' (out-of-fold or hold-out) scores with their labels.
pub(super) struct WithLabels<'a>(pub &'a str, pub &'a [f64], pub &'a [bool]);

/// The reference distributions drift monitoring compares against: per
/// feature and for the score, quantile bins over the training rows; per
/// categorical input (the label is never one), each value's share; with
/// the labels, the evaluated scores' reliability curve, which estimated
/// performance stands on (`drift/performance.rs`).
pub(super) fn reference(
    bundle: &Bundle,
    x: &ndarray::Array2<f64>,
    decoded: &RecordBatch,
    labelled: Option<WithLabels>,
) -> serde_json::Value {
    use crate::drift::reference::{REFERENCE_CHUNKS, chunk_spreads};
    use crate::drift::stats::{REFERENCE_BINS, Reference};
    let mut features = serde_json::Map::new();
    let mut chunks = serde_json::Map::new();
    let mut add = |name: &str, values: &[f64]| {
        let reference = Reference::of(values, REFERENCE_BINS)?;
        chunks.insert(
            name.to_owned(),
            serde_json::to_value(chunk_spreads(&reference, values, REFERENCE_CHUNKS))
                .expect("serialises"),
        );
        Some(serde_json::to_value(reference).expect("serialises"))
    };
    for (j, feature) in bundle.manifest.features.iter().enumerate() {
        let column: Vec<f64> = x.column(j).to_vec();
        if let Some(r) = add(&feature.name, &column) {
            features.insert(feature.name.clone(), r);
        }
    }
    let score = bundle
        .score_matrix(x.view())
        .and_then(|scores| add(crate::drift::SCORE, &scores));
    // An input of a feature's name (a flag passed through the SQL) is
    // monitored as that feature: one column, one set of counts.
    let mut categories = category_shares(decoded, labelled.as_ref().map(|l| l.0));
    categories.retain(|name, _| !features.contains_key(name));
    let performance =
        labelled.and_then(|l| crate::drift::performance::PerformanceReference::of(l.1, l.2));
    serde_json::json!({
        "bins": REFERENCE_BINS,
        "rows": x.nrows(),
        "features": features,
        "score": score,
        "categories": categories,
        "chunks": chunks,
        "performance": performance,
    })
}

/// Text columns with this many distinct values or fewer are categories
/// (more: ids, which drift by design).
const MAX_CATEGORIES: usize = 50;

/// For each categorical text column of the decoded records, and each
/// boolean one but the label (a flag in the input drifts as a category
/// does; the label is absent from the stream), the share of each value
/// (`true`/`false` for a boolean, as the monitor casts it; nulls under
/// `null`). Without the label's name, booleans are left out: one of them
/// may be it.
fn category_shares(
    decoded: &RecordBatch,
    label: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (field, column) in decoded.schema().fields().iter().zip(decoded.columns()) {
        let column = match field.data_type() {
            DataType::Utf8 => Arc::clone(column),
            DataType::Boolean if label.is_some_and(|l| l != field.name()) => {
                match cast(column, &DataType::Utf8) {
                    Ok(text) => text,
                    Err(_) => continue,
                }
            }
            _ => continue,
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for value in column.as_string::<i32>().iter() {
            *counts.entry(value.unwrap_or("null")).or_default() += 1;
            if counts.len() > MAX_CATEGORIES {
                break;
            }
        }
        if counts.len() > MAX_CATEGORIES {
            continue;
        }
        let n = decoded.num_rows().max(1) as f64;
        let shares: serde_json::Map<String, serde_json::Value> = counts
            .into_iter()
            .map(|(value, count)| (value.to_owned(), (count as f64 / n).into()))
            .collect();
        out.insert(field.name().clone(), shares.into());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::BooleanArray;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    /// A boolean input is a category (`true`, `false`, `null`), the label
    /// never; without the label's name no boolean is.
    #[test]
    fn boolean_inputs_are_categories_and_the_label_is_not() {
        let decoded = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("is_online", DataType::Boolean, true),
                Field::new("is_fraud", DataType::Boolean, false),
            ])),
            vec![
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    Some(false),
                    None,
                ])),
                Arc::new(BooleanArray::from(vec![false, true, false, false])),
            ],
        )
        .unwrap();
        let shares = category_shares(&decoded, Some("is_fraud"));
        assert_eq!(
            shares["is_online"],
            serde_json::json!({"false": 0.5, "null": 0.25, "true": 0.25})
        );
        assert!(!shares.contains_key("is_fraud"));
        assert!(category_shares(&decoded, None).is_empty());
    }
}
