-- ConvertToPartitioned, last step: every token into the partitioned table,
-- a UUID that is not version 7 under the partitioned layout's kind 3.
INSERT INTO {{.Table}} (scope, token, fingerprint, result, kafka_topic, kafka_partition, kafka_offset, processed_at)
SELECT scope,
	CASE WHEN length(token) = 17 AND get_byte(token, 0) = 0 AND NOT (get_byte(token, 7) >> 4 = 7 AND get_byte(token, 9) >> 6 = 2)
		THEN '\x03'::bytea || substring(token FROM 2)
		ELSE token END,
	fingerprint, result, kafka_topic, kafka_partition, kafka_offset, processed_at
FROM {{.Old}};
