use sqlx::{Postgres, QueryBuilder, Transaction};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    OutboxError, OutboxMessage,
    shard::shard_of,
    trace::{create_span, current_trace_context},
};

/// Rows per INSERT statement in a batch: 14 binds a row stays under PostgreSQL's 65 535.
const ROWS_PER_STATEMENT: usize = 4_000;

const INSERT_ONE: &str = "INSERT INTO gregor_outbox \
    (shard, event_id, topic, key, payload, header_names, header_values, event_type, \
     event_source, content_type, traceparent, tracestate) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Enqueues one event inside the caller's transaction and returns its event id (UUID v7,
/// published as the `ce_id` header).
///
/// The event is published if and only if `tx` commits (promise P1). When the current
/// `tracing` span carries an OpenTelemetry context and the message has none, the context of a
/// `create <topic>` child span is stored with the event (its parent for the relay's span).
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    message: OutboxMessage,
) -> Result<Uuid, OutboxError> {
    let span = create_span(&message.topic);
    let row = span.in_scope(|| Row::prepare(message))?;
    span.record(
        "messaging.message.id",
        tracing::field::display(row.event_id),
    );
    sqlx::query(INSERT_ONE)
        .bind(row.shard)
        .bind(row.event_id)
        .bind(row.msg.topic)
        .bind(row.msg.key)
        .bind(row.msg.payload)
        .bind(row.names)
        .bind(row.values)
        .bind(row.msg.event_type)
        .bind(row.msg.source)
        .bind(row.msg.content_type)
        .bind(row.msg.traceparent)
        .bind(row.msg.tracestate)
        .execute(&mut **tx)
        .instrument(span)
        .await?;
    Ok(row.event_id)
}

/// Enqueues many events in as few statements as possible, in the given order, and returns
/// their event ids in that order. Nothing is inserted when any message is invalid.
pub async fn enqueue_batch(
    tx: &mut Transaction<'_, Postgres>,
    messages: impl IntoIterator<Item = OutboxMessage>,
) -> Result<Vec<Uuid>, OutboxError> {
    let rows = messages
        .into_iter()
        .map(Row::prepare)
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk = rows.by_ref().take(ROWS_PER_STATEMENT);
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO gregor_outbox (shard, event_id, topic, key, payload, header_names, \
             header_values, event_type, event_source, content_type, traceparent, tracestate) ",
        );
        insert.push_values(chunk, |mut b, row| {
            b.push_bind(row.shard)
                .push_bind(row.event_id)
                .push_bind(row.msg.topic)
                .push_bind(row.msg.key)
                .push_bind(row.msg.payload)
                .push_bind(row.names)
                .push_bind(row.values)
                .push_bind(row.msg.event_type)
                .push_bind(row.msg.source)
                .push_bind(row.msg.content_type)
                .push_bind(row.msg.traceparent)
                .push_bind(row.msg.tracestate);
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(ids)
}

/// A validated message with everything the INSERT needs.
struct Row {
    shard: i16,
    event_id: Uuid,
    names: Vec<String>,
    values: Vec<Vec<u8>>,
    msg: OutboxMessage,
}

impl Row {
    fn prepare(mut msg: OutboxMessage) -> Result<Self, OutboxError> {
        msg.validate()?;
        if msg.traceparent.is_none()
            && let Some((parent, state)) = current_trace_context()
        {
            msg.traceparent = Some(parent);
            msg.tracestate = state;
        }
        let event_id = Uuid::now_v7();
        let (names, values) = std::mem::take(&mut msg.headers).into_iter().unzip();
        Ok(Self {
            shard: shard_of(msg.key.as_deref(), event_id),
            event_id,
            names,
            values,
            msg,
        })
    }
}
