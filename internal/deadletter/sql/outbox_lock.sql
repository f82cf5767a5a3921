-- Lock one unresolved outbox dead letter for replay or discard (under
-- replay_lock.sql, so no other operator holds it); one resolved meanwhile is
-- not found.
SELECT message_id, topic, key, value, headers, shard
FROM {{.OutboxDeadLetters}}
WHERE id = $1 AND resolved_at IS NULL
FOR UPDATE
