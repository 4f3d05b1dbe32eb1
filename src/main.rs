//! The `streamscore` command: parse, set up logging, call the library, print
//! the error chain once, exit non-zero on failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use clap::{Parser, Subcommand};

use streamscore::config::Pipeline;
use streamscore::error::Chain;
use streamscore::instance::operator;
use streamscore::model::commands;
use streamscore::model::registry::{Change, Registry};
use streamscore::telemetry::Stats;
use streamscore::{app, bench, demo, train};

#[derive(Parser)]
#[command(version, about = "Real-time fraud scoring beside Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a topic of transactions until SIGINT/SIGTERM.
    Run {
        #[arg(long, default_value = "pipelines/fraud.toml")]
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
    Train(Box<streamscore::train::command::TrainArgs>),
    /// Every fraud metric of a bundle on a labelled file.
    Evaluate(streamscore::train::command::EvaluateArgs),
    /// The model registry: list, show, promote, roll back, history.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Simulated card transactions (the handbook's generator): NDJSON history
    /// with labels, or a live stream to a topic with delayed labels.
    Simulate(streamscore::simulate::command::SimulateArgs),
    /// Labels that met their scores: the metrics of each day.
    Labels {
        #[command(subcommand)]
        command: streamscore::outcomes::command::LabelsCommand,
    },
    /// Drift of the model's features, score and decisions: the report.
    Drift {
        #[command(subcommand)]
        command: streamscore::drift::report::DriftCommand,
    },
    /// The instance's state (window features): warm it from history.
    State {
        #[command(subcommand)]
        command: streamscore::windows::command::StateCommand,
    },
    /// The end-to-end benchmark against a real broker: a bare passthrough and
    /// the engine over the same events, then latency at offered loads.
    /// Prints Markdown for bench/RESULTS.md; see scripts/bench.sh.
    Bench(bench::BenchOptions),
    /// The whole loop in one process: embedded broker, simulated events,
    /// a model trained on the spot, live progress and a summary.
    Demo {
        #[arg(long, default_value = "pipelines/fraud.toml")]
        pipeline: PathBuf,
        /// A real cluster instead of the embedded broker.
        #[arg(long, env = "STREAMSCORE_BROKERS")]
        brokers: Option<String>,
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        #[arg(long, default_value_t = 30)]
        history_days: u32,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Every model with its champion and challenger.
    List {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
    },
    /// A model's versions, state and the engines' live comparison.
    Show {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
        name: String,
    },
    /// Make VERSION (or, without one, the challenger) the champion; with
    /// --challenger, make VERSION the challenger.
    Promote {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
        name: String,
        version: Option<String>,
        #[arg(long, requires = "version")]
        challenger: bool,
    },
    /// Return to the previous champion; with --challenger, drop the challenger.
    Rollback {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
        name: String,
        #[arg(long)]
        challenger: bool,
    },
    /// Every change, and where each version began to score.
    History {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
        name: String,
    },
    /// Pruned and quantised variants of a tree or forest bundle, each
    /// measured on a validation file.
    Optimize(streamscore::train::command::OptimizeArgs),
    /// Wrap a model trained elsewhere into a bundle.
    Import {
        /// xgboost (JSON from save_model), lightgbm (text from save_model) or
        /// onnx (one float input of rows x features, probabilities out).
        #[arg(long)]
        kind: String,
        #[arg(long)]
        file: PathBuf,
        /// The SQL output columns, in the order of the model's features.
        #[arg(long, value_delimiter = ',', required = true)]
        features: Vec<String>,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "1")]
        model_version: String,
        #[arg(long, default_value_t = 0.5)]
        threshold: f64,
        /// Where to write the bundle directory...
        #[arg(long, required_unless_present = "register")]
        out: Option<PathBuf>,
        /// ...and/or the registry to add it to.
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        register: Option<PathBuf>,
        /// History (.csv or NDJSON) to take the reference distributions of
        /// the features and the score from, through --pipeline's decode and
        /// SQL; drift monitoring compares against them.
        #[arg(long)]
        reference: Option<PathBuf>,
        #[arg(long, default_value = "pipelines/fraud.toml")]
        pipeline: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "streamscore=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for people: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let error: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("error: {}", Chain(error));
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
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
        Command::Train(args) => print!("{}", train::command::run(&args).await?),
        Command::Evaluate(args) => print!("{}", train::command::evaluate(&args).await?),
        Command::Simulate(args) => print!("{}", streamscore::simulate::command::run(&args).await?),
        Command::Labels { command } => print!("{}", streamscore::outcomes::command::run(&command)?),
        Command::Drift { command } => print!("{}", streamscore::drift::report::run(&command)?),
        Command::State { command } => {
            print!("{}", streamscore::windows::command::run(&command).await?)
        }
        Command::Models { command } => print!("{}", models(command).await?),
        Command::Bench(options) => bench::run(&options).await?,
        Command::Demo {
            pipeline,
            brokers,
            events,
            history_days,
            partitions,
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

async fn models(command: ModelsCommand) -> anyhow::Result<String> {
    let by = format!("cli:{}", operator());
    Ok(match command {
        ModelsCommand::List { registry } => commands::list(&Registry::open(&registry))?,
        ModelsCommand::Show { registry, name } => {
            commands::show(&Registry::open(&registry), &name)?
        }
        ModelsCommand::Promote {
            registry,
            name,
            version,
            challenger,
        } => {
            let change = match (version, challenger) {
                (Some(version), true) => Change::SetChallenger(version),
                (version, _) => Change::Promote(version),
            };
            commands::change(&Registry::open(&registry), &name, &change, &by)?
        }
        ModelsCommand::Rollback {
            registry,
            name,
            challenger,
        } => {
            let change = if challenger {
                Change::ClearChallenger
            } else {
                Change::Rollback
            };
            commands::change(&Registry::open(&registry), &name, &change, &by)?
        }
        ModelsCommand::History { registry, name } => {
            commands::history(&Registry::open(&registry), &name)?
        }
        ModelsCommand::Optimize(args) => train::command::optimize(&args).await?,
        ModelsCommand::Import {
            kind,
            file,
            features,
            name,
            model_version,
            threshold,
            out,
            register,
            reference,
            pipeline,
        } => {
            let kind = match kind.as_str() {
                "xgboost" => streamscore::model::ModelKind::Xgboost,
                "lightgbm" => streamscore::model::ModelKind::Lightgbm,
                "onnx" => streamscore::model::ModelKind::Onnx,
                other => bail!("--kind is xgboost, lightgbm or onnx, not `{other}`"),
            };
            let mut bundle = commands::import(&commands::Import {
                kind,
                file: &file,
                features: &features,
                name: &name,
                version: &model_version,
                threshold,
            })?;
            if let Some(history) = reference {
                let pipeline = Pipeline::load(&pipeline, None)?;
                let set = train::prepare(&pipeline, &history).await?;
                train::build::attach_reference(&mut bundle, &set)?;
            }
            let mut written = Vec::new();
            if let Some(out) = out {
                bundle.save(&out)?;
                written.push(out);
            }
            if let Some(registry) = register {
                written.push(
                    Registry::open(&registry)
                        .register(&bundle, &format!("import:{}", operator()))?,
                );
            }
            format!(
                "wrote {} ({} {}, {}, {} features)\n",
                written
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and "),
                bundle.name(),
                bundle.version(),
                bundle.manifest.kind.as_str(),
                bundle.manifest.features.len()
            )
        }
    })
}
