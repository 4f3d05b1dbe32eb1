//! `streamscore models optimize`: smaller and faster variants of a tree or
//! forest bundle, each measured on a validation file: the bundle size, the
//! ns per row, and the change in every metric against the original. The
//! user keeps the variant they want (`--out-dir` writes them all).
//!
//! Pruning turns a split into a leaf holding its expected value (the fraud
//! frequency of the training rows under it): by depth, where a child holds
//! fewer training rows than a minimum, or by cost complexity (Breiman's
//! minimal cost-complexity pruning, as scikit-learn's `ccp_alpha`): the
//! subtree minimising its leaves' weighted Gini impurity plus `alpha` per
//! leaf. Quantising keeps every number at f32, or as 16- or 8-bit codes,
//! in a compact payload (`model/quantised.rs`).

use std::time::Instant;

use crate::model::maths::quantised::{Precision, quantise};
use crate::model::maths::trees::{Ensemble, LEAF, Link, Tree};
use crate::model::{Bundle, BundleError, BundleParts, Explain, Model};

/// One way to shrink a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variant {
    Original,
    MaxDepth(usize),
    MinLeaf(f64),
    /// Minimal cost-complexity pruning with this `alpha`; for trees whose
    /// leaves hold class frequencies (trees and forests trained here).
    CostComplexity(f64),
    /// Every number at a lower precision, in a compact payload.
    Quantise(Precision),
}

impl Variant {
    pub fn label(self) -> String {
        match self {
            Variant::Original => "original".into(),
            Variant::MaxDepth(d) => format!("depth-{d}"),
            Variant::MinLeaf(m) => format!("min-leaf-{m}"),
            Variant::CostComplexity(a) => format!("ccp-{a}"),
            Variant::Quantise(p) => format!("quant-{}", p.label()),
        }
    }

    /// The variant of one tree (quantising is done on the whole ensemble,
    /// whose codebooks the trees share).
    fn apply(self, tree: &Tree) -> Tree {
        match self {
            Variant::Original | Variant::Quantise(_) => tree.clone(),
            Variant::MaxDepth(max) => rebuild(tree, |_, depth| depth < max),
            Variant::MinLeaf(min) => rebuild(tree, |node, _| {
                tree.cover[tree.left[node] as usize] >= min
                    && tree.cover[tree.right[node] as usize] >= min
            }),
            Variant::CostComplexity(alpha) => {
                let mut keep = vec![false; tree.feature.len()];
                cheapest_subtree(
                    tree,
                    0,
                    alpha,
                    tree.cover[0].max(f64::MIN_POSITIVE),
                    &mut keep,
                );
                rebuild(tree, |node, _| keep[node])
            }
        }
    }

    /// Whether the variant applies to an ensemble with this link.
    fn applies_to(self, link: Link) -> bool {
        !matches!(self, Variant::CostComplexity(_)) || link == Link::MeanProbability
    }
}

/// The cost of node `node` as a leaf: its share of the training weight
/// times its Gini impurity (its value is the class frequency under it).
fn leaf_cost(tree: &Tree, node: usize, total: f64) -> f64 {
    let p = tree.value[node];
    tree.cover[node] / total * 2.0 * p * (1.0 - p)
}

/// The least cost (leaves' costs plus `alpha` per leaf) of the subtree under
/// `node`, marking in `keep` the splits that the cheapest subtree keeps:
/// a split is kept only where its children's cheapest subtrees cost less
/// than the node as one leaf. Bottom-up, this finds the subtree that
/// Breiman's weakest-link pruning reaches for `alpha`.
fn cheapest_subtree(tree: &Tree, node: usize, alpha: f64, total: f64, keep: &mut [bool]) -> f64 {
    let as_leaf = leaf_cost(tree, node, total) + alpha;
    if tree.is_leaf(node) {
        return as_leaf;
    }
    let split = cheapest_subtree(tree, tree.left[node] as usize, alpha, total, keep)
        + cheapest_subtree(tree, tree.right[node] as usize, alpha, total, keep);
    keep[node] = split < as_leaf;
    split.min(as_leaf)
}

/// A copy of `tree` where a split is kept only where `keep(node, depth)`;
/// elsewhere the node becomes a leaf with its expected value.
fn rebuild(tree: &Tree, keep: impl Fn(usize, usize) -> bool) -> Tree {
    let mut out = Tree::default();
    copy(tree, 0, 0, &keep, &mut out);
    out
}

fn copy(
    tree: &Tree,
    node: usize,
    depth: usize,
    keep: &dyn Fn(usize, usize) -> bool,
    out: &mut Tree,
) -> u32 {
    let index = out.feature.len();
    out.feature.push(LEAF);
    out.threshold.push(0.0);
    out.left.push(0);
    out.right.push(0);
    out.value.push(tree.value[node]);
    out.cover.push(tree.cover[node]);
    if !tree.is_leaf(node) && keep(node, depth) {
        out.feature[index] = tree.feature[node];
        out.threshold[index] = tree.threshold[node];
        out.left[index] = copy(tree, tree.left[node] as usize, depth + 1, keep, out);
        out.right[index] = copy(tree, tree.right[node] as usize, depth + 1, keep, out);
    }
    index as u32
}

/// The variant of a tree or forest bundle; `None` for other kinds.
pub fn variant_of(bundle: &Bundle, variant: Variant) -> Option<Result<Bundle, BundleError>> {
    let Model::Trees { kind, ensemble } = &bundle.model else {
        return None;
    };
    if !variant.applies_to(ensemble.link) {
        return None;
    }
    let pruned = Ensemble::new(
        ensemble.trees.iter().map(|t| variant.apply(t)).collect(),
        ensemble.split,
        ensemble.link,
        ensemble.single_precision,
    );
    let pruned = match variant {
        Variant::Quantise(precision) => quantise(&pruned, precision),
        _ => pruned,
    };
    let m = &bundle.manifest;
    let mut provenance = m.provenance.clone();
    provenance.insert("optimized".into(), variant.label());
    Some(
        Bundle::assemble(BundleParts {
            name: m.name.clone(),
            version: match variant {
                Variant::Original => m.version.clone(),
                other => format!("{}-{}", m.version, other.label()),
            },
            features: m.features.clone(),
            preprocessing: m.preprocessing.clone(),
            threshold: m.threshold,
            provenance,
            metrics: m.metrics.clone(),
            model: Model::Trees {
                kind: *kind,
                ensemble: pruned,
            },
            check_features: m.check_row.features.clone(),
        })
        .and_then(|b| b.with_calibration(m.calibration.clone())),
    )
}

/// Bytes of a bundle's payload and manifest as written.
pub fn bundle_size(bundle: &Bundle) -> usize {
    bundle.manifest.to_json().len()
        + bundle
            .model
            .payload_files()
            .iter()
            .map(|(_, bytes)| bytes.len())
            .sum::<usize>()
}

/// Median ns per row of scoring `x` (rows x features), no reasons.
pub fn ns_per_row(model: &Model, x: ndarray::ArrayView2<f64>) -> f64 {
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(model.score(x, Explain::AtOrAbove(f64::INFINITY)));
            started.elapsed().as_nanos() as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2] / x.nrows().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::maths::trees::tests::stump;

    #[test]
    fn pruning_by_depth_keeps_expected_values_at_the_new_leaves() {
        let tree = stump();
        let pruned = Variant::MaxDepth(1).apply(&tree);
        // Root split kept; node 1 (split on x1) becomes a leaf of 1.4/6.
        assert_eq!(pruned.feature, vec![0, LEAF, LEAF]);
        assert!((pruned.value[1] - 1.4 / 6.0).abs() < 1e-12);
        assert_eq!(pruned.value[2], 0.9);
        let root_only = Variant::MaxDepth(0).apply(&tree);
        assert_eq!(root_only.feature, vec![LEAF]);
    }

    #[test]
    fn cost_complexity_prunes_the_splits_that_buy_least_impurity() {
        let tree = stump();
        // alpha 0 keeps every split that lowers the impurity at all.
        let none = Variant::CostComplexity(0.0).apply(&tree);
        let weakest = (0..tree.feature.len())
            .filter(|&n| !tree.is_leaf(n))
            .map(|n| {
                let total = tree.cover[0];
                let (l, r) = (tree.left[n] as usize, tree.right[n] as usize);
                leaf_cost(&tree, n, total) - leaf_cost(&tree, l, total) - leaf_cost(&tree, r, total)
            })
            .fold(f64::INFINITY, f64::min);
        assert!(weakest > 0.0);
        assert_eq!(none, tree);
        // Just above the weakest split's gain, that split goes (and only
        // it, when the others gain more); a huge alpha leaves the root.
        let pruned = Variant::CostComplexity(weakest * 1.0001).apply(&tree);
        assert!(pruned.feature.len() < tree.feature.len(), "{pruned:?}");
        let root = Variant::CostComplexity(1e9).apply(&tree);
        assert_eq!(root.feature, vec![LEAF]);
    }

    #[test]
    fn pruning_by_leaf_size_merges_small_children() {
        // Node 1's children cover 4 and 2: a minimum of 3 merges them.
        let pruned = Variant::MinLeaf(3.0).apply(&stump());
        assert_eq!(pruned.feature, vec![0, LEAF, LEAF]);
        let kept = Variant::MinLeaf(2.0).apply(&stump());
        assert_eq!(kept, stump());
    }
}
