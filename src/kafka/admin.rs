//! Topic creation (for the demo and tests against a fresh broker, and the
//! state changelog) and what the instance asks of the cluster at start.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;

/// Creates each topic that does not exist yet.
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> KafkaResult<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::error!(topic, error = %code, "cannot create topic");
                return Err(rdkafka::error::KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Why the changelog topic cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogTopicError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot create the changelog topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(
        "the changelog topic {topic} has cleanup.policy={policy}; it must be compacted \
         (cleanup.policy=compact), or old values of every key are kept for ever"
    )]
    NotCompacted { topic: String, policy: String },
}

/// Creates the state changelog compacted (`cleanup.policy=compact`), with
/// `partitions` partitions, when it is missing (`exists` false); an
/// existing one is checked and refused when not compacted. (Its partition
/// count is checked by the caller, with the other topics'.)
pub async fn prepare_changelog(
    brokers: &str,
    topic: &str,
    partitions: i32,
    exists: bool,
) -> Result<(), ChangelogTopicError> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    if !exists {
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact");
        match admin.create_topics(&[new_topic], &options).await?.pop() {
            Some(Ok(_)) => {
                tracing::info!(topic, partitions, "changelog topic created, compacted");
                return Ok(());
            }
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => {}
            Some(Err((_, code))) => {
                return Err(ChangelogTopicError::Create {
                    topic: topic.to_owned(),
                    code,
                });
            }
        }
    }
    // A broker that cannot say (librdkafka's mock cluster) leaves the
    // policy unchecked, with a WARN.
    let described = match admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await
    {
        Ok(described) => described,
        Err(e) => {
            tracing::warn!(topic, error = %e, "cannot read the changelog's cleanup.policy; not checked");
            return Ok(());
        }
    };
    let policy = described
        .into_iter()
        .flatten()
        .flat_map(|resource| resource.entries)
        .find(|entry| entry.name == "cleanup.policy")
        .and_then(|entry| entry.value);
    match policy {
        Some(policy) if !policy.contains("compact") => Err(ChangelogTopicError::NotCompacted {
            topic: topic.to_owned(),
            policy,
        }),
        Some(_) => Ok(()),
        None => {
            tracing::warn!(
                topic,
                "the broker does not say the changelog's cleanup.policy; not checked"
            );
            Ok(())
        }
    }
}

/// One client for what the instance asks of the cluster at start: which
/// topics exist, and where partitions end.
pub struct ClusterView {
    client: rdkafka::consumer::BaseConsumer,
    timeout: Duration,
}

impl ClusterView {
    pub fn connect(brokers: &str, timeout: Duration) -> KafkaResult<Self> {
        Ok(Self {
            client: ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .create()?,
            timeout,
        })
    }

    /// Of `wanted`, the topics the cluster does not have. All topics'
    /// metadata is asked for at once: asking for one by name can create it
    /// on a broker that auto-creates topics, and then it would never be
    /// missing.
    pub fn missing_topics(&self, wanted: &[&str]) -> KafkaResult<Vec<String>> {
        use rdkafka::consumer::Consumer;
        let metadata = self.client.fetch_metadata(None, self.timeout)?;
        let present: Vec<&str> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name())
            .collect();
        let mut missing: Vec<String> = wanted
            .iter()
            .filter(|t| !present.contains(t))
            .map(|t| (*t).to_owned())
            .collect();
        missing.dedup();
        Ok(missing)
    }

    /// How many partitions `topic` has (`None`: it does not exist).
    pub fn partition_count(&self, topic: &str) -> KafkaResult<Option<usize>> {
        use rdkafka::consumer::Consumer;
        let metadata = self.client.fetch_metadata(None, self.timeout)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len()))
    }

    /// Per partition of `topic` in `partitions`, its end offset (the next
    /// offset it will give a record); partitions it lacks are left out.
    pub fn end_offsets(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
    ) -> KafkaResult<Vec<(i32, i64)>> {
        use rdkafka::consumer::Consumer;
        let mut ends = Vec::new();
        for partition in partitions {
            match self.client.fetch_watermarks(topic, partition, self.timeout) {
                Ok((_, high)) => ends.push((partition, high)),
                Err(e)
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::UnknownPartition
                                | RDKafkaErrorCode::UnknownTopicOrPartition
                        )
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ends)
    }
}
