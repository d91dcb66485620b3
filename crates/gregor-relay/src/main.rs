//! `gregor-relay`: publishes the outbox to Kafka. Configured by environment variables (see
//! the README's table); exits non-zero with a message naming the variable on bad config.

use std::process::ExitCode;

use gregor_config::Env;
use gregor_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let env = Env::from_process();
    let telemetry = match gregor_telemetry::init_from_env("gregor-relay", &env) {
        Ok(telemetry) => telemetry,
        Err(e) => return fail(&e),
    };
    let code = run(&env);
    // Spans still buffered are exported before the process ends.
    drop(telemetry);
    code
}

fn run(env: &Env) -> ExitCode {
    let config = match RelayConfig::from_env(env) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    tracing::info!(?config, "configuration (secrets redacted)");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    runtime.block_on(async move {
        let relay = match Relay::new(config) {
            Ok(relay) => relay,
            Err(e) => return fail(&e),
        };
        let cancel = CancellationToken::new();
        tokio::spawn(gregor_telemetry::cancel_on_signal(cancel.clone()));
        match relay.run(cancel).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        }
    })
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(%error, "gregor-relay cannot run");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("gregor-relay: {error}");
    }
    ExitCode::from(2)
}
