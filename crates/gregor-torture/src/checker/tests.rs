//! The checker's self-test on hand-made histories: a correct history passes, and each kind of
//! wrong history is caught by the promise it breaks.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use uuid::Uuid;

use super::check;
use crate::history::{Effect, Enqueue, History, OffsetSample, Outcome, Parked, Poison, Record};

const TOPIC: &str = "t";

/// Two keys, three committed events each, one rolled back; all published once and handled
/// once, in order; offsets committed to the end.
fn good() -> History {
    let mut h = History {
        seed: 1,
        topic: TOPIC.into(),
        late_topic: "t-late".into(),
        healed_at_ms: 1_000,
        settled_at_ms: Some(2_000),
        bound_ms: 5_000,
        ..History::default()
    };
    let mut offsets = [0i64; 2];
    let mut n = 0;
    for (k, key) in ["a", "b"].into_iter().enumerate() {
        let partition = i32::try_from(k).unwrap();
        for seq in 1..=3 {
            let id = Uuid::new_v4();
            h.enqueues.push(enqueue(id, key, seq, Outcome::Committed));
            h.ledger.push(id);
            let offset = offsets[k];
            offsets[k] += 1;
            h.records.push(record(id, key, seq, partition, offset));
            n += 1;
            h.effects.push(Effect {
                n,
                event_id: id,
                key: key.into(),
                seq,
                prev_seq: (seq > 1).then_some(seq - 1),
                partition,
                offset,
            });
        }
        h.enqueues
            .push(enqueue(Uuid::new_v4(), key, 4, Outcome::RolledBack));
    }
    h.final_offsets = BTreeMap::from([(0, 3), (1, 3)]);
    h.offsets.push(OffsetSample {
        at_ms: 500,
        committed: BTreeMap::from([(0, 1)]),
        effects: vec![h.records[0].event_id.unwrap()],
    });
    h
}

fn enqueue(id: Uuid, key: &str, seq: i64, outcome: Outcome) -> Enqueue {
    Enqueue {
        event_id: id,
        writer: 0,
        key: key.into(),
        seq,
        topic: TOPIC.into(),
        tombstone: false,
        poison: None,
        outcome,
        at_ms: 10,
    }
}

fn record(id: Uuid, key: &str, seq: i64, partition: i32, offset: i64) -> Record {
    Record {
        topic: TOPIC.into(),
        partition,
        offset,
        key: key.into(),
        event_id: Some(id),
        seq: Some(seq),
        at_ms: 20,
    }
}

/// Key `c`: a committed oversized row (seq 1) and a committed row behind it (seq 2).
fn oversized_key(h: &mut History) -> (Uuid, Uuid) {
    let big = Uuid::new_v4();
    let behind = Uuid::new_v4();
    let mut e = enqueue(big, "c", 1, Outcome::Committed);
    e.poison = Some(Poison::Oversized);
    h.enqueues.push(e);
    h.enqueues.push(enqueue(behind, "c", 2, Outcome::Committed));
    h.ledger.extend([big, behind]);
    (big, behind)
}

/// The promise of the first violation.
fn broken(h: &History) -> &'static str {
    let report = check(h);
    report.first_violation().map_or("none", |(p, _)| p)
}

#[test]
fn a_correct_history_passes() {
    let report = check(&good());
    assert!(report.passed(), "{}", report.summary());
}

#[test]
fn a_rolled_back_event_on_the_broker_breaks_p1() {
    let mut h = good();
    let rolled = h
        .enqueues
        .iter()
        .find(|e| e.outcome == Outcome::RolledBack)
        .unwrap();
    h.records.push(record(rolled.event_id, "a", 4, 0, 3));
    h.final_offsets.insert(0, 4);
    assert_eq!(broken(&h), "P1");
}

#[test]
fn a_committed_event_missing_from_the_broker_breaks_p2() {
    let mut h = good();
    h.records.remove(1);
    assert!(
        check(&h).verdicts[1]
            .violations
            .iter()
            .any(|v| v.what.contains("never reached"))
    );
}

#[test]
fn a_second_effect_breaks_p2() {
    let mut h = good();
    let mut again = h.effects[2].clone();
    again.n = 100;
    h.effects.push(again);
    assert_eq!(broken(&h), "P2");
}

#[test]
fn a_dead_lettered_healthy_event_breaks_p2() {
    let mut h = good();
    let mut dlq = h.records[0].clone();
    dlq.topic = "t.dlq".into();
    h.records.push(dlq);
    assert_eq!(broken(&h), "P2");
}

#[test]
fn first_occurrences_out_of_commit_order_break_p3() {
    let mut h = good();
    // Key a's seq 1 and 2 swap places on the broker.
    let (r0, r1) = (h.records[0].offset, h.records[1].offset);
    h.records[0].offset = r1;
    h.records[1].offset = r0;
    assert_eq!(broken(&h), "P3");
}

#[test]
fn a_late_duplicate_is_not_a_reorder() {
    let mut h = good();
    // Seq 1 of key a again after seq 3: a duplicate, the first occurrences stay in order.
    let mut again = h.records[0].clone();
    again.offset = 3;
    h.records.push(again);
    h.final_offsets.insert(0, 4);
    let report = check(&h);
    assert!(report.passed(), "{}", report.summary());
}

#[test]
fn a_stale_last_value_on_a_compacted_topic_breaks_p3() {
    let mut h = good();
    h.compacted = true;
    let mut stale = h.records[0].clone();
    stale.offset = 3;
    h.records.push(stale);
    h.final_offsets.insert(0, 4);
    assert_eq!(broken(&h), "P3");
}

#[test]
fn a_key_on_two_partitions_breaks_p3() {
    let mut h = good();
    h.records[2].partition = 1;
    h.records[2].offset = 10;
    assert_eq!(broken(&h), "P3");
}

#[test]
fn effects_committed_out_of_order_break_p3() {
    let mut h = good();
    // Seq 2's effect committed after seq 3's.
    h.effects[1].prev_seq = Some(3);
    assert_eq!(broken(&h), "P3");
}

#[test]
fn a_row_published_past_its_parked_predecessor_breaks_p3() {
    let mut h = good();
    let (big, behind) = oversized_key(&mut h);
    h.unpublished.push(big);
    // The row behind the parked one went out anyway.
    h.records.push(record(behind, "c", 2, 0, 3));
    h.final_offsets.insert(0, 4);
    assert_eq!(broken(&h), "P3");
}

#[test]
fn a_healthy_row_parked_during_the_run_breaks_p5() {
    let mut h = good();
    h.parked_midrun.push(Parked {
        event_id: h.ledger[1],
        key: "a".into(),
        topic: TOPIC.into(),
        error: Some("flaked".into()),
    });
    assert_eq!(broken(&h), "P5");
}

#[test]
fn an_unsettled_run_breaks_p5() {
    let mut h = good();
    h.settled_at_ms = None;
    assert_eq!(broken(&h), "P5");
    h.settled_at_ms = Some(9_000);
    assert_eq!(broken(&h), "P5");
}

#[test]
fn a_parked_healthy_row_breaks_p5() {
    let mut h = good();
    h.parked.push(Parked {
        event_id: h.ledger[0],
        key: "a".into(),
        topic: TOPIC.into(),
        error: Some("boom".into()),
    });
    assert_eq!(broken(&h), "P5");
}

#[test]
fn a_partition_left_behind_breaks_p5() {
    let mut h = good();
    h.final_offsets.insert(1, 2);
    let report = check(&h);
    assert!(
        !report.verdicts[3].violations.is_empty(),
        "{}",
        report.summary()
    );
}

#[test]
fn an_offset_ahead_of_the_effects_breaks_p6() {
    let mut h = good();
    h.offsets[0].committed.insert(0, 2);
    assert_eq!(broken(&h), "P6");
}

#[test]
fn rows_behind_an_oversized_row_may_stay_unpublished() {
    let mut h = good();
    let (big, behind) = oversized_key(&mut h);
    h.parked.push(Parked {
        event_id: big,
        key: "c".into(),
        topic: TOPIC.into(),
        error: Some("too large".into()),
    });
    h.unpublished.extend([big, behind]);
    let report = check(&h);
    assert!(report.passed(), "{}", report.summary());
}

#[test]
fn an_unknown_commit_counts_as_what_the_ledger_says() {
    let mut h = good();
    // Committed although its writer saw the commit fail: expected like any other.
    let id = Uuid::new_v4();
    h.enqueues.push(enqueue(id, "b", 4, Outcome::Unknown));
    h.ledger.push(id);
    assert_eq!(broken(&h), "P2");
    h.records.push(record(id, "b", 4, 1, 3));
    h.effects.push(Effect {
        n: 7,
        event_id: id,
        key: "b".into(),
        seq: 4,
        prev_seq: Some(3),
        partition: 1,
        offset: 3,
    });
    h.final_offsets.insert(1, 4);
    let report = check(&h);
    assert!(report.passed(), "{}", report.summary());
}
