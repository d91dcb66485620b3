//! The processes under test and the faults done to them: relay replicas and consumer
//! processes (spawned, killed, paused), the private broker (frozen) and the private
//! PostgreSQL (restarted).

use std::time::{Duration, Instant};

use gregor_testkit::process::Proc;
use gregor_testkit::{PrivateBroker, PrivatePostgres};
use tokio::sync::Mutex;

use crate::history::FaultEvent;
use crate::plan::Fault;

/// A relay or consumer slot: the process in it now, and how many times it was started.
#[derive(Debug, Default)]
struct Slot {
    proc: Option<Proc>,
    starts: usize,
}

/// Everything a fault can touch.
#[derive(Debug)]
pub struct Cluster {
    relays: Mutex<Vec<Slot>>,
    consumers: Mutex<Vec<Slot>>,
    relay_env: Vec<(String, String)>,
    consumer_env: Vec<(String, String)>,
    /// The broker.
    pub broker: Mutex<PrivateBroker>,
    /// The database server.
    pub pg: Mutex<PrivatePostgres>,
    started: Instant,
    log: std::sync::Mutex<Vec<FaultEvent>>,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Relay,
    Consumer,
}

impl Cluster {
    /// Starts `relays` relay replicas and `consumers` consumer processes.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        relays: usize,
        consumers: usize,
        relay_env: Vec<(String, String)>,
        consumer_env: Vec<(String, String)>,
        broker: PrivateBroker,
        pg: PrivatePostgres,
        started: Instant,
    ) -> anyhow::Result<Self> {
        let cluster = Self {
            relays: Mutex::new((0..relays).map(|_| Slot::default()).collect()),
            consumers: Mutex::new((0..consumers).map(|_| Slot::default()).collect()),
            relay_env,
            consumer_env,
            broker: Mutex::new(broker),
            pg: Mutex::new(pg),
            started,
            log: std::sync::Mutex::new(Vec::new()),
        };
        for i in 0..relays {
            cluster.respawn(Role::Relay, i).await?;
        }
        for i in 0..consumers {
            cluster.respawn(Role::Consumer, i).await?;
        }
        Ok(cluster)
    }

    /// Adds a line to the fault log.
    pub fn record(&self, what: String) {
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Ok(mut log) = self.log.lock() {
            log.push(FaultEvent { at_ms, what });
        }
    }

    /// The faults injected so far.
    pub fn faults(&self) -> Vec<FaultEvent> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn slots(&self, role: Role) -> &Mutex<Vec<Slot>> {
        match role {
            Role::Relay => &self.relays,
            Role::Consumer => &self.consumers,
        }
    }

    async fn respawn(&self, role: Role, i: usize) -> anyhow::Result<()> {
        let mut slots = self.slots(role).lock().await;
        let slot = &mut slots[i];
        slot.starts += 1;
        let proc = match role {
            Role::Relay => {
                let mut env: Vec<(&str, &str)> = self
                    .relay_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let name = format!("r{i}-{}", slot.starts);
                env.push(("GREGOR_RELAY_NAME", &name));
                Proc::spawn("gregor-relay", &env)?
            }
            Role::Consumer => {
                let env: Vec<(&str, &str)> = self
                    .consumer_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                Proc::spawn_args("gregor-torture", &["consume"], &env)?
            }
        };
        let what = format!(
            "{role:?} {i} started (pid {}, log {})",
            proc.pid(),
            proc.log_path().display()
        );
        slot.proc = Some(proc);
        drop(slots);
        self.record(what);
        Ok(())
    }

    async fn signal(&self, role: Role, i: usize, signal: &str) -> Option<u32> {
        let slots = self.slots(role).lock().await;
        let proc = slots.get(i)?.proc.as_ref()?;
        proc.signal(signal).ok()?;
        Some(proc.pid())
    }

    async fn signal_pid(&self, role: Role, i: usize, pid: u32, signal: &str) {
        let slots = self.slots(role).lock().await;
        if let Some(proc) = slots.get(i).and_then(|s| s.proc.as_ref())
            && proc.pid() == pid
        {
            let _ = proc.signal(signal);
        }
    }

    async fn kill(&self, role: Role, i: usize) -> bool {
        let mut slots = self.slots(role).lock().await;
        let Some(mut proc) = slots.get_mut(i).and_then(|s| s.proc.take()) else {
            return false;
        };
        let _ = proc.kill9();
        true
    }

    /// Carries out one fault, including its end (resume, restart).
    pub async fn inject(&self, fault: &Fault) -> anyhow::Result<()> {
        match *fault {
            Fault::KillRelay { i, restart_ms } => {
                self.kill_restart(Role::Relay, i, restart_ms).await
            }
            Fault::KillConsumer { i, restart_ms } => {
                self.kill_restart(Role::Consumer, i, restart_ms).await
            }
            Fault::PauseRelay { i, ms } => {
                self.pause(Role::Relay, i, ms).await;
                Ok(())
            }
            Fault::PauseConsumer { i, ms } => {
                self.pause(Role::Consumer, i, ms).await;
                Ok(())
            }
            Fault::FreezeBroker { ms } => {
                // One freeze at a time: the broker's lock is held for the whole freeze.
                let broker = self.broker.lock().await;
                broker.freeze()?;
                self.record(format!("broker frozen for {ms} ms"));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                broker.thaw()?;
                Ok(())
            }
            Fault::RestartPostgres { immediate, down_ms } => {
                let pg = self.pg.lock().await;
                // `pg_ctl -w` blocks until the server is down: off the async workers.
                tokio::task::block_in_place(|| if immediate { pg.crash() } else { pg.stop() })?;
                let how = if immediate { "immediate" } else { "fast" };
                self.record(format!("postgres stopped ({how}) for {down_ms} ms"));
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                pg.resume().await?;
                Ok(())
            }
            Fault::RequeueAll => Ok(()),
        }
    }

    async fn kill_restart(&self, role: Role, i: usize, restart_ms: u64) -> anyhow::Result<()> {
        if !self.kill(role, i).await {
            return Ok(());
        }
        self.record(format!("{role:?} {i} killed, back in {restart_ms} ms"));
        tokio::time::sleep(Duration::from_millis(restart_ms)).await;
        self.respawn(role, i).await
    }

    async fn pause(&self, role: Role, i: usize, ms: u64) {
        let Some(pid) = self.signal(role, i, "STOP").await else {
            return;
        };
        self.record(format!("{role:?} {i} paused for {ms} ms"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.signal_pid(role, i, pid, "CONT").await;
    }

    /// After the faults: every slot runs a live process (dead ones are replaced).
    pub async fn heal(&self) -> anyhow::Result<()> {
        for role in [Role::Relay, Role::Consumer] {
            let n = self.slots(role).lock().await.len();
            for i in 0..n {
                let dead = {
                    let mut slots = self.slots(role).lock().await;
                    match slots[i].proc.as_mut() {
                        None => true,
                        Some(p) => {
                            let _ = p.signal("CONT");
                            p.try_wait()?.is_some()
                        }
                    }
                };
                if dead {
                    self.record(format!("{role:?} {i} had exited: replaced"));
                    self.respawn(role, i).await?;
                }
            }
        }
        Ok(())
    }

    /// Stops every relay and consumer (SIGTERM, then SIGKILL after 20 s) and returns the logs
    /// of those that did not exit cleanly.
    pub async fn stop(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for role in [Role::Relay, Role::Consumer] {
            let mut slots = self.slots(role).lock().await;
            for (i, slot) in slots.iter_mut().enumerate() {
                let Some(mut proc) = slot.proc.take() else {
                    continue;
                };
                let _ = proc.signal("TERM");
                let deadline = Instant::now() + Duration::from_secs(20);
                let status = loop {
                    match proc.try_wait() {
                        Ok(Some(status)) => break Some(status),
                        Ok(None) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        _ => break None,
                    }
                };
                if status.is_none() {
                    // Still running (not reaped, so its pid is still its own).
                    let _ = proc.kill9();
                }
                if !status.is_some_and(|s| s.success()) {
                    bad.push(format!("{role:?} {i} ({status:?}):\n{}", proc.log()));
                }
            }
        }
        bad
    }
}
