//! Tree ensembles: one decision tree, a forest, and (later) imported boosted
//! trees share this form: flat node arrays per tree, as XGBoost, LightGBM
//! and scikit-learn store them, a split rule, and a link that turns the
//! trees' leaf values into a probability.
//!
//! Reasons: each row's TreeSHAP values (`treeshap.rs`), on the link's scale
//! before the final sigmoid: probability for a tree or a forest, log-odds
//! for boosted trees. Summed with the expected value, they give the
//! prediction exactly.

use ndarray::{Array1, ArrayView2};
use serde::{Deserialize, Serialize};

use super::treeshap::add_shap_values;
use super::{Explain, ModelOutput, top_reasons};

/// The payload file of a tree bundle.
pub const PAYLOAD_FILE: &str = "trees.json";

/// Marks a leaf in [`Tree::feature`].
pub const LEAF: i32 = -1;

/// One tree in flat arrays; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

impl Tree {
    pub fn is_leaf(&self, node: usize) -> bool {
        self.feature[node] == LEAF
    }

    /// The leaf `row` reaches, with each split node passed on the way.
    pub(crate) fn walk(
        &self,
        row: &[f64],
        split: SplitRule,
        single_precision: bool,
        mut visit: impl FnMut(usize, usize),
    ) -> usize {
        let mut node = 0;
        while !self.is_leaf(node) {
            let (mut x, mut t) = (row[self.feature[node] as usize], self.threshold[node]);
            if single_precision {
                (x, t) = (f64::from(x as f32), f64::from(t as f32));
            }
            let goes_left = match split {
                SplitRule::LessThan => x < t,
                SplitRule::LessOrEqual => x <= t,
            };
            let next = if goes_left {
                self.left[node]
            } else {
                self.right[node]
            } as usize;
            visit(node, next);
            node = next;
        }
        node
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
            for child in [self.left[node], self.right[node]] {
                if (child as usize) <= node || child as usize >= n {
                    return Err(format!("node {node} has child {child} of {n} nodes"));
                }
            }
        }
        Ok(())
    }
}

impl Ensemble {
    pub fn from_payload(bytes: &[u8], features: usize) -> Result<Self, String> {
        let ensemble: Ensemble = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if ensemble.trees.is_empty() {
            return Err("`trees` is empty".into());
        }
        for (i, tree) in ensemble.trees.iter().enumerate() {
            tree.validate(features)
                .map_err(|e| format!("tree {i}: {e}"))?;
        }
        Ok(ensemble)
    }

    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ensemble serialises")
    }

    /// Scores rows (rows x features); rows `explain` wants get their
    /// TreeSHAP reasons.
    pub fn score(&self, x: ArrayView2<f64>, explain: Explain) -> ModelOutput {
        let (rows, k) = x.dim();
        let scale = match self.link {
            Link::MeanProbability => 1.0 / self.trees.len() as f64,
            Link::SumLogit { .. } => 1.0,
        };
        let mut probability = Vec::with_capacity(rows);
        let mut reasons = Vec::with_capacity(rows);
        let mut phi = Array1::<f64>::zeros(k);
        for row in x.rows() {
            let row = row.as_slice().map_or_else(|| row.to_vec(), <[f64]>::to_vec);
            let raw: f64 = self
                .trees
                .iter()
                .map(|tree| {
                    tree.value[tree.walk(&row, self.split, self.single_precision, |_, _| {})]
                })
                .sum();
            let p = match self.link {
                Link::MeanProbability => raw * scale,
                Link::SumLogit { base_margin } => {
                    let z = base_margin + raw;
                    if z.is_finite() {
                        1.0 / (1.0 + (-z).exp())
                    } else {
                        f64::NAN
                    }
                }
            };
            probability.push(p);
            if !explain.wants(p) {
                reasons.push([None; super::REASON_COUNT]);
                continue;
            }
            phi.fill(0.0);
            self.add_shap_values(
                &row,
                phi.as_slice_mut().expect("a fresh array is contiguous"),
            );
            reasons.push(top_reasons(phi.view()));
        }
        ModelOutput {
            probability,
            reasons,
        }
    }

    /// Adds the row's TreeSHAP values (one per feature) to `phi`, on the
    /// link's scale: with the expected value they sum to the raw prediction.
    pub fn add_shap_values(&self, row: &[f64], phi: &mut [f64]) {
        let scale = match self.link {
            Link::MeanProbability => 1.0 / self.trees.len() as f64,
            Link::SumLogit { .. } => 1.0,
        };
        for tree in &self.trees {
            add_shap_values(tree, row, self.split, self.single_precision, scale, phi);
        }
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

    #[test]
    fn leaves_are_reached_by_the_split_rule_and_credits_add_up() {
        let ensemble = Ensemble {
            trees: vec![stump()],
            split: SplitRule::LessOrEqual,
            link: Link::MeanProbability,
            single_precision: false,
        };
        let x = array![[0.5, 3.0], [0.2, 1.0], [0.9, 0.0]];
        let out = ensemble.score(x.view(), Explain::All);
        assert_eq!(out.probability, vec![0.5, 0.1, 0.9]);
        // Row 0: root 0.5 -> node1 (0.2333) -> leaf 0.5: x0 credited
        // -0.2667, x1 +0.2667; only x1 raised the score.
        assert_eq!(out.reasons[0][0].map(|r| r.feature), Some(1));
        assert!(out.reasons[0][1].is_none());
        let strict = Ensemble {
            split: SplitRule::LessThan,
            ..ensemble
        };
        assert_eq!(strict.score(x.view(), Explain::All).probability[0], 0.9);
    }

    #[test]
    fn boosted_trees_add_margins_then_take_the_sigmoid() {
        let ensemble = Ensemble {
            trees: vec![stump(), stump()],
            split: SplitRule::LessOrEqual,
            link: Link::SumLogit { base_margin: -1.0 },
            single_precision: false,
        };
        let out = ensemble.score(array![[0.9, 0.0]].view(), Explain::All);
        let z: f64 = -1.0 + 0.9 + 0.9;
        assert!((out.probability[0] - 1.0 / (1.0 + (-z).exp())).abs() < 1e-15);
    }

    #[test]
    fn payloads_with_bad_indexes_are_refused() {
        let mut tree = stump();
        tree.right[0] = 9;
        let bad = Ensemble {
            trees: vec![tree],
            split: SplitRule::LessOrEqual,
            link: Link::MeanProbability,
            single_precision: false,
        };
        let err = Ensemble::from_payload(&bad.to_payload(), 2).unwrap_err();
        assert!(err.contains("tree 0: node 0 has child 9"), "{err}");
        let err = Ensemble::from_payload(&bad.to_payload(), 1).unwrap_err();
        assert!(err.contains("tree 0"), "{err}");
    }
}
