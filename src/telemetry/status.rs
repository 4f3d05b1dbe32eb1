//! The status line: every `status.interval_ms`, one INFO line with what the
//! engine did since the last one. Quiet when nothing was consumed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Snapshot, Stats};

/// Logs the status line until `stop`.
pub async fn run(stats: Arc<Stats>, interval: Duration, stop: CancellationToken) {
    let mut last = stats.snapshot();
    let mut since = Instant::now();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = stats.snapshot();
        let batch_seconds = stats.take_batch_seconds();
        if let Some(line) = StatusLine::between(&last, &now, since.elapsed(), batch_seconds) {
            tracing::info!(
                events_per_s = line.events_per_second,
                scored = line.delta.scored,
                dead_lettered = line.delta.dead_lettered,
                flagged = line.delta.flagged,
                lag = %stats
                    .consumer_lag()
                    .map_or("unknown".into(), |l| l.to_string()),
                batch_p50_ms = line.batch_p50_ms,
                batch_p99_ms = line.batch_p99_ms,
                "status"
            );
        }
        last = now;
        since = Instant::now();
    }
}

/// What one status line says.
#[derive(Debug, PartialEq)]
pub struct StatusLine {
    pub delta: Snapshot,
    pub events_per_second: u64,
    pub batch_p50_ms: f64,
    pub batch_p99_ms: f64,
}

impl StatusLine {
    /// The line for the interval from `before` to `after`, or `None` when
    /// nothing was consumed in it.
    pub fn between(
        before: &Snapshot,
        after: &Snapshot,
        elapsed: Duration,
        mut batch_seconds: Vec<f64>,
    ) -> Option<Self> {
        let delta = Snapshot {
            consumed: after.consumed - before.consumed,
            scored: after.scored - before.scored,
            flagged: after.flagged - before.flagged,
            dead_lettered: after.dead_lettered - before.dead_lettered,
            batches: after.batches - before.batches,
        };
        if delta.consumed == 0 {
            return None;
        }
        batch_seconds.sort_by(f64::total_cmp);
        let percentile_ms = |q: f64| {
            let rank = ((q * batch_seconds.len() as f64).ceil() as usize).max(1) - 1;
            let ms = batch_seconds.get(rank).copied().unwrap_or_default() * 1000.0;
            (ms * 10.0).round() / 10.0
        };
        Some(Self {
            delta,
            events_per_second: (delta.consumed as f64 / elapsed.as_secs_f64().max(1e-3)) as u64,
            batch_p50_ms: percentile_ms(0.5),
            batch_p99_ms: percentile_ms(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_the_interval_and_nothing_when_idle() {
        let before = Snapshot {
            consumed: 100,
            scored: 90,
            ..Snapshot::default()
        };
        let after = Snapshot {
            consumed: 1100,
            scored: 1080,
            dead_lettered: 10,
            flagged: 5,
            batches: 100,
        };
        let samples: Vec<f64> = (1..=100).map(|ms| ms as f64 / 1000.0).collect();
        let line = StatusLine::between(&before, &after, Duration::from_secs(2), samples).unwrap();
        assert_eq!(line.events_per_second, 500);
        assert_eq!(line.delta.scored, 990);
        assert_eq!((line.batch_p50_ms, line.batch_p99_ms), (50.0, 99.0));
        assert_eq!(
            StatusLine::between(&after, &after, Duration::from_secs(10), vec![]),
            None
        );
    }
}
