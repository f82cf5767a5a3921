-- Partition maintenance of one inbox table runs in one process at a time:
-- the caller gives up when another transaction holds this lock. lock_timeout
-- bounds how long the DDL waits for claims in flight (and so how long claims
-- queue behind it); pg_get_expr prints bytea bounds in hex. Also the
-- database's clock, which partitions follow.
SELECT pg_try_advisory_xact_lock(hashtextextended('exactly.inbox.partitions ' || $1, 0)), now()
FROM (SELECT set_config('lock_timeout', $2, true), set_config('bytea_output', 'hex', true)) AS settings
