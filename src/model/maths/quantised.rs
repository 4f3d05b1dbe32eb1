//! Quantised trees (`models optimize`): thresholds, node values and covers
//! kept at a lower precision, and written in a compact payload that says so
//! (`"format"` first), so that the bundle is smaller on disk and in the
//! registry. In memory the ensemble stays f64 and scores as fast; its
//! numbers are the quantised ones, so it scores as the payload says.
//!
//! - `f32`: every number rounded to 32 bits (and printed as such: "0.1",
//!   not "0.10000000149011612").
//! - `u16`, `u8`: a threshold is a code into its feature's codebook (the
//!   feature's distinct thresholds when they fit, else that many quantiles
//!   of them, each threshold moved to the nearest); a node value is a code
//!   on an even grid between the smallest and largest value; covers are
//!   f32.

use serde::{Deserialize, Serialize};

use super::trees::{Ensemble, LEAF, Link, SplitRule, Tree};
pub use super::trees::{Precision, Quantised};

/// The payload's first bytes when it is compact.
pub const COMPACT_MARK: &[u8] = b"{\"format\"";

#[derive(Serialize, Deserialize)]
#[serde(tag = "format", deny_unknown_fields)]
enum Compact {
    #[serde(rename = "trees-f32/1")]
    F32 {
        split: SplitRule,
        link: Link,
        single_precision: bool,
        trees: Vec<CompactTree<f32>>,
    },
    #[serde(rename = "trees-codes/1")]
    Codes {
        bits: u8,
        split: SplitRule,
        link: Link,
        single_precision: bool,
        /// Per feature, its threshold codebook, ascending.
        thresholds: Vec<Vec<f32>>,
        value_min: f64,
        value_step: f64,
        trees: Vec<CompactTree<u16>>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactTree<T> {
    feature: Vec<i32>,
    left: Vec<u32>,
    right: Vec<u32>,
    threshold: Vec<T>,
    value: Vec<T>,
    cover: Vec<f32>,
}

impl<T> CompactTree<T> {
    /// `tree`'s shape, its thresholds (with their node's feature) and values
    /// written by `threshold` and `value`, its covers in f32.
    fn of(tree: &Tree, threshold: impl Fn(f64, i32) -> T, value: impl Fn(f64) -> T) -> Self {
        Self {
            feature: tree.feature.clone(),
            left: tree.left.clone(),
            right: tree.right.clone(),
            threshold: tree
                .threshold
                .iter()
                .zip(&tree.feature)
                .map(|(&v, &f)| threshold(v, f))
                .collect(),
            value: tree.value.iter().map(|&v| value(v)).collect(),
            cover: tree.cover.iter().map(|&v| v as f32).collect(),
        }
    }
}

/// `ensemble` with its numbers moved to what `precision` can hold.
pub fn quantise(ensemble: &Ensemble, precision: Precision) -> Ensemble {
    let round32 = |v: f64| f64::from(v as f32);
    let grid = ValueGrid::of(
        ensemble,
        match precision {
            Precision::Codes(bits) => bits,
            _ => 16,
        },
    );
    let trees: Vec<Tree> = match precision {
        Precision::Full => ensemble.trees.clone(),
        Precision::F32 => ensemble
            .trees
            .iter()
            .map(|t| Tree {
                threshold: t.threshold.iter().map(|&v| round32(v)).collect(),
                value: t.value.iter().map(|&v| round32(v)).collect(),
                cover: t.cover.iter().map(|&v| round32(v)).collect(),
                ..t.clone()
            })
            .collect(),
        Precision::Codes(bits) => {
            let codebooks = codebooks(ensemble, bits);
            ensemble
                .trees
                .iter()
                .map(|t| Tree {
                    threshold: t
                        .threshold
                        .iter()
                        .zip(&t.feature)
                        .map(|(&v, &f)| match f {
                            LEAF => 0.0,
                            f => {
                                f64::from(codebooks[f as usize][nearest(&codebooks[f as usize], v)])
                            }
                        })
                        .collect(),
                    value: t.value.iter().map(|&v| grid.value(grid.code(v))).collect(),
                    cover: t.cover.iter().map(|&v| round32(v)).collect(),
                    ..t.clone()
                })
                .collect()
        }
    };
    let quantised = Ensemble::new(
        trees,
        ensemble.split,
        ensemble.link,
        ensemble.single_precision,
    );
    match precision {
        Precision::Full => quantised,
        Precision::F32 => quantised.with_quantised(Quantised {
            precision,
            value_min: 0.0,
            value_step: 0.0,
        }),
        Precision::Codes(_) => quantised.with_quantised(Quantised {
            precision,
            value_min: grid.min,
            value_step: grid.step,
        }),
    }
}

/// The compact payload of an ensemble quantised as `how` says.
pub fn to_compact(ensemble: &Ensemble, how: &Quantised) -> Vec<u8> {
    let compact = match how.precision {
        Precision::Full => unreachable!("a full-precision ensemble has the plain payload"),
        Precision::F32 => Compact::F32 {
            split: ensemble.split,
            link: ensemble.link,
            single_precision: ensemble.single_precision,
            trees: ensemble
                .trees
                .iter()
                .map(|t| CompactTree::of(t, |v, _| v as f32, |v| v as f32))
                .collect(),
        },
        Precision::Codes(bits) => {
            // Built from the quantised thresholds, each codebook holds them
            // exactly, so the codes below are exact.
            let codebooks = codebooks(ensemble, bits);
            let grid = ValueGrid {
                min: how.value_min,
                step: how.value_step,
                max_code: ((1u32 << bits) - 1) as u16,
            };
            Compact::Codes {
                bits,
                split: ensemble.split,
                link: ensemble.link,
                single_precision: ensemble.single_precision,
                trees: ensemble
                    .trees
                    .iter()
                    .map(|t| {
                        CompactTree::of(
                            t,
                            |v, f| match f {
                                LEAF => 0,
                                f => nearest(&codebooks[f as usize], v) as u16,
                            },
                            |v| grid.code(v),
                        )
                    })
                    .collect(),
                thresholds: codebooks,
                value_min: grid.min,
                value_step: grid.step,
            }
        }
    };
    serde_json::to_vec(&compact).expect("a compact payload serialises")
}

/// Reads a compact payload back into an ensemble (validated by the caller).
pub fn from_compact(bytes: &[u8]) -> Result<Ensemble, String> {
    let compact: Compact = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    Ok(match compact {
        Compact::F32 {
            split,
            link,
            single_precision,
            trees,
        } => Ensemble::new(
            trees
                .into_iter()
                .map(|t| Tree {
                    threshold: widen(&t.threshold),
                    value: widen(&t.value),
                    cover: widen(&t.cover),
                    feature: t.feature,
                    left: t.left,
                    right: t.right,
                })
                .collect(),
            split,
            link,
            single_precision,
        )
        .with_quantised(Quantised {
            precision: Precision::F32,
            value_min: 0.0,
            value_step: 0.0,
        }),
        Compact::Codes {
            bits,
            split,
            link,
            single_precision,
            thresholds,
            value_min,
            value_step,
            trees,
        } => {
            let mut out = Vec::with_capacity(trees.len());
            for (i, t) in trees.into_iter().enumerate() {
                let mut threshold = Vec::with_capacity(t.threshold.len());
                for (&code, &f) in t.threshold.iter().zip(&t.feature) {
                    threshold.push(match f {
                        LEAF => 0.0,
                        f => thresholds
                            .get(f as usize)
                            .and_then(|book| book.get(code as usize))
                            .map(|&v| f64::from(v))
                            .ok_or_else(|| {
                                format!("tree {i}: threshold code {code} of feature {f} is not in its codebook")
                            })?,
                    });
                }
                out.push(Tree {
                    threshold,
                    value: t
                        .value
                        .iter()
                        .map(|&c| value_min + f64::from(c) * value_step)
                        .collect(),
                    cover: widen(&t.cover),
                    feature: t.feature,
                    left: t.left,
                    right: t.right,
                });
            }
            Ensemble::new(out, split, link, single_precision).with_quantised(Quantised {
                precision: Precision::Codes(bits),
                value_min,
                value_step,
            })
        }
    })
}

/// Per feature, at most 2^bits thresholds (f32): all of its distinct ones
/// when they fit, else evenly spaced quantiles of them.
fn codebooks(ensemble: &Ensemble, bits: u8) -> Vec<Vec<f32>> {
    let room = 1usize << bits;
    let features = ensemble
        .trees
        .iter()
        .flat_map(|t| t.feature.iter().copied())
        .max()
        .map_or(0, |f| (f + 1).max(0) as usize);
    let mut per_feature: Vec<Vec<f32>> = vec![Vec::new(); features];
    for t in &ensemble.trees {
        for (&f, &v) in t.feature.iter().zip(&t.threshold) {
            if f != LEAF && (f as usize) < features {
                per_feature[f as usize].push(v as f32);
            }
        }
    }
    per_feature
        .into_iter()
        .map(|mut values| {
            values.sort_by(f32::total_cmp);
            values.dedup();
            if values.len() <= room {
                return values;
            }
            let last = values.len() - 1;
            let mut book: Vec<f32> = (0..room).map(|i| values[i * last / (room - 1)]).collect();
            book.dedup();
            book
        })
        .collect()
}

/// The index of the codebook entry nearest `v`.
fn nearest(book: &[f32], v: f64) -> usize {
    let at = book.partition_point(|&b| f64::from(b) < v);
    match (at.checked_sub(1), book.get(at)) {
        (Some(below), Some(&above)) if (f64::from(above) - v) >= (v - f64::from(book[below])) => {
            below
        }
        (Some(below), None) => below,
        _ => at.min(book.len().saturating_sub(1)),
    }
}

/// Node values as codes on an even grid from the smallest to the largest.
struct ValueGrid {
    min: f64,
    step: f64,
    max_code: u16,
}

impl ValueGrid {
    fn of(ensemble: &Ensemble, bits: u8) -> Self {
        let values = ensemble.trees.iter().flat_map(|t| t.value.iter().copied());
        let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let max_code = ((1u32 << bits) - 1) as u16;
        let span = if max > min { max - min } else { 1.0 };
        Self {
            min: if min.is_finite() { min } else { 0.0 },
            step: span / f64::from(max_code),
            max_code,
        }
    }

    fn code(&self, v: f64) -> u16 {
        ((v - self.min) / self.step)
            .round()
            .clamp(0.0, f64::from(self.max_code)) as u16
    }

    fn value(&self, code: u16) -> f64 {
        self.min + f64::from(code) * self.step
    }
}

/// An ensemble's payload: plain JSON, or compact when quantised.
impl Ensemble {
    pub fn from_payload(bytes: &[u8], features: usize) -> Result<Self, String> {
        let ensemble = if bytes.starts_with(COMPACT_MARK) {
            from_compact(bytes)?
        } else {
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?
        };
        ensemble.validate(features)?;
        Ok(ensemble)
    }

    pub fn to_payload(&self) -> Vec<u8> {
        match &self.quantised {
            None => serde_json::to_vec(self).expect("an ensemble serialises"),
            Some(how) => to_compact(self, how),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::maths::trees::tests::stump;

    fn forest() -> Ensemble {
        Ensemble::new(
            vec![stump(), stump()],
            SplitRule::LessOrEqual,
            Link::MeanProbability,
            false,
        )
    }

    #[test]
    fn compact_payloads_read_back_as_the_quantised_ensemble() {
        for precision in [Precision::F32, Precision::Codes(16), Precision::Codes(8)] {
            let quantised = quantise(&forest(), precision);
            let payload = quantised.to_payload();
            assert!(payload.starts_with(COMPACT_MARK), "{precision:?}");
            let back = from_compact(&payload).unwrap();
            assert_eq!(back, quantised, "{precision:?}");
            assert_eq!(back.to_payload(), payload, "written back the same");
            // (Sizes are checked on a real forest: `models optimize` in
            // tests/it/cli.rs. A stump's few numbers are short anyway.)
        }
    }

    #[test]
    fn codes_keep_values_within_half_a_step_and_few_thresholds_exact() {
        let quantised = quantise(&forest(), Precision::Codes(8));
        let step = 0.8 / 255.0;
        for (a, b) in forest().trees[0]
            .value
            .iter()
            .zip(&quantised.trees[0].value)
        {
            assert!((a - b).abs() <= step / 2.0 + 1e-12, "{a} {b}");
        }
        // Two distinct thresholds per feature fit any codebook: exact in f32.
        assert_eq!(quantised.trees[0].threshold[0], 0.5);
        assert_eq!(quantised.trees[0].threshold[1], 2.0);
    }

    #[test]
    fn a_crowded_feature_gets_its_thresholds_moved_to_the_nearest_code() {
        let book: Vec<f32> = vec![0.0, 1.0, 2.0];
        assert_eq!(nearest(&book, 0.4), 0);
        assert_eq!(nearest(&book, 0.6), 1);
        assert_eq!(nearest(&book, 9.0), 2);
        assert_eq!(nearest(&book, -3.0), 0);
    }
}
