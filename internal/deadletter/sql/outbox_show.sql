-- One outbox dead letter with its message.
SELECT id, message_id, topic, key, octet_length(key), coalesce(octet_length(value), 0),
	reason, error, rejections, attempts, created_at, dead_at, resolved_at, coalesce(resolution, ''), value, headers
FROM {{.OutboxDeadLetters}}
WHERE id = $1
