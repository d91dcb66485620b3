//! Which offsets may be committed (P6): a partition's watermark is its lowest offset still
//! being handled, or one past the highest received when nothing is pending. Lanes report
//! here directly, so a revoke (which runs inside the poll call) can wait for them.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A topic and partition.
pub(crate) type PartKey = (String, i32);

#[derive(Debug)]
struct PartState {
    generation: u64,
    token: CancellationToken,
    pending: BTreeSet<i64>,
    next: i64,
    committed: i64,
    executing: usize,
}

impl PartState {
    fn watermark(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

/// Offsets in flight for every partition this process holds.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    parts: Mutex<HashMap<PartKey, PartState>>,
    changed: Condvar,
    generations: AtomicU64,
}

impl Offsets {
    fn lock(&self) -> MutexGuard<'_, HashMap<PartKey, PartState>> {
        // A poisoned lock only means a lane panicked between two plain assignments.
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a received message; returns its partition's generation and token (a new
    /// generation starts after a revoke).
    pub(crate) fn track(
        &self,
        key: &PartKey,
        offset: i64,
        parent: &CancellationToken,
    ) -> (u64, CancellationToken) {
        let mut parts = self.lock();
        let record = |state: &mut PartState| {
            state.pending.insert(offset);
            state.next = state.next.max(offset + 1);
            (state.generation, state.token.clone())
        };
        // Look up before inserting: `entry` would clone the key for every message.
        if let Some(state) = parts.get_mut(key) {
            return record(state);
        }
        let state = parts.entry(key.clone()).or_insert_with(|| PartState {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            token: parent.child_token(),
            pending: BTreeSet::new(),
            next: offset,
            committed: -1,
            executing: 0,
        });
        record(state)
    }

    /// A lane starts handling a message; false when its partition has been revoked.
    pub(crate) fn begin(&self, key: &PartKey, generation: u64) -> bool {
        let mut parts = self.lock();
        match parts.get_mut(key) {
            Some(s) if s.generation == generation && !s.token.is_cancelled() => {
                s.executing += 1;
                true
            }
            _ => false,
        }
    }

    /// A lane is done with a message; `done` = handled or durably forwarded (its offset may
    /// be committed), otherwise abandoned (it will be redelivered).
    pub(crate) fn finish(&self, key: &PartKey, generation: u64, offset: i64, done: bool) {
        let mut parts = self.lock();
        if let Some(s) = parts.get_mut(key)
            && s.generation == generation
        {
            s.executing = s.executing.saturating_sub(1);
            if done {
                s.pending.remove(&offset);
            }
        }
        drop(parts);
        self.changed.notify_all();
    }

    /// Watermarks that moved since the last commit, marked as committed.
    pub(crate) fn committable(&self) -> Vec<(PartKey, i64)> {
        let mut parts = self.lock();
        let mut out = Vec::new();
        for (key, s) in parts.iter_mut() {
            let mark = s.watermark();
            if mark > s.committed && !s.token.is_cancelled() {
                s.committed = mark;
                out.push((key.clone(), mark));
            }
        }
        out
    }

    /// A commit failed: commit these partitions again on the next tick.
    pub(crate) fn commit_failed(&self, keys: &[PartKey]) {
        let mut parts = self.lock();
        for key in keys {
            if let Some(s) = parts.get_mut(key) {
                s.committed = -1;
            }
        }
    }

    /// The partitions were revoked: stops their lanes, waits (up to `timeout`) for running
    /// handlers, forgets them and returns the watermarks to commit before letting go.
    pub(crate) fn revoke(&self, keys: &[PartKey], timeout: Duration) -> Vec<(PartKey, i64)> {
        let mut parts = self.lock();
        for key in keys {
            if let Some(s) = parts.get(key) {
                s.token.cancel();
            }
        }
        let busy = |parts: &HashMap<PartKey, PartState>| {
            keys.iter()
                .any(|k| parts.get(k).is_some_and(|s| s.executing > 0))
        };
        parts = self.wait_while(parts, timeout, busy);
        keys.iter()
            .filter_map(|k| parts.remove(k).map(|s| (k.clone(), s.watermark())))
            .filter(|(_, mark)| *mark >= 0)
            .collect()
    }

    /// Shutdown: waits (up to `timeout`) for every running handler, then returns every
    /// partition's watermark. Lanes must already have been told to stop.
    pub(crate) fn drain(&self, timeout: Duration) -> Vec<(PartKey, i64)> {
        let parts = self.lock();
        let parts = self.wait_while(parts, timeout, |p| p.values().any(|s| s.executing > 0));
        parts
            .iter()
            .map(|(k, s)| (k.clone(), s.watermark()))
            .collect()
    }

    /// Whether `generation` is still the live one for `key`.
    pub(crate) fn is_current(&self, key: &PartKey, generation: u64) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|s| s.generation == generation && !s.token.is_cancelled())
    }

    /// Handlers running right now.
    pub(crate) fn executing(&self) -> usize {
        self.lock().values().map(|s| s.executing).sum()
    }

    fn wait_while<'a>(
        &self,
        mut parts: MutexGuard<'a, HashMap<PartKey, PartState>>,
        timeout: Duration,
        busy: impl Fn(&HashMap<PartKey, PartState>) -> bool,
    ) -> MutexGuard<'a, HashMap<PartKey, PartState>> {
        let deadline = Instant::now() + timeout;
        while busy(&parts) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    ?timeout,
                    "handlers still running; letting go of their partitions"
                );
                break;
            }
            parts = match self.changed.wait_timeout(parts, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PartKey {
        ("t".to_owned(), 0)
    }

    #[test]
    fn watermark_waits_for_the_lowest_pending_offset() {
        let offsets = Offsets::default();
        let root = CancellationToken::new();
        let (g, _) = offsets.track(&key(), 10, &root);
        offsets.track(&key(), 11, &root);
        offsets.track(&key(), 12, &root);
        assert!(offsets.begin(&key(), g));
        offsets.finish(&key(), g, 11, true);
        assert_eq!(offsets.committable(), vec![(key(), 10)]);
        offsets.finish(&key(), g, 10, true);
        assert_eq!(offsets.committable(), vec![(key(), 12)]);
        offsets.finish(&key(), g, 12, false);
        assert!(
            offsets.committable().is_empty(),
            "abandoned offsets hold the mark"
        );
    }

    #[test]
    fn revoke_stops_lanes_and_forgets_the_partition() {
        let offsets = Offsets::default();
        let root = CancellationToken::new();
        let (g, token) = offsets.track(&key(), 5, &root);
        let marks = offsets.revoke(&[key()], Duration::from_millis(10));
        assert_eq!(marks, vec![(key(), 5)]);
        assert!(token.is_cancelled());
        assert!(!offsets.begin(&key(), g), "old generation refused");
        let (g2, _) = offsets.track(&key(), 5, &root);
        assert_ne!(g, g2);
    }

    #[test]
    fn revoke_waits_for_a_running_handler() {
        let offsets = std::sync::Arc::new(Offsets::default());
        let root = CancellationToken::new();
        let (g, _) = offsets.track(&key(), 1, &root);
        assert!(offsets.begin(&key(), g));
        let o = offsets.clone();
        let finisher = std::thread::spawn(move || {
            while o
                .lock()
                .get(&key())
                .is_some_and(|s| !s.token.is_cancelled())
            {
                std::thread::yield_now();
            }
            o.finish(&key(), g, 1, true);
        });
        let marks = offsets.revoke(&[key()], Duration::from_secs(30));
        finisher.join().unwrap();
        assert_eq!(marks, vec![(key(), 2)], "the finished message is committed");
    }
}
