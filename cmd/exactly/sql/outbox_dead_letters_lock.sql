-- Lock one unresolved outbox dead letter for replay or discard; a concurrent
-- operator skips it instead of resolving it twice.
SELECT message_id, topic, key, value, headers
FROM {{.OutboxDeadLetters}}
WHERE id = $1 AND resolved_at IS NULL
FOR UPDATE SKIP LOCKED
