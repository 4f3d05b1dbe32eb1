//! Gradient-boosted trees, fitted by forust-ml (XGBoost's algorithm:
//! second-order gradients of the log loss, splits searched on histograms)
//! and turned into the engine's own ensemble: leaves in log-odds summed
//! onto the base margin (`Link::SumLogit`), `x < threshold` to the left.
//! The bundle then holds `trees.json` as for any tree kind, so TreeSHAP
//! reasons, pruning and quantisation apply (ARCHITECTURE.md §6, "A model kind").
//!
//! forust-ml rather than perpetual: a stable release (perpetual's current
//! line is a release candidate pulling sysinfo and a second rand), the same
//! tree model as XGBoost, which the engine already scores, and the usual
//! knobs (rounds, depth, learning rate) that a fraud team tunes by
//! cross-validation here rather than perpetual's single budget.

use forust_ml::{GradientBooster, Matrix};
use ndarray::ArrayView2;

use crate::model::maths::import::validated;
use crate::model::maths::trees::{Ensemble, LEAF, Link, SplitRule, Tree};

/// What shapes the boosting (`train --trees --max-depth --learning-rate`).
#[derive(Debug, Clone, Copy)]
pub(super) struct GbmParams {
    pub rounds: usize,
    pub max_depth: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

/// Histogram bins per feature. forust-ml's default, 256, cut the
/// simulator's amount-over-220 fraud pattern between bins: on the
/// handbook's protocol 1,024 raised average precision from 0.647 to 0.693
/// (depth 3, 100 rounds), and 8,192 added nothing (0.695); see README,
/// "How good it is".
const HISTOGRAM_BINS: u16 = 1024;

/// Boosted trees on rows `x` and labels `y`, as the engine's ensemble;
/// `Err` says what could not be fitted.
pub(super) fn fit_gbm(
    x: ArrayView2<f64>,
    y: &[bool],
    options: &GbmParams,
) -> Result<Ensemble, String> {
    let booster = boost(x, y, options)?;
    ensemble_of(&booster, x.ncols())
}

/// Fits forust-ml's booster on rows `x` and labels `y`.
fn boost(x: ArrayView2<f64>, y: &[bool], options: &GbmParams) -> Result<GradientBooster, String> {
    let fraud = y.iter().filter(|&&f| f).count();
    if fraud == 0 || fraud == y.len() {
        // The base margin is the log-odds of the fraud rate: one class
        // alone has none.
        return Err(format!(
            "boosting needs both classes; {fraud} of {} rows are fraud",
            y.len()
        ));
    }
    if options.rounds == 0 {
        return Err("boosting needs at least one round (--trees)".into());
    }
    let (rows, k) = x.dim();
    // forust-ml reads the matrix column by column.
    let columns: Vec<f64> = x.t().iter().copied().collect();
    let data = Matrix::new(&columns, rows, k);
    let labels: Vec<f64> = y.iter().map(|&f| f64::from(u8::from(f))).collect();
    let weights = vec![1.0; rows];
    let mut booster = GradientBooster::default()
        .set_iterations(options.rounds)
        .set_learning_rate(options.learning_rate as f32)
        .set_max_depth(options.max_depth)
        .set_seed(options.seed)
        // Training rows are finite (`feature_matrix` refuses the rest), so
        // no split sends missing values a way of their own.
        .set_create_missing_branch(false)
        .set_nbins(HISTOGRAM_BINS);
    booster
        .fit(&data, &labels, &weights, None)
        .map_err(|e| e.to_string())?;
    Ok(booster)
}

/// The booster's trees as the engine's ensemble. forust-ml's leaves hold
/// log-odds added to its base score, which is a margin already.
fn ensemble_of(booster: &GradientBooster, features: usize) -> Result<Ensemble, String> {
    let trees = booster.trees.iter().map(tree_of).collect();
    let ensemble = Ensemble::new(
        trees,
        SplitRule::LessThan,
        Link::SumLogit {
            base_margin: booster.base_score,
        },
        false,
    );
    validated(ensemble, features)
        .map_err(|message| format!("forust-ml gave trees the engine cannot score: {message}"))
}

/// One forust-ml tree: its nodes are indexed as stored, children after
/// parents; the hessian sum is the cover the reasons weigh branches by.
fn tree_of(tree: &forust_ml::tree::Tree) -> Tree {
    let mut out = Tree::default();
    for node in &tree.nodes {
        out.cover.push(f64::from(node.hessian_sum));
        if node.is_leaf {
            out.feature.push(LEAF);
            out.threshold.push(0.0);
            out.left.push(0);
            out.right.push(0);
            out.value.push(f64::from(node.weight_value));
        } else {
            out.feature.push(node.split_feature as i32);
            out.threshold.push(node.split_value);
            out.left.push(node.left_child as u32);
            out.right.push(node.right_child as u32);
            // Filled in by `validated` from the leaves below.
            out.value.push(0.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::model::Explain;

    /// Rows whose fraud odds rise with the first two features and fall
    /// with the third.
    fn data(rows: usize) -> (Array2<f64>, Vec<bool>) {
        let mut rng = SmallRng::seed_from_u64(3);
        let x = Array2::from_shape_fn((rows, 4), |_| rng.random_range(-2.0..2.0));
        let y = x
            .rows()
            .into_iter()
            .map(|r| {
                let margin: f64 = 1.5 * r[0] + r[1] * r[1] - r[2] - 3.0;
                rng.random_range(0.0..1.0) < 1.0 / (1.0 + (-margin).exp())
            })
            .collect();
        (x, y)
    }

    fn params(rounds: usize, max_depth: usize) -> GbmParams {
        GbmParams {
            rounds,
            max_depth,
            learning_rate: 0.1,
            seed: 7,
        }
    }

    /// The engine's ensemble scores every row as forust-ml's own predict
    /// does (its margin through the sigmoid), to 1e-9.
    #[test]
    fn the_ensemble_scores_as_the_booster_predicts() {
        let (x, y) = data(3_000);
        let options = params(40, 4);
        let booster = boost(x.view(), &y, &options).unwrap();
        let columns: Vec<f64> = x.t().iter().copied().collect();
        let margins = booster.predict(&Matrix::new(&columns, x.nrows(), x.ncols()), false);
        let ensemble = fit_gbm(x.view(), &y, &options).unwrap();
        let ours = ensemble
            .score(x.view(), Explain::AtOrAbove(f64::INFINITY))
            .probability;
        let worst = margins
            .iter()
            .zip(&ours)
            .map(|(m, p)| (1.0 / (1.0 + (-m).exp()) - p).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-9, "largest difference {worst}");
        // It learnt something: the frauds score higher on average.
        let mean = |fraud: bool| {
            let s: Vec<f64> = ours
                .iter()
                .zip(&y)
                .filter(|(_, f)| **f == fraud)
                .map(|(p, _)| *p)
                .collect();
            s.iter().sum::<f64>() / s.len() as f64
        };
        assert!(
            mean(true) > mean(false) + 0.2,
            "{} vs {}",
            mean(true),
            mean(false)
        );
    }

    #[test]
    fn one_class_alone_is_refused_with_the_reason() {
        let (x, _) = data(100);
        let options = params(10, 3);
        let err = fit_gbm(x.view(), &[false; 100], &options).unwrap_err();
        assert!(err.contains("both classes"), "{err}");
    }
}
