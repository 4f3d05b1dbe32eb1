//! Side outputs: a challenger's scores (the shadow topic) and drift alerts.
//! They never hold the scores. A batch's delivery waits for its scores and
//! dead letters only; its side messages are handed here and sent beside
//! the stream. One that Kafka refuses because of a missing topic or
//! permission, or a moment's failure, is kept and offered again with the
//! next batch's side messages, so an alerts topic created late still gets
//! its alerts. At most [`MAX_KEPT`] wait; past that the oldest is dropped
//! and counted. One refused for good (too large) is dropped and counted.
//!
//! At a342126 a missing alerts topic held every batch, scores included,
//! from the first drift alert on: scoring stopped weeks after deployment.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::context::SinkContext;
use super::sink::Fault;
use crate::output::Outgoing;
use crate::telemetry::names;

/// Side messages kept for another offer, at most: a few MB of alerts and
/// shadow scores.
pub const MAX_KEPT: usize = 10_000;

/// A side message and its topic.
type Side = (Arc<str>, Outgoing);

pub struct SideOutputs {
    producer: FutureProducer<SinkContext>,
    kept: Arc<Mutex<VecDeque<Side>>>,
    /// One round of sends at a time: a missing topic makes each send wait
    /// for the topic's metadata, and rounds must not pile up meanwhile.
    sending: Arc<AtomicBool>,
}

impl SideOutputs {
    pub fn new(producer: FutureProducer<SinkContext>) -> Self {
        Self {
            producer,
            kept: Arc::default(),
            sending: Arc::default(),
        }
    }

    /// Queues `messages` to `topic` and, unless a round is under way,
    /// starts one that sends everything queued. Returns at once.
    pub fn offer(&self, topic: &str, messages: &[Outgoing]) {
        if !messages.is_empty() {
            let topic: Arc<str> = Arc::from(topic);
            keep(
                &self.kept,
                messages.iter().map(|m| (Arc::clone(&topic), m.clone())),
            );
        }
        if self.kept_len() == 0 || self.sending.swap(true, Ordering::AcqRel) {
            return;
        }
        let (producer, kept, sending) = (
            self.producer.clone(),
            Arc::clone(&self.kept),
            Arc::clone(&self.sending),
        );
        tokio::spawn(async move {
            let round: Vec<Side> = lock(&kept).drain(..).collect();
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
            keep(&kept, again);
            metrics::gauge!(names::SIDE_OUTPUTS_KEPT).set(lock(&kept).len() as f64);
            sending.store(false, Ordering::Release);
        });
    }

    /// Side messages waiting for another offer.
    pub fn kept_len(&self) -> usize {
        lock(&self.kept).len()
    }
}

fn lock(kept: &Mutex<VecDeque<Side>>) -> std::sync::MutexGuard<'_, VecDeque<Side>> {
    kept.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Adds `messages` behind those kept, dropping the oldest past [`MAX_KEPT`].
fn keep(kept: &Mutex<VecDeque<Side>>, messages: impl IntoIterator<Item = Side>) {
    let mut kept = lock(kept);
    kept.extend(messages);
    while kept.len() > MAX_KEPT {
        if let Some((topic, _)) = kept.pop_front() {
            dropped(&topic);
        }
    }
}

fn dropped(topic: &str) {
    metrics::counter!(names::SIDE_OUTPUTS_DROPPED, "topic" => topic.to_owned()).increment(1);
}
