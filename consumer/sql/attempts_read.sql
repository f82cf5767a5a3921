-- At a partition's assignment: forget attempts wholly below its committed
-- offset $4 (settled), and return those reaching it (started, maybe not).
WITH settled AS (
	DELETE FROM {{.Attempts}}
	WHERE consumer_group = $1 AND kafka_topic = $2 AND kafka_partition = $3 AND last_offset < $4
)
SELECT kafka_offset, starts, last_offset FROM {{.Attempts}}
WHERE consumer_group = $1 AND kafka_topic = $2 AND kafka_partition = $3 AND last_offset >= $4
ORDER BY kafka_offset
