//! The models a running engine scores with, held in an ArcSwap: a batch
//! loads the lineup once, so each batch is scored by exactly one champion
//! version (and at most one challenger), and a swap never waits for a batch
//! nor a batch for a swap. Load before unload: a bundle is verified (by
//! [`Bundle::load`]) and checked against the SQL output here before the
//! pointer moves; a refused one leaves the lineup as it was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use arrow::datatypes::SchemaRef;

use super::comparison::{Comparison, ComparisonSummary, DEFAULT_WINDOW, Pair};
use crate::model::{Bundle, BundleError, SharedBundle};
use crate::telemetry::events::{
    ChallengerCompared, Event, ModelRefused, ModelServing, ModelShown, ModelSwapped,
};

/// Which model a score came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Champion,
    Challenger,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Challenger => "challenger",
        }
    }
}

/// What scores a batch.
#[derive(Debug)]
pub struct Lineup {
    pub champion: SharedBundle,
    pub challenger: Option<SharedBundle>,
    /// Grows with every swap; tells one activation of a version from the next.
    pub generation: u64,
}

pub struct ModelSlot {
    lineup: ArcSwap<Lineup>,
    generations: AtomicU64,
    sql_output: SchemaRef,
    /// The pipeline's `model.threshold`, which overrides every bundle's.
    threshold_override: Option<f64>,
    comparison: Mutex<Comparison>,
    first_scored: Mutex<FirstScored>,
}

/// Per lineup, the partitions it has scored: the first batch of each
/// partition after a swap gives that partition's first offset.
#[derive(Debug, Default)]
struct FirstScored {
    generation: u64,
    partitions: std::collections::BTreeSet<i32>,
    /// Not yet written to the registry's history.
    pending: Vec<FirstOffsets>,
}

/// Where a lineup began to score, per input partition.
#[derive(Debug, Clone)]
pub struct FirstOffsets {
    pub lineup: Arc<Lineup>,
    pub topic: String,
    pub offsets: std::collections::BTreeMap<i32, i64>,
}

impl ModelSlot {
    /// The first lineup; a bundle that does not fit the SQL stops the start.
    pub fn new(
        champion: Bundle,
        challenger: Option<Bundle>,
        sql_output: SchemaRef,
        threshold_override: Option<f64>,
    ) -> Result<Self, BundleError> {
        champion.check_fits(&sql_output)?;
        if let Some(challenger) = &challenger {
            challenger.check_fits(&sql_output)?;
        }
        let lineup = Lineup {
            champion: Arc::new(champion),
            challenger: challenger.map(Arc::new),
            generation: 0,
        };
        ModelServing {
            current: shown(&lineup),
        }
        .emit();
        Ok(Self {
            lineup: ArcSwap::from_pointee(lineup),
            generations: AtomicU64::new(0),
            sql_output,
            threshold_override,
            comparison: Mutex::new(Comparison::new(DEFAULT_WINDOW)),
            first_scored: Mutex::new(FirstScored::default()),
        })
    }

    /// The lineup to score one batch with.
    pub fn current(&self) -> Arc<Lineup> {
        self.lineup.load_full()
    }

    /// Checks that a loaded bundle fits the SQL output. A refusal is logged
    /// and counted by reason; the caller keeps what it had.
    pub fn admit(&self, bundle: Bundle) -> Result<SharedBundle, BundleError> {
        match bundle.check_fits(&self.sql_output) {
            Ok(()) => Ok(Arc::new(bundle)),
            Err(error) => Err(refused(error)),
        }
    }

    /// Moves the pointer. Batches already scoring finish with the lineup
    /// they loaded; the next batch loads this one.
    pub fn install(&self, champion: SharedBundle, challenger: Option<SharedBundle>) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let next = Lineup {
            champion,
            challenger,
            generation,
        };
        let previous = self.lineup.swap(Arc::new(next));
        let current = self.current();
        let same_pair = |a: &Lineup, b: &Lineup| {
            a.champion.version() == b.champion.version()
                && a.challenger.as_ref().map(|c| c.version())
                    == b.challenger.as_ref().map(|c| c.version())
        };
        if !same_pair(&previous, &current) {
            // The window compared the old pair; it says nothing of the new.
            self.lock_comparison().clear();
        }
        ModelSwapped {
            previous: shown(&previous),
            current: shown(&current),
        }
        .emit();
    }

    /// The threshold a bundle flags at in this pipeline.
    pub fn threshold(&self, bundle: &Bundle) -> f64 {
        self.threshold_override.unwrap_or(bundle.manifest.threshold)
    }

    pub fn compare(&self, pairs: impl IntoIterator<Item = Pair>) {
        self.lock_comparison().extend(pairs);
    }

    /// The champion-challenger window now, also set as gauges (NaN, a gap
    /// in the graphs, while there is nothing to compare).
    pub fn comparison(&self) -> Option<ComparisonSummary> {
        let summary = self.lock_comparison().summary();
        summary
            .as_ref()
            .map(|s| ChallengerCompared {
                champion_flag_rate: s.champion_flag_rate,
                challenger_flag_rate: s.challenger_flag_rate,
                disagreement: s.disagreement_rate,
                rank_correlation: s.rank_correlation,
            })
            .emit();
        summary
    }

    /// Notes the partitions `lineup` scores for the first time in `batch`,
    /// with their first offsets. In memory only: the registry follower
    /// writes them to the history ([`Self::take_first_offsets`]).
    pub fn note_scored(&self, lineup: &Arc<Lineup>, batch: &crate::batch::Batch) {
        let mut seen = self
            .first_scored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.generation != lineup.generation {
            seen.generation = lineup.generation;
            seen.partitions.clear();
        }
        let mut offsets = std::collections::BTreeMap::new();
        for record in &batch.records {
            if !seen.partitions.contains(&record.partition) {
                let first = offsets.entry(record.partition).or_insert(record.offset);
                *first = (*first).min(record.offset);
            }
        }
        if offsets.is_empty() {
            return;
        }
        seen.partitions.extend(offsets.keys());
        seen.pending.push(FirstOffsets {
            lineup: Arc::clone(lineup),
            topic: batch.topic.clone(),
            offsets,
        });
    }

    pub fn take_first_offsets(&self) -> Vec<FirstOffsets> {
        std::mem::take(
            &mut self
                .first_scored
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pending,
        )
    }

    fn lock_comparison(&self) -> std::sync::MutexGuard<'_, Comparison> {
        // A panic while holding it leaves only statistics half-updated.
        self.comparison
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Logs and counts a refused bundle; returns the error for the caller.
pub fn refused(error: BundleError) -> BundleError {
    ModelRefused {
        reason: error.reason(),
        error: &error,
    }
    .emit();
    error
}

/// The lineup's bundles as the model-info gauge labels them.
fn shown(lineup: &Lineup) -> Vec<ModelShown<'_>> {
    std::iter::once((Role::Champion, &lineup.champion))
        .chain(lineup.challenger.iter().map(|c| (Role::Challenger, c)))
        .map(|(role, bundle)| ModelShown {
            name: bundle.name(),
            version: bundle.version(),
            role: role.as_str(),
        })
        .collect()
}
