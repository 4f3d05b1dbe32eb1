//! LightGBM's text model format (`Booster.save_model("m.txt")`), binary
//! objective, numeric splits: `x <= threshold` goes left, a child below zero
//! is leaf `-child - 1`, leaf values already carry the shrinkage, and the
//! probability is sigmoid(sigmoid_k * sum of leaves).

use super::{check_feature_count, validated};
use crate::model::maths::trees::{Ensemble, LEAF, Link, SplitRule, Tree};

/// The payload file name of a LightGBM bundle.
pub const PAYLOAD_FILE: &str = "lightgbm.txt";

/// Reads a LightGBM text model for `features` named inputs.
pub fn parse(bytes: &[u8], features: usize) -> Result<Ensemble, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not a LightGBM text model".to_owned())?;
    let mut header = Vec::new();
    let mut blocks: Vec<Vec<(&str, &str)>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("end of trees") {
            break;
        }
        if line.starts_with("Tree=") {
            blocks.push(Vec::new());
        } else if let Some((key, value)) = line.split_once('=') {
            match blocks.last_mut() {
                Some(block) => block.push((key, value)),
                None => header.push((key, value)),
            }
        }
    }
    let objective = get(&header, "objective")?;
    let mut parts = objective.split_whitespace();
    if parts.next() != Some("binary") {
        return Err(format!(
            "the objective is `{objective}`; only binary models are read"
        ));
    }
    let sigmoid: f64 = parts
        .find_map(|p| p.strip_prefix("sigmoid:"))
        .unwrap_or("1")
        .parse()
        .map_err(|_| "bad sigmoid parameter".to_owned())?;
    if get(&header, "num_class")? != "1" {
        return Err("only single-class (binary) models are read".into());
    }
    let max_feature: usize = get(&header, "max_feature_idx")?
        .parse()
        .map_err(|_| "bad max_feature_idx".to_owned())?;
    check_feature_count(max_feature + 1, features, "LightGBM")?;
    if blocks.is_empty() {
        return Err("the model has no trees".into());
    }
    let trees = blocks
        .iter()
        .enumerate()
        .map(|(i, block)| convert(block, sigmoid).map_err(|e| format!("tree {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    validated(
        Ensemble::new(
            trees,
            SplitRule::LessOrEqual,
            Link::SumLogit { base_margin: 0.0 },
            false,
        ),
        features,
    )
}

/// The value of `key` in a header or a tree block.
fn get<'a>(pairs: &[(&'a str, &'a str)], key: &str) -> Result<&'a str, String> {
    pairs
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .ok_or(format!("`{key}` is missing"))
}

fn numbers<T: std::str::FromStr>(text: &str, key: &str) -> Result<Vec<T>, String> {
    text.split_whitespace()
        .map(|v| v.parse().map_err(|_| format!("`{key}` holds {v:?}")))
        .collect()
}

/// One `Tree=` block: internal nodes keep their numbers, leaf j becomes
/// node `internal + j`, so every child comes after its parent. Leaf values
/// are scaled by the sigmoid parameter, so the link is a plain sigmoid.
fn convert(block: &[(&str, &str)], sigmoid: f64) -> Result<Tree, String> {
    let leaves: usize = get(block, "num_leaves")?
        .parse()
        .map_err(|_| "bad num_leaves".to_owned())?;
    let leaf_value: Vec<f64> = numbers(get(block, "leaf_value")?, "leaf_value")?;
    let leaf_count: Vec<f64> = numbers(get(block, "leaf_count")?, "leaf_count")?;
    if leaf_value.len() != leaves || leaf_count.len() != leaves {
        return Err(format!(
            "{leaves} leaves but other lengths in leaf_value/leaf_count"
        ));
    }
    if leaves == 1 {
        return Ok(Tree {
            feature: vec![LEAF],
            threshold: vec![0.0],
            left: vec![0],
            right: vec![0],
            value: vec![leaf_value[0] * sigmoid],
            cover: vec![leaf_count[0]],
        });
    }
    let internal = leaves - 1;
    let split_feature: Vec<i32> = numbers(get(block, "split_feature")?, "split_feature")?;
    let threshold: Vec<f64> = numbers(get(block, "threshold")?, "threshold")?;
    let decision: Vec<u32> = numbers(get(block, "decision_type")?, "decision_type")?;
    let left: Vec<i64> = numbers(get(block, "left_child")?, "left_child")?;
    let right: Vec<i64> = numbers(get(block, "right_child")?, "right_child")?;
    let internal_count: Vec<f64> = numbers(get(block, "internal_count")?, "internal_count")?;
    for (name, len) in [
        ("split_feature", split_feature.len()),
        ("threshold", threshold.len()),
        ("decision_type", decision.len()),
        ("left_child", left.len()),
        ("right_child", right.len()),
        ("internal_count", internal_count.len()),
    ] {
        if len != internal {
            return Err(format!("{internal} splits but {len} `{name}`"));
        }
    }
    if decision.iter().any(|d| d & 1 == 1) {
        return Err("categorical splits are not supported; one-hot encode in the SQL".into());
    }
    let child = |c: i64| -> Result<u32, String> {
        let node = if c < 0 { internal as i64 + (-c - 1) } else { c };
        u32::try_from(node).map_err(|_| format!("bad child {c}"))
    };
    let mut tree = Tree {
        feature: split_feature,
        threshold,
        left: left.iter().map(|&c| child(c)).collect::<Result<_, _>>()?,
        right: right.iter().map(|&c| child(c)).collect::<Result<_, _>>()?,
        value: vec![0.0; internal],
        cover: internal_count,
    };
    for j in 0..leaves {
        tree.feature.push(LEAF);
        tree.threshold.push(0.0);
        tree.left.push(0);
        tree.right.push(0);
        tree.value.push(leaf_value[j] * sigmoid);
        tree.cover.push(leaf_count[j]);
    }
    Ok(tree)
}
