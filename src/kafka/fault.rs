//! Whose fault a refused message is (kafka/sink.rs explains what is done
//! with each), shared by the sink and the side outputs.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// How long a batch held by an operator's fault waits between offers.
pub const HOLD_RETRY: Duration = Duration::from_secs(10);

/// Whose fault a refused message is, which decides what is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The message itself cannot be accepted; re-sending it is pointless.
    Message,
    /// A topic or permission is missing; only an operator can fix it.
    Operator,
    /// Anything else: worth another try.
    Transient,
}

impl Fault {
    pub fn of(error: &KafkaError) -> Self {
        use RDKafkaErrorCode as C;
        match error.rdkafka_error_code() {
            Some(
                C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::MessageBatchTooLarge
                | C::InvalidTimestamp
                | C::PolicyViolation
                | C::UnsupportedForMessageFormat,
            ) => Fault::Message,
            Some(
                C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed,
            ) => Fault::Operator,
            _ => Fault::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_filed_by_whose_fault_they_are() {
        use RDKafkaErrorCode as C;
        let fault = |code| Fault::of(&KafkaError::MessageProduction(code));
        assert_eq!(fault(C::MessageSizeTooLarge), Fault::Message);
        assert_eq!(fault(C::InvalidRecord), Fault::Message);
        assert_eq!(fault(C::UnknownTopicOrPartition), Fault::Operator);
        assert_eq!(fault(C::TopicAuthorizationFailed), Fault::Operator);
        assert_eq!(fault(C::MessageTimedOut), Fault::Transient);
        assert_eq!(fault(C::NotEnoughReplicas), Fault::Transient);
    }
}
