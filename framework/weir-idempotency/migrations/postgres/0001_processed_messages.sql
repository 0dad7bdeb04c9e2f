-- Weir idempotency markers (PostgreSQL). Safe to run repeatedly.
-- One row per (consumer group, message id) whose processing committed.
CREATE TABLE IF NOT EXISTS processed_messages (
    consumer_group TEXT        NOT NULL,
    message_id     TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    "partition"    INTEGER     NOT NULL,
    "offset"       BIGINT      NOT NULL,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT processed_messages_pkey PRIMARY KEY (consumer_group, message_id)
);
-- The retention job deletes by age.
CREATE INDEX IF NOT EXISTS processed_messages_processed_at
    ON processed_messages (processed_at);
