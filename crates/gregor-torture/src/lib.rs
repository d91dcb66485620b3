//! `gregor-torture`: a randomized fault campaign that checks gregor's promises on the real
//! services, in the manner of Jepsen.
//!
//! One run starts a private PostgreSQL and a private nisshi broker, three relay replicas with
//! a short lease TTL and two consumer processes in one group, then drives a seeded workload
//! ([`workload`]) while a seeded schedule ([`plan`]) kills and pauses relays and consumers,
//! freezes the broker, restarts PostgreSQL (fast or immediate) and requeues parked rows
//! mid-pass. After the faults the cluster is healed ([`cluster`]), the run waits for
//! everything to be published and handled, and the recorded [`history`] goes to the
//! [`checker`], which gives one verdict per promise (P1, P2, P3, P5, P6).
//!
//! The seed fixes the workload's choices and the fault schedule; the interleavings of real
//! processes still differ between two runs of one seed, so a violation is reported with the
//! history file, the first violated invariant and the offending key's timeline.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let options = gregor_torture::plan::Options { seed: 7, seconds: 30, ..Default::default() };
//! let outcome = gregor_torture::run::run(&options).await?;
//! if let Some(diagnosis) = &outcome.diagnosis {
//!     anyhow::bail!("{diagnosis}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Needs PostgreSQL's server binaries and `nisshi` (`./scripts/services up` installs both)
//! and the workspace binaries `gregor-relay` and `gregor-torture` built beside the caller.

pub mod checker;
pub mod cluster;
pub mod consume;
pub mod history;
pub mod plan;
pub mod reader;
pub mod run;
pub mod workload;
