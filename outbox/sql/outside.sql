-- Unpublished rows in shards outside 0..$1-1, by shard: enqueued by writers
-- configured with more shards than $1. A relay with $1 shards never reads
-- them. A range scan of the pending index.
SELECT shard, count(*)
FROM {{.Table}}
WHERE published_at IS NULL AND (shard < 0 OR shard >= $1)
GROUP BY shard
ORDER BY shard
