-- When the scope's oldest token was claimed: one probe of the
-- (scope, processed_at) index.
SELECT min(processed_at) FROM {{.Table}} WHERE scope = $1
