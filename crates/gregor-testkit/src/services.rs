//! Endpoints of the shared services, per-test databases, and private service instances for
//! tests that must stop and restart a service without disturbing other tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection, PgPool};

use crate::tls::{ServerTls, TlsFront};
use crate::{free_port, scratch_dir};

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

pub(crate) async fn wait_port(port: u16, timeout: Duration, what: &str) -> anyhow::Result<()> {
    crate::wait_until(timeout, what, || async move {
        Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ()))
    })
    .await
}

/// A SASL/SCRAM mechanism nisshi stores credentials for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// The name librdkafka's `sasl.mechanisms` takes.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn nisshi_name(self) -> &'static str {
        match self {
            Self::Sha256 => "scram256",
            Self::Sha512 => "scram512",
        }
    }
}

/// A SASL user created before the broker starts with authentication.
#[derive(Debug, Clone)]
pub struct SaslUser {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
    /// Mechanism its credential is stored for.
    pub mechanism: ScramMechanism,
}

/// How [`PrivateBroker::start_with`] sets the broker up.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Users created (with authentication still off) before the broker is restarted.
    pub users: Vec<SaslUser>,
    /// Start with `--authentication`: every client must authenticate with SASL.
    pub authentication: bool,
    /// Serve TLS with this certificate. nisshi 0.7.0-pre.2 cannot: `nisshi broker` refuses
    /// `--cert` together with `--key` ("cannot be used with"), and its broker builds a TLS
    /// acceptor it never uses. So a [`TlsFront`] terminates TLS on the advertised port and
    /// forwards to the broker, as a load balancer would.
    pub tls: Option<ServerTls>,
}

/// A nisshi broker of a test's own, on a free port, with durable sqlite storage so that it
/// can be stopped and started again with its data (and its SASL users).
#[derive(Debug)]
pub struct PrivateBroker {
    /// The port nisshi listens on.
    port: u16,
    /// The port clients use (a TLS front's, or the broker's own).
    advertised: u16,
    dir: PathBuf,
    child: Option<Child>,
    authentication: bool,
    front: Option<TlsFront>,
}

impl PrivateBroker {
    /// Starts the broker and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(BrokerOptions::default()).await
    }

    /// Starts a broker set up by `options`: creates its users first (with authentication
    /// off), then restarts it with `--authentication` when asked, behind a TLS front when
    /// asked.
    pub async fn start_with(options: BrokerOptions) -> anyhow::Result<Self> {
        let port = free_port()?;
        let front = options
            .tls
            .as_ref()
            .map(|tls| TlsFront::start(tls, port))
            .transpose()?;
        let mut broker = Self {
            port,
            advertised: front.as_ref().map_or(port, TlsFront::port),
            dir: scratch_dir("nisshi")?,
            child: None,
            authentication: false,
            front,
        };
        if !options.users.is_empty() {
            broker.resume().await?;
            let url = format!("tcp://127.0.0.1:{}", broker.port);
            for user in &options.users {
                let output = Command::new("nisshi")
                    .args(["user", "create", &user.name, &user.password])
                    .args(["--broker", &url])
                    .args(["--mechanism", user.mechanism.nisshi_name()])
                    .stdin(Stdio::null())
                    .output()
                    .context("cannot run `nisshi user create` (run ./scripts/services up)")?;
                if !output.status.success() {
                    bail!(
                        "nisshi user create {} failed: {}",
                        user.name,
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
            broker.stop()?;
        }
        broker.authentication = options.authentication;
        broker.resume().await?;
        Ok(broker)
    }

    /// `127.0.0.1:<port>` (the TLS front's port when there is one).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// `localhost:<port>`: the same, by the host name the test certificate also names.
    pub fn bootstrap_localhost(&self) -> String {
        format!("localhost:{}", self.advertised)
    }

    /// The broker's own plaintext port (behind the TLS front, when there is one).
    pub fn plaintext_port(&self) -> u16 {
        self.port
    }

    /// Whether a TLS front serves [`PrivateBroker::bootstrap`].
    pub fn has_tls(&self) -> bool {
        self.front.is_some()
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
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
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
                &advertised,
                "--silent",
            ])
            .args(self.authentication.then_some("--authentication"))
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

/// How [`PrivatePostgres::start_with`] sets the server up.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// `ssl = on` with this certificate, and TCP connections without TLS refused
    /// (`pg_hba.conf` has only `hostssl` lines).
    pub tls: Option<ServerTls>,
    /// A password for role `postgres`, then required on TCP connections (scram-sha-256).
    pub password: Option<String>,
}

/// A PostgreSQL server of a test's own (initdb in a scratch directory, trust auth, a free
/// port), so that a test can restart it.
#[derive(Debug)]
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    password: Option<String>,
}

impl PrivatePostgres {
    /// Initialises and starts the server.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(PostgresOptions::default()).await
    }

    /// Initialises and starts a server set up by `options`.
    pub async fn start_with(options: PostgresOptions) -> anyhow::Result<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("no PostgreSQL server installed (run ./scripts/services up)")?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .max()
            .context("no PostgreSQL version under /usr/lib/postgresql")?;
        let dir = scratch_dir("pg")?;
        let data = dir.join("data");
        let host_auth = if let Some(password) = &options.password {
            std::fs::write(dir.join("pwfile"), password)?;
            "scram-sha-256"
        } else {
            "trust"
        };
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()?;
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb.args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        if options.password.is_some() {
            initdb
                .args(["--auth-host", host_auth, "--pwfile"])
                .arg(dir.join("pwfile"));
        }
        let status = initdb.arg("-D").arg(&data).stdout(Stdio::null()).status()?;
        let _ = std::fs::remove_file(dir.join("pwfile"));
        if !status.success() {
            bail!("initdb failed");
        }
        if let Some(tls) = &options.tls {
            std::fs::copy(&tls.cert, data.join("server.crt"))?;
            std::fs::copy(&tls.key, data.join("server.key"))?;
            std::fs::write(
                data.join("pg_hba.conf"),
                format!(
                    "local all all trust\n\
                     hostssl all all 127.0.0.1/32 {host_auth}\n\
                     hostssl all all ::1/128 {host_auth}\n"
                ),
            )?;
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))?;
            std::io::Write::write_all(
                &mut conf,
                b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            )?;
            // PostgreSQL refuses a key file others can read.
            Command::new("chmod")
                .arg("600")
                .arg(data.join("server.key"))
                .status()?;
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()?;
        }
        let pg = Self {
            port: free_port()?,
            dir,
            bin,
            password: options.password,
        };
        pg.resume().await?;
        Ok(pg)
    }

    /// A URL to database `postgres` on this server (with the password, when there is one).
    pub fn url(&self) -> String {
        self.url_on_host("127.0.0.1")
    }

    /// [`PrivatePostgres::url`] with another host name for the same server, e.g.
    /// `localhost` (the name checked under `sslmode=verify-full`).
    pub fn url_on_host(&self, host: &str) -> String {
        let auth = self
            .password
            .as_ref()
            .map_or_else(|| "postgres".to_owned(), |p| format!("postgres:{p}"));
        format!("postgres://{auth}@{host}:{}/postgres", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.stop_with("fast")
    }

    /// Stops the server with an immediate shutdown: no checkpoint, crash recovery at the
    /// next start, as after a machine failure.
    pub fn crash(&self) -> anyhow::Result<()> {
        self.stop_with("immediate")
    }

    fn stop_with(&self, mode: &str) -> anyhow::Result<()> {
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", mode, "-w", "-D"])
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
