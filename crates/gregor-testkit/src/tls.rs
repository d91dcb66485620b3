//! Test certificates and a TLS front for services that do not speak TLS themselves.
//!
//! [`TestCa`] makes, with the `openssl` command-line tool, a throw-away certificate authority
//! and a server certificate it signs for `localhost` and `127.0.0.1` — what operators do
//! with their own CA. [`TlsFront`] terminates TLS on a port of its own and forwards the
//! plaintext bytes to a local port, as a load balancer or stunnel in front of a broker does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A certificate authority made for one test, and a server certificate it signed.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Makes the CA (`ca.pem`, `ca.key`) and a server certificate (`server.pem`,
    /// `server.key`, EC P-256) for `DNS:localhost` and `IP:127.0.0.1`, valid for two days,
    /// in a scratch directory. Fails loudly when `openssl` is missing.
    pub fn generate() -> anyhow::Result<Self> {
        Self::generate_for("DNS:localhost,IP:127.0.0.1")
    }

    /// [`TestCa::generate`] with a server certificate for `subject_alt_names` (openssl's
    /// syntax, e.g. `DNS:localhost`).
    pub fn generate_for(subject_alt_names: &str) -> anyhow::Result<Self> {
        let dir = crate::scratch_dir("test-ca")?;
        let ca = Self { dir };
        // A name of its own, so that two test CAs are told apart by issuer.
        let ca_subject = format!("/CN={}", crate::unique_name("gregor test CA"));
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            &ca_subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])?;
        ca.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ])?;
        std::fs::write(
            ca.dir.join("server.ext"),
            format!(
                "basicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=serverAuth\n\
                 subjectAltName={subject_alt_names}\n"
            ),
        )?;
        ca.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        Ok(ca)
    }

    fn openssl(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .context(
                "cannot run `openssl` (Debian package openssl; ./scripts/services up installs it)",
            )?;
        if !output.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// The CA certificate (PEM): what clients trust.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate (PEM), for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server's private key (PEM, PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server certificate and key, for a server's options.
    pub fn server_files(&self) -> ServerTls {
        ServerTls {
            cert: self.server_cert(),
            key: self.server_key(),
        }
    }
}

/// A server certificate chain and its key (PEM files).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Certificate (chain) PEM.
    pub cert: PathBuf,
    /// Private key PEM.
    pub key: PathBuf,
}

impl ServerTls {
    /// A rustls server configuration with this certificate.
    pub fn rustls_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .context("cannot read the server certificate")?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&self.key).context("cannot read the server key")?;
        Ok(rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Terminates TLS on a free port and forwards each connection, in plaintext, to
/// `127.0.0.1:<upstream>`. Runs on a thread of its own (so blocking client calls in a test
/// cannot stall it) until dropped.
#[derive(Debug)]
pub struct TlsFront {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsFront {
    /// Listens on a free port (see [`TlsFront::port`]).
    pub fn start(tls: &ServerTls, upstream: u16) -> anyhow::Result<Self> {
        Self::start_on(crate::free_port()?, tls, upstream)
    }

    /// Listens on `port`.
    pub fn start_on(port: u16, tls: &ServerTls, upstream: u16) -> anyhow::Result<Self> {
        let acceptor = TlsAcceptor::from(Arc::new(tls.rustls_config()?));
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("the TLS front cannot listen on 127.0.0.1:{port}"))?;
        listener.set_nonblocking(true)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("tls-front-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = accept_loop(listener, acceptor, upstream) => {}
                    }
                });
            })?;
        Ok(Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, upstream: u16) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A failed handshake (an untrusting client) just closes the connection.
            let Ok(mut tls) = acceptor.accept(socket).await else {
                return;
            };
            let Ok(mut plain) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
