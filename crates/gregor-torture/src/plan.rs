//! A run's settings and its seeded fault schedule.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A deliberate defect, for the checker's self-test: a run with one must be caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sabotage {
    /// The consumer reports success for one event in 40 without writing its effect, so its
    /// offset is committed ahead of the effects (what committing offsets early does).
    SkipEffects,
    /// The consumer writes its effect outside the dedupe transaction: redelivery after a
    /// killed consumer applies it twice.
    EffectOutsideDedupe,
}

impl Sabotage {
    /// The value passed to consumer processes.
    pub fn name(self) -> &'static str {
        match self {
            Self::SkipEffects => "skip-effects",
            Self::EffectOutsideDedupe => "effect-outside-dedupe",
        }
    }
}

/// How one run is set up.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seed of the workload and of the fault schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of workload (faults are injected during it).
    #[arg(long, default_value_t = 40)]
    pub seconds: u64,
    /// Relay replicas.
    #[arg(long, default_value_t = 3)]
    pub relays: usize,
    /// Consumer processes in the group.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Concurrent writer tasks.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Relay lease TTL (short, so that paused relays lose their shards).
    #[arg(long, default_value_t = 2_000)]
    pub lease_ttl_ms: u64,
    /// Partitions of the consumed topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// No faults at all (a baseline run).
    #[arg(long)]
    pub no_faults: bool,
    /// Check what a compacted topic keeps: the last record of every key is its last value
    /// (on by default; `--no-compacted` turns it off).
    #[arg(long = "no-compacted", action = clap::ArgAction::SetFalse)]
    pub compacted: bool,
    /// A deliberate defect (checker self-test).
    #[arg(long, value_enum)]
    pub sabotage: Option<Sabotage>,
    /// Where histories and logs go.
    #[arg(long, default_value = "target/torture")]
    pub out: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 1,
            seconds: 40,
            relays: 3,
            consumers: 2,
            writers: 4,
            lease_ttl_ms: 2_000,
            partitions: 4,
            no_faults: false,
            compacted: true,
            sabotage: None,
            out: PathBuf::from("target/torture"),
        }
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL relay `i`; a new process replaces it after `restart_ms`.
    KillRelay { i: usize, restart_ms: u64 },
    /// SIGSTOP relay `i` for `ms` (longer than the lease TTL: its shards move).
    PauseRelay { i: usize, ms: u64 },
    /// SIGKILL consumer `i`; a new process replaces it after `restart_ms`.
    KillConsumer { i: usize, restart_ms: u64 },
    /// SIGSTOP consumer `i` for `ms`.
    PauseConsumer { i: usize, ms: u64 },
    /// SIGSTOP of the broker for `ms`.
    FreezeBroker { ms: u64 },
    /// PostgreSQL stopped (fast, or immediate = crash) and started after `down_ms`.
    RestartPostgres { immediate: bool, down_ms: u64 },
    /// `gregor outbox requeue --all` while relays are mid-pass.
    RequeueAll,
}

/// A fault and when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Milliseconds after the workload starts.
    pub at_ms: u64,
    /// What.
    pub fault: Fault,
}

/// The seeded schedule: a fault every 1.5–5 s over the workload (the last 3 s are quiet),
/// sometimes two at once.
pub fn schedule(o: &Options) -> Vec<Planned> {
    if o.no_faults {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0xfa17);
    let end = o.seconds.saturating_sub(3) * 1000;
    let mut at = 1_500;
    let mut out = Vec::new();
    while at < end {
        let together = if rng.random_bool(0.25) { 2 } else { 1 };
        for _ in 0..together {
            out.push(Planned {
                at_ms: at,
                fault: fault(&mut rng, o),
            });
        }
        at += rng.random_range(1_500..5_000);
    }
    out
}

fn fault(rng: &mut StdRng, o: &Options) -> Fault {
    let ttl = o.lease_ttl_ms;
    match rng.random_range(0..100) {
        0..20 => Fault::KillRelay {
            i: rng.random_range(0..o.relays),
            restart_ms: rng.random_range(200..3_000),
        },
        20..40 => Fault::PauseRelay {
            i: rng.random_range(0..o.relays),
            ms: rng.random_range(ttl / 2..ttl * 3),
        },
        40..52 => Fault::KillConsumer {
            i: rng.random_range(0..o.consumers),
            restart_ms: rng.random_range(200..3_000),
        },
        52..64 => Fault::PauseConsumer {
            i: rng.random_range(0..o.consumers),
            ms: rng.random_range(500..8_000),
        },
        64..80 => Fault::FreezeBroker {
            ms: rng.random_range(500..5_000),
        },
        80..92 => Fault::RestartPostgres {
            immediate: rng.random_bool(0.5),
            down_ms: rng.random_range(200..4_000),
        },
        _ => Fault::RequeueAll,
    }
}

/// Seeded choices of one writer task.
pub fn writer_rng(seed: u64, writer: usize) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ writer as u64)
}
