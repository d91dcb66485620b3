//! `gregor-torture`: runs fault campaigns (`run`, `campaign`), checks a saved history again
//! (`check`), and is the consumer process of a run (`consume`).

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use gregor_torture::checker::check;
use gregor_torture::history::History;
use gregor_torture::plan::Options;

#[derive(Debug, Parser)]
#[command(name = "gregor-torture", about = "gregor's randomized fault campaign")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One run of one seed.
    Run(Options),
    /// Runs for `--minutes`, seed after seed (from `--seed` up), printing a table.
    Campaign {
        /// How long the campaign lasts.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        #[command(flatten)]
        options: Options,
    },
    /// Checks a saved history again.
    Check {
        /// The history file.
        history: PathBuf,
    },
    /// The consumer process of a run (started by `run`).
    Consume,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Consume => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .init();
            gregor_torture::consume::run().await
        }
        Command::Check { history } => {
            let report = check(&History::load(&history)?);
            println!("{}", report.summary());
            if !report.passed() {
                anyhow::bail!("the history breaks a promise");
            }
            Ok(())
        }
        Command::Run(options) => {
            let violated = campaign(&options, 1, None).await?;
            if violated > 0 {
                anyhow::bail!("a promise was broken");
            }
            Ok(())
        }
        Command::Campaign { minutes, options } => {
            let until = Instant::now() + Duration::from_secs(minutes * 60);
            let violated = campaign(&options, u64::MAX, Some(until)).await?;
            if violated > 0 {
                anyhow::bail!("{violated} runs broke a promise");
            }
            Ok(())
        }
    }
}

/// Runs seeds `options.seed`, `options.seed + 1`, … until `runs` or `until`; prints one row
/// per run and the diagnosis of every violation. Returns how many runs broke a promise.
async fn campaign(options: &Options, runs: u64, until: Option<Instant>) -> anyhow::Result<u64> {
    println!(
        "{:>6} {:>7} {:>7} {:>9} {:>8}  verdicts",
        "seed", "events", "faults", "settle_s", "run_s"
    );
    let (mut done, mut violated, mut events, mut faults) = (0u64, 0u64, 0usize, 0usize);
    let mut harness_errors = 0u64;
    while done < runs && until.is_none_or(|u| Instant::now() < u) {
        let o = Options {
            seed: options.seed + done,
            ..options.clone()
        };
        let outcome = match gregor_torture::run::run(&o).await {
            Ok(outcome) => outcome,
            // The harness itself failed (a service would not start, the re-read stalled):
            // no verdict for this seed; the campaign goes on and counts it.
            Err(e) if until.is_some() => {
                println!("{:>6}  harness error, no verdict: {e:#}", o.seed);
                harness_errors += 1;
                done += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let verdicts: Vec<String> = outcome
            .report
            .verdicts
            .iter()
            .map(|v| {
                if v.violations.is_empty() {
                    format!("{}:ok", v.promise)
                } else {
                    format!("{}:{}!", v.promise, v.violations.len())
                }
            })
            .collect();
        println!(
            "{:>6} {:>7} {:>7} {:>9} {:>8.1}  {}",
            o.seed,
            outcome.events,
            outcome.faults,
            outcome
                .settled_ms
                .map_or("-".to_owned(), |ms| format!("{:.1}", ms as f64 / 1000.0)),
            outcome.took.as_secs_f64(),
            verdicts.join(" ")
        );
        if let Some(diagnosis) = &outcome.diagnosis {
            violated += 1;
            println!("{}\n{diagnosis}", outcome.report.summary());
        }
        if outcome.missed_live > 0 || !outcome.reader_errors.is_empty() {
            println!(
                "       reader: {} records missed live and found by the re-read; errors: {:?}",
                outcome.missed_live, outcome.reader_errors
            );
        }
        for log in &outcome.unclean {
            println!("did not stop cleanly: {log}");
        }
        done += 1;
        events += outcome.events;
        faults += outcome.faults;
    }
    println!(
        "campaign: {done} runs, {faults} faults, {events} events checked, {violated} runs with \
         violations, {harness_errors} runs without a verdict (harness errors)"
    );
    Ok(violated)
}
