//! Drift monitoring: the statistics against an independent computation
//! (numpy and scipy, scripts/parity/drift_fixtures.py) on the same bins, to
//! 1e-9; and alerts, counts and the report through the broker and the
//! running engine.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use streamscore::drift::alerts::Alert;
use streamscore::drift::stats::{Reference, WindowCounts, chi_square, drift};

use crate::support::*;

/// tests/fixtures/drift/cases.json (scripts/parity/drift_fixtures.py).
fn drift_fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/drift/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn drift_statistics_match_scipy_on_the_same_bins() {
    let fixture = drift_fixture();
    let counts = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for (i, case) in cases.iter().enumerate() {
        let reference = Reference {
            edges: floats(&case["edges"]),
            shares: floats(&case["reference_shares"]),
            mean: 0.0,
            std: case["reference_std"].as_f64().unwrap(),
            null_rate: 0.0,
            discrete: false,
        };
        let window = WindowCounts {
            bins: counts(&case["live_counts"]),
            ..WindowCounts::default()
        };
        let d = drift(&reference, &window).unwrap();
        for (name, ours) in [
            ("psi", d.psi),
            ("ks", d.ks),
            ("jensen_shannon", d.jensen_shannon),
            ("wasserstein", d.wasserstein),
        ] {
            let theirs = case[name].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() <= 1e-9,
                "case {i} {name}: {ours} against {theirs}"
            );
        }
        let chi = chi_square(
            &floats(&case["category_reference"]),
            &counts(&case["category_counts"]),
        );
        let theirs = case["chi_square"].as_f64().unwrap();
        assert!(
            (chi - theirs).abs() <= 1e-9,
            "case {i} chi-square: {chi} against {theirs}"
        );
    }
}

/// The drift issue's flag (its share of ones from 0.5 to 0.35) and 4-valued
/// band, against numpy and scipy on one bin per value, counted from the
/// values themselves (the fixture's `discrete` cases): PSI, KS and
/// Jensen-Shannon to 1e-9; and each shift is past the `p_value = 0.001`
/// threshold for its window's size, i.e. `detected` with size-aware
/// thresholds (the flag's PSI, 0.09, is under the fixed 0.1: a small move
/// of a flag, clear only because 3,000 events make it so).
#[test]
fn flags_and_bands_drift_as_scipy_sees_them_on_per_value_bins() {
    use streamscore::drift::chance::ChanceThresholds;
    use streamscore::drift::reference::References;

    let fixture = drift_fixture();
    let cases = fixture["discrete"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for (i, case) in cases.iter().enumerate() {
        // Its thresholds are kept per column: one set per case.
        let mut chance = ChanceThresholds::default();
        let reference = Reference::of(&floats(&case["reference"]), 10).unwrap();
        assert!(reference.discrete, "case {i}");
        let mut window = WindowCounts::new(reference.shares.len());
        let live = floats(&case["live"]);
        for &v in &live {
            window.count(Some(v), &reference);
        }
        let d = drift(&reference, &window).unwrap();
        for (name, ours) in [
            ("psi", d.psi),
            ("ks", d.ks),
            ("jensen_shannon", d.jensen_shannon),
        ] {
            let theirs = case[name].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() <= 1e-9,
                "case {i} {name}: {ours} against {theirs}"
            );
        }
        let references = References {
            features: BTreeMap::from([("x".to_owned(), reference)]),
            ..References::default()
        };
        let threshold = chance
            .quantile(&references, "x", "psi", live.len() as u64, 0.001)
            .unwrap();
        eprintln!(
            "case {i}: PSI {:.4}, p = 0.001 threshold {threshold:.4}",
            d.psi
        );
        assert!(d.psi > threshold, "case {i}: {} under {threshold}", d.psi);
    }
}

/// Drift windows of an hour; one event every 10 s of event time.
const WINDOW_MS: i64 = 3_600_000;
const STEP_MS: i64 = 10_000;
const PER_WINDOW: usize = (WINDOW_MS / STEP_MS) as usize;
/// 2026-04-01T00:00:00Z.
const START_MS: i64 = 1_775_001_600_000;

/// A transaction with a log-normal amount (times `scale`), a merchant
/// category of three and an online flag; fraud is likelier for large
/// amounts, so the model has something to learn.
fn transaction(i: usize, time_ms: i64, scale: f64, rng: &mut SmallRng) -> serde_json::Value {
    let normal = (-2.0 * rng.random::<f64>().max(1e-12).ln()).sqrt()
        * (std::f64::consts::TAU * rng.random::<f64>()).cos();
    let amount = (3.5 + 0.7 * normal).exp() * scale;
    let category = match rng.random::<f64>() {
        x if x < 0.5 => "5411",
        x if x < 0.8 => "5812",
        _ => "5999",
    };
    serde_json::json!({
        "event_id": format!("e{i}"),
        "card_id": format!("c{}", rng.random_range(0..500)),
        "terminal_id": format!("t{}", rng.random_range(0..200)),
        "amount": amount,
        "event_time": time_ms,
        "merchant_category": category,
        "is_online": rng.random::<f64>() < 0.3,
        "is_fraud": amount > 80.0 && rng.random::<f64>() < 0.5,
    })
}

/// Stateless features, so that a stream drawn like the history has the
/// history's distribution from its first event.
const DRIFT_SQL: &str = "SELECT event_id, amount, ln(amount + 1.0) AS log_amount, \
     CASE WHEN is_online THEN 1.0 ELSE 0.0 END AS is_online FROM transactions";

fn streamscore(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .args(args)
        .current_dir(dir)
        .env_remove("STREAMSCORE_BROKERS")
        .output()
        .expect("streamscore runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "streamscore {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A pipeline file in `dir` scoring with a bundle trained there on 20,000
/// events drawn like the stream's normal windows, with `[drift]` in
/// windows of an hour to a new alerts topic, and `state_extra` added to
/// its `[state]`. Kafka's commit lags the checkpoint, so a restart
/// re-reads events already counted, which must not be counted again. The
/// events are produced all at once, so the engine may read one partition
/// hours of event time ahead of another: no partition is taken as idle
/// (`idle`), and windows wait for all.
async fn drift_pipeline(
    topics: &Topics,
    dir: &std::path::Path,
    state_extra: &str,
    rng: &mut SmallRng,
) -> (std::path::PathBuf, String) {
    drift_pipeline_with(topics, dir, state_extra, DRIFT_SQL, rng).await
}

/// [`drift_pipeline`] with its own SQL.
async fn drift_pipeline_with(
    topics: &Topics,
    dir: &std::path::Path,
    state_extra: &str,
    sql_text: &str,
    rng: &mut SmallRng,
) -> (std::path::PathBuf, String) {
    let alerts_topic = unique("alerts");
    streamscore::kafka::admin::ensure_topics(&brokers(), &[&alerts_topic], 1)
        .await
        .unwrap();
    let sql = dir.join("drift.sql");
    std::fs::write(&sql, sql_text).unwrap();
    let bundle = dir.join("bundle");
    let text = topics.kafka_sections(200, &sql, &bundle).replace(
        "\"auto.commit.interval.ms\" = \"200\"",
        "\"auto.commit.interval.ms\" = \"5000\"",
    ) + &format!(
        "[state]\npath = \"{state}\"\ncheckpoint_ms = 200\n{state_extra}\
             [drift]\nevent_time = \"event_time\"\nwindow = \"1h\"\nlateness = \"0s\"\n\
             idle = \"30d\"\n\
             alerts_topic = \"{alerts_topic}\"\nraise_after = 3\nclear_after = 3\ncooldown = \"0s\"\n",
        state = dir.join("state").display(),
    );
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(&pipeline, text).unwrap();
    let history: Vec<String> = (0..20_000)
        .map(|i| transaction(i, START_MS - 86_400_000, 1.0, rng).to_string())
        .collect();
    let data = dir.join("history.ndjson");
    std::fs::write(&data, history.join("\n")).unwrap();
    streamscore(
        dir,
        &[
            "train",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
            "--model-version",
            "drift-1",
        ],
    );
    (pipeline, alerts_topic)
}

/// `normal` windows drawn like the history, `shifted` with amounts
/// tripled, `recovered` normal again, and one event to close the last
/// (windows close on event time): (time, event) and as produced, keyed by
/// card.
fn drift_events(
    normal: usize,
    shifted: usize,
    recovered: usize,
    rng: &mut SmallRng,
) -> (Vec<(i64, serde_json::Value)>, Vec<KeyedPayload>) {
    let windows = normal + shifted + recovered;
    let events: Vec<(i64, serde_json::Value)> = (0..windows * PER_WINDOW + 1)
        .map(|i| {
            let time = START_MS + i as i64 * STEP_MS;
            let window = i / PER_WINDOW;
            let scale = if (normal..normal + shifted).contains(&window) {
                3.0
            } else {
                1.0
            };
            (time, transaction(100_000 + i, time, scale, rng))
        })
        .collect();
    let keyed = keyed_by_card(&events);
    (events, keyed)
}

/// Events as produced: keyed by card.
fn keyed_by_card(events: &[(i64, serde_json::Value)]) -> Vec<KeyedPayload> {
    events
        .iter()
        .map(|(_, e)| {
            (
                Some(e["card_id"].as_str().unwrap().as_bytes().to_vec()),
                Some(e.to_string().into_bytes()),
            )
        })
        .collect()
}

/// Runs the pipeline over `keyed` until an alert `detected` on `feature`
/// is on the alerts topic (failing the test if none comes), stops it, and
/// returns every alert raised; none may lie in the `normal` windows before
/// the shift.
async fn alerts_until_detected(
    topics: &Topics,
    dir: &std::path::Path,
    (pipeline, alerts_topic): (&std::path::Path, &str),
    keyed: &[KeyedPayload],
    feature: &str,
    normal: usize,
) -> Vec<Alert> {
    let mut run = spawn_run(pipeline, dir, "run");
    produce(&topics.input, keyed).await;
    let mut alerts = TopicReader::new(alerts_topic, 1);
    let detected = alerts.read_until(Duration::from_secs(120), |m| {
        parsed_alerts(m)
            .iter()
            .any(|a| a.feature == feature && a.level == "detected")
    });
    stop_cleanly(&mut run, dir, "run");
    let raised = parsed_alerts(&alerts.messages);
    assert!(detected, "{raised:#?}; log:\n{}", log_of(dir, "run"));
    let first_shifted =
        chrono::DateTime::from_timestamp_millis(START_MS + normal as i64 * WINDOW_MS)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(
        raised.iter().all(|a| a.window_start >= first_shifted),
        "an alert before the shift: {raised:#?}"
    );
    raised
}

/// The alerts read so far.
fn parsed_alerts(messages: &[rdkafka::message::OwnedMessage]) -> Vec<Alert> {
    messages
        .iter()
        .filter_map(|m| serde_json::from_slice(rdkafka::Message::payload(m)?).ok())
        .collect()
}

/// Per window start, the number of events drawn in it.
fn events_per_window(events: &[(i64, serde_json::Value)]) -> BTreeMap<i64, u64> {
    let mut expected: BTreeMap<i64, u64> = BTreeMap::new();
    for (time, _) in events {
        *expected
            .entry(time - time.rem_euclid(WINDOW_MS))
            .or_default() += 1;
    }
    expected
}

/// Per window start, the decisions counted, from `drift report --json`.
fn counted_per_window(dir: &std::path::Path, args: &[&str]) -> BTreeMap<i64, u64> {
    let mut all = vec!["drift", "report", "--json"];
    all.extend_from_slice(args);
    let report: serde_json::Value = serde_json::from_str(&streamscore(dir, &all)).unwrap();
    report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["start_ms"].as_i64().unwrap(),
                w["columns"]["decision"]["events"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The proof, through Tansu and `streamscore run`:
/// - 50 windows drawn like the training data raise no alert;
/// - then amounts triple for 6 windows: exactly one `detected` alert for
///   `amount`, after the 3 windows of hysteresis, on the alerts topic;
/// - then 6 normal windows: it clears after 3;
/// - a kill -9 in the middle of those, and a restart (the raised level
///   survives it, so the clearing still comes once): every window's count
///   in the store equals its distinct input events.
///
/// One crash in the group, because Tansu keeps a SIGKILLed member.
#[tokio::test]
async fn drift_alerts_once_after_the_hysteresis_and_counts_each_event_once_across_a_kill_nine() {
    let topics = Topics::create(2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    let (pipeline, alerts_topic) = drift_pipeline(&topics, dir.path(), "", &mut rng).await;

    // 50 normal windows, 6 shifted, 6 normal, and one event to close the
    // last: windows close on event time.
    let (normal, shifted, recovered) = (50, 6, 6);
    let (events, keyed) = drift_events(normal, shifted, recovered, &mut rng);
    let crash_at = (normal + shifted + 2) * PER_WINDOW;

    let mut first = spawn_run(&pipeline, dir.path(), "first");
    produce(&topics.input, &keyed[..crash_at]).await;
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    let reached = scores.read_until(Duration::from_secs(120), |m| m.len() >= crash_at - 300);
    assert!(
        reached,
        "too few scores; log:\n{}",
        log_of(dir.path(), "first")
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = spawn_run(&pipeline, dir.path(), "second");
    produce(&topics.input, &keyed[crash_at..]).await;
    let mut alerts = TopicReader::new(&alerts_topic, 1);
    let parsed = parsed_alerts;
    let cleared = alerts.read_until(Duration::from_secs(120), |m| {
        parsed(m)
            .iter()
            .any(|a| a.feature == "amount" && a.level == "cleared")
    });
    let complete = scores.read_until(Duration::from_secs(60), |m| {
        scored_offsets(m).len() >= events.len()
    });
    // The restarted instance's /metrics: the last judged window's values,
    // the level (cleared: 0) and the alerts it raised and cleared.
    let (_, metrics) = http_get(&admin_address(dir.path(), "second"), "/metrics");
    stop_cleanly(&mut second, dir.path(), "second");
    let amount_psi = ["feature=\"amount\"", "metric=\"psi\""];
    assert!(
        sample_sum(&metrics, "streamscore_drift_value", &amount_psi).is_some_and(|v| v < 0.1),
        "{metrics}"
    );
    assert_eq!(
        sample_sum(&metrics, "streamscore_drift_level", &amount_psi),
        Some(0.0)
    );
    assert_eq!(
        sample_sum(
            &metrics,
            "streamscore_drift_alerts_total",
            &["feature=\"amount\"", "level=\"cleared\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        cleared && complete,
        "cleared {cleared}, complete {complete}; log:\n{}",
        log_of(dir.path(), "second")
    );

    let raised = parsed(&alerts.messages);
    let window_of = |k: usize| {
        chrono::DateTime::from_timestamp_millis(START_MS + (k as i64) * WINDOW_MS)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let first_shifted = window_of(normal);
    assert!(
        raised.iter().all(|a| a.window_start >= first_shifted),
        "an alert in the normal windows: {raised:#?}"
    );
    let amount: Vec<&Alert> = raised.iter().filter(|a| a.feature == "amount").collect();
    assert_eq!(
        amount
            .iter()
            .map(|a| (a.level.as_str(), a.metric.as_str(), a.window_start.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("detected", "psi", window_of(normal + 2)),
            ("cleared", "psi", window_of(normal + shifted + 2)),
        ],
        "{amount:#?}"
    );
    let detected = amount[0];
    assert_eq!(detected.threshold, Some(0.25));
    assert!(detected.value > 0.25);
    assert_eq!(
        (detected.model_version.as_str(), detected.partitions.clone()),
        ("drift-1", vec![0, 1]),
        "first log:\n{}",
        log_of(dir.path(), "first")
    );
    assert!(!detected.instance.is_empty());

    // Every window's count equals its distinct events, though the restart
    // read some of them twice.
    let counted = counted_per_window(dir.path(), &["--pipeline", pipeline.to_str().unwrap()]);
    let expected = events_per_window(&events);
    assert_eq!(counted, expected);
    // The table and the page say the same.
    let html = dir.path().join("drift.html");
    let table = streamscore(
        dir.path(),
        &[
            "drift",
            "report",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--feature",
            "amount",
            "--html",
            html.to_str().unwrap(),
        ],
    );
    assert!(table.contains("2 alert(s)"), "{table}");
    assert!(table.contains("detected  amount psi ="), "{table}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg")
            && page.contains("amount: psi per window")
            && page.contains(">detected<"),
        "the page lacks its charts or alerts"
    );
    assert!(
        !page.contains("<script") && !page.contains("src=\"http") && !page.contains("href=\"http"),
        "the page fetches something"
    );

    let restarted = log_of(dir.path(), "second");
    assert!(
        restarted.contains("state opened") && restarted.contains("partitions=0@"),
        "the restart found no checkpointed offset; log:\n{restarted}"
    );
}

/// Drift judged once for the topic, by three instances with state that
/// follows its partitions (README, "Running several instances"): the
/// holder of partition 0 judges every window over all three partitions'
/// counts, which reach it through the changelog. Exactly one `detected`
/// alert for the shifted amount, naming all three partitions, and the
/// judge's store counts every window's events exactly. Stopped with
/// SIGTERM (Tansu keeps a SIGKILLed member in the group).
#[tokio::test]
async fn drift_is_judged_once_for_the_topic_by_three_instances() {
    let topics = Topics::create(3).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    let (pipeline, alerts_topic) =
        drift_pipeline(&topics, dir.path(), "changelog = true\n", &mut rng).await;
    let (normal, shifted, recovered) = (12, 6, 2);
    let (mut events, keyed) = drift_events(normal, shifted, recovered, &mut rng);
    // The judge judges as its own partition's batches come: a live stream
    // brings them all the time; here a last event for each card, an hour
    // after the rest, once the other partitions' counts have reached it.
    let last = events.last().unwrap().0 + WINDOW_MS;
    let ticks: Vec<(i64, serde_json::Value)> = (0..500)
        .map(|card| {
            let mut event = transaction(900_000 + card, last, 1.0, &mut rng);
            event["card_id"] = format!("c{card}").into();
            (last, event)
        })
        .collect();
    let tick_keyed = keyed_by_card(&ticks);
    let names = ["a", "b", "c"];
    let mut instances: Vec<_> = names
        .iter()
        .map(|name| spawn_instance(&pipeline, dir.path(), name))
        .collect();
    for name in names {
        assert!(
            wait_for_log(
                dir.path(),
                name,
                "partitions assigned",
                Duration::from_secs(60)
            ),
            "{name} was given no partition:\n{}",
            log_of(dir.path(), name)
        );
    }
    produce(&topics.input, &keyed).await;
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    let complete = scores.read_until(Duration::from_secs(120), |m| {
        scored_offsets(m).len() >= events.len()
    });
    std::thread::sleep(Duration::from_secs(1));
    produce(&topics.input, &tick_keyed).await;
    events.extend(ticks);
    let mut alerts = TopicReader::new(&alerts_topic, 1);
    let detected = alerts.read_until(Duration::from_secs(60), |m| {
        parsed_alerts(m)
            .iter()
            .any(|a| a.feature == "amount" && a.level == "detected")
    });
    let logs = || {
        names
            .iter()
            .map(|n| format!("--- {n}\n{}", log_of(dir.path(), n)))
            .collect::<String>()
    };
    assert!(
        complete && detected,
        "complete {complete}, detected {detected}; logs:\n{}",
        logs()
    );
    // The judge holds partition 0 at the end; the others stop first, so
    // that their last counts reach its store.
    let holds_zero = |name: &str| {
        log_of(dir.path(), name)
            .lines()
            .rfind(|l| l.contains("partitions assigned"))
            .is_some_and(|l| l.contains(&format!("{}/0", topics.input)))
    };
    let judge = names
        .iter()
        .position(|n| holds_zero(n))
        .expect("someone holds partition 0");
    for (i, instance) in instances.iter_mut().enumerate() {
        if i != judge {
            stop_cleanly(instance, dir.path(), names[i]);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    stop_cleanly(&mut instances[judge], dir.path(), names[judge]);
    alerts.read_until(Duration::from_secs(3), |_| false);

    let raised: Vec<Alert> = parsed_alerts(&alerts.messages)
        .into_iter()
        .filter(|a| a.feature == "amount" && a.metric == "psi")
        .collect();
    assert_eq!(
        raised.iter().filter(|a| a.level == "detected").count(),
        1,
        "one detected alert for the topic: {raised:#?}"
    );
    assert_eq!(raised[0].partitions, vec![0, 1, 2], "{raised:#?}");
    let state = dir.path().join(format!("state-{}", names[judge]));
    let counted = counted_per_window(
        dir.path(),
        &[
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(counted, events_per_window(&events));
}

/// Thresholds that know the window's size (`{ p_value = ... }`): windows
/// of 360 events, which a fixed PSI judges against numbers made for
/// thousands, are judged against what 360 events drawn from the reference
/// reach by chance. The tripled amount is detected, over a threshold that
/// is not the fixed 0.25; nothing is raised in the 20 normal windows
/// before it.
#[tokio::test]
async fn p_value_thresholds_detect_the_shift_and_stay_quiet_before_it() {
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    let (pipeline, alerts_topic) = drift_pipeline(&topics, dir.path(), "", &mut rng).await;
    let mut text = std::fs::read_to_string(&pipeline).unwrap();
    text.push_str(
        "[drift.thresholds.psi]\nsuspected = { p_value = 0.01 }\ndetected = { p_value = 0.001 }\n",
    );
    std::fs::write(&pipeline, text).unwrap();
    let (normal, shifted) = (20, 4);
    let (_, keyed) = drift_events(normal, shifted, 0, &mut rng);
    let raised = alerts_until_detected(
        &topics,
        dir.path(),
        (&pipeline, &alerts_topic),
        &keyed,
        "amount",
        normal,
    )
    .await;
    let amount = raised
        .iter()
        .find(|a| a.feature == "amount" && a.level == "detected" && a.metric == "psi")
        .unwrap();
    let threshold = amount.threshold.unwrap();
    eprintln!(
        "amount psi {} over its p = 0.001 threshold {threshold} (360 events a window)",
        amount.value
    );
    assert!(
        threshold > 0.0 && threshold != 0.25 && amount.value > threshold,
        "{amount:#?}"
    );
}

/// A backlog the broker serves one partition entirely before the other:
/// partition 0's events (all of its windows) are produced and scored
/// first, partition 1's after. A window is judged only once both
/// partitions have passed it, so every alert names both partitions, and
/// its value equals `drift report --json`'s for that window over both.
#[tokio::test]
async fn a_backlog_served_one_partition_first_is_judged_over_both() {
    use streamscore::config::Partitioner;
    use streamscore::kafka::partitioner::partition_for_key;
    let topics = Topics::create(2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(23);
    let (pipeline, alerts_topic) = drift_pipeline(&topics, dir.path(), "", &mut rng).await;
    let (events, keyed) = drift_events(10, 5, 4, &mut rng);
    let (first, second): (Vec<KeyedPayload>, Vec<KeyedPayload>) =
        keyed.into_iter().partition(|(key, _)| {
            partition_for_key(Partitioner::Consistent, key.as_deref().unwrap(), 2) == 0
        });
    let mut run = spawn_run(&pipeline, dir.path(), "run");
    let placed = produce(&topics.input, &first).await;
    assert!(
        placed.iter().all(|(p, _)| *p == 0),
        "partition 0's keys landed elsewhere"
    );
    let mut scores = TopicReader::new(&topics.output, 2);
    let scored = scores.read_until(Duration::from_secs(120), |m| m.len() >= first.len());
    assert!(scored, "log:\n{}", log_of(dir.path(), "run"));
    let mut alerts = TopicReader::new(&alerts_topic, 1);
    alerts.read_until(Duration::from_secs(3), |_| false);
    assert!(
        parsed_alerts(&alerts.messages).is_empty(),
        "judged before partition 1 came: {:#?}",
        parsed_alerts(&alerts.messages)
    );
    produce(&topics.input, &second).await;
    let cleared = alerts.read_until(Duration::from_secs(120), |m| {
        parsed_alerts(m)
            .iter()
            .any(|a| a.feature == "amount" && a.level == "cleared")
    });
    let complete = scores.read_until(Duration::from_secs(60), |m| m.len() >= events.len());
    stop_cleanly(&mut run, dir.path(), "run");
    assert!(cleared && complete, "log:\n{}", log_of(dir.path(), "run"));

    let report: serde_json::Value = serde_json::from_str(&streamscore(
        dir.path(),
        &[
            "drift",
            "report",
            "--json",
            "--pipeline",
            pipeline.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let raised = parsed_alerts(&alerts.messages);
    assert!(raised.iter().any(|a| a.level == "detected"), "{raised:#?}");
    for alert in &raised {
        assert_eq!(alert.partitions, vec![0, 1], "{alert:#?}");
        let window = report["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| {
                let start = chrono::DateTime::parse_from_rfc3339(&alert.window_start).unwrap();
                w["start_ms"].as_i64() == Some(start.timestamp_millis())
            })
            .unwrap_or_else(|| panic!("no window {} in the report", alert.window_start));
        let reported = window["columns"][&alert.feature]["measures"][&alert.metric]
            .as_f64()
            .unwrap();
        assert!(
            (reported - alert.value).abs() <= 1e-9,
            "{} {} in {}: alert {} against report {reported}",
            alert.feature,
            alert.metric,
            alert.window_start,
            alert.value
        );
        assert_eq!(window["partitions"], serde_json::json!([0, 1]));
    }
}

/// A boolean of the input that is no model feature is monitored as a
/// category (`true`, `false`, `null`): its share of `true` moves from 0.3
/// to 0.6 for 5 windows, and `is_online` is detected on PSI, with nothing
/// raised before the shift. The label, also a boolean, is never monitored.
#[tokio::test]
async fn a_boolean_input_drifts_as_a_category() {
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(31);
    let sql = "SELECT event_id, amount, ln(amount + 1.0) AS log_amount FROM transactions";
    let (pipeline, alerts_topic) =
        drift_pipeline_with(&topics, dir.path(), "", sql, &mut rng).await;
    let (normal, shifted) = (8, 5);
    let (mut events, _) = drift_events(normal + shifted, 0, 0, &mut rng);
    for (i, (_, event)) in events.iter_mut().enumerate() {
        if i / PER_WINDOW >= normal {
            event["is_online"] = (rng.random::<f64>() < 0.6).into();
        }
    }
    let raised = alerts_until_detected(
        &topics,
        dir.path(),
        (&pipeline, &alerts_topic),
        &keyed_by_card(&events),
        "is_online",
        normal,
    )
    .await;
    assert!(
        raised.iter().all(|a| a.feature != "is_fraud"),
        "{raised:#?}"
    );
    let alert = raised.iter().find(|a| a.feature == "is_online").unwrap();
    eprintln!(
        "is_online {} = {} over {:?}",
        alert.metric, alert.value, alert.threshold
    );
}

/// Estimated performance through Tansu and `streamscore run`, with day-long
/// windows: six days drawn like the training data, then six in which the
/// amounts shrink to a fifth, so that the large amounts the frauds come
/// with (and the scores that find them) vanish: the model would catch
/// next to nothing, and the estimate says so before any label. (With a
/// third, one large amount every other day kept the estimate of a day
/// that had one near the reference's: the estimate of a window with
/// almost no expected fraud rests on its few high scores. The events are
/// drawn from a fixed seed.)
/// - The stream counts each day's scores on the reliability curve's bins
///   and judges `performance`: its `average_precision_drop` is `detected`
///   after the 3 windows of hysteresis, and no alert of any kind comes
///   before the shift.
/// - The alert's value equals `drift report --json`'s for its window.
/// - Once the labels arrive, `drift report` shows each day's realised AUC
///   and average precision beside the estimate, equal to a direct
///   computation over the scores on the output topic (and charts both on
///   its page), and `labels report` shows the estimate beside each day's
///   realised metrics.
#[tokio::test(flavor = "multi_thread")]
async fn estimated_performance_alerts_on_a_drop_and_meets_the_labels() {
    use rdkafka::Message;
    use streamscore::fraud_metrics::{auc_roc, average_precision};

    const DAY_MS: i64 = 86_400_000;
    const PER_DAY: usize = 400;
    let (normal_days, shifted_days) = (6, 6);
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(41);
    let (pipeline, alerts_topic) =
        drift_pipeline_with(&topics, dir.path(), "", DRIFT_SQL, &mut rng).await;
    // The example's [labels] and [windows] (a labels topic is read for
    // window features; the SQL here uses none of them).
    let example = state_sections(dir.path(), &topics.labels);
    let labels_and_windows = &example[example.find("\n[labels]").unwrap()..];
    let text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("window = \"1h\"", "window = \"1d\"")
        + "[drift.thresholds]\naverage_precision_drop = { detected = 0.15 }\n"
        + labels_and_windows;
    std::fs::write(&pipeline, text).unwrap();
    let days = normal_days + shifted_days;
    let events: Vec<(i64, serde_json::Value)> = (0..days * PER_DAY + 1)
        .map(|i| {
            let time = START_MS + i as i64 * (DAY_MS / PER_DAY as i64);
            let scale = if i / PER_DAY >= normal_days { 0.2 } else { 1.0 };
            (time, transaction(200_000 + i, time, scale, &mut rng))
        })
        .collect();
    // `alerts_until_detected` counts the normal stretch in hours.
    let raised = alerts_until_detected(
        &topics,
        dir.path(),
        (&pipeline, &alerts_topic),
        &keyed_by_card(&events),
        "performance",
        normal_days * 24,
    )
    .await;
    let detected = raised
        .iter()
        .find(|a| a.feature == "performance" && a.level == "detected")
        .unwrap();
    assert_eq!(detected.metric, "average_precision_drop", "{detected:?}");

    // The labels arrive.
    let labels: Vec<KeyedPayload> = events
        .iter()
        .map(|(_, e)| {
            let label = serde_json::json!({
                "event_id": e["event_id"], "card_id": e["card_id"],
                "terminal_id": e["terminal_id"], "event_time": e["event_time"],
                "is_fraud": e["is_fraud"],
            });
            (
                Some(e["card_id"].as_str().unwrap().as_bytes().to_vec()),
                Some(label.to_string().into_bytes()),
            )
        })
        .collect();
    let mut run = spawn_run(&pipeline, dir.path(), "labels");
    produce(&topics.labels, &labels).await;
    crate::windows::wait_for_labels(dir.path(), "labels", labels.len());
    stop_cleanly(&mut run, dir.path(), "labels");

    // Each day's realised metrics, from the scores on the output topic.
    let mut scores = TopicReader::new(&topics.output, 1);
    assert!(scores.read_until(Duration::from_secs(60), |m| m.len() >= events.len()));
    let fraud: BTreeMap<String, (i64, bool)> = events
        .iter()
        .map(|(time, e)| {
            let id = e["event_id"].as_str().unwrap().to_owned();
            (id, (time - time.rem_euclid(DAY_MS), e["is_fraud"] == true))
        })
        .collect();
    let mut by_day: BTreeMap<i64, (Vec<f64>, Vec<bool>)> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for message in &scores.messages {
        let score: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let id = score["event_id"].as_str().unwrap().to_owned();
        if !seen.insert(id.clone()) {
            continue;
        }
        let (day, is_fraud) = fraud[&id];
        let entry = by_day.entry(day).or_default();
        entry.0.push(score["score"].as_f64().unwrap());
        entry.1.push(is_fraud);
    }

    let report: serde_json::Value = serde_json::from_str(&streamscore(
        dir.path(),
        &[
            "drift",
            "report",
            "--json",
            "--pipeline",
            pipeline.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let windows = report["windows"].as_array().unwrap();
    let alert_start = chrono::DateTime::parse_from_rfc3339(&detected.window_start)
        .unwrap()
        .timestamp_millis();
    let alert_window = windows
        .iter()
        .find(|w| w["start_ms"].as_i64() == Some(alert_start))
        .unwrap_or_else(|| panic!("no window {} in {windows:#?}", detected.window_start));
    let reported = alert_window["columns"]["performance"]["measures"]["average_precision_drop"]
        .as_f64()
        .unwrap();
    assert!(
        (reported - detected.value).abs() < 1e-9,
        "{reported} against {detected:?}"
    );
    let mut estimated_ap = Vec::new();
    for w in windows {
        let start = w["start_ms"].as_i64().unwrap();
        let Some((s, l)) = by_day.get(&start) else {
            continue;
        };
        let realised = &w["realised"];
        assert_eq!(
            realised["labelled"].as_u64().unwrap() as usize,
            s.len(),
            "{w:#}"
        );
        if let Some(auc) = auc_roc(s, l) {
            assert!(
                (realised["auc"].as_f64().unwrap() - auc).abs() < 1e-12,
                "{w:#}"
            );
            let ap = average_precision(s, l).unwrap();
            assert!((realised["average_precision"].as_f64().unwrap() - ap).abs() < 1e-12);
        }
        let measures = &w["columns"]["performance"]["measures"];
        if let Some(estimate) = measures["estimated_average_precision"].as_f64() {
            estimated_ap.push((start, estimate));
        }
    }
    eprintln!("estimated AP by day: {estimated_ap:?}");
    assert!(estimated_ap.len() >= days - 1, "{estimated_ap:?}");

    // The page charts the estimate against the realised, and the drop
    // against its threshold.
    let page = dir.path().join("drift.html");
    streamscore(
        dir.path(),
        &[
            "drift",
            "report",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--html",
            page.to_str().unwrap(),
        ],
    );
    let page = std::fs::read_to_string(page).unwrap();
    for text in [
        "performance: estimated from the scores, realised from the labels",
        "realised AP",
        "performance: average_precision_drop per window",
    ] {
        assert!(page.contains(text), "no {text:?} in the page");
    }

    let labels_report = streamscore(
        dir.path(),
        &["labels", "report", "--pipeline", pipeline.to_str().unwrap()],
    );
    assert!(
        labels_report.contains("estimated AUC | estimated AP |"),
        "{labels_report}"
    );
    let (first_day, first_estimate) = estimated_ap[0];
    let date = chrono::DateTime::from_timestamp_millis(first_day)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let row = labels_report
        .lines()
        .find(|l| l.starts_with(&format!("| {date} ")))
        .unwrap_or_else(|| panic!("no {date} in\n{labels_report}"));
    assert!(row.ends_with(&format!("{first_estimate:.4} |")), "{row}");
}

/// The change detector through Tansu and `streamscore run`, on two
/// partitions: 10 windows (an hour each) drawn like the training data, then
/// the amounts triple. Each partition's Page-Hinkley test on the scores
/// raises one `page_hinkley` alert within the first shifted hour, long
/// before the windows' hysteresis could (three closed windows), and none
/// before the shift; `drift report` lists them.
#[tokio::test(flavor = "multi_thread")]
async fn the_change_detector_catches_a_shift_within_the_window() {
    let topics = Topics::create(2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SmallRng::seed_from_u64(43);
    let (pipeline, alerts_topic) = drift_pipeline(&topics, dir.path(), "", &mut rng).await;
    let text = std::fs::read_to_string(&pipeline).unwrap() + "[drift.change]\n";
    std::fs::write(&pipeline, text).unwrap();
    let normal = 10;
    let (_, keyed) = drift_events(normal, 2, 0, &mut rng);
    let mut run = spawn_run(&pipeline, dir.path(), "run");
    produce(&topics.input, &keyed).await;
    let mut alerts = TopicReader::new(&alerts_topic, 1);
    let page_hinkley = |messages: &[rdkafka::message::OwnedMessage]| -> Vec<Alert> {
        parsed_alerts(messages)
            .into_iter()
            .filter(|a| a.metric == "page_hinkley")
            .collect()
    };
    let both = alerts.read_until(Duration::from_secs(120), |m| page_hinkley(m).len() >= 2);
    stop_cleanly(&mut run, dir.path(), "run");
    let raised = page_hinkley(&alerts.messages);
    assert!(both, "{raised:#?}; log:\n{}", log_of(dir.path(), "run"));
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let shift = START_MS + normal as i64 * WINDOW_MS;
    let mut partitions: Vec<i32> = Vec::new();
    for alert in &raised {
        let after_s = (chrono::DateTime::parse_from_rfc3339(&alert.window_start)
            .unwrap()
            .timestamp_millis()
            - shift)
            / 1000;
        eprintln!(
            "partition {:?}: page_hinkley {:.1} at {} ({after_s} s of event time after the shift)",
            alert.partitions, alert.value, alert.window_start
        );
        assert_eq!(
            (alert.feature.as_str(), alert.level.as_str()),
            ("score", "detected")
        );
        assert!(alert.value > 50.0, "a rise past the threshold: {alert:?}");
        assert!(
            alert.window_start >= time(shift) && alert.window_start < time(shift + WINDOW_MS),
            "not within the first shifted hour: {alert:?}"
        );
        partitions.extend(&alert.partitions);
    }
    partitions.sort();
    assert_eq!(partitions, [0, 1], "{raised:#?}");
    let report: serde_json::Value = serde_json::from_str(&streamscore(
        dir.path(),
        &[
            "drift",
            "report",
            "--json",
            "--pipeline",
            pipeline.to_str().unwrap(),
        ],
    ))
    .unwrap();
    let reported = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["metric"] == "page_hinkley")
        .count();
    assert_eq!(reported, 2, "{report:#}");
}
