//! The state changelog on Kafka (ARCHITECTURE.md §2, "State that follows
//! its partitions"): every checkpoint's changes are appended to a
//! compacted topic, one partition per input partition, before the local
//! store writes them; a partition assigned to this instance is restored
//! from its log before its first record is scored, from the store's
//! position in it, so a returning partition catches up on what its other
//! holders wrote, and a lost disk is rebuilt from the start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::context::FollowsAssignment;
use super::producer_config;
use crate::config::KafkaSettings;
use crate::state::{
    Change, Changelog, Checkpoint, Family, Position, StateError, change_of_record, record_key,
};
use crate::telemetry::Health;
use crate::telemetry::events::{ChangelogAppended, Event, MirrorCaughtUp, PartitionRestored};

/// How long a restore may see no record before it gives up on an attempt.
const RESTORE_STALL: Duration = Duration::from_secs(60);
/// Changes applied to the store in one write while restoring.
const RESTORE_CHUNK: usize = 10_000;

/// The producer side: [`Changelog::append`] for the checkpoint.
pub struct KafkaChangelog {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaChangelog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaChangelog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaChangelog {
    /// The engine's producer settings (acks=all, one request in flight, so
    /// a key's changes stay in order; a retry's duplicate is harmless, the
    /// values being whole), so an
    /// acknowledged change is on every in-sync replica.
    pub fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer_config(settings).create()?,
            topic: topic.to_owned(),
        })
    }

    fn failed(&self, message: impl std::fmt::Display) -> StateError {
        StateError::Changelog {
            topic: self.topic.clone(),
            message: message.to_string(),
        }
    }
}

impl Changelog for KafkaChangelog {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn append(&self, changes: &[(i32, &Change)]) -> Result<BTreeMap<i32, i64>, StateError> {
        let mut deliveries = Vec::with_capacity(changes.len());
        for (partition, change) in changes {
            let key = record_key(change);
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .partition(*partition)
                .key(&key);
            if let Some(value) = &change.value {
                record = record.payload(value);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    // librdkafka's queue is full: let it drain.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(self.failed(e)),
                }
            }
        }
        // The checkpoint is synchronous (the store's write and fsync are
        // too); librdkafka's own thread completes these futures.
        let acknowledged = futures::executor::block_on(futures::future::join_all(deliveries));
        let mut next = BTreeMap::new();
        for delivery in acknowledged {
            match delivery {
                Ok(Ok(delivered)) => {
                    let end = next.entry(delivered.partition).or_insert(0);
                    *end = (*end).max(delivered.offset + 1);
                }
                Ok(Err((e, _))) => return Err(self.failed(e)),
                Err(_) => return Err(self.failed("the producer was closed")),
            }
        }
        ChangelogAppended {
            records: changes.len(),
        }
        .emit();
        Ok(next)
    }
}

/// Restores assigned partitions from the changelog, and tells the
/// checkpoint which partitions this instance no longer holds.
pub struct StateFollower {
    checkpoint: Arc<Checkpoint>,
    topic: String,
    brokers: String,
    group: String,
    health: Arc<Health>,
    /// `state.standby`: the mirror keeps a whole warm copy of every
    /// partition not held, so that taking one over restores only the tail.
    standby: bool,
    /// The input's (and so the changelog's) partition count.
    partitions: i32,
}

impl StateFollower {
    pub fn new(
        checkpoint: Arc<Checkpoint>,
        settings: &KafkaSettings,
        topic: &str,
        health: Arc<Health>,
        standby: bool,
        partitions: i32,
    ) -> Self {
        Self {
            checkpoint,
            topic: topic.to_owned(),
            brokers: settings.brokers.clone(),
            group: format!("{}-restore", settings.group_id),
            health,
            standby,
            partitions,
        }
    }

    /// Reads `partition`'s log from the store's position (or the start)
    /// to its end, into the store.
    fn restore(&self, partition: i32) -> Result<(), RestoreError> {
        let started = Instant::now();
        let consumer = self.consumer("20", true)?;
        let timeout = Duration::from_secs(30);
        let (low, high) = consumer.fetch_watermarks(&self.topic, partition, timeout)?;
        let from = self
            .checkpoint
            .changelog_position(partition)?
            .unwrap_or(low)
            .max(low);
        let mut restored = PartitionRestored {
            topic: &self.topic,
            partition,
            from,
            to: from,
            records: 0,
            bytes: 0,
            seconds: 0.0,
        };
        if from < high {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&self.topic, partition, Offset::Offset(from))?;
            consumer.assign(&list)?;
            self.read_to_end(&consumer, partition, high, &mut restored)?;
        }
        restored.seconds = started.elapsed().as_secs_f64();
        restored.emit();
        Ok(())
    }

    /// A consumer of the changelog; a restore (`to_end`) is told when it
    /// reaches a partition's end, the mirror tails on.
    fn consumer(&self, fetch_wait_ms: &str, to_end: bool) -> Result<BaseConsumer, KafkaError> {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set(
                "enable.partition.eof",
                if to_end { "true" } else { "false" },
            )
            .set("auto.offset.reset", "earliest")
            // A broker that answers a fetch only when this has passed
            // (Tansu) would otherwise pace a restore at 2 fetches a second.
            .set("fetch.wait.max.ms", fetch_wait_ms)
            .create()
    }

    fn read_to_end(
        &self,
        consumer: &BaseConsumer,
        partition: i32,
        high: i64,
        restored: &mut PartitionRestored<'_>,
    ) -> Result<(), RestoreError> {
        let mut chunk = Vec::new();
        let mut last_record = Instant::now();
        while restored.to < high {
            let message = match consumer.poll(Duration::from_millis(200)) {
                None if last_record.elapsed() > RESTORE_STALL => {
                    return Err(RestoreError::Stalled(restored.to, high));
                }
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(message)) => message,
            };
            last_record = Instant::now();
            restored.to = message.offset() + 1;
            restored.records += 1;
            let (key, payload) = (message.key().unwrap_or_default(), message.payload());
            restored.bytes += (key.len() + payload.map_or(0, <[u8]>::len)) as u64;
            match change_of_record(key, payload) {
                Some(change) => chunk.push(change),
                None => crate::state::quarantined(
                    Family::Offsets,
                    Some(partition),
                    "a changelog record of no known state family",
                ),
            }
            if chunk.len() >= RESTORE_CHUNK {
                let changes = std::mem::take(&mut chunk);
                self.checkpoint
                    .apply_restored(partition, restored.to, changes)?;
            }
        }
        self.checkpoint
            .apply_restored(partition, restored.to, chunk)?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no record for a minute at offset {0} of {1}")]
    Stalled(i64, i64),
}

impl FollowsAssignment for StateFollower {
    /// Restores each newly assigned partition before the consumer hands out
    /// its first record (this runs in the rebalance callback). A restore
    /// that fails is tried again: scoring on missing state would be wrong,
    /// so the instance stays not ready (`/readyz`) until it succeeds.
    fn assigned(&self, _held: &BTreeSet<i32>, added: &[i32]) {
        self.checkpoint.hold(added);
        for (done, &partition) in added.iter().enumerate() {
            self.health.set_restoring(added.len() - done);
            let mut attempt = 1;
            while let Err(e) = self.restore(partition) {
                tracing::error!(
                    changelog = %self.topic,
                    partition,
                    attempt,
                    error = %e,
                    "cannot restore the partition's state; trying again"
                );
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        if let Err(e) = self.checkpoint.restored(added) {
            tracing::error!(error = %e, "cannot read the restored partitions' offsets");
        }
        self.wait_for_mirror();
        self.health.set_restoring(0);
    }

    fn revoked(&self, _held: &BTreeSet<i32>, removed: &[i32]) {
        self.checkpoint.revoke(removed);
    }
}

/// Which changes of partitions this instance does not hold it keeps a copy
/// of: the window keys read across partitions (`Windows::is_spread_key`);
/// a standby keeps them all.
pub type Mirrored = Arc<dyn Fn(&Change) -> bool + Send + Sync>;

impl StateFollower {
    /// Until `stop`: tails the changelog of every partition this instance
    /// does not hold, and writes the [`Mirrored`] keys among its changes to
    /// the store, so that features summed over partitions see what the
    /// other instances folded. (Kafka Streams' global tables work so.) Runs
    /// on a thread of its own; a partition assigned meanwhile is left to
    /// its restore.
    pub fn mirror(&self, wanted: &Mirrored, stop: &tokio_util::sync::CancellationToken) {
        let mut attempt = 0;
        while !stop.is_cancelled() {
            match self.mirror_until(wanted, stop) {
                Ok(()) => return,
                Err(e) => {
                    attempt += 1;
                    tracing::error!(changelog = %self.topic, attempt, error = %e, "the changelog mirror failed; starting it again");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn mirror_until(
        &self,
        wanted: &Mirrored,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), RestoreError> {
        let consumer = self.consumer("100", false)?;
        let mut reading: BTreeSet<i32> = BTreeSet::new();
        let mut unwritten: BTreeMap<i32, (i64, Vec<Change>)> = BTreeMap::new();
        let mut written_at = Instant::now();
        while !stop.is_cancelled() {
            let wanted_partitions = self.not_held();
            if wanted_partitions != reading {
                self.write_mirrored(&mut unwritten)?;
                let mut list = TopicPartitionList::new();
                for &partition in &wanted_partitions {
                    let offset = match self.checkpoint.mirrored_until(partition)? {
                        Some(next) => Offset::Offset(next),
                        None => Offset::Beginning,
                    };
                    list.add_partition_offset(&self.topic, partition, offset)?;
                }
                consumer.assign(&list)?;
                reading = wanted_partitions;
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if reading.contains(&message.partition()) => {
                    let entry = unwritten.entry(message.partition()).or_default();
                    entry.0 = message.offset() + 1;
                    if let Some(change) =
                        change_of_record(message.key().unwrap_or_default(), message.payload())
                        && (self.standby || wanted(&change))
                    {
                        entry.1.push(change);
                    }
                }
                Some(Ok(_)) | None | Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(e.into()),
            }
            let full = unwritten.values().any(|(_, c)| c.len() >= RESTORE_CHUNK);
            if full || written_at.elapsed() >= Duration::from_millis(100) {
                self.write_mirrored(&mut unwritten)?;
                written_at = Instant::now();
            }
        }
        self.write_mirrored(&mut unwritten)?;
        Ok(())
    }

    fn not_held(&self) -> BTreeSet<i32> {
        (0..self.partitions)
            .filter(|p| !self.checkpoint.holds(*p))
            .collect()
    }

    /// Before an assignment's first record is scored: waits until the
    /// mirror has copied every partition not held up to the end its log
    /// has now, as Kafka Streams bootstraps a global table before it
    /// processes. Without this, an instance that had just started scored
    /// its first records with the other partitions' tiles still on their
    /// way (a terminal's counts short). A mirror that stops moving for
    /// `RESTORE_STALL` is reported and no longer waited for: it keeps
    /// trying, and the stream goes on.
    fn wait_for_mirror(&self) {
        let started = Instant::now();
        let ends = match self.ends_of(&self.not_held()) {
            Ok(ends) => ends,
            Err(e) => {
                tracing::error!(changelog = %self.topic, error = %e, "cannot read the changelog's ends; not waiting for the mirror");
                return;
            }
        };
        let mut behind_at_start = None;
        let mut last_behind = None;
        let mut moved = Instant::now();
        loop {
            let behind = match self.records_behind(&ends) {
                Ok(behind) => behind,
                Err(e) => {
                    tracing::error!(changelog = %self.topic, error = %e, "cannot read the mirror's position; not waiting for it");
                    return;
                }
            };
            let behind_at_start = *behind_at_start.get_or_insert(behind);
            if behind == 0 {
                MirrorCaughtUp {
                    topic: &self.topic,
                    partitions: ends.len(),
                    records: behind_at_start,
                    seconds: started.elapsed().as_secs_f64(),
                }
                .emit();
                return;
            }
            if last_behind != Some(behind) {
                last_behind = Some(behind);
                moved = Instant::now();
            } else if moved.elapsed() > RESTORE_STALL {
                tracing::error!(
                    changelog = %self.topic,
                    behind,
                    "the changelog mirror has not moved for a minute; scoring goes on, and \
                     features summed over partitions may miss what other instances folded \
                     until it catches up"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Each partition's end (next offset) in the changelog now.
    fn ends_of(&self, partitions: &BTreeSet<i32>) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let consumer = self.consumer("20", true)?;
        let timeout = Duration::from_secs(30);
        partitions
            .iter()
            .map(|&p| Ok((p, consumer.fetch_watermarks(&self.topic, p, timeout)?.1)))
            .collect()
    }

    /// How many records the mirror has yet to copy to reach `ends`; a
    /// partition held meanwhile is its restore's, not the mirror's.
    fn records_behind(&self, ends: &BTreeMap<i32, i64>) -> Result<i64, StateError> {
        let mut behind = 0;
        for (&partition, &end) in ends {
            if self.checkpoint.holds(partition) {
                continue;
            }
            let copied = self.checkpoint.mirrored_until(partition)?.unwrap_or(0);
            behind += (end - copied).max(0);
        }
        Ok(behind)
    }

    /// A standby copies every change, so it moves the restore's position;
    /// otherwise the mirror keeps its own.
    fn mirrored_position(&self) -> Position {
        match self.standby {
            true => Position::Restore,
            false => Position::Mirror,
        }
    }

    fn write_mirrored(
        &self,
        unwritten: &mut BTreeMap<i32, (i64, Vec<Change>)>,
    ) -> Result<(), StateError> {
        for (partition, (next, changes)) in std::mem::take(unwritten) {
            self.checkpoint
                .apply_mirrored(self.mirrored_position(), partition, next, changes)?;
        }
        Ok(())
    }
}
