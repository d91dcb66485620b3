//! The fault campaign's fixed seeds (crates/gregor-torture): two seeded runs with faults keep
//! every promise, and a run with a deliberately broken consumer is caught by the checker.
//! Long campaigns run outside CI: `scripts/torture --minutes N`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use gregor_torture::plan::{Options, Sabotage};
use gregor_torture::run::run;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_seeds_keep_every_promise_and_a_sabotaged_consumer_is_caught() -> anyhow::Result<()> {
    let out = gregor_testkit::scratch_dir("gregor-torture-ci")?;
    for seed in [1, 2] {
        let options = Options {
            seed,
            seconds: 30,
            out: out.clone(),
            ..Options::default()
        };
        let outcome = run(&options).await?;
        eprintln!(
            "seed {seed}: {} events, {} faults, settled {:?} ms after the healing, {} records \
             missed by the live reader, reader errors {:?}\n{}",
            outcome.events,
            outcome.faults,
            outcome.settled_ms,
            outcome.missed_live,
            outcome.reader_errors,
            outcome.report.summary()
        );
        if let Some(diagnosis) = &outcome.diagnosis {
            panic!("{diagnosis}");
        }
        assert!(outcome.faults >= 5, "seed {seed}: too few faults injected");
        assert!(outcome.events >= 1_000, "seed {seed}: too small a workload");
        assert!(
            outcome.unclean.is_empty(),
            "processes did not stop cleanly: {:?}",
            outcome.unclean
        );
    }

    // Self-test: a consumer that reports success without applying one event in 40 (its
    // offsets run ahead of its effects) must be caught, by P2 and by P6.
    let options = Options {
        seed: 3,
        seconds: 12,
        sabotage: Some(Sabotage::SkipEffects),
        out: out.clone(),
        ..Options::default()
    };
    let outcome = run(&options).await?;
    let broken: Vec<&str> = outcome
        .report
        .verdicts
        .iter()
        .filter(|v| !v.violations.is_empty())
        .map(|v| v.promise)
        .collect();
    eprintln!("sabotaged run:\n{}", outcome.report.summary());
    assert!(
        broken.contains(&"P2"),
        "missing effects not caught: {broken:?}"
    );
    assert!(
        broken.contains(&"P6"),
        "offsets ahead of effects not caught: {broken:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
