-- Backlog, age of the oldest row and whether a relay holds the lock, per
-- shard. Advisory locks on a bigint key show in pg_locks as its high and
-- low 32 bits (classid, objid) with objsubid 1.
SELECT g.shard,
	coalesce(b.rows, 0),
	b.oldest,
	EXISTS (SELECT 1 FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
		AND ((l.classid::int8 << 32) | l.objid::int8) = hashtextextended($2 || g.shard, 0))
FROM generate_series(0, $1 - 1) AS g(shard)
LEFT JOIN (
	SELECT shard, count(*) AS rows, min(created_at) AS oldest
	FROM {{.Table}} WHERE published_at IS NULL GROUP BY shard
) b ON b.shard = g.shard
ORDER BY g.shard
