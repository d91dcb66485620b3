//! Workspace binaries as child processes, with signals for fault injection.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use anyhow::{Context, bail};

/// The path of a workspace binary built beside the running program (`target/<profile>/<name>`),
/// from a test binary (`target/<profile>/deps/`) or from another workspace binary.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("unexpected binary location")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("unexpected test binary location")?;
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (`cargo build --workspace --bins`; ./scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs a workspace binary to completion with `env` (and only the variables in `env` plus
/// PATH), returning its output.
pub fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    Ok(command(name, env)?.args(args).output()?)
}

fn command(name: &str, env: &[(&str, &str)]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(binary(name)?);
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(env.iter().copied());
    Ok(cmd)
}

/// A running child process that is killed when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts a workspace binary with `env`; its stderr goes to a log file.
    pub fn spawn(name: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_args(name, &[], env)
    }

    /// [`spawn`](Self::spawn) with command-line arguments.
    pub fn spawn_args(name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(format!("{}.log", crate::unique_name(name)));
        let file = std::fs::File::create(&log)?;
        let child = command(name, env)?
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()?;
        Ok(Self { child, log })
    }

    /// Where its stderr goes.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`KILL`, `STOP`, `CONT`, `TERM`).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.pid());
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.signal("KILL")?;
        self.child.wait()?;
        Ok(())
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// Whether it has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
