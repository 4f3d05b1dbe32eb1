//! What the benches share: the example pipeline's engine and a batch of
//! simulated transactions.

use streamscore::batch::{Batch, SourceRecord};
use streamscore::config::Pipeline;
use streamscore::engine::Engine;
use streamscore::simulate::{SimulationConfig, Transaction, simulate};

/// `rows` simulated transactions as one batch of JSON records, partition 0.
pub fn simulated_batch(rows: usize) -> Batch {
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

/// The simulated stream `streamscore bench` sends (5,000 cards, 10,000
/// terminals), handed out in consecutive batches, so that the state is as
/// large and as cold as in the end-to-end run: a batch replayed again and
/// again keeps its few keys in the CPU's caches, and measured the engine
/// at a third of its end-to-end cost per event (bench/RESULTS.md, session
/// 12). Past its end the stream starts again a whole span later, so that
/// its events are new to the windows, not late.
pub struct Stream {
    transactions: Vec<Transaction>,
    next: usize,
    /// Times the stream has started again, and its span.
    rounds: i32,
    span: chrono::Duration,
    offset: i64,
}

impl Stream {
    /// Times the stream can start again before its events reach the wall
    /// clock: about 25 million events.
    const ROUNDS: i64 = 60;

    pub fn new() -> Self {
        // Far enough back that its rounds stay in the past: the engine
        // refuses event times past the wall clock (`max_future`).
        let transactions = simulate(&SimulationConfig {
            customers: 5_000,
            terminals: 10_000,
            days: 60,
            start: chrono::Utc::now() - chrono::Duration::days(61 * Self::ROUNDS),
            ..SimulationConfig::default()
        });
        let span = match (transactions.first(), transactions.last()) {
            (Some(first), Some(last)) => last.time - first.time + chrono::Duration::days(1),
            _ => chrono::Duration::days(1),
        };
        Self {
            transactions,
            next: 0,
            rounds: 0,
            span,
            offset: 0,
        }
    }

    /// The next `rows` events as one batch of JSON records, partition 0.
    pub fn batch(&mut self, rows: usize) -> Batch {
        let mut batch = Batch::new("transactions");
        for _ in 0..rows {
            if self.next == self.transactions.len() {
                self.next = 0;
                self.rounds += 1;
                assert!(
                    i64::from(self.rounds) < Self::ROUNDS,
                    "the simulated stream has run out of past"
                );
            }
            let mut t = self.transactions[self.next].clone();
            self.next += 1;
            if self.rounds > 0 {
                let time = t.time + self.span * self.rounds;
                t.event_time = time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                t.event_id = format!("{}-{}", self.rounds, t.event_id);
            }
            batch.records.push(SourceRecord::new(
                0,
                self.offset,
                Some(t.card_id.clone().into_bytes()),
                Some(serde_json::to_vec(&t).expect("a transaction serialises")),
            ));
            self.offset += 1;
        }
        batch
    }
}

/// Hands out the batch again under new offsets each time. The engine
/// keeps window state: a batch under offsets it has already folded in would
/// be skipped as a replay.
pub struct Replayer {
    batch: Batch,
    next_base: i64,
}

impl Replayer {
    pub fn new(batch: Batch) -> Self {
        Self {
            batch,
            next_base: 0,
        }
    }

    pub fn next(&mut self) -> Batch {
        let mut batch = self.batch.clone();
        for (i, record) in batch.records.iter_mut().enumerate() {
            record.offset = self.next_base + i as i64;
        }
        self.next_base += batch.len() as i64;
        batch
    }
}

/// A current-thread runtime and the engine of pipelines/fraud.toml, its
/// state (RocksDB) in a temporary directory that lives as long as the
/// engine is used.
pub fn example_engine() -> (tokio::runtime::Runtime, Engine, tempfile::TempDir) {
    example_engine_with(|_| {})
}

/// [`example_engine`] with the pipeline changed by `edit` first.
pub fn example_engine_with(
    edit: impl FnOnce(&mut Pipeline),
) -> (tokio::runtime::Runtime, Engine, tempfile::TempDir) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime starts");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pipeline =
        Pipeline::load(&root.join("pipelines/fraud.toml"), None).expect("example pipeline");
    let state = tempfile::tempdir().expect("a state directory");
    pipeline
        .use_state_dir(state.path().to_owned())
        .expect("the example pipeline keeps state");
    edit(&mut pipeline);
    let engine = runtime
        .block_on(Engine::for_pipeline(&pipeline))
        .expect("the engine starts");
    (runtime, engine, state)
}
