//! Telling "the database cannot be reached" apart from "the handler's SQL failed".
//!
//! A pool's acquire timeout hides a short outage and turns a long one into errors (DESIGN §6).
//! Those errors are not the message's fault: the runtime waits them out in place
//! ([`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)) instead of counting them toward
//! a retry tier or the dead-letter topic. Errors of the handler's own logic — a constraint
//! violation, a bad query, a serialization failure — stay handler failures.

use std::error::Error;

/// Whether `error` means the database cannot be reached (rather than that a statement
/// failed): an I/O error (connection refused, reset, broken pipe), a TLS failure, the pool's
/// acquire timeout, a closed pool, a crashed connection worker, or a server error of SQLSTATE
/// class `08` (connection exception) or `57P0x` (`admin_shutdown`, `crash_shutdown`,
/// `cannot_connect_now`, …), `53300` (`too_many_connections`), or `25006`
/// (`read_only_sql_transaction`: a connection that still reaches the old primary after a
/// failover demoted it to a replica).
pub fn is_database_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| is_unreachable_sqlstate(&c)),
        _ => false,
    }
}

/// Whether a SQLSTATE says the server cannot serve this connection now.
pub(crate) fn is_unreachable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P0") || code == "53300" || code == "25006"
}

/// Whether `error` or one of its sources is a [`sqlx::Error`] for which
/// [`is_database_unreachable`] holds: a handler may wrap the database's error in its own.
pub(crate) fn caused_by_unreachable_database(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<sqlx::Error>()
            .is_some_and(is_database_unreachable)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// `wait` with "equal jitter": between half of it and all of it, at random.
pub(crate) fn jittered(wait: std::time::Duration) -> std::time::Duration {
    let half = wait / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_outages() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_database_unreachable(&sqlx::Error::Io(refused)));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_database_unreachable(&sqlx::Error::Io(reset)));
        assert!(is_database_unreachable(&sqlx::Error::PoolTimedOut));
        assert!(is_database_unreachable(&sqlx::Error::PoolClosed));
        assert!(is_database_unreachable(&sqlx::Error::WorkerCrashed));
    }

    #[test]
    fn query_failures_are_not_outages() {
        assert!(!is_database_unreachable(&sqlx::Error::RowNotFound));
        assert!(!is_database_unreachable(&sqlx::Error::ColumnNotFound(
            "x".into()
        )));
        assert!(!is_database_unreachable(&sqlx::Error::Protocol(
            "bad".into()
        )));
    }

    #[test]
    fn sqlstates() {
        for code in [
            "08000", "08001", "08003", "08006", "57P01", "57P02", "57P03", "53300",
            // read_only_sql_transaction: a pooled connection reaching the old primary,
            // demoted to a replica by a failover.
            "25006",
        ] {
            assert!(is_unreachable_sqlstate(code), "{code}");
        }
        // unique_violation, syntax error, undefined table, serialization failure, deadlock,
        // query canceled (statement timeout), disk full.
        for code in [
            "23505", "42601", "42P01", "40001", "40P01", "57014", "53100",
        ] {
            assert!(!is_unreachable_sqlstate(code), "{code}");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("could not store the shipment")]
    struct Wrapped(#[source] sqlx::Error);

    #[test]
    fn a_wrapped_database_error_is_found_through_the_sources() {
        let wrapped = Wrapped(sqlx::Error::PoolTimedOut);
        assert!(caused_by_unreachable_database(&wrapped));
        let wrapped = Wrapped(sqlx::Error::RowNotFound);
        assert!(!caused_by_unreachable_database(&wrapped));
        let plain = std::io::Error::other("not a database error");
        assert!(!caused_by_unreachable_database(&plain));
    }

    #[test]
    fn outage_waits_are_jittered_within_half_and_all_of_the_backoff() {
        let wait = std::time::Duration::from_millis(1_000);
        let waits: Vec<_> = (0..200).map(|_| super::jittered(wait)).collect();
        assert!(
            waits.iter().all(|w| *w >= wait / 2 && *w <= wait),
            "{waits:?}"
        );
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 100,
            "not spread: {} distinct waits",
            distinct.len()
        );
    }
}
