-- The oldest unpublished rows of a shard whose transactions are older than
-- every transaction still running: a row with a smaller id can no longer
-- appear behind them. Keys whose head row is failing are left out ($3).
-- At most $2 rows and, but for the first, $4 bytes (see fetchPending).
SELECT id, message_id, topic, key, value, headers, created_at
FROM (
	SELECT page.*, sum(size) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS upto
	FROM (
		SELECT id, message_id, topic, key, value, headers, created_at,
			$5::int4 + coalesce(octet_length(key), 0) + coalesce(octet_length(value), 0)
				+ CASE WHEN pg_column_compression(headers) IS NULL THEN pg_column_size(headers)
					ELSE octet_length(headers::text) END AS size
		FROM {{.Table}}
		WHERE shard = $1 AND published_at IS NULL
			AND xid < pg_snapshot_xmin(pg_current_snapshot())
			AND coalesce(key, '') <> ALL ($3::bytea[])
		ORDER BY id
		LIMIT $2
	) page
) sized
WHERE upto <= $4::int8 OR upto = size
ORDER BY id
