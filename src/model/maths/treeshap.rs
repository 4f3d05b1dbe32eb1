//! Path-dependent TreeSHAP (Lundberg, Erion and Lee, "Consistent
//! individualized feature attribution for tree ensembles", Algorithm 2):
//! exact Shapley values of one tree's prediction for one row, where a
//! feature left out follows both branches in proportion to the training
//! cover. Per row and tree it costs O(leaves x depth^2), which is why
//! reasons can be limited to flagged events.

use super::trees::{Ensemble, Link, SplitRule, Tree};

/// One element of the path of unique features from the root.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathElement {
    /// The feature split on; -1 for the root's placeholder.
    feature: i32,
    /// Share of the cover that follows this path when the feature is left out.
    zero_fraction: f64,
    /// 1 if the row follows this path when the feature is known, else 0.
    one_fraction: f64,
    /// Permutation weight.
    weight: f64,
}

/// Adds `scale` times the tree's SHAP values for `row` to `phi` (one value
/// per feature). Their sum plus the root's expected value is the leaf value
/// the row reaches. `paths` is scratch space, reused between calls.
pub fn add_shap_values(
    tree: &Tree,
    row: &[f64],
    split: SplitRule,
    single_precision: bool,
    scale: f64,
    phi: &mut [f64],
    paths: &mut Vec<PathElement>,
) {
    let walk = Walk {
        tree,
        row,
        split,
        single_precision,
        scale,
    };
    recurse(&walk, 0, paths, 0, 0, 1.0, 1.0, -1, phi);
}

/// Scratch space for [`add_shap_values`].
pub fn scratch() -> Vec<PathElement> {
    Vec::with_capacity(256)
}

struct Walk<'a> {
    tree: &'a Tree,
    row: &'a [f64],
    split: SplitRule,
    single_precision: bool,
    scale: f64,
}

impl Walk<'_> {
    /// The child `row` takes at `node`.
    fn hot_child(&self, node: usize) -> usize {
        let t = self.tree;
        let (mut x, mut threshold) = (self.row[t.feature[node] as usize], t.threshold[node]);
        if self.single_precision {
            (x, threshold) = (f64::from(x as f32), f64::from(threshold as f32));
        }
        let left = match self.split {
            SplitRule::LessThan => x < threshold,
            SplitRule::LessOrEqual => x <= threshold,
        };
        (if left { t.left[node] } else { t.right[node] }) as usize
    }
}

/// Each level of the recursion keeps its path in its own segment of
/// `paths`, after its parent's: no allocation per node.
#[allow(clippy::too_many_arguments)]
fn recurse(
    walk: &Walk,
    node: usize,
    paths: &mut Vec<PathElement>,
    parent_start: usize,
    parent_len: usize,
    zero_fraction: f64,
    one_fraction: f64,
    feature: i32,
    phi: &mut [f64],
) {
    let start = parent_start + parent_len;
    if paths.len() < start + parent_len + 1 {
        paths.resize(start + parent_len + 1, PathElement::default());
    }
    paths.copy_within(parent_start..start, start);
    let mut len = parent_len + 1;
    extend(
        &mut paths[start..start + len],
        zero_fraction,
        one_fraction,
        feature,
    );
    let tree = walk.tree;
    if tree.is_leaf(node) {
        let path = &paths[start..start + len];
        let value = tree.value[node] * walk.scale;
        for i in 1..len {
            let w = unwound_sum(path, i);
            let el = path[i];
            phi[el.feature as usize] += w * (el.one_fraction - el.zero_fraction) * value;
        }
        return;
    }
    let hot = walk.hot_child(node);
    let cold = if hot == tree.left[node] as usize {
        tree.right[node] as usize
    } else {
        tree.left[node] as usize
    };
    let cover = tree.cover[node];
    let (hot_zero, cold_zero) = if cover > 0.0 {
        (tree.cover[hot] / cover, tree.cover[cold] / cover)
    } else {
        (0.5, 0.5)
    };
    let split_feature = tree.feature[node];
    let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
    // A feature already on the path is taken out and put back at this split.
    if let Some(k) = paths[start..start + len]
        .iter()
        .position(|el| el.feature == split_feature)
    {
        incoming_zero = paths[start + k].zero_fraction;
        incoming_one = paths[start + k].one_fraction;
        unwind(&mut paths[start..start + len], k);
        len -= 1;
    }
    recurse(
        walk,
        hot,
        paths,
        start,
        len,
        hot_zero * incoming_zero,
        incoming_one,
        split_feature,
        phi,
    );
    recurse(
        walk,
        cold,
        paths,
        start,
        len,
        cold_zero * incoming_zero,
        0.0,
        split_feature,
        phi,
    );
}

/// Appends an element (the slice's last, already there) to the path of
/// the elements before it.
fn extend(path: &mut [PathElement], zero_fraction: f64, one_fraction: f64, feature: i32) {
    let depth = path.len() - 1;
    path[depth] = PathElement {
        feature,
        zero_fraction,
        one_fraction,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let n = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].weight += one_fraction * path[i].weight * (i + 1) as f64 / n;
        path[i].weight = zero_fraction * path[i].weight * (depth - i) as f64 / n;
    }
}

/// Removes element `index` from the path, undoing its extension; the
/// path's last element is then stale (the caller shortens the path).
fn unwind(path: &mut [PathElement], index: usize) {
    let depth = path.len() - 1;
    let (one, zero) = (path[index].one_fraction, path[index].zero_fraction);
    let mut next = path[depth].weight;
    let n = (depth + 1) as f64;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let kept = path[i].weight;
            path[i].weight = next * n / ((i + 1) as f64 * one);
            next = kept - path[i].weight * zero * (depth - i) as f64 / n;
        } else {
            path[i].weight = path[i].weight * n / (zero * (depth - i) as f64);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero_fraction = path[i + 1].zero_fraction;
        path[i].one_fraction = path[i + 1].one_fraction;
    }
}

/// The total permutation weight with element `index` unwound.
fn unwound_sum(path: &[PathElement], index: usize) -> f64 {
    let depth = path.len() - 1;
    let (one, zero) = (path[index].one_fraction, path[index].zero_fraction);
    let mut next = path[depth].weight;
    let mut total = 0.0;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let share = next / ((i + 1) as f64 * one);
            total += share;
            next = path[i].weight - share * zero * (depth - i) as f64;
        } else {
            total += path[i].weight / (zero * (depth - i) as f64);
        }
    }
    total * (depth + 1) as f64
}

/// TreeSHAP over a whole ensemble.
impl Ensemble {
    /// Adds the row's TreeSHAP values (one per feature) to `phi`, on the
    /// link's scale: with the expected value they sum to the raw prediction.
    pub fn add_shap_values(&self, row: &[f64], phi: &mut [f64]) {
        let scale = match self.link {
            Link::MeanProbability => 1.0 / self.trees.len() as f64,
            Link::SumLogit { .. } => 1.0,
        };
        let mut paths = scratch();
        for tree in &self.trees {
            add_shap_values(
                tree,
                row,
                self.split,
                self.single_precision,
                scale,
                phi,
                &mut paths,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::maths::trees::tests::stump;

    /// For every row, the values add up to the leaf value less the root's
    /// expected value (local accuracy).
    #[test]
    fn values_add_up_to_the_prediction_less_the_expected_value() {
        let tree = stump();
        for row in [[0.5, 3.0], [0.2, 1.0], [0.9, 0.0]] {
            let mut phi = vec![0.0; 2];
            add_shap_values(
                &tree,
                &row,
                SplitRule::LessOrEqual,
                false,
                1.0,
                &mut phi,
                &mut scratch(),
            );
            let mut leaf = 0;
            while !tree.is_leaf(leaf) {
                let f = tree.feature[leaf] as usize;
                leaf = if row[f] <= tree.threshold[leaf] {
                    tree.left[leaf]
                } else {
                    tree.right[leaf]
                } as usize;
            }
            let total: f64 = phi.iter().sum();
            assert!(
                (total - (tree.value[leaf] - tree.value[0])).abs() < 1e-12,
                "{row:?}: {phi:?}"
            );
        }
    }

    /// The stump, worked by hand for row (0.2, 1.0): leaf 0.1 (x0 left, x1
    /// left). Shapley over {x0, x1} with v(S) = E[f | x_S]:
    /// v({}) = 0.5, v({x0}) = 0.2333, v({x1}) = 0.6*0.1 + 0.4*0.9 = 0.42,
    /// v({x0,x1}) = 0.1. phi0 = ((0.2333-0.5) + (0.1-0.42))/2.
    #[test]
    fn values_are_the_shapley_values_of_the_conditional_expectations() {
        let tree = stump();
        let mut phi = vec![0.0; 2];
        add_shap_values(
            &tree,
            &[0.2, 1.0],
            SplitRule::LessOrEqual,
            false,
            1.0,
            &mut phi,
            &mut scratch(),
        );
        let v_x0 = 1.4 / 6.0;
        let v_x1 = 0.6 * 0.1 + 0.4 * 0.9;
        let phi0 = ((v_x0 - 0.5) + (0.1 - v_x1)) / 2.0;
        let phi1 = ((v_x1 - 0.5) + (0.1 - v_x0)) / 2.0;
        assert!((phi[0] - phi0).abs() < 1e-12, "{phi:?}");
        assert!((phi[1] - phi1).abs() < 1e-12, "{phi:?}");
    }
}
