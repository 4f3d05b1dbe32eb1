//! Choosing a model kind by cross-validation: stratified k-fold, or time
//! folds that train on the past, skip a label-delay gap and validate on the
//! next period. Every candidate is scored on every fold; the table keeps
//! each fold's metrics, and the winner is the best mean of the selection
//! metric.

use std::str::FromStr;

use ndarray::{ArrayView2, Axis};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::fit::{Candidate, TrainError, TrainOptions, fit};
use crate::fraud_metrics::{Context, Evaluation, evaluate};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Folds {
    /// k folds with the fraud share of the whole in each.
    Stratified { k: usize },
    /// The time span cut into `folds + 1` periods; fold i validates on
    /// period i and trains on what ended `gap_ms` before it began.
    Time { folds: usize, gap_ms: i64 },
}

/// The metric that picks the winner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Auc,
    AveragePrecision,
    Brier,
    CardPrecision,
}

impl FromStr for Metric {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auc" => Ok(Metric::Auc),
            "ap" | "average-precision" => Ok(Metric::AveragePrecision),
            "brier" => Ok(Metric::Brier),
            "card-precision" => Ok(Metric::CardPrecision),
            other => Err(TrainError::Options(format!(
                "unknown metric `{other}`; use auc, ap, brier or card-precision"
            ))),
        }
    }
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Auc => "auc",
            Metric::AveragePrecision => "ap",
            Metric::Brier => "brier",
            Metric::CardPrecision => "card-precision",
        }
    }

    pub fn of(self, e: &Evaluation) -> Option<f64> {
        match self {
            Metric::Auc => e.auc,
            Metric::AveragePrecision => e.average_precision,
            Metric::Brier => e.brier,
            Metric::CardPrecision => e.card_precision,
        }
    }

    fn better(self, a: f64, b: f64) -> bool {
        match self {
            Metric::Brier => a < b,
            _ => a > b,
        }
    }
}

/// One candidate across the folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvRow {
    pub kind: String,
    pub folds: Vec<Evaluation>,
    /// Each row's score from the fold that held it out (NaN for a row no
    /// fold validated); not written into bundles.
    #[serde(skip)]
    pub out_of_fold: Vec<f64>,
    /// Mean and standard deviation of the selection metric over the folds
    /// that have it.
    pub mean: Option<f64>,
    pub std: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvTable {
    pub scheme: String,
    pub metric: String,
    pub rows: Vec<CvRow>,
    /// The candidate with the best mean.
    pub winner: String,
}

/// The data a selection runs on.
pub struct Labelled<'a> {
    pub x: ArrayView2<'a, f64>,
    pub y: &'a [bool],
    pub cards: Option<&'a [String]>,
    pub times_ms: Option<&'a [i64]>,
    pub k: usize,
}

/// The rows one fold trains on and those it validates on.
pub type Split = (Vec<usize>, Vec<usize>);

/// (training rows, validation rows) per fold.
pub fn fold_indices(
    folds: Folds,
    y: &[bool],
    times_ms: Option<&[i64]>,
    seed: u64,
) -> Result<Vec<Split>, TrainError> {
    match folds {
        Folds::Stratified { k } => {
            if k < 2 {
                return Err(TrainError::Options("--cv needs at least 2 folds".into()));
            }
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut assigned = vec![0usize; y.len()];
            for class in [true, false] {
                let mut rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
                rows.shuffle(&mut rng);
                for (n, row) in rows.into_iter().enumerate() {
                    assigned[row] = n % k;
                }
            }
            Ok((0..k)
                .map(|f| {
                    let (test, train) = (0..y.len()).partition(|&i| assigned[i] == f);
                    (train, test)
                })
                .collect())
        }
        Folds::Time { folds, gap_ms } => {
            let times = times_ms.ok_or_else(|| {
                TrainError::Options(
                    "--time-folds needs an event-time column (--time-column)".into(),
                )
            })?;
            if folds < 1 {
                return Err(TrainError::Options(
                    "--time-folds needs at least 1 fold".into(),
                ));
            }
            let (first, last) = (
                *times.iter().min().unwrap_or(&0),
                *times.iter().max().unwrap_or(&0),
            );
            let period = (last - first + 1) as f64 / (folds + 1) as f64;
            let start = |i: usize| first + (period * i as f64).floor() as i64;
            (1..=folds)
                .map(|i| {
                    let (from, to) = (start(i), start(i + 1));
                    let train: Vec<usize> = (0..times.len())
                        .filter(|&r| times[r] < from - gap_ms)
                        .collect();
                    let test: Vec<usize> = (0..times.len())
                        .filter(|&r| times[r] >= from && (times[r] < to || i == folds))
                        .collect();
                    if train.is_empty() || test.is_empty() {
                        return Err(TrainError::Options(format!(
                            "time fold {i} has {} training and {} validation rows; use fewer \
                             folds or a shorter gap",
                            train.len(),
                            test.len()
                        )));
                    }
                    Ok((train, test))
                })
                .collect()
        }
    }
}

/// Fits and scores every candidate on every fold. `on_fit` is called after
/// each fit (for a progress bar).
pub fn cross_validate(
    candidates: &[Candidate],
    data: &Labelled,
    folds: Folds,
    metric: Metric,
    options: &TrainOptions,
    mut on_fit: impl FnMut(),
) -> Result<CvTable, TrainError> {
    let splits = fold_indices(folds, data.y, data.times_ms, options.seed)?;
    let mut rows = Vec::new();
    for &candidate in candidates {
        let mut evaluations = Vec::new();
        let mut out_of_fold = vec![f64::NAN; data.y.len()];
        for (fold, (train, test)) in splits.iter().enumerate() {
            let x_train = data.x.select(Axis(0), train);
            let y_train: Vec<bool> = train.iter().map(|&i| data.y[i]).collect();
            if y_train.iter().all(|&y| y) || !y_train.iter().any(|&y| y) {
                return Err(TrainError::Options(format!(
                    "fold {} trains on {} rows of one class only; use fewer folds or a \
                     shorter gap",
                    fold + 1,
                    y_train.len()
                )));
            }
            let fitted = fit(candidate, x_train.view(), &y_train, options)?;
            let scores = fitted.predict(data.x.select(Axis(0), test).view());
            for (&row, &score) in test.iter().zip(&scores) {
                out_of_fold[row] = score;
            }
            let cards = data.cards.map(|c| take_rows(c, test));
            let times = data.times_ms.map(|t| take_rows(t, test));
            let y_test: Vec<bool> = test.iter().map(|&i| data.y[i]).collect();
            evaluations.push(evaluate(
                &scores,
                &y_test,
                options.threshold,
                &Context {
                    cards: cards.as_deref(),
                    times_ms: times.as_deref(),
                    k: data.k,
                },
            ));
            on_fit();
        }
        let values: Vec<f64> = evaluations.iter().filter_map(|e| metric.of(e)).collect();
        let (mean, std) = mean_std(&values);
        rows.push(CvRow {
            kind: candidate.kind().as_str().to_owned(),
            folds: evaluations,
            out_of_fold,
            mean,
            std,
        });
    }
    let winner = rows
        .iter()
        .filter(|r| r.mean.is_some())
        .reduce(|best, r| match (r.mean, best.mean) {
            (Some(a), Some(b)) if metric.better(a, b) => r,
            _ => best,
        })
        .ok_or_else(|| {
            TrainError::NoData(format!(
                "no candidate has a {} on any fold (too few frauds per fold?)",
                metric.name()
            ))
        })?
        .kind
        .clone();
    Ok(CvTable {
        scheme: match folds {
            Folds::Stratified { k } => format!("stratified {k}-fold"),
            Folds::Time { folds, gap_ms } => {
                format!("{folds} time folds, gap {} h", gap_ms / 3_600_000)
            }
        },
        metric: metric.name().to_owned(),
        rows,
        winner,
    })
}

/// The values at `rows`, in that order.
pub fn take_rows<T: Clone>(all: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&i| all[i].clone()).collect()
}

fn mean_std(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (Some(mean), Some(var.sqrt()))
}

impl CvTable {
    /// The table as printed by `train`: mean ± std of each metric.
    pub fn render(&self) -> String {
        let column = |row: &CvRow, f: fn(&Evaluation) -> Option<f64>| {
            let values: Vec<f64> = row.folds.iter().filter_map(f).collect();
            match mean_std(&values) {
                (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
                _ => "n/a".into(),
            }
        };
        let mut out = format!(
            "{} cross-validation, selected by {}:\n{:<10} {:>17} {:>17} {:>17} {:>17}\n",
            self.scheme, self.metric, "kind", "auc", "ap", "brier", "card precision"
        );
        for row in &self.rows {
            out.push_str(&format!(
                "{:<10} {:>17} {:>17} {:>17} {:>17}{}\n",
                row.kind,
                column(row, |e| e.auc),
                column(row, |e| e.average_precision),
                column(row, |e| e.brier),
                column(row, |e| e.card_precision),
                if row.kind == self.winner {
                    "  <- selected"
                } else {
                    ""
                }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_folds_cover_every_row_once_with_frauds_spread() {
        let y: Vec<bool> = (0..100).map(|i| i % 10 == 0).collect();
        let folds = fold_indices(Folds::Stratified { k: 5 }, &y, None, 1).unwrap();
        let mut seen = vec![0; 100];
        for (train, test) in &folds {
            assert_eq!(train.len() + test.len(), 100);
            assert_eq!(test.iter().filter(|&&i| y[i]).count(), 2);
            for &i in test {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
    }

    #[test]
    fn time_folds_train_on_the_past_and_skip_the_gap() {
        let day = 86_400_000;
        let times: Vec<i64> = (0..40).map(|d| d * day).collect();
        let y = vec![false; 40];
        let folds = fold_indices(
            Folds::Time {
                folds: 3,
                gap_ms: 7 * day,
            },
            &y,
            Some(&times),
            1,
        )
        .unwrap();
        assert_eq!(folds.len(), 3);
        for (train, test) in &folds {
            let first_test = test.iter().map(|&i| times[i]).min().unwrap();
            let last_train = train.iter().map(|&i| times[i]).max().unwrap();
            assert!(
                last_train < first_test - 7 * day,
                "{last_train} {first_test}"
            );
        }
        let covered: usize = folds.iter().map(|(_, t)| t.len()).sum();
        assert_eq!(covered, 30, "periods 1..3 of 4 are validated");
    }
}
