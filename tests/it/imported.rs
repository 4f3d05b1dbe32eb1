//! Models trained elsewhere score here as they scored where they were made:
//! the XGBoost and LightGBM models and predictions committed by
//! scripts/parity/make_fixtures.py, wrapped by `streamscore models import`
//! as a user would, then scored through the bundle's serving path; and
//! their reasons are the TreeSHAP values the `shap` package computes.

use std::process::Command;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use streamscore::model::{Bundle, Model, ModelKind};

use crate::support::repo_path;

const FIXTURES: &str = "tests/fixtures/imported";

/// rows.csv: feature names and one batch of the rows.
fn rows() -> (Vec<String>, RecordBatch) {
    let text = std::fs::read_to_string(repo_path(&format!("{FIXTURES}/rows.csv"))).unwrap();
    let mut lines = text.lines();
    let names: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let mut columns = vec![Vec::new(); names.len()];
    for line in lines {
        for (j, value) in line.split(',').enumerate() {
            columns[j].push(value.parse::<f64>().unwrap());
        }
    }
    let schema = Schema::new(
        names
            .iter()
            .map(|n| Field::new(n, DataType::Float64, false))
            .collect::<Vec<_>>(),
    );
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef)
        .collect();
    (
        names,
        RecordBatch::try_new(Arc::new(schema), arrays).unwrap(),
    )
}

fn predictions(file: &str) -> Vec<f64> {
    std::fs::read_to_string(repo_path(&format!("{FIXTURES}/{file}")))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// `models import`, then the bundle's scores against the library's own.
fn assert_parity(kind: &str, model: &str, predicted: &str) {
    let (names, batch) = rows();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .args([
            "models", "import", "--kind", kind, "--name", "imported", "--file",
        ])
        .arg(repo_path(&format!("{FIXTURES}/{model}")))
        .arg("--features")
        .arg(names.join(","))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = Bundle::load(dir.path()).unwrap();
    assert_eq!(bundle.manifest.kind.as_str(), kind);
    // The payload is the library's file, byte for byte.
    let payload = std::fs::read(
        dir.path()
            .join(bundle.manifest.payload.keys().next().unwrap()),
    )
    .unwrap();
    assert_eq!(
        payload,
        std::fs::read(repo_path(&format!("{FIXTURES}/{model}"))).unwrap()
    );

    let scores = bundle.score(&batch).unwrap();
    assert!(scores.invalid.is_empty());
    let expected = predictions(predicted);
    assert_eq!(expected.len(), batch.num_rows());
    let worst = scores
        .probability
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("{kind}: largest difference from the library's predictions {worst:e}");
    assert!(worst <= 1e-6, "{kind}: largest difference {worst}");
}

#[test]
fn xgboost_json_models_score_as_xgboost_does() {
    assert_parity("xgboost", "xgboost.json", "xgboost_pred.csv");
}

#[test]
fn lightgbm_text_models_score_as_lightgbm_does() {
    assert_parity("lightgbm", "lightgbm.txt", "lightgbm_pred.csv");
}

/// A scikit-learn pipeline (scaling and a multi-layer perceptron) through
/// skl2onnx, scored by tract: against scikit-learn's own predict_proba
/// (the library that made it), and against onnxruntime's.
#[test]
fn onnx_models_score_as_scikit_learn_does() {
    assert_parity("onnx", "onnx_mlp.onnx", "onnx_mlp_pred.csv");
    assert_parity("onnx", "onnx_mlp.onnx", "onnx_mlp_ort.csv");
}

#[test]
fn an_onnx_file_that_does_not_fit_is_refused_with_the_reason() {
    let bytes = std::fs::read(repo_path(&format!("{FIXTURES}/onnx_mlp.onnx"))).unwrap();
    let err = Model::import(ModelKind::Onnx, bytes, 3).unwrap_err();
    assert!(err.contains("rows of 3 features"), "{err}");
    let err = Model::import(ModelKind::Onnx, b"not onnx".to_vec(), 5).unwrap_err();
    assert!(err.contains("not a readable ONNX model"), "{err}");
}

/// One probability whatever the rows (scripts/parity/
/// make_onnx_constant_fixture.py): at a342126 it passed the one-row probe
/// and then indexed out of range in the scoring loop.
#[test]
fn an_onnx_model_without_one_output_per_row_is_refused() {
    let bytes = std::fs::read(repo_path(&format!("{FIXTURES}/onnx_one_row.onnx"))).unwrap();
    let err = Model::import(ModelKind::Onnx, bytes, 5).unwrap_err();
    assert!(err.contains("one output per row"), "{err}");
}

#[test]
fn a_model_with_the_wrong_feature_count_is_refused() {
    let bytes = std::fs::read(repo_path(&format!("{FIXTURES}/xgboost.json"))).unwrap();
    let err = streamscore::model::Model::import(ModelKind::Xgboost, bytes, 3).unwrap_err();
    assert!(err.contains("5 features but 3 were named"), "{err}");
}

/// Every feature's path-dependent TreeSHAP value on the first 100 rows,
/// against shap.TreeExplainer's, in log-odds.
fn assert_shap_parity(kind: ModelKind, model: &str, expected: &str) {
    let (names, batch) = rows();
    let bytes = std::fs::read(repo_path(&format!("{FIXTURES}/{model}"))).unwrap();
    let Model::Imported { ensemble, .. } = Model::import(kind, bytes, names.len()).unwrap() else {
        panic!("an imported model")
    };
    let expected: Vec<Vec<f64>> =
        std::fs::read_to_string(repo_path(&format!("{FIXTURES}/{expected}")))
            .unwrap()
            .lines()
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect();
    let columns: Vec<&Float64Array> = batch
        .columns()
        .iter()
        .map(|c| c.as_any().downcast_ref::<Float64Array>().unwrap())
        .collect();
    let mut worst: f64 = 0.0;
    for (i, want) in expected.iter().enumerate() {
        let row: Vec<f64> = columns.iter().map(|c| c.value(i)).collect();
        let mut phi = vec![0.0; names.len()];
        ensemble.add_shap_values(&row, &mut phi);
        for (got, want) in phi.iter().zip(want) {
            worst = worst.max((got - want).abs());
        }
    }
    eprintln!("{kind:?}: largest TreeSHAP difference from shap {worst:e}");
    assert!(
        worst <= 1e-6,
        "{kind:?}: largest TreeSHAP difference {worst}"
    );
}

#[test]
fn xgboost_reasons_are_the_shap_values_shap_computes() {
    assert_shap_parity(ModelKind::Xgboost, "xgboost.json", "xgboost_shap.csv");
}

#[test]
fn lightgbm_reasons_are_the_shap_values_shap_computes() {
    assert_shap_parity(ModelKind::Lightgbm, "lightgbm.txt", "lightgbm_shap.csv");
}

/// `models import --reference` takes the reference distributions of the
/// features and the score from history run through the pipeline's SQL.
#[test]
fn an_imported_model_takes_its_reference_from_history() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.ndjson");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamscore"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "simulate",
        "--out",
        history.to_str().unwrap(),
        "--days",
        "2",
        "--customers",
        "100",
    ]);
    let bundle_dir = dir.path().join("bundle");
    run(&[
        "models",
        "import",
        "--kind",
        "xgboost",
        "--file",
        repo_path(&format!("{FIXTURES}/xgboost.json"))
            .to_str()
            .unwrap(),
        "--features",
        "amount,log_amount,hour_of_day,is_night,is_online",
        "--name",
        "fraud-xgb",
        "--reference",
        history.to_str().unwrap(),
        "--pipeline",
        "pipelines/fraud.toml",
        "--out",
        bundle_dir.to_str().unwrap(),
    ]);
    let bundle = Bundle::load(&bundle_dir).unwrap();
    let reference = bundle.manifest.reference.as_ref().expect("a reference");
    assert_eq!(reference["features"].as_object().unwrap().len(), 5);
    assert!(reference["rows"].as_u64().unwrap() > 100);
    assert!(reference["score"]["edges"].as_array().unwrap().len() > 2);
}
