//! What the benches share: the example pipeline's engine and a batch of
//! simulated transactions.

use streamscore::batch::{Batch, SourceRecord};
use streamscore::config::Pipeline;
use streamscore::engine::Engine;
use streamscore::simulate::{SimulationConfig, simulate};

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
