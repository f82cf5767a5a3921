-- Read committed claims in the partitioned layout: one primary-key probe per
-- token, into the one partition that can hold it (run-time pruning of the
-- LATERAL subquery). A plain token = ANY($2) is not pruned under a generic
-- plan: it probed every partition's index with the whole array.
SELECT x.token, false AS fresh, true AS seen, x.fingerprint, x.result, x.kafka_topic, x.kafka_partition, x.kafka_offset, x.processed_at
FROM unnest($2::bytea[]) AS i(token)
CROSS JOIN LATERAL (
	SELECT * FROM {{.Table}} x WHERE x.scope = $1 AND x.token = i.token LIMIT 1
) x
