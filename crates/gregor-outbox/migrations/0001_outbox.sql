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

-- One lease per shard. A relay publishes and deletes rows of a shard only while it holds the
-- shard's lease; epoch grows on every change of owner (fencing token).
CREATE TABLE IF NOT EXISTS gregor_relay_leases (
    shard      SMALLINT    PRIMARY KEY CHECK (shard >= 0 AND shard < 64),
    owner      UUID,
    epoch      BIGINT      NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
INSERT INTO gregor_relay_leases (shard)
    SELECT s FROM generate_series(0, 63) AS s
    ON CONFLICT (shard) DO NOTHING;

-- Live relay replicas, so each can take a fair share of the shards.
CREATE TABLE IF NOT EXISTS gregor_relay_members (
    relay_id     UUID        PRIMARY KEY,
    name         TEXT        NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);

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
