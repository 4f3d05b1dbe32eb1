//! Tree models' scoring cost: ns per row at batch 1,000 on one core (the
//! maths alone, no reasons): a decision tree, a 100-tree random forest
//! (depth 8, leaves of 5 or more) and 100 boosted trees of depth 6 fitted
//! here, and the 100-tree, depth-6 XGBoost model of
//! tests/fixtures/imported, whose own predict on the same rows and one
//! thread scripts/parity/make_fixtures.py timed into xgboost_timing.txt.
//!
//! Then what each kind costs to train on 100,000 rows of 15 features (the
//! handbook's count) with `train`'s defaults (the forest and boosting use
//! both cores). `cargo bench --bench trees`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use streamscore::model::{Explain, Model, ModelKind};
use streamscore::train::fit::{Candidate, TrainOptions, fit};

/// rows.csv of the imported-model fixtures: 1,000 rows of 5 features.
fn rows(root: &std::path::Path) -> Array2<f64> {
    let text = std::fs::read_to_string(root.join("tests/fixtures/imported/rows.csv"))
        .expect("the fixture rows");
    let values: Vec<f64> = text
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').map(|v| v.parse::<f64>().expect("a number")))
        .collect();
    Array2::from_shape_vec((values.len() / 5, 5), values).expect("5 columns")
}

fn trees(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let x = rows(root);
    // Labels with structure and noise, so that the trees grow to depth.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    let y: Vec<bool> = x
        .rows()
        .into_iter()
        .map(|r| (r[0] > 100.0) ^ (r[2] < 6.0) ^ rng.random_bool(0.1))
        .collect();
    let options = TrainOptions::default();
    let tree = fit(Candidate::Tree, x.view(), &y, &options)
        .expect("a tree")
        .model;
    let forest = fit(Candidate::Forest, x.view(), &y, &options)
        .expect("a forest")
        .model;
    let gbm = fit(
        Candidate::Gbm,
        x.view(),
        &y,
        &TrainOptions {
            max_depth: 6,
            ..TrainOptions::default()
        },
    )
    .expect("boosted trees")
    .model;
    let xgboost = Model::import(
        ModelKind::Xgboost,
        std::fs::read(root.join("tests/fixtures/imported/xgboost_100x6.json")).expect("the model"),
        5,
    )
    .expect("the XGBoost model reads");
    let mut group = c.benchmark_group("score_1000_rows");
    group.throughput(Throughput::Elements(x.nrows() as u64));
    for (name, model) in [
        ("tree", &tree),
        ("forest_100", &forest),
        ("gbm_100x6", &gbm),
        ("xgboost_100x6", &xgboost),
    ] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| model.score(x.view(), Explain::AtOrAbove(f64::INFINITY)));
        });
    }
    group.finish();
}

/// 100,000 rows of 15 features, about 1% fraud, where the fraud depends on
/// a few features at thresholds and on one product.
fn training_rows() -> (Array2<f64>, Vec<bool>) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let x = Array2::from_shape_fn((100_000, 15), |_| rng.random_range(0.0..1.0));
    let y = x
        .rows()
        .into_iter()
        .map(|r| {
            let risky = r[0] > 0.97 || (r[1] > 0.9 && r[2] > 0.8) || r[3] * r[4] > 0.9;
            risky ^ rng.random_bool(0.003)
        })
        .collect();
    (x, y)
}

fn training(c: &mut Criterion) {
    let (x, y) = training_rows();
    let mut group = c.benchmark_group("train_100k_rows");
    group.sample_size(10);
    for (name, candidate) in [
        ("logistic", Candidate::Logistic),
        ("tree", Candidate::Tree),
        ("forest_100", Candidate::Forest),
        ("gbm_100", Candidate::Gbm),
    ] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| fit(candidate, x.view(), &y, &TrainOptions::default()).expect("it fits"));
        });
    }
    group.finish();
}

criterion_group!(benches, trees, training);
criterion_main!(benches);
