//! `gregor-registry`: a Confluent-compatible schema registry. Configured by environment
//! variables (see the README's table); exits non-zero with a message naming the variable on
//! bad config.

use std::process::ExitCode;

use gregor_config::Env;
use gregor_registry::RegistryConfig;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let env = Env::from_process();
    init_tracing(&env);
    let config = match RegistryConfig::from_env(&env) {
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
        tokio::spawn(shutdown_on_signal(cancel.clone()));
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

fn init_tracing(env: &Env) {
    let filter = EnvFilter::try_new(env.get("RUST_LOG").unwrap_or("info,sqlx=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if env.get("GREGOR_LOG_FORMAT") == Some("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the registry with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    cancel.cancel();
}
