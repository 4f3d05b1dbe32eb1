//! streamscore: real-time fraud scoring beside Kafka.
//!
//! ```text
//! Kafka input topic
//!   -> source     consumer group member, micro-batches with provenance (kafka::source)
//!   -> decode     JSON -> Arrow against schemas/<name>.json; bad records -> dead letters (decode)
//!   -> transform  pipelines/<name>.sql through DataFusion, planned once (transform)
//!   -> score      model bundle, one version per batch (model)
//!   -> sink       scores and dead letters to Kafka, every ack awaited (kafka::sink)
//!   -> commit     only then store the batch's offsets: at least once (pipeline)
//! ```
//!
//! [`engine::Engine`] is the I/O-free middle (decode, transform, score);
//! [`pipeline`] is the loop around it; [`app`] builds both from config.

pub mod admin;
pub mod app;
pub mod batch;
pub mod charts;
pub mod cli;
pub mod config;
pub mod decode;
pub mod drift;
pub mod engine;
pub mod error;
pub mod fraud_metrics;
pub mod http;
pub mod instance;
pub mod kafka;
pub mod model;
pub mod outcomes;
pub mod output;
pub mod pipeline;
pub mod reject;
pub mod schema;
pub mod serve;
pub mod simulate;
pub mod state;
pub mod telemetry;
pub mod timestamp;
pub mod train;
pub mod transform;
pub mod windows;
