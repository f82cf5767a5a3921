SELECT count(*) FROM {{.Outbox}} WHERE published_at IS NOT NULL AND published_at < $1
