-- Read committed claims. Used after a claim waited on a concurrent
-- transaction that then committed: the claim statement's snapshot predates
-- that commit, a new statement's does not.
SELECT token, false AS fresh, true AS seen, fingerprint, result, kafka_topic, kafka_partition, kafka_offset, processed_at
FROM {{.Table}}
WHERE scope = $1 AND token = ANY($2::bytea[])
