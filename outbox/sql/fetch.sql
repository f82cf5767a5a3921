-- The oldest unpublished rows of a shard whose transactions are older than
-- every transaction still running: a row with a smaller id can no longer
-- appear behind them. Keys whose head row is failing are left out ($3).
SELECT id, message_id, topic, key, value, headers, created_at
FROM {{.Table}}
WHERE shard = $1 AND published_at IS NULL
	AND xid < pg_snapshot_xmin(pg_current_snapshot())
	AND coalesce(key, '') <> ALL ($3::bytea[])
ORDER BY id
LIMIT $2
