-- Rows of the default partition that a new partition [$1, $2) must take
-- over (the token index).
SELECT count(*) FROM {{.Default}} WHERE token >= $1 AND token < $2
