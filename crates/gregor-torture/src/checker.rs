//! Decides whether a [`History`] is allowed: one verdict per promise.
//!
//! * **P1** nothing from a rolled-back transaction reaches the broker or a handler;
//! * **P2** every committed event that is not poison (nor queued behind an oversized row of
//!   its key) reaches the broker, and every consumed one has exactly one effect; no healthy
//!   event is copied to a retry tier or the DLQ (the handler never fails);
//! * **P3** per key, first occurrences on the broker follow the key's commit order, a key stays
//!   in one partition, and effects are applied in that order; with `compacted`, the last
//!   record of every key is its last value;
//! * **P5** after the healing, everything expected is published and handled within the bound,
//!   every committed offset reaches the end of its partition, and only poison rows are parked;
//! * **P6** no committed offset runs ahead of the effects, in any sample.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use uuid::Uuid;

use crate::history::{History, Outcome, Poison, Record};

/// One broken promise.
#[derive(Debug, Clone)]
pub struct Violation {
    /// What was seen.
    pub what: String,
    /// The key it concerns, when there is one (its timeline is printed).
    pub key: Option<String>,
    /// The key's sequence number it concerns, when there is one.
    pub seq: Option<i64>,
}

/// The verdict on one promise.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// `P1` … `P6`.
    pub promise: &'static str,
    /// How many things were checked.
    pub checked: u64,
    /// Every violation, in the order found.
    pub violations: Vec<Violation>,
}

impl Verdict {
    fn new(promise: &'static str) -> Self {
        Self {
            promise,
            checked: 0,
            violations: Vec::new(),
        }
    }

    fn violated(&mut self, what: String, key: Option<&str>) {
        self.violations.push(Violation {
            what,
            key: key.map(str::to_owned),
            seq: None,
        });
    }

    fn violated_at(&mut self, what: String, key: &str, seq: i64) {
        self.violations.push(Violation {
            what,
            key: Some(key.to_owned()),
            seq: Some(seq),
        });
    }
}

/// All verdicts of one history.
#[derive(Debug, Clone)]
pub struct Report {
    /// P1, P2, P3, P5, P6, in that order.
    pub verdicts: Vec<Verdict>,
}

impl Report {
    /// No promise was broken.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.violations.is_empty())
    }

    /// The first violation of the first broken promise.
    pub fn first_violation(&self) -> Option<(&'static str, &Violation)> {
        self.verdicts
            .iter()
            .find_map(|v| v.violations.first().map(|x| (v.promise, x)))
    }

    /// One line per promise: checked count and violations.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for v in &self.verdicts {
            let state = if v.violations.is_empty() {
                "ok".to_owned()
            } else {
                format!("VIOLATED ({})", v.violations.len())
            };
            let _ = writeln!(out, "  {:<3} {:>8} checked  {state}", v.promise, v.checked);
            for x in v.violations.iter().take(5) {
                let _ = writeln!(out, "        - {}", x.what);
            }
        }
        out
    }
}

/// What the history says is expected of each committed event.
struct Expectations<'h> {
    committed: HashSet<Uuid>,
    /// Committed events the relay must refuse or that queue behind such a row.
    blocked: HashSet<Uuid>,
    poison: HashSet<Uuid>,
    by_id: HashMap<Uuid, &'h crate::history::Enqueue>,
    /// Per key, committed (seq, event) in seq order.
    per_key: BTreeMap<&'h str, Vec<(i64, Uuid)>>,
}

impl<'h> Expectations<'h> {
    fn new(h: &'h History) -> Self {
        let committed: HashSet<Uuid> = h.ledger.iter().copied().collect();
        let by_id: HashMap<Uuid, _> = h.enqueues.iter().map(|e| (e.event_id, e)).collect();
        let mut per_key: BTreeMap<&str, Vec<(i64, Uuid)>> = BTreeMap::new();
        for e in h
            .enqueues
            .iter()
            .filter(|e| committed.contains(&e.event_id))
        {
            per_key
                .entry(e.key.as_str())
                .or_default()
                .push((e.seq, e.event_id));
        }
        let mut blocked = HashSet::new();
        let mut poison = HashSet::new();
        for events in per_key.values_mut() {
            events.sort_unstable();
            let mut behind_oversized = false;
            for (_, id) in events.iter() {
                let e = by_id[id];
                if e.poison.is_some() {
                    poison.insert(*id);
                }
                behind_oversized |= e.poison == Some(Poison::Oversized);
                if behind_oversized {
                    blocked.insert(*id);
                }
            }
        }
        Self {
            committed,
            blocked,
            poison,
            by_id,
            per_key,
        }
    }
}

/// Checks a history.
pub fn check(h: &History) -> Report {
    let x = Expectations::new(h);
    let main: Vec<&Record> = h.records.iter().filter(|r| r.topic == h.topic).collect();
    let published: Vec<&Record> = h
        .records
        .iter()
        .filter(|r| r.topic == h.topic || r.topic == h.late_topic)
        .collect();
    Report {
        verdicts: vec![
            p1(h, &x),
            p2(h, &x, &published),
            p3(h, &x, &published),
            p5(h, &x),
            p6(h, &main),
        ],
    }
}

fn p1(h: &History, x: &Expectations<'_>) -> Verdict {
    let mut v = Verdict::new("P1");
    for r in &h.records {
        v.checked += 1;
        match r.event_id {
            Some(id) if x.committed.contains(&id) => {}
            Some(id) => {
                let rolled = x
                    .by_id
                    .get(&id)
                    .map_or("never enqueued", |e| match e.outcome {
                        Outcome::RolledBack => "rolled back",
                        Outcome::Unknown => "not in the ledger (commit failed)",
                        Outcome::Committed => "reported committed but absent from the ledger",
                    });
                v.violated(
                    format!(
                        "{id} ({rolled}) is on {} [{}]@{}",
                        r.topic, r.partition, r.offset
                    ),
                    Some(&r.key),
                );
            }
            None => v.violated(
                format!(
                    "a record without a ce_id on {} [{}]@{}",
                    r.topic, r.partition, r.offset
                ),
                Some(&r.key),
            ),
        }
    }
    for e in &h.effects {
        v.checked += 1;
        if !x.committed.contains(&e.event_id) {
            v.violated(
                format!("{} has an effect but was never committed", e.event_id),
                Some(&e.key),
            );
        }
    }
    v
}

fn p2(h: &History, x: &Expectations<'_>, published: &[&Record]) -> Verdict {
    let mut v = Verdict::new("P2");
    let on_broker: HashSet<(&str, Uuid)> = published
        .iter()
        .filter_map(|r| r.event_id.map(|id| (r.topic.as_str(), id)))
        .collect();
    let mut effects: HashMap<Uuid, u32> = HashMap::new();
    for e in &h.effects {
        *effects.entry(e.event_id).or_default() += 1;
    }
    for id in &h.ledger {
        let Some(e) = x.by_id.get(id) else {
            v.violated(
                format!("{id} is in the ledger but was never enqueued"),
                None,
            );
            continue;
        };
        if x.blocked.contains(id) {
            continue;
        }
        v.checked += 1;
        if !on_broker.contains(&(e.topic.as_str(), *id)) {
            v.violated_at(
                format!(
                    "{id} ({} seq {}) committed at {} ms never reached {}",
                    e.key, e.seq, e.at_ms, e.topic
                ),
                &e.key,
                e.seq,
            );
            continue;
        }
        if e.topic == h.topic {
            let n = effects.get(id).copied().unwrap_or(0);
            if n != 1 {
                v.violated_at(
                    format!("{id} ({} seq {}) has {n} effects", e.key, e.seq),
                    &e.key,
                    e.seq,
                );
            }
        }
    }
    for r in h
        .records
        .iter()
        .filter(|r| r.topic != h.topic && r.topic != h.late_topic)
    {
        v.checked += 1;
        v.violated(
            format!(
                "a healthy event took a detour: {} is on {} [{}]@{}",
                r.event_id.map(|i| i.to_string()).unwrap_or_default(),
                r.topic,
                r.partition,
                r.offset
            ),
            Some(&r.key),
        );
    }
    v
}

fn p3(h: &History, x: &Expectations<'_>, published: &[&Record]) -> Verdict {
    let mut v = Verdict::new("P3");
    let mut sorted: Vec<&Record> = published.to_vec();
    sorted
        .sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    let mut partition_of: HashMap<(&str, &str), i32> = HashMap::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut last_first: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut last_record: HashMap<&str, i64> = HashMap::new();
    for r in &sorted {
        let Some(id) = r.event_id else { continue };
        let Some(e) = x.by_id.get(&id) else { continue };
        v.checked += 1;
        let p = *partition_of
            .entry((&r.topic, &r.key))
            .or_insert(r.partition);
        if p != r.partition {
            v.violated(
                format!(
                    "key {} is on partitions {p} and {} of {}",
                    r.key, r.partition, r.topic
                ),
                Some(&r.key),
            );
        }
        last_record.insert(&e.key, e.seq);
        if !seen.insert(id) {
            continue;
        }
        if let Some((seq, offset)) = last_first.get(e.key.as_str())
            && *seq >= e.seq
        {
            v.violated_at(
                format!(
                    "key {}: seq {} (first at {} [{}]@{}) after seq {seq} (@{offset})",
                    e.key, e.seq, r.topic, r.partition, r.offset
                ),
                &e.key,
                e.seq,
            );
        }
        last_first.insert(&e.key, (e.seq, r.offset));
    }
    if h.compacted {
        for (key, events) in &x.per_key {
            if events.iter().any(|(_, id)| x.blocked.contains(id)) {
                continue;
            }
            let Some((want, _)) = events.last() else {
                continue;
            };
            v.checked += 1;
            if last_record.get(key) != Some(want) {
                v.violated(
                    format!(
                        "key {key}: the last record is seq {:?}, the last value enqueued is seq {want}",
                        last_record.get(key)
                    ),
                    Some(key),
                );
            }
        }
    }
    // Nothing of a key goes out past an earlier committed event of it that never did (a
    // parked row holds its key back; a skipped row is a hole).
    let on_broker: HashSet<Uuid> = sorted.iter().filter_map(|r| r.event_id).collect();
    for (key, events) in &x.per_key {
        let mut missing: Option<i64> = None;
        for (seq, id) in events {
            v.checked += 1;
            let out = on_broker.contains(id);
            match (out, missing) {
                (true, Some(m)) => {
                    v.violated_at(
                        format!("key {key}: seq {seq} was published although seq {m} never was"),
                        key,
                        *seq,
                    );
                    break;
                }
                (false, None) => missing = Some(*seq),
                _ => {}
            }
        }
    }
    // Effects of a key in commit order: each effect records the seq the key's previous
    // committed effect applied (read under the key's row lock in the handler's transaction).
    for e in &h.effects {
        v.checked += 1;
        if e.prev_seq.is_some_and(|prev| prev >= e.seq) {
            v.violated_at(
                format!(
                    "key {}: effect of seq {} committed after the effect of seq {}",
                    e.key,
                    e.seq,
                    e.prev_seq.unwrap_or_default()
                ),
                &e.key,
                e.seq,
            );
        }
    }
    v
}

fn p5(h: &History, x: &Expectations<'_>) -> Verdict {
    let mut v = Verdict::new("P5");
    v.checked += 1;
    match h.settled_at_ms {
        Some(at) if at.saturating_sub(h.healed_at_ms) <= h.bound_ms => {}
        Some(at) => v.violated(
            format!(
                "settled {} ms after the healing, over the bound of {} ms",
                at.saturating_sub(h.healed_at_ms),
                h.bound_ms
            ),
            None,
        ),
        None => v.violated(
            format!("not settled within {} ms of the healing", h.bound_ms),
            None,
        ),
    }
    for p in h.parked.iter().chain(&h.parked_midrun) {
        v.checked += 1;
        if !x.poison.contains(&p.event_id) {
            v.violated(
                format!(
                    "healthy row {} parked: {}",
                    p.event_id,
                    p.error.as_deref().unwrap_or("no error recorded")
                ),
                Some(&p.key),
            );
        }
    }
    for id in &h.unpublished {
        v.checked += 1;
        if !x.blocked.contains(id) {
            let key = x.by_id.get(id).map(|e| e.key.as_str());
            v.violated(format!("{id} is still in the outbox"), key);
        }
    }
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for r in h.records.iter().filter(|r| r.topic == h.topic) {
        let end = ends.entry(r.partition).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    for (p, end) in ends {
        v.checked += 1;
        let committed = h.final_offsets.get(&p).copied().unwrap_or(0);
        if committed < end {
            v.violated(
                format!("partition {p}: committed offset {committed} short of its end {end}"),
                None,
            );
        }
    }
    v
}

fn p6(h: &History, main: &[&Record]) -> Verdict {
    let mut v = Verdict::new("P6");
    let final_effects: Vec<Uuid> = h.effects.iter().map(|e| e.event_id).collect();
    let final_sample = crate::history::OffsetSample {
        at_ms: u64::MAX,
        committed: h.final_offsets.clone(),
        effects: final_effects,
    };
    for sample in h.offsets.iter().chain(std::iter::once(&final_sample)) {
        let effects: HashSet<Uuid> = sample.effects.iter().copied().collect();
        for r in main {
            let Some(committed) = sample.committed.get(&r.partition) else {
                continue;
            };
            if r.offset >= *committed {
                continue;
            }
            v.checked += 1;
            let handled = r.event_id.is_some_and(|id| effects.contains(&id));
            if !handled {
                let when = if sample.at_ms == u64::MAX {
                    "at the end".to_owned()
                } else {
                    format!("at {} ms", sample.at_ms)
                };
                v.violated_at(
                    format!(
                        "{when}: offset {committed} committed on partition {} but [{}]@{} ({}) has no effect",
                        r.partition,
                        r.partition,
                        r.offset,
                        r.event_id.map(|i| i.to_string()).unwrap_or_default()
                    ),
                    &r.key,
                    r.seq.unwrap_or(-1),
                );
                break;
            }
        }
    }
    v
}

/// Everything that happened to one key, in time order: enqueues, records, effects, parked
/// rows. With `around`, only what concerns sequence numbers within 5 of it.
pub fn timeline(h: &History, key: &str, around: Option<i64>) -> String {
    let near = |seq: i64| around.is_none_or(|a| (seq - a).abs() <= 5);
    let mut lines: Vec<(u64, String)> = Vec::new();
    for e in h.enqueues.iter().filter(|e| e.key == key && near(e.seq)) {
        lines.push((
            e.at_ms,
            format!(
                "enqueue   seq {:>5} {} {:?}{}{} by writer {}",
                e.seq,
                e.event_id,
                e.outcome,
                if e.tombstone { " tombstone" } else { "" },
                e.poison
                    .map(|p| format!(" poison {p:?}"))
                    .unwrap_or_default(),
                e.writer
            ),
        ));
    }
    for r in h
        .records
        .iter()
        .filter(|r| r.key == key && near(r.seq.unwrap_or(-1)))
    {
        lines.push((
            r.at_ms,
            format!(
                "record    seq {:>5} {} {} [{}]@{}",
                r.seq.unwrap_or(-1),
                r.event_id.map(|i| i.to_string()).unwrap_or_default(),
                r.topic,
                r.partition,
                r.offset
            ),
        ));
    }
    let effects: Vec<_> = h
        .effects
        .iter()
        .filter(|e| e.key == key && near(e.seq))
        .collect();
    let mut out = String::new();
    lines.sort_by_key(|l| l.0);
    for (at, line) in lines {
        let _ = writeln!(out, "  {at:>8} ms  {line}");
    }
    for e in effects {
        let _ = writeln!(
            out,
            "  effect #{:<6} seq {:>5} {} from [{}]@{}",
            e.n, e.seq, e.event_id, e.partition, e.offset
        );
    }
    for p in h.parked.iter().filter(|p| p.key == key) {
        let _ = writeln!(
            out,
            "  parked at the end: {} ({})",
            p.event_id,
            p.error.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests;
