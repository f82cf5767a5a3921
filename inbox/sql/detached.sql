-- Tables of the schema named like time partitions of the inbox ($2 is
-- '{table}_p') that are not partitions: detached by DropPartitions and not
-- dropped yet. The caller checks the whole name.
SELECT c.relname::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition AND starts_with(c.relname::text, $2)
