//! `streamscore demo`: the whole loop in one process. An embedded
//! Kafka-protocol broker (librdkafka's mock cluster) unless `--brokers` is
//! given, simulated card transactions, a model trained on their history and
//! registered, the app (`app::run`, as `streamscore run` runs it) scoring the
//! live part, and halfway through a second model trained (on the history and
//! the labelled first half) and promoted while the stream runs. Live progress
//! and a summary that counts the scores of each version.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::app::{self, Shutdown};
use crate::config::{ModelSource, Pipeline};
use crate::drift::alerts::Alert;
use crate::engine::EngineState;
use crate::fraud_metrics::auc_roc;
use crate::kafka::admin;
use crate::kafka::clients::ClientBuilder;
use crate::model::Bundle;
use crate::model::serving::registry::{Change, Registry};
use crate::output::{Decision, ScoreRecord};
use crate::simulate::{SimulationConfig, Transaction, simulate};
use crate::telemetry::{Snapshot, Stats};
use crate::train;
use crate::train::fit::TrainOptions;

/// How long the demo waits without progress before it gives up (the group
/// join alone takes about 3 s on the embedded broker).
const STALL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// A real cluster; `None` runs the embedded mock broker.
    pub brokers: Option<String>,
    /// Live events to stream (the history before them trains the model).
    pub events: usize,
    pub history_days: u32,
    pub partitions: i32,
    pub seed: u64,
    /// Triple the amounts of the second half of the live events: a real
    /// shift, so that the drift alert path shows.
    pub shift: bool,
}

/// Malformed records streamed with the live events, one per error class.
pub const MALFORMED: &[&[u8]] = &[
    b"",
    b"{not json",
    b"{\"event_id\":\"\xff\xfe\"}",
    br#"{"event_id":"bad-1","card_id":"c","terminal_id":"t","event_time":"2026-05-01T00:00:00Z"}"#,
    br#"{"event_id":"bad-2","card_id":"c","terminal_id":"t","amount":"lots","event_time":"2026-05-01T00:00:00Z"}"#,
    b"[\"an array\"]",
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Step(String),
}

fn step<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> DemoError {
    move |e| DemoError::Step(format!("{what}: {e}"))
}

#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub produced: usize,
    pub malformed: usize,
    pub stats: Snapshot,
    pub scores_read_back: usize,
    pub distinct_events_scored: usize,
    pub live_auc: Option<f64>,
    pub flagged_fraud: usize,
    pub fraud: usize,
    pub holdout_auc: Option<f64>,
    pub elapsed: Duration,
    /// (version, scores it gave), in the order the versions served.
    pub scores_by_version: Vec<(String, usize)>,
    /// What drift monitoring raised and cleared, from the alerts topic.
    pub drift_alerts: Vec<Alert>,
}

pub async fn run(pipeline_path: &Path, options: DemoOptions) -> Result<DemoSummary, DemoError> {
    // Kept alive until the demo ends: the embedded broker and the state.
    let Setup {
        _mock,
        _state_dir,
        mut pipeline,
    } = set_up(pipeline_path, &options).await?;

    let (history, live) = simulate_split(&options);
    eprintln!(
        "simulated {} historic and {} live transactions",
        history.len(),
        live.len()
    );
    let (model, holdout_auc) = train_on(&pipeline, &history, "1").await?;
    // The app follows a registry, as a production pipeline would.
    let registry_dir = tempfile::tempdir().map_err(step("create the demo registry"))?;
    let registry = Registry::open(registry_dir.path());
    registry
        .register(&model, "demo")
        .map_err(step("register the first model"))?;
    pipeline.model = ModelSource::Registry {
        dir: registry_dir.path().to_path_buf(),
        name: model.name().to_owned(),
        poll: Duration::from_millis(200),
    };
    serve_like_a_live_stream(&mut pipeline);
    // The stream starts where history ends: its windows start full, and
    // the labels not yet arrived by then come on the labels topic, each
    // once the stream has reached its transaction's time plus the delay.
    warm_state(&pipeline, &history).await?;
    let mut labels = LabelFeed::new(&pipeline, &history, &live);

    // The first half of the stream now, with the malformed records; the
    // second half once version 2 is promoted.
    let half = live.len() / 2;
    let first_labels = labels.due(live[..half].last());
    let second_labels = labels.due(live.last());
    produce_labels(&pipeline, &first_labels).await?;
    let first_half = FirstHalf {
        pipeline: &pipeline,
        events: &live[..half],
        labels: first_labels.len(),
    };
    let produced = half + MALFORMED.len() + (live.len() - half);
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let shutdown = Shutdown::default();
    let second_half = SecondHalf {
        pipeline: &pipeline,
        registry: &registry,
        name: model.name(),
        // The labels of the first half have arrived by then.
        history: history.iter().chain(&live[..half]).cloned().collect(),
        events: &live[half..],
        labels: second_labels,
    };
    // Produced so far: the first half once its labels are folded, the
    // second once version 2 is trained and its labels are folded (the
    // stream waits meanwhile, which is not a stall).
    let sent = AtomicUsize::new(0);
    let halves = async {
        let first = first_half.after_labels(&sent, &stats, &shutdown).await?;
        second_half
            .after(first, first_labels.len(), &sent, &stats, &shutdown)
            .await
    };
    let (result, (), retrained) = tokio::join!(
        app::run(&pipeline, Arc::clone(&stats), &shutdown),
        watch_progress(&stats, produced, &sent, &shutdown),
        halves,
    );
    eprintln!();
    result.map_err(step("run the pipeline"))?;
    retrained?;
    let stats = stats.snapshot();
    let elapsed = started.elapsed();

    let scores = read_scores(&pipeline, stats.scored as usize).await?;
    let drift_alerts = read_alerts(&pipeline).await?;
    Ok(summarise(
        &live,
        &scores,
        Counts {
            produced,
            stats,
            holdout_auc,
            elapsed,
            drift_alerts,
        },
    ))
}

/// The demo's broker, state directory and pipeline (its topics created).
struct Setup {
    /// Dropping it stops the embedded broker.
    _mock: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    /// The engine's window state (RocksDB), removed when dropped.
    _state_dir: tempfile::TempDir,
    pipeline: Pipeline,
}

async fn set_up(pipeline_path: &Path, options: &DemoOptions) -> Result<Setup, DemoError> {
    let mock = match options.brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1).map_err(step("start the embedded broker"))?),
    };
    let brokers = match (&options.brokers, &mock) {
        (Some(b), _) => b.clone(),
        (None, Some(m)) => m.bootstrap_servers(),
        (None, None) => unreachable!("a mock cluster is started when no brokers are given"),
    };
    let mut pipeline =
        Pipeline::load(pipeline_path, Some(&brokers)).map_err(step("load the pipeline"))?;
    let state_dir = tempfile::tempdir().map_err(step("create the demo state directory"))?;
    if pipeline.state.is_some() {
        pipeline
            .use_state_dir(state_dir.path().to_owned())
            .map_err(step("place the demo state"))?;
    }
    own_topics(&mut pipeline, &brokers, mock.as_ref(), options).await?;
    eprintln!(
        "streamscore demo: broker {brokers}, topic {}",
        pipeline.kafka.input_topic
    );
    Ok(Setup {
        _mock: mock,
        _state_dir: state_dir,
        pipeline,
    })
}

/// Topics of the demo's own (named by run, so runs never mix), created on
/// the embedded broker or the given cluster.
async fn own_topics(
    pipeline: &mut Pipeline,
    brokers: &str,
    mock: Option<&MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    options: &DemoOptions,
) -> Result<(), DemoError> {
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let k = &mut pipeline.kafka;
    k.input_topic = format!("demo-transactions-{run_id}");
    k.output_topic = format!("demo-scores-{run_id}");
    k.dead_letter_topic = format!("demo-dead-letters-{run_id}");
    k.group_id = format!("demo-{run_id}");
    if let Some(labels) = &mut pipeline.labels {
        labels.topic = format!("demo-labels-{run_id}");
    }
    let k = &pipeline.kafka;
    let topics: Vec<&str> = [
        k.input_topic.as_str(),
        k.output_topic.as_str(),
        k.dead_letter_topic.as_str(),
    ]
    .into_iter()
    .chain(pipeline.labels.as_ref().map(|l| l.topic.as_str()))
    .chain(k.alerts_topic.as_deref())
    .collect();
    match mock {
        Some(m) => {
            let partitions = options.partitions.max(mock_partitions_for(options.events));
            for t in topics {
                m.create_topic(t, partitions, 1)
                    .map_err(step("create a topic"))?;
            }
        }
        None => admin::ensure_topics(brokers, &topics, options.partitions)
            .await
            .map_err(step("create the demo topics"))?,
    }
    Ok(())
}

/// What the run gave besides the scores read back.
struct Counts {
    produced: usize,
    stats: Snapshot,
    holdout_auc: Option<f64>,
    elapsed: Duration,
    drift_alerts: Vec<Alert>,
}

/// The scores read back, tallied by version and measured against the
/// live transactions' labels.
fn summarise(
    live: &[Transaction],
    scores: &[(String, f64, Decision, String)],
    counts: Counts,
) -> DemoSummary {
    let mut scores_by_version: Vec<(String, usize)> = Vec::new();
    for (_, _, _, version) in scores {
        match scores_by_version.iter_mut().find(|(v, _)| v == version) {
            Some((_, n)) => *n += 1,
            None => scores_by_version.push((version.clone(), 1)),
        }
    }
    let labels: HashMap<&str, bool> = live
        .iter()
        .map(|t| (t.event_id.as_str(), t.is_fraud))
        .collect();
    let mut pairs = Vec::with_capacity(scores.len());
    let mut flagged_fraud = 0;
    for (event_id, score, decision, _) in scores {
        if let Some(&fraud) = labels.get(event_id.as_str()) {
            pairs.push((*score, fraud));
            flagged_fraud += usize::from(fraud && *decision == Decision::Flag);
        }
    }
    let distinct: std::collections::HashSet<&str> = scores.iter().map(|s| s.0.as_str()).collect();
    let (s, l): (Vec<f64>, Vec<bool>) = pairs.into_iter().unzip();
    DemoSummary {
        produced: counts.produced,
        malformed: MALFORMED.len(),
        stats: counts.stats,
        scores_read_back: scores.len(),
        distinct_events_scored: distinct.len(),
        live_auc: auc_roc(&s, &l),
        flagged_fraud,
        fraud: live.iter().filter(|t| t.is_fraud).count(),
        holdout_auc: counts.holdout_auc,
        elapsed: counts.elapsed,
        scores_by_version,
        drift_alerts: counts.drift_alerts,
    }
}

/// librdkafka's mock broker keeps at most 5 MiB per partition and silently
/// drops older messages beyond that, as retention would. Spread the scores
/// (the largest records, about 450 bytes with three reasons named after
/// window features) so that no partition fills up.
fn mock_partitions_for(events: usize) -> i32 {
    const BYTES_PER_PARTITION: usize = 4 * 1024 * 1024;
    const BYTES_PER_SCORE: usize = 600;
    i32::try_from((events * BYTES_PER_SCORE).div_ceil(BYTES_PER_PARTITION)).unwrap_or(i32::MAX)
}

/// How much `--shift` multiplies the live amounts by.
const SHIFT_FACTOR: f64 = 3.0;

fn simulate_split(options: &DemoOptions) -> (Vec<Transaction>, Vec<Transaction>) {
    // About 2,000 transactions a day with the default world; add days until
    // the live part has enough events.
    let live_days = (options.events / 1_500 + 1) as u32;
    let all = simulate(&SimulationConfig {
        days: options.history_days + live_days,
        seed: options.seed,
        ..SimulationConfig::default()
    });
    let cut = chrono::Duration::days(i64::from(options.history_days));
    let start = SimulationConfig::default().start;
    let (history, mut live): (Vec<_>, Vec<_>) = all.into_iter().partition(|t| t.time < start + cut);
    live.truncate(options.events);
    if options.shift {
        let half = live.len() / 2;
        for t in &mut live[half..] {
            t.amount *= SHIFT_FACTOR;
        }
        if let Some(first) = live.get(half) {
            eprintln!(
                "--shift: amounts x{SHIFT_FACTOR} from {} ({} live transactions)",
                first.time,
                live.len() - half
            );
        }
    }
    (history, live)
}

async fn train_on(
    pipeline: &Pipeline,
    history: &[Transaction],
    version: &str,
) -> Result<(Bundle, Option<f64>), DemoError> {
    let decoder = pipeline.input_decoder();
    let (decoded, rejected) =
        train::decode_lines(&decoder, &to_ndjson(history)).map_err(step("decode history"))?;
    let set = train::features_for(pipeline, decoded, rejected)
        .await
        .map_err(step("derive features"))?;
    let set = past_the_warmup(pipeline, set)?;
    let options = TrainOptions {
        name: "fraud-lr-demo".into(),
        version: version.to_owned(),
        ..TrainOptions::default()
    };
    let request = train::TrainRequest::new("is_fraud", options);
    let report = train::train(&set, &request, |_, _| {}).map_err(step("train"))?;
    eprintln!(
        "trained {} {} on {} rows and {} features; hold-out AUC {}",
        report.bundle.name(),
        report.bundle.version(),
        report.training_rows,
        report.bundle.manifest.features.len(),
        report
            .evaluation
            .auc
            .map_or("n/a".into(), |a| format!("{a:.3}"))
    );
    Ok((report.bundle, report.evaluation.auc))
}

/// The rows past the pipeline's longest window (with its shift), as
/// `train --warmup` gives them: earlier rows' windows cannot be full yet,
/// unlike the live stream's (README, "A warm-up, and periods"). History
/// shorter than twice that is used whole, with a note.
fn past_the_warmup(
    pipeline: &Pipeline,
    set: train::TrainingSet,
) -> Result<train::TrainingSet, DemoError> {
    let reach = pipeline.windows.as_ref().and_then(|w| {
        w.features
            .iter()
            .map(|f| f.window_ms.saturating_add(f.shift_ms))
            .max()
    });
    let Some(reach) = reach else {
        return Ok(set);
    };
    let times = set.decoded.column_by_name("event_time").and_then(|c| {
        c.as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .and_then(|t| Some((arrow::compute::min(t)?, arrow::compute::max(t)?)))
    });
    if times.is_none_or(|(first, last)| last - first < 2 * reach) {
        eprintln!(
            "history shorter than twice the longest window ({} days): trained on all of it, \
             warm-up included",
            reach / 86_400_000
        );
        return Ok(set);
    }
    let period = train::data::Period {
        warmup_ms: Some(reach),
        ..Default::default()
    };
    set.within("event_time", period)
        .map_err(step("cut the warm-up"))
}

/// Folds history into the engine's window state, as `streamscore state
/// warm` does, before the engine opens it.
async fn warm_state(pipeline: &Pipeline, history: &[Transaction]) -> Result<(), DemoError> {
    let Some(state) = EngineState::open(pipeline).map_err(step("open the state"))? else {
        return Ok(());
    };
    let Some(windows) = &state.windows else {
        return Ok(());
    };
    let decoder = pipeline.input_decoder();
    let (decoded, _) =
        train::decode_lines(&decoder, &to_ndjson(history)).map_err(step("decode history"))?;
    let folded = windows
        .warm(&decoded, &state.checkpoint)
        .map_err(step("warm the state"))?;
    let staged = state
        .checkpoint
        .stage("", &Default::default(), folded.changes);
    state
        .checkpoint
        .commit(staged)
        .map_err(step("warm the state"))?;
    Ok(())
}

fn to_ndjson(transactions: &[Transaction]) -> Vec<u8> {
    transactions
        .iter()
        .flat_map(|t| {
            let mut line = serde_json::to_vec(t).expect("a transaction serialises");
            line.push(b'\n');
            line
        })
        .collect()
}

/// The labels of history and live transactions in time order, handed out
/// as the stream's event time reaches each one's time plus the delay.
struct LabelFeed<'a> {
    transactions: Vec<&'a Transaction>,
    next: usize,
    delay: chrono::Duration,
}

impl<'a> LabelFeed<'a> {
    /// Starts after the labels history has already delivered (those the
    /// warm state folded in).
    fn new(pipeline: &Pipeline, history: &'a [Transaction], live: &'a [Transaction]) -> Self {
        let delay_ms = pipeline
            .windows
            .as_ref()
            .and_then(|w| w.labels.as_ref())
            .map_or(i64::MAX / 4, |l| l.delay_ms);
        let mut feed = Self {
            transactions: history.iter().chain(live).collect(),
            next: 0,
            delay: chrono::Duration::milliseconds(delay_ms),
        };
        if pipeline.labels.is_none() {
            feed.next = feed.transactions.len();
        }
        feed.due(history.last());
        feed
    }

    /// The labels due once the stream has reached `now`'s time.
    fn due(&mut self, now: Option<&Transaction>) -> Vec<&'a Transaction> {
        let Some(now) = now else {
            return Vec::new();
        };
        let start = self.next;
        while self
            .transactions
            .get(self.next)
            .is_some_and(|t| t.time + self.delay <= now.time)
        {
            self.next += 1;
        }
        self.transactions[start..self.next].to_vec()
    }
}

/// Sends labels to the pipeline's labels topic, keyed by card.
async fn produce_labels(pipeline: &Pipeline, labels: &[&Transaction]) -> Result<(), DemoError> {
    let Some(topic) = pipeline.labels.as_ref().map(|l| &l.topic) else {
        return Ok(());
    };
    let producer: FutureProducer = ClientBuilder::producer(&pipeline.kafka.brokers)
        .create()
        .map_err(step("create the labels producer"))?;
    let payloads: Vec<(&str, Vec<u8>)> = labels
        .iter()
        .map(|t| {
            let label = crate::simulate::Label::of(t);
            let payload = serde_json::to_vec(&label).expect("a label serialises");
            (t.card_id.as_str(), payload)
        })
        .collect();
    let sends = payloads.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic)
                .key(*key)
                .payload(payload.as_slice()),
            Timeout::Never,
        )
    });
    for result in join_all(sends).await {
        result.map_err(|(e, _)| DemoError::Step(format!("produce labels: {e}")))?;
    }
    Ok(())
}

/// Produces the live events (without their labels) and the malformed ones.
/// Records produced together in the live feed: about a third of a day of
/// the simulator's traffic.
const LIVE_SLICE: usize = 500;

async fn produce_live(
    pipeline: &Pipeline,
    live: &[Transaction],
    malformed: &[&[u8]],
) -> Result<usize, DemoError> {
    let producer: FutureProducer = ClientBuilder::producer(&pipeline.kafka.brokers)
        .create()
        .map_err(step("create the demo producer"))?;
    let topic = &pipeline.kafka.input_topic;
    let mut payloads: Vec<(Vec<u8>, Vec<u8>)> = live
        .iter()
        .map(|t| {
            let mut value = serde_json::to_value(t).expect("a transaction serialises");
            if let Some(object) = value.as_object_mut() {
                object.remove("is_fraud");
            }
            (
                t.card_id.clone().into_bytes(),
                value.to_string().into_bytes(),
            )
        })
        .collect();
    for (i, bad) in malformed.iter().enumerate() {
        let at = (i + 1) * payloads.len() / (malformed.len() + 1);
        payloads.insert(at, (b"malformed".to_vec(), bad.to_vec()));
    }
    // In event-time order, a slice at a time, each slice delivered before
    // the next goes: so every partition holds the same span of event time,
    // as a live feed's do. Sent at once, the producer's batches (up to
    // 10,000 records a partition) landed one partition's days before
    // another's, and a terminal's windows, summed over partitions, missed
    // the events still held back.
    for slice in payloads.chunks(LIVE_SLICE) {
        let sends = slice.iter().map(|(key, payload)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(key.as_slice())
                    .payload(payload.as_slice()),
                Timeout::Never,
            )
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| DemoError::Step(format!("produce live events: {e}")))?;
        }
    }
    Ok(payloads.len())
}

/// The second half of the stream: once the first is consumed, version 2 is
/// trained on the history and the labelled first half, registered and
/// promoted (the app's registry follower swaps it in), and the rest of the
/// events are produced.
struct SecondHalf<'a> {
    pipeline: &'a Pipeline,
    registry: &'a Registry,
    name: &'a str,
    history: Vec<Transaction>,
    events: &'a [Transaction],
    labels: Vec<&'a Transaction>,
}

/// The first half of the live events, produced once the app has folded
/// the `labels` due by its end: each event then reads every label due by
/// its time, as in production, where labels come days after their
/// transactions and are folded long before a window reads them. (Produced
/// together, the stream could score an event before the labels due by its
/// time were folded, and `terminal_risk_1d` drifted in a normal run.)
struct FirstHalf<'a> {
    pipeline: &'a Pipeline,
    events: &'a [Transaction],
    labels: usize,
}

impl FirstHalf<'_> {
    /// Produces the events (and the malformed records) once the labels
    /// are folded; returns how many records went.
    async fn after_labels(
        self,
        sent: &AtomicUsize,
        stats: &Stats,
        shutdown: &Shutdown,
    ) -> Result<usize, DemoError> {
        if !wait_until(shutdown, || stats.labels_folded() as usize >= self.labels).await {
            return Ok(0);
        }
        let result = produce_live(self.pipeline, self.events, MALFORMED).await;
        match result {
            Ok(produced) => {
                sent.fetch_add(produced, Ordering::Relaxed);
                Ok(produced)
            }
            Err(e) => {
                shutdown.stop.cancel();
                Err(e)
            }
        }
    }
}

/// Waits until `done` holds (true), or the demo stops (false).
async fn wait_until(shutdown: &Shutdown, done: impl Fn() -> bool) -> bool {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    while !done() {
        tokio::select! {
            () = shutdown.stop.cancelled() => return false,
            _ = ticker.tick() => {}
        }
    }
    true
}

/// The demo's own settings. The admin server's fixed port may be taken,
/// and the demo needs none. The demo's stream is a backlog: served a
/// partition at a time, one partition runs days of event time ahead of the
/// others, and a terminal's windows (summed over partitions) miss the
/// events the others have not reached, which is drift the demo made
/// itself. A little of every partition per fetch keeps them within hours
/// of each other, as a live stream's partitions are.
fn serve_like_a_live_stream(pipeline: &mut Pipeline) {
    pipeline.admin_listen = None;
    pipeline
        .kafka
        .consumer
        .entry("max.partition.fetch.bytes".into())
        .or_insert_with(|| "65536".into());
}

/// Time for the follower to see the promotion (it polls every 200 ms).
const SWAP_GRACE: Duration = Duration::from_secs(1);

impl SecondHalf<'_> {
    /// Runs once `first_half` events are consumed; a failure stops the app.
    /// `first_half` events and `labels_before` labels were produced first.
    async fn after(
        self,
        first_half: usize,
        labels_before: usize,
        sent: &AtomicUsize,
        stats: &Stats,
        shutdown: &Shutdown,
    ) -> Result<(), DemoError> {
        if !wait_until(shutdown, || {
            stats.snapshot().consumed as usize >= first_half
        })
        .await
        {
            return Ok(());
        }
        let (pipeline, events) = (self.pipeline, self.events);
        let labels = self.labels.clone();
        let done = async {
            self.promote().await?;
            tokio::time::sleep(SWAP_GRACE).await;
            produce_labels(pipeline, &labels).await?;
            let folded = labels_before + labels.len();
            if !wait_until(shutdown, || stats.labels_folded() as usize >= folded).await {
                return Ok(0);
            }
            let produced = produce_live(pipeline, events, &[]).await?;
            sent.fetch_add(produced, Ordering::Relaxed);
            Ok(produced)
        };
        let result = done.await;
        if result.is_err() {
            shutdown.stop.cancel();
        }
        result.map(drop)
    }

    async fn promote(self) -> Result<(), DemoError> {
        // Training is seconds of CPU: on a thread of its own, with its own
        // runtime for the SQL, so the stream's workers keep scoring.
        let (pipeline, history) = (self.pipeline.clone(), self.history);
        let (model, _) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(step("start the training runtime"))?;
            runtime.block_on(train_on(&pipeline, &history, "2"))
        })
        .await
        .map_err(step("train the second model"))??;
        self.registry
            .register(&model, "demo")
            .map_err(step("register the second model"))?;
        self.registry
            .change(
                self.name,
                &Change::Promote(Some(model.version().to_owned())),
                "demo",
                |_| Ok(()),
            )
            .map_err(step("promote the second model"))?;
        eprintln!("promoted version 2 while the stream runs");
        Ok(())
    }
}

/// Prints progress once a second and stops the app once every produced
/// event is accounted for (or nothing moves for a while, or it was stopped).
async fn watch_progress(stats: &Stats, produced: usize, sent: &AtomicUsize, shutdown: &Shutdown) {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut previous = Snapshot::default();
    let mut last_progress = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let s = stats.snapshot();
        print_progress(&s, &previous, started.elapsed());
        // Nothing to consume (the demo is training version 2) is no stall.
        if s.consumed != previous.consumed || s.consumed as usize >= sent.load(Ordering::Relaxed) {
            last_progress = Instant::now();
        }
        previous = s;
        if s.consumed as usize >= produced {
            break;
        }
        if last_progress.elapsed() > STALL_LIMIT {
            eprintln!("giving up: nothing consumed for {STALL_LIMIT:?}");
            break;
        }
    }
    shutdown.stop.cancel();
}

/// One line a second: the rate over the last second and the totals so far.
fn print_progress(s: &Snapshot, previous: &Snapshot, elapsed: Duration) {
    eprintln!(
        "[{:>5.1}s] {:>8} events/s | scored {:>8} | dead-lettered {:>4} | flagged {:>6}",
        elapsed.as_secs_f64(),
        s.consumed - previous.consumed,
        s.scored,
        s.dead_lettered,
        s.flagged
    );
}

/// Reads the output topic back: (event id, score, decision, model version)
/// per record.
async fn read_scores(
    pipeline: &Pipeline,
    expected: usize,
) -> Result<Vec<(String, f64, Decision, String)>, DemoError> {
    read_back(
        pipeline,
        &pipeline.kafka.output_topic,
        "scores",
        expected,
        |bytes| {
            let record: ScoreRecord = serde_json::from_slice(bytes)?;
            Ok((
                record.event_id.into_owned(),
                record.score,
                record.decision,
                record.model_version.into_owned(),
            ))
        },
    )
    .await
}

/// The drift alerts the run raised (and cleared), read back from the
/// alerts topic: as many as its partitions hold.
async fn read_alerts(pipeline: &Pipeline) -> Result<Vec<Alert>, DemoError> {
    let Some(topic) = &pipeline.kafka.alerts_topic else {
        return Ok(Vec::new());
    };
    let counter: StreamConsumer = ClientBuilder::reader(
        &pipeline.kafka.brokers,
        &format!("{}-alert-counter", pipeline.kafka.group_id),
    )
    .create()
    .map_err(step("create the alert counter"))?;
    let timeout = Duration::from_secs(10);
    let metadata = counter
        .fetch_metadata(Some(topic), timeout)
        .map_err(step("read the alerts topic's metadata"))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let mut expected = 0;
    for partition in 0..partitions as i32 {
        let (low, high) = counter
            .fetch_watermarks(topic, partition, timeout)
            .map_err(step("count the alerts"))?;
        expected += (high - low).max(0) as usize;
    }
    read_back(pipeline, topic, "alerts", expected, |bytes| {
        serde_json::from_slice(bytes)
    })
    .await
}

/// Reads `expected` records of `topic` from the start, each through
/// `parse`, within a minute.
async fn read_back<T>(
    pipeline: &Pipeline,
    topic: &str,
    what: &str,
    expected: usize,
    parse: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<Vec<T>, DemoError> {
    let consumer: StreamConsumer = ClientBuilder::reader(
        &pipeline.kafka.brokers,
        &format!("{}-{what}-reader", pipeline.kafka.group_id),
    )
    .create()
    .map_err(|e| DemoError::Step(format!("create the {what} reader: {e}")))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| DemoError::Step(format!("subscribe to the {what}: {e}")))?;
    let mut records = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while records.len() < expected {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| {
                DemoError::Step(format!("read back {} of {expected} {what}", records.len()))
            })?
            .map_err(|e| DemoError::Step(format!("read the {what}: {e}")))?;
        records.push(
            parse(message.payload().unwrap_or_default())
                .map_err(|e| DemoError::Step(format!("parse one of the {what}: {e}")))?,
        );
    }
    Ok(records)
}

impl DemoSummary {
    pub fn print(&self) {
        let s = &self.stats;
        println!("streamscore demo summary");
        println!(
            "  events produced       {:>8} ({} malformed on purpose)",
            self.produced, self.malformed
        );
        println!(
            "  events consumed       {:>8} in {:.1}s",
            s.consumed,
            self.elapsed.as_secs_f64()
        );
        println!(
            "  scored                {:>8} (read back {}, distinct {})",
            s.scored, self.scores_read_back, self.distinct_events_scored
        );
        println!("  dead-lettered         {:>8}", s.dead_lettered);
        println!(
            "  flagged               {:>8} ({} of {} frauds caught)",
            s.flagged, self.flagged_fraud, self.fraud
        );
        let show = |a: Option<f64>| a.map_or("n/a".to_string(), |a| format!("{a:.3}"));
        println!(
            "  AUC hold-out / live   {:>8} / {}",
            show(self.holdout_auc),
            show(self.live_auc)
        );
        for (version, count) in &self.scores_by_version {
            println!("  scored by version {version:<4} {count:>8}");
        }
        println!("  drift alerts          {:>8}", self.drift_alerts.len());
        for level in ["detected", "suspected", "cleared"] {
            let mut features: Vec<String> = self
                .drift_alerts
                .iter()
                .filter(|a| a.level == level)
                .map(|a| format!("{} ({} v{})", a.feature, a.metric, a.model_version))
                .collect();
            features.dedup();
            if !features.is_empty() {
                println!("    {level:<10} {}", features.join(", "));
            }
        }
    }
}
