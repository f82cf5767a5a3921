-- The oldest claim of the scope among the tokens pruned by processed_at (one
-- probe of each (scope, processed_at) index), and the scope's lowest UUIDv7
-- token (one primary-key probe per partition), whose time the caller reads.
SELECT least(
		(SELECT min(processed_at) FROM {{.Default}} WHERE scope = $1),
		(SELECT min(processed_at) FROM {{.Other}} WHERE scope = $1)),
	(SELECT token FROM {{.Table}} WHERE scope = $1 AND token < '\x01' ORDER BY token LIMIT 1)
