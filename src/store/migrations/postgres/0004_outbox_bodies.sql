-- Outbox bodies in a table of their own, as on SQLite (where a status change rewrote the whole
-- record, body included): one schema for both stores. On PostgreSQL a status change copies the
-- row too, so the body moving out keeps those row versions small whatever its size.
-- No foreign key: a body is written in the transaction of its row, and the key check per row
-- (a lock on the outbox row) would guard nothing that transaction does not.
CREATE TABLE outbox_bodies (
    id   BIGINT PRIMARY KEY,
    body BYTEA NOT NULL
);
DO $$
BEGIN
    EXECUTE 'ALTER TABLE outbox_bodies ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'lz4 compression is not available on this server; outbox bodies stay pglz-compressed';
END
$$;
INSERT INTO outbox_bodies (id, body) SELECT id, body FROM outbox;
ALTER TABLE outbox DROP COLUMN body;
