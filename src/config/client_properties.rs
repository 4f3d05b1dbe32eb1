//! Which librdkafka properties the pipeline file may pass through.
//!
//! Most properties pass through as written. A few would quietly void
//! at-least-once delivery or the order of scores within a partition, so
//! streamscore owns them: it sets them itself, and a pipeline file that sets
//! them to anything unsafe is refused at start with the key named.

use std::collections::BTreeMap;

/// A property the pipeline file may not set as it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub key: String,
    pub why: String,
}

/// The producer's own default for `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Consumer properties. streamscore sets the brokers and the group, stores
/// offsets itself only after a batch's outputs are acknowledged, and relies
/// on the periodic auto-commit to make the stored offsets durable.
pub fn check_consumer(properties: &BTreeMap<String, String>) -> Result<(), Refused> {
    for (key, value) in properties {
        let why = match key.as_str() {
            "bootstrap.servers" | "metadata.broker.list" => {
                "streamscore sets it from kafka.brokers (or --brokers)"
            }
            "group.id" => "streamscore sets it from kafka.group_id",
            "enable.auto.offset.store" => {
                "streamscore stores offsets itself, only after a batch's outputs are acknowledged"
            }
            "enable.auto.commit" | "auto.commit.enable" if is_false(value) => {
                "without the periodic commit the stored offsets would be committed only at a clean \
                 stop; leave it unset (true)"
            }
            _ => continue,
        };
        return Err(refused(key, why));
    }
    Ok(())
}

/// Producer properties. Every output must be acknowledged by all in-sync
/// replicas before its input offset is stored (acks=all, retries on), and
/// librdkafka's retries must not reorder one partition's scores: one
/// request in flight, or up to 5 with the idempotent producer.
pub fn check_producer(properties: &BTreeMap<String, String>) -> Result<(), Refused> {
    let idempotent = properties
        .get("enable.idempotence")
        .is_some_and(|v| matches!(v.trim(), "true" | "1"));
    let most_in_flight = if idempotent { 5 } else { 1 };
    for (key, value) in properties {
        let why = match key.as_str() {
            "bootstrap.servers" | "metadata.broker.list" => {
                "streamscore sets it from kafka.brokers (or --brokers)"
            }
            "acks" | "request.required.acks" if !matches!(value.trim(), "all" | "-1") => {
                "only acks=all (-1) makes an acknowledged score durable; streamscore sets it"
            }
            "max.in.flight.requests.per.connection" | "max.in.flight"
                if !value
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|n| (1..=most_in_flight).contains(&n)) =>
            {
                if idempotent {
                    "the idempotent producer keeps order only with 1 to 5 requests in flight"
                } else {
                    "with more than one request in flight a retry would reorder a partition's \
                     scores; set enable.idempotence = true for up to 5"
                }
            }
            "retries" | "message.send.max.retries"
                if !value.trim().parse::<u64>().is_ok_and(|n| n >= 1) =>
            {
                "a transient broker error would fail the batch at once; leave it unset"
            }
            "transactional.id" => {
                "streamscore does not use Kafka transactions (at-least-once, not exactly-once)"
            }
            _ => continue,
        };
        return Err(refused(key, why));
    }
    Ok(())
}

/// The largest message the producer will send.
pub fn message_max_bytes(producer: &BTreeMap<String, String>) -> Result<usize, Refused> {
    match producer.get("message.max.bytes") {
        None => Ok(DEFAULT_MESSAGE_MAX_BYTES),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| refused("message.max.bytes", "must be a number of bytes")),
    }
}

fn is_false(value: &str) -> bool {
    matches!(value.trim(), "false" | "0")
}

fn refused(key: &str, why: &str) -> Refused {
    Refused {
        key: key.to_owned(),
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_that_void_delivery_are_refused_and_safe_ones_pass() {
        let refused_producer = [
            ("acks", "1"),
            ("acks", "0"),
            ("request.required.acks", "1"),
            ("max.in.flight.requests.per.connection", "2"),
            ("max.in.flight", "100"),
            ("retries", "0"),
            ("transactional.id", "t"),
            ("bootstrap.servers", "x:9092"),
        ];
        for (key, value) in refused_producer {
            let err = check_producer(&properties(&[(key, value)])).unwrap_err();
            assert_eq!(err.key, key);
        }
        let fine = properties(&[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("linger.ms", "20"),
            ("compression.type", "lz4"),
        ]);
        assert_eq!(check_producer(&fine), Ok(()));
        let idempotent_beyond_five = properties(&[
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "6"),
        ]);
        assert!(check_producer(&idempotent_beyond_five).is_err());
        let not_idempotent = properties(&[
            ("enable.idempotence", "false"),
            ("max.in.flight.requests.per.connection", "1"),
        ]);
        assert_eq!(check_producer(&not_idempotent), Ok(()));

        for (key, value) in [
            ("enable.auto.commit", "false"),
            ("auto.commit.enable", "0"),
            ("enable.auto.offset.store", "true"),
            ("group.id", "g"),
        ] {
            let err = check_consumer(&properties(&[(key, value)])).unwrap_err();
            assert_eq!(err.key, key);
        }
        let fine = properties(&[
            ("enable.auto.commit", "true"),
            ("session.timeout.ms", "6000"),
        ]);
        assert_eq!(check_consumer(&fine), Ok(()));
    }
}
