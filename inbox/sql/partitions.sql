-- The partitions of the inbox table and their bounds as SQL text, which
-- reads bytea in hex only with bytea_output = 'hex' (set by the caller).
SELECT c.relname::text, pg_catalog.pg_get_expr(c.relpartbound, c.oid)
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass($1)
