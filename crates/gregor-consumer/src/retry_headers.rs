//! The retry bookkeeping headers read back from a message — `gregor-attempt` and
//! `gregor-not-before` — bounded, because anyone who can produce to a topic can write them
//! (P10): a forged attempt count must not overflow, a forged due time must not stall a retry
//! partition for longer than the tier's own delay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use gregor_wire::headers as h;
use rdkafka::message::{Headers, OwnedHeaders};

use crate::worker::Worker;

/// The largest attempt count taken from a `gregor-attempt` header; a larger value counts as
/// this many. Far above any real retry chain (in-place attempts × at most 20 tiers).
pub(crate) const MAX_ATTEMPTS: u32 = 1_000_000;

/// The longest header value copied into a span attribute or a log line, in bytes.
pub(crate) const MAX_LOGGED_HEADER: usize = 128;

/// Attempts made before this copy: `gregor-attempt`, 0 when absent or not a decimal number,
/// at most [`MAX_ATTEMPTS`].
pub(crate) fn prior_attempts(headers: Option<&OwnedHeaders>) -> u32 {
    let Some(raw) = h::get_str(headers, h::ATTEMPT).map(str::trim) else {
        return 0;
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    // All digits: a parse failure can only mean "too large".
    raw.parse::<u32>()
        .map_or(MAX_ATTEMPTS, |n| n.min(MAX_ATTEMPTS))
}

/// The number of the attempt after `prior` earlier ones and `failed` failures here; never
/// wraps.
pub(crate) fn attempt_number(prior: u32, failed: u32) -> u32 {
    prior.saturating_add(failed).saturating_add(1)
}

/// When a retry copy is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// No (readable) due time: handle it now.
    Now,
    /// Wait until then.
    At(DateTime<Utc>),
    /// The header claims a time later than any consumer could have written (`now + the tier's
    /// delay + slack`): forged or from a badly wrong clock. Handled now, and reported.
    Suspect(DateTime<Utc>),
}

/// The due time of a copy on a retry tier whose delay is `delay`: its `gregor-not-before`,
/// unless that lies beyond `now + delay + slack`.
pub(crate) fn due(
    headers: Option<&OwnedHeaders>,
    delay: Duration,
    slack: Duration,
    now: DateTime<Utc>,
) -> Due {
    let Some(claimed) = h::get_time(headers, h::NOT_BEFORE) else {
        return Due::Now;
    };
    let latest = chrono::Duration::from_std(delay.saturating_add(slack))
        .ok()
        .and_then(|bound| now.checked_add_signed(bound));
    match latest {
        Some(latest) if claimed > latest => Due::Suspect(claimed),
        _ => Due::At(claimed),
    }
}

/// `value` cut to at most [`MAX_LOGGED_HEADER`] bytes on a character boundary, for span
/// attributes and log fields.
pub(crate) fn bounded(value: &str) -> &str {
    if value.len() <= MAX_LOGGED_HEADER {
        return value;
    }
    let mut end = MAX_LOGGED_HEADER;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A header's value as UTF-8, bounded for span attributes and logs.
pub(crate) fn logged<'a>(headers: Option<&'a OwnedHeaders>, name: &str) -> Option<&'a str> {
    h::get_str(headers, name).map(bounded)
}

/// How many headers named `name` the message carries (a forger may repeat one).
fn count(headers: Option<&OwnedHeaders>, name: &str) -> usize {
    headers.map_or(0, |hs| hs.iter().filter(|h| h.key == name).count())
}

impl Worker {
    /// When a copy on retry tier `tier` of `base` is due, bounded by the tier's delay plus
    /// the route's slack; a suspect due time is logged, counted and treated as due now.
    pub(crate) fn retry_due(
        &self,
        msg: &rdkafka::message::OwnedMessage,
        base: &str,
        tier: usize,
    ) -> Option<DateTime<Utc>> {
        use rdkafka::Message as _;
        let entry = self.routes.get(base)?;
        let delay = entry
            .policy
            .tiers
            .get(tier.checked_sub(1)?)
            .copied()
            .unwrap_or_default();
        match due(msg.headers(), delay, entry.policy.due_slack, Utc::now()) {
            Due::Now => None,
            Due::At(at) => Some(at),
            Due::Suspect(claimed) => {
                self.metrics
                    .suspect_headers
                    .with_label_values(&[base, h::NOT_BEFORE])
                    .inc();
                tracing::warn!(
                    topic = msg.topic(),
                    partition = msg.partition(),
                    offset = msg.offset(),
                    not_before = %claimed,
                    copies = count(msg.headers(), h::NOT_BEFORE),
                    tier_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "gregor-not-before lies beyond the tier's delay plus slack (forged, or a \
                     wrong clock): handled now"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Header;

    fn with(name: &str, value: &str) -> OwnedHeaders {
        OwnedHeaders::new().insert(Header {
            key: name,
            value: Some(value),
        })
    }

    #[test]
    fn attempt_headers_are_bounded_and_never_wrap() {
        for (raw, prior) in [
            ("3", 3),
            (" 7 ", 7),
            ("4294967295", MAX_ATTEMPTS),
            ("99999999999999999999999", MAX_ATTEMPTS),
            ("-1", 0),
            ("1e9", 0),
            ("", 0),
            ("٣", 0),
        ] {
            assert_eq!(
                prior_attempts(Some(&with(h::ATTEMPT, raw))),
                prior,
                "{raw:?}"
            );
        }
        assert_eq!(prior_attempts(None), 0);
        assert_eq!(attempt_number(u32::MAX, u32::MAX), u32::MAX);
        assert_eq!(attempt_number(2, 1), 4);
    }

    #[test]
    fn due_times_beyond_the_tier_delay_plus_slack_are_suspect() {
        let now = Utc::now();
        let delay = Duration::from_secs(10);
        let slack = Duration::from_secs(5);
        let at = |secs: i64| {
            let t = now + chrono::Duration::seconds(secs);
            (t, with(h::NOT_BEFORE, &h::format_time(t)))
        };
        let (t, honest) = at(9);
        assert_eq!(
            due(Some(&honest), delay, slack, now),
            Due::At(h::get_time(Some(&honest), h::NOT_BEFORE).unwrap_or(t))
        );
        let (_, skewed) = at(14);
        assert!(matches!(due(Some(&skewed), delay, slack, now), Due::At(_)));
        let (_, forged) = at(16);
        assert!(matches!(
            due(Some(&forged), delay, slack, now),
            Due::Suspect(_)
        ));
        let far = with(h::NOT_BEFORE, "9999-12-31T23:59:59.999Z");
        assert!(matches!(
            due(Some(&far), delay, slack, now),
            Due::Suspect(_)
        ));
        assert_eq!(
            due(Some(&with(h::NOT_BEFORE, "soon")), delay, slack, now),
            Due::Now
        );
        assert_eq!(due(None, delay, slack, now), Due::Now);
    }

    #[test]
    fn logged_values_are_bounded_on_a_char_boundary() {
        let long = "é".repeat(200);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_LOGGED_HEADER);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(bounded("short"), "short");
    }
}
