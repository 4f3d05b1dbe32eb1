//! Clients for the tools around the engine (the demo, the simulator, the
//! bench), built here so that every Kafka client of the project is made in
//! `kafka/` (ARCHITECTURE.md §4). The engine's own clients are built from
//! the pipeline's settings (`consumer_config`, `producer_config`).

use rdkafka::ClientConfig;
use rdkafka::config::FromClientConfig;
use rdkafka::error::KafkaResult;

/// A client's settings, from one of the tools' starting points.
pub struct ClientBuilder {
    config: ClientConfig,
}

impl ClientBuilder {
    /// A producer that batches for up to 5 ms and is idempotent (acks=all),
    /// so a retried send neither duplicates nor reorders a partition.
    pub fn producer(brokers: &str) -> Self {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true");
        Self { config }
    }

    /// A consumer in its own group that reads from the start and commits
    /// nothing: for reading a topic back, not for processing it.
    pub fn reader(brokers: &str, group: &str) -> Self {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        Self { config }
    }

    /// Sets one more librdkafka property.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.config.set(key, value);
        self
    }

    pub fn create<C: FromClientConfig>(self) -> KafkaResult<C> {
        self.config.create()
    }
}
