//! The `ce_id` a replayed dead letter gets when it has none: a UUIDv5 of its original
//! coordinates, so every replay of the same message carries the same id and the consumer's
//! dedupe inbox applies it once (without trusting coordinate headers on a main topic).

use gregor_wire::headers as h;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use uuid::Uuid;

/// The UUIDv5 namespace of derived replay ids. Fixed forever: changing it would give every
/// message without `ce_id` a new identity, and a replay after the change would apply it again.
pub(super) const REPLAY_ID_NAMESPACE: Uuid =
    Uuid::from_u128(0x5b0e_6a61_2f3c_4d7e_9a1b_8c2d_7e4f_3a10);

/// The `ce_id` of a replayed copy: its own `ce_id`, else the UUIDv5 of
/// `<topic>/<partition>/<offset>` — the original coordinates when the dead letter names the
/// topic its DLQ belongs to (`home`) with a partition and offset that parse, else the dead
/// letter's own coordinates (still the same on every run).
pub(super) fn replay_id(msg: &OwnedMessage, home: Option<&str>) -> String {
    let headers = msg.headers();
    if let Some(id) = h::get_str(headers, h::CE_ID) {
        return id.to_owned();
    }
    let original = || {
        let topic = h::get_str(headers, h::ORIGINAL_TOPIC).filter(|t| Some(*t) == home)?;
        let partition: i32 = h::get_str(headers, h::ORIGINAL_PARTITION)?.parse().ok()?;
        let offset: i64 = h::get_str(headers, h::ORIGINAL_OFFSET)?.parse().ok()?;
        Some(format!("{topic}/{partition}/{offset}"))
    };
    let name = original()
        .unwrap_or_else(|| format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset()));
    Uuid::new_v5(&REPLAY_ID_NAMESPACE, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders};

    use super::*;

    fn dead_letter(offset: i64, headers: &[(&str, &str)]) -> OwnedMessage {
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        OwnedMessage::new(
            None,
            None,
            "orders.dlq".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            Some(hs),
        )
    }

    #[test]
    fn ids_are_stable_and_follow_the_original_coordinates() {
        let coords = [
            (h::ORIGINAL_TOPIC, "orders"),
            (h::ORIGINAL_PARTITION, "2"),
            (h::ORIGINAL_OFFSET, "41"),
        ];
        let a = replay_id(&dead_letter(0, &coords), Some("orders"));
        // A second dead letter of the same original (forwarded twice) gets the same id.
        assert_eq!(a, replay_id(&dead_letter(5, &coords), Some("orders")));
        assert_eq!(
            a,
            Uuid::new_v5(&REPLAY_ID_NAMESPACE, b"orders/2/41").to_string()
        );
        assert_eq!(Uuid::parse_str(&a).unwrap().get_version_num(), 5);
        // Coordinates naming another topic do not count: the dead letter's own do.
        assert_eq!(
            replay_id(&dead_letter(3, &coords), Some("payments")),
            Uuid::new_v5(&REPLAY_ID_NAMESPACE, b"orders.dlq/0/3").to_string()
        );
        let with_id = dead_letter(0, &[(h::CE_ID, "id-1")]);
        assert_eq!(replay_id(&with_id, Some("orders")), "id-1");
    }
}
