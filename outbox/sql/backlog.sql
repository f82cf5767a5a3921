SELECT shard, count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
FROM {{.Table}} WHERE published_at IS NULL GROUP BY shard
