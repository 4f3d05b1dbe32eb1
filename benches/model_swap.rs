//! Batch latency with 100 model swaps a second against none: the price of
//! the ArcSwap (one pointer load per batch, a pointer store per swap). The
//! engine scores 2,000-row batches (the default `batch.max_rows`) on this
//! thread while another thread swaps the champion between two versions
//! every 10 ms. Rounds alternate, so drift of the machine hits both alike.
//!
//! `cargo bench --bench model_swap`. Prints per-batch p50, p99, p99.9 and
//! max for batches without the swapper, and, with it, for the batches a
//! swap landed in and those it did not, how many swaps landed during the measured batches, and
//! what the registry follower does off the batch path before a swap:
//! loading and verifying a bundle from disk.

// Each bench uses a part of the shared module.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use streamscore::engine::Engine;
use streamscore::model::Bundle;

const ROWS: usize = 2_000;
const BATCHES_PER_ROUND: usize = 250;
const ROUNDS: usize = 8;
const SWAP_EVERY: Duration = Duration::from_millis(10);

fn main() {
    let (runtime, engine, _state) = common::example_engine();
    let slot = Arc::clone(engine.models());
    let a = Arc::clone(&slot.current().champion);
    let mut other = (*a).clone();
    other.manifest.version = format!("{}-b", a.version());
    let b = slot.admit(other).expect("the variant fits");
    let mut batches = common::Replayer::new(common::simulated_batch(ROWS));

    let (mut quiet, mut swapping) = (Vec::new(), Vec::new());
    let mut swaps_during = 0;
    let no_swaps = AtomicU64::new(0);
    // One warm-up round, not measured.
    measure(
        &runtime,
        &engine,
        &mut batches,
        BATCHES_PER_ROUND / 5,
        &no_swaps,
    );
    for _ in 0..ROUNDS {
        quiet.extend(measure(
            &runtime,
            &engine,
            &mut batches,
            BATCHES_PER_ROUND,
            &no_swaps,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let swapper = {
            let (slot, a, b) = (Arc::clone(&slot), Arc::clone(&a), Arc::clone(&b));
            let (stop, swaps) = (Arc::clone(&stop), Arc::clone(&swaps));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = swaps.fetch_add(1, Ordering::Relaxed);
                    let next = if n % 2 == 0 { &b } else { &a };
                    slot.install(Arc::clone(next), None);
                    std::thread::sleep(SWAP_EVERY);
                }
            })
        };
        swapping.extend(measure(
            &runtime,
            &engine,
            &mut batches,
            BATCHES_PER_ROUND,
            &swaps,
        ));
        stop.store(true, Ordering::Relaxed);
        swapper.join().expect("the swapper ends");
        swaps_during += swaps.load(Ordering::Relaxed);
    }
    let bundle_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/models/fraud-lr");
    let mut loads: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            Bundle::load(&bundle_dir).expect("the committed bundle loads");
            started.elapsed()
        })
        .collect();
    loads.sort();
    println!(
        "loading and verifying the committed bundle (manifest, checksums, check row): p50 {:.3} ms, max {:.3} ms of 200",
        loads[loads.len() / 2].as_secs_f64() * 1e3,
        loads[loads.len() - 1].as_secs_f64() * 1e3
    );
    let seconds: f64 = swapping.iter().map(|(d, _)| d.as_secs_f64()).sum();
    println!(
        "{} batches of {ROWS} rows each way; {swaps_during} swaps in {seconds:.1} s of swapping \
         batches ({:.0} swaps/s)",
        quiet.len(),
        swaps_during as f64 / seconds
    );
    println!("| | p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("|---|---|---|---|---|");
    let split = |batches: &[(Duration, bool)], swapped: bool| -> Vec<Duration> {
        batches
            .iter()
            .filter(|(_, s)| *s == swapped)
            .map(|(d, _)| *d)
            .collect()
    };
    let rows = [
        ("no swapper", split(&quiet, false)),
        ("swapper, no swap in the batch", split(&swapping, false)),
        ("swapper, a swap in the batch", split(&swapping, true)),
    ];
    for (name, mut latencies) in rows {
        latencies.sort();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i].as_secs_f64() * 1e3
        };
        println!(
            "| {name} ({} batches) | {:.3} | {:.3} | {:.3} | {:.3} |",
            latencies.len(),
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0)
        );
    }
}

/// Each batch's time, and whether `swaps` moved while it was scored.
fn measure(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    replayer: &mut common::Replayer,
    batches: usize,
    swaps: &AtomicU64,
) -> Vec<(Duration, bool)> {
    (0..batches)
        .map(|_| {
            let batch = replayer.next();
            let before = swaps.load(Ordering::Relaxed);
            let started = Instant::now();
            let mut output = runtime.block_on(engine.process(&batch)).expect("scores");
            engine.checkpoint(output.staged.take()).expect("checkpoint");
            let elapsed = started.elapsed();
            assert_eq!(output.scores.len(), batch.len());
            (elapsed, swaps.load(Ordering::Relaxed) != before)
        })
        .collect()
}
