//! What drift monitoring costs.
//! - `batch_path`: the example engine's in-process batch path (decode,
//!   window features, SQL, score, checkpoint) on 10,000-event batches, with
//!   and without `[drift]` (every model feature, the score, the decisions;
//!   hour windows). Event time advances 36 ms an event, so a batch spans 6
//!   minutes and a window closes (and is judged) every 10 batches.
//! - `update_10_features`: the drift update alone (`DriftMonitor::observe`
//!   and its checkpoint) on 10,000 scored rows of a 10-feature model, to
//!   set beside `batch_path/without`: the measure.
//! - `psi_ks_30x1m`: binning 1,000,000 rows of 30 features against their
//!   references, then PSI and KS of each.
//!
//! `cargo bench --bench drift`.

// The replayer is not used here.
#[allow(dead_code)]
mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use streamscore::batch::Batch;
use streamscore::config::DriftSettings;
use streamscore::drift::alerts::{Hysteresis, Limit, ThresholdRules};
use streamscore::drift::reference::References;
use streamscore::drift::stats::{Reference, WindowCounts, ks, psi};
use streamscore::drift::{DriftMonitor, Observation, ScoredRow};
use streamscore::state::{Checkpoint, Family, RocksStore};

const ROWS: usize = 10_000;
const MS_PER_EVENT: i64 = 36;

fn drift_settings() -> DriftSettings {
    let mut thresholds = ThresholdRules::default();
    thresholds.metrics.insert(
        "psi".into(),
        (Some(Limit::Value(0.1)), Some(Limit::Value(0.25))),
    );
    DriftSettings {
        event_time: "event_time".into(),
        window_ms: 3_600_000,
        lateness_ms: 60_000,
        idle_ms: 6 * 3_600_000,
        retention_ms: 30 * 86_400_000,
        min_events: 300,
        alerts_topic: None,
        hysteresis: Hysteresis {
            raise_after: 3,
            clear_after: 3,
            cooldown_ms: 6 * 3_600_000,
        },
        thresholds,
        change: None,
    }
}

/// The simulated batch again and again, under new offsets and event times
/// that go on where the last batch's ended.
struct Stream {
    template: Vec<serde_json::Value>,
    next: i64,
    start_ms: i64,
}

impl Stream {
    fn new() -> Self {
        let batch = common::simulated_batch(ROWS);
        let template = batch
            .records
            .iter()
            .map(|r| {
                serde_json::from_slice(r.payload.as_deref().expect("a payload")).expect("JSON")
            })
            .collect();
        Self {
            template,
            next: 0,
            start_ms: 1_775_001_600_000,
        }
    }

    fn next(&mut self) -> Batch {
        let mut batch = Batch::new("transactions");
        for event in &self.template {
            let mut event = event.clone();
            let i = self.next;
            event["event_time"] = (self.start_ms + i * MS_PER_EVENT).into();
            event["event_id"] = format!("e{i}").into();
            batch.records.push(streamscore::batch::SourceRecord::new(
                0,
                i,
                None,
                Some(serde_json::to_vec(&event).expect("serialises")),
            ));
            self.next += 1;
        }
        batch
    }
}

fn batch_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("drift_batch_path");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(30);
    for drift in [false, true] {
        // The example pipeline has a [drift]; the baseline goes without.
        let (runtime, engine, _state) =
            common::example_engine_with(|p| p.drift = drift.then(drift_settings));
        let mut stream = Stream::new();
        let name = if drift { "with_drift" } else { "without" };
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || stream.next(),
                |batch| {
                    let mut output = runtime.block_on(engine.process(&batch)).expect("scores");
                    assert_eq!(output.scores.len(), batch.len());
                    engine.checkpoint(output.staged.take()).expect("checkpoint");
                    output
                },
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// 10,000 scored rows of a model with 10 features, as the engine hands
/// them to the monitor, and that model's references.
fn ten_feature_rows(start_ms: i64) -> (RecordBatch, RecordBatch, Vec<ScoredRow>) {
    let mut rng = SmallRng::seed_from_u64(9);
    let features: Vec<ArrayRef> = (0..10)
        .map(|_| {
            Arc::new(Float64Array::from_iter_values(
                (0..ROWS).map(|_| rng.random::<f64>()),
            )) as ArrayRef
        })
        .collect();
    let names: Vec<Field> = (0..10)
        .map(|f| Field::new(format!("f{f}"), DataType::Float64, false))
        .collect();
    let features =
        RecordBatch::try_new(Arc::new(Schema::new(names)), features).expect("a feature batch");
    let times = TimestampMillisecondArray::from_iter_values(
        (0..ROWS as i64).map(|i| start_ms + i * MS_PER_EVENT),
    );
    let categories =
        StringArray::from_iter_values((0..ROWS).map(|i| ["5411", "5812", "5999"][i % 3]));
    let decoded = RecordBatch::try_from_iter([
        ("event_time", Arc::new(times) as ArrayRef),
        ("merchant_category", Arc::new(categories) as ArrayRef),
    ])
    .expect("a decoded batch");
    let rows = (0..ROWS)
        .map(|i| ScoredRow {
            feature_row: i,
            decoded_row: i,
            partition: 0,
            score: rng.random::<f64>(),
            flagged: rng.random::<f64>() < 0.01,
        })
        .collect();
    (features, decoded, rows)
}

fn update_alone(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(1);
    let sample: Vec<f64> = (0..10_000).map(|_| rng.random::<f64>()).collect();
    let reference = Reference::of(&sample, 10).expect("values");
    let references = References {
        features: (0..10)
            .map(|f| (format!("f{f}"), reference.clone()))
            .collect(),
        score: Some(reference.clone()),
        categories: [(
            "merchant_category".to_owned(),
            [("5411", 0.4), ("5812", 0.3), ("5999", 0.3)]
                .map(|(v, s)| (v.to_owned(), s))
                .into_iter()
                .collect(),
        )]
        .into_iter()
        .collect(),
        chunks: Default::default(),
        performance: None,
    };
    let reference = serde_json::to_value(&references).expect("serialises");
    let state = tempfile::tempdir().expect("a state directory");
    let monitor = DriftMonitor::new(drift_settings());
    let store = RocksStore::open(
        state.path(),
        true,
        &[(Family::Drift, monitor.expiry() as _)],
    )
    .expect("a store");
    let checkpoint = Checkpoint::new(Arc::new(store)).expect("a checkpoint");
    let mut start_ms = 1_775_001_600_000;
    let mut group = c.benchmark_group("drift_update");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("10_features", |b| {
        b.iter_batched(
            || {
                let batch = ten_feature_rows(start_ms);
                start_ms += ROWS as i64 * MS_PER_EVENT;
                batch
            },
            |(features, decoded, rows)| {
                let observed = monitor
                    .observe(
                        &checkpoint,
                        &Observation {
                            model: "bench",
                            version: "1",
                            reference: Some(&reference),
                            features: &features,
                            decoded: &decoded,
                            rows: &rows,
                        },
                    )
                    .expect("observes");
                let staged =
                    checkpoint.stage("transactions", &Default::default(), observed.changes);
                checkpoint.commit(staged).expect("commits");
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn psi_ks(c: &mut Criterion) {
    const FEATURES: usize = 30;
    const ROWS: usize = 1_000_000;
    let mut rng = SmallRng::seed_from_u64(3);
    let columns: Vec<Vec<f64>> = (0..FEATURES)
        .map(|f| {
            (0..ROWS)
                .map(|_| rng.random::<f64>() * (f + 1) as f64)
                .collect()
        })
        .collect();
    let references: Vec<Reference> = columns
        .iter()
        .map(|c| Reference::of(&c[..100_000], 10).expect("values"))
        .collect();
    let mut group = c.benchmark_group("drift_statistics");
    group.sample_size(10);
    group.throughput(Throughput::Elements((FEATURES * ROWS) as u64));
    group.bench_function("psi_ks_30x1m", |b| {
        b.iter(|| {
            let mut total = 0.0;
            for (values, reference) in columns.iter().zip(&references) {
                let mut counts = WindowCounts::new(reference.shares.len());
                for &v in values {
                    counts.add(Some(v), &reference.edges);
                }
                let n = counts.values() as f64;
                let live: Vec<f64> = counts.bins.iter().map(|&c| c as f64 / n).collect();
                total += psi(&reference.shares, &live) + ks(&reference.shares, &live);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, batch_path, update_alone, psi_ks);
criterion_main!(benches);
