SELECT id, scope, coalesce(token, ''), reason, error, attempts, kafka_topic, kafka_partition, kafka_offset,
	created_at, resolved_at, coalesce(resolution, '')
FROM {{.DeadLetters}}
WHERE ($1::text IS NULL OR scope = $1)
	AND ($2::text IS NULL OR reason = $2)
	AND ($3::timestamptz IS NULL OR created_at >= $3)
	AND ($4::timestamptz IS NULL OR created_at < $4)
	AND ($5 OR resolved_at IS NULL)
	AND (cardinality($6::int8[]) = 0 OR id = ANY ($6))
ORDER BY id
LIMIT $7
