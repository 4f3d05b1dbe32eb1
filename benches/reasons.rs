//! What reasons cost: ns per row of decode + SQL + score at batch 1,000 on
//! one core, for the German credit pipeline's committed forest (100 trees,
//! depth 8) with TreeSHAP reasons on every score against only on flagged
//! scores, and for a logistic regression on the same features.
//! `cargo bench --bench reasons`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamscore::batch::{Batch, SourceRecord};
use streamscore::config::{Pipeline, ReasonsFor};
use streamscore::engine::{Engine, EngineSpec};
use streamscore::model::Bundle;
use streamscore::train::fit::{Candidate, TrainOptions};
use streamscore::train::{self, TrainRequest};

const ROWS: usize = 1_000;

fn reasons(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime starts");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = Pipeline::load(&root.join("pipelines/german_credit.toml"), None)
        .expect("the German credit pipeline");
    let set = runtime
        .block_on(train::prepare(
            &pipeline,
            &root.join("data/german_credit.csv"),
        ))
        .expect("the data prepares");
    let mut batch = Batch::new("credit-applications");
    for (row, payload) in train::to_json_records(&set.decoded)
        .into_iter()
        .cycle()
        .take(ROWS)
        .enumerate()
    {
        batch
            .records
            .push(SourceRecord::new(0, row as i64, None, Some(payload)));
    }
    let forest = Bundle::load(&root.join("pipelines/models/german-credit")).expect("the forest");
    let mut request = TrainRequest::new("creditability", TrainOptions::default());
    request.candidates = vec![Candidate::Logistic];
    let logistic = train::train(&set, &request, |_, _| {})
        .expect("a logistic regression")
        .bundle;

    let mut group = c.benchmark_group("german_credit_1000_rows");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, bundle, reasons) in [
        ("forest_reasons_all", &forest, ReasonsFor::All),
        ("forest_reasons_flagged", &forest, ReasonsFor::Flagged),
        ("logistic_reasons_all", &logistic, ReasonsFor::All),
    ] {
        let engine = runtime
            .block_on(Engine::new(EngineSpec {
                reasons,
                ..EngineSpec::for_pipeline(&pipeline, bundle.clone())
            }))
            .expect("the engine starts");
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| runtime.block_on(engine.process(&batch)).expect("scores"));
        });
    }
    group.finish();
}

criterion_group!(benches, reasons);
criterion_main!(benches);
