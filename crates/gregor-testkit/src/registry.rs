//! A `gregor-registry` of a test's own: the workspace binary on a free port, so a test can
//! stop it and start it again without disturbing other tests.

use std::time::Duration;

use anyhow::bail;

use crate::process::Proc;

/// A private schema registry (in-memory storage unless [`PrivateRegistry::start_on_database`]).
#[derive(Debug)]
pub struct PrivateRegistry {
    port: u16,
    env: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl PrivateRegistry {
    /// Starts a registry with in-memory storage and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::launch(vec![("GREGOR_REGISTRY_STORAGE".into(), "memory".into())]).await
    }

    /// Starts a registry storing its schemas in the PostgreSQL database at `database_url`,
    /// so that they survive a restart.
    pub async fn start_on_database(database_url: &str) -> anyhow::Result<Self> {
        Self::launch(vec![
            ("GREGOR_REGISTRY_STORAGE".into(), "postgres".into()),
            ("DATABASE_URL".into(), database_url.into()),
        ])
        .await
    }

    /// Starts a registry with extra environment variables (basic auth, HTTPS with
    /// `GREGOR_REGISTRY_TLS_CERT`/`GREGOR_REGISTRY_TLS_KEY`, …).
    pub async fn start_with(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut vars = vec![("GREGOR_REGISTRY_STORAGE".to_owned(), "memory".to_owned())];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Self::launch(vars).await
    }

    async fn launch(env: Vec<(String, String)>) -> anyhow::Result<Self> {
        let mut registry = Self {
            port: crate::free_port()?,
            env,
            proc: None,
        };
        registry.resume().await?;
        Ok(registry)
    }

    /// `http://127.0.0.1:<port>`, or `https://…` when started with a TLS certificate.
    pub fn url(&self) -> String {
        self.url_on_host("127.0.0.1")
    }

    /// [`PrivateRegistry::url`] with another host name, e.g. `localhost`.
    pub fn url_on_host(&self, host: &str) -> String {
        let tls = self
            .env
            .iter()
            .any(|(k, v)| k == "GREGOR_REGISTRY_TLS_CERT" && !v.is_empty());
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.port)
    }

    /// Kills the registry (SIGKILL).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9()?;
        }
        Ok(())
    }

    /// Starts the registry again on the same port (in-memory storage starts empty).
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.proc.is_some() {
            bail!("registry already running");
        }
        let listen = format!("127.0.0.1:{}", self.port);
        let mut env: Vec<(&str, &str)> = vec![
            ("GREGOR_REGISTRY_LISTEN", listen.as_str()),
            ("RUST_LOG", "warn"),
        ];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.proc = Some(Proc::spawn("gregor-registry", &env)?);
        crate::services::wait_port(
            self.port,
            Duration::from_secs(30),
            "the private schema registry to listen",
        )
        .await
    }

    /// What the registry wrote to stderr.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }
}
