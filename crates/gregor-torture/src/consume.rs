//! The consumer role (`gregor-torture consume`): a gregor consumer in the campaign's group
//! whose handler writes one effect row per event inside the dedupe transaction.
//!
//! Configured from the environment like any gregor consumer, plus `TORTURE_TOPIC` and, for
//! the checker's self-test, `TORTURE_SABOTAGE`.

use gregor_config::Env;
use gregor_consumer::{Consumer, ConsumerConfig, Context, Event, HandlerError, Raw};
use tokio_util::sync::CancellationToken;

use crate::workload::SEQ_HEADER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Correct,
    SkipEffects,
    EffectOutsideDedupe,
}

const INSERT: &str = "INSERT INTO torture_effects (event_id, key, seq, prev_seq, part, off)
                      VALUES ($1, $2, $3, $4, $5, $6)";

/// Writes the effect of one event: the key's applied seq, then the effect row.
async fn effect(
    db: &mut sqlx::PgConnection,
    id: uuid::Uuid,
    key: &str,
    seq: i64,
    partition: i32,
    offset: i64,
) -> Result<(), sqlx::Error> {
    let prev = applied(db, key, seq).await?;
    sqlx::query(INSERT)
        .bind(id)
        .bind(key)
        .bind(seq)
        .bind(prev)
        .bind(partition)
        .bind(offset)
        .execute(db)
        .await?;
    Ok(())
}

/// Locks the key's `torture_applied` row, records `seq` as applied and returns the seq the
/// previous committed effect of the key applied (`None` for the first). Under the row lock,
/// so the returned values follow commit order.
async fn applied(
    db: &mut sqlx::PgConnection,
    key: &str,
    seq: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let prev: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM torture_applied WHERE key = $1 FOR UPDATE")
            .bind(key)
            .fetch_optional(&mut *db)
            .await?;
    sqlx::query("UPDATE torture_applied SET seq = $2 WHERE key = $1")
        .bind(key)
        .bind(seq)
        .execute(&mut *db)
        .await?;
    Ok(prev.filter(|p| *p > 0))
}

async fn handle(ctx: Context, event: Event<Vec<u8>>, mode: Mode) -> Result<(), HandlerError> {
    let id: uuid::Uuid = event
        .id()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HandlerError::permanent("no ce_id"))?;
    let key = event.key_str().unwrap_or_default().to_owned();
    let seq: i64 = event
        .header_str(SEQ_HEADER)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HandlerError::permanent("no sequence header"))?;
    let (partition, offset) = (event.partition, event.offset);
    match mode {
        Mode::SkipEffects if seq % 40 == 0 => Ok(()),
        Mode::EffectOutsideDedupe => {
            let pool = ctx
                .pool()
                .ok_or_else(|| HandlerError::permanent("no pool"))?;
            let mut db = pool.begin().await?;
            effect(&mut db, id, &key, seq, partition, offset).await?;
            db.commit().await?;
            Ok(())
        }
        Mode::Correct | Mode::SkipEffects => {
            let mut tx = ctx.transaction().await?;
            effect(&mut tx, id, &key, seq, partition, offset).await?;
            Ok(())
        }
    }
}

/// Runs the consumer until SIGTERM or SIGINT.
pub async fn run() -> anyhow::Result<()> {
    let env = Env::from_process();
    let topic = env
        .get("TORTURE_TOPIC")
        .ok_or_else(|| anyhow::anyhow!("TORTURE_TOPIC is not set"))?
        .to_owned();
    let mode = match env.get("TORTURE_SABOTAGE") {
        None | Some("") => Mode::Correct,
        Some("skip-effects") => Mode::SkipEffects,
        Some("effect-outside-dedupe") => Mode::EffectOutsideDedupe,
        Some(other) => anyhow::bail!("TORTURE_SABOTAGE={other:?} is not a known sabotage"),
    };
    let config = ConsumerConfig::from_env(&env)?;
    let consumer = Consumer::builder(config)
        .route(&topic, Raw, move |ctx: Context, event: Event<Vec<u8>>| {
            handle(ctx, event, mode)
        })
        .build()
        .await?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        on_signal.cancel();
    });
    consumer.run(cancel).await?;
    Ok(())
}
