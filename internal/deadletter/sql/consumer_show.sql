-- One consumer dead letter with its message.
SELECT id, scope, coalesce(token, ''), reason, error, attempts, kafka_topic, kafka_partition, kafka_offset,
	created_at, resolved_at, coalesce(resolution, ''), kafka_key, octet_length(kafka_key), coalesce(octet_length(kafka_value), 0),
	kafka_value, header_keys, header_values, message_time
FROM {{.DeadLetters}}
WHERE id = $1
