-- The dedupe inbox: one row per (consumer group, dedupe key) whose effects committed.
CREATE TABLE IF NOT EXISTS gregor_inbox (
    consumer_group TEXT        NOT NULL,
    dedupe_key     TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    "partition"    INTEGER     NOT NULL,
    "offset"       BIGINT      NOT NULL,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, dedupe_key)
);
CREATE INDEX IF NOT EXISTS gregor_inbox_processed_at ON gregor_inbox (processed_at);
