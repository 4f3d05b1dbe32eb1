//! What the demo shows at its end: the scores and drift alerts read back
//! from their topics, tallied by model version and measured against the
//! live transactions' labels.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

use super::{DemoError, MALFORMED, step};
use crate::config::Pipeline;
use crate::drift::alerts::Alert;
use crate::fraud_metrics::auc_roc;
use crate::kafka::clients::ClientBuilder;
use crate::output::{Decision, ScoreRecord};
use crate::simulate::Transaction;
use crate::telemetry::Snapshot;

#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub produced: usize,
    pub malformed: usize,
    pub stats: Snapshot,
    pub scores_read_back: usize,
    pub distinct_events_scored: usize,
    pub live_auc: Option<f64>,
    pub flagged_fraud: usize,
    pub fraud: usize,
    pub holdout_auc: Option<f64>,
    pub elapsed: Duration,
    /// (version, scores it gave), in the order the versions served.
    pub scores_by_version: Vec<(String, usize)>,
    /// What drift monitoring raised and cleared, from the alerts topic.
    pub drift_alerts: Vec<Alert>,
}

/// What the run gave besides the scores read back.
pub(super) struct Counts {
    pub(super) produced: usize,
    pub(super) stats: Snapshot,
    pub(super) holdout_auc: Option<f64>,
    pub(super) elapsed: Duration,
    pub(super) drift_alerts: Vec<Alert>,
}

/// The scores read back, tallied by version and measured against the
/// live transactions' labels.
pub(super) fn summarise(
    live: &[Transaction],
    scores: &[(String, f64, Decision, String)],
    counts: Counts,
) -> DemoSummary {
    let mut scores_by_version: Vec<(String, usize)> = Vec::new();
    for (_, _, _, version) in scores {
        match scores_by_version.iter_mut().find(|(v, _)| v == version) {
            Some((_, n)) => *n += 1,
            None => scores_by_version.push((version.clone(), 1)),
        }
    }
    let labels: HashMap<&str, bool> = live
        .iter()
        .map(|t| (t.event_id.as_str(), t.is_fraud))
        .collect();
    let mut pairs = Vec::with_capacity(scores.len());
    let mut flagged_fraud = 0;
    for (event_id, score, decision, _) in scores {
        if let Some(&fraud) = labels.get(event_id.as_str()) {
            pairs.push((*score, fraud));
            flagged_fraud += usize::from(fraud && *decision == Decision::Flag);
        }
    }
    let distinct: std::collections::HashSet<&str> = scores.iter().map(|s| s.0.as_str()).collect();
    let (s, l): (Vec<f64>, Vec<bool>) = pairs.into_iter().unzip();
    DemoSummary {
        produced: counts.produced,
        malformed: MALFORMED.len(),
        stats: counts.stats,
        scores_read_back: scores.len(),
        distinct_events_scored: distinct.len(),
        live_auc: auc_roc(&s, &l),
        flagged_fraud,
        fraud: live.iter().filter(|t| t.is_fraud).count(),
        holdout_auc: counts.holdout_auc,
        elapsed: counts.elapsed,
        scores_by_version,
        drift_alerts: counts.drift_alerts,
    }
}

/// Reads the output topic back: (event id, score, decision, model version)
/// per record.
pub(super) async fn read_scores(
    pipeline: &Pipeline,
    expected: usize,
) -> Result<Vec<(String, f64, Decision, String)>, DemoError> {
    read_back(
        pipeline,
        &pipeline.kafka.output_topic,
        "scores",
        expected,
        |bytes| {
            let record: ScoreRecord = serde_json::from_slice(bytes)?;
            Ok((
                record.event_id.into_owned(),
                record.score,
                record.decision,
                record.model_version.into_owned(),
            ))
        },
    )
    .await
}

/// The drift alerts the run raised (and cleared), read back from the
/// alerts topic: as many as its partitions hold.
pub(super) async fn read_alerts(pipeline: &Pipeline) -> Result<Vec<Alert>, DemoError> {
    let Some(topic) = &pipeline.kafka.alerts_topic else {
        return Ok(Vec::new());
    };
    let counter: StreamConsumer = ClientBuilder::reader(
        &pipeline.kafka.brokers,
        &format!("{}-alert-counter", pipeline.kafka.group_id),
    )
    .create()
    .map_err(step("create the alert counter"))?;
    let timeout = Duration::from_secs(10);
    let metadata = counter
        .fetch_metadata(Some(topic), timeout)
        .map_err(step("read the alerts topic's metadata"))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let mut expected = 0;
    for partition in 0..partitions as i32 {
        let (low, high) = counter
            .fetch_watermarks(topic, partition, timeout)
            .map_err(step("count the alerts"))?;
        expected += (high - low).max(0) as usize;
    }
    read_back(pipeline, topic, "alerts", expected, |bytes| {
        serde_json::from_slice(bytes)
    })
    .await
}

/// Reads `expected` records of `topic` from the start, each through
/// `parse`, within a minute.
async fn read_back<T>(
    pipeline: &Pipeline,
    topic: &str,
    what: &str,
    expected: usize,
    parse: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<Vec<T>, DemoError> {
    let consumer: StreamConsumer = ClientBuilder::reader(
        &pipeline.kafka.brokers,
        &format!("{}-{what}-reader", pipeline.kafka.group_id),
    )
    .create()
    .map_err(|e| DemoError::Step(format!("create the {what} reader: {e}")))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| DemoError::Step(format!("subscribe to the {what}: {e}")))?;
    let mut records = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while records.len() < expected {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| {
                DemoError::Step(format!("read back {} of {expected} {what}", records.len()))
            })?
            .map_err(|e| DemoError::Step(format!("read the {what}: {e}")))?;
        records.push(
            parse(message.payload().unwrap_or_default())
                .map_err(|e| DemoError::Step(format!("parse one of the {what}: {e}")))?,
        );
    }
    Ok(records)
}

impl DemoSummary {
    pub fn print(&self) {
        let s = &self.stats;
        println!("streamscore demo summary");
        println!(
            "  events produced       {:>8} ({} malformed on purpose)",
            self.produced, self.malformed
        );
        println!(
            "  events consumed       {:>8} in {:.1}s",
            s.consumed,
            self.elapsed.as_secs_f64()
        );
        println!(
            "  scored                {:>8} (read back {}, distinct {})",
            s.scored, self.scores_read_back, self.distinct_events_scored
        );
        println!("  dead-lettered         {:>8}", s.dead_lettered);
        println!(
            "  flagged               {:>8} ({} of {} frauds caught)",
            s.flagged, self.flagged_fraud, self.fraud
        );
        let show = |a: Option<f64>| a.map_or("n/a".to_string(), |a| format!("{a:.3}"));
        println!(
            "  AUC hold-out / live   {:>8} / {}",
            show(self.holdout_auc),
            show(self.live_auc)
        );
        for (version, count) in &self.scores_by_version {
            println!("  scored by version {version:<4} {count:>8}");
        }
        println!("  drift alerts          {:>8}", self.drift_alerts.len());
        for level in ["detected", "suspected", "cleared"] {
            let mut features: Vec<String> = self
                .drift_alerts
                .iter()
                .filter(|a| a.level == level)
                .map(|a| format!("{} ({} v{})", a.feature, a.metric, a.model_version))
                .collect();
            features.dedup();
            if !features.is_empty() {
                println!("    {level:<10} {}", features.join(", "));
            }
        }
    }
}
