//! Decode + SQL + score per batch, without Kafka: the engine's own cost.
//! `cargo bench --bench score_path`; throughput is reported in events/s.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamscore::batch::{Batch, SourceRecord};
use streamscore::config::Pipeline;
use streamscore::engine::Engine;
use streamscore::simulate::{SimulationConfig, simulate};

fn batch_of(rows: usize) -> Batch {
    let transactions = simulate(&SimulationConfig {
        days: (rows / 1500 + 1) as u32,
        ..SimulationConfig::default()
    });
    let mut batch = Batch::new("transactions");
    batch.records = transactions
        .iter()
        .take(rows)
        .enumerate()
        .map(|(i, t)| {
            SourceRecord::new(
                0,
                i as i64,
                Some(t.card_id.clone().into_bytes()),
                Some(serde_json::to_vec(t).expect("a transaction serialises")),
            )
        })
        .collect();
    batch
}

fn score_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime starts");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline =
        Pipeline::load(&root.join("pipelines/fraud.toml"), None).expect("example pipeline");
    let engine = runtime
        .block_on(Engine::for_pipeline(&pipeline))
        .expect("the engine starts");
    let mut group = c.benchmark_group("decode_sql_score");
    for rows in [1_000, 10_000] {
        let batch = batch_of(rows);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(rows), &batch, |b, batch| {
            b.iter(|| {
                let output = runtime.block_on(engine.process(batch)).expect("scores");
                assert_eq!(output.scores.len(), batch.len());
                output
            });
        });
    }
    group.finish();
}

criterion_group!(benches, score_path);
criterion_main!(benches);
