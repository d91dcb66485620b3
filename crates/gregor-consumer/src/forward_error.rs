//! Why forwarding a retry or dead-letter copy failed, and the error that stops the consumer
//! when a copy can never be forwarded.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How a failed send of a copy counts (the `kind` label of
/// `gregor_consumer_forward_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFailure {
    /// The broker or the network may recover: retried until shutdown (P9).
    Transient,
    /// The copy is larger than the producer's or the broker's limit: retried smaller.
    TooLarge,
    /// The topic cannot be written (missing, invalid name, not authorised, records refused):
    /// retried a few times, then the consumer stops naming the topic.
    Unwritable,
    /// The producer itself is refused or broken (librdkafka's fatal state, a fenced or
    /// unknown producer id, sequence or epoch errors): retried with a rebuilt producer.
    Producer,
    /// No delivery report arrived in time: the producer is rebuilt and the copy sent again.
    Wedged,
}

impl SendFailure {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::TooLarge => "too_large",
            Self::Unwritable => "unwritable",
            Self::Producer => "producer",
            Self::Wedged => "wedged",
        }
    }
}

/// Classifies a send error of a copy.
pub(crate) fn classify(error: &KafkaError) -> SendFailure {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return SendFailure::Transient;
    };
    match code {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge => SendFailure::TooLarge,
        C::InvalidTopic
        | C::UnknownTopic
        | C::UnknownTopicOrPartition
        | C::UnknownPartition
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::InvalidRecord
        | C::PolicyViolation
        | C::InvalidArgument => SendFailure::Unwritable,
        // The same set the relay rebuilds its producer for.
        c if gregor_config::refuses_producer(c) => SendFailure::Producer,
        _ => SendFailure::Transient,
    }
}

/// A retry or dead-letter copy that cannot be forwarded: the consumer stops with this error
/// rather than block the message's partition forever without saying why.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot forward {origin} to {topic}: {cause}; the consumer stopped (its offset is not \
     committed, so the message is consumed again after the topic is fixed)"
)]
#[non_exhaustive]
pub struct ForwardError {
    /// The retry or dead-letter topic that refused the copy.
    pub topic: String,
    /// The message's coordinates, `<topic>/<partition>@<offset>`.
    pub origin: String,
    /// The broker's or librdkafka's last answer.
    #[source]
    pub cause: KafkaError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError::MessageProduction;

    #[test]
    fn size_topic_and_producer_errors_are_told_apart() {
        let kind = |code| classify(&MessageProduction(code));
        assert_eq!(
            kind(RDKafkaErrorCode::MessageSizeTooLarge),
            SendFailure::TooLarge
        );
        assert_eq!(
            kind(RDKafkaErrorCode::InvalidTopic),
            SendFailure::Unwritable
        );
        assert_eq!(
            kind(RDKafkaErrorCode::TopicAuthorizationFailed),
            SendFailure::Unwritable
        );
        assert_eq!(
            kind(RDKafkaErrorCode::UnknownTopicOrPartition),
            SendFailure::Unwritable
        );
        assert_eq!(kind(RDKafkaErrorCode::Fatal), SendFailure::Producer);
        assert_eq!(
            kind(RDKafkaErrorCode::OutOfOrderSequenceNumber),
            SendFailure::Producer
        );
        assert_eq!(
            kind(RDKafkaErrorCode::MessageTimedOut),
            SendFailure::Transient
        );
        assert_eq!(
            kind(RDKafkaErrorCode::BrokerTransportFailure),
            SendFailure::Transient
        );
        assert_eq!(classify(&KafkaError::Canceled), SendFailure::Transient);
    }

    #[test]
    fn the_error_names_the_topic_the_message_and_the_cause() {
        let e = ForwardError {
            topic: "orders.dlq".into(),
            origin: "orders/2@41".into(),
            cause: MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        };
        let text = e.to_string();
        assert!(
            text.contains("orders.dlq") && text.contains("orders/2@41"),
            "{text}"
        );
        assert!(text.contains("authoriz"), "{text}");
    }
}
