//! `gregor-registry`: a Confluent-compatible schema registry. Configured by environment
//! variables (see the README's table); exits non-zero with a message naming the variable on
//! bad config.

use std::process::ExitCode;

use gregor_config::Env;
use gregor_registry::RegistryConfig;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let env = Env::from_process();
    let telemetry = match gregor_telemetry::init_from_env("gregor-registry", &env) {
        Ok(telemetry) => telemetry,
        Err(e) => return fail(&e),
    };
    let code = run(&env);
    drop(telemetry);
    code
}

fn run(env: &Env) -> ExitCode {
    let config = match RegistryConfig::from_env(env) {
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
        let cancel = CancellationToken::new();
        tokio::spawn(gregor_telemetry::cancel_on_signal(cancel.clone()));
        match gregor_registry::run(config, cancel).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        }
    })
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(%error, "gregor-registry cannot run");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("gregor-registry: {error}");
    }
    ExitCode::from(2)
}
