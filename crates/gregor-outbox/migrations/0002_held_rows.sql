-- gregor outbox schema, version 2 (issue 13).
--
-- Rows queued behind a parked row of their key are *held*: `held_by` names the parked row.
-- Held rows leave the claim index, so a key that keeps writing behind its parked head costs
-- each claim nothing, however many rows wait. `gregor outbox requeue` releases them.
ALTER TABLE gregor_outbox ADD COLUMN IF NOT EXISTS held_by BIGINT;

-- The claim reads each owned shard's rows in id order (a merge of per-shard index scans), so
-- a replica never walks the rows of shards other replicas own.
CREATE INDEX IF NOT EXISTS gregor_outbox_claim
    ON gregor_outbox (shard, id) WHERE parked_at IS NULL AND held_by IS NULL;

-- Requeue finds the rows a parked row holds.
CREATE INDEX IF NOT EXISTS gregor_outbox_held
    ON gregor_outbox (held_by) WHERE held_by IS NOT NULL;

-- Bumped by every requeue, in the requeue's transaction. A relay reads it with every claim,
-- in the claim's snapshot: a change means rows below its scan position became publishable,
-- and the pass restarts from the oldest row so that they go out before their key's later rows.
CREATE TABLE IF NOT EXISTS gregor_outbox_requeues (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    generation BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO gregor_outbox_requeues (singleton) VALUES (true) ON CONFLICT DO NOTHING;

