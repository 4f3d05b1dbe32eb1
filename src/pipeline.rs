//! The per-batch loop: fetch, process, deliver, store offsets. Offsets are
//! stored only after every output of the batch is acknowledged, so a crash
//! at any point re-reads rather than loses (at least once).

use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError};
use crate::kafka::sink::{DeliveryError, KafkaSink};
use crate::kafka::source::KafkaSource;
use crate::telemetry::Stats;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Runs until `stop` is cancelled, then finishes the batch in flight,
/// flushes, commits and returns.
pub async fn run(
    source: &KafkaSource,
    engine: &Engine,
    sink: &KafkaSink,
    stats: &Stats,
    stop: &CancellationToken,
) -> Result<(), PipelineError> {
    loop {
        let batch = source.next_batch(stop).await;
        if batch.is_empty() {
            break;
        }
        let started = Instant::now();
        let output = off_the_async_workers(engine.process(&batch)).await?;
        let delivered = sink.deliver(&batch, &output).await?;
        source.store(&batch)?;
        stats.record(&batch, &output, &delivered, started.elapsed());
        tracing::debug!(
            rows = batch.len(),
            scored = output.scores.len(),
            dead_lettered = output.dead_letters.len(),
            "batch delivered"
        );
    }
    sink.flush(Duration::from_secs(30))?;
    source.commit()?;
    tracing::info!("stopped after committing delivered offsets");
    Ok(())
}

/// Runs a batch's CPU work (decode, SQL, scoring: milliseconds for a big
/// batch) so that it does not hold up the other tasks on this worker
/// (signals, progress, librdkafka callbacks). A current-thread runtime has no
/// other worker to hand them to, so there it simply runs.
async fn off_the_async_workers<F: Future>(work: F) -> F::Output {
    match Handle::current().runtime_flavor() {
        RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| Handle::current().block_on(work))
        }
        _ => work.await,
    }
}
