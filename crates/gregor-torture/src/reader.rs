//! The independent reader: its own consumer, no group commits, assigned every partition from
//! offset 0, with `auto.offset.reset=error` so that it never skips a record silently.
//!
//! nisshi 0.7.0-pre.2 (memory storage) raises a partition's high watermark before the batch is
//! stored, so a reader following the partition live can be handed a later batch while an
//! earlier one is still being written, and never sees the earlier one (DESIGN §5). The live
//! reader therefore only times arrivals; the history's records come from [`reread`], a full
//! read from offset 0 once the producers are done, merged with the live reads.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::history::Record;
use crate::workload::SEQ_HEADER;

/// What the reader collected so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Records in the order read.
    pub records: Vec<Record>,
    /// Errors met (distinct messages, at most 100).
    pub errors: Vec<String>,
}

/// Reads `topics` (name, partitions) and, as they come in on `more`, further topics, until
/// `stop` is set.
pub fn read(
    bootstrap: &str,
    topics: &[(String, i32)],
    more: &Receiver<(String, i32)>,
    started: Instant,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let consumer = client(bootstrap)?;
    let assign = |topics: &[(String, i32)]| -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partitions) in topics {
            for p in 0..*partitions {
                // Offset 0, not `Beginning`: nisshi's ListOffsets(earliest) can answer the
                // batch written first rather than the lowest offset.
                tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
            }
        }
        consumer.incremental_assign(&tpl)?;
        Ok(())
    };
    assign(topics)?;
    while !stop.load(Ordering::SeqCst) {
        match more.try_recv() {
            Ok(topic) => assign(&[topic])?,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let at_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut seen = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("reader state poisoned"))?;
        seen.take(result, at_ms);
    }
    Ok(())
}

impl Seen {
    fn take(&mut self, result: KafkaResult<BorrowedMessage<'_>>, at_ms: u64) {
        match result {
            Ok(m) => self.records.push(record(&m, at_ms)),
            Err(e) => {
                let text = e.to_string();
                if self.errors.len() < 100 && !self.errors.contains(&text) {
                    self.errors.push(text);
                }
            }
        }
    }

    /// Adds the records of a full re-read that the live reader missed (same topic, partition
    /// and offset = same record), and returns how many there were.
    pub fn merge(&mut self, reread: Seen) -> usize {
        let known: HashSet<(String, i32, i64)> = self
            .records
            .iter()
            .map(|r| (r.topic.clone(), r.partition, r.offset))
            .collect();
        let before = self.records.len();
        for r in reread.records {
            if !known.contains(&(r.topic.clone(), r.partition, r.offset)) {
                self.records.push(r);
            }
        }
        for e in reread.errors {
            if !self.errors.contains(&e) {
                self.errors.push(e);
            }
        }
        self.records.len() - before
    }
}

fn client(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "torture-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "50")
        // Small fetches, as for the campaign's consumers (see `run`, docs/nisshi.md).
        .set("max.partition.fetch.bytes", "65536")
        .set("fetch.max.bytes", "262144")
        .set("message.max.bytes", "262144")
        .create()?)
}

fn record(m: &BorrowedMessage<'_>, at_ms: u64) -> Record {
    let header = |name: &str| {
        m.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        })
    };
    Record {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
        event_id: header("ce_id").and_then(|v| v.parse().ok()),
        seq: header(SEQ_HEADER).and_then(|v| v.parse().ok()),
        at_ms,
    }
}

/// Reads `topics` again from offset 0 once nothing is produced any more: until every
/// partition reached `ends` (the next offset after the last record the live reader saw) and
/// nothing arrived for 1 s more. An error when nothing arrives for 30 s before that (a
/// partial re-read would be reported as lost records). Records get `at_ms` = `now_ms`.
pub fn reread(
    bootstrap: &str,
    topics: &[(String, i32)],
    ends: &HashMap<(String, i32), i64>,
    now_ms: u64,
) -> anyhow::Result<Seen> {
    let consumer = client(bootstrap)?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
        }
    }
    consumer.assign(&tpl)?;
    let mut seen = Seen::default();
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    let mut last_arrival = Instant::now();
    loop {
        let reached = ends
            .iter()
            .all(|(tp, end)| next.get(tp).is_some_and(|n| n >= end));
        let idle = last_arrival.elapsed();
        if reached && idle > Duration::from_secs(1) {
            break;
        }
        if idle > Duration::from_secs(30) {
            let short: Vec<String> = ends
                .iter()
                .filter(|(tp, end)| next.get(*tp).is_none_or(|n| n < *end))
                .map(|((t, p), end)| {
                    format!("{t}[{p}] at {:?} of {end}", next.get(&(t.clone(), *p)))
                })
                .collect();
            anyhow::bail!(
                "the re-read from offset 0 got nothing for 30 s short of: {}",
                short.join(", ")
            );
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if let Ok(m) = &result {
            next.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            last_arrival = Instant::now();
        }
        seen.take(result, now_ms);
    }
    Ok(seen)
}

/// Starts [`read`] on its own thread.
pub fn spawn(
    bootstrap: String,
    topics: Vec<(String, i32)>,
    more: Receiver<(String, i32)>,
    started: Instant,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || read(&bootstrap, &topics, &more, started, &seen, &stop))
}
