//! What `[drift]` becomes once `config/drift.rs` has read and checked it.

use super::alerts::{Hysteresis, ThresholdRules};
use super::change::ChangeSettings;

/// The drift monitor's settings, all checked.
#[derive(Debug, Clone)]
pub struct DriftSettings {
    pub event_time: String,
    pub window_ms: i64,
    pub lateness_ms: i64,
    /// A partition this far (event time) behind the newest stops holding
    /// windows back.
    pub idle_ms: i64,
    pub retention_ms: i64,
    /// Windows with fewer scored events are counted but not judged.
    pub min_events: u64,
    pub alerts_topic: Option<String>,
    pub hysteresis: Hysteresis,
    pub thresholds: ThresholdRules,
    /// The Page-Hinkley test on the score stream, when asked for.
    pub change: Option<ChangeSettings>,
}
