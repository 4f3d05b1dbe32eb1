//! The scoring API (`POST /v1/score`, README "Scoring at authorisation
//! time"): the same decode, window features, SQL and model as the stream,
//! read from the live state and never folded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::mocking::MockCluster;
use serde_json::Value;
use streamscore::output::ScoreRecord;
use streamscore::simulate::{SimulationConfig, Transaction, simulate};

use crate::support::{
    TopicReader, Topics, http_request, listening_address, log_of, produce, spawn_run, stop_cleanly,
    valid_events,
};
use crate::windows::{example_model_inputs, keyed_by_card, keyed_labels, wait_for_labels};

/// `[serve]` on a free port, with `extra` lines.
fn serve_section(extra: &str) -> String {
    format!("\n[serve]\nlisten = \"127.0.0.1:0\"\n{extra}\n")
}

/// The pipeline file with scores carrying their features, and the input
/// fetched without Tansu's default 500 ms wait (each round waits for its
/// scores).
fn with_features_and_quick_fetch(written: &std::path::Path) {
    let text = std::fs::read_to_string(written)
        .unwrap()
        .replace("[model]\n", "[model]\ninclude_features = true\n")
        .replace(
            "[kafka.consumer]\n",
            "[kafka.consumer]\n\"fetch.wait.max.ms\" = \"20\"\n",
        );
    std::fs::write(written, text).unwrap();
}

/// POSTs `body` to the API: (status, parsed body).
fn post(address: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_request(
        address,
        "POST",
        path,
        &["Content-Type: application/json"],
        body,
    );
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Waits until the API is ready: an empty array is then a 400, not a 503.
fn wait_ready(address: &str, dir: &std::path::Path, name: &str) {
    for _ in 0..300 {
        if post(address, "/v1/score", "[]").0 == 400 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the API never became ready; log:\n{}", log_of(dir, name));
}

/// The events cut into rounds, in event-time order, so that no card or
/// terminal appears twice in a round: scoring a round through the API and
/// then producing it, the API sees each event's card and terminal exactly
/// as the stream will.
fn rounds(events: &[Transaction]) -> Vec<&[Transaction]> {
    let mut rounds = Vec::new();
    let mut start = 0;
    let mut keys = HashSet::new();
    for (i, t) in events.iter().enumerate() {
        if !keys.insert(&t.card_id) | !keys.insert(&t.terminal_id) {
            rounds.push(&events[start..i]);
            start = i;
            keys.clear();
            keys.insert(&t.card_id);
            keys.insert(&t.terminal_id);
        }
    }
    rounds.push(&events[start..]);
    rounds
}

/// The score and the model inputs of a score record.
fn score_and_inputs(record: &ScoreRecord, names: &[String]) -> (f64, BTreeMap<String, f64>) {
    let features = record
        .features
        .as_ref()
        .expect("scores carry their features");
    let inputs = names
        .iter()
        .map(|n| (n.clone(), features[n.as_str()]))
        .collect();
    (record.score, inputs)
}

/// Parity against the real broker: every transaction scored by the API
/// just before it is produced, with no other event of its card or terminal
/// in between, gets the features and score the stream then gives it. The
/// labels are folded first, so the terminal-risk features (labels a delay
/// old) are compared too. STREAMSCORE_PARITY_DAYS sets the length of the
/// simulation: 9 days of 200 cards by default (past the 7-day label delay,
/// so the terminal-risk features are read); 28 days give 10,299 events.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_scores_each_transaction_as_the_stream_then_does() {
    let days = std::env::var("STREAMSCORE_PARITY_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(9);
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let written =
        topics.write_pipeline_with(dir.path(), 500, &serve_section("deadline_ms = 60000"));
    with_features_and_quick_fetch(&written);
    let events = simulate(&SimulationConfig {
        customers: 200,
        terminals: 400,
        days,
        ..SimulationConfig::default()
    });
    let names = example_model_inputs();
    let mut instance = spawn_run(&written, dir.path(), "api");
    let address = listening_address(dir.path(), "api", "scoring API listening");
    let labels = keyed_labels(&events);
    produce(&topics.labels, &labels).await;
    wait_for_labels(dir.path(), "api", labels.len());
    wait_ready(&address, dir.path(), "api");

    let mut from_api: HashMap<String, (f64, BTreeMap<String, f64>)> = HashMap::new();
    let mut scores = TopicReader::new(&topics.output, 1);
    let rounds = rounds(&events);
    for round in &rounds {
        let body = serde_json::to_string(round).unwrap();
        let (status, answer) = post(&address, "/v1/score?features=true", &body);
        assert_eq!(status, 200, "{answer}");
        for (t, record) in round.iter().zip(answer.as_array().unwrap()) {
            let text = record.to_string();
            let record: ScoreRecord =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(record.event_id, t.event_id);
            from_api.insert(t.event_id.clone(), score_and_inputs(&record, &names));
        }
        let keyed = keyed_by_card(round);
        produce(&topics.input, &keyed).await;
        let expected = from_api.len();
        let scored = scores.read_until(Duration::from_secs(60), |m| m.len() >= expected);
        assert!(
            scored,
            "the stream fell behind; log:\n{}",
            log_of(dir.path(), "api")
        );
    }
    stop_cleanly(&mut instance, dir.path(), "api");
    eprintln!(
        "parity: {} transactions in {} requests",
        events.len(),
        rounds.len()
    );

    let mut differing = Vec::new();
    for message in &scores.messages {
        let record: ScoreRecord = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let streamed = score_and_inputs(&record, &names);
        let api = &from_api[record.event_id.as_ref()];
        if *api != streamed {
            differing.push((record.event_id.to_string(), api.clone(), streamed));
        }
    }
    assert_eq!(scores.messages.len(), events.len());
    assert!(
        differing.is_empty(),
        "{} of {} events differ between the API and the stream ({} rounds), first: {:?}",
        differing.len(),
        events.len(),
        rounds.len(),
        differing.first()
    );
    let risky = from_api
        .values()
        .filter(|(_, inputs)| inputs["terminal_risk_7d"] > 0.0)
        .count();
    assert!(risky > 0, "no event read a terminal's labels");
}

/// What the stream would dead-letter is a 422 with the same kind; a body
/// that is not JSON a 400; too many records or too many bytes a 413. On
/// the mock cluster: nothing here needs the real broker.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_the_status_that_says_what_is_wrong() {
    let mock = MockCluster::new(1).unwrap();
    let topics = Topics::on_mock(&mock, 1);
    let dir = tempfile::tempdir().unwrap();
    let written = topics.write_pipeline_with(
        dir.path(),
        100,
        &serve_section("max_items = 10\nmax_body_bytes = 65536"),
    );
    let mut instance = spawn_run(&written, dir.path(), "api");
    let address = listening_address(dir.path(), "api", "scoring API listening");
    wait_ready(&address, dir.path(), "api");
    let (_, payload) = valid_events(1).remove(0);
    let valid: Value = serde_json::from_slice(&payload.unwrap()).unwrap();
    let with = |key: &str, value: Value| {
        let mut record = valid.clone();
        match value {
            Value::Null => {
                record.as_object_mut().unwrap().remove(key);
            }
            value => record[key] = value,
        }
        record.to_string()
    };
    let cases = [
        ("not JSON", "{\"event_id\": ".to_owned(), 400, None),
        ("an empty array", "[]".to_owned(), 400, None),
        ("a valid record", valid.to_string(), 200, None),
        (
            "a missing field",
            with("card_id", Value::Null),
            422,
            Some("missing_field"),
        ),
        (
            "a wrong type",
            with("amount", Value::String("twelve".into())),
            422,
            Some("wrong_type"),
        ),
        (
            "a date far in the future",
            with("event_time", Value::String("2999-01-01T00:00:00Z".into())),
            422,
            Some("event_time_out_of_range"),
        ),
        (
            "eleven records",
            Value::Array(vec![valid.clone(); 11]).to_string(),
            413,
            None,
        ),
        (
            "a 100 KB body",
            format!("[{}]", " ".repeat(100_000)),
            413,
            None,
        ),
    ];
    for (what, body, status, kind) in cases {
        let (got, answer) = post(&address, "/v1/score", &body);
        assert_eq!(got, status, "{what}: {answer}");
        if let Some(kind) = kind {
            assert_eq!(answer["error"]["kind"], kind, "{what}: {answer}");
        }
    }
    let (status, answer) = post(
        &address,
        "/v1/score",
        &format!("[{valid}, {}]", with("card_id", Value::Null)),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer[0]["score"].is_number(), "{answer}");
    assert_eq!(answer[1]["error"]["kind"], "missing_field", "{answer}");
    stop_cleanly(&mut instance, dir.path(), "api");
}
