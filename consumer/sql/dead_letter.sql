INSERT INTO {{.Table}} (scope, token, reason, error, attempts, kafka_topic, kafka_partition, kafka_offset,
	kafka_key, kafka_value, header_keys, header_values, message_time, header_keys_raw)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT ON CONSTRAINT {{.Unique}} DO NOTHING
