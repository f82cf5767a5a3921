UPDATE {{.Table}} SET result = $3 WHERE scope = $1 AND token = $2
