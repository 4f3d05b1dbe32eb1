//! The request API's write path (`serve.publish`): a scored request goes to
//! the input topic before it is answered, so a payment switch that only
//! calls the API still feeds the stream, which folds it exactly once as it
//! folds every record. The engine's producer settings (acks=all), and
//! idempotent whatever the file says: a transaction written twice would be
//! folded twice, unlike a score sent twice.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::producer_config;
use crate::config::{KafkaSettings, Partitioner};

pub struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher {
    /// Records are partitioned by `partitioner`, the one the API routes by
    /// (`serve.partitioner`): a request scored against a partition's state
    /// must land on that partition.
    pub fn new(settings: &KafkaSettings, partitioner: Partitioner) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer_config(settings)
                .set("partitioner", partitioner.librdkafka_name())
                .set("enable.idempotence", "true")
                .create()?,
            topic: settings.input_topic.clone(),
        })
    }

    /// Sends one record and waits for its acknowledgement, at most `wait`.
    pub async fn publish(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        wait: Duration,
    ) -> Result<(), KafkaError> {
        let mut record = FutureRecord::to(&self.topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Timeout::After(wait))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }
}
