//! Side outputs: a challenger's scores (the shadow topic) and drift alerts.
//! They never hold the scores. A batch's delivery waits for its scores and
//! dead letters only; its side messages are handed here and sent beside
//! the stream. One that Kafka refuses because of a missing topic or
//! permission, or a moment's failure, is kept and offered again with the
//! next batch's side messages, or after [`RETRY`] when no batch comes, so
//! an alerts topic created late still gets its alerts. At most
//! [`MAX_KEPT`] wait; past that the oldest is dropped and counted. One
//! refused for good (too large) is dropped and counted. Each offer's
//! messages go in a round of their own, so a round waiting on a missing
//! alerts topic does not delay the shadow scores behind it.
//!
//! At a342126 a missing alerts topic held every batch, scores included,
//! from the first drift alert on: scoring stopped weeks after deployment.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::context::SinkContext;
use super::fault::{Fault, HOLD_RETRY};
use crate::output::Outgoing;
use crate::telemetry::events::{Event, SideOutputDropped, SideOutputsKept};

/// Side messages kept for another offer, at most: a few MB of alerts and
/// shadow scores.
pub const MAX_KEPT: usize = 10_000;

/// A side message and its topic.
type Side = (Arc<str>, Outgoing);

/// Side messages waiting: offered and not yet tried, and refused ones
/// waiting for the next offer (so that a missing topic is tried once per
/// batch, not in a loop).
#[derive(Default)]
struct Queues {
    fresh: VecDeque<Side>,
    refused: VecDeque<Side>,
}

impl Queues {
    fn len(&self) -> usize {
        self.fresh.len() + self.refused.len()
    }

    /// Drops the oldest past [`MAX_KEPT`], refused ones first.
    fn bound(&mut self) {
        while self.len() > MAX_KEPT {
            let oldest = match self.refused.pop_front() {
                Some(side) => side,
                None => match self.fresh.pop_front() {
                    Some(side) => side,
                    None => return,
                },
            };
            dropped(&oldest.0);
        }
    }
}

pub struct SideOutputs {
    producer: FutureProducer<SinkContext>,
    shared: Arc<Shared>,
    /// The sender task, started with the first offer (it needs a runtime),
    /// and ended when this is dropped.
    sender: Mutex<Option<tokio_util::sync::DropGuard>>,
}

/// What the sender, its rounds and the offers share.
#[derive(Default)]
struct Shared {
    queues: Mutex<Queues>,
    /// Rung by each offer.
    offered: tokio::sync::Notify,
    /// Rung by a round that ends with refusals, so that the sender sets the
    /// time to offer them again.
    refusals: tokio::sync::Notify,
    /// Rounds being sent.
    in_flight: AtomicUsize,
}

/// How long refused side messages wait before they are offered again when
/// no batch comes to offer them (as a held batch waits).
const RETRY: std::time::Duration = HOLD_RETRY;

impl SideOutputs {
    pub fn new(producer: FutureProducer<SinkContext>) -> Self {
        Self {
            producer,
            shared: Arc::default(),
            sender: Mutex::default(),
        }
    }

    /// Queues `messages` to `topic` for the sender, which sends them with
    /// the refused ones waiting. Returns at once.
    pub fn offer(&self, topic: &str, messages: &[Outgoing]) {
        {
            let mut queues = lock(&self.shared.queues);
            let topic: Arc<str> = Arc::from(topic);
            queues
                .fresh
                .extend(messages.iter().map(|m| (Arc::clone(&topic), m.clone())));
            queues.bound();
            if queues.len() == 0 {
                return;
            }
        }
        let mut sender = self
            .sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sender.is_none() {
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(send_while(
                self.producer.clone(),
                Arc::clone(&self.shared),
                stop.clone(),
            ));
            *sender = Some(stop.drop_guard());
        }
        self.shared.offered.notify_one();
    }

    /// Side messages not yet delivered.
    pub fn kept_len(&self) -> usize {
        lock(&self.shared.queues).len()
    }

    /// Waits, up to `timeout`, for the sender to hand everything offered
    /// to the producer (for a stop, before its flush).
    pub async fn settle(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while (self.shared.in_flight.load(Ordering::Acquire) > 0
            || !lock(&self.shared.queues).fresh.is_empty())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// The sender: hands what is offered to a round of its own as it comes,
/// so that a round waiting on a missing topic holds up no other; refused
/// messages wait for the next offer, or [`RETRY`] when none comes, so that
/// a missing topic is tried again without a loop and without new batches.
async fn send_while(
    producer: FutureProducer<SinkContext>,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut offered = false;
    loop {
        let due = offered || retry_at.is_some_and(|at| tokio::time::Instant::now() >= at);
        offered = false;
        let round: Vec<Side> = {
            let mut queues = lock(&shared.queues);
            let queues = &mut *queues;
            if due {
                let refused = std::mem::take(&mut queues.refused);
                queues.fresh.extend(refused);
                retry_at = None;
            }
            queues.fresh.drain(..).collect()
        };
        if !round.is_empty() {
            shared.in_flight.fetch_add(1, Ordering::AcqRel);
            let (producer, shared) = (producer.clone(), Arc::clone(&shared));
            tokio::spawn(async move {
                let refused = send(&producer, round).await;
                let any = !refused.is_empty();
                {
                    let mut queues = lock(&shared.queues);
                    queues.refused.extend(refused);
                    queues.bound();
                    SideOutputsKept { kept: queues.len() }.emit();
                }
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                if any {
                    shared.refusals.notify_one();
                }
            });
            continue;
        }
        if retry_at.is_none() && !lock(&shared.queues).refused.is_empty() {
            retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = shared.offered.notified() => offered = true,
            () = shared.refusals.notified() => {}
            () = retry => {}
        }
    }
}

/// Sends `round`; returns those refused for a reason that may pass (a
/// missing topic or permission, a moment's failure). Those refused for good
/// are dropped and counted.
async fn send(producer: &FutureProducer<SinkContext>, round: Vec<Side>) -> Vec<Side> {
    let results = join_all(round.iter().map(|(topic, message)| {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(&message.payload);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        producer.send(record, Timeout::Never)
    }))
    .await;
    let mut again = Vec::new();
    let mut last_error = None;
    for ((topic, message), result) in round.into_iter().zip(results) {
        let Err((error, _)) = result else { continue };
        if Fault::of(&error) == Fault::Message {
            tracing::warn!(topic = %topic, error = %error, "Kafka refused a side message (alert or challenger score) for good; it is dropped");
            dropped(&topic);
        } else {
            last_error = Some((Arc::clone(&topic), error));
            again.push((topic, message));
        }
    }
    if let Some((topic, error)) = last_error {
        tracing::error!(topic = %topic, refused = again.len(), error = %error,
            "Kafka refuses side messages (drift alerts or challenger scores): create the \
             topic or grant write access; they are kept and offered again with the next \
             batch, and scoring goes on");
    }
    again
}

fn lock(queues: &Mutex<Queues>) -> std::sync::MutexGuard<'_, Queues> {
    queues
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn dropped(topic: &str) {
    SideOutputDropped { topic }.emit();
}
