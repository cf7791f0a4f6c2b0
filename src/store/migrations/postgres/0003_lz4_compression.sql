-- PostgreSQL compresses values over ~2 KB before storing them out of line. With the default
-- pglz, compressing the bodies took a quarter of the server's CPU in the end-to-end benchmark
-- (BENCHMARKS.md); lz4 compresses JSON and XML nearly as well at a fraction of the cost.
-- A server built without lz4 keeps pglz: the gateway works the same, only slower.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE messages
                 ALTER COLUMN body SET COMPRESSION lz4,
                 ALTER COLUMN referral SET COMPRESSION lz4,
                 ALTER COLUMN outcome SET COMPRESSION lz4';
    EXECUTE 'ALTER TABLE outbox ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'lz4 compression is not available on this server; large values stay pglz-compressed';
END
$$;
