//! When a drift value becomes an alert: thresholds per metric (with
//! overrides per feature), two levels, and hysteresis, so that one noisy
//! window raises nothing and one quiet window clears nothing. Pure code: the
//! monitor feeds it one judged window at a time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a drift value is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Limit {
    /// A fixed value (PSI 0.25, say).
    Value(f64),
    /// The mean plus this many standard deviations of the metric over the
    /// reference's own chunks (`{ sigmas = 3 }`): what the training data's
    /// own noise reaches.
    Reference { sigmas: f64 },
    /// What windows of the judged window's size, drawn from the reference
    /// itself, reach with this probability (`{ p_value = 0.01 }`,
    /// `chance.rs`): a threshold that knows the sample size.
    Chance { p_value: f64 },
}

/// The distribution metrics a threshold can be set on (the estimated
/// performance's are [`threshold_metrics`]' others).
pub const METRICS: [&str; 8] = [
    "psi",
    "ks",
    "jensen_shannon",
    "wasserstein",
    "null_rate",
    "outside_share",
    "chi_square",
    "flag_rate",
];

/// Every metric a threshold can be set on: the distribution metrics, then
/// the estimated performance's (`performance.rs`).
pub fn threshold_metrics() -> impl Iterator<Item = &'static str> {
    METRICS
        .into_iter()
        .chain(super::performance::PERFORMANCE_METRICS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Normal,
    Suspected,
    Detected,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Normal => "cleared",
            Level::Suspected => "suspected",
            Level::Detected => "detected",
        }
    }
}

/// A metric's two thresholds, resolved to numbers.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Thresholds {
    pub suspected: Option<f64>,
    pub detected: Option<f64>,
}

impl Thresholds {
    fn level_of(&self, value: f64) -> Level {
        if self.detected.is_some_and(|t| value >= t) {
            Level::Detected
        } else if self.suspected.is_some_and(|t| value >= t) {
            Level::Suspected
        } else {
            Level::Normal
        }
    }

    /// The threshold a level was raised over (or, clearing, the lowest).
    pub fn of(&self, level: Level) -> Option<f64> {
        match level {
            Level::Detected => self.detected,
            _ => self.suspected.or(self.detected),
        }
    }
}

/// How many windows raise and clear a level, and the event time between two
/// raised alerts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    pub raise_after: u32,
    pub clear_after: u32,
    pub cooldown_ms: i64,
}

/// One feature and metric's alert state; kept in the store so that a
/// restart neither forgets a raised alert nor raises it again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub level: Level,
    /// Consecutive windows at or over the suspected (any) threshold.
    over_suspected: u32,
    /// Consecutive windows at or over the detected threshold.
    over_detected: u32,
    /// Consecutive windows under every threshold.
    under: u32,
    /// Event time (window end, ms) of the last alert raised.
    last_raised_ms: Option<i64>,
}

impl AlertState {
    /// Takes one judged window's value; returns the level it moved to, if
    /// it moved (`Level::Normal`: cleared).
    pub fn step(
        &mut self,
        value: f64,
        thresholds: &Thresholds,
        rules: &Hysteresis,
        window_end_ms: i64,
    ) -> Option<Level> {
        let now = thresholds.level_of(value);
        let bump = |count: &mut u32, yes: bool| *count = if yes { *count + 1 } else { 0 };
        bump(&mut self.over_suspected, now >= Level::Suspected);
        bump(&mut self.over_detected, now == Level::Detected);
        bump(&mut self.under, now == Level::Normal);
        let earned = if self.over_detected >= rules.raise_after {
            Level::Detected
        } else if self.over_suspected >= rules.raise_after {
            Level::Suspected
        } else {
            Level::Normal
        };
        let cooled = self
            .last_raised_ms
            .is_none_or(|last| window_end_ms - last >= rules.cooldown_ms);
        if earned > self.level && cooled {
            self.level = earned;
            self.last_raised_ms = Some(window_end_ms);
            return Some(earned);
        }
        if self.level > Level::Normal && self.under >= rules.clear_after {
            self.level = Level::Normal;
            return Some(Level::Normal);
        }
        None
    }
}

/// An alert as it goes to the alerts topic (and into the store, for the
/// report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub feature: String,
    pub metric: String,
    pub value: f64,
    pub threshold: Option<f64>,
    /// `suspected`, `detected`, or `cleared`.
    pub level: String,
    pub window_start: String,
    pub window_end: String,
    pub model: String,
    pub model_version: String,
    /// `host:pid`: with several instances, each judges the windows of the
    /// partitions it holds.
    pub instance: String,
    pub partitions: Vec<i32>,
}

/// A metric's suspected and detected limits, as configured.
pub type Limits = (Option<Limit>, Option<Limit>);

/// Resolves the thresholds of every (feature, metric) from the pipeline's
/// per-metric settings, their per-feature overrides and, for
/// [`Limit::Reference`], the reference's chunk spreads.
#[derive(Debug, Clone, Default)]
pub struct ThresholdRules {
    /// Per metric.
    pub metrics: BTreeMap<String, Limits>,
    /// Per feature, per metric.
    pub features: BTreeMap<String, BTreeMap<String, Limits>>,
}

impl ThresholdRules {
    /// The first of `metrics` that a rule sets a limit on, if any.
    pub fn names_any(&self, metrics: &[&'static str]) -> Option<&'static str> {
        let set = |limits: &Limits| limits.0.is_some() || limits.1.is_some();
        metrics.iter().copied().find(|&metric| {
            self.metrics.get(metric).is_some_and(set)
                || self
                    .features
                    .values()
                    .any(|m| m.get(metric).is_some_and(set))
        })
    }

    /// The thresholds for `feature`'s `metric`; `spread` gives the mean and
    /// standard deviation of the metric over the reference's chunks, when
    /// the bundle has them, and `by_chance` the value a window of this size
    /// reaches by chance with a probability. An error names what a `sigmas`
    /// or `p_value` limit lacks.
    pub fn resolve(
        &self,
        feature: &str,
        metric: &str,
        spread: Option<(f64, f64)>,
        by_chance: &mut dyn FnMut(f64) -> Option<f64>,
    ) -> Result<Thresholds, String> {
        let (suspected, detected) = self
            .features
            .get(feature)
            .and_then(|m| m.get(metric))
            .or_else(|| self.metrics.get(metric))
            .copied()
            .unwrap_or_default();
        let mut number = |limit: Option<Limit>| -> Result<Option<f64>, String> {
            match limit {
                None => Ok(None),
                Some(Limit::Value(v)) => Ok(Some(v)),
                Some(Limit::Reference { sigmas }) => match spread {
                    Some((mean, std)) => Ok(Some(mean + sigmas * std)),
                    None => Err(format!(
                        "`{metric}` of `{feature}` has a `sigmas` threshold, but the model's \
                         reference has no chunk statistics for it (retrain, or give a value)"
                    )),
                },
                Some(Limit::Chance { p_value }) => match by_chance(p_value) {
                    Some(value) => Ok(Some(value)),
                    None => Err(format!(
                        "`{metric}` of `{feature}` has a `p_value` threshold, which applies \
                         only to {} of a feature, the score or a categorical input",
                        super::chance::CHANCE_METRICS.join(", ")
                    )),
                },
            }
        };
        Ok(Thresholds {
            suspected: number(suspected)?,
            detected: number(detected)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Hysteresis = Hysteresis {
        raise_after: 3,
        clear_after: 2,
        cooldown_ms: 0,
    };
    const PSI: Thresholds = Thresholds {
        suspected: Some(0.1),
        detected: Some(0.25),
    };

    fn run(state: &mut AlertState, values: &[f64], rules: &Hysteresis) -> Vec<(usize, Level)> {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| state.step(v, &PSI, rules, i as i64 * 10).map(|l| (i, l)))
            .collect()
    }

    #[test]
    fn a_level_is_raised_after_n_windows_over_and_cleared_after_m_under() {
        let mut state = AlertState::default();
        let moves = run(
            &mut state,
            &[0.5, 0.01, 0.5, 0.5, 0.5, 0.5, 0.05, 0.5, 0.05, 0.05],
            &RULES,
        );
        // One noisy window raises nothing; three in a row raise `detected`
        // at once (not `suspected` first); one quiet window clears nothing.
        assert_eq!(moves, vec![(4, Level::Detected), (9, Level::Normal)]);
    }

    #[test]
    fn suspected_then_detected_as_the_drift_grows() {
        let mut state = AlertState::default();
        let moves = run(&mut state, &[0.15, 0.15, 0.15, 0.3, 0.3, 0.3], &RULES);
        assert_eq!(moves, vec![(2, Level::Suspected), (5, Level::Detected)]);
    }

    #[test]
    fn the_cooldown_holds_back_a_new_alert() {
        let rules = Hysteresis {
            cooldown_ms: 100,
            ..RULES
        };
        let mut state = AlertState::default();
        let values = [
            0.15, 0.15, 0.15, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3,
        ];
        let moves = run(&mut state, &values, &rules);
        // Suspected at t=20; detected is earned at t=50 but waits for t=120.
        assert_eq!(moves, vec![(2, Level::Suspected), (12, Level::Detected)]);
    }

    #[test]
    fn feature_overrides_win_and_sigmas_need_the_reference_spread() {
        let mut rules = ThresholdRules::default();
        rules.metrics.insert(
            "psi".into(),
            (Some(Limit::Value(0.1)), Some(Limit::Value(0.25))),
        );
        rules.features.insert(
            "amount".into(),
            BTreeMap::from([("psi".into(), (None, Some(Limit::Reference { sigmas: 3.0 })))]),
        );
        assert_eq!(
            rules.resolve("hour", "psi", None, &mut |_| None).unwrap(),
            PSI
        );
        let amount = rules
            .resolve("amount", "psi", Some((0.02, 0.01)), &mut |_| None)
            .unwrap();
        assert_eq!(amount.suspected, None);
        assert!((amount.detected.unwrap() - 0.05).abs() < 1e-12);
        let missing = rules
            .resolve("amount", "psi", None, &mut |_| None)
            .unwrap_err();
        assert!(missing.contains("chunk statistics"), "{missing}");
        assert_eq!(
            rules.resolve("hour", "ks", None, &mut |_| None).unwrap(),
            Thresholds::default()
        );
    }
}
