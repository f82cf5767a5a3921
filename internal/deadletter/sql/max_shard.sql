-- The highest shard any outbox row or outbox dead letter is in (-1 for
-- none): writers with more shards than -shards have been at work.
SELECT greatest(
	(SELECT coalesce(max(shard), -1) FROM {{.Outbox}}),
	(SELECT coalesce(max(shard), -1) FROM {{.OutboxDeadLetters}}))
