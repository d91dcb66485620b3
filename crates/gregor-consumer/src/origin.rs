//! Where a message was first consumed from: the `gregor-original-*` coordinates, trusted only
//! on the runtime's own copies (P10).
//!
//! Anyone who can produce can write these headers. They count only on a retry or dead-letter
//! topic, when `gregor-consumer-group` is this group and `gregor-original-topic` is the main
//! topic that retry/DLQ topic belongs to, with a partition and an offset that parse. On a main
//! topic they never count: a message's identity there is its `ce_id` or its own coordinates.

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use gregor_wire::headers;
use gregor_wire::{TopicKind, base_topic};

/// A message's original coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl Origin {
    /// The message's own coordinates.
    pub(crate) fn own(msg: &OwnedMessage) -> Self {
        Self {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
        }
    }

    /// `topic/partition/offset`.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// The coordinates the runtime wrote on its own retry/DLQ copy of `group`, if `msg` is one.
pub(crate) fn trusted(msg: &OwnedMessage, group: &str) -> Option<Origin> {
    let (base, kind) = base_topic(msg.topic());
    if kind == TopicKind::Main {
        return None;
    }
    let h = msg.headers();
    if headers::get_str(h, headers::CONSUMER_GROUP) != Some(group)
        || headers::get_str(h, headers::ORIGINAL_TOPIC) != Some(base)
    {
        return None;
    }
    let partition = headers::get_str(h, headers::ORIGINAL_PARTITION)?
        .parse::<i32>()
        .ok()
        .filter(|p| *p >= 0)?;
    let offset = headers::get_str(h, headers::ORIGINAL_OFFSET)?
        .parse::<i64>()
        .ok()
        .filter(|o| *o >= 0)?;
    Some(Origin {
        topic: base.to_owned(),
        partition,
        offset,
    })
}

/// The trusted original coordinates of `msg`, else its own.
pub(crate) fn of(msg: &OwnedMessage, group: &str) -> Origin {
    trusted(msg, group).unwrap_or_else(|| Origin::own(msg))
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    use super::*;

    fn msg(topic: &str, pairs: &[(&str, &str)]) -> OwnedMessage {
        let mut hs = OwnedHeaders::new();
        for (k, v) in pairs {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        OwnedMessage::new(
            None,
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            3,
            99,
            Some(hs),
        )
    }

    const COPY: &[(&str, &str)] = &[
        (headers::ORIGINAL_TOPIC, "orders"),
        (headers::ORIGINAL_PARTITION, "1"),
        (headers::ORIGINAL_OFFSET, "40"),
        (headers::CONSUMER_GROUP, "g"),
    ];

    #[test]
    fn only_own_copies_of_this_group_count() {
        let origin = Origin {
            topic: "orders".into(),
            partition: 1,
            offset: 40,
        };
        assert_eq!(
            trusted(&msg("orders.retry.2", COPY), "g"),
            Some(origin.clone())
        );
        assert_eq!(trusted(&msg("orders.dlq", COPY), "g"), Some(origin));
        // On a main topic, for another group, or naming another topic: never.
        assert_eq!(trusted(&msg("orders", COPY), "g"), None);
        assert_eq!(trusted(&msg("orders.retry.1", COPY), "other"), None);
        assert_eq!(trusted(&msg("payments.retry.1", COPY), "g"), None);
        let mut bad = COPY.to_vec();
        bad[2] = (headers::ORIGINAL_OFFSET, "-1");
        assert_eq!(trusted(&msg("orders.retry.1", &bad), "g"), None);
        assert_eq!(of(&msg("orders", COPY), "g").key(), "orders/3/99");
    }
}
