-- Whether the shard has rows the last fetch could not take yet: committed
-- behind an older running transaction, or committed since. While it does,
-- the relay keeps polling quickly instead of sleeping PollInterval.
SELECT EXISTS (
	SELECT 1 FROM {{.Table}}
	WHERE shard = $1 AND published_at IS NULL AND coalesce(key, '') <> ALL ($2::bytea[])
)
