-- Lock one unresolved dead letter for replay or discard (under
-- replay_lock.sql, so no other operator holds it); one resolved meanwhile is
-- not found.
SELECT kafka_topic, kafka_key, kafka_value, header_keys, header_values, kafka_partition, kafka_offset, reason
FROM {{.DeadLetters}}
WHERE id = $1 AND resolved_at IS NULL
FOR UPDATE
