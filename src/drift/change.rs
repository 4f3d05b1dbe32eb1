//! A change detector on the champion's score stream: Page-Hinkley, per
//! input partition, in the partition's order. Windows see a shift once a
//! window has closed and, with hysteresis, after several; Page-Hinkley sees
//! a sudden one within a few hundred events of it.
//!
//! Each score is standardised by the reference's score mean and standard
//! deviation. The test keeps the running mean of what it has seen since
//! its last alarm and two cumulative sums of each value's deviation from
//! it, less a tolerance `delta`: one for a rise, one for a fall. When a sum
//! has climbed `threshold` above its lowest point (or fallen below its
//! highest), the mean has moved: an alarm, and the test starts over on the
//! new level. The state is a few numbers per partition, kept in the store
//! with the batch's other drift state, so a partition's test follows it
//! and is never fed an event twice.

use serde::{Deserialize, Serialize};

/// The metric name of the test's alerts (on the column `score`).
pub const PAGE_HINKLEY: &str = "page_hinkley";

/// `[drift.change]`, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeSettings {
    /// Shifts smaller than this (in reference standard deviations) are
    /// tolerated.
    pub delta: f64,
    /// The cumulative deviation (in reference standard deviations) that
    /// raises an alarm.
    pub threshold: f64,
    /// Scores seen since the start (or the last alarm) before an alarm may
    /// be raised.
    pub min_events: u64,
}

/// Which way the scores moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// One partition's Page-Hinkley test.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    pub seen: u64,
    pub mean: f64,
    /// Cumulative deviation for a rise, and its lowest point.
    pub up: f64,
    pub up_low: f64,
    /// Cumulative deviation for a fall, and its highest point.
    pub down: f64,
    pub down_high: f64,
}

/// An alarm: the direction, and how far the sum had moved (in reference
/// standard deviations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alarm {
    pub direction: Direction,
    pub moved: f64,
    /// Scores seen since the test (re)started, this one included.
    pub after: u64,
}

impl PageHinkley {
    /// Takes one standardised score; an alarm resets the test.
    pub fn step(&mut self, x: f64, settings: &ChangeSettings) -> Option<Alarm> {
        if !x.is_finite() {
            return None;
        }
        self.seen += 1;
        self.mean += (x - self.mean) / self.seen as f64;
        self.up += x - self.mean - settings.delta;
        self.up_low = self.up_low.min(self.up);
        self.down += x - self.mean + settings.delta;
        self.down_high = self.down_high.max(self.down);
        if self.seen < settings.min_events {
            return None;
        }
        let (rise, fall) = (self.up - self.up_low, self.down_high - self.down);
        let alarm = |direction, moved| Alarm {
            direction,
            moved,
            after: self.seen,
        };
        let raised = if rise > settings.threshold {
            Some(alarm(Direction::Up, rise))
        } else if fall > settings.threshold {
            Some(alarm(Direction::Down, fall))
        } else {
            None
        };
        if raised.is_some() {
            *self = Self::default();
        }
        raised
    }

    /// Whether a value read back from the store can be stepped on.
    pub fn usable(&self) -> bool {
        [self.mean, self.up, self.up_low, self.down, self.down_high]
            .iter()
            .all(|v| v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ChangeSettings = ChangeSettings {
        delta: 0.1,
        threshold: 50.0,
        min_events: 100,
    };

    fn normal(state: &mut u64) -> f64 {
        let mut uniform = || {
            *state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((*state >> 11) as f64 / (1u64 << 53) as f64).max(1e-12)
        };
        (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()
    }

    /// 100,000 standard normal scores raise nothing; a shift of one
    /// standard deviation after them is caught within a hundred or so, and
    /// a fall as well.
    #[test]
    fn quiet_on_noise_and_quick_on_a_shift() {
        let mut rng = 3;
        let mut test = PageHinkley::default();
        for _ in 0..100_000 {
            assert_eq!(test.step(normal(&mut rng), &SETTINGS), None);
        }
        let caught =
            (1..=1_000).find_map(|i| Some((i, test.step(1.0 + normal(&mut rng), &SETTINGS)?)));
        let (after, alarm) = caught.expect("the shift was caught");
        assert_eq!(alarm.direction, Direction::Up);
        assert!(after < 150, "caught after {after}");
        assert_eq!(test, PageHinkley::default(), "the alarm restarts the test");
        for _ in 0..5_000 {
            test.step(1.0 + normal(&mut rng), &SETTINGS);
        }
        let caught = (1..=1_000).find_map(|i| Some((i, test.step(normal(&mut rng), &SETTINGS)?)));
        assert_eq!(caught.map(|(_, a)| a.direction), Some(Direction::Down));
    }

    #[test]
    fn values_that_cannot_be_used_are_skipped() {
        let mut test = PageHinkley::default();
        assert_eq!(test.step(f64::NAN, &SETTINGS), None);
        assert_eq!(test.seen, 0);
        let broken = PageHinkley {
            mean: f64::INFINITY,
            ..PageHinkley::default()
        };
        assert!(!broken.usable());
    }
}
