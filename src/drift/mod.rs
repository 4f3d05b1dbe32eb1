//! Drift monitoring: the model's features, its score and its decisions in
//! the stream, against the reference distributions its bundle carries.
//! - `stats.rs`: the statistics, pure and mergeable;
//! - `reference.rs`: a bundle's references, read typed;
//! - `window.rs`: one column's counts in one window, and its measures;
//! - `alerts.rs`: thresholds and hysteresis;
//! - `chance.rs`: thresholds that know a window's size (`p_value`);
//! - `change.rs`: Page-Hinkley on the score stream, per partition;
//! - `performance.rs`: performance estimated from the scores before the
//!   labels arrive (CBPE);
//! - `store.rs`: how it all lies in the state store's `drift` family;
//! - `counting.rs`: a batch's scored rows counted into their windows;
//! - `monitor.rs`: the counts stored, and the windows judged;
//! - `report.rs`: the drift report, as a table, JSON or a page of charts;
//! - `settings.rs`: what `[drift]` becomes once checked.

pub mod alerts;
pub mod chance;
pub mod change;
mod counting;
pub mod monitor;
pub mod performance;
pub mod reference;
pub mod report;
mod settings;
pub mod stats;
pub mod store;
pub mod window;

pub use monitor::{DriftMonitor, Observation, Observed, ScoredRow};
pub use settings::DriftSettings;

/// The monitored column of the champion's score.
pub const SCORE: &str = "score";
/// The monitored column of the champion's decisions (its flag rate).
pub const DECISION: &str = "decision";
