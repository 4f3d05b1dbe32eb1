//! `streamscore bench`: the end-to-end benchmark against a real broker.
//!
//! 1. Loads N simulated events into a fresh input topic.
//! 2. Runs the bare passthrough (examples/passthrough.rs: consume, produce
//!    unchanged, await acks, store offsets, in batches of the pipeline's
//!    `batch.max_rows`) and then `streamscore run` with
//!    the pipeline, each from a fresh group over the same events, and reports
//!    events/s for each: N over the time from the first output to the last.
//! 3. For each offered load, starts the engine on an empty topic, produces at
//!    that rate, and reports the Kafka-to-score latency: the score's Kafka
//!    timestamp (set when the engine produced it) less the event's.
//!
//! The figures are printed as Markdown for bench/RESULTS.md. The engine's
//! pipeline and process are set up in `engine.rs`, the latency rows run in
//! `latency.rs`; the throughput rows and what both share are here.

mod engine;
mod latency;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::DEFAULT_PIPELINE;
use crate::kafka::admin::ensure_topics;
use crate::kafka::clients::ClientBuilder;
use crate::simulate::{SimulationConfig, simulate};
use engine::{SideTopics, batch_rows, engine_pipeline, spawn_engine};
use latency::latency_at;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench: {0}")]
    Failed(String),
}

fn failed(what: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(what.to_string())
}

/// An offered load for the latency runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    PerSecond(u64),
    /// As fast as the producer goes: saturation.
    Max,
}

impl std::str::FromStr for Load {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Load::Max);
        }
        s.parse()
            .map(Load::PerSecond)
            .map_err(|_| format!("`{s}` is not an events/s figure or `max`"))
    }
}

#[derive(Debug, clap::Args)]
pub struct BenchOptions {
    #[arg(long, env = "STREAMSCORE_BROKERS")]
    pub brokers: String,
    #[arg(long, default_value = DEFAULT_PIPELINE)]
    pub pipeline: PathBuf,
    /// The passthrough binary; default: examples/passthrough next to this
    /// binary (cargo build --examples).
    #[arg(long)]
    pub passthrough: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Offered loads in events/s, and `max` for saturation.
    #[arg(long, value_delimiter = ',', default_value = "5000,20000,50000,max")]
    pub loads: Vec<Load>,
    /// How long each offered load is produced.
    #[arg(long = "seconds", default_value_t = 10)]
    pub load_seconds: u64,
    /// `fetch.wait.max.ms` for both consumers. Tansu answers a fetch only
    /// when this wait is over, even when records arrive sooner, so its
    /// default of 500 ms would be most of the measured latency.
    #[arg(long, default_value_t = 10)]
    pub fetch_wait_ms: u64,
    /// Fails unless the engine's throughput run judged at least this many
    /// drift windows (CI's smoke run: the drift path must be exercised,
    /// alerts topic and all).
    #[arg(long, default_value_t = 0)]
    pub min_drift_windows: usize,
}

impl BenchOptions {
    /// The passthrough binary: the one given, or the example built beside
    /// this binary.
    fn passthrough(&self) -> Result<PathBuf, BenchError> {
        let path = match &self.passthrough {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map_err(failed)?
                .parent()
                .ok_or_else(|| failed("the binary has no directory"))?
                .join("examples/passthrough"),
        };
        if !path.exists() {
            return Err(failed(format!(
                "no passthrough binary at {}: build it with `cargo build --release --examples` \
                 or pass --passthrough",
                path.display()
            )));
        }
        Ok(path)
    }
}

/// Runs the whole benchmark and prints its Markdown tables.
pub async fn run(options: &BenchOptions) -> Result<(), BenchError> {
    let passthrough_binary = options.passthrough()?;
    let payloads = events(options.events, 0);
    let input = topic("bench-in");
    ensure_topics(&options.brokers, &[&input], options.partitions)
        .await
        .map_err(failed)?;
    let started = Instant::now();
    produce_all(&options.brokers, &input, &payloads).await?;
    let load_rate = payloads.len() as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} events into {input} ({load_rate:.0}/s)",
        payloads.len()
    );

    println!("| run | events | seconds | events/s | process CPU s |");
    println!("|---|---:|---:|---:|---:|");
    let rows = batch_rows(&options.pipeline).map_err(failed)?.to_string();
    let spawn_passthrough = |input: &str, output: &str| {
        Command::new(&passthrough_binary)
            .args([
                &options.brokers,
                &topic("bench-group"),
                input,
                output,
                &rows,
            ])
            .env("FETCH_WAIT_MAX_MS", options.fetch_wait_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let passthrough_output = topic("bench-pass");
    let passthrough = throughput(options, &passthrough_output, |output| {
        spawn_passthrough(&input, output)
    })
    .await?;
    print_throughput("passthrough", options.events, passthrough);

    let engine_output = topic("bench-scores");
    let dir = tempfile::tempdir().map_err(failed)?;
    // `run` refuses to start without every topic the pipeline writes to.
    let side = SideTopics {
        dead_letters: topic("bench-dlq"),
        labels: topic("bench-labels"),
        alerts: topic("bench-alerts"),
    };
    ensure_topics(
        &options.brokers,
        &[&side.dead_letters, &side.labels, &side.alerts],
        options.partitions,
    )
    .await
    .map_err(failed)?;
    let spawn_engine_on = |input: &str, output: &str| {
        let pipeline = engine_pipeline(options, dir.path(), input, output, &side)?;
        spawn_engine(&pipeline, dir.path())
    };
    let engine = throughput(options, &engine_output, |output| {
        spawn_engine_on(&input, output)
    })
    .await?;
    print_throughput("streamscore run", options.events, engine);
    println!();
    // Read before the latency runs write their own logs.
    let judged = std::fs::read_to_string(dir.path().join("engine.log"))
        .map_or(0, |log| log.matches("drift window judged").count());
    println!("drift windows judged in the engine's run: {judged}");
    if judged < options.min_drift_windows {
        return Err(failed(format!(
            "the engine judged {judged} drift window(s), fewer than --min-drift-windows {} \
             (its log: engine.log)",
            options.min_drift_windows
        )));
    }
    println!();
    if passthrough.took.min(engine.took) >= SHORTEST_TIMED {
        println!(
            "engine / passthrough: **{:.2}x**",
            passthrough.took.as_secs_f64() / engine.took.as_secs_f64()
        );
    }

    if !options.loads.is_empty() {
        println!();
        println!(
            "| offered load | run | events | achieved events/s | p50 ms | p99 ms | p99.9 ms |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|");
        for (i, &load) in options.loads.iter().enumerate() {
            let run = 2 * i + 1;
            latency_at(options, load, run, "passthrough", &spawn_passthrough).await?;
            latency_at(options, load, run + 1, "streamscore run", &spawn_engine_on).await?;
        }
    }
    Ok(())
}

/// Outputs are watched every 20 ms; a run shorter than this many polls
/// cannot be timed.
const SHORTEST_TIMED: Duration = Duration::from_millis(200);

fn print_throughput(name: &str, events: usize, run: Timed) {
    let cpu = run.cpu.map_or("n/a".into(), |s| format!("{s:.2}"));
    if run.took < SHORTEST_TIMED {
        println!(
            "| {name} | {events} | under {SHORTEST_TIMED:?} | too few events to time | {cpu} |"
        );
        return;
    }
    println!(
        "| {name} | {events} | {:.2} | {:.0} | {cpu} |",
        run.took.as_secs_f64(),
        events as f64 / run.took.as_secs_f64()
    );
}

/// A topic name no earlier run used.
fn topic(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

/// A simulated event: its id, key and JSON payload.
struct Event {
    id: String,
    key: Vec<u8>,
    payload: Vec<u8>,
}

/// `count` simulated events, their ids unique to `run`. They span at least
/// two simulated days (every k-th event, when fewer are asked for than two
/// days hold), so that a day-long drift window closes and is judged even
/// in a short run.
fn events(count: usize, run: usize) -> Vec<Event> {
    let config = SimulationConfig {
        customers: 5_000,
        terminals: 10_000,
        days: (count / 7_000 + 1).max(2) as u32,
        ..SimulationConfig::default()
    };
    let simulated = simulate(&config);
    let every = (simulated.len() / count.max(1)).max(1);
    simulated
        .into_iter()
        .step_by(every)
        .take(count)
        .map(|mut t| {
            t.event_id = format!("{run}-{}", t.event_id);
            Event {
                payload: serde_json::to_vec(&t).unwrap_or_default(),
                id: t.event_id,
                key: t.card_id.into_bytes(),
            }
        })
        .collect()
}

fn producer(brokers: &str) -> Result<FutureProducer, BenchError> {
    // Not idempotent, as in the runs bench/RESULTS.md records.
    ClientBuilder::producer(brokers)
        .set("enable.idempotence", "false")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(failed)
}

async fn produce_all(brokers: &str, topic: &str, payloads: &[Event]) -> Result<(), BenchError> {
    let producer = producer(brokers)?;
    for chunk in payloads.chunks(50_000) {
        let sends = chunk.iter().map(|event| {
            let record = FutureRecord::to(topic)
                .key(&event.key)
                .payload(&event.payload);
            producer.send(record, Timeout::Never)
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| failed(e))?;
        }
    }
    Ok(())
}

/// Starts a consumer of the input (via `spawn`, given its output topic) and
/// times it from its first output message to its `events`-th.
async fn throughput(
    options: &BenchOptions,
    output: &str,
    spawn: impl FnOnce(&str) -> std::io::Result<Child>,
) -> Result<Timed, BenchError> {
    ensure_topics(&options.brokers, &[output], options.partitions)
        .await
        .map_err(failed)?;
    let watcher = reader(&options.brokers)?;
    let mut child = spawn(output).map_err(failed)?;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = loop {
        let produced = total_end_offset(&watcher, output, options.partitions)?;
        if produced > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if produced >= options.events as i64 {
            break Instant::now();
        }
        let exited = child.try_wait().map_err(failed)?;
        if Instant::now() > deadline || exited.is_some() {
            let _ = child.kill();
            let why = match exited {
                Some(status) => format!("the process exited ({status}; its log is engine.log)"),
                None => "timed out".to_owned(),
            };
            return Err(failed(format!(
                "{output} reached {produced} of {} messages: {why}",
                options.events
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = cpu_seconds(child.id());
    stop(&mut child)?;
    Ok(Timed {
        took: done - first.unwrap_or(done),
        cpu,
    })
}

/// A consumer outside any working group, for watermarks and reading back.
fn reader(brokers: &str) -> Result<BaseConsumer, BenchError> {
    ClientBuilder::reader(brokers, &topic("bench-reader"))
        .create()
        .map_err(failed)
}

fn total_end_offset(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<i64, BenchError> {
    let mut total = 0;
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(failed)?;
        total += high;
    }
    Ok(total)
}

/// A throughput run: from first output to last, and the CPU time the
/// process had used by then.
#[derive(Debug, Clone, Copy)]
struct Timed {
    took: Duration,
    cpu: Option<f64>,
}

/// User plus system CPU seconds of a running process, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let per_second: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0);
    Some(ticks / per_second)
}

/// SIGTERM, then wait for the exit.
fn stop(child: &mut Child) -> Result<(), BenchError> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .map_err(failed)?;
    child.wait().map_err(failed)?;
    Ok(())
}
