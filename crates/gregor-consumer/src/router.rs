//! The retry router: where a message goes after a failed attempt.
//!
//! One pure function, [`decide`], from the failure's [`ErrorKind`], how often the message
//! failed on the topic it was read from ([`Tally`]), that topic's kind and the route's
//! [`RetryPolicy`] to a [`Decision`]:
//!
//! | kind | decision |
//! |---|---|
//! | `unavailable` (registry or database unreachable) | wait for the outage, then try again; never counted |
//! | `permanent`, `decode` | dead-letter at once |
//! | `retryable`, `panic` | retry in place (main topic: `in_place_attempts`; a retry tier: once), then the next tier, then dead-letter |
//!
//! The worker carries the decision out; nothing here sleeps or talks to a broker.

use std::time::Duration;

use gregor_wire::TopicKind;

use crate::{ErrorKind, RetryPolicy};

/// What becomes of a message after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Try again on the same topic after this backoff.
    RetryInPlace(Duration),
    /// Copy the message to `<topic>.retry.<tier>`, due `delay` from now.
    Forward {
        /// The retry tier, 1-based.
        tier: usize,
        /// The tier's delay.
        delay: Duration,
    },
    /// Copy the message to `<topic>.dlq`.
    DeadLetter,
    /// A dependency (the schema registry, the database) cannot be reached: not the message's
    /// fault. Wait this long and try again; nothing is counted, forwarded or dead-lettered
    /// because of it, so the partition waits in order until the dependency is back.
    WaitForOutage(Duration),
}

/// How often a message has failed on the topic it was read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Failed attempts that count toward the next tier (every kind but `unavailable`).
    pub(crate) failed: u32,
    /// Attempts in a row that met an outage (sets the wait's backoff).
    pub(crate) outages: u32,
}

impl Tally {
    /// Counts one failed attempt of `kind`.
    pub(crate) fn record(&mut self, kind: ErrorKind) {
        if kind == ErrorKind::Unavailable {
            self.outages = self.outages.saturating_add(1);
        } else {
            self.failed = self.failed.saturating_add(1);
            self.outages = 0;
        }
    }
}

/// Where a message read from a topic of kind `topic` goes after a failed attempt of kind
/// `kind`, already counted in `tally`.
pub(crate) fn decide(
    kind: ErrorKind,
    tally: Tally,
    topic: TopicKind,
    policy: &RetryPolicy,
) -> Decision {
    match kind {
        ErrorKind::Unavailable => Decision::WaitForOutage(policy.backoff_after(tally.outages)),
        ErrorKind::Permanent | ErrorKind::Decode => Decision::DeadLetter,
        ErrorKind::Retryable | ErrorKind::Panic => {
            let in_place = match topic {
                TopicKind::Main => policy.in_place_attempts,
                // One attempt per tier: the tier's delay already was the backoff.
                TopicKind::Retry(_) | TopicKind::DeadLetter => 1,
            };
            if tally.failed < in_place {
                return Decision::RetryInPlace(policy.backoff_after(tally.failed));
            }
            let next = match topic {
                TopicKind::Main => Some(1),
                TopicKind::Retry(n) => n.checked_add(1),
                TopicKind::DeadLetter => None,
            };
            match next.and_then(|tier| Some((tier, *policy.tiers.get(tier - 1)?))) {
                Some((tier, delay)) => Decision::Forward { tier, delay },
                None => Decision::DeadLetter,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Whatever else the policy holds keeps its default.
    #[allow(clippy::needless_update)]
    fn policy(in_place: u32, tiers: &[u64]) -> RetryPolicy {
        RetryPolicy {
            in_place_attempts: in_place,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            tiers: tiers.iter().map(|s| Duration::from_secs(*s)).collect(),
            ..RetryPolicy::default()
        }
    }

    fn after(kinds: &[ErrorKind]) -> Tally {
        let mut tally = Tally::default();
        for kind in kinds {
            tally.record(*kind);
        }
        tally
    }

    const R: ErrorKind = ErrorKind::Retryable;
    const U: ErrorKind = ErrorKind::Unavailable;

    #[test]
    fn retryable_retries_in_place_with_backoff_then_takes_the_first_tier() {
        let p = policy(3, &[1, 10]);
        let main = TopicKind::Main;
        assert_eq!(
            decide(R, after(&[R]), main, &p),
            Decision::RetryInPlace(Duration::from_millis(100))
        );
        assert_eq!(
            decide(R, after(&[R, R]), main, &p),
            Decision::RetryInPlace(Duration::from_millis(200))
        );
        assert_eq!(
            decide(R, after(&[R, R, R]), main, &p),
            Decision::Forward {
                tier: 1,
                delay: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn a_retry_tier_gets_one_attempt_then_the_next_tier_then_the_dlq() {
        let p = policy(3, &[1, 10]);
        assert_eq!(
            decide(R, after(&[R]), TopicKind::Retry(1), &p),
            Decision::Forward {
                tier: 2,
                delay: Duration::from_secs(10)
            }
        );
        assert_eq!(
            decide(R, after(&[R]), TopicKind::Retry(2), &p),
            Decision::DeadLetter
        );
        // A tier dropped from a shortened list: straight to the DLQ.
        assert_eq!(
            decide(R, after(&[R]), TopicKind::Retry(7), &p),
            Decision::DeadLetter
        );
        assert_eq!(
            decide(R, after(&[R]), TopicKind::Retry(usize::MAX), &p),
            Decision::DeadLetter
        );
    }

    #[test]
    fn panics_route_like_retryable_errors() {
        let p = policy(1, &[1]);
        assert_eq!(
            decide(
                ErrorKind::Panic,
                after(&[ErrorKind::Panic]),
                TopicKind::Main,
                &p
            ),
            Decision::Forward {
                tier: 1,
                delay: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn without_tiers_retryable_goes_to_the_dlq_after_the_in_place_attempts() {
        let p = policy(2, &[]);
        assert_eq!(
            decide(R, after(&[R]), TopicKind::Main, &p),
            Decision::RetryInPlace(Duration::from_millis(100))
        );
        assert_eq!(
            decide(R, after(&[R, R]), TopicKind::Main, &p),
            Decision::DeadLetter
        );
    }

    #[test]
    fn permanent_and_decode_are_dead_lettered_at_once_from_any_topic() {
        let p = policy(5, &[1, 2, 3]);
        for kind in [ErrorKind::Permanent, ErrorKind::Decode] {
            for topic in [TopicKind::Main, TopicKind::Retry(1), TopicKind::DeadLetter] {
                assert_eq!(
                    decide(kind, after(&[kind]), topic, &p),
                    Decision::DeadLetter
                );
            }
        }
    }

    #[test]
    fn an_outage_waits_with_capped_backoff_and_is_never_counted() {
        let p = policy(1, &[1]);
        for topic in [TopicKind::Main, TopicKind::Retry(1)] {
            let mut tally = Tally::default();
            let mut waits = Vec::new();
            for _ in 0..1000 {
                tally.record(U);
                match decide(U, tally, topic, &p) {
                    Decision::WaitForOutage(d) => waits.push(d),
                    other => panic!("an outage became {other:?}"),
                }
            }
            assert_eq!(waits[0], Duration::from_millis(100));
            assert_eq!(waits[1], Duration::from_millis(200));
            assert!(waits[2..].iter().all(|d| *d == Duration::from_millis(350)));
            assert_eq!(tally.failed, 0, "an outage never counts toward the DLQ");
        }
    }

    #[test]
    fn an_outage_between_failures_keeps_the_count_of_real_failures() {
        let p = policy(2, &[1]);
        // Failed once, then the database went away for a while, then failed again.
        let tally = after(&[R, U, U, U, R]);
        assert_eq!(tally.failed, 2);
        assert_eq!(tally.outages, 0, "a real failure ends the outage's backoff");
        assert_eq!(
            decide(R, tally, TopicKind::Main, &p),
            Decision::Forward {
                tier: 1,
                delay: Duration::from_secs(1)
            }
        );
    }
}
