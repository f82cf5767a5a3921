SELECT count(*), min(processed_at) FROM {{.Table}} WHERE scope = $1
