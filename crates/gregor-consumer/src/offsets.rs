//! Which offsets may be committed (P6): a partition's watermark is its lowest offset still
//! being handled, or one past the highest received when nothing is pending. Lanes report
//! here directly, so a revoke (which runs inside the poll call) can wait for them.
//!
//! Each partition keeps its own small lock ([`PartOffsets`]), held by the poll loop and the
//! partition's lanes: recording, starting and finishing a message touch only that lock, never
//! a map shared by every partition. The shared map is locked when a partition is first seen,
//! at commit ticks, revokes and shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A topic and partition.
pub(crate) type PartKey = (String, i32);

/// The offsets of one partition for one generation (one assignment of it to this process;
/// after a revoke, the partition's next message starts a new one).
#[derive(Debug)]
pub(crate) struct PartOffsets {
    token: CancellationToken,
    state: Mutex<PartState>,
}

#[derive(Debug)]
struct PartState {
    /// Offsets received and not yet finished-as-done, in increasing order; `true` once done
    /// (removed when everything before it is done too).
    pending: VecDeque<(i64, bool)>,
    next: i64,
    committed: i64,
    executing: usize,
}

impl PartState {
    fn watermark(&self) -> i64 {
        self.pending
            .front()
            .map_or(self.next, |(offset, _)| *offset)
    }

    fn record(&mut self, offset: i64) {
        match self.pending.back() {
            Some((last, _)) if *last >= offset => {
                // Not in increasing order (never seen from librdkafka within a generation):
                // keep the queue sorted and free of duplicates all the same.
                if let Err(at) = self.pending.binary_search_by_key(&offset, |(o, _)| *o) {
                    self.pending.insert(at, (offset, false));
                }
            }
            _ => self.pending.push_back((offset, false)),
        }
        self.next = self.next.max(offset + 1);
    }

    fn done(&mut self, offset: i64) {
        if let Ok(at) = self.pending.binary_search_by_key(&offset, |(o, _)| *o) {
            self.pending[at].1 = true;
        }
        while self.pending.front().is_some_and(|(_, done)| *done) {
            self.pending.pop_front();
        }
    }
}

impl PartOffsets {
    fn lock(&self) -> MutexGuard<'_, PartState> {
        // A poisoned lock only means a lane panicked between two plain assignments.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cancelled when the partition is revoked or the consumer stops.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether this generation still holds the partition.
    pub(crate) fn is_live(&self) -> bool {
        !self.token.is_cancelled()
    }

    /// Records a received message of this partition.
    pub(crate) fn track(&self, offset: i64) {
        self.lock().record(offset);
    }
}

/// Offsets in flight for every partition this process holds.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    parts: Mutex<HashMap<PartKey, Arc<PartOffsets>>>,
    changed: Condvar,
    /// Threads waiting on `changed` (revoke, shutdown): finishing a message takes the shared
    /// lock to wake them only when there are some.
    waiters: AtomicUsize,
}

impl Offsets {
    fn lock(&self) -> MutexGuard<'_, HashMap<PartKey, Arc<PartOffsets>>> {
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live offsets of `key`, created (a new generation, with a child of `parent` as its
    /// token) when the partition is new or was revoked.
    pub(crate) fn partition(&self, key: &PartKey, parent: &CancellationToken) -> Arc<PartOffsets> {
        let mut parts = self.lock();
        if let Some(part) = parts.get(key)
            && part.is_live()
        {
            return part.clone();
        }
        let part = Arc::new(PartOffsets {
            token: parent.child_token(),
            state: Mutex::new(PartState {
                pending: VecDeque::new(),
                next: -1,
                committed: -1,
                executing: 0,
            }),
        });
        parts.insert(key.clone(), part.clone());
        part
    }

    /// A lane starts handling a message; false when its partition has been revoked.
    pub(crate) fn begin(&self, part: &PartOffsets) -> bool {
        let mut state = part.lock();
        if part.is_live() {
            state.executing += 1;
            true
        } else {
            false
        }
    }

    /// A lane is done with a message; `done` = handled or durably forwarded (its offset may
    /// be committed), otherwise abandoned (it will be redelivered).
    pub(crate) fn finish(&self, part: &PartOffsets, offset: i64, done: bool) {
        {
            let mut state = part.lock();
            state.executing = state.executing.saturating_sub(1);
            if done {
                state.done(offset);
            }
        }
        // A waiter counted itself before checking, under the shared lock: taking that lock
        // here means it is either waiting (and gets this notification) or has not checked yet
        // (and will see this finish).
        if self.waiters.load(Ordering::SeqCst) > 0 {
            drop(self.lock());
            self.changed.notify_all();
        }
    }

    /// Watermarks that moved since the last commit, marked as committed.
    pub(crate) fn committable(&self) -> Vec<(PartKey, i64)> {
        let parts = self.lock();
        let mut out = Vec::new();
        for (key, part) in parts.iter() {
            let mut state = part.lock();
            let mark = state.watermark();
            if mark > state.committed && part.is_live() {
                state.committed = mark;
                out.push((key.clone(), mark));
            }
        }
        out
    }

    /// A commit failed: commit these partitions again on the next tick.
    pub(crate) fn commit_failed(&self, keys: &[PartKey]) {
        let parts = self.lock();
        for key in keys {
            if let Some(part) = parts.get(key) {
                part.lock().committed = -1;
            }
        }
    }

    /// The partitions were revoked: stops their lanes, waits (up to `timeout`) for running
    /// handlers, forgets them and returns the watermarks to commit before letting go.
    pub(crate) fn revoke(&self, keys: &[PartKey], timeout: Duration) -> Vec<(PartKey, i64)> {
        let mut parts = self.lock();
        for key in keys {
            if let Some(part) = parts.get(key) {
                part.token.cancel();
            }
        }
        let busy = |parts: &HashMap<PartKey, Arc<PartOffsets>>| {
            keys.iter()
                .any(|k| parts.get(k).is_some_and(|p| p.lock().executing > 0))
        };
        parts = self.wait_while(parts, timeout, busy);
        keys.iter()
            .filter_map(|k| parts.remove(k).map(|p| (k.clone(), p.lock().watermark())))
            .filter(|(_, mark)| *mark >= 0)
            .collect()
    }

    /// Shutdown: waits (up to `timeout`) for every running handler, then returns every
    /// partition's watermark. Lanes must already have been told to stop.
    pub(crate) fn drain(&self, timeout: Duration) -> Vec<(PartKey, i64)> {
        let parts = self.lock();
        let parts = self.wait_while(parts, timeout, |p| {
            p.values().any(|part| part.lock().executing > 0)
        });
        parts
            .iter()
            .map(|(k, p)| (k.clone(), p.lock().watermark()))
            .filter(|(_, mark)| *mark >= 0)
            .collect()
    }

    /// Whether `part` is the live generation of `key`.
    #[cfg(test)]
    fn is_current(&self, key: &PartKey, part: &Arc<PartOffsets>) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|p| Arc::ptr_eq(p, part) && p.is_live())
    }

    /// Handlers running right now.
    pub(crate) fn executing(&self) -> usize {
        self.lock().values().map(|p| p.lock().executing).sum()
    }

    fn wait_while<'a>(
        &self,
        mut parts: MutexGuard<'a, HashMap<PartKey, Arc<PartOffsets>>>,
        timeout: Duration,
        busy: impl Fn(&HashMap<PartKey, Arc<PartOffsets>>) -> bool,
    ) -> MutexGuard<'a, HashMap<PartKey, Arc<PartOffsets>>> {
        let deadline = Instant::now() + timeout;
        self.waiters.fetch_add(1, Ordering::SeqCst);
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
        self.waiters.fetch_sub(1, Ordering::SeqCst);
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
        let part = offsets.partition(&key(), &root);
        for offset in [10, 11, 12] {
            part.track(offset);
        }
        assert!(offsets.begin(&part));
        offsets.finish(&part, 11, true);
        assert_eq!(offsets.committable(), vec![(key(), 10)]);
        offsets.finish(&part, 10, true);
        assert_eq!(offsets.committable(), vec![(key(), 12)]);
        offsets.finish(&part, 12, false);
        assert!(
            offsets.committable().is_empty(),
            "abandoned offsets hold the mark"
        );
    }

    #[test]
    fn offsets_out_of_order_and_twice_keep_the_lowest_pending() {
        let offsets = Offsets::default();
        let root = CancellationToken::new();
        let part = offsets.partition(&key(), &root);
        for offset in [20, 22, 21, 22] {
            part.track(offset);
        }
        offsets.finish(&part, 22, true);
        offsets.finish(&part, 20, true);
        assert_eq!(offsets.committable(), vec![(key(), 21)]);
        offsets.finish(&part, 21, true);
        assert_eq!(offsets.committable(), vec![(key(), 23)]);
    }

    #[test]
    fn revoke_stops_lanes_and_forgets_the_partition() {
        let offsets = Offsets::default();
        let root = CancellationToken::new();
        let part = offsets.partition(&key(), &root);
        part.track(5);
        let marks = offsets.revoke(&[key()], Duration::from_millis(10));
        assert_eq!(marks, vec![(key(), 5)]);
        assert!(part.token().is_cancelled());
        assert!(!offsets.begin(&part), "old generation refused");
        let again = offsets.partition(&key(), &root);
        assert!(!Arc::ptr_eq(&part, &again), "a new generation");
        assert!(offsets.is_current(&key(), &again));
        assert!(!offsets.is_current(&key(), &part));
    }

    #[test]
    fn revoke_waits_for_a_running_handler() {
        let offsets = Arc::new(Offsets::default());
        let root = CancellationToken::new();
        let part = offsets.partition(&key(), &root);
        part.track(1);
        assert!(offsets.begin(&part));
        let (o, p) = (offsets.clone(), part.clone());
        let finisher = std::thread::spawn(move || {
            while p.is_live() {
                std::thread::yield_now();
            }
            o.finish(&p, 1, true);
        });
        let marks = offsets.revoke(&[key()], Duration::from_secs(30));
        finisher.join().unwrap();
        assert_eq!(marks, vec![(key(), 2)], "the finished message is committed");
    }
}
