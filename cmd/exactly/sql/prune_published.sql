-- One bounded batch of outbox rows published before $1 (kept for audit by
-- relays with RelayConfig.KeepPublished). Unpublished rows are never
-- deleted.
DELETE FROM {{.Outbox}}
WHERE id IN (
	SELECT id FROM {{.Outbox}}
	WHERE published_at IS NOT NULL AND published_at < $1
	ORDER BY published_at
	LIMIT $2
)
