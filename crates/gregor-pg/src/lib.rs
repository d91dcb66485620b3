//! PostgreSQL plumbing shared by gregor's crates, below the outbox, the relay and the
//! consumer runtime:
//!
//! * [`apply_migrations`]: versioned SQL migrations recorded in `gregor_schema_migrations` (a
//!   table of gregor's own, so a service's `_sqlx_migrations` is never touched), applied in one
//!   transaction under an advisory lock, so that many processes may start at once. Each crate
//!   keeps its own version range ([`OUTBOX_VERSIONS`], [`INBOX_VERSIONS`],
//!   [`RELAY_VERSIONS`]).
//! * [`is_retryable_sqlx`] and [`is_tls_failure`]: is a sqlx error worth trying again?
//!
//! ```no_run
//! use gregor_pg::{Migration, PgError, RELAY_VERSIONS, apply_migrations};
//!
//! // Versions from the crate's own range; SQL that is a no-op when its objects exist.
//! const MIGRATIONS: &[Migration] = &[(
//!     2001,
//!     "relay leases",
//!     "CREATE TABLE IF NOT EXISTS gregor_example (shard SMALLINT PRIMARY KEY)",
//! )];
//! assert!(MIGRATIONS.iter().all(|(version, ..)| RELAY_VERSIONS.contains(version)));
//!
//! # async fn demo() -> Result<(), PgError> {
//! let pool = sqlx::PgPool::connect_lazy("postgres://127.0.0.1/orders")?;
//! match apply_migrations(&pool, MIGRATIONS).await {
//!     Ok(()) => {}
//!     Err(e) if e.is_retryable() => { /* the database is not there yet: wait, try again */ }
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```

mod classify;
mod error;
mod migrate;

pub use classify::{is_retryable_sqlx, is_tls_failure};
pub use error::PgError;
pub use migrate::{INBOX_VERSIONS, Migration, OUTBOX_VERSIONS, RELAY_VERSIONS, apply_migrations};
