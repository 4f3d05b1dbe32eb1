//! What an operator sees, scraped from a running `streamscore run` against
//! the real broker: /metrics agrees with what was produced, /readyz turns
//! ready once partitions are assigned, and the status line appears.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_status_agree_with_what_was_produced() {
    const VALID: usize = 3_000;
    let topics = Topics::create(3).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = topics.write_pipeline(dir.path(), 250);
    // Statistics (lag, producer queue) every half second instead of 5 s.
    let every_half_second = "\"statistics.interval.ms\" = \"500\"";
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "[kafka.consumer]",
        &format!("[kafka.producer]\n{every_half_second}\n[kafka.consumer]\n{every_half_second}"),
    );
    std::fs::write(&pipeline, text).unwrap();

    let mut run = spawn_run(&pipeline, dir.path(), "run");
    let address = admin_address(dir.path(), "run");
    assert_eq!(http_get(&address, "/healthz").0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(&address, "/readyz");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(body.contains("no partitions assigned"), "{body}");
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log_of(dir.path(), "run").contains("partitions assigned"));

    let mut records = valid_events(VALID);
    records.push((None, Some(b"not json".to_vec())));
    records.push((None, Some(br#"{"event_id":"x","amount":1}"#.to_vec())));
    records.push((None, Some(Vec::new())));
    produce(&topics.input, &records).await;
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    assert!(
        scores.read_until(Duration::from_secs(120), |m| m.len() >= VALID),
        "{}",
        log_of(dir.path(), "run")
    );

    // Counters are emitted when a batch is delivered; lag when librdkafka
    // next reports, after the next commit.
    let topic = format!("topic=\"{}\"", topics.input);
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (status, metrics) = http_get(&address, "/metrics");
        assert_eq!(status, 200);
        let lag = sample_sum(&metrics, "streamscore_consumer_lag", &[&topic]);
        let scored = sample_sum(&metrics, "streamscore_events_scored_total", &[&topic]);
        let queue = sample_sum(&metrics, "streamscore_producer_queue_messages", &[]);
        // librdkafka reports a partition's lag once it knows its commit.
        let lag_series = metrics
            .lines()
            .filter(|l| l.starts_with("streamscore_consumer_lag{"))
            .count();
        if lag == Some(0.0)
            && lag_series == topics.partitions as usize
            && scored == Some(VALID as f64)
            && queue.is_some()
        {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "lag {lag:?}, scored {scored:?}:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The status line comes at the next 1 s tick after the events.
    let has_status = wait_for_log(
        dir.path(),
        "run",
        "status events_per_s=",
        Duration::from_secs(10),
    );
    stop_cleanly(&mut run, dir.path(), "run");

    let sum = |name: &str, labels: &[&str]| sample_sum(&metrics, name, labels);
    assert_eq!(
        sum("streamscore_events_consumed_total", &[&topic]),
        Some(records.len() as f64)
    );
    assert_eq!(
        sum("streamscore_events_dead_lettered_total", &[&topic]),
        Some(3.0)
    );
    for kind in ["not_json", "missing_field", "empty"] {
        let label = format!("kind=\"{kind}\"");
        assert_eq!(
            sum("streamscore_events_dead_lettered_total", &[&topic, &label]),
            Some(1.0),
            "{kind}"
        );
    }
    assert_eq!(
        sum("streamscore_kafka_to_score_seconds_count", &[&topic]),
        Some(VALID as f64),
        "one latency observation per score"
    );
    let batches = sum("streamscore_batches_total", &[&topic]).unwrap();
    assert_eq!(
        sum("streamscore_batch_seconds_count", &[&topic]),
        Some(batches)
    );
    assert_eq!(
        sum("streamscore_batch_rows_sum", &[&topic]),
        Some(records.len() as f64)
    );
    assert_eq!(sum("streamscore_partitions_assigned", &[]), Some(3.0));
    assert!(
        sum("streamscore_model_info", &["name=\"fraud-lr\""]) == Some(1.0),
        "{metrics}"
    );
    let log = log_of(dir.path(), "run");
    let status_line = log.lines().find(|l| l.contains("status events_per_s="));
    assert!(has_status, "no status line in:\n{log}");
    let status_line = status_line.unwrap_or_default();
    for field in [
        "scored=",
        "dead_lettered=",
        "flagged=",
        "lag=",
        "batch_p50_ms=",
        "batch_p99_ms=",
    ] {
        assert!(status_line.contains(field), "{status_line}");
    }
}
