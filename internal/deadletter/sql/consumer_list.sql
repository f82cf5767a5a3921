-- Consumer dead letters by filter, oldest first: `exactly dead-letters list`
-- and the selection of a replay or discard, which resolve the oldest of a
-- key first. $1 scope, $2 topic, $3 reason, $4 since, $5 until (created_at),
-- $6 unresolved wanted, $7 resolved wanted, $8 ids (empty: any), $9 the
-- highest id (NULL: any), $10 limit. Keys are cut to 256 bytes: a list shows
-- them, the message is read by id (consumer_show.sql).
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
ORDER BY id
LIMIT $10
