-- Keys the relay holds back, per shard: a key whose oldest unpublished row
-- Kafka rejected (rejections > 0) waits for that row's retry, and the key's
-- later rows wait behind it, to keep per-key order. The relay treats a
-- NULL key as the empty key. Reads the unpublished rows only, through the
-- pending index (shard, id).
WITH heads AS (
	SELECT DISTINCT ON (shard, coalesce(key, '')) shard, coalesce(key, '') AS key, id
	FROM {{.Outbox}}
	WHERE published_at IS NULL AND rejections > 0
	ORDER BY shard, coalesce(key, ''), id
)
SELECT h.shard, count(DISTINCT h.key), count(r.id)
FROM heads AS h
LEFT JOIN {{.Outbox}} AS r
	ON r.shard = h.shard AND coalesce(r.key, '') = h.key AND r.published_at IS NULL AND r.id > h.id
GROUP BY h.shard
ORDER BY h.shard
