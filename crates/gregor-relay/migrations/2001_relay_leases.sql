-- gregor relay schema, version 2001: the relay's own tables (ADR 0013).
--
-- Until this version the outbox's migration 1 created these tables, so every database that
-- migration ran on already has them, with their 64 lease rows: there every statement below is
-- a no-op (IF NOT EXISTS, ON CONFLICT DO NOTHING), and the lease epochs and owners are kept.
-- On a fresh database this creates them exactly as migration 1 used to.

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
