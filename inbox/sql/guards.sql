-- The CHECK constraints CreatePartitions puts on the default partition while
-- it creates partitions, named after them ({table}_p...). One left behind by
-- an interrupted run refuses the default partition the rows of its range.
SELECT conname::text FROM pg_catalog.pg_constraint
WHERE conrelid = to_regclass($1) AND contype = 'c' AND starts_with(conname::text, $2)
