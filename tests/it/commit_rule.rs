//! The commit rule at unit level, on librdkafka's mock cluster (the real
//! broker tests are in delivery.rs): when outputs are not acknowledged, the
//! batch's offsets are not committed, so a restart re-reads it.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use streamscore::engine::Engine;
use streamscore::kafka::{sink::KafkaSink, source::KafkaSource};
use streamscore::telemetry::Stats;
use tokio_util::sync::CancellationToken;

use crate::support::{KeyedPayload, example_pipeline};

#[tokio::test(flavor = "multi_thread")]
async fn unacknowledged_scores_leave_the_offsets_uncommitted() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = example_pipeline(dir.path(), Some(&brokers));
    for topic in ["transactions", "scores", "transactions-dead-letters"] {
        mock.create_topic(topic, 1, 1).unwrap();
    }
    pipeline.kafka.group_id = "commit-rule".into();

    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let events: Vec<KeyedPayload> = crate::support::valid_events(50);
    for (key, payload) in &events {
        let record = rdkafka::producer::FutureRecord::<[u8], [u8]>::to("transactions")
            .key(key.as_deref().unwrap())
            .payload(payload.as_deref().unwrap());
        producer.send(record, Duration::from_secs(5)).await.unwrap();
    }
    // From now on the broker refuses every produce as too large: an error
    // neither librdkafka nor streamscore re-sends as it is.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 500],
    );

    let engine = Engine::for_pipeline(&pipeline).await.unwrap();
    let context = streamscore::kafka::context::SourceContext {
        health: Default::default(),
        stats: Default::default(),
        assignment: Default::default(),
        followers: Vec::new(),
    };
    let source = KafkaSource::new(&pipeline.kafka, pipeline.batch, context).unwrap();
    let sink = KafkaSink::new(&pipeline.kafka, pipeline.batch.dead_letter_payload_bytes).unwrap();
    let stats = Stats::default();
    let stop = CancellationToken::new();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        streamscore::pipeline::run(&source, &engine, &sink, &stats, &stop),
    )
    .await
    .expect("the pipeline gives up instead of hanging");
    // Each score is refused as too large, so its input is dead-lettered
    // instead; that is refused too, so it is sent bare; and when even that is
    // refused the batch fails, uncommitted.
    let err = result.expect_err("delivery cannot succeed");
    assert!(
        err.to_string()
            .contains("refuses even a dead letter without key or payload"),
        "{err}"
    );
    assert_eq!(
        stats.snapshot().batches,
        0,
        "a batch was counted as delivered"
    );
    drop(source);

    let checker: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "commit-rule")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition("transactions", 0);
    let committed = checker
        .committed_offsets(partitions, Duration::from_secs(10))
        .unwrap();
    let offset = committed
        .find_partition("transactions", 0)
        .unwrap()
        .offset();
    assert_eq!(
        offset,
        Offset::Invalid,
        "offsets were committed without acks"
    );
}
