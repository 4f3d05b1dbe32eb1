//! Model selection on real data: the German credit applications (13
//! categorical attributes, one-hot encoded by the pipeline's SQL), through
//! the binary as a user runs it, and a chosen forest serving the same
//! probabilities through the engine as training computed.

use std::process::Command;

use streamscore::batch::{Batch, SourceRecord};
use streamscore::config::Pipeline;
use streamscore::engine::{Engine, EngineSpec};
use streamscore::model::maths::calibration::Method;
use streamscore::model::{Bundle, ModelKind};
use streamscore::output::ScoreRecord;
use streamscore::train::fit::{Candidate, TrainOptions};
use streamscore::train::{self, TrainRequest};

use crate::support::repo_path;

/// `streamscore train ... --models logistic,tree,forest,gbm --cv 5` as the
/// issue words it: every candidate gets a row, and the one selected (by
/// average precision) has a 5-fold CV AUC of at least 0.78.
#[test]
fn german_credit_cross_validation_selects_a_model_with_auc_of_at_least_0_78() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "train",
            "--pipeline",
            "pipelines/german_credit.toml",
            "--data",
            "data/german_credit.csv",
            "--label",
            "creditability",
            "--models",
            "logistic,tree,forest,gbm",
            "--cv",
            "5",
            "--out",
        ])
        .arg(dir.path().join("bundle"))
        .arg("--report")
        .arg(dir.path().join("report.html"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in ["logistic", "tree", "forest", "gbm"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(kind)),
            "no row for {kind}:\n{stdout}"
        );
    }
    let selected = stdout
        .lines()
        .find(|l| l.ends_with("<- selected"))
        .unwrap_or_else(|| panic!("nothing selected:\n{stdout}"));
    let auc: f64 = selected.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(auc >= 0.78, "selected CV AUC {auc}:\n{stdout}");

    // The report: one page, its charts inline, nothing fetched on opening.
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_eq!(
        page.matches("<svg").count(),
        5,
        "ROC, PR, histograms, threshold, importance"
    );
    assert!(!page.contains("not drawn"), "a chart failed");
    for external in ["<script", "<link", "src=\"http", "url(http", "@import"] {
        assert!(!page.contains(external), "the report fetches {external}");
    }
    assert_eq!(page.matches("<tr><td>").count(), 4, "one CV row per kind");

    let bundle = Bundle::load(&dir.path().join("bundle")).unwrap();
    assert_eq!(bundle.name(), "german-credit");
    let cv = bundle
        .manifest
        .cv
        .as_ref()
        .expect("the CV table is in the bundle");
    assert_eq!(cv["rows"].as_array().unwrap().len(), 4);
    assert_eq!(cv["winner"], bundle.manifest.kind.as_str());
    // Reference distributions for drift monitoring: every feature and the
    // score, in quantile bins whose shares add up to one.
    let reference = bundle.manifest.reference.as_ref().expect("a reference");
    assert_eq!(
        reference["features"].as_object().unwrap().len(),
        bundle.manifest.features.len()
    );
    let score_shares: f64 = reference["score"]["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .sum();
    assert!((score_shares - 1.0).abs() < 1e-9, "{score_shares}");
    assert_eq!(reference["score"]["edges"].as_array().unwrap().len(), 11);
    // Category shares of the 13 categorical attributes and the label; not
    // of the application id (1,000 values).
    let categories = reference["categories"].as_object().unwrap();
    assert_eq!(categories.len(), 14, "{:?}", categories.keys());
    assert!(!categories.contains_key("application_id"));
    let purpose: f64 = categories["purpose"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((purpose - 1.0).abs() < 1e-9);
    // The label is encoded by the SQL and never a feature.
    assert!(
        !bundle
            .manifest
            .feature_names()
            .any(|f| f == "creditability")
    );
    assert!(
        bundle
            .manifest
            .feature_names()
            .any(|f| f.starts_with("purpose__"))
    );
}

/// A forest trained on the applications scores them in the stream with
/// exactly the probabilities training computed from the same rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_forest_serves_what_it_was_trained_to_score() {
    let bundle = serves_what_it_was_trained_to_score(Candidate::Forest, None).await;
    assert_eq!(bundle.manifest.kind, ModelKind::Forest);
}

/// Boosted trees with isotonic calibration: the stream serves the
/// calibrated probability (the calibration applied to the trees' own
/// score), and the bundle written and read back keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn calibrated_boosted_trees_serve_their_calibrated_probabilities() {
    let bundle = serves_what_it_was_trained_to_score(Candidate::Gbm, Some(Method::Isotonic)).await;
    assert_eq!(bundle.manifest.kind, ModelKind::Gbm);
    let calibration = bundle.manifest.calibration.clone().expect("calibrated");
    let dir = tempfile::tempdir().unwrap();
    bundle.save(dir.path()).unwrap();
    let loaded = Bundle::load(dir.path()).unwrap();
    assert_eq!(loaded.manifest.calibration, Some(calibration.clone()));
    // The served probability is the calibration of the model's score.
    let x = ndarray::Array2::from_shape_vec(
        (1, bundle.manifest.features.len()),
        bundle.manifest.check_row.features.clone(),
    )
    .unwrap();
    let raw = bundle
        .model
        .predict(&bundle.manifest.preprocessing, x.view())[0];
    assert_eq!(loaded.manifest.check_row.score, calibration.apply(raw));
    assert!(bundle.manifest.metrics["brier"] < bundle.manifest.metrics["brier_uncalibrated"]);
}

/// Trains `candidate` on the applications and scores the same rows, sent
/// as a producer would send them, through the engine: each streamed score
/// is exactly what training computed. Returns the bundle.
async fn serves_what_it_was_trained_to_score(
    candidate: Candidate,
    calibrate: Option<Method>,
) -> Bundle {
    let pipeline = Pipeline::load(&repo_path("pipelines/german_credit.toml"), None).unwrap();
    let set = train::prepare(&pipeline, &repo_path("data/german_credit.csv"))
        .await
        .unwrap();
    let mut request = TrainRequest::new(
        "creditability",
        TrainOptions {
            name: "credit".into(),
            trees: 20,
            ..TrainOptions::default()
        },
    );
    request.candidates = vec![candidate];
    request.calibrate = calibrate;
    let report = train::train(&set, &request, |_, _| {}).unwrap();
    let trained = report.bundle.score(&set.features).unwrap();

    // The same applications as JSON records, as a producer would send them.
    let decoded = &set.decoded;
    let mut batch = Batch::new("credit-applications");
    for (row, payload) in train::to_json_records(decoded).into_iter().enumerate() {
        batch
            .records
            .push(SourceRecord::new(0, row as i64, None, Some(payload)));
    }
    let engine = Engine::new(EngineSpec::for_pipeline(&pipeline, report.bundle.clone()))
        .await
        .unwrap();
    let output = engine.process(&batch).await.unwrap();
    assert!(
        output.dead_letters.is_empty(),
        "{:?}",
        output.dead_letters.first()
    );
    assert_eq!(output.scores.len(), decoded.num_rows());
    for (row, message) in output.scores.iter().enumerate() {
        let score: ScoreRecord = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(score.score, trained.probability[row], "row {row}");
        assert_eq!(score.model_version, report.bundle.version());
    }
    report.bundle
}
