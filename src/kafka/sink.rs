//! The producer side: scores to the output topic and refused records to the
//! dead-letter topic, nothing counting as delivered until Kafka acks it; a
//! challenger's scores and drift alerts go beside them (`side.rs`).
//!
//! What happens when Kafka refuses a message depends on whose fault it is
//! ([`Fault`](super::fault::Fault)); no refusal ends in a crash loop:
//! - **the message's** (too large, invalid record): re-sending the same bytes
//!   cannot succeed, so they are not re-sent. A refused score becomes a dead
//!   letter of its input (`undeliverable`); a refused dead letter is sent
//!   again without its key and payload (the headers still say what, where
//!   and why). Only if even that is refused does the batch fail.
//! - **the operator's** (unknown topic, not authorised): the batch is held,
//!   uncommitted, and offered again every [`HOLD_RETRY`](super::fault::HOLD_RETRY) with an ERROR log
//!   saying what to fix, until the topic or ACL exists; a stop (SIGTERM)
//!   leaves it uncommitted, to be read again.
//! - **the moment's** (timeouts, a broker away): sent again with backoff;
//!   after [`TRANSIENT_ATTEMPTS`] rounds the batch fails without committing,
//!   and the process exits so a restart re-reads it.

use std::borrow::Cow;
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::context::SinkContext;
use super::fault::{Fault, HOLD_RETRY};
use super::side::SideOutputs;
use crate::batch::Batch;
use crate::config::KafkaSettings;
use crate::output::{BatchOutput, DeadLetter, Outgoing};
use crate::reject::RejectKind;
use crate::telemetry::events::{DeliveryRetried, Event};

/// How long a message waits for room when librdkafka's local queue is
/// full (rdkafka's own `send` waits as long).
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(100);

/// Rounds of transient failures before the batch fails.
pub const TRANSIENT_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(
        "{failed} messages to {topic} were not acknowledged after {TRANSIENT_ATTEMPTS} attempts: {last_error}"
    )]
    Transient {
        topic: String,
        failed: usize,
        last_error: KafkaError,
    },
    #[error(
        "the dead-letter topic {topic} refuses even a dead letter without key or payload \
         ({error}); check the topic's max.message.bytes and message format"
    )]
    DeadLetterRefused { topic: String, error: KafkaError },
}

/// What delivering a batch did besides the obvious.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Positions in the batch's scores of those Kafka refused for good and
    /// that went out as dead letters instead.
    pub rerouted: Vec<usize>,
}

/// A message still to be acknowledged.
enum Pending<'a> {
    /// A score and its position in the batch's scores.
    Score(usize, &'a Outgoing),
    Letter(Cow<'a, DeadLetter>),
}

pub struct KafkaSink {
    producer: FutureProducer<SinkContext>,
    /// Shadow scores and alerts, sent beside the batch, never holding it.
    side: SideOutputs,
    output_topic: String,
    /// Where challenger scores go; without one they are compared, not sent.
    shadow_topic: Option<String>,
    /// Where drift alerts go; without one they are logged and counted only.
    alerts_topic: Option<String>,
    dead_letter_topic: String,
    dead_letter_payload_bytes: usize,
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings, dead_letter_payload_bytes: usize) -> KafkaResult<Self> {
        let producer: FutureProducer<SinkContext> =
            super::producer_config(settings).create_with_context(SinkContext)?;
        Ok(Self {
            side: SideOutputs::new(producer.clone()),
            producer,
            output_topic: settings.output_topic.clone(),
            shadow_topic: settings.shadow_topic.clone(),
            alerts_topic: settings.alerts_topic.clone(),
            dead_letter_topic: settings.dead_letter_topic.clone(),
            dead_letter_payload_bytes,
        })
    }

    /// Produces everything `batch` made and returns once its scores and
    /// dead letters are acked; its shadow scores and alerts go beside it
    /// (`side.rs`).
    pub async fn deliver(
        &self,
        batch: &Batch,
        output: &BatchOutput,
    ) -> Result<Delivered, DeliveryError> {
        let mut delivered = Delivered::default();
        if let Some(topic) = &self.shadow_topic {
            self.side.offer(topic, &output.shadow);
        }
        if let Some(topic) = &self.alerts_topic {
            self.side.offer(topic, &output.alerts);
        }
        let mut pending: Vec<Pending> = output
            .scores
            .iter()
            .enumerate()
            .map(|(position, score)| Pending::Score(position, score))
            .chain(
                output
                    .dead_letters
                    .iter()
                    .map(|d| Pending::Letter(Cow::Borrowed(d))),
            )
            .collect();
        let mut transient_rounds = 0;
        let mut backoff = Duration::from_millis(100);
        while !pending.is_empty() {
            let results = self.send_all(&pending).await;
            let mut next = Vec::new();
            let (mut held, mut transient) = (None, None);
            for (message, result) in pending.into_iter().zip(results) {
                let Err(error) = result else { continue };
                match (Fault::of(&error), message) {
                    (Fault::Message, Pending::Score(position, score)) => {
                        tracing::warn!(error = %error, "Kafka refused a score for good; dead-lettering its input");
                        delivered.rerouted.push(position);
                        next.push(Pending::Letter(Cow::Owned(DeadLetter::for_record(
                            &batch.records[score.source_index],
                            &batch.topic,
                            RejectKind::Undeliverable,
                            format!("Kafka refused the score: {error}"),
                            self.dead_letter_payload_bytes,
                        ))));
                    }
                    (Fault::Message, Pending::Letter(letter)) => {
                        if letter.key.is_none() && letter.payload.is_none() {
                            return Err(DeliveryError::DeadLetterRefused {
                                topic: self.dead_letter_topic.clone(),
                                error,
                            });
                        }
                        tracing::warn!(error = %error, "Kafka refused a dead letter; sending it without key and payload");
                        let mut bare = letter.into_owned();
                        (bare.key, bare.payload) = (None, None);
                        next.push(Pending::Letter(Cow::Owned(bare)));
                    }
                    (Fault::Operator, message) => {
                        held = Some((self.topic_of(&message).to_owned(), error));
                        next.push(message);
                    }
                    (Fault::Transient, message) => {
                        transient = Some((self.topic_of(&message).to_owned(), error));
                        next.push(message);
                    }
                }
            }
            let failed = next.len();
            pending = next;
            if let Some((topic, error)) = held {
                tracing::error!(topic, failed, error = %error,
                    "Kafka refuses the topic: create it or grant this client write access; \
                     the batch is held uncommitted and offered again");
                tokio::time::sleep(HOLD_RETRY).await;
            } else if let Some((topic, last_error)) = transient {
                transient_rounds += 1;
                if transient_rounds == TRANSIENT_ATTEMPTS {
                    return Err(DeliveryError::Transient {
                        topic,
                        failed,
                        last_error,
                    });
                }
                DeliveryRetried {
                    topic: &topic,
                    failed,
                    error: &last_error,
                    attempt: transient_rounds,
                }
                .emit();
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Ok(delivered)
    }

    fn topic_of(&self, message: &Pending) -> &str {
        match message {
            Pending::Score(..) => &self.output_topic,
            Pending::Letter(_) => &self.dead_letter_topic,
        }
    }

    /// Queues every message, then waits for their acknowledgements one
    /// after another: queued together, they are acknowledged together.
    /// Each message's send as a future of its own, the futures joined,
    /// cost the scoring thread more in bookkeeping than the messages did
    /// in librdkafka (bench/RESULTS.md, session 16).
    async fn send_all(&self, pending: &[Pending<'_>]) -> Vec<Result<(), KafkaError>> {
        let mut queued = Vec::with_capacity(pending.len());
        for message in pending {
            queued.push(match message {
                Pending::Score(_, score) => self.queue(self.score_record(score)).await,
                Pending::Letter(letter) => self.queue(self.dead_letter_record(letter)).await,
            });
        }
        let mut results = Vec::with_capacity(queued.len());
        for delivery in queued {
            results.push(match delivery {
                Ok(delivery) => match delivery.await {
                    Ok(acknowledged) => acknowledged.map(drop).map_err(|(e, _)| e),
                    // Only a dropped producer cancels: this one is held.
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(refused) => Err(refused),
            });
        }
        results
    }

    fn score_record<'m>(&'m self, message: &'m Outgoing) -> FutureRecord<'m, [u8], [u8]> {
        let record = FutureRecord::<[u8], [u8]>::to(&self.output_topic).payload(&message.payload);
        match &message.key {
            Some(key) => record.key(key.as_slice()),
            None => record,
        }
    }

    fn dead_letter_record<'m>(&'m self, letter: &'m DeadLetter) -> FutureRecord<'m, [u8], [u8]> {
        let header_pairs = letter.header_pairs();
        let headers = header_pairs
            .iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.dead_letter_topic).headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &letter.payload {
            record = record.payload(payload.as_slice());
        }
        record
    }

    /// Hands one record to librdkafka. A full local queue waits, as
    /// rdkafka's own `send` does, rather than drops.
    async fn queue(
        &self,
        mut record: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again)) => {
                    record = again;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((refused, _)) => return Err(refused),
            }
        }
    }

    /// Waits for everything queued to be delivered. Side messages still
    /// kept for another offer are lost with the process: said here.
    pub async fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.side.settle(timeout / 2).await;
        let flushed = self.producer.flush(timeout / 2);
        let kept = self.side.kept_len();
        if kept > 0 {
            tracing::warn!(
                kept,
                "side messages (drift alerts, challenger scores) Kafka refused are not delivered \
                 at this stop; alerts stay in the state store for `streamscore drift report`"
            );
        }
        flushed
    }
}
