-- With key-level concurrency: lanes may run from the watermark $4 up to
-- offset $5; the process may die on any of them. Rows below the watermark
-- are settled.
WITH settled AS (
	DELETE FROM {{.Attempts}}
	WHERE consumer_group = $1 AND kafka_topic = $2 AND kafka_partition = $3 AND kafka_offset < $4
)
INSERT INTO {{.Attempts}} (consumer_group, kafka_topic, kafka_partition, kafka_offset, starts, last_offset)
VALUES ($1, $2, $3, $4, 1, $5)
ON CONFLICT (consumer_group, kafka_topic, kafka_partition, kafka_offset)
DO UPDATE SET last_offset = EXCLUDED.last_offset, updated_at = now()
