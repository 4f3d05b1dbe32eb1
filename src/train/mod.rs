//! The model-building half: history through the serving decode and SQL
//! (`data.rs`), candidates fitted (`fit.rs`: logistic and a tree with linfa;
//! `forest.rs`: a random forest; `gbm.rs`: boosted trees with forust-ml),
//! chosen by cross-validation (`select.rs`), judged by fraud metrics
//! (`crate::fraud_metrics`), assembled into a bundle (`build.rs`) with the
//! reference distributions drift compares against (`reference.rs`).

pub mod build;
pub mod data;
pub mod fit;
mod forest;
mod gbm;
pub mod optimize;
pub mod reference;
pub mod report;
pub mod select;

pub use build::{TrainReport, TrainRequest};
pub use data::{
    TrainingError, TrainingSet, decode_lines, features_for, prepare, read_history, to_json_records,
};

/// Fits what `request` asks on a prepared set; `progress(done, total)`
/// after each fit.
pub fn train(
    set: &TrainingSet,
    request: &TrainRequest,
    progress: impl FnMut(usize, usize),
) -> Result<TrainReport, TrainingError> {
    Ok(build::build(set, request, progress)?)
}
