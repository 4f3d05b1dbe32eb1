//! Integration tests, in one binary so DataFusion and librdkafka link once.
//! The Kafka tests need a real broker: scripts/test.sh starts Tansu and
//! passes its address in STREAMSCORE_TEST_BROKERS.

// Test helpers may unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod architecture;
mod cli;
mod commit_rule;
mod delivery;
mod deploy;
mod drift;
mod engine;
mod fuzz_engine;
mod golden;
mod hardening;
mod hostile;
mod imported;
mod models;
mod observability;
mod quality;
mod scale;
mod selection;
mod serve;
mod support;
mod training;
mod windows;
