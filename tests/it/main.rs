//! Integration tests, in one binary so DataFusion and librdkafka link once.
//! The Kafka tests need a real broker: scripts/test.sh starts Tansu and
//! passes its address in STREAMSCORE_TEST_BROKERS.

mod cli;
mod delivery;
mod golden;
mod support;
