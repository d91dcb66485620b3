//! Issue 15, item 1, against the real broker, the shared `gregor-registry` and the consumer
//! runtime: a ~500-byte message whose (compatible) writer schema adds an `array<array<null>>`
//! field the reader drops, declaring 100 inner arrays of 8 000 000 nulls, is dead-lettered as
//! `decode` naming the bound; the next message is handled, the offset after it commits, and the
//! consumer's peak RSS grows by at most 100 MiB.
//!
//! Safety net: the test process first caps its own address space (`prlimit`), so a regression
//! aborts this test binary instead of taking the machine's memory. Keep this file to this one
//! test: the cap holds for the whole process.

#![allow(clippy::print_stderr)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use gregor_avro::{AvroSerializer, RegistryClient, RegistryConfig, SerializerConfig, wire};
use gregor_consumer::{Avro, Consumer, Context, Event};
use gregor_integration_tests::{InProcessConsumer, consumer_config};
use gregor_testkit::kafka::{self, Record};
use gregor_testkit::{unique_name, wait_until};
use gregor_wire::headers as h;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(60);

/// Issue 15's shape: 100 inner arrays of 8 000 000 nulls (tens of GB once decoded).
const OUTER: i64 = 100;
const INNER: i64 = 8_000_000;
/// How far the consumer's peak RSS may grow while it handles the hostile message.
const RSS_GROWTH_LIMIT: u64 = 100 << 20;
/// Address space the process may add after the cap is set: room for the runtime's threads
/// and arenas, far below the machine's memory.
const ADDRESS_SPACE_HEADROOM: u64 = 3 << 30;

const READER: &str = r#"{"type":"record","name":"Parcel","namespace":"bounded","fields":[
  {"name":"id","type":"long"}]}"#;
/// Compatible with the reader (the extra field has a default, the reader ignores it).
const HOSTILE_WRITER: &str = r#"{"type":"record","name":"Parcel","namespace":"bounded","fields":[
  {"name":"id","type":"long"},
  {"name":"junk","type":{"type":"array","items":{"type":"array","items":"null"}},"default":[]}]}"#;

#[derive(Debug, Serialize, Deserialize)]
struct Parcel {
    id: i64,
}

/// A zig-zag varint (Avro's int, long, length and block count encoding).
fn long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `id`, then `outer` inner arrays of `inner` nulls each, then the end of the outer array.
fn hostile_body(id: i64, outer: i64, inner: i64) -> Vec<u8> {
    let mut body = long(id);
    body.extend(long(outer));
    for _ in 0..outer {
        body.extend(long(inner));
        body.extend(long(0));
    }
    body.extend(long(0));
    body
}

/// A `kB` figure from `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} missing from /proc/self/status"))?;
    let kb: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// Caps this process's address space at its current size plus the headroom.
fn cap_address_space() -> anyhow::Result<u64> {
    let cap = status_bytes("VmSize:")? + ADDRESS_SPACE_HEADROOM;
    let pid = std::process::id().to_string();
    let limit = format!("--as={cap}:{cap}");
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &limit])
        .output()
        .context("prlimit (util-linux) caps the test's memory")?;
    anyhow::ensure!(
        out.status.success(),
        "prlimit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(cap)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS.
fn reset_peak_rss() -> anyhow::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_few_hundred_hostile_bytes_are_dead_lettered_and_the_partition_moves_on()
-> anyhow::Result<()> {
    let registry_url = std::env::var("SCHEMA_REGISTRY_URL").context(
        "SCHEMA_REGISTRY_URL is not set: run `./scripts/services up && eval \"$(./scripts/services env)\"`",
    )?;
    let topic = unique_name("avro-bounded");
    let group = unique_name("g");
    kafka::create_topic_family(&topic, 1, 3).await?;
    let client = RegistryClient::new(RegistryConfig::new(registry_url))?;
    let parcels = AvroSerializer::new(client.clone(), READER, SerializerConfig::default())?;
    let hostile_writer =
        AvroSerializer::new(client.clone(), HOSTILE_WRITER, SerializerConfig::default())?;
    let hostile_id = hostile_writer.schema_id(&topic).await?;
    let hostile = wire::frame(hostile_id, &hostile_body(7, OUTER, INNER));
    assert!(hostile.len() < 600, "{} bytes", hostile.len());

    let handled = Arc::new(Mutex::new(Vec::<i64>::new()));
    let seen = handled.clone();
    let consumer = InProcessConsumer::start(
        Consumer::builder(consumer_config(&group, None, &[])?).route(
            &topic,
            Avro::<Parcel>::new(client, READER)?,
            move |_ctx: Context, event: Event<Parcel>| {
                if let (Ok(mut seen), Some(parcel)) = (seen.lock(), event.value) {
                    seen.push(parcel.id);
                }
                async { Ok(()) }
            },
        ),
    )
    .await?;

    // Warm up: the consumer has joined, fetched, decoded and committed once.
    kafka::produce(
        &topic,
        vec![Record::new(
            "warm",
            parcels.serialize(&topic, &Parcel { id: 1 }).await?,
        )],
    )
    .await?;
    wait_until(WAIT, "the warm-up event", || async {
        Ok((handled.lock().map(|h| h.len()).unwrap_or(0) == 1).then_some(()))
    })
    .await?;

    let cap = cap_address_space()?;
    reset_peak_rss()?;
    let before = status_bytes("VmRSS:")?;

    kafka::produce(
        &topic,
        vec![
            Record::new("hostile", hostile).header(h::CE_ID, "hostile-1"),
            Record::new("next", parcels.serialize(&topic, &Parcel { id: 2 }).await?),
        ],
    )
    .await?;

    wait_until(WAIT, "the event after the hostile one", || async {
        Ok(handled
            .lock()
            .map(|h| h.contains(&2))
            .unwrap_or(false)
            .then_some(()))
    })
    .await?;
    // Offsets 0 (warm-up), 1 (hostile, dead-lettered) and 2 (next): 3 is committed.
    wait_until(WAIT, "offset 3 committed", || async {
        Ok((kafka::committed_offsets(&group, &topic)?.get(&0) == Some(&3)).then_some(()))
    })
    .await?;

    let peak = status_bytes("VmHWM:")?;
    let after = status_bytes("VmRSS:")?;
    let growth = peak.saturating_sub(before);
    eprintln!(
        "rss before {} MiB, peak {} MiB, after {} MiB, peak growth {} KiB (address space cap {} MiB)",
        before >> 20,
        peak >> 20,
        after >> 20,
        growth >> 10,
        cap >> 20
    );
    assert!(
        growth <= RSS_GROWTH_LIMIT,
        "peak RSS grew by {} MiB (limit {} MiB)",
        growth >> 20,
        RSS_GROWTH_LIMIT >> 20
    );
    let dead = kafka::read_topic(&format!("{topic}.dlq"), 1, WAIT).await?;
    let entry = dead.first().context("no DLQ entry")?;
    assert_eq!(entry.key.as_deref(), Some(&b"hostile"[..]));
    assert_eq!(entry.header(h::ERROR_KIND).as_deref(), Some("decode"));
    assert_eq!(
        entry.header(h::ATTEMPT).as_deref(),
        Some("1"),
        "never retried"
    );
    let reason = entry.header(h::ERROR_MESSAGE).unwrap_or_default();
    eprintln!("dead-lettered: {reason}");
    assert!(
        reason.contains("GREGOR_AVRO_MAX_ITEMS") && reason.contains("over a decoding limit"),
        "{reason:?}"
    );
    assert_eq!(
        handled.lock().map(|h| h.clone()).unwrap_or_default(),
        [1, 2],
        "the hostile message never reached the handler"
    );
    consumer.stop().await?;
    Ok(())
}
