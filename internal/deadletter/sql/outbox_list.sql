-- Outbox dead letters by filter, oldest first: `exactly outbox-dead-letters
-- list` and the selection of a replay or discard. $1 topic, $2 reason,
-- $3 since, $4 until (dead_at), $5 unresolved wanted, $6 resolved wanted,
-- $7 ids (empty: any), $8 the highest id (NULL: any), $9 limit.
SELECT id, message_id, topic, substring(key FROM 1 FOR 256), octet_length(key), coalesce(octet_length(value), 0),
	reason, error, rejections, attempts, created_at, dead_at, resolved_at, coalesce(resolution, '')
FROM {{.OutboxDeadLetters}}
WHERE ($1::text IS NULL OR topic = $1)
	AND ($2::text IS NULL OR reason = $2)
	AND ($3::timestamptz IS NULL OR dead_at >= $3)
	AND ($4::timestamptz IS NULL OR dead_at < $4)
	AND (CASE WHEN resolved_at IS NULL THEN $5::bool ELSE $6::bool END)
	AND (cardinality($7::int8[]) = 0 OR id = ANY ($7))
	AND ($8::int8 IS NULL OR id <= $8)
ORDER BY id
LIMIT $9
