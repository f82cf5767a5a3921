-- Lock one unresolved dead letter for replay or discard; a concurrent
-- operator skips it instead of resolving it twice.
SELECT kafka_topic, kafka_key, kafka_value, header_keys, header_values, kafka_partition, kafka_offset
FROM {{.DeadLetters}}
WHERE id = $1 AND resolved_at IS NULL
FOR UPDATE SKIP LOCKED
