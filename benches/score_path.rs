//! Decode + window features + SQL + score per batch, and the window
//! state's checkpoint (RocksDB), without Kafka: the engine's own cost, plus
//! counting the batch (`Stats::record`, what the pipeline does after
//! the acks). `cargo bench --bench score_path`; throughput is reported in
//! events/s.
//!
//! With `STREAMSCORE_BENCH_RECORDER=1` the Prometheus recorder is installed
//! first, as `streamscore run` does; without it the metric calls go nowhere.
//! The two runs side by side give the cost of the metrics.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamscore::kafka::sink::Delivered;
use streamscore::pipeline::delivered_event;
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
        let mut replayer = common::Replayer::new(batch);
        group.bench_function(BenchmarkId::from_parameter(rows), |b| {
            b.iter_batched(
                || replayer.next(),
                |batch| {
                    let mut output = runtime.block_on(engine.process(&batch)).expect("scores");
                    assert_eq!(output.scores.len(), batch.len());
                    // The window state's checkpoint, as after the acks.
                    engine.checkpoint(output.staged.take()).expect("checkpoint");
                    stats.record(&delivered_event(
                        &batch,
                        &output,
                        &Delivered::default(),
                        std::time::Duration::from_millis(1),
                    ));
                    output
                },
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, score_path);
criterion_main!(benches);
