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
    TopicReader, Topics, http_request, listening_address, log_of, produce, spawn_instance,
    spawn_run, stop_cleanly, valid_events,
};
use crate::windows::{
    example_model_inputs, keyed_by_card, keyed_labels, wait_for_labels, wait_for_labels_in,
};

/// `[serve]` on a free port, with `extra` lines.
fn serve_section(extra: &str) -> String {
    format!("\n[serve]\nlisten = \"127.0.0.1:0\"\n{extra}\n")
}

/// The pipeline file with scores carrying their features, the input
/// fetched without Tansu's default 500 ms wait (each round waits for its
/// scores), and a 30 s session: this test's one instance needs no quick
/// failover, and under CI load Tansu once answered no heartbeat for 6 s,
/// revoked the partition and left the rejoined member without one for
/// over a minute (its coordinator, not the engine).
fn with_features_and_quick_fetch(written: &std::path::Path) {
    let text = std::fs::read_to_string(written)
        .unwrap()
        .replace("[model]\n", "[model]\ninclude_features = true\n")
        .replace(
            "\"session.timeout.ms\" = \"6000\"",
            "\"session.timeout.ms\" = \"30000\"",
        )
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

/// The model inputs and score the API gave each event, by event id.
type FromApi = HashMap<String, (f64, BTreeMap<String, f64>)>;

/// Scores each round through the API at `address`, then produces it keyed
/// by card and waits for its scores: the API sees each event's card and
/// terminal exactly as the stream then does. Returns the API's answers and
/// the stream's score records.
async fn score_then_stream(
    address: &str,
    rounds: &[&[Transaction]],
    topics: &Topics,
    logs: &[(&std::path::Path, &str)],
) -> (FromApi, Vec<rdkafka::message::OwnedMessage>) {
    let names = example_model_inputs();
    let mut from_api = FromApi::new();
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    for round in rounds {
        // Under load Tansu can rebalance the group mid-test (a missed
        // heartbeat); the API is then briefly not ready (503), as it must
        // be. Each round waits for it to be ready again.
        let (dir, name) = logs[0];
        wait_ready(address, dir, name);
        let body = serde_json::to_string(round).unwrap();
        let (status, answer) = post(address, "/v1/score?features=true", &body);
        assert_eq!(status, 200, "{answer}");
        for (t, record) in round.iter().zip(answer.as_array().unwrap()) {
            let text = record.to_string();
            let record: ScoreRecord =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(record.event_id, t.event_id);
            from_api.insert(t.event_id.clone(), score_and_inputs(&record, &names));
        }
        produce(&topics.input, &keyed_by_card(round)).await;
        let expected = from_api.len();
        let scored = scores.read_until(Duration::from_secs(60), |m| m.len() >= expected);
        assert!(
            scored,
            "the stream fell behind; logs:\n{}",
            logs.iter()
                .map(|(dir, name)| format!("--- {name}\n{}", log_of(dir, name)))
                .collect::<String>()
        );
    }
    (from_api, scores.messages)
}

/// Every streamed score's model inputs and score equal the API's, and some
/// event read a terminal's labels (so the terminal-risk features were
/// compared, not only zeros).
fn assert_api_equals_stream(
    from_api: &FromApi,
    streamed: &[rdkafka::message::OwnedMessage],
    events: usize,
    rounds: usize,
) {
    let names = example_model_inputs();
    let mut differing = Vec::new();
    for message in streamed {
        let record: ScoreRecord = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let streamed = score_and_inputs(&record, &names);
        let api = &from_api[record.event_id.as_ref()];
        if *api != streamed {
            differing.push((record.event_id.to_string(), api.clone(), streamed));
        }
    }
    assert_eq!(streamed.len(), events);
    assert!(
        differing.is_empty(),
        "{} of {events} events differ between the API and the stream ({rounds} rounds), first: {:?}",
        differing.len(),
        differing.first()
    );
    let risky = from_api
        .values()
        .filter(|(_, inputs)| inputs["terminal_risk_7d"] > 0.0)
        .count();
    assert!(risky > 0, "no event read a terminal's labels");
}

/// The simulated world of the parity tests: 200 cards over
/// STREAMSCORE_PARITY_DAYS days (9 by default: past the 7-day label
/// delay, so the terminal-risk features are read; 28 give 10,299 events).
fn parity_events() -> Vec<Transaction> {
    let days = std::env::var("STREAMSCORE_PARITY_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(9);
    simulate(&SimulationConfig {
        customers: 200,
        terminals: 400,
        days,
        ..SimulationConfig::default()
    })
}

/// Parity against the real broker: every transaction scored by the API
/// just before it is produced, with no other event of its card or terminal
/// in between, gets the features and score the stream then gives it. The
/// labels are folded first, so the terminal-risk features (labels a delay
/// old) are compared too.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_scores_each_transaction_as_the_stream_then_does() {
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let written =
        topics.write_pipeline_with(dir.path(), 500, &serve_section("deadline_ms = 60000"));
    with_features_and_quick_fetch(&written);
    let events = parity_events();
    let mut instance = spawn_run(&written, dir.path(), "api");
    let address = listening_address(dir.path(), "api", "scoring API listening");
    let labels = keyed_labels(&events);
    produce(&topics.labels, &labels).await;
    wait_for_labels(dir.path(), "api", labels.len());
    wait_ready(&address, dir.path(), "api");

    let rounds = rounds(&events);
    let (from_api, streamed) =
        score_then_stream(&address, &rounds, &topics, &[(dir.path(), "api")]).await;
    stop_cleanly(&mut instance, dir.path(), "api");
    eprintln!(
        "parity: {} transactions in {} requests",
        events.len(),
        rounds.len()
    );
    assert_api_equals_stream(&from_api, &streamed, events.len(), rounds.len());
}

/// `GET /v1/owner?key=` on each instance, until both name a holder for
/// every key, name the same one, and between them name both instances:
/// the group has settled and each has read the other's announcements.
/// Returns each key's partition and holder.
fn wait_for_owners(
    addresses: &[&str],
    keys: &[&str],
    logs: &[(&std::path::Path, &str)],
) -> HashMap<String, (i64, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut owners = HashMap::new();
        let mut settled = true;
        for key in keys {
            let answers: Vec<(u16, Value)> = addresses
                .iter()
                .map(|address| {
                    let (status, text) =
                        http_request(address, "GET", &format!("/v1/owner?key={key}"), &[], "");
                    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
                })
                .collect();
            let first = &answers[0].1;
            settled &= answers.iter().all(|(status, answer)| {
                *status == 200
                    && answer["url"] == first["url"]
                    && answer["partition"] == first["partition"]
            });
            if let (Some(partition), Some(url)) =
                (first["partition"].as_i64(), first["url"].as_str())
            {
                owners.insert((*key).to_owned(), (partition, url.to_owned()));
            }
        }
        let holders: HashSet<&String> = owners.values().map(|(_, url)| url).collect();
        if settled && holders.len() == addresses.len() {
            return owners;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the instances never agreed on the partitions' holders; logs:\n{}",
            logs.iter()
                .map(|(dir, name)| format!("--- {name}\n{}", log_of(dir, name)))
                .collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Two instances, each holding part of three partitions (windows per
/// partition, state changelog): every round is sent to `a` alone, which
/// scores the records it holds and forwards the others to `b`. Each event's
/// features and score equal the stream's, as with one instance; each card's
/// records land on the partition `GET /v1/owner` named, as librdkafka's
/// producer partitions them. Both instances stop with SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn each_record_is_scored_by_the_instance_holding_its_partition() {
    let topics = Topics::create(3).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let written = topics.write_pipeline_with(d, 500, &serve_section("deadline_ms = 60000"));
    with_features_and_quick_fetch(&written);
    crate::scale::with_changelog(&written);
    let events = parity_events();
    let logs = [(d, "a"), (d, "b")];
    let mut a = spawn_instance(&written, d, "a");
    let a_address = listening_address(d, "a", "scoring API listening");
    let mut b = spawn_instance(&written, d, "b");
    let b_address = listening_address(d, "b", "scoring API listening");
    let cards: Vec<&str> = {
        let unique: std::collections::BTreeSet<&str> =
            events.iter().map(|t| t.card_id.as_str()).collect();
        unique.into_iter().collect()
    };
    let owners = wait_for_owners(&[&a_address, &b_address], &cards, &logs);
    let labels = keyed_labels(&events);
    produce(&topics.labels, &labels).await;
    wait_for_labels_in(d, &["a", "b"], labels.len());

    let rounds = rounds(&events);
    let (from_api, streamed) = score_then_stream(&a_address, &rounds, &topics, &logs).await;
    stop_cleanly(&mut b, d, "b");
    stop_cleanly(&mut a, d, "a");
    eprintln!(
        "routed parity: {} transactions in {} requests to a; {} of the cards held by b",
        events.len(),
        rounds.len(),
        owners
            .values()
            .filter(|(_, url)| url.ends_with(&b_address))
            .count()
    );
    assert_api_equals_stream(&from_api, &streamed, events.len(), rounds.len());
    let card_of: HashMap<&str, &str> = events
        .iter()
        .map(|t| (t.event_id.as_str(), t.card_id.as_str()))
        .collect();
    for message in &streamed {
        let record: ScoreRecord = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let card = card_of[record.event_id.as_ref()];
        assert_eq!(
            i64::from(message.partition()),
            owners[card].0,
            "card {card} landed on another partition than /v1/owner named"
        );
    }
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
            "a record that is not an object",
            "[5]".to_owned(),
            200,
            None,
        ),
        (
            "a duplicate key",
            valid.to_string().replacen('{', "{\"amount\": 1.0, ", 1),
            422,
            Some("duplicate_key"),
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
    let (status, answer) = post(&address, "/v1/score", "[5]");
    assert_eq!(
        answer[0]["error"]["kind"], "not_an_object",
        "{status} {answer}"
    );
    let (status, answer) = post(&address, "/v1/score", "\"a string\"");
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["kind"], "not_an_object", "{answer}");
    stop_cleanly(&mut instance, dir.path(), "api");
}

/// The partition the API routes a key to is the one librdkafka's producer
/// gives it, with either partitioner a switch may use (librdkafka's CRC-32
/// default, the Java client's murmur2). On the mock cluster.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_computes_the_partition_a_producer_gives_a_key() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use streamscore::config::Partitioner;
    use streamscore::kafka::partitioner::partition_for_key;
    let mock = MockCluster::new(1).unwrap();
    let partitions = 7;
    mock.create_topic("keys", partitions, 1).unwrap();
    for partitioner in [Partitioner::Consistent, Partitioner::Murmur2] {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("partitioner", partitioner.librdkafka_name())
            .create()
            .unwrap();
        let mut seen = HashSet::new();
        for i in 0..200 {
            let key = format!("card-{i:05}");
            let partition = producer
                .send(
                    FutureRecord::to("keys").key(&key).payload("{}"),
                    Duration::from_secs(10),
                )
                .await
                .unwrap()
                .partition;
            assert_eq!(
                partition,
                partition_for_key(partitioner, key.as_bytes(), partitions),
                "{key} with {partitioner:?}"
            );
            seen.insert(partition);
        }
        assert_eq!(
            seen.len(),
            partitions as usize,
            "keys reach every partition"
        );
    }
}

/// One valid transaction, as JSON.
fn one_transaction() -> Value {
    let (_, payload) = valid_events(1).remove(0);
    serde_json::from_slice(&payload.unwrap()).unwrap()
}

/// Limits at their defaults, and clients that do not finish: 10,000
/// records are past `max_items` (1,000), a 1 MB record is what the stream
/// would dead-letter as oversized, and clients that trickle their bodies
/// neither hold up the others nor their own connections past 5 s. On the
/// mock cluster: nothing here needs the real broker.
#[tokio::test(flavor = "multi_thread")]
async fn limits_and_slow_clients_are_answered_and_hold_no_one_up() {
    use std::io::{Read, Write};
    let mock = MockCluster::new(1).unwrap();
    let topics = Topics::on_mock(&mock, 1);
    let dir = tempfile::tempdir().unwrap();
    let written =
        topics.write_pipeline_with(dir.path(), 100, &serve_section("deadline_ms = 60000"));
    let mut instance = spawn_run(&written, dir.path(), "api");
    let address = listening_address(dir.path(), "api", "scoring API listening");
    wait_ready(&address, dir.path(), "api");
    let valid = one_transaction();

    let many = Value::Array(vec![valid.clone(); 10_000]).to_string();
    let (status, answer) = post(&address, "/v1/score", &many);
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("serve.max_items"),
        "{answer}"
    );

    let mut huge = valid.clone();
    huge["terminal_id"] = Value::String("T".repeat(1 << 20));
    let (status, answer) = post(&address, "/v1/score", &huge.to_string());
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["kind"], "oversized", "{answer}");

    // Twenty clients send their headers and half their body, then stall.
    let body = valid.to_string();
    let mut stalled: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            let head = format!(
                "POST /v1/score HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream
                .write_all(&body.as_bytes()[..body.len() / 2])
                .unwrap();
            stream
        })
        .collect();
    let started = std::time::Instant::now();
    let (status, answer) = post(&address, "/v1/score", &body);
    assert_eq!(status, 200, "a request behind stalled clients: {answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stalled clients held the request up for {:?}",
        started.elapsed()
    );
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut response = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&response).contains("\r\n\r\n{") {
            let read = stream
                .read(&mut buffer)
                .expect("the server answers a stalled client");
            assert!(read > 0, "closed without an answer");
            response.extend_from_slice(&buffer[..read]);
        }
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    stop_cleanly(&mut instance, dir.path(), "api");
}

/// Past `serve.deadline_ms`: a 504 saying so, or with `serve.fallback` the
/// fallback decision for every record, marked. A deadline of 1 ms and
/// 5,000 records are past it on any machine.
#[tokio::test(flavor = "multi_thread")]
async fn past_the_deadline_the_answer_is_a_504_or_the_fallback() {
    let mock = MockCluster::new(1).unwrap();
    let topics = Topics::on_mock(&mock, 1);
    let dir = tempfile::tempdir().unwrap();
    let many = Value::Array(vec![one_transaction(); 5_000]).to_string();
    for (name, fallback) in [("none", None), ("flag", Some("flag"))] {
        let serve = format!(
            "deadline_ms = 1\nmax_items = 10000\nfallback = \"{}\"",
            fallback.unwrap_or("none")
        );
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let written = topics.write_pipeline_with(&sub, 100, &serve_section(&serve));
        let mut instance = spawn_run(&written, &sub, "api");
        let address = listening_address(&sub, "api", "scoring API listening");
        wait_ready(&address, &sub, "api");
        let (status, answer) = post(&address, "/v1/score", &many);
        match fallback {
            None => {
                assert_eq!(status, 504, "{answer}");
                assert!(
                    answer["error"]
                        .as_str()
                        .unwrap()
                        .contains("serve.deadline_ms"),
                    "{answer}"
                );
            }
            Some(decision) => {
                assert_eq!(status, 200, "{answer}");
                let records = answer.as_array().unwrap();
                assert_eq!(records.len(), 5_000);
                assert!(
                    records
                        .iter()
                        .all(|r| r["decision"] == decision && r["fallback"] == true),
                    "{}",
                    records[0]
                );
            }
        }
        let metrics =
            crate::support::http_get(&crate::support::admin_address(&sub, "api"), "/metrics").1;
        let counted = crate::support::sample_sum(&metrics, "streamscore_requests_total", &[]);
        assert!(counted.is_some_and(|n| n >= 1.0), "{metrics}");
        stop_cleanly(&mut instance, &sub, "api");
    }
}

/// The stream and the API at once, against the real broker: a backlog of
/// simulated transactions is waiting when the instance starts, and four
/// clients send the API transactions without pause until the stream has
/// scored the backlog. Every event is scored exactly once (Tansu on
/// SQLite counts exactly), none is dead-lettered, and the API answered
/// throughout. How much the load slows the stream is a figure for the
/// bench (`scripts/bench_api.sh --during-backlog`), not for a test.
#[tokio::test(flavor = "multi_thread")]
async fn the_stream_scores_its_whole_backlog_while_the_api_is_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let written =
        topics.write_pipeline_with(dir.path(), 500, &serve_section("deadline_ms = 60000"));
    let events = simulate(&SimulationConfig {
        customers: 200,
        terminals: 400,
        days: 10,
        ..SimulationConfig::default()
    });
    produce(&topics.input, &keyed_by_card(&events)).await;
    let mut instance = spawn_run(&written, dir.path(), "api");
    let address = listening_address(dir.path(), "api", "scoring API listening");

    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (done, answered, address) =
                (Arc::clone(&done), Arc::clone(&answered), address.clone());
            let requests: Vec<String> = events
                .iter()
                .skip(client)
                .step_by(4)
                .map(|t| serde_json::to_string(t).unwrap())
                .collect();
            std::thread::spawn(move || {
                let mut statuses = HashMap::<u16, usize>::new();
                for body in requests.iter().cycle() {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, answer) = post(&address, "/v1/score", body);
                    if status == 200 {
                        assert!(answer["score"].is_number(), "{answer}");
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    *statuses.entry(status).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let mut scores = TopicReader::new(&topics.output, 1);
    let complete = scores.read_until(Duration::from_secs(300), |m| m.len() >= events.len());
    let answered_during_backlog = answered.load(Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    let mut statuses = HashMap::<u16, usize>::new();
    for client in clients {
        for (status, count) in client.join().unwrap() {
            *statuses.entry(status).or_default() += count;
        }
    }
    assert!(
        complete,
        "{} of {} events scored; log:\n{}",
        scores.messages.len(),
        events.len(),
        log_of(dir.path(), "api")
    );
    // Anything that came late would be a duplicate.
    scores.read_until(Duration::from_secs(3), |_| false);
    stop_cleanly(&mut instance, dir.path(), "api");
    eprintln!(
        "backlog of {} events scored while the API answered {answered_during_backlog} requests; statuses {statuses:?}",
        events.len()
    );
    let ids: HashSet<String> = scores
        .messages
        .iter()
        .map(|m| {
            let record: ScoreRecord = serde_json::from_slice(m.payload().unwrap()).unwrap();
            record.event_id.to_string()
        })
        .collect();
    assert_eq!(ids.len(), events.len(), "every event scored");
    assert_eq!(scores.messages.len(), events.len(), "and scored once");
    let mut dead = TopicReader::new(&topics.dead_letters, 1);
    dead.read_until(Duration::from_secs(2), |_| false);
    assert!(
        dead.messages.is_empty(),
        "{} dead letters",
        dead.messages.len()
    );
    // Only 200s, and 503s before the instance was ready.
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        answered_during_backlog > 0,
        "the API answered nothing during the backlog"
    );
}
