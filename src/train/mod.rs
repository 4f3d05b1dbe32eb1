//! The model-building half: history through the serving decode and SQL
//! (`data.rs`), candidates fitted with linfa (`fit.rs`, `forest.rs`),
//! chosen by cross-validation (`select.rs`), judged by fraud metrics
//! (`metrics.rs`), assembled into a bundle (`build.rs`).

pub mod build;
pub mod command;
pub mod data;
pub mod fit;
mod forest;
pub mod metrics;
pub mod optimize;
pub mod report;
pub mod select;

pub use build::{TrainReport, TrainRequest};
pub use data::{
    TrainingError, TrainingSet, decode_lines, features_for, prepare, read_history, to_json_records,
    train,
};
