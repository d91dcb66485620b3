//! Test helpers for gregor's integration tests and benchmarks (not published).
//!
//! Every helper talks to the real services started by `scripts/services up`; when one is
//! absent, the helper fails loudly with the command to run.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let db = gregor_testkit::TestDb::create("doc").await?;
//! let topic = gregor_testkit::unique_name("orders");
//! gregor_testkit::kafka::create_topic(&topic, 3).await?;
//! # let _ = db; Ok(()) }
//! ```

pub mod dockerfile;
pub mod env;
pub mod kafka;
pub mod otlp;
mod ports;
pub mod process;
pub mod readme;
mod registry;
pub mod repo;
mod scratch;
pub mod services;
pub mod tls;

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;

pub use env::{as_pairs, env_plus};
pub use ports::free_port;
pub use readme::ConfigTable;
pub use registry::PrivateRegistry;
pub use scratch::scratch_dir;
pub use services::{
    BrokerOptions, PostgresOptions, PrivateBroker, PrivatePostgres, SaslUser, ScramMechanism,
    TestDb, database_url, kafka_bootstrap, with_database,
};
pub use tls::{ServerTls, TestCa, TlsFront};

/// A name unique to this call: `<prefix>-<12 random chars>` (topic, group, database names).
pub fn unique_name(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(12)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{prefix}-{suffix}")
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
