-- Record that the handling of offset $4 starts for the $5th time; the
-- process may die on any offset up to $6 during it.
INSERT INTO {{.Attempts}} (consumer_group, kafka_topic, kafka_partition, kafka_offset, starts, last_offset)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (consumer_group, kafka_topic, kafka_partition, kafka_offset)
DO UPDATE SET starts = EXCLUDED.starts, last_offset = EXCLUDED.last_offset, updated_at = now()
