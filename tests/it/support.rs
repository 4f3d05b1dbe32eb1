//! Helpers for tests against a real broker and the real binary.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};

/// A message to produce: (key, payload).
pub type KeyedPayload = (Option<Vec<u8>>, Option<Vec<u8>>);

pub fn brokers() -> String {
    std::env::var("STREAMSCORE_TEST_BROKERS").expect(
        "STREAMSCORE_TEST_BROKERS is not set: run scripts/test.sh, which starts a Tansu broker",
    )
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Topics {
    /// Tansu's (`brokers()`), or a mock cluster's.
    pub brokers: String,
    pub input: String,
    pub output: String,
    pub dead_letters: String,
    /// Fraud labels (the example pipeline's `[labels]`).
    pub labels: String,
    pub group: String,
    pub partitions: i32,
}

impl Topics {
    fn named(brokers: String, partitions: i32) -> Self {
        Self {
            brokers,
            input: unique("in"),
            output: unique("out"),
            dead_letters: unique("dlq"),
            labels: unique("labels"),
            group: unique("group"),
            partitions,
        }
    }

    fn all(&self) -> [&str; 4] {
        [&self.input, &self.output, &self.dead_letters, &self.labels]
    }

    /// Fresh topics on the test broker (Tansu).
    pub async fn create(partitions: i32) -> Self {
        let topics = Self::named(brokers(), partitions);
        streamscore::kafka::admin::ensure_topics(&topics.brokers, &topics.all(), partitions)
            .await
            .expect("topics are created");
        topics
    }

    /// Fresh topics on librdkafka's mock cluster, for what Tansu cannot do:
    /// a topic that goes missing while an instance runs (its DeleteTopics
    /// removes every topic), set with `MockCluster::topic_error`.
    pub fn on_mock(mock: &MockCluster<'_, DefaultProducerContext>, partitions: i32) -> Self {
        let mut topics = Self::named(mock.bootstrap_servers(), partitions);
        topics.recreate_on(mock);
        topics
    }

    /// The same topics, empty, on (another) mock cluster: as if deleted
    /// and created again.
    pub fn recreate_on(&mut self, mock: &MockCluster<'_, DefaultProducerContext>) {
        self.brokers = mock.bootstrap_servers();
        for topic in self.all() {
            mock.create_topic(topic, self.partitions, 1)
                .expect("the mock cluster creates topics");
        }
    }

    /// A pipeline file for these topics, using the repository's schema, SQL
    /// and model by absolute path.
    pub fn write_pipeline(&self, dir: &Path, max_rows: usize) -> PathBuf {
        self.write_pipeline_with(dir, max_rows, "")
    }

    /// [`Topics::write_pipeline`] with `extra` TOML sections appended.
    pub fn write_pipeline_with(&self, dir: &Path, max_rows: usize, extra: &str) -> PathBuf {
        let mut text = self.kafka_sections(
            max_rows,
            &repo_path("pipelines/fraud.sql"),
            &repo_path("pipelines/models/fraud-lr"),
        );
        text.push_str(&state_sections(dir, &self.labels));
        text.push_str(extra);
        let path = dir.join("pipeline.toml");
        std::fs::write(&path, text).expect("pipeline file is written");
        path
    }

    /// Every section but the state's: these topics, the repository's
    /// schema, and `sql` and `model`.
    pub fn kafka_sections(&self, max_rows: usize, sql: &Path, model: &Path) -> String {
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topic = "{input}"
output_topic = "{output}"
dead_letter_topic = "{dlq}"
[kafka.consumer]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"auto.commit.interval.ms" = "200"
[batch]
max_rows = {max_rows}
linger_ms = 10
# Overlapping batches: the harder path for the commit rule (the default is 1).
max_in_flight = 3
[schema]
path = "{schema}"
[transform]
sql = "{sql}"
[model]
bundle = "{model}"
[admin]
listen = "127.0.0.1:0"
[telemetry]
status_interval_ms = 1000
"#,
            brokers = self.brokers,
            group = self.group,
            input = self.input,
            output = self.output,
            dlq = self.dead_letters,
            schema = repo_path("schemas/transaction.json").display(),
            sql = sql.display(),
            model = model.display(),
        )
    }
}

/// A `[state]` in `dir` and the example pipeline's `[labels]` (reading
/// `labels_topic`) and `[windows]` (the last sections of
/// pipelines/fraud.toml), which pipelines/fraud.sql reads.
pub fn state_sections(dir: &Path, labels_topic: &str) -> String {
    let example = std::fs::read_to_string(repo_path("pipelines/fraud.toml"))
        .expect("the example pipeline is readable");
    let sections = &example[example.find("\n[labels]").expect("fraud.toml has [labels]")..];
    let sections = sections
        .replace(
            "topic = \"transaction-labels\"",
            &format!("topic = \"{labels_topic}\""),
        )
        .replace(
            "schema = \"../schemas/label.json\"",
            &format!("schema = \"{}\"", repo_path("schemas/label.json").display()),
        );
    // Checkpoints every 200 ms rather than every second, so that a test
    // stopping an instance early still finds state written.
    format!(
        "\n[state]\npath = \"{}\"\ncheckpoint_ms = 200\n{sections}\n",
        dir.join("state").display()
    )
}

/// The example pipeline with its state in `dir`, so that tests running at
/// once do not share (and lock) one RocksDB.
pub fn example_pipeline(dir: &Path, brokers: Option<&str>) -> streamscore::config::Pipeline {
    let mut pipeline =
        streamscore::config::Pipeline::load(&repo_path("pipelines/fraud.toml"), brokers)
            .expect("the example pipeline loads");
    pipeline
        .use_state_dir(dir.join("state"))
        .expect("the example pipeline keeps state");
    pipeline
}

/// A bundle payload with one coefficient changed: its first number's first
/// digit, so that its checksum no longer holds whatever the model.
pub fn tampered_payload(payload: &str) -> String {
    let at = payload
        .find(|c: char| c.is_ascii_digit())
        .expect("the payload has a number");
    let digit = payload.as_bytes()[at] - b'0';
    let mut tampered = payload.to_owned();
    tampered.replace_range(at..=at, &((digit + 1) % 10).to_string());
    tampered
}

/// Produces `records` (key, payload) and returns where each landed.
pub async fn produce(topic: &str, records: &[KeyedPayload]) -> Vec<(i32, i64)> {
    produce_at(&brokers(), topic, records).await
}

/// [`produce`] to the cluster at `brokers`.
pub async fn produce_at(brokers: &str, topic: &str, records: &[KeyedPayload]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        // A retried request must not land after later ones: the parity
        // tests compare against `train` in event-time order, and in a CI
        // run under load a retry reordered the input (9,570 of 14,920
        // events then differed, mostly in a mean's last bit).
        .set("enable.idempotence", "true")
        // Room for the oversized records the hardening tests send.
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer is created");
    let sends = records.iter().map(|(key, payload)| {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic);
        if let Some(key) = key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = payload {
            record = record.payload(payload.as_slice());
        }
        producer.send(record, Timeout::Never)
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| {
            let delivery = r.expect("the broker acknowledges");
            (delivery.partition, delivery.offset)
        })
        .collect()
}

/// Reads a topic from the beginning of every partition, without a group.
pub struct TopicReader {
    consumer: BaseConsumer,
    pub messages: Vec<OwnedMessage>,
}

impl TopicReader {
    pub fn new(topic: &str, partitions: i32) -> Self {
        Self::at(&brokers(), topic, partitions)
    }

    /// A reader of the cluster at `brokers`.
    pub fn at(brokers: &str, topic: &str, partitions: i32) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader is created");
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .expect("a valid partition");
        }
        consumer.assign(&assignment).expect("assignment works");
        Self {
            consumer,
            messages: Vec::new(),
        }
    }

    /// Reads what is there now, waiting up to `wait` for the first message.
    pub fn poll_for(&mut self, wait: Duration) -> usize {
        let before = self.messages.len();
        let mut timeout = wait;
        while let Some(result) = self.consumer.poll(timeout) {
            self.messages.push(result.expect("reading works").detach());
            timeout = Duration::from_millis(50);
        }
        self.messages.len() - before
    }

    /// Reads until `done` holds for what was read; false if it still does
    /// not after `limit`.
    pub fn read_until(&mut self, limit: Duration, done: impl Fn(&[OwnedMessage]) -> bool) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while !done(&self.messages) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            self.poll_for(Duration::from_millis(200));
        }
        true
    }
}

/// (partition, offset) of the input each score record answers.
pub fn scored_offsets(scores: &[OwnedMessage]) -> HashMap<(i32, i64), usize> {
    let mut counts = HashMap::new();
    for message in scores {
        let record: serde_json::Value =
            serde_json::from_slice(message.payload().expect("a score has a payload"))
                .expect("a score is JSON");
        let partition = record["partition"].as_i64().expect("partition") as i32;
        let offset = record["offset"].as_i64().expect("offset");
        *counts.entry((partition, offset)).or_default() += 1;
    }
    counts
}

pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A header's value read as a number (or anything else `parse` makes).
pub fn parsed_header<T: std::str::FromStr>(message: &OwnedMessage, name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    header(message, name)
        .unwrap_or_else(|| panic!("no header {name}"))
        .parse()
        .unwrap()
}

/// `streamscore run` as a child process, its log in `dir/<name>.log`; its
/// state where the pipeline says (a restarted instance finds it there).
pub fn spawn_run(pipeline: &Path, dir: &Path, name: &str) -> Child {
    spawn_run_with(pipeline, dir, name, &[])
}

/// [`spawn_run`] with its own state directory, `dir/state-<name>`: for
/// instances running side by side, as each needs its own.
pub fn spawn_instance(pipeline: &Path, dir: &Path, name: &str) -> Child {
    let state = dir.join(format!("state-{name}"));
    spawn_run_with(
        pipeline,
        dir,
        name,
        &["--state".as_ref(), state.as_os_str()],
    )
}

fn spawn_run_with(pipeline: &Path, dir: &Path, name: &str, args: &[&std::ffi::OsStr]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .args(["run", "--pipeline"])
        .arg(pipeline)
        .args(args)
        .env("RUST_LOG", "streamscore=debug,warn")
        .env_remove("STREAMSCORE_BROKERS")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("streamscore starts")
}

/// Stops `streamscore run` with SIGTERM and requires a clean exit (0)
/// within 30 s; on failure the message carries the instance's log.
pub fn stop_cleanly(child: &mut Child, dir: &Path, name: &str) {
    terminate(child);
    let Some(status) = wait_exit(child, Duration::from_secs(30)) else {
        let _ = child.kill();
        panic!("{name} did not exit within 30 s of SIGTERM");
    };
    assert!(
        status.success(),
        "{name} exited with {status}; log:\n{}",
        log_of(dir, name)
    );
}

/// Simulated valid transactions as (key, payload).
pub fn valid_events(count: usize) -> Vec<KeyedPayload> {
    let config = streamscore::simulate::SimulationConfig {
        days: (count / 1500 + 1) as u32,
        ..Default::default()
    };
    let mut all = streamscore::simulate::simulate(&config);
    assert!(all.len() >= count, "the simulator made only {}", all.len());
    all.truncate(count);
    all.into_iter()
        .map(|t| {
            (
                Some(t.card_id.clone().into_bytes()),
                Some(serde_json::to_vec(&t).expect("serialises")),
            )
        })
        .collect()
}

pub fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Per partition, the group's committed offset (None: nothing committed)
/// and the topic's end offset.
pub fn committed_and_end(group: &str, topic: &str, partitions: i32) -> Vec<(Option<i64>, i64)> {
    committed_and_end_at(&brokers(), group, topic, partitions)
}

/// [`committed_and_end`] on the cluster at `brokers`.
pub fn committed_and_end_at(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<i64>, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("checker is created");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets are fetched");
    (0..partitions)
        .map(|p| {
            let offset = committed
                .find_partition(topic, p)
                .expect("partition is listed")
                .offset();
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks are fetched");
            (offset.to_raw().filter(|&o| o >= 0), high)
        })
        .collect()
}

/// Sends SIGTERM to the child.
pub fn terminate(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

/// Waits up to `limit` for the child to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait works") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Waits up to `limit` for `needle` to appear in the instance's log.
pub fn wait_for_log(dir: &Path, name: &str, needle: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if log_of(dir, name).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A plain HTTP/1.0 GET: (status code, body).
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    http_request(address, "GET", path, &[], "")
}

/// A plain HTTP/1.0 request with extra header lines: (status code, body).
pub fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("the admin server accepts");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The sum of every sample of `name` whose labels contain each of `labels`.
pub fn sample_sum(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

pub fn admin_address(dir: &Path, name: &str) -> String {
    listening_address(dir, name, "admin server listening")
}

/// The address an instance logged beside `needle` (`... address=HOST:PORT`).
pub fn listening_address(dir: &Path, name: &str, needle: &str) -> String {
    assert!(
        wait_for_log(dir, name, needle, Duration::from_secs(60)),
        "{}",
        log_of(dir, name)
    );
    let log = log_of(dir, name);
    let line = log.lines().find(|l| l.contains(needle)).unwrap();
    line.split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the log names the address")
        .to_owned()
}
