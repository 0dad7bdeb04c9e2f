-- Weir transactional outbox (PostgreSQL). Safe to run repeatedly.
CREATE TABLE IF NOT EXISTS weir_outbox (
    id           BIGSERIAL   PRIMARY KEY,
    topic        TEXT        NOT NULL,
    msg_key      BYTEA,
    payload      BYTEA,
    headers      BYTEA       NOT NULL,
    message_id   TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    published_at TIMESTAMPTZ,
    attempts     INTEGER     NOT NULL DEFAULT 0,
    last_error   TEXT
);
-- The relay scans unpublished rows in id order.
CREATE INDEX IF NOT EXISTS weir_outbox_unpublished ON weir_outbox (id) WHERE published_at IS NULL;
-- The cleanup job deletes published rows by age.
CREATE INDEX IF NOT EXISTS weir_outbox_published_at ON weir_outbox (published_at) WHERE published_at IS NOT NULL;
-- Wake the relay on commit (NOTIFY is delivered at commit time).
CREATE OR REPLACE FUNCTION weir_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('weir_outbox', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS weir_outbox_notify ON weir_outbox;
CREATE TRIGGER weir_outbox_notify AFTER INSERT ON weir_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION weir_outbox_notify();
