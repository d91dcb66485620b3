-- gregor outbox schema, version 1.
-- One row per event waiting to be published. The relay deletes a row only after the broker
-- acknowledged it; a row that keeps failing is parked (parked_at set) and blocks only its key.
CREATE TABLE IF NOT EXISTS gregor_outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shard         SMALLINT    NOT NULL CHECK (shard >= 0 AND shard < 64),
    event_id      UUID        NOT NULL,
    topic         TEXT        NOT NULL,
    key           BYTEA,
    payload       BYTEA,
    header_names  TEXT[]      NOT NULL DEFAULT '{}',
    header_values BYTEA[]     NOT NULL DEFAULT '{}',
    event_type    TEXT        NOT NULL,
    event_source  TEXT        NOT NULL,
    content_type  TEXT,
    traceparent   TEXT,
    tracestate    TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- The enqueuing transaction: lets the relay find rows that became visible below its
    -- scan position because their transaction committed after a later one (see ADR 0001).
    xid           BIGINT      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    attempts      INTEGER     NOT NULL DEFAULT 0,
    last_error    TEXT,
    parked_at     TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS gregor_outbox_xid ON gregor_outbox (xid);

-- Parked rows are rare; this index makes "is an earlier row of this key parked?" cheap.
CREATE INDEX IF NOT EXISTS gregor_outbox_parked_key
    ON gregor_outbox (key, id) WHERE parked_at IS NOT NULL;

-- The relay's shard leases and member list (gregor_relay_leases, gregor_relay_members) were
-- created here until ADR 0013; they are the relay's migration 2001 now. Databases this
-- migration ran on before keep them (version 1 is never re-run), and 2001 is a no-op there.

-- Wake relays at commit time instead of waiting for their next poll.
CREATE OR REPLACE FUNCTION gregor_outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gregor_outbox', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS gregor_outbox_notify ON gregor_outbox;
CREATE TRIGGER gregor_outbox_notify
    AFTER INSERT ON gregor_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION gregor_outbox_notify();
