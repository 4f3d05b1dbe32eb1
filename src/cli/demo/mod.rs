//! `streamscore demo`: the whole loop in one process. An embedded
//! Kafka-protocol broker (librdkafka's mock cluster) unless `--brokers` is
//! given, simulated card transactions, a model trained on their history and
//! registered, the app (`app::run`, as `streamscore run` runs it) scoring the
//! live part, and halfway through a second model trained (on the history and
//! the labelled first half) and promoted while the stream runs. Live progress
//! and a summary that counts the scores of each version.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

use crate::app::{self, Shutdown};
use crate::config::{ModelSource, Pipeline};
use crate::kafka::admin;
use crate::model::serving::registry::{Change, Registry};
use crate::simulate::Transaction;
use crate::telemetry::{Snapshot, Stats};

mod feed;
mod history;
mod summary;

use feed::{LabelFeed, produce_labels, produce_live};
use history::{simulate_split, train_on, warm_state};
pub use summary::DemoSummary;
use summary::{Counts, read_alerts, read_scores, summarise};

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

/// librdkafka's mock broker keeps at most 5 MiB per partition and silently
/// drops older messages beyond that, as retention would. Spread the scores
/// (the largest records, about 450 bytes with three reasons named after
/// window features) so that no partition fills up.
fn mock_partitions_for(events: usize) -> i32 {
    const BYTES_PER_PARTITION: usize = 4 * 1024 * 1024;
    const BYTES_PER_SCORE: usize = 600;
    i32::try_from((events * BYTES_PER_SCORE).div_ceil(BYTES_PER_PARTITION)).unwrap_or(i32::MAX)
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
