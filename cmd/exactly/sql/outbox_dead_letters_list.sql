SELECT id, message_id, topic, key, reason, error, rejections, attempts, created_at, dead_at,
	resolved_at, coalesce(resolution, ''), value, headers
FROM {{.OutboxDeadLetters}}
WHERE ($1::text IS NULL OR topic = $1)
	AND ($2::text IS NULL OR reason = $2)
	AND ($3::timestamptz IS NULL OR dead_at >= $3)
	AND ($4::timestamptz IS NULL OR dead_at < $4)
	AND ($5 OR resolved_at IS NULL)
	AND (cardinality($6::int8[]) = 0 OR id = ANY ($6))
ORDER BY id
LIMIT $7
