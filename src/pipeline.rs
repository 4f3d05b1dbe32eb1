//! The per-batch loop: fetch, process, deliver, checkpoint state, store
//! offsets. Offsets are stored only after every output of the batch is
//! acknowledged (and its state checkpointed), so a crash
//! at any point re-reads rather than loses (at least once).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::engine::{Engine, EngineError};
use crate::kafka::sink::{DeliveryError, KafkaSink};
use crate::kafka::source::KafkaSource;
use crate::output::BatchOutput;
use crate::reject::RejectKind;
use crate::state::Unwritten;
use crate::telemetry::{BatchDelivered, Stats};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Runs until `stop` is cancelled, then finishes the batches in flight,
/// flushes, commits and returns.
///
/// Batches overlap: while batch N waits for its acknowledgements, batch N+1
/// is fetched, processed and sent (up to `batch.max_in_flight` batches
/// awaiting acks). Offsets are still stored in batch order, each batch's
/// only once all of its outputs are acknowledged.
///
/// Fetching runs beside the processing, handing over whole batches through
/// a channel: a batch half gathered by the consumer must never be dropped
/// (its records are consumed; dropping them and storing a later offset
/// would lose them), so the fetch is never raced against anything else.
pub async fn run(
    source: &KafkaSource,
    engine: &Engine,
    sink: &KafkaSink,
    stats: &Stats,
    stop: &CancellationToken,
) -> Result<(), PipelineError> {
    let max_in_flight = source.batch_settings().max_in_flight;
    let (batches, mut fetched) = mpsc::channel::<Batch>(1);
    let fetch = async move {
        loop {
            let batch = source.next_batch(stop).await;
            if batch.is_empty() || batches.send(batch).await.is_err() {
                return Ok::<(), PipelineError>(());
            }
        }
    };
    let process = async {
        let mut in_flight = FuturesOrdered::new();
        let mut fetching = true;
        let mut delivered_batches = Delivered::new(engine.checkpoint_interval());
        while fetching || !in_flight.is_empty() {
            tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let (batch, mut output, started, delivered): InFlight = done;
                    let delivered = delivered?;
                    delivered_batches.add(output.staged.take(), &batch);
                    if delivered_batches.state.is_due() {
                        delivered_batches.write(engine, source)?;
                    }
                    stats.record(&delivered_event(&batch, &output, &delivered, started.elapsed()));
                    tracing::debug!(
                        rows = batch.len(),
                        scored = output.scores.len(),
                        dead_lettered = output.dead_letters.len(),
                        "batch delivered"
                    );
                }
                () = delivered_batches.deadline(), if delivered_batches.offsets.is_some() => {
                    delivered_batches.write(engine, source)?;
                }
                batch = fetched.recv(), if fetching && in_flight.len() < max_in_flight => {
                    let Some(batch) = batch else {
                        fetching = false;
                        continue;
                    };
                    let batch = source.held_only(batch);
                    if batch.is_empty() {
                        continue;
                    }
                    let started = Instant::now();
                    let output = off_the_async_workers(engine.process(&batch)).await?;
                    in_flight.push_back(async move {
                        let delivered = sink.deliver(&batch, &output).await;
                        (batch, output, started, delivered)
                    });
                }
            }
        }
        delivered_batches.write(engine, source)?;
        Ok::<(), PipelineError>(())
    };
    tokio::try_join!(fetch, process)?;
    sink.flush(Duration::from_secs(30)).await?;
    source.commit()?;
    tracing::info!("stopped after committing delivered offsets");
    Ok(())
}

/// Delivered batches whose state is not written yet, nor their offsets
/// stored: written together (see [`Unwritten`]), the offsets after them. A
/// crash loses them from the state and from Kafka's commit alike, so they
/// are read and folded again.
struct Delivered {
    state: Unwritten,
    /// The topic and, per partition, the next offset to store.
    offsets: Option<(String, BTreeMap<i32, i64>)>,
}

impl Delivered {
    fn new(interval: Duration) -> Self {
        Self {
            state: Unwritten::new(interval),
            offsets: None,
        }
    }

    fn add(&mut self, staged: Option<crate::state::Staged>, batch: &Batch) {
        self.state.push(staged);
        let (_, offsets) = self
            .offsets
            .get_or_insert_with(|| (batch.topic.clone(), BTreeMap::new()));
        offsets.extend(batch.next_offsets());
    }

    async fn deadline(&self) {
        match self.state.deadline() {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    }

    /// Writes the state, then stores the offsets (ARCHITECTURE.md §2, steps 3-4).
    /// Offsets of partitions revoked since their batches were processed
    /// are not stored: whoever holds them now reads and folds them again.
    fn write(&mut self, engine: &Engine, source: &KafkaSource) -> Result<(), PipelineError> {
        let committed = engine.checkpoint_all(self.state.take())?;
        if let Some((topic, mut offsets)) = self.offsets.take() {
            offsets.retain(|partition, _| !committed.revoked.contains(partition));
            source.store_offsets(&topic, &offsets)?;
        }
        Ok(())
    }
}

/// The labels topic's loop, beside [`run`] until `stop`: fetch, fold into
/// the label windows, checkpoint, store offsets. A label produces nothing,
/// so its batch is checkpointed as soon as it is folded.
pub async fn run_labels(
    source: &KafkaSource,
    engine: &Engine,
    stats: &Stats,
    stop: &CancellationToken,
) -> Result<(), PipelineError> {
    loop {
        let batch = source.next_batch(stop).await;
        if batch.is_empty() {
            break;
        }
        let batch = source.held_only(batch);
        let folded = off_the_async_workers(async { engine.fold_labels(&batch) }).await?;
        let mut offsets = batch.next_offsets();
        if let Some(folded) = folded {
            let committed = engine.checkpoint(Some(folded.staged))?;
            offsets.retain(|partition, _| !committed.revoked.contains(partition));
            engine.publish_label_metrics(&folded.days)?;
        }
        source.store_offsets(&batch.topic, &offsets)?;
        stats.record_labels(batch.len());
        tracing::debug!(labels = batch.len(), "labels folded");
    }
    source.commit()?;
    Ok(())
}

/// A delivered (or failed) batch: the batch, its outputs, when its work
/// began, and what delivery said.
type InFlight = (
    Batch,
    BatchOutput,
    Instant,
    Result<crate::kafka::sink::Delivered, DeliveryError>,
);

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

/// What a delivered batch did, as telemetry counts it: Kafka's refused
/// scores went out as dead letters, so they count as `undeliverable`.
pub fn delivered_event<'a>(
    batch: &'a Batch,
    output: &BatchOutput,
    delivered: &crate::kafka::sink::Delivered,
    elapsed: Duration,
) -> BatchDelivered<'a> {
    let rerouted = &delivered.rerouted;
    let mut dead_letters = [0u64; RejectKind::ALL.len()];
    for letter in &output.dead_letters {
        dead_letters[letter.kind.index()] += 1;
    }
    dead_letters[RejectKind::Undeliverable.index()] += rerouted.len() as u64;
    BatchDelivered {
        topic: &batch.topic,
        consumed: batch.len(),
        scored: output.scores.len() - rerouted.len(),
        flagged: output.flagged,
        dead_letters,
        scores_sent_ms: output
            .scores
            .iter()
            .enumerate()
            .filter(|(position, _)| !rerouted.contains(position))
            .map(|(_, score)| batch.records[score.source_index].timestamp_ms)
            .collect(),
        elapsed,
    }
}
