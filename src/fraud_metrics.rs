//! Fraud metrics over scored, labelled rows: AUC-ROC, average precision,
//! the Brier score, precision and recall at a threshold, card precision@k
//! per day, two ways to choose a threshold, and the monotone fit of fraud
//! rates on the score (pool adjacent violators) that score calibration and
//! estimated performance share. Pure functions; scikit-learn is the oracle
//! in the tests.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Area under the ROC curve: the chance that a random fraud scores above a
/// random genuine event (ties count half). `None` without both classes.
pub fn auc_roc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Mann-Whitney U: sum of the positives' ranks, with tied groups sharing
    // their mean rank.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < pairs.len() {
        let end = start
            + pairs[start..]
                .iter()
                .take_while(|p| p.0 == pairs[start].0)
                .count();
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        rank_sum += mean_rank * pairs[start..end].iter().filter(|p| p.1).count() as f64;
        start = end;
    }
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives * negatives) as f64)
}

/// Average precision as scikit-learn computes it: the precision at each
/// distinct score, weighted by the recall it adds. `None` without a fraud.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // Tied scores are one threshold.
        let score = scores[order[i]];
        while i < order.len() && scores[order[i]] == score {
            tp += usize::from(labels[order[i]]);
            seen += 1;
            i += 1;
        }
        let recall = tp as f64 / positives as f64;
        ap += (recall - last_recall) * (tp as f64 / seen as f64);
        last_recall = recall;
    }
    Some(ap)
}

/// Mean squared difference between the probability and the outcome.
pub fn brier(scores: &[f64], labels: &[bool]) -> Option<f64> {
    (!scores.is_empty()).then(|| {
        scores
            .iter()
            .zip(labels)
            .map(|(p, &y)| (p - f64::from(u8::from(y))).powi(2))
            .sum::<f64>()
            / scores.len() as f64
    })
}

/// (precision, recall) of flagging scores at or above `threshold`.
pub fn precision_recall_at(
    scores: &[f64],
    labels: &[bool],
    threshold: f64,
) -> (Option<f64>, Option<f64>) {
    let (mut tp, mut flagged, mut positives) = (0usize, 0usize, 0usize);
    for (&p, &y) in scores.iter().zip(labels) {
        let flag = p >= threshold;
        flagged += usize::from(flag);
        tp += usize::from(flag && y);
        positives += usize::from(y);
    }
    (
        (flagged > 0).then(|| tp as f64 / flagged as f64),
        (positives > 0).then(|| tp as f64 / positives as f64),
    )
}

/// Card precision@k as the handbook defines it (`card_precision_top_k`):
/// day by day in order, each card's score is its highest of the day and
/// it counts as fraud if any of its transactions that day was; of the k
/// cards scored highest, the share that were fraud, divided by k even on a
/// day with fewer cards. A card found that way is compromised and known:
/// it is left out of every later day (an investigator would have blocked
/// it), so a model is not credited again for the same card. The days'
/// values are averaged. Days are UTC calendar days of `times_ms`.
pub fn card_precision_at_k(
    scores: &[f64],
    labels: &[bool],
    cards: &[String],
    times_ms: &[i64],
    k: usize,
) -> Option<f64> {
    if k == 0 || scores.is_empty() {
        return None;
    }
    let mut days: std::collections::BTreeMap<i64, HashMap<&str, (f64, bool)>> =
        std::collections::BTreeMap::new();
    for i in 0..scores.len() {
        let day = times_ms[i].div_euclid(86_400_000);
        let card = days
            .entry(day)
            .or_default()
            .entry(&cards[i])
            .or_insert((f64::MIN, false));
        card.0 = card.0.max(scores[i]);
        card.1 |= labels[i];
    }
    let mut detected: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut total = 0.0;
    for cards in days.values() {
        let mut ranked: Vec<(&str, f64, bool)> = cards
            .iter()
            .filter(|(card, _)| !detected.contains(*card))
            .map(|(card, (score, fraud))| (*card, *score, *fraud))
            .collect();
        // Highest score first; the card breaks ties, so the result does
        // not depend on the hash order.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let found: Vec<&str> = ranked.iter().take(k).filter(|c| c.2).map(|c| c.0).collect();
        total += found.len() as f64 / k as f64;
        detected.extend(found);
    }
    Some(total / days.len() as f64)
}

/// Pool adjacent violators: the blocks, in score order, merged with the
/// one before while `in_order(before, last)` does not hold, so that what
/// is left is in order (the least-squares non-decreasing fit when blocks
/// are rows and frauds, and order is their rate). Isotonic calibration and
/// estimated performance (CBPE) both fit fraud rate on score this way;
/// each says what a block holds and when two are in order.
pub fn pool_adjacent_violators<B: Copy>(
    blocks: impl IntoIterator<Item = B>,
    in_order: impl Fn(&B, &B) -> bool,
    merge: impl Fn(B, B) -> B,
) -> Vec<B> {
    let mut pooled: Vec<B> = Vec::new();
    for block in blocks {
        pooled.push(block);
        while let [.., before, last] = pooled[..] {
            if in_order(&before, &last) {
                break;
            }
            pooled.pop();
            pooled.pop();
            pooled.push(merge(before, last));
        }
    }
    pooled
}

/// How the decision threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdRule {
    Fixed(f64),
    /// The lowest threshold whose precision reaches this (most recall at
    /// that precision).
    Precision(f64),
    /// Flag at most this many events a day on average.
    AlertBudget(f64),
}

/// The threshold `rule` picks on these scores; `None` when no threshold
/// satisfies it (no fraud, or a precision never reached).
pub fn choose_threshold(
    rule: ThresholdRule,
    scores: &[f64],
    labels: &[bool],
    times_ms: &[i64],
) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    match rule {
        ThresholdRule::Fixed(t) => Some(t),
        ThresholdRule::Precision(target) => {
            let (mut tp, mut best) = (0usize, None);
            let mut i = 0;
            while i < sorted.len() {
                let score = sorted[i].0;
                while i < sorted.len() && sorted[i].0 == score {
                    tp += usize::from(sorted[i].1);
                    i += 1;
                }
                if tp as f64 / i as f64 >= target {
                    best = Some(score);
                }
            }
            best
        }
        ThresholdRule::AlertBudget(per_day) => {
            let days: std::collections::HashSet<i64> =
                times_ms.iter().map(|t| t.div_euclid(86_400_000)).collect();
            let allowed = (per_day * days.len().max(1) as f64).floor() as usize;
            if allowed == 0 || sorted.is_empty() {
                return None;
            }
            // Just above the first score that would exceed the budget.
            match sorted.get(allowed) {
                None => sorted.last().map(|s| s.0),
                Some(&(next, _)) => {
                    let at = sorted[allowed - 1].0;
                    Some(if at > next {
                        (at + next) / 2.0
                    } else {
                        next.next_up()
                    })
                }
            }
        }
    }
}

/// Every metric of one set of scores, for tables, reports and `evaluate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub rows: usize,
    pub frauds: usize,
    pub auc: Option<f64>,
    pub average_precision: Option<f64>,
    pub brier: Option<f64>,
    pub threshold: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// With card ids and event times: card precision@k per day.
    pub card_precision: Option<f64>,
    pub card_precision_k: usize,
}

impl Evaluation {
    /// Every metric on one line, as `train`, `evaluate` and the report
    /// print it.
    pub fn describe(&self) -> String {
        let show = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.4}"));
        format!(
            "AUC {}, average precision {}, Brier {}, card precision@{} per day {}; at threshold \
             {:.4}: precision {}, recall {}",
            show(self.auc),
            show(self.average_precision),
            show(self.brier),
            self.card_precision_k,
            show(self.card_precision),
            self.threshold,
            show(self.precision),
            show(self.recall),
        )
    }
}

/// What `evaluate` needs beyond scores and labels, when the data has it.
pub struct Context<'a> {
    pub cards: Option<&'a [String]>,
    pub times_ms: Option<&'a [i64]>,
    pub k: usize,
}

pub fn evaluate(scores: &[f64], labels: &[bool], threshold: f64, context: &Context) -> Evaluation {
    let (precision, recall) = precision_recall_at(scores, labels, threshold);
    let card_precision = match (context.cards, context.times_ms) {
        (Some(cards), Some(times)) => card_precision_at_k(scores, labels, cards, times, context.k),
        _ => None,
    };
    Evaluation {
        rows: scores.len(),
        frauds: labels.iter().filter(|l| **l).count(),
        auc: auc_roc(scores, labels),
        average_precision: average_precision(scores, labels),
        brier: brier(scores, labels),
        threshold,
        precision,
        recall,
        card_precision,
        card_precision_k: context.k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKLEARN_AP: f64 = 0.625;
    const SKLEARN_BRIER: f64 = 0.2784375;

    #[test]
    fn auc_of_known_cases() {
        assert_eq!(
            auc_roc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auc_roc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auc_roc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // sklearn.metrics.roc_auc_score([0,1,0,1,1], [.1,.4,.35,.8,.35]) == 0.91666...
        let auc = auc_roc(
            &[0.1, 0.4, 0.35, 0.8, 0.35],
            &[false, true, false, true, true],
        )
        .unwrap();
        assert!((auc - 11.0 / 12.0).abs() < 1e-12, "{auc}");
        assert_eq!(auc_roc(&[0.1], &[true]), None);
    }

    /// Oracle: scikit-learn 1.x, printed by
    /// python3 -c "from sklearn.metrics import average_precision_score as ap, brier_score_loss as b;
    ///   y=[0,1,0,1,1,0,0,1]; p=[.1,.4,.35,.8,.35,.9,.2,.35]; print(ap(y,p), b(y,p))"
    #[test]
    fn average_precision_and_brier_match_scikit_learn() {
        let y = [false, true, false, true, true, false, false, true];
        let p = [0.1, 0.4, 0.35, 0.8, 0.35, 0.9, 0.2, 0.35];
        let ap = average_precision(&p, &y).unwrap();
        assert!((ap - SKLEARN_AP).abs() < 1e-12, "{ap}");
        let b = brier(&p, &y).unwrap();
        assert!((b - SKLEARN_BRIER).abs() < 1e-12, "{b}");
        assert_eq!(average_precision(&p, &[false; 8]), None);
    }

    #[test]
    fn precision_recall_and_thresholds() {
        let y = [false, true, false, true, true, false, false, true];
        let p = [0.1, 0.4, 0.35, 0.8, 0.35, 0.9, 0.2, 0.35];
        assert_eq!(
            precision_recall_at(&p, &y, 0.4),
            (Some(2.0 / 3.0), Some(0.5))
        );
        // Precision 1/1 only above 0.9 is impossible (0.9 is a genuine);
        // at 0.35: 4 of 6 flagged are fraud.
        let times = [0; 8];
        assert_eq!(
            choose_threshold(ThresholdRule::Precision(0.6), &p, &y, &times),
            Some(0.35)
        );
        assert_eq!(
            choose_threshold(ThresholdRule::Precision(0.99), &p, &y, &times),
            None
        );
        // Three alerts on the one day: above 0.35 (which would make six).
        let t = choose_threshold(ThresholdRule::AlertBudget(3.0), &p, &y, &times).unwrap();
        assert_eq!(p.iter().filter(|&&s| s >= t).count(), 3);
    }

    #[test]
    fn card_precision_ranks_cards_by_their_highest_score_each_day() {
        let day = 86_400_000;
        let cards: Vec<String> = ["a", "a", "b", "c", "a", "b"].map(String::from).to_vec();
        let times = [0, 10, 20, 30, day, day + 1];
        let p = [0.9, 0.1, 0.8, 0.2, 0.3, 0.7];
        let y = [false, true, false, true, false, true];
        // Day 0: a (0.9, fraud), b (0.8), c (0.2, fraud): top 2 = a, b -> 1/2.
        // Day 1: b (0.7, fraud), a (0.3): top 2 -> 1/2.
        let cp = card_precision_at_k(&p, &y, &cards, &times, 2).unwrap();
        assert!((cp - 0.5).abs() < 1e-12, "{cp}");
    }

    /// The handbook's rule: a card found on one day is known on the next,
    /// so finding it again earns nothing.
    #[test]
    fn card_precision_leaves_out_the_cards_found_on_earlier_days() {
        let day = 86_400_000;
        let cards: Vec<String> = ["a", "b", "a", "b", "c"].map(String::from).to_vec();
        let times = [0, 1, day, day + 1, day + 2];
        let p = [0.9, 0.1, 0.95, 0.2, 0.5];
        let y = [true, false, true, false, false];
        // Day 0: a found (1/1). Day 1: a is known, so c (0.5, no fraud)
        // tops the day: 0/1. Counting a again would have made it 1.
        let cp = card_precision_at_k(&p, &y, &cards, &times, 1).unwrap();
        assert!((cp - 0.5).abs() < 1e-12, "{cp}");
    }
}
