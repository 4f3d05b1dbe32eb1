//! How long a partition's state takes to restore from its changelog
//! (README, "Running several instances"; run by scripts/bench_restore.sh).
//!
//! Writes `--cards` cards' window state to a fresh changelog topic through
//! the checkpoint's own append path (two keys a card, as the example
//! pipeline keeps: an hour-tile and a day-tile series, `--value-bytes`
//! each), then restores it into an empty RocksDB the way an instance does
//! when the partition is assigned to it, and prints what it read.
//!
//!   cargo run --release --example restore -- --brokers 127.0.0.1:9092 --cards 1000000

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use streamscore::config::KafkaSettings;
use streamscore::kafka::changelog::{KafkaChangelog, StateFollower};
use streamscore::kafka::context::FollowsAssignment;
use streamscore::state::{Change, Changelog, Checkpoint, Family, RocksStore};
use streamscore::telemetry::Health;

fn argument(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|at| args.get(at + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn in_partition_zero(_: Family, _: &[u8]) -> Option<i32> {
    Some(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter("streamscore=info")
        .init();
    let brokers = argument("--brokers", "127.0.0.1:9092");
    let cards: usize = argument("--cards", "1000000").parse()?;
    let value_bytes: usize = argument("--value-bytes", "250").parse()?;
    let topic = format!("restore-bench-{}", std::process::id());
    streamscore::kafka::admin::prepare_changelog(&brokers, &topic, 1, false).await?;
    let settings = KafkaSettings {
        brokers: brokers.clone(),
        group_id: format!("restore-bench-{}", std::process::id()),
        input_topic: "unused".into(),
        output_topic: "unused".into(),
        dead_letter_topic: "unused".into(),
        shadow_topic: None,
        alerts_topic: None,
        consumer: BTreeMap::new(),
        producer: BTreeMap::new(),
    };
    let log = Arc::new(KafkaChangelog::new(&settings, &topic)?);
    let started = Instant::now();
    let value = vec![7u8; value_bytes];
    let mut written = 0usize;
    for chunk in (0..cards).collect::<Vec<_>>().chunks(25_000) {
        let changes: Vec<Change> = chunk
            .iter()
            .flat_map(|card| {
                [b'h', b'd'].map(|series| {
                    let mut key = 0i32.to_be_bytes().to_vec();
                    key.extend_from_slice(&[series; 8]);
                    key.extend_from_slice(format!("card-{card:08}").as_bytes());
                    Change {
                        family: Family::Windows,
                        key,
                        value: Some(value.clone()),
                    }
                })
            })
            .collect();
        let routed: Vec<(i32, &Change)> = changes.iter().map(|c| (0, c)).collect();
        log.append(&routed)?;
        written += changes.len();
    }
    println!(
        "wrote {written} records ({cards} cards, {value_bytes}-byte values) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let store = RocksStore::open(dir.path(), false, &[])?;
    let checkpoint =
        Arc::new(Checkpoint::new(Arc::new(store))?.with_changelog(log, in_partition_zero));
    let follower = StateFollower::new(
        Arc::clone(&checkpoint),
        &settings,
        &topic,
        Arc::new(Health::default()),
        false,
        1,
    );
    let started = Instant::now();
    follower.assigned(&BTreeSet::from([0]), &[0]);
    println!(
        "restored to offset {:?} in {:.1} s",
        checkpoint.changelog_position(0)?,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
