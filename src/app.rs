//! Builds the components from a pipeline file and runs them until a signal.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Pipeline;
use crate::engine::{Engine, EngineError};
use crate::kafka::sink::KafkaSink;
use crate::kafka::source::KafkaSource;
use crate::pipeline::{self, PipelineError};
use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot start: {0}")]
    Start(#[from] EngineError),
    #[error("cannot connect to Kafka at {brokers}: {source}")]
    Connect {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Plans the SQL and loads the model first, so a bad pipeline fails before
/// anything is consumed; then runs the loop until `stop`.
pub async fn run(
    pipeline: &Pipeline,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), AppError> {
    let engine = Engine::for_pipeline(pipeline).await?;
    let connect = |source| AppError::Connect {
        brokers: pipeline.kafka.brokers.clone(),
        source,
    };
    let sink = KafkaSink::new(&pipeline.kafka).map_err(connect)?;
    let source = KafkaSource::new(&pipeline.kafka, pipeline.batch).map_err(connect)?;
    tracing::info!(
        input = %pipeline.kafka.input_topic,
        output = %pipeline.kafka.output_topic,
        dead_letter = %pipeline.kafka.dead_letter_topic,
        model = %engine.model().name,
        version = %engine.model().version,
        "scoring"
    );
    pipeline::run(&source, &engine, &sink, &stats, &stop).await?;
    Ok(())
}

/// Cancels `stop` on SIGINT or SIGTERM.
pub fn stop_on_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received; finishing the batch in flight");
        stop.cancel();
    });
}
