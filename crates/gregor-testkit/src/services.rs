//! Endpoints of the shared services, per-test databases, and private service instances for
//! tests that must stop and restart a service without disturbing other tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection, PgPool};

/// `DATABASE_URL`, or a loud failure naming the command that sets it.
pub fn database_url() -> anyhow::Result<String> {
    std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty()).context(
        "DATABASE_URL is not set: run `./scripts/services up && eval \"$(./scripts/services env)\"` \
         (./scripts/test does both)",
    )
}

/// `KAFKA_BOOTSTRAP_SERVERS`, or a loud failure naming the command that sets it.
pub fn kafka_bootstrap() -> anyhow::Result<String> {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().filter(|v| !v.is_empty()).context(
        "KAFKA_BOOTSTRAP_SERVERS is not set: run `./scripts/services up && eval \"$(./scripts/services env)\"`",
    )
}

/// Replaces the database name of a PostgreSQL URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |j| j + 2) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// A fresh database for one test, with the outbox schema applied, named `gregor_t_<name>_<random>`.
/// `scripts/test` drops leftovers of earlier runs before it starts.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
}

impl TestDb {
    /// Creates the database on the server of `DATABASE_URL`.
    pub async fn create(name: &str) -> anyhow::Result<Self> {
        Self::create_on(&database_url()?, name).await
    }

    /// Creates the database on the server of `server_url`.
    pub async fn create_on(server_url: &str, name: &str) -> anyhow::Result<Self> {
        let db = crate::unique_name(&format!("gregor_t_{name}")).replace('-', "_");
        let mut admin = PgConnection::connect(server_url)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {}", redact(server_url)))?;
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = with_database(server_url, &db);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(12)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect(&url)
            .await?;
        gregor_outbox::migrate(&pool).await?;
        Ok(Self { url, pool })
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn scratch_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(crate::unique_name(prefix));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub(crate) async fn wait_port(port: u16, timeout: Duration, what: &str) -> anyhow::Result<()> {
    crate::wait_until(timeout, what, || async move {
        Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ()))
    })
    .await
}

/// A nisshi broker of a test's own, on a free port, with durable sqlite storage so that it
/// can be stopped and started again with its data.
#[derive(Debug)]
pub struct PrivateBroker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Starts the broker and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let mut broker = Self {
            port: free_port()?,
            dir: scratch_dir("nisshi")?,
            child: None,
        };
        broker.resume().await?;
        Ok(broker)
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGKILL: like a crash; sqlite keeps what was acknowledged).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Freezes the broker (SIGSTOP): it keeps its connections and data but answers nothing,
    /// as a hung or partitioned broker does, until [`PrivateBroker::thaw`].
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a frozen broker run again (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("broker not running")?;
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {signal} failed: {status}");
        }
        Ok(())
    }

    /// Starts the broker again on the same port and storage.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("broker already running");
        }
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nisshi.log"))?;
        let child = Command::new("nisshi")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--silent",
            ])
            // nisshi resolves sqlite paths against its working directory.
            .args(["--storage-engine", "sqlite://nisshi.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start `nisshi` (run ./scripts/services up, which installs it)")?;
        self.child = Some(child);
        wait_port(
            self.port,
            Duration::from_secs(30),
            "the private broker to listen",
        )
        .await
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL server of a test's own (initdb in a scratch directory, trust auth, a free
/// port), so that a test can restart it.
#[derive(Debug)]
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// Initialises and starts the server.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("no PostgreSQL server installed (run ./scripts/services up)")?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .max()
            .context("no PostgreSQL version under /usr/lib/postgresql")?;
        let dir = scratch_dir("pg")?;
        let data = dir.join("data");
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()?;
        let status = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("initdb failed");
        }
        let pg = Self {
            port: free_port()?,
            dir,
            bin,
        };
        pg.resume().await?;
        Ok(pg)
    }

    /// A URL to database `postgres` on this server.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&self) -> anyhow::Result<()> {
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "fast", "-w", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("pg_ctl stop failed");
        }
        Ok(())
    }

    /// Starts the server again.
    pub async fn resume(&self) -> anyhow::Result<()> {
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("pg.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!(
                "pg_ctl start failed; see {}",
                self.dir.join("pg.log").display()
            );
        }
        wait_port(
            self.port,
            Duration::from_secs(30),
            "the private PostgreSQL to listen",
        )
        .await
    }
}

fn as_postgres(program: &std::path::Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/gregor", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://h/gregor?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
