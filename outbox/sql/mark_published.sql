UPDATE {{.Table}} SET published_at = now() WHERE id = ANY ($1::int8[])
