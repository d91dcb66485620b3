//! P10, operator output: keys, headers and outbox rows written by anyone who can produce or
//! enqueue reach the operator's terminal through `gregor dlq inspect`, `gregor dlq replay
//! --dry-run` and `gregor outbox parked`. Control characters (C0, DEL, C1) and bidirectional
//! overrides must come out escaped, never raw: `ESC ] 52 ; c ; …` writes the clipboard,
//! `ESC [ 1 A ESC [ 2 K` hides lines, U+202E reorders what the operator reads.
//!
//! Runs the real binary against the real broker and database (`./scripts/services up`).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::process::Output;
use std::time::Duration;

use gregor_testkit::{TestDb, kafka, kafka_bootstrap, process, unique_name};
use gregor_wire::headers as h;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Writes "canary" to the clipboard (OSC 52), then hides the line above.
const OSC52: &str = "\u{1b}]52;c;Y2FuYXJ5\u{7}\u{1b}[1A\u{1b}[2K";
/// An 8-bit CSI (C1) and DEL.
const C1: &str = "\u{9b}31m\u{7f}";
/// Right-to-left override and a first-strong isolate.
const BIDI: &str = "\u{202e}txt.exe\u{2068}";

/// The characters that must never reach the terminal raw (newline separates lines, and is
/// allowed between them).
fn forbidden(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn assert_escaped(out: &Output, what: &str) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let bad: Vec<String> = text
            .chars()
            .filter(|c| forbidden(*c))
            .map(|c| format!("U+{:04X}", u32::from(c)))
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: {stream} carries raw {bad:?}:\n{}",
            text.escape_debug()
        );
    }
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).escape_debug(),
        String::from_utf8_lossy(&out.stderr).escape_debug()
    );
}

async fn produce_hostile(topic: &str, original: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap()?)
        .create()?;
    let key = format!("order-1{OSC52}");
    let headers = [
        (h::CE_ID, format!("id{BIDI}")),
        (h::ERROR_KIND, format!("permanent{OSC52}")),
        (h::ERROR_MESSAGE, format!("boom{C1}{OSC52}")),
        (h::ORIGINAL_TOPIC, original.to_owned()),
        (h::ORIGINAL_PARTITION, format!("0{C1}")),
        (h::ORIGINAL_OFFSET, format!("7{BIDI}")),
        (h::CONSUMER_GROUP, format!("billing{OSC52}")),
        (h::ATTEMPT, format!("3{C1}")),
    ]
    .iter()
    .fold(OwnedHeaders::new(), |hs, (k, v)| {
        hs.insert(Header {
            key: k,
            value: Some(v.as_str()),
        })
    });
    producer
        .send(
            FutureRecord::to(topic)
                .key(&key)
                .payload("v")
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_inspect_and_replay_dry_run_escape_hostile_keys_and_headers() -> anyhow::Result<()> {
    let main = unique_name("hostile-out");
    let dlq = gregor_wire::dlq_topic(&main);
    kafka::create_topic(&main, 1).await?;
    kafka::create_topic(&dlq, 1).await?;
    produce_hostile(&dlq, &main).await?;
    let bootstrap = kafka_bootstrap()?;
    let env = [("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str())];

    let out = process::run("gregor", &["dlq", "inspect", &dlq], &env)?;
    assert_escaped(&out, "dlq inspect");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("order-1\\u{1b}]52;c;Y2FuYXJ5\\u{7}"),
        "{shown}"
    );
    assert!(shown.contains("id\\u{202e}txt.exe"), "{shown}");

    let out = process::run(
        "gregor",
        &["dlq", "replay", &dlq, "--dry-run", "--to", &main],
        &env,
    )?;
    assert_escaped(&out, "dlq replay --dry-run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("would replay"));

    let out = process::run("gregor", &["dlq", "inspect", &dlq, "--json"], &env)?;
    assert_escaped(&out, "dlq inspect --json");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_parked_escapes_hostile_rows() -> anyhow::Result<()> {
    let db = TestDb::create("hostile_out").await?;
    let env = [("DATABASE_URL", db.url.as_str())];
    let key = format!("k{OSC52}");
    let out = process::run(
        "gregor",
        &[
            "outbox", "send", "--topic", "orders", "--key", &key, "--value", "v",
        ],
        &env,
    )?;
    assert_escaped(&out, "outbox send");
    // `enqueue` refuses such a topic name; a row written by other means may still hold one.
    sqlx::query(
        "UPDATE gregor_outbox SET parked_at = now(), attempts = 5, last_error = $1, topic = $2",
    )
    .bind(format!("too large{C1}{OSC52}"))
    .bind(format!("orders{BIDI}"))
    .execute(&db.pool)
    .await?;
    let out = process::run("gregor", &["outbox", "parked"], &env)?;
    assert_escaped(&out, "outbox parked");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("key=k\\u{1b}]52"), "{shown}");
    Ok(())
}
