//! Decode + window features + SQL + score + drift per batch, and the
//! state's checkpoint (RocksDB), without Kafka: the engine's own cost, plus
//! counting the batch (`Stats::record`, what the pipeline does after
//! the acks). `cargo bench --bench score_path`; throughput is reported in
//! events/s, for batches of 1,000, of 2,000 (the example's `max_rows`) and
//! of 10,000 records, consecutive batches of the stream `streamscore bench`
//! sends (`common::Stream`).
//!
//! The staged batches are written together once the example's checkpoint
//! interval has passed, as `streamscore run` writes them: a write (and
//! fsync) per batch would measure the disk, not the engine.
//!
//! With `STREAMSCORE_BENCH_RECORDER=1` the Prometheus recorder is installed
//! first, as `streamscore run` does; without it the metric calls go nowhere.
//! The two runs side by side give the cost of the metrics.

// Each bench uses a part of the shared module.
#[allow(dead_code)]
mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamscore::kafka::sink::Delivered;
use streamscore::pipeline::delivered_event;
use streamscore::state::Unwritten;
use streamscore::telemetry::{self, Stats};

fn score_path(c: &mut Criterion) {
    if std::env::var_os("STREAMSCORE_BENCH_RECORDER").is_some() {
        telemetry::prometheus();
    }
    let stats = Stats::default();
    let (runtime, engine, _state) = common::example_engine();
    let mut group = c.benchmark_group("decode_sql_score");
    let mut unwritten = Unwritten::new(engine.checkpoint_interval());
    let mut stream = common::Stream::new();
    for rows in [1_000, 2_000, 10_000] {
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(BenchmarkId::from_parameter(rows), |b| {
            b.iter_batched(
                || stream.batch(rows),
                |batch| {
                    let mut output = runtime.block_on(engine.process(&batch)).expect("scores");
                    assert_eq!(output.scores.len(), batch.len());
                    // The state's checkpoint, as after the acks.
                    unwritten.push(output.staged.take());
                    if unwritten.is_due() {
                        engine.checkpoint_all(unwritten.take()).expect("checkpoint");
                    }
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

// The allocator `streamscore` runs with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
