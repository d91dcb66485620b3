/// The retry tier `n` (1-based) of `topic`: `<topic>.retry.<n>`.
pub fn retry_topic(topic: &str, tier: usize) -> String {
    format!("{topic}.retry.{tier}")
}

/// The dead-letter topic of `topic`: `<topic>.dlq`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// What a topic name is, by the naming convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A main topic.
    Main,
    /// Retry tier `n` (1-based).
    Retry(usize),
    /// A dead-letter topic.
    DeadLetter,
}

/// Splits a topic name into its main topic and its kind.
///
/// `orders.retry.2` → (`orders`, `Retry(2)`); `orders.dlq` → (`orders`, `DeadLetter`);
/// anything else is a main topic.
pub fn base_topic(topic: &str) -> (&str, TopicKind) {
    if let Some(base) = topic.strip_suffix(".dlq") {
        return (base, TopicKind::DeadLetter);
    }
    // `<base>.retry.<n>`: split at the last dot (a byte search, unlike a substring search,
    // which this per-message path cannot afford), then look for `.retry` before it.
    if let Some((head, tier)) = topic.rsplit_once('.')
        && let Some(base) = head.strip_suffix(".retry")
        && let Ok(n) = tier.parse::<usize>()
        && n > 0
    {
        return (base, TopicKind::Retry(n));
    }
    (topic, TopicKind::Main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(
            base_topic(&retry_topic("a.b", 3)),
            ("a.b", TopicKind::Retry(3))
        );
        assert_eq!(
            base_topic(&dlq_topic("a.b")),
            ("a.b", TopicKind::DeadLetter)
        );
        assert_eq!(base_topic("a.retry.x"), ("a.retry.x", TopicKind::Main));
        assert_eq!(base_topic("a.retry.0"), ("a.retry.0", TopicKind::Main));
        assert_eq!(base_topic("a.retry.x.y"), ("a.retry.x.y", TopicKind::Main));
        assert_eq!(
            base_topic("a.retry.1.retry.2"),
            ("a.retry.1", TopicKind::Retry(2))
        );
        assert_eq!(base_topic(".retry.1"), ("", TopicKind::Retry(1)));
        assert_eq!(base_topic("retry.1"), ("retry.1", TopicKind::Main));
    }
}
