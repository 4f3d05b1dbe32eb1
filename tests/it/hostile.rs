//! A hostile stream through the example pipeline (window features, labels,
//! drift with its alerts topic) on the real broker, with three restarts,
//! one of them a `kill -9`: no record stops, blinds or corrupts the engine.
//!
//! Tansu keeps a SIGKILLed member for minutes, so each group sees one crash
//! only; the other restarts are SIGTERM.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use streamscore::output::headers;

use crate::support::*;
use crate::windows::{
    batch_features, example_model_inputs, json_lines, keyed_labels, simulated_stream,
    streamed_features, wait_for_labels, with_features_and_commit_lag,
};

/// What a hostile record must come to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Scored,
    Dead(&'static [&'static str]),
    /// Scored, or refused as a value the model cannot use.
    Either,
}

const CARD_IN_CATEGORY: &str = "4111111111111111";

/// Records built to break each part, on cards and terminals of their own
/// (so that the valid events' windows must come out as in a clean run).
fn hostile_records() -> Vec<(String, Expect)> {
    let tx = |id: &str, card: &str, fields: &str| {
        format!(
            r#"{{"event_id":"{id}","card_id":"{card}","terminal_id":"hostile-t","event_time":"2026-04-03T12:00:00Z"{fields}}}"#
        )
    };
    let timed = |id: &str, time: &str| {
        format!(
            r#"{{"event_id":"{id}","card_id":"hostile-time","terminal_id":"hostile-t","amount":5,"event_time":{time}}}"#
        )
    };
    let mut records = vec![
        (
            tx("h-max", "hostile-num", r#","amount":1e308"#),
            Expect::Either,
        ),
        (
            tx("h-min", "hostile-num", r#","amount":-1e308"#),
            Expect::Either,
        ),
        (
            tx("h-sub", "hostile-num", r#","amount":5e-324"#),
            Expect::Scored,
        ),
        (
            tx("h-neg0", "hostile-num", r#","amount":-0.0"#),
            Expect::Scored,
        ),
        (
            tx("h-square", "hostile-num", r#","amount":1e160"#),
            Expect::Either,
        ),
        (
            tx("h-nan", "hostile-num", r#","amount":"NaN""#),
            Expect::Dead(&["wrong_type"]),
        ),
        (
            tx(
                "h-nan-flag",
                "hostile-num",
                r#","amount":3,"is_online":"NaN""#,
            ),
            Expect::Dead(&["wrong_type"]),
        ),
        (
            timed("h-9999", r#""9999-01-01T00:00:00Z""#),
            Expect::Dead(&["event_time_out_of_range"]),
        ),
        (
            timed("h-1970", r#""1970-01-01T00:00:00Z""#),
            Expect::Dead(&["event_time_out_of_range"]),
        ),
        (
            timed("h-digits", r#""99999999999999999999999999""#),
            Expect::Dead(&["wrong_type", "event_time_out_of_range"]),
        ),
        (
            timed("h-big-number", "99999999999999999999999999"),
            Expect::Dead(&["wrong_type", "event_time_out_of_range"]),
        ),
        (
            tx(
                "h-mb",
                "hostile-big",
                &format!(r#","amount":1,"pad":"{}""#, "x".repeat(1 << 20)),
            ),
            Expect::Dead(&["oversized"]),
        ),
        // Deep nesting in a field the schema does not know is skipped
        // (without recursion); in one it knows, it is the wrong type.
        (
            tx(
                "h-deep",
                "hostile-deep",
                &format!(
                    r#","amount":1,"deep":{}1{}"#,
                    "[".repeat(5_000),
                    "]".repeat(5_000)
                ),
            ),
            Expect::Scored,
        ),
        (
            tx(
                "h-deep-known",
                "hostile-deep",
                &format!(r#","amount":{}1{}"#, "[".repeat(5_000), "]".repeat(5_000)),
            ),
            Expect::Dead(&["wrong_type", "not_json"]),
        ),
    ];
    for (i, card) in [
        "\\u0000",
        "😀🂡",
        "\\u202eevil",
        "e\\u0301",
        "\\ud83d\\ude00",
    ]
    .iter()
    .enumerate()
    {
        records.push((
            tx(&format!("h-unicode-{i}"), card, r#","amount":7"#),
            Expect::Scored,
        ));
    }
    records.push((
        tx("h-long-card", &"k".repeat(60_000), r#","amount":7"#),
        Expect::Scored,
    ));
    // 10,000 distinct merchant categories, a card number among them.
    for i in 0..10_000 {
        let category = if i == 0 {
            CARD_IN_CATEGORY.to_owned()
        } else {
            format!("hostile-mcc-{i}")
        };
        records.push((
            tx(
                &format!("h-mcc-{i}"),
                &format!("hostile-mcc-card-{}", i % 100),
                &format!(r#","amount":12,"merchant_category":"{category}""#),
            ),
            Expect::Scored,
        ));
    }
    // One event id, 1,000 times.
    for _ in 0..1_000 {
        records.push((
            tx("h-same", "hostile-same", r#","amount":3"#),
            Expect::Scored,
        ));
    }
    records
}

/// Labels built to confuse the joins: for unknown events, twice, before
/// their event, and dated 9999 (refused).
fn hostile_labels() -> Vec<KeyedPayload> {
    let label = |id: &str, time: &str| {
        Some(
            format!(
                r#"{{"event_id":"{id}","card_id":"hostile-same","terminal_id":"hostile-t","event_time":"{time}","is_fraud":true}}"#
            )
            .into_bytes(),
        )
    };
    vec![
        (None, label("nobody", "2026-04-03T12:00:00Z")),
        (None, label("h-same", "2026-04-03T12:00:00Z")),
        (None, label("h-same", "2026-04-03T12:00:00Z")),
        (None, label("h-unicode-0", "2026-04-03T12:00:00Z")),
        (None, label("h-later", "9999-01-01T00:00:00Z")),
    ]
}

/// Peak resident memory of a process, from /proc, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc status");
    kb * 1024
}

/// Per input offset, the kinds of outputs it got: `scored` or a dead
/// letter's kind.
fn outcomes(scores: &[OwnedMessage], dead: &[OwnedMessage]) -> HashMap<i64, Vec<String>> {
    let mut by_offset: HashMap<i64, Vec<String>> = HashMap::new();
    for ((_, offset), n) in scored_offsets(scores) {
        by_offset
            .entry(offset)
            .or_default()
            .extend(std::iter::repeat_n("scored".to_owned(), n));
    }
    for letter in dead {
        let offset: i64 = parsed_header(letter, headers::SOURCE_OFFSET);
        by_offset
            .entry(offset)
            .or_default()
            .push(header(letter, headers::ERROR_KIND).unwrap());
    }
    by_offset
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_stream_stops_blinds_and_corrupts_nothing_across_three_restarts() {
    // One partition: a terminal's events come from every card, so only
    // then does the stream see all of them, as the clean batch run does.
    let topics = Topics::create(1).await;
    let alerts = unique("alerts");
    streamscore::kafka::admin::ensure_topics(&brokers(), &[&alerts], 1)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let drift = format!(
        "\n[drift]\nevent_time = \"event_time\"\nwindow = \"1d\"\nmin_events = 300\n\
         idle = \"30d\"\nalerts_topic = \"{alerts}\"\n"
    );
    let written = topics.write_pipeline_with(dir.path(), 500, &drift);
    let pipeline = with_features_and_commit_lag(&written);
    let events = simulated_stream();
    assert!(events.len() >= 10_000, "{} valid events", events.len());
    let lines = json_lines(&events);
    let names = example_model_inputs();
    let clean = batch_features(&pipeline, &lines.join(&b'\n'), &names).await;

    // The hostile records spread evenly through the valid ones.
    let hostile = hostile_records();
    let valid_per_hostile = events.len() as f64 / hostile.len() as f64;
    let mut hostile = hostile.into_iter().enumerate().peekable();
    let mut records: Vec<(KeyedPayload, Option<Expect>)> = Vec::new();
    for (i, (t, line)) in events.iter().zip(&lines).enumerate() {
        records.push((
            (Some(t.card_id.clone().into_bytes()), Some(line.clone())),
            None,
        ));
        while let Some((_, (payload, expect))) =
            hostile.next_if(|(h, _)| *h as f64 * valid_per_hostile <= i as f64)
        {
            records.push((
                (Some(b"hostile".to_vec()), Some(payload.into_bytes())),
                Some(expect),
            ));
        }
    }
    let thirds = [records.len() / 3, 2 * records.len() / 3, records.len()];
    let keyed: Vec<KeyedPayload> = records.iter().map(|(k, _)| k.clone()).collect();

    // First instance: the valid labels folded in before the events (as in
    // the windows test), a third of the stream, then SIGTERM.
    let mut first = spawn_run(&written, dir.path(), "first");
    let labels = keyed_labels(&events);
    produce(&topics.labels, &labels).await;
    wait_for_labels(dir.path(), "first", labels.len());
    let mut landed = produce(&topics.input, &keyed[..thirds[0]]).await;
    produce(&topics.labels, &hostile_labels()).await;
    let mut scores = TopicReader::new(&topics.output, 1);
    let mut dead = TopicReader::new(&topics.dead_letters, 1);
    let progressed = |scores: &mut TopicReader, dead: &mut TopicReader, count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            scores.poll_for(Duration::from_millis(100));
            dead.poll_for(Duration::from_millis(100));
            if outcomes(&scores.messages, &dead.messages).len() >= count {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
        }
    };
    assert!(
        progressed(&mut scores, &mut dead, thirds[0]),
        "log:\n{}",
        log_of(dir.path(), "first")
    );
    stop_cleanly(&mut first, dir.path(), "first");

    // Second: the next third, killed with SIGKILL halfway.
    let mut second = spawn_run(&written, dir.path(), "second");
    landed.extend(produce(&topics.input, &keyed[thirds[0]..thirds[1]]).await);
    assert!(
        progressed(&mut scores, &mut dead, (thirds[0] + thirds[1]) / 2),
        "log:\n{}",
        log_of(dir.path(), "second")
    );
    second.kill().unwrap();
    second.wait().unwrap();

    // Third: the rest, to the end; its peak memory; SIGTERM.
    let mut third = spawn_run(&written, dir.path(), "third");
    landed.extend(produce(&topics.input, &keyed[thirds[1]..]).await);
    assert!(
        progressed(&mut scores, &mut dead, records.len()),
        "{} of {} records have an outcome; log:\n{}",
        outcomes(&scores.messages, &dead.messages).len(),
        records.len(),
        log_of(dir.path(), "third")
    );
    let rss = peak_rss(third.id());
    stop_cleanly(&mut third, dir.path(), "third");

    // Fourth: a restart on everything the hostile stream left in the state.
    let mut fourth = spawn_run(&written, dir.path(), "fourth");
    assert!(
        wait_for_log(dir.path(), "fourth", "scoring", Duration::from_secs(60)),
        "log:\n{}",
        log_of(dir.path(), "fourth")
    );
    stop_cleanly(&mut fourth, dir.path(), "fourth");

    // Every record got what it had to: valid and hostile-but-usable ones a
    // score, the rest a dead letter of the right kind; none both.
    let by_offset = outcomes(&scores.messages, &dead.messages);
    let mut wrong = Vec::new();
    for ((_, offset), ((_, payload), expect)) in landed.iter().zip(&records) {
        let got = by_offset.get(offset).cloned().unwrap_or_default();
        let scored = !got.is_empty() && got.iter().all(|k| k == "scored");
        let dead_as =
            |kinds: &[&str]| !got.is_empty() && got.iter().all(|k| kinds.contains(&k.as_str()));
        let fine = match expect {
            None | Some(Expect::Scored) => scored,
            Some(Expect::Dead(kinds)) => dead_as(kinds),
            Some(Expect::Either) => scored || dead_as(&["invalid_feature", "non_finite_score"]),
        };
        if !fine {
            let shown = String::from_utf8_lossy(payload.as_deref().unwrap_or_default());
            wrong.push((*offset, got, shown.chars().take(160).collect::<String>()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} records came out wrong: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );

    // The valid events' window features equal a clean run's, event for
    // event: nothing hostile reached their cards' and terminals' state.
    let streamed = streamed_features(&scores.messages, &names);
    let differing: Vec<_> = clean
        .iter()
        .filter(|(id, values)| streamed.get(*id) != Some(values))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} valid events differ from the clean run, e.g. {:?}",
        differing.len(),
        clean.len(),
        differing.first()
    );
    eprintln!(
        "hostile stream: {} records, {} scores, {} dead letters, peak RSS {} MB",
        records.len(),
        scores.messages.len(),
        dead.messages.len(),
        rss >> 20
    );
    assert!(rss < 256 << 20, "peak resident memory {} MB", rss >> 20);

    // The drift report shows the reference's categories, never a value
    // the data brought (a card number among them).
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .args(["drift", "report", "--pipeline"])
        .arg(&written)
        .env_remove("STREAMSCORE_BROKERS")
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(report.contains("merchant_category"), "{report}");
    for raw in [CARD_IN_CATEGORY, "hostile-mcc-"] {
        assert!(!report.contains(raw), "the report prints {raw}:\n{report}");
    }
    let logs: String = ["first", "second", "third", "fourth"]
        .iter()
        .map(|name| log_of(dir.path(), name))
        .collect();
    assert!(
        !logs.contains(CARD_IN_CATEGORY),
        "a log line carries the card number"
    );
}

/// At a342126 a missing alerts topic held every batch from the first drift
/// alert on, scores included. Here it goes missing while the stream runs:
/// scoring goes on, the alerts are kept, and they arrive once it is back.
///
/// On librdkafka's mock cluster, which can make one topic unknown and
/// known again (`topic_error`): Tansu 0.6.0's DeleteTopics removes every
/// topic of the broker, not the one named.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_alerts_topic_holds_no_score_and_gets_its_alerts_once_back() {
    use rdkafka::types::RDKafkaRespErr;
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let topics = Topics::on_mock(&mock, 1);
    let alerts = unique("alerts");
    mock.create_topic(&alerts, 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A cold state: the window counts are far from the model's reference,
    // so the first judged day raises alerts.
    let drift = format!(
        "\n[drift]\nevent_time = \"event_time\"\nwindow = \"1d\"\nmin_events = 300\n\
         idle = \"30d\"\nraise_after = 1\nalerts_topic = \"{alerts}\"\n"
    );
    let pipeline = topics.write_pipeline_with(dir.path(), 200, &drift);
    let producer = "[kafka.producer]\n\"topic.metadata.propagation.max.ms\" = \"1000\"\n";
    let text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("[batch]\n", &format!("{producer}[batch]\n"));
    std::fs::write(&pipeline, text).unwrap();
    let mut run = spawn_run(&pipeline, dir.path(), "run");
    assert!(
        wait_for_log(dir.path(), "run", "scoring", Duration::from_secs(60)),
        "log:\n{}",
        log_of(dir.path(), "run")
    );
    mock.topic_error(
        &alerts,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
    )
    .unwrap();

    let events = valid_events(6_000);
    produce_at(&topics.brokers, &topics.input, &events[..4_500]).await;
    let mut scores = TopicReader::at(&topics.brokers, &topics.output, 1);
    let scored = scores.read_until(Duration::from_secs(120), |m| m.len() >= 4_500);
    assert!(
        wait_for_log(
            dir.path(),
            "run",
            "Kafka refuses side messages",
            Duration::from_secs(30)
        ),
        "no alert was refused, so nothing was proven; log:\n{}",
        log_of(dir.path(), "run")
    );
    assert!(
        scored,
        "{} of 4,500 scored; log:\n{}",
        scores.messages.len(),
        log_of(dir.path(), "run")
    );

    mock.topic_error(&alerts, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
        .unwrap();
    produce_at(&topics.brokers, &topics.input, &events[4_500..]).await;
    let mut raised = TopicReader::at(&topics.brokers, &alerts, 1);
    let arrived = raised.read_until(Duration::from_secs(120), |m| !m.is_empty());
    let all_scored = scores.read_until(Duration::from_secs(60), |m| m.len() >= events.len());
    stop_cleanly(&mut run, dir.path(), "run");
    assert!(
        arrived && all_scored,
        "alerts arrived {arrived}, all scored {all_scored}; log:\n{}",
        log_of(dir.path(), "run")
    );
}

/// `run` refuses to start while a topic it writes to is missing, and names
/// it: a missing alerts topic found at the first alert, weeks in, is found
/// too late.
#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_to_start_without_the_topics_it_writes_to() {
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let alerts = unique("never-created-alerts");
    let drift = format!("\n[drift]\nevent_time = \"event_time\"\nalerts_topic = \"{alerts}\"\n");
    let pipeline = topics.write_pipeline_with(dir.path(), 200, &drift);
    let mut run = spawn_run(&pipeline, dir.path(), "run");
    let status = wait_exit(&mut run, Duration::from_secs(60)).expect("exits at start");
    let log = log_of(dir.path(), "run");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("the topics {alerts} do not exist")),
        "{log}"
    );
}

/// A topic recreated while the instance was down starts again at offset 0,
/// below the stored offsets: its records are new and must be folded, not
/// taken as read again. On two mock clusters (the second is the recreated
/// topic), as Tansu cannot delete one topic.
#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_input_topic_is_folded_as_new() {
    let before = rdkafka::mocking::MockCluster::new(1).unwrap();
    let mut topics = Topics::on_mock(&before, 1);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = topics.write_pipeline(dir.path(), 100);
    let text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("[model]\n", "[model]\ninclude_features = true\n");
    std::fs::write(&pipeline, &text).unwrap();
    let mut first = spawn_run(&pipeline, dir.path(), "first");
    produce_at(&topics.brokers, &topics.input, &valid_events(300)).await;
    let mut scores = TopicReader::at(&topics.brokers, &topics.output, 1);
    assert!(scores.read_until(Duration::from_secs(60), |m| m.len() >= 300));
    stop_cleanly(&mut first, dir.path(), "first");
    drop(scores);

    let after = rdkafka::mocking::MockCluster::new(1).unwrap();
    let old_brokers = topics.brokers.clone();
    topics.recreate_on(&after);
    std::fs::write(&pipeline, text.replace(&old_brokers, &topics.brokers)).unwrap();
    let card_events: Vec<KeyedPayload> = (0..20)
        .map(|i| {
            let payload = format!(
                r#"{{"event_id":"new-{i}","card_id":"new-card","terminal_id":"new-t","amount":10,"event_time":"2026-05-01T03:{i:02}:00Z"}}"#
            );
            (Some(b"new-card".to_vec()), Some(payload.into_bytes()))
        })
        .collect();
    produce_at(&topics.brokers, &topics.input, &card_events).await;
    let mut second = spawn_run(&pipeline, dir.path(), "second");
    let mut scores = TopicReader::at(&topics.brokers, &topics.output, 1);
    let scored = scores.read_until(Duration::from_secs(60), |m| m.len() >= 20);
    stop_cleanly(&mut second, dir.path(), "second");
    let log = log_of(dir.path(), "second");
    assert!(scored, "log:\n{log}");
    assert!(log.contains("the topic was recreated"), "log:\n{log}");
    let counts: Vec<f64> = scores
        .messages
        .iter()
        .map(|m| {
            let score: streamscore::output::ScoreRecord =
                serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap();
            score.features.unwrap()["card_tx_count_1d"]
        })
        .collect();
    assert_eq!(
        counts.iter().copied().fold(0.0, f64::max),
        20.0,
        "each new event folded: {counts:?}"
    );
}
