//! At-least-once delivery against a real broker, through the real binary.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::Message;
use streamscore::output::headers;

use crate::support::*;

const VALID: usize = 10_000;
/// The example pipeline's dead_letter.max_payload_bytes (the default).
const DEAD_LETTER_PAYLOAD_BYTES: usize = 65_536;

/// One record per decode error class, with the kind it must be filed under.
fn malformed() -> Vec<(Option<Vec<u8>>, &'static str)> {
    vec![
        (Some(Vec::new()), "empty"),
        (None, "empty"),
        (Some(format!(r#"{{"event_id":"big","pad":"{}"}}"#, "x".repeat(70_000)).into_bytes()), "oversized"),
        (Some(b"{\"event_id\":\"\xc3\x28\"}".to_vec()), "not_utf8"),
        (Some(b"{\"event_id\": \"cut".to_vec()), "not_json"),
        (Some(b"[1, 2, 3]".to_vec()), "not_an_object"),
        (
            Some(br#"{"event_id":"m1","card_id":"c","terminal_id":"t","event_time":"2026-05-01T10:00:00Z"}"#.to_vec()),
            "missing_field",
        ),
        (
            Some(br#"{"event_id":"w1","card_id":"c","terminal_id":"t","amount":"ten","event_time":"2026-05-01T10:00:00Z"}"#.to_vec()),
            "wrong_type",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_valid_event_gets_one_score_and_every_bad_one_a_dead_letter() {
    let topics = Topics::create(3).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = topics.write_pipeline(dir.path(), 1000);

    let mut records = valid_events(VALID);
    let bad = malformed();
    let mut bad_at = Vec::new();
    for (i, (payload, _)) in bad.iter().enumerate() {
        let at = (i + 1) * records.len() / (bad.len() + 1);
        records.insert(at, (Some(b"bad".to_vec()), payload.clone()));
        bad_at.push(at);
    }
    let landed = produce(&topics.input, &records).await;
    let bad_offsets: HashSet<(i32, i64)> = bad_at.iter().map(|&i| landed[i]).collect();
    let valid_offsets: HashSet<(i32, i64)> = landed
        .iter()
        .copied()
        .filter(|o| !bad_offsets.contains(o))
        .collect();
    assert_eq!(valid_offsets.len(), VALID);

    let mut child = spawn_run(&pipeline, dir.path(), "run");
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    let mut dead = TopicReader::new(&topics.dead_letters, topics.partitions);
    let all_scored = scores.read_until(Duration::from_secs(120), |m| {
        scored_offsets(m).len() >= VALID
    });
    assert!(
        all_scored,
        "not every offset was scored; log:\n{}",
        log_of(dir.path(), "run")
    );
    let all_dead = dead.read_until(Duration::from_secs(30), |m| m.len() >= bad.len());
    assert!(all_dead, "not every bad record was dead-lettered");
    stop_cleanly(&mut child, dir.path(), "run");
    scores.poll_for(Duration::from_secs(1));
    dead.poll_for(Duration::from_secs(1));

    let scored = scored_offsets(&scores.messages);
    assert_eq!(
        scored.keys().copied().collect::<HashSet<_>>(),
        valid_offsets
    );
    assert!(
        scored.values().all(|&n| n == 1),
        "a valid offset was scored twice"
    );
    let first: serde_json::Value =
        serde_json::from_slice(scores.messages[0].payload().unwrap()).unwrap();
    for field in [
        "event_id",
        "score",
        "decision",
        "model_name",
        "model_version",
        "reasons",
        "scored_at",
    ] {
        assert!(first.get(field).is_some(), "score lacks `{field}`: {first}");
    }
    assert_eq!(first["topic"], topics.input.as_str());

    assert_eq!(dead.messages.len(), bad.len());
    for message in &dead.messages {
        let offset: i64 = parsed_header(message, headers::SOURCE_OFFSET);
        let partition: i32 = parsed_header(message, headers::SOURCE_PARTITION);
        let index = landed
            .iter()
            .position(|&o| o == (partition, offset))
            .unwrap();
        let expected_kind = bad[bad_at.iter().position(|&i| i == index).unwrap()].1;
        assert_eq!(
            header(message, headers::ERROR_KIND).as_deref(),
            Some(expected_kind)
        );
        assert_eq!(
            header(message, headers::SOURCE_TOPIC).as_deref(),
            Some(topics.input.as_str())
        );
        assert!(!header(message, headers::ERROR_MESSAGE).unwrap().is_empty());
        // The oversized record's payload is cut to what a dead letter carries.
        let sent = records[index].1.as_deref().unwrap_or_default();
        let kept = &sent[..sent.len().min(DEAD_LETTER_PAYLOAD_BYTES)];
        assert_eq!(
            message.payload().unwrap_or_default(),
            kept,
            "payload changed"
        );
        assert_eq!(
            header(message, headers::PAYLOAD_TRUNCATED).is_some(),
            kept.len() < sent.len()
        );
        assert_eq!(message.key(), Some(b"bad".as_slice()));
    }
}

/// Starts the binary on 10k events, stops it with `stop` once some scores
/// are out, restarts it, and returns per-offset score counts once every
/// input offset has one.
async fn interrupt_and_restart(
    stop: impl Fn(&mut std::process::Child, &std::path::Path),
) -> (
    std::collections::HashMap<(i32, i64), usize>,
    HashSet<(i32, i64)>,
    usize,
) {
    let topics = Topics::create(3).await;
    let dir = tempfile::tempdir().unwrap();
    // Small batches make the stream long enough to interrupt in the middle.
    let pipeline = topics.write_pipeline(dir.path(), 25);
    let landed: HashSet<(i32, i64)> = produce(&topics.input, &valid_events(VALID))
        .await
        .into_iter()
        .collect();

    let mut first = spawn_run(&pipeline, dir.path(), "first");
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    let started = scores.read_until(Duration::from_secs(120), |m| m.len() >= 1_000);
    assert!(started, "no scores; log:\n{}", log_of(dir.path(), "first"));
    stop(&mut first, dir.path());
    let at_stop = scored_offsets(&scores.messages).len();

    let mut second = spawn_run(&pipeline, dir.path(), "second");
    let complete = scores.read_until(Duration::from_secs(60), |m| {
        scored_offsets(m).len() >= landed.len()
    });
    if !complete {
        let scored = scored_offsets(&scores.messages);
        let mut missing: Vec<_> = landed.iter().filter(|o| !scored.contains_key(o)).collect();
        missing.sort();
        panic!(
            "{} input offsets never scored, first {:?}; second log tail:\n{}",
            missing.len(),
            &missing[..missing.len().min(20)],
            log_of(dir.path(), "second")
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    stop_cleanly(&mut second, dir.path(), "second");
    scores.poll_for(Duration::from_secs(1));
    (scored_offsets(&scores.messages), landed, at_stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_nine_mid_stream_then_restart_loses_no_offset() {
    let (scored, landed, at_kill) = interrupt_and_restart(|child, _| {
        child.kill().expect("SIGKILL is sent");
        child.wait().expect("the child is reaped");
    })
    .await;
    assert!(
        at_kill < VALID,
        "the kill came after the stream ended ({at_kill} scored)"
    );
    let scored_set: HashSet<_> = scored.keys().copied().collect();
    assert_eq!(scored_set, landed, "some input offsets have no score");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_then_restart_scores_each_offset_once() {
    let (scored, landed, at_stop) =
        interrupt_and_restart(|child, dir| stop_cleanly(child, dir, "first")).await;
    assert!(
        at_stop < VALID,
        "the stop came after the stream ended ({at_stop} scored)"
    );
    assert_eq!(scored.keys().copied().collect::<HashSet<_>>(), landed);
    let duplicates = scored.values().filter(|&&n| n > 1).count();
    assert_eq!(duplicates, 0, "offsets scored twice after a clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_in_one_group_share_the_partitions_and_score_everything() {
    let topics = Topics::create(4).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = topics.write_pipeline(dir.path(), 50);
    let mut first = spawn_instance(&pipeline, dir.path(), "first");
    let mut second = spawn_instance(&pipeline, dir.path(), "second");
    // Produce only once both have joined, so that neither scores it all alone.
    let both_assigned = || {
        ["first", "second"]
            .iter()
            .all(|name| log_of(dir.path(), name).contains("partitions assigned partitions=in-"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !both_assigned() {
        assert!(
            std::time::Instant::now() < deadline,
            "the group never gave both instances partitions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let landed: HashSet<(i32, i64)> = produce(&topics.input, &valid_events(VALID))
        .await
        .into_iter()
        .collect();

    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    let complete = scores.read_until(Duration::from_secs(120), |m| {
        scored_offsets(m).len() >= landed.len()
    });
    stop_cleanly(&mut first, dir.path(), "first");
    stop_cleanly(&mut second, dir.path(), "second");
    assert!(complete, "not every offset was scored");
    let per_instance: Vec<usize> = ["first", "second"]
        .iter()
        .map(|name| log_of(dir.path(), name).matches("batch delivered").count())
        .collect();
    assert!(
        per_instance.iter().all(|&n| n > 0),
        "one instance did no work: {per_instance:?}"
    );
}
