//! XGBoost's JSON model format (`Booster.save_model("m.json")`), for
//! `binary:logistic`. XGBoost compares features as 32-bit floats
//! (`x < split_condition`, missing values take `default_left`), keeps leaf
//! values in `split_conditions`, and starts every margin at
//! logit(`base_score`).

use serde::Deserialize;

use super::{check_feature_count, validated};
use crate::model::maths::trees::{Ensemble, LEAF, Link, SplitRule, Tree};

/// The payload file name of an XGBoost bundle.
pub const PAYLOAD_FILE: &str = "xgboost.json";

#[derive(Deserialize)]
struct File {
    learner: Learner,
}

#[derive(Deserialize)]
struct Learner {
    learner_model_param: ModelParam,
    objective: Objective,
    gradient_booster: Booster,
}

#[derive(Deserialize)]
struct ModelParam {
    base_score: String,
    num_feature: String,
}

#[derive(Deserialize)]
struct Objective {
    name: String,
}

#[derive(Deserialize)]
struct Booster {
    name: String,
    model: Option<GbTree>,
}

#[derive(Deserialize)]
struct GbTree {
    trees: Vec<JsonTree>,
}

#[derive(Deserialize)]
struct JsonTree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    split_conditions: Vec<f64>,
    sum_hessian: Vec<f64>,
    #[serde(default)]
    split_type: Vec<i64>,
}

/// Reads an XGBoost JSON model for `features` named inputs.
pub fn parse(bytes: &[u8], features: usize) -> Result<Ensemble, String> {
    let file: File =
        serde_json::from_slice(bytes).map_err(|e| format!("not an XGBoost JSON model: {e}"))?;
    let learner = file.learner;
    if learner.objective.name != "binary:logistic" {
        return Err(format!(
            "the objective is `{}`; only binary:logistic models are read",
            learner.objective.name
        ));
    }
    if learner.gradient_booster.name != "gbtree" {
        return Err(format!(
            "the booster is `{}`; only gbtree models are read",
            learner.gradient_booster.name
        ));
    }
    let declared: usize = learner
        .learner_model_param
        .num_feature
        .parse()
        .map_err(|_| "`num_feature` is not a number".to_owned())?;
    check_feature_count(declared, features, "XGBoost")?;
    let base_score = parse_base_score(&learner.learner_model_param.base_score)?;
    if !(base_score > 0.0 && base_score < 1.0) {
        return Err(format!("`base_score` {base_score} is not a probability"));
    }
    let trees = learner
        .gradient_booster
        .model
        .ok_or("the model has no trees")?
        .trees
        .into_iter()
        .enumerate()
        .map(|(i, t)| convert(t).map_err(|e| format!("tree {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    validated(
        Ensemble::new(
            trees,
            SplitRule::LessThan,
            Link::SumLogit {
                base_margin: (base_score / (1.0 - base_score)).ln(),
            },
            true,
        ),
        features,
    )
}

/// `0.5`, `5E-1` or (XGBoost 2 and later) `[5E-1]`.
fn parse_base_score(text: &str) -> Result<f64, String> {
    text.trim_matches(|c| c == '[' || c == ']')
        .parse()
        .map_err(|_| format!("`base_score` {text:?} is not a number"))
}

fn convert(t: JsonTree) -> Result<Tree, String> {
    let n = t.left_children.len();
    for (name, len) in [
        ("right_children", t.right_children.len()),
        ("split_indices", t.split_indices.len()),
        ("split_conditions", t.split_conditions.len()),
        ("sum_hessian", t.sum_hessian.len()),
    ] {
        if len != n {
            return Err(format!("{n} nodes but {len} `{name}`"));
        }
    }
    if t.split_type.iter().any(|&s| s != 0) {
        return Err("categorical splits are not supported; one-hot encode in the SQL".into());
    }
    let index = |v: i64| u32::try_from(v).map_err(|_| format!("bad child index {v}"));
    let mut tree = Tree {
        feature: Vec::with_capacity(n),
        threshold: Vec::with_capacity(n),
        left: Vec::with_capacity(n),
        right: Vec::with_capacity(n),
        value: Vec::with_capacity(n),
        cover: t.sum_hessian.clone(),
    };
    for node in 0..n {
        if t.left_children[node] == -1 {
            tree.feature.push(LEAF);
            tree.threshold.push(0.0);
            tree.left.push(0);
            tree.right.push(0);
            tree.value.push(t.split_conditions[node]);
        } else {
            tree.feature.push(
                i32::try_from(t.split_indices[node]).map_err(|_| "bad feature index".to_owned())?,
            );
            tree.threshold.push(t.split_conditions[node]);
            tree.left.push(index(t.left_children[node])?);
            tree.right.push(index(t.right_children[node])?);
            tree.value.push(0.0);
        }
    }
    Ok(tree)
}
