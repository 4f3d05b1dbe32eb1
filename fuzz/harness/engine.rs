//! Arbitrary batches of transactions and labels through the example
//! pipeline's whole engine (decode, window state, labels, SQL, model,
//! drift) on the in-memory store. Nothing in the data may panic it, and no
//! batch may fail except on the store's own errors (README "Hostile
//! data"). Shared, by `#[path]`, by the cargo-fuzz target
//! (fuzz/fuzz_targets/engine.rs) and the property test CI runs
//! (tests/it/fuzz_engine.rs).

use std::path::Path;
use std::sync::Mutex;

use streamscore::batch::{Batch, SourceRecord};
use streamscore::config::Pipeline;
use streamscore::engine::{Engine, EngineError, EngineSpec, EngineState};
use streamscore::model::Bundle;
use streamscore::state::StateError;

pub struct Harness {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
    /// The next offset of each topic: batches follow one another, and
    /// some go back (a rewind).
    next_offset: Mutex<i64>,
}

impl Harness {
    /// The example pipeline of the checkout at `repo`.
    pub fn new(repo: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let pipeline = Pipeline::load(&repo.join("pipelines/fraud.toml"), None)
            .expect("the example pipeline loads");
        let model = Bundle::load(&repo.join("pipelines/models/fraud-lr")).expect("its model loads");
        let engine = runtime
            .block_on(Engine::new(EngineSpec {
                state: Some(EngineState::in_memory(&pipeline).expect("in-memory state")),
                ..EngineSpec::for_pipeline(&pipeline, model)
            }))
            .expect("the engine starts");
        Self {
            runtime,
            engine,
            next_offset: Mutex::new(0),
        }
    }

    /// One batch made of `data`. Its first byte says whose batch it is
    /// (transactions or labels), over how many partitions, and whether it
    /// goes back over offsets already folded; the rest, cut at newlines,
    /// are its records: raw bytes, or a transaction built from them with
    /// any float and time (`record`).
    pub fn run(&self, data: &[u8]) {
        let Some((&how, rest)) = data.split_first() else {
            return;
        };
        let labels = how & 1 == 1;
        let partitions = i32::from(how >> 1 & 3) + 1;
        let rewind = how & 8 != 0;
        let mut batch = Batch::new(if labels { "labels" } else { "transactions" });
        let first = {
            let mut next = self.next_offset.lock().unwrap_or_else(|e| e.into_inner());
            let count = rest.split(|&b| b == b'\n').count() as i64;
            let first = if rewind {
                (*next - count).max(0)
            } else {
                *next
            };
            *next = (*next).max(first + count);
            first
        };
        batch.records = rest
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, bytes)| {
                SourceRecord::new(
                    i as i32 % partitions,
                    first + i as i64,
                    Some(b"k".to_vec()),
                    Some(record(bytes, labels)),
                )
            })
            .collect();
        let staged = if labels {
            self.outcome(self.engine.fold_labels(&batch).map(|f| f.map(|f| f.staged)))
        } else {
            let output = self.runtime.block_on(self.engine.process(&batch));
            self.outcome(output.map(|o| o.staged))
        };
        if let Some(staged) = staged {
            self.outcome(self.engine.checkpoint(Some(staged)).map(|_| None::<()>));
        }
    }

    /// The batch's result: only the store's own errors may fail it.
    fn outcome<T>(&self, result: Result<Option<T>, EngineError>) -> Option<T> {
        match result {
            Ok(value) => value,
            Err(EngineError::State(StateError::Store { .. })) => None,
            Err(e) => panic!("a batch failed on its data: {e}"),
        }
    }
}

/// A record from fuzz bytes: as they are when the first is even, else a
/// transaction (or label) with fields read from them: a card and terminal
/// of a few, any f64 bit pattern as the amount, any i64 as the event time
/// in milliseconds (half of them folded into 2000-2030), and the rest as
/// the merchant category.
fn record(bytes: &[u8], label: bool) -> Vec<u8> {
    let Some((&mode, rest)) = bytes.split_first() else {
        return Vec::new();
    };
    if mode % 2 == 0 {
        return rest.to_vec();
    }
    let byte = |i: usize| rest.get(i).copied().unwrap_or(0);
    let word = |at: usize| {
        let mut b = [0u8; 8];
        for (i, v) in b.iter_mut().enumerate() {
            *v = byte(at + i);
        }
        b
    };
    let amount = f64::from_le_bytes(word(2));
    let mut time = i64::from_le_bytes(word(10));
    if mode & 2 != 0 {
        // 2000-01-01 plus up to 30 years.
        time = 946_684_800_000 + time.rem_euclid(30 * 365 * 86_400_000);
    }
    let category = String::from_utf8_lossy(rest.get(18..).unwrap_or_default());
    let value = if label {
        serde_json::json!({
            "event_id": format!("e{}", byte(0)),
            "card_id": format!("c{}", byte(0) % 8),
            "terminal_id": format!("t{}", byte(1) % 8),
            "event_time": time,
            "is_fraud": mode & 4 != 0,
        })
    } else {
        serde_json::json!({
            "event_id": format!("e{}", byte(0)),
            "card_id": format!("c{}", byte(0) % 8),
            "terminal_id": format!("t{}", byte(1) % 8),
            "amount": amount,
            "event_time": time,
            "merchant_category": category,
            "is_online": mode & 4 != 0,
        })
    };
    serde_json::to_vec(&value).expect("a JSON value serialises")
}
