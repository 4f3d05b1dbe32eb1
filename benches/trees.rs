//! Tree models' scoring cost: ns per row at batch 1,000 on one core (the
//! maths alone, no reasons): a decision tree and a 100-tree forest fitted
//! here (depth 8, leaves of 5 or more), and the 100-tree, depth-6 XGBoost
//! model of tests/fixtures/imported, whose own predict on the same rows and
//! one thread scripts/parity/make_fixtures.py timed into
//! xgboost_timing.txt. `cargo bench --bench trees`.

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
        ("xgboost_100x6", &xgboost),
    ] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| model.score(x.view(), Explain::AtOrAbove(f64::INFINITY)));
        });
    }
    group.finish();
}

criterion_group!(benches, trees);
criterion_main!(benches);
