-- The oldest unpublished rows of a shard whose transactions are older than
-- every transaction still running: a row with a smaller id can no longer
-- appear behind them. Keys whose head row is failing are left out ($3).
-- At most $2 rows, and only as many as one write of at most $4 bytes holds:
-- a row counts its key, value and headers (as JSON text, never less than
-- on the wire) plus $5, so the relay's memory is bounded by bytes, not only
-- by rows. The first row comes even when larger. Lengths of large values
-- come from their TOAST headers: rows left out are not read whole.
SELECT id, message_id, topic, key, value, headers, created_at
FROM (
	SELECT page.*, sum(size) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS upto
	FROM (
		SELECT id, message_id, topic, key, value, headers, created_at,
			$5::int8 + coalesce(octet_length(key), 0) + coalesce(octet_length(value), 0) + octet_length(headers::text) AS size
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
