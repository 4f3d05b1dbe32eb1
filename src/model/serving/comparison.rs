//! Champion against challenger over the last scored events: how often each
//! flags, how often their decisions differ, and how alike their rankings
//! are (Spearman's rank correlation). Pure code; the engine feeds it per
//! batch and the status task reads it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Events the rolling window holds by default.
pub const DEFAULT_WINDOW: usize = 10_000;

/// One event scored by both models.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub champion: f64,
    pub challenger: f64,
    pub champion_flags: bool,
    pub challenger_flags: bool,
}

/// The last `capacity` pairs.
#[derive(Debug)]
pub struct Comparison {
    pairs: VecDeque<Pair>,
    capacity: usize,
}

/// What the window says, for metrics and `models show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonSummary {
    pub events: usize,
    pub champion_flag_rate: f64,
    pub challenger_flag_rate: f64,
    /// Share of events where one model flags and the other passes.
    pub disagreement_rate: f64,
    /// Spearman's rho of the two scores; `None` when either is constant.
    pub rank_correlation: Option<f64>,
}

impl Comparison {
    pub fn new(capacity: usize) -> Self {
        Self {
            pairs: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    pub fn extend(&mut self, pairs: impl IntoIterator<Item = Pair>) {
        for pair in pairs {
            if self.pairs.len() == self.capacity {
                self.pairs.pop_front();
            }
            self.pairs.push_back(pair);
        }
    }

    pub fn clear(&mut self) {
        self.pairs.clear();
    }

    /// `None` while the window is empty.
    pub fn summary(&self) -> Option<ComparisonSummary> {
        let n = self.pairs.len();
        if n == 0 {
            return None;
        }
        let share = |f: &dyn Fn(&Pair) -> bool| {
            self.pairs.iter().filter(|p| f(p)).count() as f64 / n as f64
        };
        let champion: Vec<f64> = self.pairs.iter().map(|p| p.champion).collect();
        let challenger: Vec<f64> = self.pairs.iter().map(|p| p.challenger).collect();
        Some(ComparisonSummary {
            events: n,
            champion_flag_rate: share(&|p| p.champion_flags),
            challenger_flag_rate: share(&|p| p.challenger_flags),
            disagreement_rate: share(&|p| p.champion_flags != p.challenger_flags),
            rank_correlation: pearson(&ranks(&champion), &ranks(&challenger)),
        })
    }
}

/// 1-based ranks, tied values sharing their mean rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| values[i] == values[order[start]])
                .count();
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean_rank;
        }
        start = end;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(champion: f64, challenger: f64) -> Pair {
        Pair {
            champion,
            challenger,
            champion_flags: champion >= 0.5,
            challenger_flags: challenger >= 0.5,
        }
    }

    #[test]
    fn rates_and_rank_correlation_of_a_known_window() {
        let mut c = Comparison::new(10);
        // Same order, different scale: rho = 1; decisions differ on 0.6/0.3.
        c.extend([(0.1, 0.05), (0.6, 0.3), (0.9, 0.8), (0.2, 0.1)].map(|(a, b)| pair(a, b)));
        let s = c.summary().unwrap();
        assert_eq!(s.events, 4);
        assert_eq!(s.champion_flag_rate, 0.5);
        assert_eq!(s.challenger_flag_rate, 0.25);
        assert_eq!(s.disagreement_rate, 0.25);
        assert!((s.rank_correlation.unwrap() - 1.0).abs() < 1e-12);
    }

    /// Ranks [1, 2.5, 2.5, 4, 5] and [2, 1, 4.5, 4.5, 3]: rho = 3.75 / 9.5.
    #[test]
    fn tied_scores_share_their_mean_rank() {
        let mut c = Comparison::new(10);
        c.extend(
            [(1.0, 2.0), (2.0, 1.0), (2.0, 4.0), (3.0, 4.0), (5.0, 3.0)].map(|(a, b)| pair(a, b)),
        );
        let rho = c.summary().unwrap().rank_correlation.unwrap();
        assert!((rho - 3.75 / 9.5).abs() < 1e-12, "{rho}");
    }

    #[test]
    fn the_window_keeps_only_the_last_events() {
        let mut c = Comparison::new(2);
        c.extend([pair(0.9, 0.9), pair(0.1, 0.2), pair(0.2, 0.1)]);
        let s = c.summary().unwrap();
        assert_eq!(s.events, 2);
        assert_eq!(s.champion_flag_rate, 0.0);
        assert!((s.rank_correlation.unwrap() + 1.0).abs() < 1e-12);
    }
}
