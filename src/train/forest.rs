//! A random forest by bagging over linfa-trees: each tree is fitted on a
//! bootstrap sample of the rows and a random subset of the features (linfa's
//! trees cannot sample features per split, so the subset is per tree), and
//! the forest averages the trees' leaf frequencies.

use ndarray::{ArrayView2, Axis};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::index::sample;

use super::fit::{Fitted, TrainError, TrainOptions, fit_tree};
use crate::model::trees::{Ensemble, Link, SplitRule};
use crate::model::{Model, ModelKind, Preprocessing};

/// The share of the features each tree sees.
const FEATURE_SHARE: f64 = 0.6;

pub(super) fn fit_forest(
    x: ArrayView2<f64>,
    y: &[bool],
    options: &TrainOptions,
) -> Result<Fitted, TrainError> {
    if options.forest_trees == 0 {
        return Err(TrainError::Options(
            "a forest needs at least one tree".into(),
        ));
    }
    let (rows, k) = x.dim();
    let per_tree = ((k as f64 * FEATURE_SHARE).round() as usize).clamp(1, k);
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let mut trees = Vec::with_capacity(options.forest_trees);
    for _ in 0..options.forest_trees {
        let picked: Vec<usize> = (0..rows)
            .map(|_| rand::Rng::random_range(&mut rng, 0..rows))
            .collect();
        let mut columns = sample(&mut rng, k, per_tree).into_vec();
        columns.sort_unstable();
        let bootstrap = x.select(Axis(0), &picked);
        let labels: Vec<bool> = picked.iter().map(|&i| y[i]).collect();
        trees.push(fit_tree(bootstrap.view(), &labels, &columns, options)?);
    }
    Ok(Fitted {
        model: Model::Trees {
            kind: ModelKind::Forest,
            ensemble: Ensemble::new(trees, SplitRule::LessOrEqual, Link::MeanProbability, false),
        },
        preprocessing: Preprocessing::None,
    })
}
