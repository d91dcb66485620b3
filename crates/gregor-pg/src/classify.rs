//! Is a sqlx error worth trying again?

/// Whether a sqlx error is a TLS failure that retrying cannot change: a server certificate
/// that does not verify against `sslrootcert` (or the system roots), a host name the
/// certificate does not name, no TLS on a server under `sslmode=require`. sqlx reports the
/// certificate checks as an I/O error carrying rustls' error.
pub fn is_tls_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Tls(_) => true,
        sqlx::Error::Io(e) => e
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

/// Classifies a sqlx error as transient (worth retrying) or not. TLS failures
/// ([`is_tls_failure`]) are not.
pub fn is_retryable_sqlx(error: &sqlx::Error) -> bool {
    if is_tls_failure(error) {
        return false;
    }
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // 40001 serialization_failure, 40P01 deadlock_detected, 57P01 admin_shutdown,
            // 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection exceptions,
            // 53300 too_many_connections.
            db.code().is_some_and(|code| {
                matches!(
                    code.as_ref(),
                    "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
                ) || code.starts_with("08")
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn connection_trouble_is_retryable() {
        for e in [
            sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused)),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(is_retryable_sqlx(&e), "{e}");
            assert!(!is_tls_failure(&e), "{e}");
        }
        assert!(!is_retryable_sqlx(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn tls_failures_are_not() {
        let certificate = sqlx::Error::Io(io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        let no_tls = sqlx::Error::Tls("server does not support TLS".into());
        for e in [certificate, no_tls] {
            assert!(is_tls_failure(&e), "{e}");
            assert!(!is_retryable_sqlx(&e), "{e}");
        }
    }
}
