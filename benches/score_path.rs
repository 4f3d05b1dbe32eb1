//! Decode + SQL + score per batch, without Kafka: the engine's own cost,
//! plus counting the batch (`Stats::record`, what the pipeline does after
//! the acks). `cargo bench --bench score_path`; throughput is reported in
//! events/s.
//!
//! With `STREAMSCORE_BENCH_RECORDER=1` the Prometheus recorder is installed
//! first, as `streamscore run` does; without it the metric calls go nowhere.
//! The two runs side by side give the cost of the metrics.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamscore::kafka::sink::Delivered;
use streamscore::telemetry::{self, Stats};

fn score_path(c: &mut Criterion) {
    if std::env::var_os("STREAMSCORE_BENCH_RECORDER").is_some() {
        telemetry::prometheus();
    }
    let stats = Stats::default();
    let (runtime, engine, _state) = common::example_engine();
    let mut group = c.benchmark_group("decode_sql_score");
    for rows in [1_000, 10_000] {
        let batch = common::simulated_batch(rows);
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::from_parameter(rows), &batch, |b, batch| {
            b.iter(|| {
                let output = runtime.block_on(engine.process(batch)).expect("scores");
                assert_eq!(output.scores.len(), batch.len());
                stats.record(
                    batch,
                    &output,
                    &Delivered::default(),
                    std::time::Duration::from_millis(1),
                );
                output
            });
        });
    }
    group.finish();
}

criterion_group!(benches, score_path);
criterion_main!(benches);
