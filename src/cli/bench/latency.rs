//! The latency rows: a program on empty topics, events produced at an
//! offered load, each output's Kafka timestamp against its event's.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::{
    BenchError, BenchOptions, Event, Load, events, failed, produce_all, producer, reader, stop,
    topic, total_end_offset,
};
use crate::kafka::admin::ensure_topics;

/// One latency row: `spawn` (given its input and output topics) on empty
/// topics, warmed up with one event, then events produced at `load` with
/// their send time as Kafka timestamp, and every output read back.
pub(super) async fn latency_at(
    options: &BenchOptions,
    load: Load,
    run: usize,
    name: &str,
    spawn: &impl Fn(&str, &str) -> std::io::Result<Child>,
) -> Result<(), BenchError> {
    let (input, output) = (topic("bench-lat-in"), topic("bench-lat-out"));
    ensure_topics(&options.brokers, &[&input, &output], options.partitions)
        .await
        .map_err(failed)?;
    let mut child = spawn(&input, &output).map_err(failed)?;
    // Once one event has made it through, the group has joined.
    produce_all(&options.brokers, &input, &events(1, 0)).await?;
    let watcher = reader(&options.brokers)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while total_end_offset(&watcher, &output, options.partitions)? < 1 {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(failed(format!("{name} produced nothing within 60 s")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let count = match load {
        Load::PerSecond(rate) => (rate * options.load_seconds) as usize,
        Load::Max => options.events.min(200_000),
    };
    let payloads = events(count, run);
    let sent_at = produce_paced(&options.brokers, &input, &payloads, load).await?;
    let achieved = count as f64 / sent_at.1.as_secs_f64();
    let scores = read_back(&options.brokers, &output, options.partitions, count + 1)?;
    stop(&mut child)?;

    let mut latencies: Vec<i64> = scores
        .iter()
        .filter_map(|(event_id, scored_ms)| Some(scored_ms - sent_at.0.get(event_id)?))
        .collect();
    latencies.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).max(1) - 1;
        latencies.get(rank).copied().unwrap_or_default()
    };
    let offered = match load {
        Load::PerSecond(rate) => format!("{rate}/s"),
        Load::Max => "max (saturation)".into(),
    };
    println!(
        "| {offered} | {name} | {count} | {achieved:.0} | {} | {} | {} |",
        at(0.5),
        at(0.99),
        at(0.999)
    );
    Ok(())
}

/// Produces at `load`, in 10 ms slices, each event stamped with its send
/// time. Returns event id -> send time (ms) and how long sending took.
async fn produce_paced(
    brokers: &str,
    topic: &str,
    payloads: &[Event],
    load: Load,
) -> Result<(HashMap<String, i64>, Duration), BenchError> {
    let producer = producer(brokers)?;
    let slice = Duration::from_millis(10);
    let per_slice = match load {
        Load::PerSecond(rate) => (rate as usize / 100).max(1),
        Load::Max => 10_000,
    };
    let mut sent_at = HashMap::with_capacity(payloads.len());
    let started = Instant::now();
    let mut next = tokio::time::Instant::now();
    let mut pending = Vec::with_capacity(payloads.len());
    for chunk in payloads.chunks(per_slice) {
        for event in chunk {
            let now = chrono::Utc::now().timestamp_millis();
            let mut record = FutureRecord::to(topic)
                .key(&event.key)
                .payload(&event.payload)
                .timestamp(now);
            sent_at.insert(event.id.clone(), now);
            // `send_result` hands the record to librdkafka now; an async
            // `send` would wait to be polled, and the stamp would lie.
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => break pending.push(delivery),
                    Err((e, returned))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(failed(e)),
                }
            }
        }
        if let Load::PerSecond(_) = load {
            next += slice;
            tokio::time::sleep_until(next).await;
        }
    }
    for result in join_all(pending).await {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(failed(e)),
            Err(_) => return Err(failed("a delivery was cancelled")),
        }
    }
    Ok((sent_at, started.elapsed()))
}

/// Reads `count` scores: (event id, the score's Kafka timestamp in ms).
fn read_back(
    brokers: &str,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Result<Vec<(String, i64)>, BenchError> {
    let consumer = reader(brokers)?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .map_err(failed)?;
    }
    consumer.assign(&assignment).map_err(failed)?;
    let mut scores = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(300);
    while scores.len() < count && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.map_err(failed)?;
        let Some(timestamp) = message.timestamp().to_millis() else {
            continue;
        };
        let Some(payload) = message.payload() else {
            continue;
        };
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload)
            && let Some(id) = value["event_id"].as_str()
        {
            scores.push((id.to_owned(), timestamp));
        }
    }
    if scores.len() < count {
        return Err(failed(format!(
            "read back {} of {count} scores",
            scores.len()
        )));
    }
    Ok(scores)
}
