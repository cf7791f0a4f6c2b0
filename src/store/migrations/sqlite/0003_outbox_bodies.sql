-- Outbox bodies in a table of their own. A relay's claim and sent mark change a row's size
-- (status, sent_at), and SQLite then rewrites the whole record, overflow pages included: each
-- ~10 KB body was written again at every status change (BENCHMARKS.md). Bodies never change,
-- so apart from the small rows they are written once.
-- No foreign key: a body is written in the transaction of its row, and the key lookup per
-- row would guard nothing that transaction does not.
CREATE TABLE outbox_bodies (
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
INSERT INTO outbox_bodies (id, body) SELECT id, body FROM outbox;
ALTER TABLE outbox DROP COLUMN body;
