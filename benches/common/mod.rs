//! What the benches share: a batch of simulated transactions.

use streamscore::batch::{Batch, SourceRecord};
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
