//! One run: private services, relays and consumers, the workload and the fault schedule,
//! the healing, the wait for everything to settle, the history and the checker's report.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gregor_outbox::{Requeue, requeue};
use gregor_testkit::{PrivateBroker, PrivatePostgres, TestDb, kafka, unique_name};
use sqlx::PgPool;
use uuid::Uuid;

use crate::checker::{Report, check, timeline};
use crate::cluster::Cluster;
use crate::history::{Effect, History, OffsetSample, Parked};
use crate::plan::{Fault, Options, schedule};
use crate::reader::{self, Seen};
use crate::workload::{SCHEMA, Workload, keys};

/// Pass interval of the relays.
const PASS_MS: u64 = 300;
/// The consumer's one retry tier.
const RETRY_TIER_MS: u64 = 1_000;

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The verdicts.
    pub report: Report,
    /// The history file.
    pub history: PathBuf,
    /// Committed events checked.
    pub events: usize,
    /// Faults injected.
    pub faults: usize,
    /// Wall time of the run.
    pub took: Duration,
    /// Milliseconds from the healing to everything handled.
    pub settled_ms: Option<u64>,
    /// Logs of relays and consumers that did not stop cleanly.
    pub unclean: Vec<String>,
    /// What to print about the first violation: seed, invariant, the key's timeline.
    pub diagnosis: Option<String>,
    /// Records the live reader missed and the full re-read found (nisshi's read race).
    pub missed_live: usize,
    /// Errors the independent reader met (distinct messages).
    pub reader_errors: Vec<String>,
}

fn ms_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs one seed.
pub async fn run(o: &Options) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        o.relays > 0 && o.consumers > 0 && o.writers > 0 && o.partitions > 0,
        "a run needs at least one relay, consumer, writer and partition"
    );
    anyhow::ensure!(o.lease_ttl_ms >= 500, "--lease-ttl-ms must be at least 500");
    anyhow::ensure!(o.seconds >= 5, "--seconds must be at least 5");
    std::fs::create_dir_all(&o.out)?;
    let begun = Instant::now();
    let pg = PrivatePostgres::start().await?;
    let db = TestDb::create_on(&pg.url(), "torture").await?;
    let broker = PrivateBroker::start().await?;
    let bootstrap = broker.bootstrap();
    let topic = unique_name("torture");
    let late_topic = format!("{topic}-late");
    let group = unique_name("torture-group");
    for (name, partitions) in [
        (topic.clone(), o.partitions),
        (format!("{topic}.retry.1"), o.partitions),
        (format!("{topic}.dlq"), 1),
    ] {
        kafka::create_topic_on(&bootstrap, &name, partitions).await?;
    }
    for statement in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(statement).execute(&db.pool).await?;
    }
    for table in ["torture_keys", "torture_applied"] {
        sqlx::query(&format!(
            "INSERT INTO {table} (key) SELECT unnest($1::text[])"
        ))
        .bind(keys())
        .execute(&db.pool)
        .await?;
    }
    // The group starts at offset 0 of every partition rather than resolving `earliest`, which
    // nisshi can answer with a later batch (docs/nisshi.md).
    start_group_at_zero(&bootstrap, &group, &topic, o.partitions).await?;
    // The consumer creates its dedupe table itself; the effects table exists already.
    // `TORTURE_LOG` sets the processes' RUST_LOG (default: warnings only).
    let log_filter = std::env::var("TORTURE_LOG").unwrap_or_else(|_| "warn".to_owned());
    let ttl = o.lease_ttl_ms.to_string();
    let relay_env = vec![
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("KAFKA_BOOTSTRAP_SERVERS".to_owned(), bootstrap.clone()),
        ("GREGOR_RELAY_HTTP_ADDR".to_owned(), "off".to_owned()),
        ("GREGOR_RELAY_POLL_INTERVAL_MS".to_owned(), "200".to_owned()),
        (
            "GREGOR_RELAY_PASS_INTERVAL_MS".to_owned(),
            PASS_MS.to_string(),
        ),
        ("GREGOR_RELAY_LEASE_TTL_MS".to_owned(), ttl),
        ("GREGOR_RELAY_MAX_ATTEMPTS".to_owned(), "3".to_owned()),
        ("RUST_LOG".to_owned(), log_filter.clone()),
    ];
    let mut consumer_env = vec![
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("KAFKA_BOOTSTRAP_SERVERS".to_owned(), bootstrap.clone()),
        ("GREGOR_CONSUMER_GROUP".to_owned(), group.clone()),
        ("GREGOR_CONSUMER_HTTP_ADDR".to_owned(), "off".to_owned()),
        (
            "GREGOR_CONSUMER_COMMIT_INTERVAL_MS".to_owned(),
            "200".to_owned(),
        ),
        ("GREGOR_CONSUMER_BACKOFF_MS".to_owned(), "50".to_owned()),
        (
            "GREGOR_CONSUMER_RETRY_TIERS".to_owned(),
            format!("{RETRY_TIER_MS}ms"),
        ),
        ("KAFKA_SESSION_TIMEOUT_MS".to_owned(), "6000".to_owned()),
        ("KAFKA_HEARTBEAT_INTERVAL_MS".to_owned(), "500".to_owned()),
        ("TORTURE_TOPIC".to_owned(), topic.clone()),
        // Small fetches: nisshi's sqlite engine answers a large fetch only once producers go
        // idle, which after a freeze under load starves every consumer for tens of seconds
        // (docs/nisshi.md). Records here are at most a few hundred bytes.
        (
            "KAFKA_MAX_PARTITION_FETCH_BYTES".to_owned(),
            "65536".to_owned(),
        ),
        ("KAFKA_FETCH_MAX_BYTES".to_owned(), "262144".to_owned()),
        ("KAFKA_MESSAGE_MAX_BYTES".to_owned(), "262144".to_owned()),
        ("RUST_LOG".to_owned(), log_filter.clone()),
    ];
    if let Some(s) = o.sabotage {
        consumer_env.push(("TORTURE_SABOTAGE".to_owned(), s.name().to_owned()));
    }

    let started = Instant::now();
    let cluster = Arc::new(
        Cluster::start(
            o.relays,
            o.consumers,
            relay_env,
            consumer_env,
            broker,
            pg,
            started,
        )
        .await?,
    );

    // The independent reader.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let (more_topics, more) = std::sync::mpsc::channel();
    let reader = reader::spawn(
        bootstrap.clone(),
        vec![
            (topic.clone(), o.partitions),
            (format!("{topic}.retry.1"), o.partitions),
            (format!("{topic}.dlq"), 1),
        ],
        more,
        started,
        seen.clone(),
        stop_reader.clone(),
    );

    // Workload, poison rows, old snapshots.
    let log = Arc::new(Mutex::new(Vec::new()));
    let workload = Workload {
        pool: db.pool.clone(),
        topic: topic.clone(),
        late_topic: late_topic.clone(),
        started,
        until: started + Duration::from_secs(o.seconds),
        log: log.clone(),
        seed: o.seed,
    };
    let mut tasks = Vec::new();
    for w in 0..o.writers {
        tasks.push(tokio::spawn(workload.clone().writer(w)));
    }
    tasks.push(tokio::spawn(
        workload.clone().poison(Duration::from_secs(o.seconds / 4)),
    ));
    tasks.push(tokio::spawn(workload.clone().old_snapshots()));

    // Committed-offset samples.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_offsets(
        bootstrap.clone(),
        group.clone(),
        topic.clone(),
        db.pool.clone(),
        started,
        sampling.clone(),
    ));

    // Faults.
    let plan = schedule(o);
    let parked_midrun: Arc<Mutex<Vec<Parked>>> = Arc::default();
    let mut fault_tasks = Vec::new();
    for planned in plan.clone() {
        let cluster = cluster.clone();
        let pool = db.pool.clone();
        let parked_midrun = parked_midrun.clone();
        fault_tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((started + Duration::from_millis(planned.at_ms)).into()).await;
            if planned.fault == Fault::RequeueAll {
                // What is parked now goes into the history first: a healthy row parked by
                // mistake must be seen even though this requeue releases it.
                let before = parked_rows(&pool).await.unwrap_or_default();
                let n = match requeue(&pool, &Requeue::All).await {
                    Ok(n) => n.to_string(),
                    Err(e) => format!("failed ({e})"),
                };
                cluster.record(format!(
                    "requeue --all during a pass: {n} rows ({} parked before)",
                    before.len()
                ));
                if let Ok(mut midrun) = parked_midrun.lock() {
                    midrun.extend(before);
                }
                return Ok(());
            }
            cluster.inject(&planned.fault).await
        }));
    }
    for t in tasks {
        t.await?;
    }
    for t in fault_tasks {
        // A fault that could not be carried out (e.g. PostgreSQL failed to start) is an error
        // of the harness, not of the system: the run stops here.
        t.await??;
    }

    // Healing: every process runs; the operator creates the late topic and requeues its
    // parked rows.
    cluster.heal().await?;
    // nisshi may have created it on first use already (auto-creation).
    if let Err(e) = kafka::create_topic_on(&bootstrap, &late_topic, 1).await
        && !format!("{e:#}").contains("already exists")
    {
        return Err(e);
    }
    let late_partitions = partitions_of(&bootstrap, &late_topic).await?;
    more_topics.send((late_topic.clone(), late_partitions))?;
    let healed_at_ms = ms_since(started);
    let bound_ms = 2 * o.lease_ttl_ms + PASS_MS + RETRY_TIER_MS + 30_000;
    let settled_at_ms = settle(
        &db.pool,
        &seen,
        &late_topic,
        &bootstrap,
        &group,
        &topic,
        started,
        Duration::from_millis(bound_ms),
    )
    .await?;
    sampling.store(false, Ordering::SeqCst);
    let offsets = sampler.await??;
    let unclean = cluster.stop().await;
    let final_offsets = committed(&bootstrap, &group, &topic).await?;
    stop_reader.store(true, Ordering::SeqCst);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let topics = vec![
        (topic.clone(), o.partitions),
        (format!("{topic}.retry.1"), o.partitions),
        (format!("{topic}.dlq"), 1),
        (late_topic.clone(), late_partitions),
    ];
    let missed = {
        let ends: HashMap<(String, i32), i64> = {
            let seen = seen
                .lock()
                .map_err(|_| anyhow::anyhow!("reader state poisoned"))?;
            let mut ends = HashMap::new();
            for r in &seen.records {
                let end = ends.entry((r.topic.clone(), r.partition)).or_insert(0);
                *end = r.offset.max(*end - 1) + 1;
            }
            ends
        };
        let (b, now_ms) = (bootstrap.clone(), ms_since(started));
        let reread =
            tokio::task::spawn_blocking(move || reader::reread(&b, &topics, &ends, now_ms))
                .await??;
        seen.lock()
            .map_err(|_| anyhow::anyhow!("reader state poisoned"))?
            .merge(reread)
    };

    let history = collect(
        o,
        &db.pool,
        &topic,
        &late_topic,
        &log,
        &seen,
        offsets,
        final_offsets,
        parked_midrun.lock().map(|p| p.clone()).unwrap_or_default(),
        cluster.faults(),
        healed_at_ms,
        settled_at_ms,
        bound_ms,
    )
    .await?;
    let path = o
        .out
        .join(format!("history-seed-{}-{}.json", o.seed, topic));
    history.save(&path)?;
    let report = check(&history);
    let diagnosis = report.first_violation().map(|(promise, v)| {
        let mut text = format!(
            "seed {}: {promise} violated first: {}\nhistory: {}\n",
            o.seed,
            v.what,
            path.display()
        );
        if let Some(key) = &v.key {
            let full = path.with_extension(format!("{key}.timeline.txt"));
            let _ = std::fs::write(&full, timeline(&history, key, None));
            let window = v.seq.map_or(String::new(), |s| format!(" (seq {s} ± 5)"));
            text.push_str(&format!(
                "timeline of key {key}{window}; in full: {}\n{}",
                full.display(),
                timeline(&history, key, v.seq)
            ));
        }
        text
    });
    Ok(Outcome {
        events: history.ledger.len(),
        faults: history
            .faults
            .iter()
            .filter(|f| !f.what.contains(" started (pid"))
            .count(),
        report,
        history: path,
        took: begun.elapsed(),
        settled_ms: settled_at_ms.map(|s| s.saturating_sub(healed_at_ms)),
        unclean,
        diagnosis,
        missed_live: missed,
        reader_errors: history.reader_errors.clone(),
    })
}

/// The rows parked now.
async fn parked_rows(pool: &PgPool) -> anyhow::Result<Vec<Parked>> {
    Ok(
        sqlx::query_as::<_, (Uuid, Option<Vec<u8>>, String, Option<String>)>(
            "SELECT event_id, key, topic, last_error FROM gregor_outbox
              WHERE parked_at IS NOT NULL",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(event_id, key, topic, error)| Parked {
            event_id,
            key: String::from_utf8_lossy(&key.unwrap_or_default()).into_owned(),
            topic,
            error,
        })
        .collect(),
    )
}

/// Commits offset 0 on every partition of `topic` for `group`, before any member joins.
async fn start_group_at_zero(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let (b, g, t) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", &g)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&t, p, rdkafka::Offset::Offset(0))?;
        }
        consumer.commit(&tpl, CommitMode::Sync)?;
        anyhow::Ok(())
    })
    .await?
}

/// How many partitions `topic` has (an auto-created topic gets the broker's default).
async fn partitions_of(bootstrap: &str, topic: &str) -> anyhow::Result<i32> {
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || kafka::partition_count_on(&b, &t)).await?
}

async fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let (b, g, t) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    let map = tokio::task::spawn_blocking(move || {
        gregor_testkit::kafka::committed_offsets_on(&b, &g, &t)
    })
    .await??;
    Ok(map.into_iter().collect())
}

async fn sample_offsets(
    bootstrap: String,
    group: String,
    topic: String,
    pool: PgPool,
    started: Instant,
    running: Arc<AtomicBool>,
) -> anyhow::Result<Vec<OffsetSample>> {
    let mut samples = Vec::new();
    while running.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let at_ms = ms_since(started);
        // Offsets first, effects after: every effect the offsets stand for has committed.
        let Ok(committed) = committed(&bootstrap, &group, &topic).await else {
            continue;
        };
        let Ok(effects) = sqlx::query_scalar::<_, Uuid>("SELECT event_id FROM torture_effects")
            .fetch_all(&pool)
            .await
        else {
            continue;
        };
        samples.push(OffsetSample {
            at_ms,
            committed,
            effects,
        });
    }
    Ok(samples)
}

/// Waits until everything expected is published and handled, repeating the operator's
/// requeue of the late topic's parked rows; returns when that happened (ms since the start),
/// or `None` after `bound`.
#[allow(clippy::too_many_arguments)]
async fn settle(
    pool: &PgPool,
    seen: &Mutex<Seen>,
    late_topic: &str,
    bootstrap: &str,
    group: &str,
    topic: &str,
    started: Instant,
    bound: Duration,
) -> anyhow::Result<Option<u64>> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(ids) = sqlx::query_scalar::<_, i64>(
            "SELECT id FROM gregor_outbox WHERE parked_at IS NOT NULL AND topic = $1",
        )
        .bind(late_topic)
        .fetch_all(pool)
        .await
            && !ids.is_empty()
        {
            let _ = requeue(pool, &Requeue::Ids(ids)).await;
        }
        let Ok(handled) = sqlx::query_scalar::<_, i64>(
            "SELECT count(DISTINCT e.event_id) FROM torture_effects e
               JOIN torture_ledger l USING (event_id)
              WHERE l.key NOT IN ('big-0', 'late-0')",
        )
        .fetch_one(pool)
        .await
        else {
            continue;
        };
        let consumed = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM torture_ledger WHERE key NOT IN ('big-0', 'late-0')",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(i64::MAX);
        // Nothing left in the outbox but the oversized key's rows: the relays got an ack for
        // everything else. (Whether it is all readable is for the checker, after a full
        // re-read: the live reader can miss a batch on nisshi, see `reader`.)
        let Ok(left) = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM gregor_outbox WHERE key IS DISTINCT FROM 'big-0'::bytea",
        )
        .fetch_one(pool)
        .await
        else {
            continue;
        };
        let ends = {
            let seen = seen
                .lock()
                .map_err(|_| anyhow::anyhow!("reader state poisoned"))?;
            let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
            for r in seen.records.iter().filter(|r| r.topic == topic) {
                let end = ends.entry(r.partition).or_insert(0);
                *end = (*end).max(r.offset + 1);
            }
            ends
        };
        if left > 0 || handled < consumed {
            continue;
        }
        let Ok(offsets) = committed(bootstrap, group, topic).await else {
            continue;
        };
        if ends
            .iter()
            .all(|(p, end)| offsets.get(p).is_some_and(|c| c >= end))
        {
            return Ok(Some(ms_since(started)));
        }
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
async fn collect(
    o: &Options,
    pool: &PgPool,
    topic: &str,
    late_topic: &str,
    log: &Mutex<Vec<crate::history::Enqueue>>,
    seen: &Mutex<Seen>,
    offsets: Vec<OffsetSample>,
    final_offsets: BTreeMap<i32, i64>,
    parked_midrun: Vec<Parked>,
    faults: Vec<crate::history::FaultEvent>,
    healed_at_ms: u64,
    settled_at_ms: Option<u64>,
    bound_ms: u64,
) -> anyhow::Result<History> {
    let ledger: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM torture_ledger")
        .fetch_all(pool)
        .await?;
    let effects = sqlx::query_as::<_, (i64, Uuid, String, i64, Option<i64>, i32, i64)>(
        "SELECT n, event_id, key, seq, prev_seq, part, off FROM torture_effects ORDER BY n",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(
        |(n, event_id, key, seq, prev_seq, partition, offset)| Effect {
            n,
            event_id,
            key,
            seq,
            prev_seq,
            partition,
            offset,
        },
    )
    .collect();
    let parked = parked_rows(pool).await?;
    let unpublished = sqlx::query_scalar("SELECT event_id FROM gregor_outbox")
        .fetch_all(pool)
        .await?;
    let enqueues = log
        .lock()
        .map_err(|_| anyhow::anyhow!("log poisoned"))?
        .clone();
    let (records, reader_errors) = {
        let seen = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("reader state poisoned"))?;
        (seen.records.clone(), seen.errors.clone())
    };
    Ok(History {
        seed: o.seed,
        topic: topic.to_owned(),
        late_topic: late_topic.to_owned(),
        compacted: o.compacted,
        enqueues,
        ledger,
        records,
        effects,
        offsets,
        final_offsets,
        parked,
        parked_midrun,
        unpublished,
        faults,
        reader_errors,
        healed_at_ms,
        settled_at_ms,
        bound_ms,
    })
}
