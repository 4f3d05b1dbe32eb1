//! The producer side: scores to the output topic, refused records to the
//! dead-letter topic, and nothing counts as delivered until Kafka acks it.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::KafkaSettings;
use crate::output::{BatchOutput, DeadLetter, Outgoing};

/// How often a batch's failed deliveries are retried before the pipeline
/// gives up (and, not having committed, re-reads the batch on restart).
const DELIVERY_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
#[error(
    "{failed} messages to {topic} were not acknowledged after {DELIVERY_ATTEMPTS} attempts: {last_error}"
)]
pub struct DeliveryError {
    pub topic: String,
    pub failed: usize,
    pub last_error: KafkaError,
}

pub struct KafkaSink {
    producer: FutureProducer,
    output_topic: String,
    dead_letter_topic: String,
}

impl KafkaSink {
    pub fn new(settings: &KafkaSettings) -> KafkaResult<Self> {
        Ok(Self {
            producer: super::producer_config(settings).create()?,
            output_topic: settings.output_topic.clone(),
            dead_letter_topic: settings.dead_letter_topic.clone(),
        })
    }

    /// Produces everything a batch made and returns once all of it is acked.
    pub async fn deliver(&self, output: &BatchOutput) -> Result<(), DeliveryError> {
        let (scores, dead_letters) = futures::join!(
            self.deliver_all(&self.output_topic, &output.scores, |m| self.send_score(m)),
            self.deliver_all(&self.dead_letter_topic, &output.dead_letters, |d| {
                self.send_dead_letter(d)
            }),
        );
        scores.and(dead_letters)
    }

    /// Sends `messages`, then re-sends the ones that failed, with backoff.
    async fn deliver_all<'m, M, F, Fut>(
        &self,
        topic: &str,
        messages: &'m [M],
        send: F,
    ) -> Result<(), DeliveryError>
    where
        F: Fn(&'m M) -> Fut,
        Fut: Future<Output = Result<(), KafkaError>>,
    {
        let mut pending: Vec<&M> = messages.iter().collect();
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=DELIVERY_ATTEMPTS {
            let results = join_all(pending.iter().map(|m| send(m))).await;
            let mut last_error = None;
            pending = pending
                .into_iter()
                .zip(results)
                .filter_map(|(m, r)| r.map_err(|e| last_error = Some(e)).err().map(|()| m))
                .collect();
            let Some(last_error) = last_error else {
                return Ok(());
            };
            if attempt == DELIVERY_ATTEMPTS {
                return Err(DeliveryError {
                    topic: topic.to_owned(),
                    failed: pending.len(),
                    last_error,
                });
            }
            tracing::warn!(topic, failed = pending.len(), error = %last_error, attempt, "delivery failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        Ok(())
    }

    async fn send_score(&self, message: &Outgoing) -> Result<(), KafkaError> {
        let mut record =
            FutureRecord::<[u8], [u8]>::to(&self.output_topic).payload(&message.payload);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        // A full local queue waits (Timeout::Never) rather than drops.
        self.producer
            .send(record, Timeout::Never)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }

    async fn send_dead_letter(&self, letter: &DeadLetter) -> Result<(), KafkaError> {
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
        self.producer
            .send(record, Timeout::Never)
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }

    /// Waits for everything queued to be delivered.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.producer.flush(timeout)
    }
}
