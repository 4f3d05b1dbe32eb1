//! Fitting one candidate on a feature matrix: a logistic regression
//! (linfa-logistic, standardised features, L2), a decision tree
//! (linfa-trees) whose leaves hold the fraud frequency of the training rows
//! that reach them, a random forest (`forest.rs`) or gradient-boosted
//! trees (`gbm.rs`).

use std::str::FromStr;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use super::forest::{ForestParams, fit_forest};
use super::gbm::{GbmParams, fit_gbm};
use crate::model::maths::trees::{Ensemble, LEAF, Link, SplitRule, Tree};
use crate::model::{Logistic, Model, ModelKind, Preprocessing};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no usable training rows: {0}")]
    NoData(String),
    #[error(
        "feature `{0}` is not a numeric column of the pipeline SQL output, or is the label or \
         the event id (schema.event_id_field)"
    )]
    BadFeature(String),
    #[error("label column: {0}")]
    BadLabel(String),
    #[error("linfa could not fit the {kind}: {message}")]
    Fit { kind: &'static str, message: String },
    #[error("unknown model kind `{0}`; the kinds are logistic, tree, forest and gbm")]
    UnknownKind(String),
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Bundle(#[from] crate::model::BundleError),
}

/// A model kind `train` can fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    Logistic,
    Tree,
    Forest,
    Gbm,
}

impl FromStr for Candidate {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "logistic" => Ok(Candidate::Logistic),
            "tree" => Ok(Candidate::Tree),
            "forest" => Ok(Candidate::Forest),
            "gbm" => Ok(Candidate::Gbm),
            other => Err(TrainError::UnknownKind(other.to_owned())),
        }
    }
}

impl Candidate {
    pub fn kind(self) -> ModelKind {
        match self {
            Candidate::Logistic => ModelKind::Logistic,
            Candidate::Tree => ModelKind::Tree,
            Candidate::Forest => ModelKind::Forest,
            Candidate::Gbm => ModelKind::Gbm,
        }
    }
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
    /// Without cross-validation: the last fraction of rows (in file order,
    /// so in time) held out to report metrics on.
    pub holdout_fraction: f64,
    /// Trees: the deepest split level, and the fewest training rows a leaf
    /// may hold (so that its fraud frequency means something).
    pub max_depth: usize,
    pub min_leaf: usize,
    /// Forests: how many trees; boosting: how many rounds (a tree each).
    pub trees: usize,
    /// Boosting: the step each round's tree takes (its leaves are scaled
    /// by it); smaller needs more rounds and overfits less.
    pub learning_rate: f64,
    /// Forests: how many features each split may choose from; 0 means the
    /// square root of the feature count (Breiman's default).
    pub max_features: usize,
    /// The seed of every random draw (samples, features).
    pub seed: u64,
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
            max_depth: 8,
            min_leaf: 5,
            trees: 100,
            learning_rate: 0.1,
            max_features: 0,
            seed: 7,
        }
    }
}

/// A fitted candidate: the maths and how rows are prepared for it.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub model: Model,
    pub preprocessing: Preprocessing,
}

impl Fitted {
    /// Fraud probabilities for raw feature rows.
    pub fn predict(&self, x: ArrayView2<f64>) -> Vec<f64> {
        self.model.predict(&self.preprocessing, x)
    }
}

/// Fits `candidate` on rows `x` (rows x features) and labels `y`.
pub fn fit(
    candidate: Candidate,
    x: ArrayView2<f64>,
    y: &[bool],
    options: &TrainOptions,
) -> Result<Fitted, TrainError> {
    if x.nrows() < 2 {
        return Err(TrainError::NoData(format!("{} rows", x.nrows())));
    }
    match candidate {
        Candidate::Logistic => fit_logistic(x, y, options),
        Candidate::Tree => {
            let all: Vec<usize> = (0..x.ncols()).collect();
            let tree = fit_tree(x, y, &all, options)?;
            let ensemble = Ensemble::new(
                vec![tree],
                SplitRule::LessOrEqual,
                Link::MeanProbability,
                false,
            );
            Ok(trees_fitted(ModelKind::Tree, ensemble))
        }
        Candidate::Forest => {
            let params = ForestParams {
                trees: options.trees,
                max_depth: options.max_depth,
                min_leaf: options.min_leaf,
                max_features: options.max_features,
                seed: options.seed,
            };
            let ensemble = fit_forest(x, y, &params).map_err(TrainError::Options)?;
            Ok(trees_fitted(ModelKind::Forest, ensemble))
        }
        Candidate::Gbm => {
            let params = GbmParams {
                rounds: options.trees,
                max_depth: options.max_depth,
                learning_rate: options.learning_rate,
                seed: options.seed,
            };
            let ensemble = fit_gbm(x, y, &params).map_err(|message| TrainError::Fit {
                kind: "gradient-boosted trees",
                message,
            })?;
            Ok(trees_fitted(ModelKind::Gbm, ensemble))
        }
    }
}

/// A tree kind's ensemble, scored on the raw features.
fn trees_fitted(kind: ModelKind, ensemble: Ensemble) -> Fitted {
    Fitted {
        model: Model::Trees { kind, ensemble },
        preprocessing: Preprocessing::None,
    }
}

fn fit_logistic(
    x: ArrayView2<f64>,
    y: &[bool],
    options: &TrainOptions,
) -> Result<Fitted, TrainError> {
    let mean = x.mean_axis(Axis(0)).expect("at least two rows");
    let std = x
        .std_axis(Axis(0), 0.0)
        .mapv(|s| if s > 1e-12 { s } else { 1.0 });
    let standardised = (&x - &mean) / &std;
    let dataset = Dataset::new(standardised, Array1::from(y.to_vec()));
    let fitted = LogisticRegression::default()
        .alpha(options.l2_penalty)
        .max_iterations(options.max_iterations)
        .fit(&dataset)
        .map_err(|e| TrainError::Fit {
            kind: "logistic regression",
            message: e.to_string(),
        })?;
    // linfa calls the first label it meets "positive"; store log-odds of fraud.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Fitted {
        model: Model::Logistic(Logistic {
            coefficients: fitted.params().iter().map(|c| c * sign).collect(),
            intercept: fitted.intercept() * sign,
        }),
        preprocessing: Preprocessing::Standardize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        },
    })
}

/// One tree on the columns `columns` of `x` (its splits name the columns'
/// indexes in `x`). Its leaves hold the fraud frequency of the rows of `x`
/// that reach them, not linfa's majority label.
fn fit_tree(
    x: ArrayView2<f64>,
    y: &[bool],
    columns: &[usize],
    options: &TrainOptions,
) -> Result<Tree, TrainError> {
    let sub = x.select(Axis(1), columns);
    let labels: Array1<usize> = y.iter().map(|&f| usize::from(f)).collect();
    let fitted: DecisionTree<f64, usize> = DecisionTree::params()
        .max_depth(Some(options.max_depth))
        .min_weight_leaf(options.min_leaf as f32)
        .min_weight_split(2.0 * options.min_leaf as f32)
        .fit(&Dataset::new(sub, labels))
        .map_err(|e| TrainError::Fit {
            kind: "decision tree",
            message: e.to_string(),
        })?;
    let mut tree = Tree::default();
    flatten(fitted.root_node(), columns, &mut tree);
    leaf_frequencies(&mut tree, x, y);
    Ok(tree)
}

/// Appends `node` and its subtree in preorder (children after parents).
fn flatten(node: &TreeNode<f64, usize>, columns: &[usize], tree: &mut Tree) -> u32 {
    let index = tree.feature.len();
    tree.feature.push(LEAF);
    tree.threshold.push(0.0);
    tree.left.push(0);
    tree.right.push(0);
    tree.value.push(0.0);
    tree.cover.push(0.0);
    let children = node.children();
    if let (false, [Some(left), Some(right)]) = (node.is_leaf(), children.as_slice()) {
        let (feature, threshold, _) = node.split();
        tree.feature[index] = columns[feature] as i32;
        tree.threshold[index] = threshold;
        tree.left[index] = flatten(left, columns, tree);
        tree.right[index] = flatten(right, columns, tree);
    }
    index as u32
}

/// Routes the training rows through the tree: covers, leaf frequencies and
/// the expected value of every internal node. A leaf no row reaches takes
/// its parent's frequency.
fn leaf_frequencies(tree: &mut Tree, x: ArrayView2<f64>, y: &[bool]) {
    let n = tree.feature.len();
    let mut frauds = vec![0.0; n];
    let mut cover = vec![0.0; n];
    for (row, &fraud) in x.rows().into_iter().zip(y) {
        let mut node = 0;
        loop {
            cover[node] += 1.0;
            frauds[node] += f64::from(u8::from(fraud));
            if tree.is_leaf(node) {
                break;
            }
            node = if row[tree.feature[node] as usize] <= tree.threshold[node] {
                tree.left[node]
            } else {
                tree.right[node]
            } as usize;
        }
    }
    // Preorder: a parent's value is set before its children need it.
    for node in 0..n {
        tree.cover[node] = cover[node];
        tree.value[node] = if cover[node] > 0.0 {
            frauds[node] / cover[node]
        } else {
            let parent = (0..node)
                .rev()
                .find(|&p| tree.left[p] as usize == node || tree.right[p] as usize == node);
            parent.map_or(0.0, |p| tree.value[p])
        };
    }
}

/// The feature matrix (rows x features) of named numeric columns; a null or
/// non-finite value is refused, since training must see what serving sees.
pub fn feature_matrix(
    features: &arrow::record_batch::RecordBatch,
    names: &[String],
) -> Result<Array2<f64>, TrainError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type};
    let rows = features.num_rows();
    let mut x = Array2::<f64>::zeros((rows, names.len()));
    for (j, name) in names.iter().enumerate() {
        let column = arrow::compute::cast(
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
            .assign(&ArrayView1::from(values.values().as_ref()));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    /// Fraud when x0 > 5, except every fourth row: 12 of the 16 such rows.
    fn data() -> (Array2<f64>, Vec<bool>) {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for i in 0..40 {
            let x0 = f64::from(i % 10);
            rows.extend([x0, f64::from(i % 3)]);
            y.push(x0 > 5.0 && i % 4 != 0);
        }
        (Array2::from_shape_vec((40, 2), rows).unwrap(), y)
    }

    #[test]
    fn a_tree_gives_leaf_frequencies_not_labels() {
        let (x, y) = data();
        let options = TrainOptions {
            max_depth: 1,
            min_leaf: 2,
            ..TrainOptions::default()
        };
        let fitted = fit(Candidate::Tree, x.view(), &y, &options).unwrap();
        let p = fitted.predict(array![[9.0, 0.0], [1.0, 0.0]].view());
        assert_eq!(p, vec![0.75, 0.0]);
        let Model::Trees { ensemble, .. } = &fitted.model else {
            panic!("a tree")
        };
        let tree = &ensemble.trees[0];
        assert_eq!(tree.cover, vec![40.0, 24.0, 16.0]);
        assert!((tree.value[0] - 12.0 / 40.0).abs() < 1e-12);
    }

    #[test]
    fn kinds_are_named_and_unknown_ones_refused() {
        assert_eq!("forest".parse::<Candidate>().unwrap(), Candidate::Forest);
        assert_eq!("gbm".parse::<Candidate>().unwrap(), Candidate::Gbm);
        let err = "boosted".parse::<Candidate>().unwrap_err();
        assert!(err.to_string().contains("`boosted`"), "{err}");
    }
}
