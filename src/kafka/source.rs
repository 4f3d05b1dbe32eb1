//! The consumer-group member: messages in, micro-batches out, offsets stored
//! only when the pipeline says a batch is delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::{FollowsAssignment, SourceContext};
use crate::batch::{Batch, SourceRecord};
use crate::config::{BatchSettings, KafkaSettings};

pub struct KafkaSource {
    consumer: StreamConsumer<SourceContext>,
    topic: String,
    batch: BatchSettings,
}

impl KafkaSource {
    pub fn new(
        settings: &KafkaSettings,
        batch: BatchSettings,
        context: SourceContext,
    ) -> KafkaResult<Self> {
        let consumer: StreamConsumer<SourceContext> =
            super::consumer_config(settings).create_with_context(context)?;
        consumer.subscribe(&[&settings.input_topic])?;
        Ok(Self {
            consumer,
            topic: settings.input_topic.clone(),
            batch,
        })
    }

    /// A consumer that joins no group: it reads the partitions it is told
    /// ([`FollowsAssignment`]), from the group's committed offsets. The
    /// labels consumer follows the input's assignment so, so that labels
    /// partition n is folded by whoever holds input partition n
    /// (ARCHITECTURE.md §2).
    pub fn following(
        settings: &KafkaSettings,
        batch: BatchSettings,
        context: SourceContext,
    ) -> KafkaResult<Self> {
        Ok(Self {
            consumer: super::consumer_config(settings).create_with_context(context)?,
            topic: settings.input_topic.clone(),
            batch,
        })
    }

    /// Waits for the first message, then gathers more until the batch is
    /// full (rows or bytes) or has lingered long enough. Returns an empty
    /// batch only once `stop` is cancelled.
    pub async fn next_batch(&self, stop: &CancellationToken) -> Batch {
        let assignment = &self.consumer.context().assignment;
        let mut batch = Batch::new(&self.topic);
        batch.fetched_under = assignment.revocations();
        // One message stream, one wait for the stop and one timer for the
        // whole batch, not one of each per message: `recv` registers and
        // drops a waker slot each call, and a `select!` that builds its
        // futures afresh arms and disarms a timer for every record (a
        // twentieth of the scoring thread in an end-to-end profile;
        // bench/RESULTS.md, session 16).
        let mut messages = self.consumer.stream();
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        // Armed at the first record: the linger runs from there.
        let linger = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(linger);
        let mut lingering = false;
        let mut bytes = 0;
        while batch.len() < self.batch.max_rows && bytes < self.batch.max_bytes {
            let received = tokio::select! {
                biased;
                () = &mut stopped => break,
                () = &mut linger, if lingering => break,
                received = messages.next() => received,
            };
            // A consumer's stream never ends.
            let Some(received) = received else { break };
            match received {
                Ok(message) => {
                    // A rebalance came while gathering (its callback runs
                    // in the poll): what was gathered of the partitions it
                    // revoked is stale, and is fetched again if they come
                    // back (`held_only`).
                    let now = assignment.revocations();
                    if now != batch.fetched_under {
                        let since = assignment.held_since(batch.fetched_under);
                        batch.records.retain(|r| !since.revoked(r.partition));
                        batch.fetched_under = now;
                    }
                    if !lingering {
                        linger.as_mut().reset(Instant::now() + self.batch.linger);
                        lingering = true;
                    }
                    let record = self.detach(&message);
                    bytes += record.payload.as_ref().map_or(0, Vec::len);
                    batch.records.push(record);
                }
                Err(e) => {
                    // Broker and network trouble: librdkafka reconnects by
                    // itself; slow down so the log is not flooded meanwhile.
                    tracing::warn!(error = %e, "consumer error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        batch
    }

    /// Leaves out the records of partitions revoked since they were
    /// fetched: their holder now, this instance again or another, reads
    /// them again from the committed offset and scores them on its state.
    /// Scored here, they would be scored on a state that no longer holds
    /// what this instance staged but did not write (ARCHITECTURE.md §2,
    /// "State that follows its partitions"); and a partition given back
    /// meanwhile would fold them ahead of the records before them, which
    /// are then read again below the checkpoint and never folded.
    pub fn held_only(&self, mut batch: Batch) -> Batch {
        let held = self
            .consumer
            .context()
            .assignment
            .held_since(batch.fetched_under);
        let before = batch.len();
        batch.records.retain(|r| held.holds(r.partition));
        if batch.len() < before {
            tracing::info!(
                topic = %self.topic,
                left = before - batch.len(),
                "records of revoked partitions left to their holder"
            );
        }
        batch
    }

    pub fn batch_settings(&self) -> &BatchSettings {
        &self.batch
    }

    /// Copies a message out of librdkafka's buffer. A payload too large to
    /// decode is copied only as far as its dead letter will carry it: the
    /// size check comes before the copy, so a 100 MB record costs no more
    /// memory than a dead letter.
    fn detach(&self, message: &BorrowedMessage<'_>) -> SourceRecord {
        let payload = message.payload();
        let payload_size = payload.map_or(0, <[u8]>::len);
        let kept = match payload {
            Some(p) if p.len() > self.batch.max_record_bytes => {
                &p[..p.len().min(self.batch.dead_letter_payload_bytes)]
            }
            Some(p) => p,
            None => &[],
        };
        SourceRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: payload.map(|_| kept.to_vec()),
            payload_size,
            timestamp_ms: message.timestamp().to_millis(),
        }
    }

    /// Marks each partition of `topic` processed up to (not including) its
    /// offset in `next`.
    pub fn store_offsets(&self, topic: &str, next: &BTreeMap<i32, i64>) -> KafkaResult<()> {
        let mut offsets = TopicPartitionList::new();
        for (&partition, &next) in next {
            offsets.add_partition_offset(topic, partition, Offset::Offset(next))?;
        }
        match self.consumer.store_offsets(&offsets) {
            // A partition taken away in a rebalance cannot be stored; its new
            // owner re-reads from the last commit: duplicates, never losses.
            Err(KafkaError::StoreOffset(code)) => {
                tracing::warn!(error = %code, "offsets not stored; partitions were revoked");
                Ok(())
            }
            other => other,
        }
    }

    /// Commits the stored offsets and waits for the broker to confirm.
    pub fn commit(&self) -> KafkaResult<()> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(()),
            other => other,
        }
    }
}

impl FollowsAssignment for KafkaSource {
    fn assigned(&self, held: &BTreeSet<i32>, _added: &[i32]) {
        self.read_partitions(held);
    }

    fn revoked(&self, held: &BTreeSet<i32>, _removed: &[i32]) {
        self.read_partitions(held);
    }
}

impl KafkaSource {
    /// Reads exactly `partitions`, each from its committed offset.
    fn read_partitions(&self, partitions: &BTreeSet<i32>) {
        let assignment = &self.consumer.context().assignment;
        let let_go: Vec<i32> = assignment
            .current()
            .unwrap_or_default()
            .difference(partitions)
            .copied()
            .collect();
        let taken: Vec<i32> = partitions.iter().copied().collect();
        assignment.change(&taken, &let_go);
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            list.add_partition(&self.topic, partition);
        }
        // Offsets stored for partitions let go are committed first, so
        // their next reader starts where this one ended.
        if let Err(e) = self.commit() {
            tracing::warn!(topic = %self.topic, error = %e, "cannot commit before reassigning");
        }
        match self.consumer.assign(&list) {
            Ok(()) => tracing::info!(
                topic = %self.topic,
                partitions = ?partitions,
                "following the input's partitions"
            ),
            Err(e) => tracing::error!(topic = %self.topic, error = %e, "cannot assign partitions"),
        }
    }
}
