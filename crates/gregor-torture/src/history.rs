//! What a run recorded: every enqueue attempt with its outcome, every record the independent
//! reader saw, every effect the consumers committed, samples of the committed offsets, the
//! parked rows, the faults. Saved as one JSON file so a run can be checked again.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How an enqueue transaction ended, as its writer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `COMMIT` returned success.
    Committed,
    /// Rolled back on purpose, or failed before `COMMIT` was sent.
    RolledBack,
    /// `COMMIT` was sent and failed (the server went away): resolved from the ledger.
    Unknown,
}

/// Why a row is expected to be refused by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Poison {
    /// Payload larger than the producer's `message.max.bytes`: parked for good.
    Oversized,
    /// A topic that did not exist when the row was written; the operator creates it and
    /// requeues the row after the faults.
    MissingTopic,
}

/// One event a writer tried to enqueue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enqueue {
    /// The event id (`ce_id`).
    pub event_id: Uuid,
    /// Writer task.
    pub writer: usize,
    /// Its key.
    pub key: String,
    /// The key's sequence number: under the key's row lock, so a key's committed events carry
    /// 1, 2, 3 … in commit order.
    pub seq: i64,
    /// Destination topic.
    pub topic: String,
    /// Published without a payload.
    pub tombstone: bool,
    /// Set on the rows the relay must refuse.
    pub poison: Option<Poison>,
    /// What the writer saw.
    pub outcome: Outcome,
    /// Milliseconds since the run started, when the transaction ended.
    pub at_ms: u64,
}

/// One record read from the broker by the independent reader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, as text.
    pub key: String,
    /// `ce_id`, when it parses.
    pub event_id: Option<Uuid>,
    /// The `torture-seq` header.
    pub seq: Option<i64>,
    /// Milliseconds since the run started, when the reader got it.
    pub at_ms: u64,
}

/// One effect row a consumer committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Effect {
    /// Insertion order (a `bigserial`).
    pub n: i64,
    /// The event it is the effect of.
    pub event_id: Uuid,
    /// Key.
    pub key: String,
    /// Sequence number.
    pub seq: i64,
    /// The seq the key's previous committed effect applied (`None` for its first): read
    /// under the key's row lock, so effects in commit order have `prev_seq < seq`.
    pub prev_seq: Option<i64>,
    /// Partition and offset of the record handled.
    pub partition: i32,
    /// Offset of the record handled.
    pub offset: i64,
}

/// Committed offsets of the consumer group at one moment, and the effects that existed just
/// after they were read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffsetSample {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// Next offset to consume, per partition.
    pub committed: BTreeMap<i32, i64>,
    /// Events with an effect, read after the offsets.
    pub effects: Vec<Uuid>,
}

/// A row left parked at the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parked {
    /// Event id.
    pub event_id: Uuid,
    /// Key.
    pub key: String,
    /// Topic.
    pub topic: String,
    /// The relay's last error.
    pub error: Option<String>,
}

/// A fault as it was injected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// What was done.
    pub what: String,
}

/// Everything one run recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// The seed of the workload and the fault schedule.
    pub seed: u64,
    /// The consumed topic.
    pub topic: String,
    /// The topic created only after the faults (its rows are poison until then).
    pub late_topic: String,
    /// Whether the compacted-topic check applies (the last record of a key is its last value).
    pub compacted: bool,
    /// Enqueue attempts.
    pub enqueues: Vec<Enqueue>,
    /// Event ids committed, read from the ledger table (the writers' ground truth).
    pub ledger: Vec<Uuid>,
    /// Records on the consumed topic, its retry tier and its DLQ, and on the late topic.
    pub records: Vec<Record>,
    /// Effects.
    pub effects: Vec<Effect>,
    /// Committed-offset samples.
    pub offsets: Vec<OffsetSample>,
    /// Offsets committed at the end.
    pub final_offsets: BTreeMap<i32, i64>,
    /// Rows parked at the end.
    pub parked: Vec<Parked>,
    /// Rows found parked just before a requeue during the run.
    pub parked_midrun: Vec<Parked>,
    /// Rows still in the outbox at the end (parked or not).
    pub unpublished: Vec<Uuid>,
    /// Faults injected.
    pub faults: Vec<FaultEvent>,
    /// Errors the reader met (e.g. an offset out of range: it never skips silently).
    pub reader_errors: Vec<String>,
    /// When the faults stopped and every process ran again.
    pub healed_at_ms: u64,
    /// When everything expected was published and handled (`None`: not within the bound).
    pub settled_at_ms: Option<u64>,
    /// The P5 bound, from the healing.
    pub bound_ms: u64,
}

impl History {
    /// Writes the history as JSON.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        serde_json::to_writer(file, self)?;
        Ok(())
    }

    /// Reads a history written by [`History::save`].
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let file = std::io::BufReader::new(std::fs::File::open(path)?);
        Ok(serde_json::from_reader(file)?)
    }
}
