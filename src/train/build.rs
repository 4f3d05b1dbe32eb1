//! From a prepared training set to a bundle: pick the features, fit (one
//! kind with a hold-out, or several by cross-validation and refit the
//! winner on everything), choose the threshold, and write the metrics and
//! the CV table into the manifest.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use ndarray::Axis;

use super::data::TrainingSet;
use super::fit::{Candidate, Fitted, TrainError, TrainOptions, feature_matrix, fit};
use super::reference::{WithLabels, reference};
use super::select::{CvTable, Folds, Labelled, Metric, cross_validate, take_rows};
use crate::fraud_metrics::{Context, Evaluation, ThresholdRule, choose_threshold, evaluate};
use crate::model::maths::calibration::{Calibration, Method};
use crate::model::{Bundle, BundleParts, Explain, FeatureSpec, is_feature_type};

/// What to train beyond the fitting options.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Column of the decoded records that holds the fraud label.
    pub label: String,
    pub options: TrainOptions,
    /// One kind (with a hold-out) or several (with `folds`).
    pub candidates: Vec<Candidate>,
    pub folds: Option<Folds>,
    pub metric: Metric,
    pub threshold: ThresholdRule,
    /// Decoded columns for card precision@k and time folds, if present.
    pub card_column: String,
    pub time_column: String,
    pub card_precision_k: usize,
    /// Map the scores to probabilities that mean their rate, fitted on
    /// the evaluated scores (`train --calibrate`).
    pub calibrate: Option<Method>,
}

impl TrainRequest {
    pub fn new(label: &str, options: TrainOptions) -> Self {
        Self {
            label: label.to_owned(),
            options,
            candidates: vec![Candidate::Logistic],
            folds: None,
            metric: Metric::AveragePrecision,
            threshold: ThresholdRule::Fixed(0.5),
            card_column: "card_id".into(),
            time_column: "event_time".into(),
            card_precision_k: 100,
            calibrate: None,
        }
    }
}

/// What training produced and how well it did.
#[derive(Debug)]
pub struct TrainReport {
    pub bundle: Bundle,
    pub training_rows: usize,
    /// Rows the evaluation comes from: the hold-out, or every row once
    /// (out of fold) with cross-validation.
    pub evaluated_rows: usize,
    pub evaluation: Evaluation,
    /// The scores and labels the evaluation comes from (for the report).
    pub evaluated_scores: Vec<f64>,
    pub evaluated_labels: Vec<bool>,
    pub cv: Option<CvTable>,
    /// With `--calibrate`: the Brier score of the evaluated rows before
    /// calibration (the evaluation's is after).
    pub brier_uncalibrated: Option<f64>,
}

/// Fits what `request` asks on `set` and assembles the bundle.
pub fn build(
    set: &TrainingSet,
    request: &TrainRequest,
    mut progress: impl FnMut(usize, usize),
) -> Result<TrainReport, TrainError> {
    let options = &request.options;
    let y = set.labels(&request.label)?;
    let names = feature_names(
        &set.features,
        &options.features,
        [&request.label, &set.event_id],
    )?;
    let x = feature_matrix(&set.features, &names)?;
    let cards = set.text_column(&request.card_column);
    let times = set.time_column(&request.time_column);
    let data = Labelled {
        x: x.view(),
        y: &y,
        cards: cards.as_deref(),
        times_ms: times.as_deref(),
        k: request.card_precision_k,
    };

    let Chosen {
        candidate,
        fitted,
        scores,
        evaluated,
        cv,
        training_rows,
    } = choose_and_fit(request, &data, &mut progress)?;
    let labels: Vec<bool> = evaluated.iter().map(|&i| y[i]).collect();
    let Calibrated {
        scores,
        calibration,
        brier_before: brier_uncalibrated,
    } = calibrate(request, scores, &labels)?;
    let cards_e = cards.as_deref().map(|c| take_rows(c, &evaluated));
    let times_e = times.as_deref().map(|t| take_rows(t, &evaluated));
    let threshold = threshold_for(request, &scores, &labels, times_e.as_deref())?;
    let evaluation = evaluate(
        &scores,
        &labels,
        threshold,
        &Context {
            cards: cards_e.as_deref(),
            times_ms: times_e.as_deref(),
            k: request.card_precision_k,
        },
    );

    let provenance = provenance(
        candidate,
        training_rows,
        &y,
        cv.as_ref().map(|t| t.scheme.as_str()),
        scores.len(),
        request,
    );
    let metrics = metric_values(&evaluation, brier_uncalibrated);
    let mut bundle = Bundle::assemble(BundleParts {
        name: options.name.clone(),
        version: options.version.clone(),
        features: feature_specs(&set.features, &names),
        preprocessing: fitted.preprocessing,
        threshold,
        provenance,
        metrics,
        model: fitted.model,
        check_features: x.row(0).to_vec(),
    })?
    .with_calibration(calibration)?;
    if let Some(table) = &cv {
        bundle.manifest.cv = Some(serde_json::to_value(table).expect("a CV table serialises"));
    }
    let evaluated = WithLabels(&request.label, &scores, &labels);
    bundle.manifest.reference = Some(reference(&bundle, &x, &set.decoded, Some(evaluated)));
    Ok(TrainReport {
        bundle,
        training_rows,
        evaluated_rows: scores.len(),
        evaluation,
        evaluated_scores: scores,
        evaluated_labels: labels,
        cv,
        brier_uncalibrated,
    })
}

/// The evaluated scores as served, and the calibration behind them.
struct Calibrated {
    scores: Vec<f64>,
    calibration: Option<Calibration>,
    /// The Brier score before calibration, when calibrated.
    brier_before: Option<f64>,
}

/// The evaluated scores calibrated when `request` asks. The calibration is
/// fitted on the same evaluated rows it then maps (out of fold or hold-out,
/// never the rows the model was fitted on); with isotonic, the Brier score
/// after is therefore a little optimistic.
fn calibrate(
    request: &TrainRequest,
    scores: Vec<f64>,
    labels: &[bool],
) -> Result<Calibrated, TrainError> {
    let Some(method) = request.calibrate else {
        return Ok(Calibrated {
            scores,
            calibration: None,
            brier_before: None,
        });
    };
    let calibration = Calibration::fit(method, &scores, labels).ok_or_else(|| {
        TrainError::Options(
            "--calibrate needs both frauds and non-frauds among the evaluated rows".into(),
        )
    })?;
    let brier_before = crate::fraud_metrics::brier(&scores, labels);
    Ok(Calibrated {
        scores: scores.iter().map(|&s| calibration.apply(s)).collect(),
        calibration: Some(calibration),
        brier_before,
    })
}

/// The threshold `request.threshold` picks on the evaluated rows, which
/// must lie strictly between 0 and 1.
fn threshold_for(
    request: &TrainRequest,
    scores: &[f64],
    labels: &[bool],
    times: Option<&[i64]>,
) -> Result<f64, TrainError> {
    let threshold = choose_threshold(
        request.threshold,
        scores,
        labels,
        times.unwrap_or(&vec![0; labels.len()]),
    )
    .ok_or_else(|| {
        TrainError::Options(format!(
            "no threshold meets {:?} on the evaluated rows",
            request.threshold
        ))
    })?;
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(TrainError::Options(format!(
            "the chosen threshold {threshold} is not strictly between 0 and 1"
        )));
    }
    Ok(threshold)
}

/// The candidate chosen and fitted, with the scores it is judged by.
struct Chosen {
    candidate: Candidate,
    fitted: Fitted,
    /// Out-of-fold scores (cross-validation) or hold-out scores, for the
    /// rows in `evaluated`.
    scores: Vec<f64>,
    evaluated: Vec<usize>,
    cv: Option<CvTable>,
    training_rows: usize,
}

/// With folds, every candidate cross-validated and the winner refitted on
/// every row, judged by its out-of-fold scores; without, the first
/// candidate fitted on all but the hold-out, judged on the hold-out.
fn choose_and_fit(
    request: &TrainRequest,
    data: &Labelled,
    progress: &mut impl FnMut(usize, usize),
) -> Result<Chosen, TrainError> {
    let (x, y, times) = (data.x, data.y, data.times_ms);
    let options = &request.options;
    Ok(match request.folds {
        Some(folds) => {
            let splits = super::select::fold_indices(folds, y, times, options.seed)?;
            let total = request.candidates.len() * splits.len() + 1;
            let mut done = 0;
            let table = cross_validate(
                &request.candidates,
                data,
                folds,
                request.metric,
                options,
                || {
                    done += 1;
                    progress(done, total);
                },
            )?;
            let candidate: Candidate = table.winner.parse()?;
            // The winner's out-of-fold scores give the threshold and the
            // reported metrics; then it is refitted on every row.
            let oof = &table
                .rows
                .iter()
                .find(|r| r.kind == table.winner)
                .expect("the winner is a row")
                .out_of_fold;
            let scored: Vec<usize> = (0..y.len()).filter(|&i| !oof[i].is_nan()).collect();
            let fitted = fit(candidate, x, y, options)?;
            progress(total, total);
            let scores: Vec<f64> = scored.iter().map(|&i| oof[i]).collect();
            Chosen {
                candidate,
                fitted,
                scores,
                evaluated: scored,
                cv: Some(table),
                training_rows: y.len(),
            }
        }
        None => {
            let candidate = *request.candidates.first().unwrap_or(&Candidate::Logistic);
            let holdout = ((y.len() as f64) * options.holdout_fraction) as usize;
            let cut = y.len() - holdout;
            if cut < 2 {
                return Err(TrainError::NoData(format!("{} rows", y.len())));
            }
            let (x_train, x_holdout) = x.split_at(Axis(0), cut);
            let fitted = fit(candidate, x_train, &y[..cut], options)?;
            progress(1, 1);
            let scores = fitted.predict(x_holdout);
            Chosen {
                candidate,
                fitted,
                scores,
                evaluated: (cut..y.len()).collect(),
                cv: None,
                training_rows: cut,
            }
        }
    })
}

/// Where a bundle came from and how it was judged.
fn provenance(
    candidate: Candidate,
    training_rows: usize,
    y: &[bool],
    cv_scheme: Option<&str>,
    evaluated_rows: usize,
    request: &TrainRequest,
) -> BTreeMap<String, String> {
    let mut provenance = BTreeMap::new();
    provenance.insert(
        "trainer".into(),
        format!("streamscore train ({})", candidate.kind().as_str()),
    );
    provenance.insert("training_rows".into(), training_rows.to_string());
    provenance.insert(
        "fraud_rows".into(),
        y.iter().filter(|f| **f).count().to_string(),
    );
    provenance.insert(
        "evaluated_on".into(),
        match cv_scheme {
            Some(scheme) => format!("out-of-fold scores, {scheme}"),
            None => format!("the last {evaluated_rows} rows (hold-out)"),
        },
    );
    provenance.insert("threshold_rule".into(), format!("{:?}", request.threshold));
    provenance.insert("at".into(), chrono::Utc::now().to_rfc3339());
    provenance
}

/// Each feature with the Arrow type the SQL gave it.
fn feature_specs(features: &RecordBatch, names: &[String]) -> Vec<FeatureSpec> {
    let schema = features.schema();
    names
        .iter()
        .map(|name| FeatureSpec {
            name: name.clone(),
            data_type: schema
                .field_with_name(name)
                .map(|f| f.data_type().to_string())
                .unwrap_or_default(),
        })
        .collect()
}

/// The evaluation's measures as the manifest keeps them, with the Brier
/// score before calibration when there was one.
fn metric_values(
    evaluation: &Evaluation,
    brier_uncalibrated: Option<f64>,
) -> BTreeMap<String, f64> {
    [
        ("brier_uncalibrated", brier_uncalibrated),
        ("auc", evaluation.auc),
        ("average_precision", evaluation.average_precision),
        ("brier", evaluation.brier),
        ("precision_at_threshold", evaluation.precision),
        ("recall_at_threshold", evaluation.recall),
        ("card_precision_at_k", evaluation.card_precision),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
    .collect()
}

/// Scores `set` with `bundle` through the serving path and evaluates it at
/// the bundle's threshold. Returns the evaluation and how many rows the
/// model could not score (left out of it).
pub fn evaluate_bundle(
    bundle: &Bundle,
    set: &TrainingSet,
    request: &TrainRequest,
) -> Result<(Evaluation, usize), TrainError> {
    let y = set.labels(&request.label)?;
    // Measures need no reasons (TreeSHAP over a deep forest costs far more
    // than its scores).
    let scores = bundle.score_explained(&set.features, Explain::AtOrAbove(f64::INFINITY))?;
    let unscorable: std::collections::HashSet<usize> =
        scores.invalid.iter().map(|(row, _, _)| *row).collect();
    let kept: Vec<usize> = (0..y.len()).filter(|i| !unscorable.contains(i)).collect();
    let cards = set
        .text_column(&request.card_column)
        .map(|c| take_rows(&c, &kept));
    let times = set
        .time_column(&request.time_column)
        .map(|t| take_rows(&t, &kept));
    let evaluation = evaluate(
        &take_rows(&scores.probability, &kept),
        &take_rows(&y, &kept),
        bundle.manifest.threshold,
        &Context {
            cards: cards.as_deref(),
            times_ms: times.as_deref(),
            k: request.card_precision_k,
        },
    );
    Ok((evaluation, unscorable.len()))
}

/// The wanted features, or by default every numeric column but the label
/// and the event id. Neither is ever a feature, whatever its type: an int64
/// event id grows with time, so a model would learn the clock, and drift
/// would flag it in the first window.
fn feature_names(
    features: &RecordBatch,
    wanted: &[String],
    never: [&str; 2],
) -> Result<Vec<String>, TrainError> {
    let schema = features.schema();
    let usable = |f: &arrow::datatypes::Field| {
        is_feature_type(f.data_type()) && !never.contains(&f.name().as_str())
    };
    if wanted.is_empty() {
        return Ok(schema
            .fields()
            .iter()
            .filter(|f| usable(f))
            .map(|f| f.name().clone())
            .collect());
    }
    for name in wanted {
        match schema.field_with_name(name) {
            Ok(f) if usable(f) => {}
            _ => return Err(TrainError::BadFeature(name.clone())),
        }
    }
    Ok(wanted.to_vec())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// At a342126 an int64 event id became a feature of every model trained
    /// without `--features` (and raised drift in the first judged window).
    #[test]
    fn the_event_id_and_the_label_are_never_features_whatever_their_type() {
        let features = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("event_id", DataType::Int64, false),
                Field::new("amount", DataType::Float64, false),
                Field::new("is_fraud", DataType::Boolean, false),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Float64Array::from(vec![3.0, 4.0])),
                Arc::new(BooleanArray::from(vec![false, true])),
            ],
        )
        .unwrap();
        let never = ["is_fraud", "event_id"];
        assert_eq!(
            feature_names(&features, &[], never).unwrap(),
            vec!["amount".to_owned()]
        );
        for named in ["event_id", "is_fraud"] {
            let refused = feature_names(&features, &[named.to_owned()], never).unwrap_err();
            assert!(refused.to_string().contains("event id"), "{refused}");
        }
        assert_eq!(
            feature_names(&features, &["amount".to_owned()], never).unwrap(),
            vec!["amount".to_owned()]
        );
    }
}
