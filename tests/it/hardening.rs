//! No record, setting or stop halts the stream or weakens its guarantees:
//! poison pills, card numbers in the wrong field, a held topic and the
//! bounded stop, against the real broker through the real binary.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use streamscore::output::headers;

use crate::support::*;

const PAN: &str = "4111111111111111";

/// Before this, a 2 MB record was dead-lettered whole, the producer refused
/// it (MessageSizeTooLarge) five times, the process exited, and a restart
/// read the same batch: the partition never moved again.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_records_are_cut_into_dead_letters_and_the_stream_moves_on() {
    let topics = Topics::create(2).await;
    let dir = tempfile::tempdir().unwrap();
    // Valid events are about 300 bytes: the byte cap, not the row cap,
    // closes these batches.
    let pipeline = topics.write_pipeline(dir.path(), 1000);
    let pipeline_text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("max_rows = 1000", "max_rows = 1000\nmax_bytes = 16384");
    std::fs::write(&pipeline, pipeline_text).unwrap();

    let two_mb = format!(r#"{{"event_id":"big","pad":"{}"}}"#, "x".repeat(2_000_000));
    // Just over the engine producer's message.max.bytes (1,000,000).
    let over_limit = format!(r#"{{"event_id":"over","pad":"{}"}}"#, "y".repeat(1_000_050));
    let card_in_amount = format!(
        r#"{{"event_id":"pan","card_id":"c","terminal_id":"t","amount":"{PAN}","event_time":"2026-05-01T10:00:00Z"}}"#
    );
    let bad: Vec<(&str, &str)> = vec![
        (two_mb.as_str(), "oversized"),
        (over_limit.as_str(), "oversized"),
        (card_in_amount.as_str(), "wrong_type"),
    ];
    let mut records = valid_events(2_000);
    for (i, (payload, _)) in bad.iter().enumerate() {
        let at = (i + 1) * records.len() / (bad.len() + 1);
        records.insert(
            at,
            (Some(b"bad".to_vec()), Some(payload.as_bytes().to_vec())),
        );
    }
    let landed = produce(&topics.input, &records).await;
    let valid: HashSet<(i32, i64)> = landed
        .iter()
        .zip(&records)
        .filter(|(_, (key, _))| key.as_deref() != Some(b"bad".as_slice()))
        .map(|(at, _)| *at)
        .collect();

    let mut run = spawn_run(&pipeline, dir.path(), "first");
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    let mut dead = TopicReader::new(&topics.dead_letters, topics.partitions);
    let all_scored = scores.read_until(Duration::from_secs(120), |m| {
        scored_offsets(m).len() >= valid.len()
    });
    assert!(all_scored, "log:\n{}", log_of(dir.path(), "first"));
    assert!(dead.read_until(Duration::from_secs(30), |m| m.len() >= bad.len()));
    stop_cleanly(&mut run, dir.path(), "first");

    let scored: HashSet<(i32, i64)> = scored_offsets(&scores.messages).into_keys().collect();
    assert_eq!(scored, valid);
    assert_eq!(dead.messages.len(), bad.len());
    for message in &dead.messages {
        let kind = header(message, headers::ERROR_KIND).unwrap();
        let original: usize = parsed_header(message, headers::PAYLOAD_ORIGINAL_BYTES);
        let sent = bad
            .iter()
            .find(|(payload, _)| payload.len() == original)
            .expect("the original size names the record");
        assert_eq!(kind, sent.1);
        let payload = message.payload().unwrap();
        if original > 65_536 {
            assert_eq!(
                payload.len(),
                65_536,
                "cut to dead_letter.max_payload_bytes"
            );
            assert!(sent.0.as_bytes().starts_with(payload));
            assert_eq!(
                header(message, headers::PAYLOAD_TRUNCATED).as_deref(),
                Some("true")
            );
        } else {
            assert_eq!(payload, sent.0.as_bytes(), "a small record is kept whole");
            assert_eq!(header(message, headers::PAYLOAD_TRUNCATED), None);
        }
        for (name, value) in message
            .headers()
            .map(|h| rdkafka::message::Headers::iter(h).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .map(|h| (h.key, h.value.unwrap_or_default()))
        {
            assert!(
                !String::from_utf8_lossy(value).contains(PAN),
                "the card number is in header {name}"
            );
        }
    }
    let log = log_of(dir.path(), "first");
    assert!(!log.contains(PAN), "the card number is in the log");
    let batch_rows: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("batch delivered"))
        .filter_map(|l| l.split("rows=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(!batch_rows.is_empty());
    // A batch closes once its payloads reach the cap, so it holds at most
    // cap / (smallest record) + 1 records.
    let smallest = records
        .iter()
        .filter_map(|(_, payload)| payload.as_ref().map(Vec::len))
        .min()
        .unwrap();
    let most = 16_384 / smallest + 1;
    let largest = batch_rows.iter().max().copied().unwrap_or_default();
    assert!(
        largest <= most,
        "a batch of {largest} rows (at most {most} fit): the byte cap did not close it"
    );

    // Everything was committed, so a restart has nothing stuck to re-read,
    // and new events are scored.
    for (committed, end) in committed_and_end(&topics.group, &topics.input, topics.partitions) {
        assert_eq!(committed, Some(end), "the stream did not commit to the end");
    }
    let more = produce(&topics.input, &valid_events(100)).await;
    let mut second = spawn_run(&pipeline, dir.path(), "second");
    let expected = valid.len() + more.len();
    let caught_up = scores.read_until(Duration::from_secs(60), |m| {
        scored_offsets(m).len() >= expected
    });
    stop_cleanly(&mut second, dir.path(), "second");
    assert!(caught_up, "log:\n{}", log_of(dir.path(), "second"));
    let counts = scored_offsets(&scores.messages);
    assert!(
        counts.values().all(|&n| n == 1),
        "a record was scored twice"
    );
}

/// An instance whose output topic goes missing once it runs (`run`
/// refuses to start without it), so Kafka refuses every score and the sink
/// holds the batch (an operator's fault): a stop cannot drain. On the mock
/// cluster: Tansu cannot lose one topic (its DeleteTopics drops them all).
async fn held_run(
    mock: &MockCluster<'_, DefaultProducerContext>,
    dir: &std::path::Path,
    extra: &str,
) -> (Topics, std::process::Child) {
    let topics = Topics::on_mock(mock, 1);
    // librdkafka waits this long (30 s by default) for a missing topic to
    // appear before it fails the message.
    let producer = "\n[kafka.producer]\n\"topic.metadata.propagation.max.ms\" = \"1000\"\n";
    let pipeline = topics.write_pipeline_with(dir, 50, &format!("{producer}{extra}"));
    let run = spawn_run(&pipeline, dir, "run");
    assert!(
        wait_for_log(dir, "run", "scoring", Duration::from_secs(60)),
        "log:\n{}",
        log_of(dir, "run")
    );
    mock.topic_error(
        &topics.output,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
    )
    .unwrap();
    produce_at(&topics.brokers, &topics.input, &valid_events(50)).await;
    (topics, run)
}

fn wait_until_held(dir: &std::path::Path, name: &str) {
    assert!(
        wait_for_log(
            dir,
            name,
            "Kafka refuses the topic",
            Duration::from_secs(90)
        ),
        "the sink never held the batch; log:\n{}",
        log_of(dir, name)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_exits_at_once_without_committing() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockCluster::new(1).unwrap();
    let (topics, mut run) = held_run(&mock, dir.path(), "").await;
    wait_until_held(dir.path(), "run");

    terminate(&run);
    assert!(wait_for_log(
        dir.path(),
        "run",
        "signal received",
        Duration::from_secs(10)
    ));
    assert!(
        wait_exit(&mut run, Duration::from_millis(500)).is_none(),
        "the first signal should wait for the held batch (up to the drain deadline)"
    );
    terminate(&run);
    let status = wait_exit(&mut run, Duration::from_secs(5)).expect("exits at once");
    assert!(!status.success(), "a second signal must exit non-zero");
    assert!(log_of(dir.path(), "run").contains("a second signal"));
    for (committed, _) in committed_and_end_at(&topics.brokers, &topics.group, &topics.input, 1) {
        assert_eq!(committed, None, "the held batch was committed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_that_cannot_drain_ends_at_the_deadline_without_committing() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockCluster::new(1).unwrap();
    let (topics, mut run) =
        held_run(&mock, dir.path(), "\n[shutdown]\ndrain_timeout_ms = 1500\n").await;
    wait_until_held(dir.path(), "run");

    terminate(&run);
    let status = wait_exit(&mut run, Duration::from_secs(15)).expect("exits at the deadline");
    assert!(
        !status.success(),
        "a stop past its deadline must exit non-zero"
    );
    assert!(
        log_of(dir.path(), "run").contains("shutdown.drain_timeout_ms"),
        "{}",
        log_of(dir.path(), "run")
    );
    for (committed, _) in committed_and_end_at(&topics.brokers, &topics.group, &topics.input, 1) {
        assert_eq!(committed, None, "the held batch was committed");
    }
}
