//! Window features through RocksDB: events per second on one core, for
//! - `3w2k`: three windows (1, 7 and 30 days, day tiles) counting events on
//!   two keys (card and terminal): two state keys per event;
//! - `example`: the example pipeline's twelve features, all in its hour
//!   tiles (per card: count and mean amount over 1, 7 and 30 days; per
//!   terminal: counts and confirmed frauds over 1, 7 and 30 days a week
//!   back): three state keys per event.
//!
//! Each 2,000-event batch is computed against the state and staged; the
//! staged batches are written in one fsync'd WriteBatch every batch, or
//! once a second (`state.checkpoint_ms`, 1000 by default). Over 100,000
//! cards and 2,000 terminals, after 100 batches of warm-up so that the
//! store holds every card. `cargo bench --bench windows`.
//!
//! `STREAMSCORE_WINDOWS_SOAK=5000000 cargo bench --bench windows` instead
//! streams that many events over 1,000,000 cards with the example's
//! features (`STREAMSCORE_WINDOWS_SOAK_FEATURES=3w2k` for the other set),
//! and prints every million events the resident memory, the
//! store's size on disk and the rate; then the time to reopen the store and
//! to serve the first batch after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use streamscore::config::Pipeline;
use streamscore::state::{Checkpoint, Family, RocksStore, Unwritten};
use streamscore::windows::{Aggregate, Source, WindowFeature, Windows};

const BATCH: usize = 2_000;
/// Event time advances this much per event: 2,000 events a minute.
const MS_PER_EVENT: i64 = 30;

fn example_windows() -> Windows {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline = Pipeline::load(&root.join("pipelines/fraud.toml"), None).expect("the pipeline");
    Windows::new(pipeline.windows.expect("the example declares windows"))
}

/// Counts over 1, 7 and 30 days (day tiles) per card and per terminal.
fn three_windows_two_keys() -> Windows {
    const DAY: i64 = 86_400_000;
    let mut spec = example_windows().spec().clone();
    spec.labels = None;
    spec.features = ["card_id", "terminal_id"]
        .iter()
        .flat_map(|key| {
            [1, 7, 30].map(|days| WindowFeature {
                name: format!("{key}_count_{days}d"),
                key: (*key).to_owned(),
                column: None,
                aggregate: Aggregate::Count,
                source: Source::Events,
                window_ms: days * DAY,
                tile_ms: DAY,
                shift_ms: 0,
                include_current: true,
            })
        })
        .collect();
    Windows::new(spec)
}

/// Random events over `cards` cards and a fiftieth as many terminals.
struct Events {
    rng: SmallRng,
    cards: u32,
    next: i64,
}

impl Events {
    fn new(cards: u32) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(11),
            cards,
            next: 0,
        }
    }

    fn batch(&mut self) -> RecordBatch {
        let mut card = Vec::with_capacity(BATCH);
        let mut terminal = Vec::with_capacity(BATCH);
        let mut amount = Vec::with_capacity(BATCH);
        let mut time = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            card.push(format!("card-{}", self.rng.random_range(0..self.cards)));
            terminal.push(format!(
                "term-{}",
                self.rng.random_range(0..self.cards / 50 + 1)
            ));
            amount.push(self.rng.random_range(1.0..200.0));
            time.push(1_775_000_000_000 + self.next * MS_PER_EVENT);
            self.next += 1;
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("card_id", Arc::new(StringArray::from(card))),
            ("terminal_id", Arc::new(StringArray::from(terminal))),
            ("amount", Arc::new(Float64Array::from(amount))),
            (
                "event_time",
                Arc::new(TimestampMillisecondArray::from(time)),
            ),
        ];
        RecordBatch::try_from_iter(columns).expect("a batch")
    }
}

/// The state side of the engine's loop: each batch computed and staged,
/// the staged batches written together when [`Unwritten`] says (every
/// batch for a zero interval), as `state.checkpoint_ms` does.
struct Folder {
    checkpoint: Checkpoint,
    unwritten: Unwritten,
    offset: i64,
}

impl Folder {
    fn new(checkpoint: Checkpoint, interval: Duration) -> Self {
        Self {
            checkpoint,
            unwritten: Unwritten::new(interval),
            offset: 0,
        }
    }

    fn fold(&mut self, windows: &Windows, batch: &RecordBatch) {
        let rows = batch.num_rows();
        let order: Vec<usize> = (0..rows).collect();
        let out = windows
            .compute(batch, &vec![0; rows], &order, &[], &self.checkpoint)
            .expect("features");
        self.offset += rows as i64;
        self.unwritten.push(Some(self.checkpoint.stage(
            "transactions",
            &std::collections::BTreeMap::from([(0, self.offset)]),
            out.changes,
        )));
        if self.unwritten.is_due() {
            self.checkpoint
                .commit_all(self.unwritten.take())
                .expect("checkpoint");
        }
    }
}

fn open(dir: &std::path::Path, windows: &Windows, sync: bool) -> Checkpoint {
    let store = RocksStore::open(dir, sync, &[(Family::Windows, windows.expiry())])
        .expect("the store opens");
    Checkpoint::new(Arc::new(store)).expect("the checkpoint reads")
}

fn window_updates(c: &mut Criterion) {
    if let Some(events) = std::env::var("STREAMSCORE_WINDOWS_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // One set of features a process, so that each RSS is its own.
        let name =
            std::env::var("STREAMSCORE_WINDOWS_SOAK_FEATURES").unwrap_or_else(|_| "example".into());
        let windows = match name.as_str() {
            "3w2k" => three_windows_two_keys(),
            _ => example_windows(),
        };
        soak(events, &name, &windows);
        return;
    }
    let mut group = c.benchmark_group("window_updates_rocksdb");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, windows) in [
        ("3w2k", three_windows_two_keys()),
        ("example", example_windows()),
    ] {
        for (every, interval) in [
            ("every_batch", Duration::ZERO),
            ("every_second", Duration::from_secs(1)),
        ] {
            let dir = tempfile::tempdir().expect("a directory");
            let mut folder = Folder::new(open(dir.path(), &windows, true), interval);
            let mut events = Events::new(100_000);
            for _ in 0..100 {
                folder.fold(&windows, &events.batch());
            }
            // Timed over whole runs of batches, so that the writes every
            // second weigh in as often as they come.
            group.bench_function(
                BenchmarkId::from_parameter(format!("{name}/{every}")),
                |b| {
                    b.iter_custom(|iters| {
                        let batches: Vec<RecordBatch> =
                            (0..iters).map(|_| events.batch()).collect();
                        let started = Instant::now();
                        for batch in &batches {
                            folder.fold(&windows, batch);
                        }
                        started.elapsed()
                    });
                },
            );
        }
    }
    group.finish();
}

fn soak(total: u64, name: &str, windows: &Windows) {
    println!("\n{name}, 1,000,000 cards, checkpoints every second:\n");
    let dir = tempfile::tempdir().expect("a directory");
    let mut events = Events::new(1_000_000);
    {
        let mut folder = Folder::new(open(dir.path(), windows, true), Duration::from_secs(1));
        println!("| events | RSS MB | store MB | events/s (last million) |");
        println!("|---:|---:|---:|---:|");
        let mut started = Instant::now();
        let mut done = 0u64;
        while done < total {
            folder.fold(windows, &events.batch());
            done += BATCH as u64;
            if done.is_multiple_of(1_000_000) {
                println!(
                    "| {done} | {:.0} | {:.0} | {:.0} |",
                    rss_mb(),
                    dir_mb(dir.path()),
                    1_000_000.0 / started.elapsed().as_secs_f64()
                );
                started = Instant::now();
            }
        }
    }
    let started = Instant::now();
    let mut folder = Folder::new(open(dir.path(), windows, true), Duration::ZERO);
    let opened = started.elapsed();
    folder.fold(windows, &events.batch());
    println!(
        "restart: store opened in {:.1} ms, first batch of {BATCH} served {:.1} ms after the start",
        opened.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn dir_mb(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>() as f64
                / 1e6
        })
        .unwrap_or(f64::NAN)
}

criterion_group!(benches, window_updates);
criterion_main!(benches);

// The allocator `streamscore` runs with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
