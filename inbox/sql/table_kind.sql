-- 'p' for a partitioned table, 'r' for an ordinary one, NULL when missing.
SELECT c.relkind::text FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)
