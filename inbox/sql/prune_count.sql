SELECT count(*) FROM {{.Table}} WHERE scope = $1 AND processed_at < $2
