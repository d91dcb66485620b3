-- gregor outbox schema, version 2 (issue 13).
--
-- Rows queued behind a parked row of their key are *held*: `held_by` names the parked row.
-- Held rows leave the claim index, so a key that keeps writing behind its parked head costs
-- each claim nothing, however many rows wait.
--
-- On a large live outbox this migration holds a write lock on gregor_outbox while the two
-- indexes build; to avoid that, run beforehand (outside a transaction):
--   ALTER TABLE gregor_outbox ADD COLUMN IF NOT EXISTS held_by BIGINT;
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS gregor_outbox_claim
--       ON gregor_outbox (shard, id) WHERE parked_at IS NULL AND held_by IS NULL;
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS gregor_outbox_held
--       ON gregor_outbox (held_by) WHERE held_by IS NOT NULL;
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS gregor_outbox_parked_key_hash
--       ON gregor_outbox (sha256(key), id) WHERE parked_at IS NOT NULL;
ALTER TABLE gregor_outbox ADD COLUMN IF NOT EXISTS held_by BIGINT;

-- The claim reads each owned shard's rows in id order (a merge of per-shard index scans), so
-- a replica never walks the rows of shards other replicas own.
CREATE INDEX IF NOT EXISTS gregor_outbox_claim
    ON gregor_outbox (shard, id) WHERE parked_at IS NULL AND held_by IS NULL;

-- Finds the rows a parked row holds.
CREATE INDEX IF NOT EXISTS gregor_outbox_held
    ON gregor_outbox (held_by) WHERE held_by IS NOT NULL;

-- "Is an earlier row of this key parked?" by the key's hash: a btree entry holds at most
-- 2 704 bytes, so indexing the key itself made a row with a longer key impossible to park.
CREATE INDEX IF NOT EXISTS gregor_outbox_parked_key_hash
    ON gregor_outbox (sha256(key), id) WHERE parked_at IS NOT NULL;
DROP INDEX IF EXISTS gregor_outbox_parked_key;

-- Bumped whenever a parked row stops being parked (requeued, or deleted by an operator), in
-- that transaction. A relay reads it with every claim: a change means rows below its scan
-- position became publishable, and the pass restarts from the oldest row so that they go out
-- before their key's later rows.
CREATE TABLE IF NOT EXISTS gregor_outbox_requeues (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    generation BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO gregor_outbox_requeues (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- A parked row that is un-parked or deleted — by `gregor outbox requeue`, an older CLI, or an
-- operator's DELETE — releases the rows it holds and bumps the generation, so no held row can
-- outlive its reason. The trigger's statements run after the parked row's lock was taken, so
-- they see every hold committed before (a hold takes a share lock on the parked row and
-- re-checks it, see the relay's `store::hold`).
CREATE OR REPLACE FUNCTION gregor_outbox_release_held() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE gregor_outbox SET held_by = NULL WHERE held_by = OLD.id;
    UPDATE gregor_outbox_requeues SET generation = generation + 1;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS gregor_outbox_unparked ON gregor_outbox;
CREATE TRIGGER gregor_outbox_unparked
    AFTER UPDATE OF parked_at ON gregor_outbox
    FOR EACH ROW WHEN (OLD.parked_at IS NOT NULL AND NEW.parked_at IS NULL)
    EXECUTE FUNCTION gregor_outbox_release_held();
DROP TRIGGER IF EXISTS gregor_outbox_parked_deleted ON gregor_outbox;
CREATE TRIGGER gregor_outbox_parked_deleted
    AFTER DELETE ON gregor_outbox
    FOR EACH ROW WHEN (OLD.parked_at IS NOT NULL)
    EXECUTE FUNCTION gregor_outbox_release_held();

-- Rows the relay could not even read (a NULL header element, a multi-dimensional array,
-- names and values of different lengths, as a hand-written INSERT could make) would fail
-- every claim of their shard. New rows must be readable; existing rows are not re-checked.
ALTER TABLE gregor_outbox DROP CONSTRAINT IF EXISTS gregor_outbox_headers_readable;
ALTER TABLE gregor_outbox ADD CONSTRAINT gregor_outbox_headers_readable CHECK (
    array_position(header_names, NULL) IS NULL
    AND array_position(header_values, NULL) IS NULL
    AND coalesce(array_ndims(header_names), 1) = 1
    AND coalesce(array_ndims(header_values), 1) = 1
    AND cardinality(header_names) = cardinality(header_values)
) NOT VALID;
