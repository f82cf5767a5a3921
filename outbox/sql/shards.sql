-- Backlog, age of the oldest row and whether a relay holds the lock, per
-- shard: every shard of 0..$1-1, and every other shard that holds rows
-- (written with more shards than $1; no relay configured with $1 publishes
-- them), marked outside. Advisory locks on a bigint key show in pg_locks as
-- its high and low 32 bits (classid, objid) with objsubid 1.
WITH b AS (
	SELECT shard, count(*) AS rows, min(created_at) AS oldest
	FROM {{.Table}} WHERE published_at IS NULL GROUP BY shard
)
SELECT s.shard,
	coalesce(b.rows, 0),
	b.oldest,
	EXISTS (SELECT 1 FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
		AND ((l.classid::int8 << 32) | l.objid::int8) = hashtextextended($2 || s.shard, 0)),
	s.shard NOT BETWEEN 0 AND $1 - 1
FROM (SELECT generate_series(0, $1 - 1) UNION SELECT shard FROM b) AS s(shard)
LEFT JOIN b ON b.shard = s.shard
ORDER BY s.shard
