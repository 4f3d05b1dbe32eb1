//! One column's counts in one drift window, as stored (mergeable: the
//! counts of two partitions, or of two batches, add), and the measures a
//! window's merged counts give against the reference.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::reference::References;
use super::stats::{Reference, WindowCounts, chi_square, drift, psi};

/// What is counted of a column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnCounts {
    /// A model feature or the score: counts over the reference's bins.
    Numeric(WindowCounts),
    /// A categorical input column: each value's count (`null` for nulls).
    Categorical { counts: BTreeMap<String, u64> },
    /// The champion's decisions: prediction drift.
    Flags { flagged: u64, scored: u64 },
    /// The champion's scores on the performance reference's bins, and of
    /// each bin how many were flagged: the estimated performance.
    Scores { scored: Vec<u64>, flagged: Vec<u64> },
}

impl ColumnCounts {
    pub fn merge(&mut self, other: &ColumnCounts) {
        match (self, other) {
            (ColumnCounts::Numeric(a), ColumnCounts::Numeric(b)) => a.merge(b),
            (ColumnCounts::Categorical { counts: a }, ColumnCounts::Categorical { counts: b }) => {
                for (value, n) in b {
                    *a.entry(value.clone()).or_default() += n;
                }
                bound_unseen(a);
            }
            (
                ColumnCounts::Flags { flagged, scored },
                ColumnCounts::Flags {
                    flagged: f,
                    scored: s,
                },
            ) => {
                *flagged += f;
                *scored += s;
            }
            (
                ColumnCounts::Scores { scored, flagged },
                ColumnCounts::Scores {
                    scored: s,
                    flagged: f,
                },
            ) => {
                for (a, b) in scored.iter_mut().zip(s) {
                    *a += b;
                }
                for (a, b) in flagged.iter_mut().zip(f) {
                    *a += b;
                }
            }
            // Only the same column's counts are merged, and a column's kind
            // follows from its name; a mismatch would be a bug, and keeping
            // the first is the harmless answer.
            _ => {}
        }
    }

    /// Values counted (nulls included).
    pub fn events(&self) -> u64 {
        match self {
            ColumnCounts::Numeric(w) => w.values() + w.unseen + w.nulls,
            ColumnCounts::Categorical { counts } => counts.values().sum(),
            ColumnCounts::Flags { scored, .. } => *scored,
            ColumnCounts::Scores { scored, .. } => scored.iter().sum(),
        }
    }

    /// The values a shape metric is computed over: a numeric column's
    /// values (nulls apart), a categorical column's every value.
    pub fn sample_size(&self) -> u64 {
        match self {
            ColumnCounts::Numeric(w) => w.values(),
            other => other.events(),
        }
    }

    /// Every measure of this window against `references`, by metric name.
    /// Empty when the column has no reference or the window no values.
    pub fn measures(&self, column: &str, references: &References) -> BTreeMap<&'static str, f64> {
        let mut out = BTreeMap::new();
        match self {
            ColumnCounts::Numeric(counts) => {
                let Some(reference) = numeric_reference(column, references) else {
                    return out;
                };
                if let Some(d) = drift(reference, counts) {
                    out.extend(d.named());
                }
                if let Some((mean, std)) = counts.mean_and_std() {
                    out.extend([("mean", mean), ("std", std)]);
                }
            }
            ColumnCounts::Categorical { counts } => {
                let Some(reference) = references.categories.get(column) else {
                    return out;
                };
                let n: u64 = counts.values().sum();
                if n == 0 {
                    return out;
                }
                // The reference's categories, then one bucket for values it
                // never saw (reference share 0, raised to PSI's epsilon).
                let expected: Vec<f64> = reference.values().copied().collect();
                let observed: Vec<u64> = reference
                    .keys()
                    .map(|value| counts.get(value).copied().unwrap_or(0))
                    .collect();
                let unseen = n - observed.iter().sum::<u64>();
                let mut shares: Vec<f64> = observed.iter().map(|&c| c as f64 / n as f64).collect();
                shares.push(unseen as f64 / n as f64);
                let mut expected_shares = expected.clone();
                expected_shares.push(0.0);
                out.extend([
                    ("chi_square", chi_square(&expected, &observed)),
                    ("psi", psi(&expected_shares, &shares)),
                    ("outside_share", unseen as f64 / n as f64),
                    (
                        "null_rate",
                        counts.get(NULL).copied().unwrap_or(0) as f64 / n as f64,
                    ),
                ]);
            }
            ColumnCounts::Flags { flagged, scored } => {
                if *scored > 0 {
                    out.insert("flag_rate", *flagged as f64 / *scored as f64);
                }
            }
            ColumnCounts::Scores { scored, flagged } => {
                // Counts of another version's bins are not this one's.
                if let Some(reference) = &references.performance
                    && reference.bins() == scored.len()
                    && scored.len() == flagged.len()
                {
                    out.extend(reference.measures(scored, flagged));
                }
            }
        }
        out
    }
}

/// The count key of a null categorical value.
pub const NULL: &str = "null";
/// Prefix of the count keys of values the reference never saw: such a value
/// is counted under a hash of it, never under the value itself, which may
/// be a card number in the wrong field and must not reach the store, a log
/// or a report.
pub const UNSEEN: &str = "unseen:";
/// Where unseen values past [`UNSEEN_KEPT`] distinct ones are counted.
pub const UNSEEN_OTHER: &str = "unseen:other";
/// Distinct unseen values counted apart in one window's counts of a column;
/// the rest go to [`UNSEEN_OTHER`], so the data cannot grow the counts.
pub const UNSEEN_KEPT: usize = 50;

/// The count key of `value`: itself when the reference has it, else a hash.
pub fn category<'v>(value: &'v str, categories: &BTreeMap<String, f64>) -> Cow<'v, str> {
    if categories.contains_key(value) {
        return Cow::Borrowed(value);
    }
    use std::hash::{Hash, Hasher};
    let mut hasher = rustc_hash::FxHasher::default();
    value.hash(&mut hasher);
    Cow::Owned(format!("{UNSEEN}{:016x}", hasher.finish()))
}

/// Folds all but the [`UNSEEN_KEPT`] most frequent unseen keys into
/// [`UNSEEN_OTHER`].
pub fn bound_unseen(counts: &mut BTreeMap<String, u64>) {
    let mut unseen: Vec<(u64, String)> = counts
        .iter()
        .filter(|(k, _)| k.starts_with(UNSEEN) && k.as_str() != UNSEEN_OTHER)
        .map(|(k, &n)| (n, k.clone()))
        .collect();
    if unseen.len() <= UNSEEN_KEPT {
        return;
    }
    unseen.sort_unstable_by(|a, b| b.cmp(a));
    let folded: u64 = unseen[UNSEEN_KEPT..]
        .iter()
        .filter_map(|(_, key)| counts.remove(key))
        .sum();
    *counts.entry(UNSEEN_OTHER.to_owned()).or_default() += folded;
}

/// The reference a numeric column is counted against: the score's, or its
/// feature's.
pub fn numeric_reference<'r>(column: &str, references: &'r References) -> Option<&'r Reference> {
    if column == super::SCORE {
        references.score.as_ref()
    } else {
        references.features.get(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At a342126 each distinct live value got its own stored count, raw:
    /// unbounded, and a card number in the wrong field reached the report.
    #[test]
    fn unseen_categories_are_hashed_and_bounded() {
        let categories = BTreeMap::from([("pos".to_owned(), 0.75), ("web".to_owned(), 0.25)]);
        let mut window = ColumnCounts::Categorical {
            counts: BTreeMap::new(),
        };
        for batch in 0..10 {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for i in 0..1_000 {
                let value = format!("4111{batch:04}{i:08}");
                *counts
                    .entry(category(&value, &categories).into_owned())
                    .or_default() += 1;
            }
            *counts
                .entry(category("pos", &categories).into_owned())
                .or_default() += 1;
            bound_unseen(&mut counts);
            window.merge(&ColumnCounts::Categorical { counts });
        }
        let ColumnCounts::Categorical { counts } = &window else {
            unreachable!()
        };
        assert_eq!(window.events(), 10_010);
        assert_eq!(counts["pos"], 10);
        assert!(counts.len() <= 1 + UNSEEN_KEPT + 1, "{}", counts.len());
        assert!(
            counts.keys().all(|k| k == "pos" || k.starts_with(UNSEEN)),
            "a raw unseen value was kept"
        );
        let m = window.measures(
            "channel",
            &References {
                categories: BTreeMap::from([("channel".to_owned(), categories)]),
                ..References::default()
            },
        );
        assert!((m["outside_share"] - 10_000.0 / 10_010.0).abs() < 1e-12);
    }

    #[test]
    fn categorical_windows_count_unseen_values_apart() {
        let references = References {
            categories: BTreeMap::from([(
                "channel".to_owned(),
                BTreeMap::from([("pos".to_owned(), 0.75), ("web".to_owned(), 0.25)]),
            )]),
            ..References::default()
        };
        let same = ColumnCounts::Categorical {
            counts: BTreeMap::from([("pos".to_owned(), 75), ("web".to_owned(), 25)]),
        };
        let m = same.measures("channel", &references);
        assert!(m["chi_square"].abs() < 1e-12 && m["psi"].abs() < 1e-12);
        let mut shifted = ColumnCounts::Categorical {
            counts: BTreeMap::from([("pos".to_owned(), 50), ("app".to_owned(), 50)]),
        };
        let m = shifted.measures("channel", &references);
        assert_eq!(m["outside_share"], 0.5);
        assert!(m["psi"] > 1.0, "{m:?}");
        shifted.merge(&same);
        assert_eq!(shifted.events(), 200);
    }
}
