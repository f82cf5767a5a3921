-- A page of consumer dead letters, newest first, for the console: the
-- arguments of consumer_list.sql. Keyset paging: the next page starts below
-- the last id shown ($9), so a page deep in 100k rows is read from the
-- primary key's index backwards (Index Scan Backward, no Sort; guarded by
-- TestPagePlan), as fast as the first.
SELECT id, scope, coalesce(token, ''), reason, error, attempts, kafka_topic, kafka_partition, kafka_offset,
	created_at, resolved_at, coalesce(resolution, ''), substring(kafka_key FROM 1 FOR 256), octet_length(kafka_key),
	coalesce(octet_length(kafka_value), 0)
FROM {{.DeadLetters}}
WHERE ($1::text IS NULL OR scope = $1)
	AND ($2::text IS NULL OR kafka_topic = $2)
	AND ($3::text IS NULL OR reason = $3)
	AND ($4::timestamptz IS NULL OR created_at >= $4)
	AND ($5::timestamptz IS NULL OR created_at < $5)
	AND (CASE WHEN resolved_at IS NULL THEN $6::bool ELSE $7::bool END)
	AND (cardinality($8::int8[]) = 0 OR id = ANY ($8))
	AND ($9::int8 IS NULL OR id <= $9)
ORDER BY id DESC
LIMIT $10
