//! The command line: every subcommand's arguments and handler. This is the
//! one room that prints, and the only one that uses `anyhow` and `clap`
//! (ARCHITECTURE.md §4); the library below it returns typed errors.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::app;
use crate::config::Pipeline;
use crate::telemetry::Stats;

/// Every subcommand's `--pipeline` default: the example pipeline.
pub const DEFAULT_PIPELINE: &str = "pipelines/fraud.toml";

/// The pipeline and the state stores a report reads.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[arg(long, default_value = DEFAULT_PIPELINE)]
    pub pipeline: PathBuf,
    /// The state store to read (repeat it for each instance's; what they
    /// hold is merged). Defaults to the pipeline's `state.path`.
    #[arg(long, env = "STREAMSCORE_STATE")]
    pub state: Vec<PathBuf>,
}

impl StoreArgs {
    /// The pipeline, refused with `missing` unless `has` holds for it, and
    /// each of its stores opened read-only.
    fn open(
        &self,
        has: impl Fn(&Pipeline) -> bool,
        missing: &str,
    ) -> anyhow::Result<(Pipeline, Vec<crate::state::RocksStore>)> {
        let pipeline = Pipeline::load(&self.pipeline, None)?;
        if !has(&pipeline) {
            bail!("{} {missing}", self.pipeline.display());
        }
        let stores = pipeline
            .state_paths(&self.state)?
            .iter()
            .map(|path| crate::state::RocksStore::open_read_only(path))
            .collect::<Result<_, _>>()?;
        Ok((pipeline, stores))
    }
}

pub mod bench;
pub mod demo;
pub mod drift;
pub mod labels;
pub mod models;
pub mod simulate;
pub mod state;
pub mod train;

#[derive(Parser)]
#[command(version, about = "Real-time fraud scoring beside Kafka")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Score a topic of transactions until SIGINT/SIGTERM.
    Run {
        #[arg(long, default_value = DEFAULT_PIPELINE)]
        pipeline: PathBuf,
        /// Overrides `kafka.brokers` in the pipeline file.
        #[arg(long, env = "STREAMSCORE_BROKERS")]
        brokers: Option<String>,
        /// Overrides `admin.listen` (and turns the admin server on).
        #[arg(long, env = "STREAMSCORE_ADMIN_LISTEN")]
        admin_listen: Option<String>,
        /// Overrides `state.path`: this instance's state directory (one per
        /// instance; two instances cannot share one).
        #[arg(long, env = "STREAMSCORE_STATE")]
        state: Option<PathBuf>,
    },
    /// Fit a model on history (NDJSON or CSV) through the pipeline's own
    /// decode and SQL: one kind with a hold-out, or several chosen by
    /// cross-validation.
    Train(Box<train::TrainArgs>),
    /// Every fraud metric of a bundle on a labelled file.
    Evaluate(train::EvaluateArgs),
    /// The model registry: list, show, promote, roll back, history.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Simulated card transactions (the handbook's generator): NDJSON history
    /// with labels, or a live stream to a topic with delayed labels.
    Simulate(simulate::SimulateArgs),
    /// Labels that met their scores: the metrics of each day.
    Labels {
        #[command(subcommand)]
        command: labels::LabelsCommand,
    },
    /// Drift of the model's features, score and decisions: the report.
    Drift {
        #[command(subcommand)]
        command: drift::DriftCommand,
    },
    /// The instance's state (window features): warm it from history.
    State {
        #[command(subcommand)]
        command: state::StateCommand,
    },
    /// The end-to-end benchmark against a real broker: a bare passthrough and
    /// the engine over the same events, then latency at offered loads.
    /// Prints Markdown for bench/RESULTS.md; see scripts/bench.sh.
    Bench(bench::BenchOptions),
    /// The whole loop in one process: embedded broker, simulated events,
    /// a model trained on the spot, live progress and a summary.
    Demo {
        #[arg(long, default_value = DEFAULT_PIPELINE)]
        pipeline: PathBuf,
        /// A real cluster instead of the embedded broker.
        #[arg(long, env = "STREAMSCORE_BROKERS")]
        brokers: Option<String>,
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        /// Days of history before the live events: the model is trained on
        /// those past the longest window (37 days for the example).
        #[arg(long, default_value_t = 75)]
        history_days: u32,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Triple the amounts of the second half of the live events, so
        /// that drift is detected and alerted (a normal run raises none).
        #[arg(long)]
        shift: bool,
    },
}

pub async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            pipeline,
            brokers,
            admin_listen,
            state,
        } => {
            let mut pipeline = Pipeline::load(&pipeline, brokers.as_deref())?;
            if admin_listen.is_some() {
                pipeline.admin_listen = admin_listen;
            }
            if let Some(dir) = state {
                pipeline.use_state_dir(dir)?;
            }
            let shutdown = app::stop_on_signals();
            app::run(&pipeline, Arc::new(Stats::default()), &shutdown).await?;
        }
        Command::Train(args) => print!("{}", train::run(&args).await?),
        Command::Evaluate(args) => print!("{}", train::evaluate(&args).await?),
        Command::Simulate(args) => print!("{}", simulate::run(&args).await?),
        Command::Labels { command } => print!("{}", labels::run(&command)?),
        Command::Drift { command } => print!("{}", drift::run(&command)?),
        Command::State { command } => {
            print!("{}", state::run(&command).await?)
        }
        Command::Models { command } => print!("{}", models::run(command).await?),
        Command::Bench(options) => bench::run(&options).await?,
        Command::Demo {
            pipeline,
            brokers,
            events,
            history_days,
            partitions,
            shift,
        } => {
            if events == 0 || partitions < 1 {
                bail!("--events and --partitions must be at least 1");
            }
            let summary = demo::run(
                &pipeline,
                demo::DemoOptions {
                    brokers,
                    events,
                    history_days,
                    partitions,
                    seed: 7,
                    shift,
                },
            )
            .await?;
            summary.print();
            let s = summary.stats;
            if s.scored + s.dead_lettered != s.consumed
                || summary.distinct_events_scored != summary.produced - summary.malformed
            {
                bail!("not every event was accounted for exactly once; see the summary above");
            }
        }
    }
    Ok(())
}
