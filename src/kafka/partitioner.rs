//! The partition a Kafka producer gives a keyed record, so that the request
//! API can tell which partition, and so which instance, holds a key's state
//! before the record is ever produced (README "Scoring at authorisation
//! time"). Producers disagree: librdkafka hashes with CRC-32, the Java
//! client with murmur2; `serve.partitioner` says which the input's
//! producers use.

use crate::config::Partitioner;

/// The partition of `key` among `partitions`, as the producer computes it.
pub fn partition_for_key(partitioner: Partitioner, key: &[u8], partitions: i32) -> i32 {
    let partitions = partitions.max(1) as u32;
    let hash = match partitioner {
        // librdkafka's `consistent`: crc32(key) % partitions.
        Partitioner::Consistent => crc32fast::hash(key),
        // Kafka's `Utils.toPositive(Utils.murmur2(key)) % partitions`.
        Partitioner::Murmur2 => murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff,
    };
    (hash % partitions) as i32
}
