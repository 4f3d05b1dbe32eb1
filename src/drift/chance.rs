//! Thresholds that know a window's size (`{ p_value = 0.01 }`, README
//! "Drift monitoring"). A window of n events drawn from the reference
//! itself still differs from it by chance, and the less the smaller n is:
//! PSI over ten bins is about 9 / n. The threshold for a window of n is
//! the (1 - p) quantile of the metric over windows of n drawn from the
//! reference's own bins (or categories), by simulation: a fixed number
//! fires on every small window and on none of a large one's real shifts,
//! this fires on a share p of windows that did not drift, whatever n.

use std::collections::{BTreeMap, HashMap};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Binomial, Distribution};

use super::reference::References;
use super::stats::WindowCounts;
use super::window::{ColumnCounts, numeric_reference};

/// Windows drawn per (column, size): the 0.99 quantile rests on 40 draws
/// past it, the 0.999 on 4.
const DRAWS: usize = 4000;
/// Sizes are rounded to this many steps per doubling (4.4% apart): the
/// thresholds of sizes within a step differ less than their noise.
const STEPS_PER_DOUBLING: f64 = 16.0;

/// The metrics a `p_value` threshold can be set on: those of the shape of
/// a window's distribution. (A null rate or a flag rate is a share; its
/// own threshold is a number.)
pub const CHANCE_METRICS: [&str; 5] = ["psi", "ks", "jensen_shannon", "wasserstein", "chi_square"];

/// Each column's simulated metric values per size bucket, computed once
/// when first needed and kept for the model version: bounded by columns x
/// metrics x buckets (a bucket per 4.4% of size).
#[derive(Debug, Default)]
pub struct ChanceThresholds {
    /// Per (column, size bucket): per metric, its simulated values, sorted.
    simulated: HashMap<(String, i32), BTreeMap<&'static str, Vec<f64>>>,
}

impl ChanceThresholds {
    /// The value of `metric` that windows of `n` events drawn from the
    /// reference reach with probability `p`; `None` for a metric or column
    /// this does not apply to.
    pub fn quantile(
        &mut self,
        references: &References,
        column: &str,
        metric: &str,
        n: u64,
        p: f64,
    ) -> Option<f64> {
        if !CHANCE_METRICS.contains(&metric) || n == 0 {
            return None;
        }
        let bucket = (STEPS_PER_DOUBLING * (n as f64).log2()).round() as i32;
        let simulated = self
            .simulated
            .entry((column.to_owned(), bucket))
            .or_insert_with(|| {
                let size = 2f64.powf(f64::from(bucket) / STEPS_PER_DOUBLING).round() as u64;
                simulate(references, column, size.max(1), seed(column, bucket))
            });
        let values = simulated.get(metric)?;
        let at = (((1.0 - p) * values.len() as f64).ceil() as usize).clamp(1, values.len());
        Some(values[at - 1])
    }
}

/// Every chance metric of `DRAWS` windows of `n` drawn from the column's
/// reference, each metric's values sorted.
fn simulate(
    references: &References,
    column: &str,
    n: u64,
    seed: u64,
) -> BTreeMap<&'static str, Vec<f64>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut values: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let Some(shares) = reference_shares(references, column) else {
        return values;
    };
    for _ in 0..DRAWS {
        let window = window_of(references, column, multinomial(&mut rng, n, &shares));
        for (metric, value) in window.measures(column, references) {
            if CHANCE_METRICS.contains(&metric) {
                values.entry(metric).or_default().push(value);
            }
        }
    }
    for simulated in values.values_mut() {
        simulated.sort_by(f64::total_cmp);
    }
    values
}

/// The shares of a column's reference bins (a numeric column) or
/// categories (a categorical input).
fn reference_shares(references: &References, column: &str) -> Option<Vec<f64>> {
    match numeric_reference(column, references) {
        Some(reference) => Some(reference.shares.clone()),
        None => Some(
            references
                .categories
                .get(column)?
                .values()
                .copied()
                .collect(),
        ),
    }
}

/// A window's counts, over the column's reference bins or categories.
fn window_of(references: &References, column: &str, counts: Vec<u64>) -> ColumnCounts {
    match numeric_reference(column, references) {
        Some(_) => ColumnCounts::Numeric(WindowCounts {
            bins: counts,
            ..WindowCounts::default()
        }),
        None => ColumnCounts::Categorical {
            counts: references
                .categories
                .get(column)
                .map(|c| c.keys().cloned().zip(counts).collect())
                .unwrap_or_default(),
        },
    }
}

/// Counts of `n` draws over categories with these shares: one binomial per
/// category, of what the ones before it left.
fn multinomial(rng: &mut SmallRng, n: u64, shares: &[f64]) -> Vec<u64> {
    let total: f64 = shares.iter().sum();
    let (mut left, mut mass) = (n, total);
    shares
        .iter()
        .map(|&share| {
            let p = if mass > 0.0 {
                (share / mass).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let drawn = Binomial::new(left, p).map_or(0, |b| b.sample(rng));
            left -= drawn;
            mass -= share;
            drawn
        })
        .collect()
}

/// The same thresholds at every start: the draws are seeded by what they
/// are for.
fn seed(column: &str, bucket: i32) -> u64 {
    column
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64 ^ bucket as u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::stats::Reference;

    /// A reference of ten equal bins, and one of a boolean (70% zeros).
    fn references() -> References {
        let continuous: Vec<f64> = (0..10_000).map(|i| f64::from(i) / 100.0).collect();
        let flag: Vec<f64> = (0..1000)
            .map(|i| f64::from(u8::from(i % 10 >= 7)))
            .collect();
        let mut references = References::default();
        references
            .features
            .insert("amount".into(), Reference::of(&continuous, 10).unwrap());
        references
            .features
            .insert("is_online".into(), Reference::of(&flag, 10).unwrap());
        references.categories.insert(
            "channel".into(),
            BTreeMap::from([
                ("pos".into(), 0.6),
                ("web".into(), 0.3),
                ("atm".into(), 0.1),
            ]),
        );
        references
    }

    /// Windows drawn from the reference itself cross the p = 0.01
    /// threshold about 1% of the time at every size, while a fixed PSI of
    /// 0.1 is crossed by many windows of 50 (ten bins: PSI is about 9 / n
    /// by chance) and none of 30,000. Independent draws (another seed)
    /// from those the thresholds were simulated from.
    #[test]
    fn a_p_value_threshold_is_crossed_by_chance_at_its_rate_whatever_the_size() {
        let references = references();
        let mut chance = ChanceThresholds::default();
        let mut rng = SmallRng::seed_from_u64(99);
        for column in ["amount", "is_online", "channel"] {
            for n in [50u64, 300, 3_000, 30_000] {
                let shares = reference_shares(&references, column).unwrap();
                let (mut over_p, mut over_fixed) = (0, 0);
                let windows = 2000;
                for _ in 0..windows {
                    let window = window_of(&references, column, multinomial(&mut rng, n, &shares));
                    let psi = window.measures(column, &references)["psi"];
                    let threshold = chance
                        .quantile(&references, column, "psi", n, 0.01)
                        .unwrap();
                    over_p += usize::from(psi >= threshold);
                    over_fixed += usize::from(psi >= 0.1);
                }
                let share = over_p as f64 / windows as f64;
                let fixed = over_fixed as f64 / windows as f64;
                eprintln!(
                    "{column} n={n}: p=0.01 threshold crossed by {share:.3}, PSI 0.1 by {fixed:.3}"
                );
                assert!((share - 0.01).abs() <= 0.02, "{column} n={n}: {share}");
                if n == 30_000 {
                    assert_eq!(fixed, 0.0, "{column}");
                }
                if n == 50 && column == "amount" {
                    assert!(fixed > 0.2, "a fixed PSI of 0.1 at n = 50: {fixed}");
                }
            }
        }
    }

    #[test]
    fn only_the_shape_metrics_have_a_chance_threshold() {
        let mut chance = ChanceThresholds::default();
        let references = references();
        assert!(
            chance
                .quantile(&references, "amount", "null_rate", 100, 0.01)
                .is_none()
        );
        assert!(
            chance
                .quantile(&references, "nothing", "psi", 100, 0.01)
                .is_none()
        );
        let small = chance
            .quantile(&references, "amount", "psi", 300, 0.01)
            .unwrap();
        let large = chance
            .quantile(&references, "amount", "psi", 30_000, 0.01)
            .unwrap();
        assert!(small > 10.0 * large, "{small} {large}");
    }
}
