-- Weir transactional outbox (SQLite). Safe to run repeatedly. Times are epoch ms.
CREATE TABLE IF NOT EXISTS weir_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT    NOT NULL,
    msg_key      BLOB,
    payload      BLOB,
    headers      BLOB    NOT NULL,
    message_id   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS weir_outbox_unpublished ON weir_outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS weir_outbox_published_at ON weir_outbox (published_at) WHERE published_at IS NOT NULL;
