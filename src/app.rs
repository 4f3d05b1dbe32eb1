//! Builds the components from a pipeline file and runs them until a signal.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

use crate::admin::models::AdminToken;
use crate::admin::{AdminError, AdminServer};
use crate::config::{ModelSource, Pipeline, ServeSettings};
use crate::engine::{Engine, EngineError};
use crate::kafka::admin::ClusterView;
use crate::kafka::changelog::{KafkaChangelog, StateFollower};
use crate::kafka::context::{FollowsAssignment, SourceContext};
use crate::kafka::publish::Publisher;
use crate::kafka::sink::KafkaSink;
use crate::kafka::source::KafkaSource;
use crate::model::ModelSlot;
use crate::model::serving::follow::Follower;
use crate::model::serving::registry::Registry;
use crate::pipeline::{self, PipelineError};
use crate::serve::{self, Api, ServeError};
use crate::telemetry::{self, Health, Stats};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot start: {0}")]
    Start(#[source] EngineError),
    #[error("cannot connect to Kafka at {brokers}: {source}")]
    Connect {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(
        "cannot start: the topics {0} do not exist; create them (the labels topic, when there \
         is one, with as many partitions as the input)"
    )]
    MissingTopics(String),
    #[error(
        "cannot start: the {role} topic {topic} has {topic_partitions} partitions and the \
         input {input} has {input_partitions}; its partition n belongs with input partition \
         n, so they must have as many{keyed}"
    )]
    NotCoPartitioned {
        /// "labels" or "changelog".
        role: &'static str,
        topic: String,
        topic_partitions: usize,
        input: String,
        input_partitions: usize,
        /// What else the topic must share with the input.
        keyed: &'static str,
    },
    #[error("cannot start: {0}")]
    ChangelogTopic(#[from] crate::kafka::admin::ChangelogTopicError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot read the admin token file {path} (admin.token_file): {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(
        "the stop did not finish within shutdown.drain_timeout_ms ({0:?}); exited without \
         committing the unfinished batch, which is read again on restart"
    )]
    DrainTimedOut(Duration),
    #[error(
        "a second signal: exited at once without committing the unfinished batch, which is \
         read again on restart"
    )]
    Aborted,
}

impl AppError {
    fn connect(pipeline: &Pipeline, source: KafkaError) -> Self {
        AppError::Connect {
            brokers: pipeline.kafka.brokers.clone(),
            source,
        }
    }
}

/// How a run is asked to end: `stop` finishes the batch in flight and
/// commits; `abort` (a second signal) gives up on it at once.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub stop: CancellationToken,
    pub abort: CancellationToken,
}

/// Plans the SQL and loads the model first, so a bad pipeline fails before
/// anything is consumed; then runs the loop until `shutdown`, with the admin
/// server and the status line beside it.
pub async fn run(
    pipeline: &Pipeline,
    stats: Arc<Stats>,
    shutdown: &Shutdown,
) -> Result<(), AppError> {
    // The recorder goes in before the first metric (the engine's model
    // gauges) is emitted.
    telemetry::prometheus();
    let changelog = changelog(pipeline).await?;
    // Shared with the scoring API, which reads through it.
    let engine = Arc::new(
        Engine::for_pipeline_with_changelog(pipeline, changelog)
            .await
            .map_err(AppError::Start)?,
    );
    let health = Arc::new(Health::default());
    health.set_model_loaded();
    // Side tasks end with the run, whichever way it ends.
    let side_tasks = CancellationToken::new();
    let _end_side_tasks = side_tasks.clone().drop_guard();
    let follower = start_side_tasks(pipeline, &engine, &health, &stats, &side_tasks).await?;
    // Bound first: the partitions the consumer is assigned are announced
    // at the API's address.
    let api = match &pipeline.serve {
        Some(settings) => Some(serve::bind(settings)?),
        None => None,
    };
    let Clients {
        source,
        labels,
        sink,
        input_partitions,
    } = connect(
        pipeline,
        &engine,
        Arc::clone(&health),
        &stats,
        &side_tasks,
        api.as_ref().map(|bound| bound.url.as_str()),
    )?;
    // Stopped and waited for when the run ends, before the engine it
    // shares is dropped (`serve::Running`).
    let _api = match (&pipeline.serve, api) {
        (Some(settings), Some(bound)) => Some(start_api(
            pipeline,
            settings,
            bound,
            &engine,
            health,
            input_partitions,
            side_tasks.clone(),
        )?),
        _ => None,
    };
    tracing::info!(
        input = %pipeline.kafka.input_topic,
        output = %pipeline.kafka.output_topic,
        dead_letter = %pipeline.kafka.dead_letter_topic,
        model = %engine.models().current().champion.name(),
        version = %engine.models().current().champion.version(),
        "scoring"
    );
    let outcome = tokio::select! {
        result = async {
            let labels = async {
                match &labels {
                    Some(labels) => {
                        pipeline::run_labels(labels, &engine, &stats, &shutdown.stop).await
                    }
                    None => Ok(()),
                }
            };
            tokio::try_join!(
                pipeline::run(&source, &engine, &sink, &stats, &shutdown.stop),
                labels
            )
            .map(|_| ())
        } => {
            if let Some(follower) = &follower {
                follower.flush_history();
            }
            return Ok(result?);
        }
        () = drain_deadline(&shutdown.stop, pipeline.drain_timeout) => {
            AppError::DrainTimedOut(pipeline.drain_timeout)
        }
        () = shutdown.abort.cancelled() => AppError::Aborted,
    };
    // Closing the consumer would commit what it has stored and leave the
    // group politely, which can take seconds; the process is about to exit,
    // and the broker finds out by itself. So the clients are not closed.
    std::mem::forget(source);
    std::mem::forget(labels);
    std::mem::forget(sink);
    Err(outcome)
}

/// The registry follower (when the model comes from a registry), the admin
/// server, the status line and the upkeep task, each ended by `side_tasks`.
async fn start_side_tasks(
    pipeline: &Pipeline,
    engine: &Engine,
    health: &Arc<Health>,
    stats: &Arc<Stats>,
    side_tasks: &CancellationToken,
) -> Result<Option<Arc<Follower>>, AppError> {
    let follower = match &pipeline.model {
        ModelSource::Registry { dir, name, poll } => {
            let follower = Arc::new(Follower::new(
                Registry::open(dir),
                name,
                Arc::clone(engine.models()),
            ));
            tokio::spawn(Arc::clone(&follower).run(*poll, side_tasks.clone()));
            Some(follower)
        }
        ModelSource::Bundle(_) => None,
    };
    if let Some(listen) = &pipeline.admin_listen {
        let mut server = AdminServer::new(Arc::clone(health));
        if let Some(follower) = &follower {
            let token = admin_token(pipeline)?;
            server = server.merge(crate::admin::models::routes(Arc::clone(follower), token));
        }
        server.start(listen, side_tasks.clone()).await?;
    }
    tokio::spawn(telemetry::status::run(
        Arc::clone(stats),
        pipeline.status_interval,
        side_tasks.clone(),
    ));
    tokio::spawn(upkeep(Arc::clone(engine.models()), side_tasks.clone()));
    Ok(follower)
}

/// The scoring API on `serve.listen`, reading through the stream's engine;
/// with `serve.publish`, its requests go to the input topic; with windows
/// kept per partition, each record is scored where its partition is held.
fn start_api(
    pipeline: &Pipeline,
    settings: &ServeSettings,
    bound: serve::Bound,
    engine: &Arc<Engine>,
    health: Arc<Health>,
    input_partitions: i32,
    stop: CancellationToken,
) -> Result<serve::Running, AppError> {
    let publisher = match settings.publish {
        true => Some(
            Publisher::new(&pipeline.kafka, settings.partitioner)
                .map_err(|source| AppError::connect(pipeline, source))?,
        ),
        false => None,
    };
    let windows = pipeline.windows.as_ref();
    let router = match (&settings.routing, engine.shared_checkpoint()) {
        (Some(routing), Some(checkpoint)) => Some(serve::Router::new(
            routing.clone(),
            settings.partitioner,
            input_partitions,
            checkpoint,
            bound.url.clone(),
        )),
        _ => None,
    };
    let url = bound.url.clone();
    serve::start(
        bound,
        Api {
            engine: Arc::clone(engine),
            health,
            settings: settings.clone(),
            publisher,
            // The field the input is keyed by, or the windows' first key.
            publish_key: windows.and_then(|w| w.partition_key.clone()).or_else(|| {
                windows
                    .and_then(|w| w.features.first())
                    .map(|f| f.key.clone())
            }),
            router,
            url,
        },
        stop,
    )
    .map_err(AppError::from)
}

/// The state changelog (`[state] changelog`), its topic created or
/// checked first: compacted, with as many partitions as the input.
async fn changelog(
    pipeline: &Pipeline,
) -> Result<Option<Arc<dyn crate::state::Changelog>>, AppError> {
    let Some(topic) = pipeline
        .state
        .as_ref()
        .and_then(|s| s.changelog_topic.as_ref())
    else {
        return Ok(None);
    };
    let connect = |source| AppError::connect(pipeline, source);
    let cluster =
        ClusterView::connect(&pipeline.kafka.brokers, Duration::from_secs(30)).map_err(connect)?;
    let input = &pipeline.kafka.input_topic;
    let Some(partitions) = cluster.partition_count(input).map_err(connect)? else {
        return Err(AppError::MissingTopics(input.clone()));
    };
    let exists = cluster.partition_count(topic).map_err(connect)?.is_some();
    crate::kafka::admin::prepare_changelog(
        &pipeline.kafka.brokers,
        topic,
        partitions as i32,
        exists,
    )
    .await?;
    check_co_partitioned("changelog", &cluster, input, topic, partitions)
        .map_err(|e| e.unwrap_or_else(connect))?;
    let log = KafkaChangelog::new(&pipeline.kafka, topic).map_err(connect)?;
    Ok(Some(Arc::new(log)))
}

/// Refuses `other` unless it has `partitions` partitions, as the input.
fn check_co_partitioned(
    role: &'static str,
    cluster: &ClusterView,
    input: &str,
    other: &str,
    partitions: usize,
) -> Result<(), Result<AppError, KafkaError>> {
    match cluster.partition_count(other).map_err(Err)? {
        Some(count) if count != partitions => Err(Ok(AppError::NotCoPartitioned {
            role,
            topic: other.to_owned(),
            topic_partitions: count,
            input: input.to_owned(),
            input_partitions: partitions,
            keyed: match role {
                "labels" => " (and be keyed alike)",
                _ => "",
            },
        })),
        _ => Ok(()),
    }
}

/// The instance's Kafka clients.
struct Clients {
    source: KafkaSource,
    /// Reads the labels partitions of the input partitions held.
    labels: Option<Arc<KafkaSource>>,
    sink: KafkaSink,
    /// The input topic's partitions.
    input_partitions: i32,
}

/// Checks the topics against the cluster, forgets the offsets of
/// recreated partitions, and builds the clients; the engine follows the
/// input's assignment, and with a changelog the request API at `api_url`
/// is announced as the holder of the partitions assigned.
fn connect(
    pipeline: &Pipeline,
    engine: &Engine,
    health: Arc<Health>,
    stats: &Arc<Stats>,
    side_tasks: &CancellationToken,
    api_url: Option<&str>,
) -> Result<Clients, AppError> {
    let connect = |source| AppError::connect(pipeline, source);
    let cluster =
        ClusterView::connect(&pipeline.kafka.brokers, Duration::from_secs(30)).map_err(connect)?;
    check_topics(pipeline, &cluster)?;
    forget_recreated_partitions(pipeline, engine, &cluster)?;
    let input_partitions = cluster
        .partition_count(&pipeline.kafka.input_topic)
        .map_err(connect)?
        .unwrap_or(1) as i32;
    engine.know_partitions(input_partitions);
    let sink = KafkaSink::new(&pipeline.kafka, pipeline.batch.dead_letter_payload_bytes)
        .map_err(connect)?;
    let labels = match &pipeline.labels {
        Some(labels) => {
            check_co_partitioned(
                "labels",
                &cluster,
                &pipeline.kafka.input_topic,
                &labels.topic,
                input_partitions as usize,
            )
            .map_err(|e| e.unwrap_or_else(connect))?;
            let labels_context = SourceContext {
                // The labels consumer's partitions do not make the engine ready.
                health: Arc::new(Health::default()),
                stats: Arc::clone(stats),
                assignment: Arc::default(),
                followers: Vec::new(),
            };
            let settings = pipeline.kafka.for_labels(&labels.topic);
            Some(Arc::new(
                KafkaSource::following(&settings, pipeline.batch, labels_context)
                    .map_err(connect)?,
            ))
        }
        None => None,
    };
    // The state is restored before the labels are read: both in the
    // consumer's rebalance callback, in this order.
    let mut followers: Vec<Arc<dyn FollowsAssignment>> = Vec::new();
    if let (Some(checkpoint), Some(state)) = (engine.shared_checkpoint(), pipeline.state.as_ref())
        && let Some(topic) = &state.changelog_topic
    {
        let follower = Arc::new(StateFollower::new(
            checkpoint,
            &pipeline.kafka,
            topic,
            Arc::clone(&health),
            state.standby,
            input_partitions,
        ));
        let mirror = Arc::clone(&follower);
        let wanted = engine.read_across_partitions();
        let stop = side_tasks.clone();
        tokio::task::spawn_blocking(move || mirror.mirror(&wanted, &stop));
        followers.push(follower);
        // After the restore: an address is announced where the state is ready.
        if let (Some(url), Some(checkpoint)) = (api_url, engine.shared_checkpoint()) {
            followers.push(Arc::new(serve::Announcer {
                checkpoint,
                url: url.to_owned(),
            }));
        }
    }
    if let Some(labels) = &labels {
        followers.push(Arc::clone(labels) as Arc<dyn FollowsAssignment>);
    }
    let context = SourceContext {
        health,
        stats: Arc::clone(stats),
        assignment: Arc::default(),
        followers,
    };
    engine.follow_assignment(Arc::clone(&context.assignment));
    let source = KafkaSource::new(&pipeline.kafka, pipeline.batch, context).map_err(connect)?;
    Ok(Clients {
        source,
        labels,
        sink,
        input_partitions,
    })
}

/// Every few seconds: drains the histograms' pending samples, so that
/// memory stays flat when nothing scrapes `/metrics`, and sets the
/// champion-challenger gauges.
async fn upkeep(models: Arc<ModelSlot>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                telemetry::prometheus().run_upkeep();
                models.comparison();
            }
        }
    }
}

/// Refuses to start while a topic the pipeline writes to, or its labels
/// topic, is missing: a missing side topic found only at the first drift
/// alert, weeks in, would be found too late. (A topic deleted later is
/// met by the sink: scores and dead letters are held, side outputs kept.)
fn check_topics(pipeline: &Pipeline, cluster: &ClusterView) -> Result<(), AppError> {
    let kafka = &pipeline.kafka;
    let wanted: Vec<&str> = [&kafka.output_topic, &kafka.dead_letter_topic]
        .into_iter()
        .chain(&kafka.shadow_topic)
        .chain(&kafka.alerts_topic)
        .chain(pipeline.labels.as_ref().map(|l| &l.topic))
        .map(String::as_str)
        .collect();
    let missing = cluster
        .missing_topics(&wanted)
        .map_err(|source| AppError::connect(pipeline, source))?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(AppError::MissingTopics(missing.join(", ")))
    }
}

/// A stored offset past its partition's end means the topic was recreated
/// (or truncated) since: its records are new, not read again, so the
/// partition's folded offset is forgotten with a WARN. (A recreated topic
/// that has already grown past the stored offset cannot be told apart
/// without topic ids, which librdkafka's consumer API does not give.)
fn forget_recreated_partitions(
    pipeline: &Pipeline,
    engine: &Engine,
    cluster: &ClusterView,
) -> Result<(), AppError> {
    let Some(checkpoint) = engine.state_checkpoint() else {
        return Ok(());
    };
    let topics = std::iter::once(&pipeline.kafka.input_topic)
        .chain(pipeline.labels.as_ref().map(|l| &l.topic));
    for topic in topics {
        let folded = checkpoint.folded_until(topic);
        if folded.is_empty() {
            continue;
        }
        let ends = cluster
            .end_offsets(topic, folded.keys().copied())
            .map_err(|source| AppError::connect(pipeline, source))?;
        for (partition, end) in ends {
            let stored = folded[&partition];
            if end < stored {
                tracing::warn!(
                    topic = %topic,
                    partition,
                    stored,
                    end,
                    "the partition ends below the stored offset: the topic was recreated or \
                     truncated, so its records are taken as new and folded into the state"
                );
                checkpoint
                    .forget_folded(topic, partition)
                    .map_err(|e| AppError::Start(e.into()))?;
            }
        }
    }
    Ok(())
}

/// The model routes' token: `STREAMSCORE_ADMIN_TOKEN`, else the file
/// `admin.token_file` names. Without either the routes answer 401.
fn admin_token(pipeline: &Pipeline) -> Result<AdminToken, AppError> {
    if let Ok(token) = std::env::var("STREAMSCORE_ADMIN_TOKEN") {
        return Ok(AdminToken::new(Some(&token)));
    }
    let Some(path) = &pipeline.admin_token_file else {
        tracing::warn!(
            "no admin token (admin.token_file or STREAMSCORE_ADMIN_TOKEN): the model routes answer 401"
        );
        return Ok(AdminToken::new(None));
    };
    let token = std::fs::read_to_string(path).map_err(|source| AppError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    Ok(AdminToken::new(Some(&token)))
}

/// Resolves `timeout` after `stop` is cancelled.
async fn drain_deadline(stop: &CancellationToken, timeout: Duration) {
    stop.cancelled().await;
    tokio::time::sleep(timeout).await;
}

/// The first SIGINT or SIGTERM asks for a clean stop; the second aborts.
pub fn stop_on_signals() -> Shutdown {
    let shutdown = Shutdown::default();
    let tokens = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for first in [true, false] {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if first {
                tracing::info!(
                    "signal received; finishing the batch in flight (a second signal exits at once)"
                );
                tokens.stop.cancel();
            } else {
                tracing::warn!(
                    "second signal received; exiting without committing the batch in flight"
                );
                tokens.abort.cancel();
            }
        }
    });
    shutdown
}
