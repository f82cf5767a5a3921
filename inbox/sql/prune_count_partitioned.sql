SELECT (SELECT count(*) FROM {{.Default}} WHERE scope = $1 AND processed_at < $2)
	+ (SELECT count(*) FROM {{.Other}} WHERE scope = $1 AND processed_at < $2)
