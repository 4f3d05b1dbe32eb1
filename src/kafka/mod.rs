//! The Kafka side: client settings, the consumer-group source, the producer
//! sink and topic administration.

pub mod admin;
pub mod changelog;
pub mod clients;
pub mod context;
mod fault;
pub mod partitioner;
pub mod publish;
mod side;
pub mod sink;
pub mod source;

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Consumer lag and the producer's queue come from these statistics,
        // and which partitions still have records to read (drift waits for
        // those, `batch::Assignment::backlogged`): every second, so that a
        // backlog is seen before a short one is over.
        .set("statistics.interval.ms", "1000");
    config
}

/// The pipeline file's properties are applied over these; the ones that
/// would void at-least-once were refused when the file was loaded
/// (`config::client_properties`).
pub fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = base_config(&settings.brokers);
    config
        .set("group.id", &settings.group_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        // Offsets are stored by hand once a batch's outputs are acknowledged.
        .set("enable.auto.offset.store", "false");
    for (key, value) in &settings.consumer {
        config.set(key, value);
    }
    config
}

pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = base_config(&settings.brokers);
    config
        .set("linger.ms", "5")
        .set("acks", "all")
        // One request in flight per broker: a retried request is answered
        // before the next is sent, so retries never reorder a partition.
        // Not idempotent: librdkafka 2.12's idempotent producer polls its
        // broker thread with a zero timeout while a request of five or more
        // messages is in flight, which cost more CPU than the rest of the
        // engine (bench/RESULTS.md, "whose broker thread is hot"). A retry
        // may then write a record twice, as a restart may re-send one:
        // at-least-once. `enable.idempotence = true` in the pipeline file
        // takes the trade back (and allows up to 5 requests in flight).
        .set("enable.idempotence", "false")
        .set("max.in.flight.requests.per.connection", "1")
        // librdkafka's default is 5 minutes; a stuck broker should surface
        // (and be retried by the sink) well before an operator gives up.
        .set("message.timeout.ms", "30000")
        // A missing topic must fail as "unknown topic" (the sink holds the
        // batch until an operator creates it) before the message times out
        // (which the sink would take for a passing fault): librdkafka's
        // default of 30 s equals the timeout above, and the timeout won.
        .set("topic.metadata.propagation.max.ms", "10000");
    for (key, value) in &settings.producer {
        config.set(key, value);
    }
    config
}
