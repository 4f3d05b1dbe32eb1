//! The ceiling the engine is measured against: the same consume, produce,
//! await every ack, store offsets loop as `streamscore run`, with nothing in
//! the middle (no decoding, no SQL, no model). Each payload goes out
//! unchanged.
//!
//! ```sh
//! cargo run --release --example passthrough -- BROKERS GROUP INPUT OUTPUT [MAX_ROWS]
//! ```
//!
//! Runs until SIGINT/SIGTERM, then commits what it stored.
//! `FETCH_WAIT_MAX_MS` sets the consumer's `fetch.wait.max.ms`.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, group, input, output, rest @ ..] = args.as_slice() else {
        return Err("usage: passthrough BROKERS GROUP INPUT OUTPUT [MAX_ROWS]".into());
    };
    let max_rows: usize = rest.first().map_or(Ok(2000), |s| s.parse())?;
    // The settings `streamscore run` uses, so the two differ only in the work.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "fetch.wait.max.ms",
            std::env::var("FETCH_WAIT_MAX_MS").unwrap_or_else(|_| "500".into()),
        )
        .create()?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("acks", "all")
        // The engine's delivery settings (kafka/mod.rs, `producer_config`).
        .set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "1")
        .create()?;
    consumer.subscribe(&[input])?;

    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let linger = Duration::from_millis(20);
    loop {
        // Gather a batch: up to max_rows, or linger after the first record.
        let mut batch = Vec::with_capacity(max_rows);
        let mut deadline = None;
        while batch.len() < max_rows {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut stop => return finish(&consumer, &producer),
                _ = term.recv() => return finish(&consumer, &producer),
                () = sleep => break,
                message = consumer.recv() => {
                    let message = message?;
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + linger);
                    batch.push((
                        message.partition(),
                        message.offset(),
                        message.key().map(<[u8]>::to_vec),
                        message.payload().map(<[u8]>::to_vec),
                    ));
                }
            }
        }
        let sends = batch.iter().map(|(_, _, key, payload)| {
            let mut record = FutureRecord::<[u8], [u8]>::to(output);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = payload {
                record = record.payload(payload.as_slice());
            }
            producer.send(record, Timeout::Never)
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }
        let mut next: std::collections::BTreeMap<i32, i64> = Default::default();
        for (partition, offset, _, _) in &batch {
            let entry = next.entry(*partition).or_default();
            *entry = (*entry).max(offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset(input, partition, Offset::Offset(offset))?;
        }
        consumer.store_offsets(&offsets)?;
    }
}

fn finish(
    consumer: &StreamConsumer,
    producer: &FutureProducer,
) -> Result<(), Box<dyn std::error::Error>> {
    rdkafka::producer::Producer::flush(producer, Duration::from_secs(30))?;
    // Nothing stored since the last commit is not a failure.
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Ok(())
}
