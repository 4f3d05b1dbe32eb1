//! Tree ensembles: one decision tree, a forest, and (later) imported boosted
//! trees share this form: flat node arrays per tree, as XGBoost, LightGBM
//! and scikit-learn store them, a split rule, and a link that turns the
//! trees' leaf values into a probability.
//!
//! The payload, plain or compact, is read and written in `quantised.rs`.
//!
//! Reasons: each row's TreeSHAP values (`treeshap.rs`), on the link's scale
//! before the final sigmoid: probability for a tree or a forest, log-odds
//! for boosted trees. Summed with the expected value, they give the
//! prediction exactly.

use ndarray::{Array1, ArrayView2, CowArray};
use serde::{Deserialize, Serialize};

use crate::model::{Explain, ModelOutput, top_reasons};

/// The precision a tree ensemble's numbers are kept at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    Full,
    F32,
    /// Codes of this many bits (8 or 16).
    Codes(u8),
}

impl Precision {
    pub fn label(self) -> String {
        match self {
            Precision::Full => "f64".into(),
            Precision::F32 => "f32".into(),
            Precision::Codes(bits) => format!("u{bits}"),
        }
    }
}

/// How an ensemble's numbers were quantised: what its compact payload
/// needs to write them back exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantised {
    pub precision: Precision,
    /// The value grid of [`Precision::Codes`] (unused otherwise).
    pub(super) value_min: f64,
    pub(super) value_step: f64,
}

/// The payload file of a tree bundle.
pub const PAYLOAD_FILE: &str = "trees.json";

/// Marks a leaf in [`Tree::feature`].
pub const LEAF: i32 = -1;

/// Caps on an imported or stored tree, named in the refusal: nodes per
/// tree (a million: far past any gradient-boosted tree), and depth (the
/// reasons recurse once per level; LightGBM's leaf-wise trees reach a few
/// dozen).
pub const MAX_TREE_NODES: usize = 1 << 20;
pub const MAX_TREE_DEPTH: usize = 256;

/// One tree in flat arrays; node 0 is the root.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Per node, the feature it splits on, or [`LEAF`].
    pub feature: Vec<i32>,
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    /// A leaf's value; for an internal node, the cover-weighted mean of the
    /// leaves under it (its expected value).
    pub value: Vec<f64>,
    /// The training weight that reached each node.
    pub cover: Vec<f64>,
}

/// Which side a value equal to the threshold takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitRule {
    /// `x < threshold` goes left (XGBoost).
    LessThan,
    /// `x <= threshold` goes left (linfa, scikit-learn, LightGBM).
    LessOrEqual,
}

/// How leaf values become a probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Link {
    /// Leaves hold probabilities; the ensemble averages them (a tree, a
    /// forest).
    MeanProbability,
    /// Leaves hold log-odds; the ensemble adds them to `base_margin` and
    /// applies the sigmoid (boosted trees).
    SumLogit { base_margin: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ensemble {
    pub trees: Vec<Tree>,
    pub split: SplitRule,
    pub link: Link,
    /// Compare features and thresholds as 32-bit floats, as XGBoost does
    /// (a value within a float32 step of a threshold would otherwise take
    /// the other branch).
    #[serde(default)]
    pub single_precision: bool,
    /// Set when the numbers are quantised: the payload is then compact
    /// (`quantised.rs`); the plain payload never carries it.
    #[serde(skip)]
    pub quantised: Option<Quantised>,
    /// The trees as scoring walks them, packed once, on first use.
    #[serde(skip)]
    packed: PackedCache,
}

/// A cache of the packed trees. Cloning gives an empty one (a clone may be
/// changed and must pack its own trees); it takes no part in equality.
#[derive(Default)]
struct PackedCache(std::sync::OnceLock<Vec<Packed>>);

impl Clone for PackedCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for PackedCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PackedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackedCache")
    }
}

/// A tree as scoring reads it: nodes renumbered breadth first, with a
/// node's two children side by side (`left`, `left + 1`), so that the step
/// down is computed rather than branched on. A leaf points to itself with a
/// NaN threshold (no comparison with NaN is true), so every row can take
/// the same number of steps, `depth`, and rows can walk in lockstep.
struct Packed {
    nodes: Vec<PackedNode>,
    /// Per node, its value (used at leaves).
    value: Vec<f64>,
    depth: usize,
}

#[derive(Debug, Clone, Copy)]
struct PackedNode {
    threshold: f64,
    feature: u32,
    left: u32,
}

/// Rows walked in lockstep: independent chains of loads the processor
/// overlaps.
const LOCKSTEP: usize = 8;

fn pack(tree: &Tree, single_precision: bool) -> Packed {
    let n = tree.feature.len();
    let mut nodes = Vec::with_capacity(n);
    let mut value = Vec::with_capacity(n);
    let mut queue = std::collections::VecDeque::from([(0usize, 0usize)]);
    let mut depth = 0;
    while let Some((node, level)) = queue.pop_front() {
        depth = depth.max(level);
        let index = nodes.len() as u32;
        value.push(tree.value[node]);
        if tree.is_leaf(node) {
            nodes.push(PackedNode {
                threshold: f64::NAN,
                feature: 0,
                left: index,
            });
            continue;
        }
        let t = tree.threshold[node];
        // The children take the next two free slots: those after every node
        // already placed or waiting in the queue.
        nodes.push(PackedNode {
            threshold: if single_precision {
                f64::from(t as f32)
            } else {
                t
            },
            feature: tree.feature[node] as u32,
            left: (nodes.len() + queue.len() + 1) as u32,
        });
        queue.push_back((tree.left[node] as usize, level + 1));
        queue.push_back((tree.right[node] as usize, level + 1));
    }
    Packed {
        nodes,
        value,
        depth,
    }
}

/// Adds the leaf each row of `data` reaches to its `raw` entry.
/// `LESS_THAN`: `x < t` goes left, else `x <= t`; a NaN goes left.
fn add_leaves<const LESS_THAN: bool>(tree: &Packed, data: &[f64], k: usize, raw: &mut [f64]) {
    let step = |node: usize, row: &[f64]| {
        let n = tree.nodes[node];
        let x = row[n.feature as usize];
        let right = if LESS_THAN {
            x >= n.threshold
        } else {
            x > n.threshold
        };
        n.left as usize + usize::from(right)
    };
    for (block, outs) in raw.chunks_mut(LOCKSTEP).enumerate() {
        let first = block * LOCKSTEP;
        let mut at = [0usize; LOCKSTEP];
        for _ in 0..tree.depth {
            for (i, node) in at.iter_mut().take(outs.len()).enumerate() {
                let row = first + i;
                *node = step(*node, &data[row * k..(row + 1) * k]);
            }
        }
        for (out, node) in outs.iter_mut().zip(at) {
            *out += tree.value[node];
        }
    }
}

impl Tree {
    pub fn is_leaf(&self, node: usize) -> bool {
        self.feature[node] == LEAF
    }

    /// Checks the arrays agree and every index is in range, so that scoring
    /// cannot panic or loop on a bad payload.
    fn validate(&self, features: usize) -> Result<(), String> {
        let n = self.feature.len();
        if n == 0 {
            return Err("a tree has no nodes".into());
        }
        for (name, len) in [
            ("threshold", self.threshold.len()),
            ("left", self.left.len()),
            ("right", self.right.len()),
            ("value", self.value.len()),
            ("cover", self.cover.len()),
        ] {
            if len != n {
                return Err(format!("a tree has {n} nodes but {len} `{name}` values"));
            }
        }
        if n > MAX_TREE_NODES {
            return Err(format!(
                "a tree has {n} nodes, over the cap of {MAX_TREE_NODES} per tree"
            ));
        }
        // Per node, its depth, once a parent has named it.
        let mut depth: Vec<Option<usize>> = vec![None; n];
        depth[0] = Some(0);
        for node in 0..n {
            if !self.value[node].is_finite() {
                return Err(format!("node {node} has a non-finite value"));
            }
            if self.is_leaf(node) {
                continue;
            }
            let f = self.feature[node];
            if f < 0 || f as usize >= features {
                return Err(format!("node {node} splits on feature {f} of {features}"));
            }
            // Children come after their parent: no cycles, every walk ends.
            // One parent each: a node shared by two parents would make the
            // reasons' walk, which visits both branches, exponential.
            let below = depth[node].map(|d| d + 1);
            for child in [self.left[node], self.right[node]] {
                let child = child as usize;
                if child <= node || child >= n {
                    return Err(format!("node {node} has child {child} of {n} nodes"));
                }
                if depth[child].is_some() {
                    return Err(format!("node {child} has more than one parent"));
                }
                depth[child] = below;
            }
            // The reasons (TreeSHAP) recurse once per level.
            if below.is_some_and(|d| d > MAX_TREE_DEPTH) {
                return Err(format!(
                    "the tree is deeper than the cap of {MAX_TREE_DEPTH} levels"
                ));
            }
        }
        Ok(())
    }
}

impl Ensemble {
    pub fn new(trees: Vec<Tree>, split: SplitRule, link: Link, single_precision: bool) -> Self {
        Self {
            trees,
            split,
            link,
            single_precision,
            quantised: None,
            packed: PackedCache::default(),
        }
    }

    /// Marks the ensemble's numbers as quantised, which its payload then
    /// keeps.
    pub fn with_quantised(mut self, how: Quantised) -> Self {
        self.quantised = Some(how);
        self
    }

    /// Checks every tree, so that scoring cannot panic or loop on a bad
    /// payload.
    pub fn validate(&self, features: usize) -> Result<(), String> {
        if self.trees.is_empty() {
            return Err("`trees` is empty".into());
        }
        for (i, tree) in self.trees.iter().enumerate() {
            tree.validate(features)
                .map_err(|e| format!("tree {i}: {e}"))?;
        }
        Ok(())
    }

    /// Scores rows (rows x features); rows `explain` wants get their
    /// TreeSHAP reasons.
    pub fn score(&self, x: ArrayView2<f64>, explain: Explain) -> ModelOutput {
        let (rows, k) = x.dim();
        // Compared as XGBoost compares them, once per batch rather than per
        // node; f32 -> f64 is exact and keeps the order.
        let x = if self.single_precision {
            CowArray::from(x.mapv(|v| f64::from(v as f32)))
        } else {
            x.as_standard_layout()
        };
        let data = x.as_slice().expect("a standard-layout array is one slice");
        let raw = self.raw_scores(data, k);
        let mut probability = Vec::with_capacity(rows);
        let mut reasons = Vec::with_capacity(rows);
        let mut phi = Array1::<f64>::zeros(k);
        for (i, sum) in raw.into_iter().enumerate() {
            let p = match self.link {
                Link::MeanProbability => sum / self.trees.len() as f64,
                Link::SumLogit { base_margin } => {
                    let z = base_margin + sum;
                    if z.is_finite() {
                        1.0 / (1.0 + (-z).exp())
                    } else {
                        f64::NAN
                    }
                }
            };
            probability.push(p);
            if !explain.wants(p) {
                reasons.push([None; crate::model::REASON_COUNT]);
                continue;
            }
            phi.fill(0.0);
            self.add_shap_values(
                &data[i * k..(i + 1) * k],
                phi.as_slice_mut().expect("a fresh array is contiguous"),
            );
            reasons.push(top_reasons(phi.view()));
        }
        ModelOutput {
            probability,
            reasons,
        }
    }

    /// Per row, the sum of the leaf values it reaches. Trees outside, rows
    /// inside: one tree's nodes stay in cache for the whole batch.
    fn raw_scores(&self, data: &[f64], k: usize) -> Vec<f64> {
        if k == 0 {
            return Vec::new();
        }
        let mut raw = vec![0.0; data.len() / k];
        let packed = self.packed.0.get_or_init(|| {
            self.trees
                .iter()
                .map(|tree| pack(tree, self.single_precision))
                .collect()
        });
        for tree in packed {
            match self.split {
                SplitRule::LessThan => add_leaves::<true>(tree, data, k, &mut raw),
                SplitRule::LessOrEqual => add_leaves::<false>(tree, data, k, &mut raw),
            }
        }
        raw
    }

    /// How much each feature's splits reduce impurity (or move the value),
    /// weighted by cover: a rough importance for reports.
    pub fn split_counts(&self, features: usize) -> Vec<f64> {
        let mut counts = vec![0.0; features];
        for tree in &self.trees {
            for node in 0..tree.feature.len() {
                if !tree.is_leaf(node) {
                    counts[tree.feature[node] as usize] += tree.cover[node];
                }
            }
        }
        counts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use ndarray::array;

    use super::*;
    use crate::model::Explain;

    /// x0 <= 0.5 ? (x1 <= 2 ? 0.1 : 0.5) : 0.9, covers 10 = 6 (4 + 2) + 4.
    pub(crate) fn stump() -> Tree {
        let value = |node_values: [f64; 5]| node_values.to_vec();
        Tree {
            feature: vec![0, 1, LEAF, LEAF, LEAF],
            threshold: vec![0.5, 2.0, 0.0, 0.0, 0.0],
            left: vec![1, 2, 0, 0, 0],
            right: vec![4, 3, 0, 0, 0],
            // Node 1: (4*0.1 + 2*0.5)/6; root: (6*node1 + 4*0.9)/10.
            value: value([(1.4 + 3.6) / 10.0, 1.4 / 6.0, 0.1, 0.5, 0.9]),
            cover: vec![10.0, 6.0, 4.0, 2.0, 4.0],
        }
    }

    /// At a342126 a tree was walked before it was checked (a bad child
    /// index panicked), and neither depth nor sharing was bounded, while
    /// the reasons recurse per level and visit both branches.
    #[test]
    fn unsound_trees_are_refused_with_the_cap_named() {
        let mut shared = stump();
        shared.right[0] = 1;
        assert!(
            shared
                .validate(2)
                .unwrap_err()
                .contains("more than one parent"),
            "a node with two parents"
        );
        let levels = MAX_TREE_DEPTH + 1;
        let mut chain = Tree::default();
        let mut push = |feature: i32, children: (u32, u32), value: f64| {
            chain.feature.push(feature);
            chain.threshold.push(0.0);
            chain.left.push(children.0);
            chain.right.push(children.1);
            chain.value.push(value);
            chain.cover.push(1.0);
        };
        for node in 0..levels as u32 {
            // A split whose left child is a leaf and right one splits again.
            push(0, (2 * node + 1, 2 * node + 2), 0.0);
            push(LEAF, (0, 0), 0.1);
        }
        push(LEAF, (0, 0), 0.2);
        let refused = chain.validate(1).unwrap_err();
        assert!(
            refused.contains(&format!("cap of {MAX_TREE_DEPTH}")),
            "{refused}"
        );

        let xgboost = br#"{"learner":{"learner_model_param":{"base_score":"5E-1","num_feature":"1"},
            "objective":{"name":"binary:logistic"},"gradient_booster":{"name":"gbtree","model":{"trees":[
            {"left_children":[5,-1,-1],"right_children":[2,-1,-1],"split_indices":[0,0,0],
             "split_conditions":[0.5,0.1,0.9],"sum_hessian":[2,1,1]}]}}}}"#;
        let refused = crate::model::maths::import::xgboost::parse(xgboost, 1).unwrap_err();
        assert!(refused.contains("child 5 of 3 nodes"), "{refused}");
    }

    #[test]
    fn leaves_are_reached_by_the_split_rule_and_credits_add_up() {
        let ensemble = Ensemble::new(
            vec![stump()],
            SplitRule::LessOrEqual,
            Link::MeanProbability,
            false,
        );
        let x = array![[0.5, 3.0], [0.2, 1.0], [0.9, 0.0]];
        let out = ensemble.score(x.view(), Explain::All);
        assert_eq!(out.probability, vec![0.5, 0.1, 0.9]);
        // Row 0: root 0.5 -> node1 (0.2333) -> leaf 0.5: x0 credited
        // -0.2667, x1 +0.2667; only x1 raised the score.
        assert_eq!(out.reasons[0][0].map(|r| r.feature), Some(1));
        assert!(out.reasons[0][1].is_none());
        let strict = Ensemble::new(
            vec![stump()],
            SplitRule::LessThan,
            Link::MeanProbability,
            false,
        );
        assert_eq!(strict.score(x.view(), Explain::All).probability[0], 0.9);
    }

    #[test]
    fn boosted_trees_add_margins_then_take_the_sigmoid() {
        let ensemble = Ensemble::new(
            vec![stump(), stump()],
            SplitRule::LessOrEqual,
            Link::SumLogit { base_margin: -1.0 },
            false,
        );
        let out = ensemble.score(array![[0.9, 0.0]].view(), Explain::All);
        let z: f64 = -1.0 + 0.9 + 0.9;
        assert!((out.probability[0] - 1.0 / (1.0 + (-z).exp())).abs() < 1e-15);
    }

    #[test]
    fn payloads_with_bad_indexes_are_refused() {
        let mut tree = stump();
        tree.right[0] = 9;
        let bad = Ensemble::new(
            vec![tree],
            SplitRule::LessOrEqual,
            Link::MeanProbability,
            false,
        );
        let err = Ensemble::from_payload(&bad.to_payload(), 2).unwrap_err();
        assert!(err.contains("tree 0: node 0 has child 9"), "{err}");
        let err = Ensemble::from_payload(&bad.to_payload(), 1).unwrap_err();
        assert!(err.contains("tree 0"), "{err}");
    }
}
