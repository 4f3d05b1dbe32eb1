//! Drift monitoring. So far the pure part (`stats.rs`): mergeable window
//! counts over a reference's bins and the statistics of a window against
//! its reference. Storage in the RocksDB checkpoint, alerts and the report
//! come with the state issue's checkpoint.

pub mod stats;
