//! Drift statistics of a live window against a reference, on the
//! reference's bins. Pure code, no I/O; scipy is the oracle in the tests
//! (tests/fixtures/drift, made by scripts/parity/drift_fixtures.py).

use serde::{Deserialize, Serialize};

/// Added to empty bins' shares so that PSI stays finite (the convention).
pub const PSI_EPSILON: f64 = 1e-4;

/// A numeric feature's (or the score's) reference distribution: quantile
/// bin edges (`edges.len() == bins + 1`) and each bin's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
    pub mean: f64,
    pub std: f64,
    pub null_rate: f64,
    /// One bin per training value (a flag, a band, a code): a live value
    /// that is none of them is counted apart, in the unseen bin
    /// ([`WindowCounts::unseen`]), not in a neighbour's.
    #[serde(default)]
    pub discrete: bool,
}

/// Bins written into a bundle's reference by default.
pub const REFERENCE_BINS: usize = 10;

/// A feature with at most this many distinct values in training gets one
/// reference bin per value instead of quantile bins.
pub const DISCRETE_VALUES: usize = 20;

impl Reference {
    /// The reference of training values: `bins` quantile bins (fewer when
    /// values repeat: equal edges are merged), each bin's share, the mean
    /// and the standard deviation. `None` without values.
    pub fn of(values: &[f64], bins: usize) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() || bins == 0 {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mut distinct = sorted.clone();
        distinct.dedup();
        let discrete = distinct.len() <= DISCRETE_VALUES;
        let mut edges = if discrete {
            // A flag, a band, a code: one bin per value (the last bin is
            // closed, so the last value's bin is [v, v]). Merged quantile
            // edges would put a 0/1 feature in one bin, blind to any shift.
            let last = distinct[distinct.len() - 1];
            distinct.push(last);
            distinct
        } else {
            let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
            let mut edges: Vec<f64> = (0..=bins).map(|i| at(i as f64 / bins as f64)).collect();
            edges.dedup();
            edges
        };
        if edges.len() == 1 {
            edges.push(edges[0]);
        }
        let mut counts = WindowCounts::new(edges.len() - 1);
        for &v in &sorted {
            counts.add(Some(v), &edges);
        }
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let std = (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        Some(Self {
            shares: counts.shares(),
            edges,
            mean,
            std,
            null_rate: 1.0 - n / values.len() as f64,
            discrete,
        })
    }
}

impl Reference {
    /// At least two edges, finite and in order, and one finite share per
    /// bin: what counting a window against it needs.
    pub fn check(&self) -> Result<(), String> {
        if self.edges.len() < 2 {
            return Err(format!(
                "{} bin edges; at least 2 are needed",
                self.edges.len()
            ));
        }
        if self.edges.iter().any(|e| !e.is_finite()) || !self.edges.is_sorted() {
            return Err("the bin edges are not finite and in ascending order".into());
        }
        if self.shares.len() != self.edges.len() - 1 {
            return Err(format!(
                "{} shares for {} bins",
                self.shares.len(),
                self.edges.len() - 1
            ));
        }
        if self.shares.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err("a bin share is not a finite share".into());
        }
        Ok(())
    }
}

/// Counts of a window over the reference's bins, mergeable: counts add.
/// Values below the first edge count in the first bin and values above the
/// last in the last, and both also in `outside`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCounts {
    pub bins: Vec<u64>,
    pub nulls: u64,
    pub outside: u64,
    /// Sum and sum of squares of the values, for the window's mean and
    /// standard deviation.
    #[serde(default)]
    pub sum: f64,
    #[serde(default)]
    pub sum_squares: f64,
    /// Values left out of `sum` and `sum_squares` because adding them would
    /// overflow (`1e160` squared is past `f64::MAX`): the sums stay finite,
    /// so they round-trip through the store, and the mean and standard
    /// deviation are over the values summed.
    #[serde(default)]
    pub unsummed: u64,
    /// Values a discrete reference never had (0.5 of a 0/1 flag, 40 of a
    /// 10/30/50/70 band): the unseen bin, outside `bins` and the sums.
    #[serde(default)]
    pub unseen: u64,
}

// Sums of floats are not bitwise associative; the merge test compares them
// within rounding instead (see `merged_parts_equal_the_whole`).
impl Eq for WindowCounts {}

impl WindowCounts {
    pub fn new(bins: usize) -> Self {
        Self {
            bins: vec![0; bins],
            ..Self::default()
        }
    }

    /// Counts one value (`None` is a null) against `edges`.
    pub fn add(&mut self, value: Option<f64>, edges: &[f64]) {
        let Some(x) = value.filter(|x| !x.is_nan()) else {
            self.nulls += 1;
            return;
        };
        let last = self.bins.len() - 1;
        self.add_to_sums(x, x * x, 1);
        if x < edges[0] || x > edges[edges.len() - 1] {
            self.outside += 1;
        }
        // Bin i holds [edges[i], edges[i+1]); the last bin is closed.
        let bin = edges[1..edges.len() - 1]
            .partition_point(|&e| e <= x)
            .min(last);
        self.bins[bin] += 1;
    }

    /// Counts one value against `reference`: as [`WindowCounts::add`], but
    /// with a discrete reference a value that is none of its values goes to
    /// the unseen bin.
    pub fn count(&mut self, value: Option<f64>, reference: &Reference) {
        if reference.discrete
            && let Some(x) = value.filter(|x| !x.is_nan())
            && reference
                .edges
                .binary_search_by(|e| e.total_cmp(&x))
                .is_err()
        {
            self.unseen += 1;
            return;
        }
        self.add(value, &reference.edges);
    }

    pub fn merge(&mut self, other: &WindowCounts) {
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            *a += b;
        }
        self.unseen += other.unseen;
        self.nulls += other.nulls;
        self.outside += other.outside;
        self.unsummed += other.unsummed;
        self.add_to_sums(
            other.sum,
            other.sum_squares,
            other.values() - other.unsummed,
        );
    }

    /// Adds `values` values' sum and sum of squares, or, where either sum
    /// would overflow, counts them as unsummed.
    fn add_to_sums(&mut self, sum: f64, sum_squares: f64, values: u64) {
        let (new_sum, new_squares) = (self.sum + sum, self.sum_squares + sum_squares);
        if new_sum.is_finite() && new_squares.is_finite() {
            self.sum = new_sum;
            self.sum_squares = new_squares;
        } else {
            self.unsummed += values;
        }
    }

    /// The mean and (population) standard deviation of the window's values.
    pub fn mean_and_std(&self) -> Option<(f64, f64)> {
        let n = (self.values() - self.unsummed) as f64;
        (n > 0.0).then(|| {
            let mean = self.sum / n;
            (mean, (self.sum_squares / n - mean * mean).max(0.0).sqrt())
        })
    }

    pub fn values(&self) -> u64 {
        self.bins.iter().sum()
    }

    fn shares(&self) -> Vec<f64> {
        let n = self.values().max(1) as f64;
        self.bins.iter().map(|&c| c as f64 / n).collect()
    }
}

/// Every statistic of one window against its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub psi: f64,
    pub ks: f64,
    pub jensen_shannon: f64,
    /// Wasserstein-1 between the binned distributions (mass at bin
    /// centres), divided by the reference's standard deviation.
    pub wasserstein: f64,
    pub null_rate: f64,
    pub outside_share: f64,
}

impl Drift {
    /// Each statistic under its metric name (the names thresholds use).
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("psi", self.psi),
            ("ks", self.ks),
            ("jensen_shannon", self.jensen_shannon),
            ("wasserstein", self.wasserstein),
            ("null_rate", self.null_rate),
            ("outside_share", self.outside_share),
        ]
    }
}

/// `None` while the window has no values.
pub fn drift(reference: &Reference, window: &WindowCounts) -> Option<Drift> {
    let values = window.values();
    if values == 0 {
        return None;
    }
    let (p, q) = (&reference.shares, window.shares());
    // The unseen bin (a discrete reference's, share 0 in training) counts
    // in PSI as an unseen category does; the shape metrics stay on the
    // number line, over the values binned.
    let psi = match window.unseen {
        0 => psi(p, &q),
        unseen => {
            let all = (values + unseen) as f64;
            let mut q: Vec<f64> = window.bins.iter().map(|&c| c as f64 / all).collect();
            q.push(unseen as f64 / all);
            let mut p = p.clone();
            p.push(0.0);
            self::psi(&p, &q)
        }
    };
    let counted = values + window.unseen;
    Some(Drift {
        psi,
        ks: ks(p, &q),
        jensen_shannon: jensen_shannon(p, &q),
        wasserstein: wasserstein(&reference.edges, p, &q) / reference.std.max(f64::MIN_POSITIVE),
        null_rate: window.nulls as f64 / (counted + window.nulls) as f64,
        outside_share: (window.outside + window.unseen) as f64 / counted as f64,
    })
}

/// Population stability index: sum (q - p) ln(q / p), empty shares
/// raised to [`PSI_EPSILON`].
pub fn psi(reference: &[f64], live: &[f64]) -> f64 {
    reference
        .iter()
        .zip(live)
        .map(|(&p, &q)| {
            let (p, q) = (p.max(PSI_EPSILON), q.max(PSI_EPSILON));
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// Kolmogorov-Smirnov statistic on the bins: the largest gap between the
/// two cumulative shares.
pub fn ks(reference: &[f64], live: &[f64]) -> f64 {
    let (mut a, mut b, mut gap) = (0.0, 0.0, 0.0f64);
    for (p, q) in reference.iter().zip(live) {
        a += p;
        b += q;
        gap = gap.max((a - b).abs());
    }
    gap
}

/// Jensen-Shannon distance (the square root of the divergence, natural
/// log), as scipy.spatial.distance.jensenshannon computes it.
pub fn jensen_shannon(reference: &[f64], live: &[f64]) -> f64 {
    let normalise = |v: &[f64]| {
        let total: f64 = v.iter().sum();
        v.iter().map(|x| x / total).collect::<Vec<_>>()
    };
    let (p, q) = (normalise(reference), normalise(live));
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(x, _)| **x > 0.0)
            .map(|(x, y)| x * (x / y).ln())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    ((kl(&p, &m) + kl(&q, &m)) / 2.0).max(0.0).sqrt()
}

/// Wasserstein-1 between shares placed at the bins' centres.
pub fn wasserstein(edges: &[f64], reference: &[f64], live: &[f64]) -> f64 {
    let centres: Vec<f64> = edges.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    let (mut a, mut b, mut total) = (0.0, 0.0, 0.0);
    for i in 0..centres.len().saturating_sub(1) {
        a += reference[i];
        b += live[i];
        total += (a - b).abs() * (centres[i + 1] - centres[i]);
    }
    total
}

/// Pearson's chi-square of observed category counts against the counts
/// the reference shares expect (categories the reference never saw are
/// not counted here; the caller reports them apart).
pub fn chi_square(reference: &[f64], observed: &[u64]) -> f64 {
    let n: u64 = observed.iter().sum();
    let total: f64 = reference.iter().sum();
    reference
        .iter()
        .zip(observed)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, &o)| {
            let expected = p / total * n as f64;
            (o as f64 - expected).powi(2) / expected
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn edges() -> Vec<f64> {
        vec![0.0, 1.0, 2.0, 4.0, 8.0]
    }

    #[test]
    fn values_fall_in_half_open_bins_and_outliers_in_the_end_bins() {
        let mut w = WindowCounts::new(4);
        for x in [-1.0, 0.0, 0.5, 1.0, 3.9, 8.0, 9.0] {
            w.add(Some(x), &edges());
        }
        w.add(None, &edges());
        w.add(Some(f64::NAN), &edges());
        assert_eq!(w.bins, vec![3, 1, 1, 2]);
        assert_eq!((w.nulls, w.outside), (2, 2));
    }

    #[test]
    fn a_reference_has_quantile_bins_and_merges_repeated_edges() {
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let r = Reference::of(&values, 10).unwrap();
        assert_eq!(r.edges.len(), 11);
        assert!(
            r.shares.iter().all(|s| (s - 0.1).abs() < 0.02),
            "{:?}",
            r.shares
        );
        assert!((r.shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let binary: Vec<f64> = (0..100).map(|i| f64::from(i % 4 == 0)).collect();
        let r = Reference::of(&binary, 10).unwrap();
        assert_eq!(r.edges, vec![0.0, 1.0, 1.0], "one bin per value");
        assert_eq!(r.shares, vec![0.75, 0.25]);
        assert!((r.mean - 0.25).abs() < 1e-12);
    }

    /// At a342126 an amount of 1e160 overflowed the sum of squares to
    /// infinity, which JSON stores as `null`, and every later read of the
    /// window failed: a crash loop from one record.
    #[test]
    fn values_that_would_overflow_the_sums_are_counted_apart_and_round_trip() {
        let mut w = WindowCounts::new(4);
        for x in [1.0, 1e160, -1e308, 1e308, f64::INFINITY, 3.0, 5e-324, -0.0] {
            w.add(Some(x), &edges());
        }
        assert_eq!(w.values(), 8);
        assert_eq!(w.unsummed, 4, "1e160 squared, both 1e308 squared, infinity");
        assert!(w.sum.is_finite() && w.sum_squares.is_finite());
        let (mean, _) = w.mean_and_std().expect("summed values");
        assert!(
            (mean - 1.0).abs() < 1e-12,
            "over 1, 3, 5e-324 and -0: {mean}"
        );
        let mut big = WindowCounts::new(4);
        big.add(Some(1e154), &edges());
        let mut other = big.clone();
        other.sum_squares = f64::MAX;
        big.merge(&other);
        assert!(big.sum_squares.is_finite());
        assert_eq!((big.values(), big.unsummed), (2, 1));
        let stored = serde_json::to_vec(&w).unwrap();
        let read: WindowCounts = serde_json::from_slice(&stored).expect("reads back");
        assert_eq!(read, w);
        assert_eq!(read.sum.to_bits(), w.sum.to_bits());
    }

    /// Merged quantile edges put a 0/1 feature in one bin, so its PSI was 0
    /// whatever its share of ones did; a 4-valued band showed a fraction of
    /// its shift. One bin per value sees both.
    #[test]
    fn flags_and_bands_get_a_bin_per_value_and_their_shifts_show() {
        let share = |ones: usize| -> Vec<f64> { (0..1000).map(|i| f64::from(i < ones)).collect() };
        let reference = Reference::of(&share(500), REFERENCE_BINS).unwrap();
        let mut live = WindowCounts::new(reference.shares.len());
        for v in share(350) {
            live.add(Some(v), &reference.edges);
        }
        let psi = drift(&reference, &live).unwrap().psi;
        // (0.35 - 0.5) ln(0.35 / 0.5) + (0.65 - 0.5) ln(0.65 / 0.5)
        let expected = -0.15 * (0.7f64).ln() + 0.15 * (1.3f64).ln();
        assert!((psi - expected).abs() < 1e-9, "{psi} against {expected}");

        let band: Vec<f64> = (0..1000).map(|i| [10.0, 30.0, 50.0, 70.0][i % 4]).collect();
        let reference = Reference::of(&band, REFERENCE_BINS).unwrap();
        assert_eq!(reference.edges, vec![10.0, 30.0, 50.0, 70.0, 70.0]);
        let mut live = WindowCounts::new(reference.shares.len());
        for (i, v) in band.iter().enumerate() {
            // Half of the 10s become 70s.
            let v = if *v == 10.0 && i % 8 == 0 { 70.0 } else { *v };
            live.add(Some(v), &reference.edges);
        }
        assert_eq!(live.bins, vec![125, 250, 250, 375]);

        // A value the band never had is unseen, not a neighbour's.
        let mut live = WindowCounts::new(reference.shares.len());
        for v in [10.0, 30.0, 40.0, 50.0, 70.0, 70.0, 40.0, 30.0] {
            live.count(Some(v), &reference);
        }
        assert_eq!((live.bins.clone(), live.unseen), (vec![1, 2, 1, 2], 2));
        let d = drift(&reference, &live).unwrap();
        assert_eq!(d.outside_share, 0.25);
        // PSI over the four values and the unseen bin (training share 0,
        // raised to the epsilon), as for an unseen category.
        let q = [0.125, 0.25, 0.125, 0.25, 0.25];
        let p = [0.25, 0.25, 0.25, 0.25, PSI_EPSILON];
        let expected: f64 = p.iter().zip(q).map(|(p, q)| (q - p) * (q / p).ln()).sum();
        assert!(
            (d.psi - expected).abs() < 1e-12,
            "{} against {expected}",
            d.psi
        );
    }

    #[test]
    fn identical_distributions_do_not_drift() {
        let shares = vec![0.25; 4];
        assert_eq!(psi(&shares, &shares), 0.0);
        assert_eq!(ks(&shares, &shares), 0.0);
        assert_eq!(jensen_shannon(&shares, &shares), 0.0);
        assert_eq!(wasserstein(&edges(), &shares, &shares), 0.0);
    }

    proptest! {
        /// Counting a window in parts and merging gives the whole window.
        #[test]
        fn merged_parts_equal_the_whole(
            values in proptest::collection::vec(proptest::option::of(-2.0f64..10.0), 0..200),
            cut in 0usize..200,
        ) {
            let cut = cut.min(values.len());
            let mut whole = WindowCounts::new(4);
            let (mut left, mut right) = (WindowCounts::new(4), WindowCounts::new(4));
            for (i, v) in values.iter().enumerate() {
                whole.add(*v, &edges());
                if i < cut { left.add(*v, &edges()) } else { right.add(*v, &edges()) }
            }
            left.merge(&right);
            prop_assert_eq!(&left.bins, &whole.bins);
            prop_assert_eq!((left.nulls, left.outside), (whole.nulls, whole.outside));
            prop_assert!((left.sum - whole.sum).abs() <= 1e-9 * whole.sum.abs().max(1.0));
            prop_assert!(
                (left.sum_squares - whole.sum_squares).abs() <= 1e-9 * whole.sum_squares.abs().max(1.0)
            );
            if let Some(reference) = Reference::of(&[0.0, 1.0, 2.0, 4.0, 8.0], 4) {
                prop_assert_eq!(drift(&reference, &left), drift(&reference, &whole));
            }
        }
    }
}
