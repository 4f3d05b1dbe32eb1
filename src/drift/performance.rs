//! Estimated performance before the labels arrive: confidence-based
//! performance estimation (CBPE, as NannyML names it). Card fraud is
//! confirmed days or weeks late; the scores are here now. If a score's
//! probability of fraud stays what it was in training (only the mix of
//! transactions moves), each window's expected confusion matrix, and with
//! it its AUC, average precision, precision and recall, follows from its
//! scores alone.
//!
//! The calibration is the reference's reliability curve: the evaluated
//! rows' (out-of-fold or hold-out) fraud rate per score bin, made monotone
//! by pooling adjacent violators, i.e. histogram-binned isotonic
//! calibration. The bins are fine where fraud lives: hundredths of the
//! scores, thousandths of the top twentieth and ten-thousandths of the top
//! thousandth. A window keeps, per bin, how many scores fell in it and how
//! many of those were flagged (`window.rs`, `ColumnCounts::Scores`), so its
//! counts merge over batches and partitions like every other drift count.

use serde::{Deserialize, Serialize};

use crate::fraud_metrics::{auc_roc, average_precision, pool_adjacent_violators};

/// The monitored column of the estimated performance.
pub const PERFORMANCE: &str = "performance";

/// The metrics a window's estimate gives (and that thresholds may name).
pub const PERFORMANCE_METRICS: [&str; 6] = [
    "estimated_auc",
    "estimated_average_precision",
    "estimated_precision",
    "estimated_recall",
    "auc_drop",
    "average_precision_drop",
];

/// A bundle's reliability curve and what its evaluated rows realised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceReference {
    /// Score bin edges, ascending (`edges.len() == bins + 1`).
    pub edges: Vec<f64>,
    /// Each bin's share of the evaluated rows.
    pub shares: Vec<f64>,
    /// Each bin's fraud rate, non-decreasing: a score's calibrated
    /// probability of fraud.
    pub fraud_rate: Vec<f64>,
    /// The evaluated rows' realised AUC and average precision.
    pub auc: f64,
    pub average_precision: f64,
    pub rows: u64,
}

/// One window's estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub auc: f64,
    pub average_precision: f64,
    /// Of the flagged scores, the expected share of fraud; `None` when
    /// nothing was flagged.
    pub precision: Option<f64>,
    /// Of the expected frauds, the expected share flagged.
    pub recall: f64,
}

/// The quantiles the bins are cut at: hundredths, then thousandths of
/// the top twentieth, where fraud is ranked (finer bins there cut the
/// binned estimate's bias on average precision: on the simulator from
/// -0.039 to -0.027, measured against a day's realised AP).
fn quantiles() -> Vec<f64> {
    let mut q: Vec<f64> = (0..95).map(|i| f64::from(i) / 100.0).collect();
    q.extend((0..49).map(|i| 0.95 + f64::from(i) / 1_000.0));
    q.extend((0..=10).map(|i| 0.999 + f64::from(i) / 10_000.0));
    q
}

impl PerformanceReference {
    /// The reliability curve of `scores` (finite) against their labels.
    /// `None` without both a fraud and a genuine row.
    pub fn of(scores: &[f64], labels: &[bool]) -> Option<Self> {
        let auc = auc_roc(scores, labels)?;
        let average_precision = average_precision(scores, labels)?;
        let mut sorted: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let mut edges: Vec<f64> = quantiles().into_iter().map(at).collect();
        edges.dedup();
        if edges.len() == 1 {
            edges.push(edges[0]);
        }
        let bins = edges.len() - 1;
        let (mut rows, mut frauds) = (vec![0.0; bins], vec![0.0; bins]);
        for (&score, &fraud) in scores.iter().zip(labels) {
            if score.is_finite() {
                let bin = bin_of(&edges, score);
                rows[bin] += 1.0;
                frauds[bin] += f64::from(u8::from(fraud));
            }
        }
        let n: f64 = rows.iter().sum();
        Some(Self {
            shares: rows.iter().map(|r| r / n).collect(),
            fraud_rate: monotone_rates(&rows, &frauds),
            edges,
            auc,
            average_precision,
            rows: n as u64,
        })
    }

    /// What counting and estimating need: edges in order, one finite share
    /// and one rate in [0, 1] per bin.
    pub fn check(&self) -> Result<(), String> {
        let bins = self.edges.len().saturating_sub(1);
        if bins == 0 || self.edges.iter().any(|e| !e.is_finite()) || !self.edges.is_sorted() {
            return Err("its score bin edges are not at least 2, finite and ascending".into());
        }
        if self.shares.len() != bins || self.fraud_rate.len() != bins {
            return Err(format!(
                "{} shares and {} fraud rates for {bins} bins",
                self.shares.len(),
                self.fraud_rate.len()
            ));
        }
        let share = |v: &f64| v.is_finite() && (0.0..=1.0).contains(v);
        if !self.shares.iter().all(share) || !self.fraud_rate.iter().all(share) {
            return Err("a share or a fraud rate is not between 0 and 1".into());
        }
        Ok(())
    }

    pub fn bins(&self) -> usize {
        self.edges.len() - 1
    }

    /// The bin a score counts in (below the first edge: the first; above
    /// the last: the last).
    pub fn bin(&self, score: f64) -> usize {
        bin_of(&self.edges, score)
    }

    /// The estimate from a window's scores per bin and flagged per bin.
    /// `None` when the window holds no expected fraud or no expected
    /// genuine transaction.
    pub fn estimate(&self, scored: &[u64], flagged: &[u64]) -> Option<Estimate> {
        let as_f64 = |c: &[u64]| c.iter().map(|&n| n as f64).collect::<Vec<_>>();
        self.estimate_weighted(&as_f64(scored), &as_f64(flagged))
    }

    /// The estimate the reference's own distribution gives: what a window
    /// like the training data's is expected to reach, the baseline that
    /// `auc_drop` and `average_precision_drop` are measured from (the same
    /// estimator on both sides, so that binning does not count as a drop).
    pub fn baseline(&self) -> Option<Estimate> {
        let rows: Vec<f64> = self.shares.iter().map(|s| s * self.rows as f64).collect();
        self.estimate_weighted(&rows, &vec![0.0; self.bins()])
    }

    fn estimate_weighted(&self, scored: &[f64], flagged: &[f64]) -> Option<Estimate> {
        let rate = &self.fraud_rate;
        let frauds: f64 = scored.iter().zip(rate).map(|(n, p)| n * p).sum();
        let genuine: f64 = scored.iter().zip(rate).map(|(n, p)| n * (1.0 - p)).sum();
        if !(frauds > 0.0 && genuine > 0.0) {
            return None;
        }
        // From the highest bin down: the trapezoid under the expected ROC
        // curve (a bin's scores tie), and the expected precision at each
        // row's recall step (as scikit-learn's AP over distinct scores; a
        // bin's rows are thresholds of their own, each of rate p).
        let (mut auc, mut ap) = (0.0, 0.0);
        let (mut frauds_above, mut seen) = (0.0, 0.0);
        for (&n, &p) in scored.iter().zip(rate).rev() {
            let (tp, fp) = (n * p, n * (1.0 - p));
            auc += fp / genuine * (frauds_above + tp / 2.0) / frauds;
            if tp > 0.0 {
                // Sum over the bin's rows k = 1..n of p / frauds times the
                // precision (above + k p) / (seen + k), which is
                // p + (above - p seen) / (seen + k): in closed form.
                let steps = digamma(seen + n + 1.0) - digamma(seen + 1.0);
                ap += p / frauds * (n * p + (frauds_above - p * seen) * steps);
            }
            frauds_above += tp;
            seen += n;
        }
        let flagged_total: f64 = flagged.iter().sum();
        let flagged_frauds: f64 = flagged.iter().zip(rate).map(|(n, p)| n * p).sum();
        Some(Estimate {
            auc,
            average_precision: ap,
            precision: (flagged_total > 0.0).then(|| flagged_frauds / flagged_total),
            recall: flagged_frauds / frauds,
        })
    }

    /// Every metric of a window's estimate, by name; empty when there is
    /// nothing to estimate.
    pub fn measures(&self, scored: &[u64], flagged: &[u64]) -> Vec<(&'static str, f64)> {
        let Some(estimate) = self.estimate(scored, flagged) else {
            return Vec::new();
        };
        let mut out = vec![
            ("estimated_auc", estimate.auc),
            ("estimated_average_precision", estimate.average_precision),
            ("estimated_recall", estimate.recall),
        ];
        out.extend(estimate.precision.map(|p| ("estimated_precision", p)));
        if let Some(baseline) = self.baseline() {
            out.push(("auc_drop", baseline.auc - estimate.auc));
            out.push((
                "average_precision_drop",
                baseline.average_precision - estimate.average_precision,
            ));
        }
        out
    }
}

/// The digamma function for x > 0: the recurrence up to 10, then its
/// asymptotic series (error under 1e-10 there). The difference of two
/// values is a sum of reciprocals: psi(a + n) - psi(a) = sum 1 / (a + k)
/// for k in 0..n.
fn digamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 10.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    let inv2 = 1.0 / (x * x);
    result + x.ln() - 0.5 / x - inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 / 252.0))
}

fn bin_of(edges: &[f64], score: f64) -> usize {
    edges[1..edges.len() - 1]
        .partition_point(|&e| e <= score)
        .min(edges.len() - 2)
}

/// Each bin's fraud rate, pooled with its neighbours wherever it would
/// fall below a lower bin's (pool adjacent violators, weighted by rows):
/// the least-squares non-decreasing fit. A block's rate is shrunk towards
/// the overall rate by one row's weight, so that no bin claims a fraud
/// rate of exactly 0 or 1 from few rows (a window of such bins would
/// expect no fraud at all and have no estimate). A bin without rows takes
/// its pool's rate.
fn monotone_rates(rows: &[f64], frauds: &[f64]) -> Vec<f64> {
    let overall = frauds.iter().sum::<f64>() / rows.iter().sum::<f64>().max(1.0);
    let rate = |b: &(f64, f64, usize)| (b.1 + overall) / (b.0 + 1.0);
    // Blocks of (rows, frauds, bins covered); an empty bin joins the block
    // before it.
    let blocks = pool_adjacent_violators(
        rows.iter().zip(frauds).map(|(&n, &f)| (n, f, 1)),
        |before, last| last.0 > 0.0 && rate(before) <= rate(last),
        |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2),
    );
    blocks
        .iter()
        .flat_map(|b| std::iter::repeat_n(rate(b), b.2))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores whose probability of fraud is the score itself: a perfectly
    /// calibrated model, the case CBPE is exact for in expectation.
    fn calibrated(n: usize, seed: u64, skew: f64) -> (Vec<f64>, Vec<bool>) {
        let mut state = seed;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let score = uniform().powf(skew);
                (score, uniform() < score)
            })
            .unzip()
    }

    #[test]
    fn the_reliability_curve_is_monotone_and_pools_violators() {
        // Overall 6 in 30: each block's rate is (frauds + 0.2) / (rows + 1).
        let rates = monotone_rates(&[10.0, 10.0, 0.0, 10.0], &[1.0, 3.0, 0.0, 2.0]);
        let pooled = 5.2 / 21.0;
        assert_eq!(rates, vec![1.2 / 11.0, pooled, pooled, pooled]);
        // Overall 4 in 10: never exactly 0 or 1.
        let rates = monotone_rates(&[4.0, 4.0, 2.0], &[0.0, 2.0, 2.0]);
        assert_eq!(rates, vec![0.4 / 5.0, 2.4 / 5.0, 2.4 / 3.0]);
    }

    /// On a calibrated model, the estimate of a fresh sample lies near what
    /// that sample realises once labelled.
    #[test]
    fn estimates_of_a_calibrated_model_meet_the_realised_values() {
        let (scores, labels) = calibrated(50_000, 7, 4.0);
        let reference = PerformanceReference::of(&scores, &labels).unwrap();
        reference.check().unwrap();
        let baseline = reference.baseline().unwrap();
        assert!((baseline.auc - reference.auc).abs() < 0.01, "{baseline:?}");
        // A later window in which three in four high scores are gone (a
        // fraud pattern stopped): the mix moves, a score's meaning not.
        let (scores, labels): (Vec<f64>, Vec<bool>) = {
            let (scores, labels) = calibrated(40_000, 11, 4.0);
            scores
                .into_iter()
                .zip(labels)
                .enumerate()
                .filter(|(i, (s, _))| *s < 0.5 || i % 4 == 0)
                .map(|(_, pair)| pair)
                .unzip()
        };
        let threshold = 0.5;
        let (mut scored, mut flagged) = (vec![0; reference.bins()], vec![0; reference.bins()]);
        for &s in &scores {
            scored[reference.bin(s)] += 1;
            flagged[reference.bin(s)] += u64::from(s >= threshold);
        }
        let estimate = reference.estimate(&scored, &flagged).unwrap();
        let realised_auc = auc_roc(&scores, &labels).unwrap();
        let realised_ap = average_precision(&scores, &labels).unwrap();
        let flagged_rows: Vec<bool> = scores
            .iter()
            .zip(&labels)
            .filter(|(s, _)| **s >= threshold)
            .map(|(_, &l)| l)
            .collect();
        let realised_precision =
            flagged_rows.iter().filter(|&&l| l).count() as f64 / flagged_rows.len() as f64;
        assert!(
            (estimate.auc - realised_auc).abs() < 0.02,
            "{estimate:?} {realised_auc}"
        );
        assert!(
            (estimate.average_precision - realised_ap).abs() < 0.03,
            "{estimate:?} {realised_ap}"
        );
        assert!(
            (estimate.precision.unwrap() - realised_precision).abs() < 0.03,
            "{estimate:?} {realised_precision}"
        );
        // The shift lowers average precision, and the estimate sees it.
        eprintln!(
            "reference AP {:.3} (estimated {:.3}), window AP {realised_ap:.3} (estimated {:.3})",
            reference.average_precision, baseline.average_precision, estimate.average_precision
        );
        assert!(estimate.average_precision < baseline.average_precision - 0.05);
    }

    #[test]
    fn digamma_differences_are_sums_of_reciprocals() {
        for (a, n) in [(1.0, 1usize), (3.5, 10), (100.0, 1_000), (0.25, 40)] {
            let sum: f64 = (0..n).map(|k| 1.0 / (a + k as f64)).sum();
            let gap = digamma(a + n as f64) - digamma(a);
            assert!((gap - sum).abs() < 1e-9, "{a} {n}: {gap} against {sum}");
        }
    }

    #[test]
    fn unusable_references_are_refused() {
        let (scores, labels) = calibrated(1_000, 3, 2.0);
        let good = PerformanceReference::of(&scores, &labels).unwrap();
        let mut bad = good.clone();
        bad.fraud_rate.pop();
        assert!(bad.check().unwrap_err().contains("fraud rates"));
        let mut bad = good.clone();
        bad.shares[0] = f64::NAN;
        assert!(bad.check().is_err());
        assert!(PerformanceReference::of(&[0.1, 0.2], &[false, false]).is_none());
    }
}
