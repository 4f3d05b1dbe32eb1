//! Models trained elsewhere, read from their own files and evaluated natively
//! (no FFI, nothing downloaded): XGBoost JSON (`save_model("m.json")`,
//! binary:logistic) and LightGBM text models (binary objective). Each becomes
//! an [`Ensemble`]; the bundle keeps the original file as its payload.
//! Anything else comes as ONNX (`onnx.rs`), planned and run by tract.

pub mod lightgbm;
pub mod onnx;
pub mod xgboost;

use super::trees::{Ensemble, LEAF, Tree};

/// Fills in every internal node's value as the cover-weighted mean of the
/// leaves under it (the expected value the reasons are measured from).
/// Children come after parents, so a reverse pass sees children first.
fn fill_expected_values(tree: &mut Tree) {
    for node in (0..tree.feature.len()).rev() {
        if tree.feature[node] == LEAF {
            continue;
        }
        let (l, r) = (tree.left[node] as usize, tree.right[node] as usize);
        let cover = tree.cover[l] + tree.cover[r];
        tree.value[node] = if cover > 0.0 {
            (tree.value[l] * tree.cover[l] + tree.value[r] * tree.cover[r]) / cover
        } else {
            (tree.value[l] + tree.value[r]) / 2.0
        };
        if tree.cover[node] == 0.0 {
            tree.cover[node] = cover;
        }
    }
}

/// Checks the model names as many features as the bundle maps.
fn check_feature_count(found: usize, expected: usize, what: &str) -> Result<(), String> {
    if found == expected {
        Ok(())
    } else {
        Err(format!(
            "the {what} model has {found} features but {expected} were named (--features)"
        ))
    }
}

/// The ensemble if its trees are sound, so a bad file is refused with the
/// reason; then each internal node's expected value, which walks the
/// children and so must come after the check (at a342126 it came before,
/// and a bad child index panicked).
pub fn validated(mut ensemble: Ensemble, features: usize) -> Result<Ensemble, String> {
    ensemble.validate(features)?;
    for tree in &mut ensemble.trees {
        fill_expected_values(tree);
    }
    ensemble.validate(features)?;
    Ok(ensemble)
}
