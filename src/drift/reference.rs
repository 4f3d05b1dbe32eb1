//! A bundle's reference distributions, as `train` writes them into its
//! manifest (`reference`), read back typed; and the spread of each metric
//! over the training data's own chunks, for data-driven thresholds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::performance::PerformanceReference;
use super::stats::{Reference, WindowCounts, drift};

/// Chunks the training rows are cut into for [`Spread`]s.
pub const REFERENCE_CHUNKS: usize = 10;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct References {
    /// Per model feature.
    #[serde(default)]
    pub features: BTreeMap<String, Reference>,
    #[serde(default)]
    pub score: Option<Reference>,
    /// Per categorical input column, each value's share (`null` for nulls).
    #[serde(default)]
    pub categories: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per feature (and `score`), per metric: its spread over the chunks.
    #[serde(default)]
    pub chunks: BTreeMap<String, BTreeMap<String, Spread>>,
    /// The reliability curve of the evaluated rows' scores, for estimated
    /// performance; absent from bundles trained without labels at hand.
    #[serde(default)]
    pub performance: Option<PerformanceReference>,
}

/// The mean and standard deviation of a metric over the reference chunks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

impl References {
    /// Reads a manifest's `reference`; an error says what does not parse.
    pub fn of(value: &serde_json::Value) -> Result<Self, String> {
        let references: Self = serde_json::from_value(value.clone())
            .map_err(|e| format!("the bundle's `reference` does not read: {e}"))?;
        references
            .check()
            .map_err(|e| format!("the bundle's `reference` is not usable: {e}"))?;
        Ok(references)
    }

    /// Refuses what counting against these references would trip over (at
    /// a342126 a reference with one edge passed the load and the swap, then
    /// panicked on the first batch).
    pub fn check(&self) -> Result<(), String> {
        let numeric = self
            .features
            .iter()
            .map(|(name, r)| (name.as_str(), r))
            .chain(self.score.as_ref().map(|r| (super::SCORE, r)));
        for (name, reference) in numeric {
            reference.check().map_err(|e| format!("`{name}`: {e}"))?;
        }
        if let Some(performance) = &self.performance {
            performance
                .check()
                .map_err(|e| format!("`{}`: {e}", super::performance::PERFORMANCE))?;
        }
        for (name, shares) in &self.categories {
            if shares.values().any(|s| !(s.is_finite() && *s >= 0.0)) {
                return Err(format!("`{name}`: a category share is not a finite share"));
            }
        }
        Ok(())
    }
}

/// Each numeric metric's mean and standard deviation over `chunks`
/// consecutive chunks of `values` (in training order), each judged against
/// the whole's `reference`: how far the training data drifts from itself.
pub fn chunk_spreads(
    reference: &Reference,
    values: &[f64],
    chunks: usize,
) -> BTreeMap<String, Spread> {
    let size = values.len().div_ceil(chunks.max(1)).max(1);
    let mut per_metric: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for chunk in values.chunks(size) {
        let mut counts = WindowCounts::new(reference.shares.len());
        for &v in chunk {
            counts.add(Some(v).filter(|v| v.is_finite()), &reference.edges);
        }
        let Some(d) = drift(reference, &counts) else {
            continue;
        };
        for (metric, value) in d.named() {
            per_metric.entry(metric).or_default().push(value);
        }
    }
    per_metric
        .into_iter()
        .map(|(metric, values)| {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            (metric.to_owned(), Spread { mean, std })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At a342126 a reference with one edge passed the load and the swap,
    /// then panicked on the first batch it counted.
    #[test]
    fn unusable_references_are_refused_with_the_column_named() {
        let of = |amount: serde_json::Value| {
            References::of(&serde_json::json!({
                "features": {"amount": amount},
            }))
        };
        let reference = |edges: serde_json::Value, shares: serde_json::Value| {
            serde_json::json!({
                "edges": edges, "shares": shares, "mean": 1.0, "std": 1.0, "null_rate": 0.0,
            })
        };
        assert!(
            of(reference(
                serde_json::json!([0.0, 1.0]),
                serde_json::json!([1.0])
            ))
            .is_ok()
        );
        for (edges, shares, why) in [
            (
                serde_json::json!([1.0]),
                serde_json::json!([]),
                "1 bin edges",
            ),
            (
                serde_json::json!([2.0, 1.0]),
                serde_json::json!([1.0]),
                "ascending",
            ),
            (
                serde_json::json!([0.0, 1.0, 2.0]),
                serde_json::json!([1.0]),
                "1 shares for 2 bins",
            ),
            (
                serde_json::json!([0.0, 1.0]),
                serde_json::json!([-1.0]),
                "finite share",
            ),
        ] {
            let refused = of(reference(edges, shares)).unwrap_err();
            assert!(
                refused.contains("`amount`") && refused.contains(why),
                "{refused}"
            );
        }
    }
}
