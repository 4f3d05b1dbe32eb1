//! The live feed: transactions to the input topic in event-time slices,
//! and their labels to the labels topic once the stream has reached their
//! time plus the delay.

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::{DemoError, step};
use crate::config::Pipeline;
use crate::kafka::clients::ClientBuilder;
use crate::simulate::Transaction;

/// The labels of history and live transactions in time order, handed out
/// as the stream's event time reaches each one's time plus the delay.
pub(super) struct LabelFeed<'a> {
    transactions: Vec<&'a Transaction>,
    next: usize,
    delay: chrono::Duration,
}

impl<'a> LabelFeed<'a> {
    /// Starts after the labels history has already delivered (those the
    /// warm state folded in).
    pub(super) fn new(
        pipeline: &Pipeline,
        history: &'a [Transaction],
        live: &'a [Transaction],
    ) -> Self {
        let delay_ms = pipeline
            .windows
            .as_ref()
            .and_then(|w| w.labels.as_ref())
            .map_or(i64::MAX / 4, |l| l.delay_ms);
        let mut feed = Self {
            transactions: history.iter().chain(live).collect(),
            next: 0,
            delay: chrono::Duration::milliseconds(delay_ms),
        };
        if pipeline.labels.is_none() {
            feed.next = feed.transactions.len();
        }
        feed.due(history.last());
        feed
    }

    /// The labels due once the stream has reached `now`'s time.
    pub(super) fn due(&mut self, now: Option<&Transaction>) -> Vec<&'a Transaction> {
        let Some(now) = now else {
            return Vec::new();
        };
        let start = self.next;
        while self
            .transactions
            .get(self.next)
            .is_some_and(|t| t.time + self.delay <= now.time)
        {
            self.next += 1;
        }
        self.transactions[start..self.next].to_vec()
    }
}

/// Sends labels to the pipeline's labels topic, keyed by card.
pub(super) async fn produce_labels(
    pipeline: &Pipeline,
    labels: &[&Transaction],
) -> Result<(), DemoError> {
    let Some(topic) = pipeline.labels.as_ref().map(|l| &l.topic) else {
        return Ok(());
    };
    let producer: FutureProducer = ClientBuilder::producer(&pipeline.kafka.brokers)
        .create()
        .map_err(step("create the labels producer"))?;
    let payloads: Vec<(&str, Vec<u8>)> = labels
        .iter()
        .map(|t| {
            let label = crate::simulate::Label::of(t);
            let payload = serde_json::to_vec(&label).expect("a label serialises");
            (t.card_id.as_str(), payload)
        })
        .collect();
    let sends = payloads.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic)
                .key(*key)
                .payload(payload.as_slice()),
            Timeout::Never,
        )
    });
    for result in join_all(sends).await {
        result.map_err(|(e, _)| DemoError::Step(format!("produce labels: {e}")))?;
    }
    Ok(())
}

/// Produces the live events (without their labels) and the malformed ones.
/// Records produced together in the live feed: about a third of a day of
/// the simulator's traffic.
const LIVE_SLICE: usize = 500;

pub(super) async fn produce_live(
    pipeline: &Pipeline,
    live: &[Transaction],
    malformed: &[&[u8]],
) -> Result<usize, DemoError> {
    let producer: FutureProducer = ClientBuilder::producer(&pipeline.kafka.brokers)
        .create()
        .map_err(step("create the demo producer"))?;
    let topic = &pipeline.kafka.input_topic;
    let mut payloads: Vec<(Vec<u8>, Vec<u8>)> = live
        .iter()
        .map(|t| {
            let mut value = serde_json::to_value(t).expect("a transaction serialises");
            if let Some(object) = value.as_object_mut() {
                object.remove("is_fraud");
            }
            (
                t.card_id.clone().into_bytes(),
                value.to_string().into_bytes(),
            )
        })
        .collect();
    for (i, bad) in malformed.iter().enumerate() {
        let at = (i + 1) * payloads.len() / (malformed.len() + 1);
        payloads.insert(at, (b"malformed".to_vec(), bad.to_vec()));
    }
    // In event-time order, a slice at a time, each slice delivered before
    // the next goes: so every partition holds the same span of event time,
    // as a live feed's do. Sent at once, the producer's batches (up to
    // 10,000 records a partition) landed one partition's days before
    // another's, and a terminal's windows, summed over partitions, missed
    // the events still held back.
    for slice in payloads.chunks(LIVE_SLICE) {
        let sends = slice.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(key.as_slice())
                    .payload(payload.as_slice()),
                Timeout::Never,
            )
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| DemoError::Step(format!("produce live events: {e}")))?;
        }
    }
    Ok(payloads.len())
}
