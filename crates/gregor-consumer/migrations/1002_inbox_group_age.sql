-- Cleanup deletes one group's expired rows: index them by (group, age) so that it reads only
-- that group's expired rows, never the expired rows of other groups with a longer retention.
-- Building it locks writes to the inbox while it runs; on a large inbox create it first by
-- hand, without the lock:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS gregor_inbox_group_processed_at
--       ON gregor_inbox (consumer_group, processed_at);
-- and this migration finds it.
CREATE INDEX IF NOT EXISTS gregor_inbox_group_processed_at
    ON gregor_inbox (consumer_group, processed_at);
-- Every query by age is per group now: the index on age alone only cost writes.
DROP INDEX IF EXISTS gregor_inbox_processed_at;
