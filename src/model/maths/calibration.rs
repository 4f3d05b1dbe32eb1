//! Calibration: a map from the model's score to a probability that means
//! what it says (of the events scored 0.3, about 30% are fraud). It is
//! fitted by `train --calibrate` on evaluated scores (out of fold, or the
//! hold-out) and kept in the manifest; the bundle applies it after the
//! model (ARCHITECTURE.md §6, "A model kind"). Reasons stay the model's: they explain the
//! ranking, which a monotone map does not change.
//!
//! - `isotonic`: the least-squares non-decreasing step function of the
//!   labels on the scores (pool adjacent violators), read between the
//!   blocks' mean scores by linear interpolation, as scikit-learn's
//!   `IsotonicRegression(out_of_bounds="clip")` does.
//! - `platt`: a logistic regression on the score's log-odds,
//!   `p = σ(a·logit(s) + b)`, fitted by Newton's method.

use serde::{Deserialize, Serialize};

use crate::fraud_metrics::pool_adjacent_violators;

/// How `train --calibrate` maps scores to probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Isotonic,
    Platt,
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "isotonic" => Ok(Method::Isotonic),
            "platt" => Ok(Method::Platt),
            other => Err(format!(
                "unknown calibration `{other}`; the methods are isotonic and platt"
            )),
        }
    }
}

/// A fitted calibration, as the manifest keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method", deny_unknown_fields)]
pub enum Calibration {
    /// Points (score, probability), scores increasing, probabilities
    /// non-decreasing; between two points the probability is interpolated,
    /// outside them it is the nearest point's.
    Isotonic {
        scores: Vec<f64>,
        probabilities: Vec<f64>,
    },
    /// `p = σ(a·logit(s) + b)`.
    Platt { a: f64, b: f64 },
}

/// Scores are kept this far from 0 and 1 before their log-odds are taken.
const EDGE: f64 = 1e-12;

fn logit(p: f64) -> f64 {
    let p = p.clamp(EDGE, 1.0 - EDGE);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Calibration {
    /// Fits `method` on scores and their labels; `None` without both
    /// classes (nothing to calibrate against).
    pub fn fit(method: Method, scores: &[f64], labels: &[bool]) -> Option<Self> {
        let frauds = labels.iter().filter(|&&f| f).count();
        if frauds == 0 || frauds == labels.len() || scores.len() != labels.len() {
            return None;
        }
        Some(match method {
            Method::Isotonic => isotonic(scores, labels),
            Method::Platt => platt(scores, labels),
        })
    }

    /// The calibrated probability of a model score; NaN stays NaN (the
    /// row is refused as unscorable either way).
    pub fn apply(&self, score: f64) -> f64 {
        if score.is_nan() {
            return score;
        }
        match self {
            Calibration::Platt { a, b } => sigmoid(a * logit(score) + b),
            Calibration::Isotonic {
                scores,
                probabilities,
            } => {
                let after = scores.partition_point(|&s| s <= score);
                if after == 0 {
                    return probabilities[0];
                }
                if after == scores.len() {
                    return probabilities[after - 1];
                }
                let (s0, s1) = (scores[after - 1], scores[after]);
                let (p0, p1) = (probabilities[after - 1], probabilities[after]);
                p0 + (p1 - p0) * (score - s0) / (s1 - s0)
            }
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Calibration::Isotonic { .. } => "isotonic",
            Calibration::Platt { .. } => "platt",
        }
    }

    /// Refuses a calibration that could not map every score to a
    /// probability, naming what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Calibration::Platt { a, b } if !(a.is_finite() && b.is_finite()) => {
                Err(format!("platt calibration has non-finite a={a} or b={b}"))
            }
            Calibration::Platt { .. } => Ok(()),
            Calibration::Isotonic {
                scores,
                probabilities,
            } => {
                if scores.is_empty() || scores.len() != probabilities.len() {
                    return Err(format!(
                        "isotonic calibration has {} scores and {} probabilities",
                        scores.len(),
                        probabilities.len()
                    ));
                }
                if !scores.windows(2).all(|w| w[0] < w[1]) || scores.iter().any(|s| !s.is_finite())
                {
                    return Err("isotonic calibration scores are not finite and increasing".into());
                }
                if !probabilities.windows(2).all(|w| w[0] <= w[1])
                    || probabilities.iter().any(|p| !(0.0..=1.0).contains(p))
                {
                    return Err(
                        "isotonic calibration probabilities are not non-decreasing in [0, 1]"
                            .into(),
                    );
                }
                Ok(())
            }
        }
    }
}

/// Pool adjacent violators over the rows in score order (ties first
/// pooled into one row, so equal scores get one probability); each block
/// becomes the point (its mean score, its fraud rate).
fn isotonic(scores: &[f64], labels: &[bool]) -> Calibration {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Blocks of (score sum, frauds, rows); equal scores start as one.
    let mut ties: Vec<(f64, f64, f64)> = Vec::new();
    let mut previous: Option<f64> = None;
    for i in order {
        let fraud = f64::from(u8::from(labels[i]));
        match (previous, ties.last_mut()) {
            (Some(p), Some(tie)) if p == scores[i] => {
                *tie = (tie.0 + scores[i], tie.1 + fraud, tie.2 + 1.0);
            }
            _ => ties.push((scores[i], fraud, 1.0)),
        }
        previous = Some(scores[i]);
    }
    let blocks = pool_adjacent_violators(
        ties,
        |before, last| before.1 / before.2 < last.1 / last.2,
        |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2),
    );
    Calibration::Isotonic {
        scores: blocks.iter().map(|b| b.0 / b.2).collect(),
        probabilities: blocks.iter().map(|b| b.1 / b.2).collect(),
    }
}

/// Logistic regression of the labels on logit(score), by Newton's method
/// (two parameters: a handful of steps), with Platt's targets
/// (`(n₊+1)/(n₊+2)` and `1/(n₋+2)` instead of 1 and 0) so that a score
/// that separated its rows perfectly still gets a finite slope.
fn platt(scores: &[f64], labels: &[bool]) -> Calibration {
    let positives = labels.iter().filter(|&&f| f).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let high = (positives + 1.0) / (positives + 2.0);
    let low = 1.0 / (negatives + 2.0);
    let z: Vec<f64> = scores.iter().map(|&s| logit(s)).collect();
    let (mut a, mut b) = (1.0, 0.0);
    for _ in 0..100 {
        // Gradient and Hessian of the log loss in (a, b).
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (zi, &fraud) in z.iter().zip(labels) {
            let p = sigmoid(a * zi + b);
            let t = if fraud { high } else { low };
            let w = (p * (1.0 - p)).max(1e-12);
            ga += (p - t) * zi;
            gb += p - t;
            haa += w * zi * zi;
            hab += w * zi;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    Calibration::Platt { a, b }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::fraud_metrics::brier;

    /// Scores that overstate the risk: an event scored s is fraud with
    /// probability s² (so 0.5 means 25%).
    fn overconfident(n: usize) -> (Vec<f64>, Vec<bool>) {
        let mut rng = SmallRng::seed_from_u64(9);
        (0..n)
            .map(|_| {
                let s: f64 = rng.random_range(0.0..1.0);
                (s, rng.random_range(0.0..1.0) < s * s)
            })
            .unzip()
    }

    #[test]
    fn both_methods_make_a_score_mean_its_rate_and_lower_the_brier_score() {
        let (scores, labels) = overconfident(20_000);
        let before = brier(&scores, &labels).unwrap();
        for method in [Method::Isotonic, Method::Platt] {
            let calibration = Calibration::fit(method, &scores, &labels).unwrap();
            calibration.check().unwrap();
            let calibrated: Vec<f64> = scores.iter().map(|&s| calibration.apply(s)).collect();
            let after = brier(&calibrated, &labels).unwrap();
            assert!(after < before - 0.01, "{method:?}: {before} -> {after}");
            // Monotone: the ranking (AUC) is unchanged up to ties.
            assert!(calibration.apply(0.2) <= calibration.apply(0.6));
            // 0.5 meant 25%.
            let p = calibration.apply(0.5);
            assert!((p - 0.25).abs() < 0.06, "{method:?}: 0.5 -> {p}");
        }
    }

    /// Pool adjacent violators by hand: scores 0.1..0.4 with labels
    /// 0, 1, 0, 1 pool the middle two (1 then 0) into 0.5 at 0.25.
    #[test]
    fn isotonic_pools_the_violators_and_interpolates_between_blocks() {
        let calibration = Calibration::fit(
            Method::Isotonic,
            &[0.1, 0.2, 0.3, 0.4],
            &[false, true, false, true],
        )
        .unwrap();
        assert_eq!(
            calibration,
            Calibration::Isotonic {
                scores: vec![0.1, 0.25, 0.4],
                probabilities: vec![0.0, 0.5, 1.0]
            }
        );
        assert!((calibration.apply(0.175) - 0.25).abs() < 1e-12);
        assert_eq!(calibration.apply(0.0), 0.0);
        assert_eq!(calibration.apply(0.9), 1.0);
        assert!(calibration.apply(f64::NAN).is_nan());
    }

    #[test]
    fn unusable_calibrations_are_refused_with_the_reason() {
        assert!(Calibration::fit(Method::Platt, &[0.1, 0.2], &[false, false]).is_none());
        let bad = Calibration::Isotonic {
            scores: vec![0.5, 0.1],
            probabilities: vec![0.1, 0.2],
        };
        assert!(bad.check().unwrap_err().contains("increasing"));
        let bad = Calibration::Platt {
            a: f64::NAN,
            b: 0.0,
        };
        assert!(bad.check().unwrap_err().contains("non-finite"));
        assert!(
            "beta"
                .parse::<Method>()
                .unwrap_err()
                .contains("isotonic and platt")
        );
    }
}
