-- Weir idempotency markers (SQLite). Safe to run repeatedly.
-- processed_at is milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS processed_messages (
    consumer_group TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    topic          TEXT    NOT NULL,
    "partition"    INTEGER NOT NULL,
    "offset"       INTEGER NOT NULL,
    processed_at   INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processed_messages_processed_at
    ON processed_messages (processed_at);
